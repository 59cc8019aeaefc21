/* gmcp_shared_limits.c — see gmcp_shared_limits.h. */
#include "gmcp_shared_limits.h"
#include "gmcp_lease.h"
#include "gmcp_sql.h"

#include <stdlib.h>
#include <apr_strings.h>

/* SQLite binds every parameter as text: the casts make the numbers numbers there, and
 * are no-ops on PostgreSQL. */
const gmcp_stmt gmcp_shared_limit_stmts[] = {
    {"gmcp_bucket_charge_pgsql",
     "INSERT INTO rate_limits (key_id, tat) VALUES (%s, %lld) ON CONFLICT (key_id) DO UPDATE "
     "SET tat = GREATEST(rate_limits.tat, %lld) + %lld RETURNING tat"},
    {"gmcp_bucket_charge_sqlite",
     "INSERT INTO rate_limits (key_id, tat) VALUES (%s, CAST(%lld AS BIGINT)) "
     "ON CONFLICT (key_id) DO UPDATE SET tat = MAX(rate_limits.tat, CAST(%lld AS BIGINT)) "
     "+ CAST(%lld AS BIGINT) RETURNING tat"},
    /* The lowest slot that is free or expired; two takers racing for one slot meet at
     * the primary key, and the loser's update finds the row live and changes nothing. */
    {"gmcp_inflight_take",
     "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s "
     "WHERE n + 1 < CAST(%lld AS BIGINT)) "
     "INSERT INTO inflight_leases (key_id, slot, holder, expires) "
     "SELECT %s, n, %s, CAST(%lld AS BIGINT) FROM s WHERE NOT EXISTS (SELECT 1 FROM "
     "inflight_leases l WHERE l.key_id = %s AND l.slot = s.n "
     "AND l.expires >= CAST(%lld AS BIGINT)) ORDER BY n LIMIT 1 "
     "ON CONFLICT (key_id, slot) DO UPDATE SET holder = excluded.holder, "
     "expires = excluded.expires WHERE inflight_leases.expires < CAST(%lld AS BIGINT) "
     "RETURNING slot"},
    {"gmcp_inflight_holders", "SELECT slot, holder FROM inflight_leases WHERE key_id = %s"},
    {"gmcp_inflight_takeover",
     "UPDATE inflight_leases SET holder = %s, expires = CAST(%lld AS BIGINT) "
     "WHERE key_id = %s AND slot = CAST(%lld AS BIGINT) AND holder = %s"},
    {"gmcp_inflight_renew",
     "UPDATE inflight_leases SET expires = CAST(%lld AS BIGINT) "
     "WHERE key_id = %s AND slot = CAST(%lld AS BIGINT) AND holder = %s"},
    {"gmcp_inflight_release",
     "DELETE FROM inflight_leases WHERE key_id = %s AND slot = CAST(%lld AS BIGINT) "
     "AND holder = %s"},
    {NULL, NULL}};

static const char *I(apr_pool_t *p, apr_int64_t v) { return gmcp_i64_str(p, v); }

apr_status_t gmcp_bucket_charge(gmcp_db *db, const char *name, apr_int64_t now_us,
                                apr_int64_t cost_us, apr_int64_t *tat)
{
    apr_pool_t *p = db->pool;
    gmcp_rows rs;
    apr_status_t rv =
        gmcp_db_select(db, db->pgsql ? "gmcp_bucket_charge_pgsql" : "gmcp_bucket_charge_sqlite",
                       &rs, GMCP_ARGS(name, I(p, now_us + cost_us), I(p, now_us), I(p, cost_us)));
    if (rv != APR_SUCCESS) return rv;
    *tat = rs.rows->nelts == 1 ? apr_atoi64(GMCP_ROW(&rs, 0)[0]) : now_us + cost_us;
    return APR_SUCCESS;
}

apr_status_t gmcp_bucket_peek(gmcp_db *db, const char *name, apr_int64_t *tat)
{
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select(db, "gmcp_ratelimit_tat", &rs, GMCP_ARGS(name));
    if (rv != APR_SUCCESS) return rv;
    *tat = rs.rows->nelts == 1 ? apr_atoi64(GMCP_ROW(&rs, 0)[0]) : 0;
    return APR_SUCCESS;
}

/* A held slot whose holder died on this host, taken over: APR_SUCCESS, APR_EBUSY. */
static apr_status_t take_from_dead(gmcp_db *db, const char *key_id, const char *holder,
                                   apr_int64_t expires, int *slot)
{
    apr_pool_t *p = db->pool;
    gmcp_rows rs;
    int i, n;
    apr_status_t rv = gmcp_db_select(db, "gmcp_inflight_holders", &rs, GMCP_ARGS(key_id));
    if (rv != APR_SUCCESS) return rv;
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **row = GMCP_ROW(&rs, i);
        if (!gmcp_lease_holder_dead(row[1])) continue;
        rv = gmcp_db_exec(db, "gmcp_inflight_takeover", &n,
                          GMCP_ARGS(holder, I(p, expires), key_id, row[0], row[1]));
        if (rv != APR_SUCCESS) return rv;
        if (n == 1) {
            *slot = atoi(row[0]);
            return APR_SUCCESS;
        }
    }
    return APR_EBUSY;
}

apr_status_t gmcp_inflight_acquire(gmcp_db *db, const char *key_id, apr_int64_t max,
                                   const char *holder, apr_int64_t now, apr_int64_t expires,
                                   int *slot)
{
    apr_pool_t *p = db->pool;
    const char *now_s = I(p, now);
    int attempt;
    /* A lost race for one slot is retried on the next free one. */
    for (attempt = 0; attempt < 3; attempt++) {
        gmcp_rows rs;
        apr_status_t rv = gmcp_db_select(
            db, "gmcp_inflight_take", &rs,
            GMCP_ARGS(I(p, max), key_id, holder, I(p, expires), key_id, now_s, now_s));
        if (rv != APR_SUCCESS) return rv;
        if (rs.rows->nelts == 1) {
            *slot = atoi(GMCP_ROW(&rs, 0)[0]);
            return APR_SUCCESS;
        }
    }
    return take_from_dead(db, key_id, holder, expires, slot);
}

apr_status_t gmcp_inflight_renew(gmcp_db *db, const char *key_id, int slot, const char *holder,
                                 apr_int64_t expires)
{
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_inflight_renew", &n,
                     GMCP_ARGS(I(db->pool, expires), key_id, I(db->pool, slot), holder));
    if (rv != APR_SUCCESS) return rv;
    return n == 1 ? APR_SUCCESS : APR_ENOENT;
}

apr_status_t gmcp_inflight_release(gmcp_db *db, const char *key_id, int slot, const char *holder)
{
    return gmcp_db_exec(db, "gmcp_inflight_release", NULL,
                        GMCP_ARGS(key_id, I(db->pool, slot), holder));
}
