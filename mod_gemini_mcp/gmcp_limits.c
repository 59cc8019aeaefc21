/* gmcp_limits.c — GCRA rate limits, in-flight caps and unflushed usage per key. */
#include "gmcp_limits.h"

#include <stddef.h>
#include <string.h>
#include <apr_atomic.h>
#include <apr_strings.h>

/* 64-bit fields of a slot, changed atomically. */
#define A64(x) ((volatile apr_uint64_t *)&(x))
#define RD64(x) ((apr_int64_t)apr_atomic_read64(A64(x)))

#define PROBE 16 /* a key lives within PROBE slots of its hash */

apr_size_t gmcp_limits_size(apr_uint32_t nslots)
{
    return sizeof(gmcp_slot_table) + (apr_size_t)(nslots - 1) * sizeof(gmcp_slot);
}

void gmcp_limits_init(void *mem, apr_uint32_t nslots)
{
    gmcp_slot_table *t = mem;
    memset(mem, 0, gmcp_limits_size(nslots));
    t->nslots = nslots;
}

int gmcp_gcra(apr_time_t *tat, apr_time_t now, apr_interval_time_t interval,
              apr_interval_time_t limit, apr_interval_time_t cost, apr_interval_time_t *retry_after,
              apr_int64_t *remaining)
{
    apr_time_t base = *tat > now ? *tat : now, next = base + cost;
    if (next - now > limit) {
        *retry_after = next - now - limit;
        *remaining = 0;
        return 0;
    }
    *tat = next;
    *retry_after = 0;
    *remaining = interval > 0 ? (limit - (next - now)) / interval : 0;
    return 1;
}

void gmcp_key_limits_of(const gmcp_key *k, gmcp_key_limits *out)
{
    memset(out, 0, sizeof(*out));
    if (k->rate_count > 0 && k->rate_period > 0) {
        apr_int64_t burst = k->burst > 0 ? k->burst : k->rate_count;
        out->req_interval = apr_time_from_sec(k->rate_period) / k->rate_count;
        if (out->req_interval < 1) out->req_interval = 1;
        out->req_limit = burst * out->req_interval;
    }
    if (k->token_rate_count > 0 && k->token_rate_period > 0) {
        out->tok_interval = apr_time_from_sec(k->token_rate_period) / k->token_rate_count;
        if (out->tok_interval < 1) out->tok_interval = 1;
        /* One period's worth may be spent at once. */
        out->tok_limit = k->token_rate_count * out->tok_interval;
    }
    out->max_inflight = k->max_inflight;
}

