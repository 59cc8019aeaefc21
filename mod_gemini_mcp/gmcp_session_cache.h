/* gmcp_session_cache.h — a short-lived copy of recently loaded MCP sessions, per process
 * (gmcp_session_cache.c), so the hot path of a session request needs no database.
 *
 * An entry is served for at most GMCP_SESSION_CACHE_TTL after the read that filled it
 * began. Whoever changes a session row (DELETE, logging/setLevel) drops its own copy
 * and answers only once that time has passed since its change committed: by then no
 * process of any node still serves the old row, without any message between nodes.
 * Memory is bounded: a fixed number of slots, each holding at most one session of at
 * most GMCP_SESSION_CACHE_MAX_BYTES of text. Past half its life an entry sends one
 * caller (a miss) to read the row again, while the others still use it. */
#ifndef GMCP_SESSION_CACHE_H
#define GMCP_SESSION_CACHE_H

#include <apr_pools.h>
#include <apr_time.h>
#include "gmcp_store.h"

#define GMCP_SESSION_CACHE_TTL apr_time_from_msec(100)
#define GMCP_SESSION_CACHE_SLOTS 1024
#define GMCP_SESSION_CACHE_MAX_BYTES 8192

typedef struct gmcp_session_cache gmcp_session_cache;

/* A cache living as long as `p` (its slots are freed by p's cleanup); NULL when out of
 * memory or a mutex cannot be made. */
gmcp_session_cache *gmcp_session_cache_create(apr_pool_t *p);

/* A live copy of session `id` (its strings from `p`) when one was read less than the
 * TTL ago, is owned by `owner` (NULL = any), and is neither idle past `idle_timeout`
 * seconds nor due for its last_seen refresh (`touch_every` seconds): 1, else 0. */
int gmcp_session_cache_get(gmcp_session_cache *c, const char *id, const char *owner,
                           apr_int64_t idle_timeout, apr_int64_t touch_every, apr_pool_t *p,
                           gmcp_session *out);
/* Remember `s`, read from the database by a read that began at `read_began`. */
void gmcp_session_cache_put(gmcp_session_cache *c, const gmcp_session *s, apr_time_t read_began);
/* Forget session `id` in this process. */
void gmcp_session_cache_drop(gmcp_session_cache *c, const char *id);

#endif
