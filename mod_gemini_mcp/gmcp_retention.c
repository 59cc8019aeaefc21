/* gmcp_retention.c — usage roll-up and the retention deletes of `gmcpctl cleanup`. */
#include "gmcp_retention.h"
#include "gmcp_keys.h"
#include "gmcp_util.h"

#include <string.h>
#include <apr_strings.h>

#define COLS "requests, errors, rejected, prompt_tokens, output_tokens, bytes_in, bytes_out"
#define SUMS                                                          \
    "SUM(requests), SUM(errors), SUM(rejected), SUM(prompt_tokens), " \
    "SUM(output_tokens), SUM(bytes_in), SUM(bytes_out)"
#define ADD_EXCLUDED                                                       \
    "requests = usage_daily.requests + excluded.requests, "                \
    "errors = usage_daily.errors + excluded.errors, "                      \
    "rejected = usage_daily.rejected + excluded.rejected, "                \
    "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, " \
    "output_tokens = usage_daily.output_tokens + excluded.output_tokens, " \
    "bytes_in = usage_daily.bytes_in + excluded.bytes_in, "                \
    "bytes_out = usage_daily.bytes_out + excluded.bytes_out"

apr_status_t gmcp_duration_parse(apr_pool_t *p, const char *s, apr_int64_t min, apr_int64_t max,
                                 apr_int64_t *out, const char **why)
{
    char buf[32];
    apr_size_t n = s ? strlen(s) : 0;
    apr_uint64_t v, mul = 1;
    *why = apr_psprintf(p,
                        "'%s' is not a duration: N seconds, or N with s, m, h "
                        "or d (0 = keep forever), at least %" APR_INT64_T_FMT
                        "s and at most %" APR_INT64_T_FMT "d",
                        s ? s : "", min, max / GMCP_DAY);
    if (!n || n >= sizeof(buf)) return APR_EINVAL;
    memcpy(buf, s, n + 1);
    switch (buf[n - 1]) {
    case 's':
        mul = 1;
        buf[--n] = '\0';
        break;
    case 'm':
        mul = 60;
        buf[--n] = '\0';
        break;
    case 'h':
        mul = 3600;
        buf[--n] = '\0';
        break;
    case 'd':
        mul = GMCP_DAY;
        buf[--n] = '\0';
        break;
    default: break;
    }
    if (gmcp_parse_u64(buf, &v) != 0 || v > (apr_uint64_t)max / mul) return APR_EINVAL;
    v *= mul;
    if (v && ((apr_int64_t)v < min || (apr_int64_t)v > max)) return APR_EINVAL;
    *out = (apr_int64_t)v;
    *why = NULL;
    return APR_SUCCESS;
}

apr_status_t gmcp_retention_check(const gmcp_retention *r, const char **why)
{
    if (!r->usage_daily || (r->usage && r->usage_daily >= r->usage)) return APR_SUCCESS;
    *why = "GeminiMCPUsageDailyRetention must be 0 (forever) or at least "
           "GeminiMCPUsageRetention: the daily roll-ups must outlive the hourly rows";
    return APR_EINVAL;
}

static apr_int64_t day_floor(apr_int64_t t) { return t <= 0 ? 0 : t - t % GMCP_DAY; }

void gmcp_retention_cutoffs(const gmcp_retention *r, apr_int64_t now, gmcp_retention_run *out)
{
    memset(out, 0, sizeof(*out));
    /* Whole UTC days only: a day is rolled up when all of its hours are past the
     * retention, so the day containing the cutoff keeps its hourly rows. */
    if (r->usage > 0) out->usage_before = day_floor(now - r->usage);
    if (r->usage_daily > 0) out->usage_daily_before = day_floor(now - r->usage_daily);
    if (r->audit > 0 && now - r->audit > 0) out->audit_before = now - r->audit;
}

static apr_status_t count1(gmcp_db *db, const char *sql, apr_int64_t *n)
{
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select_raw(db, sql, &rs);
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1 || !GMCP_ROW(&rs, 0)[0]) return GMCP_EDB;
    *n = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
    return APR_SUCCESS;
}

apr_status_t gmcp_retention_count(gmcp_db *db, gmcp_retention_run *run)
{
    apr_pool_t *p = db->pool;
    apr_status_t rv = APR_SUCCESS;
    if (run->usage_before
        && ((rv = count1(
                 db,
                 apr_psprintf(p, "SELECT COUNT(*) FROM usage_hourly WHERE hour < %" APR_INT64_T_FMT,
                              run->usage_before),
                 &run->usage_hourly))
                != APR_SUCCESS
            || (rv = count1(db,
                            apr_psprintf(
                                p,
                                "SELECT COUNT(*) FROM (SELECT DISTINCT key_id, "
                                "hour - hour %% %d FROM usage_hourly WHERE hour < %" APR_INT64_T_FMT
                                ") d",
                                GMCP_DAY, run->usage_before),
                            &run->usage_days))
                != APR_SUCCESS))
        return rv;
    if (run->usage_daily_before
        && (rv = count1(
                db,
                apr_psprintf(p, "SELECT COUNT(*) FROM usage_daily WHERE day < %" APR_INT64_T_FMT,
                             run->usage_daily_before),
                &run->usage_daily))
            != APR_SUCCESS)
        return rv;
    if (run->audit_before)
        rv = count1(db,
                    apr_psprintf(p, "SELECT COUNT(*) FROM audit_log WHERE at < %" APR_INT64_T_FMT,
                                 run->audit_before),
                    &run->audit);
    return rv;
}

/* Move the hourly rows of whole days before the cutoff into usage_daily: what is added
 * is exactly what is deleted, in the same transaction (a crash in between rolls both
 * back; a second run finds nothing to move). */
