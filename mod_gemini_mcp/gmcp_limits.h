/* gmcp_limits.h — per-key rate limits, in-flight caps and unflushed usage in one table
 * that lives in httpd shared memory, so every child process sees the same numbers.
 *
 * Rates use GCRA (the generic cell rate algorithm, a token bucket kept as one
 * timestamp): admitting a request moves the key's "theoretical arrival time" on by
 * one emission interval; a request is refused while that time would run more than the
 * burst ahead of now. Usage is added here on the hot path and written to SQL by a
 * periodic flush (gmcp_limits_take), never per request.
 *
 * The hot path takes no lock: a key's slot is found by reading (a per-slot generation
 * number, odd while the slot is being rewritten, tells a reader that raced with a
 * rewrite to undo and retry), and its counters are changed with APR atomics — GCRA
 * with compare-and-swap, usage with atomic adds, the flush with atomic exchange. The
 * caller's lock is taken only to claim or evict a slot and to start a new hour's
 * bucket. */
#ifndef GMCP_LIMITS_H
#define GMCP_LIMITS_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include "gmcp_keys.h"

#define GMCP_SLOT_KEY_MAX 64

typedef struct {
    char key[GMCP_SLOT_KEY_MAX]; /* "" = free */
    volatile apr_uint32_t gen;   /* odd while key is being rewritten */
    apr_time_t last_used;
    apr_time_t req_tat, tok_tat; /* GCRA state (0 = never used) */
    apr_time_t bw_tat;           /* upload bandwidth bucket (gmcp_throttle) */
    apr_int64_t inflight;
    apr_int64_t hour[2]; /* the hour each usage bucket belongs to */
    gmcp_usage usage[2]; /* not yet flushed to SQL */
} gmcp_slot;

typedef struct {
    apr_uint32_t nslots;
    apr_uint64_t evictions, full; /* for metrics */
    gmcp_slot slots[1];           /* nslots of them */
} gmcp_slot_table;

typedef struct {
    gmcp_slot_table *t;
    void (*lock)(void *baton);
    void (*unlock)(void *baton);
    void *baton;
} gmcp_limits;

apr_size_t gmcp_limits_size(apr_uint32_t nslots);
void gmcp_limits_init(void *mem, apr_uint32_t nslots);

/* One GCRA step (pure): may `cost` go at `now`, given the emission interval and the
 * burst allowance `limit` (= burst * interval)? 1 when it may (and *tat advanced), 0
 * when not; either way *retry_after is how long until it would pass (0 when it did) and
 * *remaining how many more unit-cost requests would pass right now. */
int gmcp_gcra(apr_time_t *tat, apr_time_t now, apr_interval_time_t interval,
              apr_interval_time_t limit, apr_interval_time_t cost, apr_interval_time_t *retry_after,
              apr_int64_t *remaining);

/* The limits of one key, from its row. */
typedef struct {
    apr_interval_time_t req_interval, req_limit; /* 0: no request limit */
    apr_interval_time_t tok_interval, tok_limit; /* per token; 0: no token limit */
    apr_int64_t max_inflight;                    /* 0: no cap */
} gmcp_key_limits;
void gmcp_key_limits_of(const gmcp_key *k, gmcp_key_limits *out);

/* What gmcp_limits_admit decided: the request goes, or which limit refuses it (the
 * caller answers each with its own 429). A refusal is no failure: admitting cannot fail. */
typedef enum {
    GMCP_ADMIT_OK = 0,
    GMCP_ADMIT_RATE,   /* request rate */
    GMCP_ADMIT_TOKENS, /* token rate: in debt from earlier calls */
    GMCP_ADMIT_INFLIGHT,
    GMCP_ADMIT_FULL /* no slot free: too many distinct keys at once */
} gmcp_admit;

typedef struct {
    apr_interval_time_t retry_after;
    apr_int64_t remaining;     /* requests left in the burst (-1 when unlimited) */
    apr_interval_time_t reset; /* until the burst is whole again */
} gmcp_admit_info;

/* Admit one request of `key`: the request rate, the token rate (when `spends_tokens`)
 * and, when `enter` is set, the in-flight cap (then, when GMCP_ADMIT_OK, pair with
 * gmcp_limits_leave). `check_rate` 0 skips the request rate (it was checked in the SQL
 * store). */
gmcp_admit gmcp_limits_admit(gmcp_limits *l, const char *key, const gmcp_key_limits *kl,
                             apr_time_t now, int check_rate, int spends_tokens, int enter,
                             gmcp_admit_info *info);
void gmcp_limits_leave(gmcp_limits *l, const char *key);
/* Charge tokens a call used against the token rate (may run into debt). */
void gmcp_limits_charge_tokens(gmcp_limits *l, const char *key, const gmcp_key_limits *kl,
                               apr_int64_t tokens, apr_time_t now);

/* Bandwidth: a token bucket of bytes kept as one timestamp, filled at `rate` bytes/s
 * and holding GMCP_THROTTLE_BURST(rate) bytes. Bytes that already arrived are always
 * charged (the bucket may run into debt); the answer is how long the reader should
 * pause before taking more, so TCP pushes back on the sender. */
#define GMCP_THROTTLE_BURST(rate) ((rate) / 10 > 65536 ? (rate) / 10 : 65536)
apr_interval_time_t gmcp_throttle(apr_time_t *tat, apr_time_t now, apr_int64_t rate,
                                  apr_int64_t bytes);
/* The same on `key`'s slot, shared by every process. */
apr_interval_time_t gmcp_limits_throttle(gmcp_limits *l, const char *key, apr_int64_t rate,
                                         apr_int64_t bytes, apr_time_t now);

/* Add to the key's usage for the hour of `now`. */
void gmcp_limits_account(gmcp_limits *l, const char *key, apr_time_t now, const gmcp_usage *delta);
/* The end of a request: its usage, and (when `leave`) the end of its in-flight count,
 * under one lock. */
void gmcp_limits_finish(gmcp_limits *l, const char *key, apr_time_t now, const gmcp_usage *delta,
                        int leave);
/* Unflushed usage of a key since `since` (seconds), added into *out. */
void gmcp_limits_pending(gmcp_limits *l, const char *key, apr_int64_t since, gmcp_usage *out);

/* Flushing: take every unflushed bucket out of the table (zeroing it), write them,
 * and give back whatever could not be written. */
typedef struct {
    char key[GMCP_SLOT_KEY_MAX];
    apr_int64_t hour;
    gmcp_usage usage;
} gmcp_usage_bucket;
apr_array_header_t *gmcp_limits_take(gmcp_limits *l, apr_pool_t *p);
void gmcp_limits_give_back(gmcp_limits *l, const apr_array_header_t *buckets);

#endif