static apr_uint32_t hash_key(const char *s)
{
    apr_uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int usage_empty(gmcp_usage *u)
{
    return !(RD64(u->requests) | RD64(u->errors) | RD64(u->rejected) | RD64(u->prompt_tokens)
             | RD64(u->output_tokens) | RD64(u->bytes_in) | RD64(u->bytes_out));
}

static int slot_clean(gmcp_slot *s)
{
    return RD64(s->inflight) == 0 && usage_empty(&s->usage[0]) && usage_empty(&s->usage[1]);
}

/* Lock-free lookup: the key's slot and its generation, or NULL. */
static gmcp_slot *slot_find(gmcp_slot_table *t, const char *key, apr_uint32_t *gen)
{
    apr_uint32_t h = hash_key(key), i;
    for (i = 0; i < PROBE && i < t->nslots; i++) {
        gmcp_slot *s = &t->slots[(h + i) % t->nslots];
        apr_uint32_t g = apr_atomic_read32(&s->gen);
        if (!(g & 1) && !strcmp(s->key, key) && apr_atomic_read32(&s->gen) == g) {
            *gen = g;
            return s;
        }
    }
    return NULL;
}

/* The key's slot, claimed if new (locked); NULL when every slot near it is busy. */
static gmcp_slot *slot_claim(gmcp_slot_table *t, const char *key, apr_time_t now)
{
    apr_uint32_t h = hash_key(key), i, g;
    gmcp_slot *free_slot = NULL, *lru = NULL;
    for (i = 0; i < PROBE && i < t->nslots; i++) {
        gmcp_slot *s = &t->slots[(h + i) % t->nslots];
        if (!strcmp(s->key, key)) return s;
        if (!s->key[0]) {
            if (!free_slot) free_slot = s;
        }
        else if (slot_clean(s) && (!lru || RD64(s->last_used) < RD64(lru->last_used)))
            lru = s;
    }
    if (!free_slot && lru) {
        free_slot = lru;
        t->evictions++;
    }
    if (!free_slot) {
        t->full++;
        return NULL;
    }
    /* A fresh slot: an evicted key starts over with a whole burst, which is the
     * most it could have had after idling longer than every other key nearby.
     * Readers see an odd generation meanwhile, and a changed one afterwards. */
    g = apr_atomic_read32(&free_slot->gen);
    apr_atomic_set32(&free_slot->gen, g + 1);
    memset((char *)free_slot + offsetof(gmcp_slot, last_used), 0,
           sizeof(*free_slot) - offsetof(gmcp_slot, last_used));
    memset(free_slot->key, 0, sizeof(free_slot->key));
    apr_cpystrn(free_slot->key, key, sizeof(free_slot->key));
    apr_atomic_set64(A64(free_slot->last_used), (apr_uint64_t)now);
    apr_atomic_set32(&free_slot->gen, g + 2);
    return free_slot;
}

/* The slot for key: found without a lock, or claimed under it. */
static gmcp_slot *slot_get(gmcp_limits *l, const char *key, apr_time_t now, int claim,
                           apr_uint32_t *gen)
{
    gmcp_slot *s = slot_find(l->t, key, gen);
    if (s || !claim) return s;
    l->lock(l->baton);
    s = slot_claim(l->t, key, now);
    if (s) *gen = apr_atomic_read32(&s->gen);
    l->unlock(l->baton);
    return s;
}

static int slot_moved(gmcp_slot *s, apr_uint32_t gen) { return apr_atomic_read32(&s->gen) != gen; }

/* gmcp_gcra on a shared timestamp, by compare-and-swap (1 passed, 0 not). */
static int gcra_shared(apr_time_t *tatp, apr_time_t now, apr_interval_time_t interval,
                       apr_interval_time_t limit, apr_interval_time_t cost, int commit,
                       apr_interval_time_t *retry_after, apr_int64_t *remaining,
                       apr_time_t *new_tat)
{
    for (;;) {
        apr_uint64_t old = apr_atomic_read64(A64(*tatp));
        apr_time_t tat = (apr_time_t)old;
        if (!gmcp_gcra(&tat, now, interval, limit, cost, retry_after, remaining)) {
            *new_tat = (apr_time_t)old;
            return 0;
        }
        *new_tat = tat;
        if (!commit || apr_atomic_cas64(A64(*tatp), (apr_uint64_t)tat, old) == old) return 1;
    }
}

gmcp_admit gmcp_limits_admit(gmcp_limits *l, const char *key, const gmcp_key_limits *kl,
                             apr_time_t now, int check_rate, int spends_tokens, int enter,
                             gmcp_admit_info *info)
{
    gmcp_slot *s;
    apr_uint32_t gen = 0;
    apr_time_t tat;
    apr_int64_t rem;
    int entered = 0;
    memset(info, 0, sizeof(info[0]));
    info->remaining = -1;
retry:
    if (!(s = slot_get(l, key, now, 1, &gen))) {
        info->retry_after = apr_time_from_sec(1);
        return GMCP_ADMIT_FULL;
    }
    apr_atomic_set64(A64(s->last_used), (apr_uint64_t)now);
    if (spends_tokens
        && kl->tok_interval
        /* At least one token must be left; the call's real cost is charged after it. */
        && !gcra_shared(&s->tok_tat, now, kl->tok_interval, kl->tok_limit, kl->tok_interval, 0,
                        &info->retry_after, &rem, &tat))
        return GMCP_ADMIT_TOKENS;
    if (enter && kl->max_inflight) {
        if ((apr_int64_t)apr_atomic_inc64(A64(s->inflight)) >= kl->max_inflight) {
            apr_atomic_sub64(A64(s->inflight), 1);
            info->retry_after = apr_time_from_sec(1);
            return GMCP_ADMIT_INFLIGHT;
        }
        entered = 1;
    }
    else if (enter) {
        apr_atomic_inc64(A64(s->inflight));
        entered = 1;
    }
    if (slot_moved(s, gen)) {
        /* Raced with an eviction: undo and start over on the key's own slot. */
        if (entered) apr_atomic_sub64(A64(s->inflight), 1);
        entered = 0;
        goto retry;
    }
    if (check_rate && kl->req_interval) {
        int ok = gcra_shared(&s->req_tat, now, kl->req_interval, kl->req_limit, kl->req_interval, 1,
                             &info->retry_after, &info->remaining, &tat);
        info->reset = tat - now;
        if (!ok) {
            if (entered) apr_atomic_sub64(A64(s->inflight), 1);
            return GMCP_ADMIT_RATE;
        }
    }
    return GMCP_ADMIT_OK;
}

void gmcp_limits_leave(gmcp_limits *l, const char *key)
{
    apr_uint32_t gen;
    gmcp_slot *s = slot_get(l, key, 0, 0, &gen);
    if (s && RD64(s->inflight) > 0) apr_atomic_sub64(A64(s->inflight), 1);
}

void gmcp_limits_charge_tokens(gmcp_limits *l, const char *key, const gmcp_key_limits *kl,
                               apr_int64_t tokens, apr_time_t now)
{
    apr_uint32_t gen;
    gmcp_slot *s;
    if (!kl->tok_interval || tokens <= 0) return;
    if (!(s = slot_get(l, key, now, 1, &gen))) return;
    for (;;) {
        apr_uint64_t old = apr_atomic_read64(A64(s->tok_tat));
        apr_time_t base = (apr_time_t)old > now ? (apr_time_t)old : now;
        if (apr_atomic_cas64(A64(s->tok_tat), (apr_uint64_t)(base + tokens * kl->tok_interval), old)
            == old)
            break;
    }
}

apr_interval_time_t gmcp_throttle(apr_time_t *tat, apr_time_t now, apr_int64_t rate,
                                  apr_int64_t bytes)
{
    apr_time_t base = *tat > now ? *tat : now;
    apr_interval_time_t burst = GMCP_THROTTLE_BURST(rate) * APR_USEC_PER_SEC / rate;
    *tat = base + bytes * APR_USEC_PER_SEC / rate;
    return *tat - now > burst ? *tat - now - burst : 0;
}

apr_interval_time_t gmcp_limits_throttle(gmcp_limits *l, const char *key, apr_int64_t rate,
                                         apr_int64_t bytes, apr_time_t now)
{
    apr_uint32_t gen;
    gmcp_slot *s;
    if (rate <= 0 || bytes <= 0 || !(s = slot_get(l, key, now, 1, &gen))) return 0;
    for (;;) {
        apr_uint64_t old = apr_atomic_read64(A64(s->bw_tat));
        apr_time_t tat = (apr_time_t)old;
        apr_interval_time_t wait = gmcp_throttle(&tat, now, rate, bytes);
        if (apr_atomic_cas64(A64(s->bw_tat), (apr_uint64_t)tat, old) == old) return wait;
    }
}

static void usage_add(gmcp_usage *into, const gmcp_usage *u, int sign)
{
    apr_int64_t f[7] = {u->requests,      u->errors,   u->rejected, u->prompt_tokens,
                        u->output_tokens, u->bytes_in, u->bytes_out};
    volatile apr_uint64_t *t[7] = {A64(into->requests),      A64(into->errors),
                                   A64(into->rejected),      A64(into->prompt_tokens),
                                   A64(into->output_tokens), A64(into->bytes_in),
                                   A64(into->bytes_out)};
    int i;
    for (i = 0; i < 7; i++)
        if (f[i]) apr_atomic_add64(t[i], (apr_uint64_t)(sign * f[i]));
}

/* The bucket for `hour` (locked): its own, an empty one, or (when both hold older
 * hours that could not be flushed yet) the newer of them — counts are never dropped. */
static gmcp_usage *bucket_for(gmcp_slot *s, apr_int64_t hour)
{
    int i, newer;
    for (i = 0; i < 2; i++)
        if (RD64(s->hour[i]) == hour) return &s->usage[i];
    for (i = 0; i < 2; i++)
        if (usage_empty(&s->usage[i])) {
            apr_atomic_set64(A64(s->hour[i]), (apr_uint64_t)hour);
            return &s->usage[i];
        }
    newer = RD64(s->hour[1]) > RD64(s->hour[0]);
    return &s->usage[newer];
}

void gmcp_limits_finish(gmcp_limits *l, const char *key, apr_time_t now, const gmcp_usage *delta,
                        int leave)
{
    apr_int64_t sec = apr_time_sec(now), hour = sec - sec % 3600;
    apr_uint32_t gen;
    gmcp_slot *s;
    gmcp_usage *b = NULL;
    int i;
    for (;;) {
        if (!(s = slot_get(l, key, now, 1, &gen))) return;
        for (i = 0; i < 2 && !b; i++)
            if (RD64(s->hour[i]) == hour) b = &s->usage[i];
        if (!b) {
            /* This hour's first request for the key: pick its bucket under the lock. */
            l->lock(l->baton);
            b = bucket_for(s, hour);
            l->unlock(l->baton);
        }
        usage_add(b, delta, 1);
        if (!slot_moved(s, gen)) break;
        usage_add(b, delta, -1); /* raced with an eviction: undo, retry */
        b = NULL;
    }
    if (leave && RD64(s->inflight) > 0) apr_atomic_sub64(A64(s->inflight), 1);
}

void gmcp_limits_account(gmcp_limits *l, const char *key, apr_time_t now, const gmcp_usage *delta)
{
    gmcp_limits_finish(l, key, now, delta, 0);
}

void gmcp_limits_pending(gmcp_limits *l, const char *key, apr_int64_t since, gmcp_usage *out)
{
    apr_uint32_t gen;
    gmcp_slot *s = slot_get(l, key, 0, 0, &gen);
    int i;
    for (i = 0; s && i < 2; i++)
        if (RD64(s->hour[i]) >= since - since % 3600) {
            gmcp_usage u;
            u.requests = RD64(s->usage[i].requests);
            u.errors = RD64(s->usage[i].errors);
            u.rejected = RD64(s->usage[i].rejected);
            u.prompt_tokens = RD64(s->usage[i].prompt_tokens);
            u.output_tokens = RD64(s->usage[i].output_tokens);
            u.bytes_in = RD64(s->usage[i].bytes_in);
            u.bytes_out = RD64(s->usage[i].bytes_out);
            gmcp_usage_merge(out, &u);
        }
}

apr_array_header_t *gmcp_limits_take(gmcp_limits *l, apr_pool_t *p)
{
    apr_array_header_t *out = apr_array_make(p, 16, sizeof(gmcp_usage_bucket));
    apr_uint32_t i;
    int b;
    l->lock(l->baton);
    for (i = 0; i < l->t->nslots; i++) {
        gmcp_slot *s = &l->t->slots[i];
        if (!s->key[0]) continue;
        for (b = 0; b < 2; b++) {
            gmcp_usage_bucket *u;
            gmcp_usage *x = &s->usage[b];
            if (usage_empty(x)) continue;
            u = apr_array_push(out);
            memcpy(u->key, s->key, sizeof(u->key));
            u->hour = RD64(s->hour[b]);
            /* Exchange, so adds racing with the flush land in the next one. */
            u->usage.requests = (apr_int64_t)apr_atomic_xchg64(A64(x->requests), 0);
            u->usage.errors = (apr_int64_t)apr_atomic_xchg64(A64(x->errors), 0);
            u->usage.rejected = (apr_int64_t)apr_atomic_xchg64(A64(x->rejected), 0);
            u->usage.prompt_tokens = (apr_int64_t)apr_atomic_xchg64(A64(x->prompt_tokens), 0);
            u->usage.output_tokens = (apr_int64_t)apr_atomic_xchg64(A64(x->output_tokens), 0);
            u->usage.bytes_in = (apr_int64_t)apr_atomic_xchg64(A64(x->bytes_in), 0);
            u->usage.bytes_out = (apr_int64_t)apr_atomic_xchg64(A64(x->bytes_out), 0);
        }
    }
    l->unlock(l->baton);
    return out;
}

void gmcp_limits_give_back(gmcp_limits *l, const apr_array_header_t *buckets)
{
    int i;
    for (i = 0; i < buckets->nelts; i++) {
        const gmcp_usage_bucket *u = &APR_ARRAY_IDX(buckets, i, gmcp_usage_bucket);
        apr_uint32_t gen;
        gmcp_slot *s = slot_get(l, u->key, apr_time_now(), 1, &gen);
        gmcp_usage *b;
        if (!s) continue;
        l->lock(l->baton);
        b = bucket_for(s, u->hour);
        l->unlock(l->baton);
        usage_add(b, &u->usage, 1);
    }
}
