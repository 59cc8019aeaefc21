/* gmcp_shared_limits.h — the limits every node counts in one database
 * (GeminiMCPRateLimitStore dbd), beside the request rate in gmcp_keys.h.
 *
 * Rates are GCRA buckets kept as one row of rate_limits each (a name and a theoretical
 * arrival time in microseconds): "tok:<key>" for a key's token rate, "bw:<caller>" for
 * a caller's upload bandwidth. In-flight caps are exact: a key has max_inflight
 * numbered rows in inflight_leases and a request holds one, with a holder token that
 * names its process (gmcp_lease.h) and an expiry its holder keeps renewing. */
#ifndef GMCP_SHARED_LIMITS_H
#define GMCP_SHARED_LIMITS_H

#include "gmcp_db.h"

/* Move bucket `name` on by `cost` microseconds (unconditionally: spent tokens and
 * received bytes are always charged, into debt if need be); *tat is its new
 * theoretical arrival time. APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_bucket_charge(gmcp_db *db, const char *name, apr_int64_t now_us,
                                apr_int64_t cost_us, apr_int64_t *tat);
/* The bucket's theoretical arrival time (0 when it was never charged). */
apr_status_t gmcp_bucket_peek(gmcp_db *db, const char *name, apr_int64_t *tat);

/* Take one of `key_id`'s `max` in-flight slots for `holder` until `expires` (seconds):
 * a free slot, one past its expiry, or one whose holder died on this host. APR_SUCCESS
 * with *slot; APR_EBUSY when all are held; GMCP_EDB. */
apr_status_t gmcp_inflight_acquire(gmcp_db *db, const char *key_id, apr_int64_t max,
                                   const char *holder, apr_int64_t now, apr_int64_t expires,
                                   int *slot);
/* Keep holding it until `expires`: APR_SUCCESS, APR_ENOENT when the slot is no longer
 * this holder's (it expired and was taken), GMCP_EDB. */
apr_status_t gmcp_inflight_renew(gmcp_db *db, const char *key_id, int slot, const char *holder,
                                 apr_int64_t expires);
/* Give it back (a no-op when it is no longer this holder's). */
apr_status_t gmcp_inflight_release(gmcp_db *db, const char *key_id, int slot, const char *holder);

#endif