static apr_status_t roll_up(gmcp_db *db, gmcp_retention_run *run)
{
    apr_pool_t *p = db->pool;
    const char *before = gmcp_i64_str(p, run->usage_before);
    apr_status_t rv;
    int n = 0;
    if (db->pgsql) {
        /* One statement: the rows summed are the rows the DELETE removed, even when
         * a flush lands in an old hour meanwhile. */
        gmcp_rows rs;
        const char *sql =
            apr_pstrcat(p, "WITH gone AS (DELETE FROM usage_hourly WHERE hour < ", before,
                        " RETURNING *), "
                        "added AS (INSERT INTO usage_daily (key_id, day, " COLS ") "
                        "SELECT key_id, hour - hour % 86400, " SUMS " FROM gone "
                        "GROUP BY key_id, hour - hour % 86400 "
                        "ON CONFLICT (key_id, day) DO UPDATE SET " ADD_EXCLUDED " RETURNING 1) "
                        "SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM added)",
                        NULL);
        if ((rv = gmcp_db_select_raw(db, sql, &rs)) != APR_SUCCESS) return rv;
        if (rs.rows->nelts != 1) return GMCP_EDB;
        run->usage_hourly = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
        run->usage_days = apr_atoi64(GMCP_ROW(&rs, 0)[1]);
        return APR_SUCCESS;
    }
    /* SQLite: the INSERT takes the database's write lock, held to the commit, so no
     * flush comes between it and the DELETE. (The WHERE also keeps the upsert's ON
     * from being read as a join constraint.) */
    rv = gmcp_db_exec_raw(db,
                          apr_pstrcat(p,
                                      "INSERT INTO usage_daily (key_id, day, " COLS ") "
                                      "SELECT key_id, hour - hour % 86400, " SUMS
                                      " FROM usage_hourly "
                                      "WHERE hour < ",
                                      before,
                                      " GROUP BY key_id, hour - hour % 86400 "
                                      "ON CONFLICT (key_id, day) DO UPDATE SET " ADD_EXCLUDED,
                                      NULL),
                          &n);
    if (rv != APR_SUCCESS) return rv;
    run->usage_days = n;
    rv = gmcp_db_exec_raw(
        db, apr_pstrcat(p, "DELETE FROM usage_hourly WHERE hour < ", before, NULL), &n);
    if (rv != APR_SUCCESS) return rv;
    run->usage_hourly = n;
    return APR_SUCCESS;
}

/* The audit rows before the cutoff, through the grant the append-only trigger checks.
 * The grant row exists only inside this transaction (other connections never see it:
 * it is inserted and deleted before the commit). */
static apr_status_t audit_delete(gmcp_db *db, gmcp_retention_run *run)
{
    apr_pool_t *p = db->pool;
    const char *before = gmcp_i64_str(p, run->audit_before);
    apr_status_t rv;
    int n = 0;
    if ((rv = gmcp_db_exec_raw(db,
                               apr_pstrcat(p,
                                           "INSERT INTO retention_grants (tbl, cutoff) "
                                           "VALUES ('audit_log', ",
                                           before, ")", NULL),
                               NULL))
            != APR_SUCCESS
        || (rv = gmcp_db_exec_raw(
                db, apr_pstrcat(p, "DELETE FROM audit_log WHERE at < ", before, NULL), &n))
            != APR_SUCCESS)
        return rv;
    run->audit = n;
    return gmcp_db_exec_raw(db, "DELETE FROM retention_grants WHERE tbl = 'audit_log'", NULL);
}

apr_status_t gmcp_retention_apply(gmcp_db *db, const char *actor, gmcp_retention_run *run)
{
    apr_pool_t *p = db->pool;
    apr_dbd_transaction_t *t = NULL;
    apr_status_t rv, end;
    int n = 0;
    if (!run->usage_before && !run->usage_daily_before && !run->audit_before) return APR_SUCCESS;
    if ((rv = gmcp_db_begin(db, &t)) != APR_SUCCESS) goto leave;
    if (run->usage_before && (rv = roll_up(db, run)) != APR_SUCCESS) goto leave;
    if (run->usage_daily_before) {
        rv = gmcp_db_exec_raw(db,
                              apr_psprintf(p,
                                           "DELETE FROM usage_daily WHERE day < %" APR_INT64_T_FMT,
                                           run->usage_daily_before),
                              &n);
        run->usage_daily = n;
        if (rv != APR_SUCCESS) goto leave;
    }
    if (run->audit_before && (rv = audit_delete(db, run)) != APR_SUCCESS) goto leave;
    /* After the delete, in the same transaction: the record of it can never be lost
     * while the delete stays. */
    if (run->usage_hourly || run->usage_daily || run->audit)
        rv = gmcp_audit(
            db, actor, "retention.delete", "",
            apr_psprintf(p,
                         "usage_hourly=%" APR_INT64_T_FMT " usage_days=%" APR_INT64_T_FMT
                         " usage_daily=%" APR_INT64_T_FMT " audit_log=%" APR_INT64_T_FMT
                         " usage_before=%" APR_INT64_T_FMT " usage_daily_before=%" APR_INT64_T_FMT
                         " audit_before=%" APR_INT64_T_FMT,
                         run->usage_hourly, run->usage_days, run->usage_daily, run->audit,
                         run->usage_before, run->usage_daily_before, run->audit_before));
leave:
    end = gmcp_db_end(db, t, rv != APR_SUCCESS);
    if (rv == APR_SUCCESS) rv = end;
    if (rv != APR_SUCCESS) run->usage_hourly = run->usage_days = run->usage_daily = run->audit = 0;
    return rv;
}
