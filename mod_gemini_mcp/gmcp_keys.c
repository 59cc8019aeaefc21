/* gmcp_keys.c — API keys, the audit log and hourly usage in SQL. */
#include "gmcp_keys.h"
#include "gmcp_errlog.h"
#include "gmcp_sql.h"
#include "gmcp_util.h"

#include <string.h>
#include <apr_fnmatch.h>
#include <apr_strings.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define KEY_COLS                                                                     \
    "id, name, tenant, apache_user, scopes, rate_count, rate_period, burst, "        \
    "token_rate_count, token_rate_period, token_quota, quota_period, max_inflight, " \
    "secret_hash, prev_hash, prev_until, created, updated, expires, revoked"
#define USAGE_COLS                                                         \
    "requests, errors, rejected, prompt_tokens, output_tokens, bytes_in, " \
    "bytes_out"

const gmcp_stmt gmcp_key_stmts[] = {
    {"gmcp_key_insert",
     "INSERT INTO api_keys (" KEY_COLS ") VALUES (%s, %s, %s, %s, %s, %lld, %lld, %lld, "
     "%lld, %lld, %lld, %s, %lld, %s, '', 0, %lld, %lld, %lld, 0)"},
    {"gmcp_key_select", "SELECT " KEY_COLS " FROM api_keys WHERE id = %s"},
    {"gmcp_key_by_user",
     "SELECT " KEY_COLS " FROM api_keys WHERE apache_user = %s "
     "AND apache_user <> ''"},
    {"gmcp_key_list", "SELECT " KEY_COLS " FROM api_keys ORDER BY created, id"},
    {"gmcp_key_revoke",
     "UPDATE api_keys SET revoked = %lld, updated = %lld WHERE id = %s AND revoked = 0"},
    {"gmcp_key_rotate",
     "UPDATE api_keys SET prev_hash = secret_hash, prev_until = %lld, secret_hash = %s, "
     "updated = %lld WHERE id = %s AND revoked = 0"},
    {"gmcp_key_update",
     "UPDATE api_keys SET name = %s, tenant = %s, apache_user = %s, scopes = %s, "
     "rate_count = %lld, rate_period = %lld, burst = %lld, token_rate_count = %lld, "
     "token_rate_period = %lld, token_quota = %lld, quota_period = %s, max_inflight = %lld, "
     "expires = %lld, updated = %lld WHERE id = %s AND revoked = 0"},
    {"gmcp_audit_insert",
     "INSERT INTO audit_log (at, actor, action, key_id, detail) VALUES (%lld, %s, %s, %s, %s)"},
    {"gmcp_audit_since",
     "SELECT id, at, actor, action, key_id, detail FROM audit_log WHERE at >= %lld "
     "ORDER BY id"},
    /* Adds to the hour's row: several processes and nodes flush into the same one. */
    {"gmcp_usage_add",
     "INSERT INTO usage_hourly (key_id, hour, " USAGE_COLS ") VALUES (%s, %lld, %lld, %lld, "
     "%lld, %lld, %lld, %lld, %lld) ON CONFLICT (key_id, hour) DO UPDATE SET "
     "requests = usage_hourly.requests + excluded.requests, "
     "errors = usage_hourly.errors + excluded.errors, "
     "rejected = usage_hourly.rejected + excluded.rejected, "
     "prompt_tokens = usage_hourly.prompt_tokens + excluded.prompt_tokens, "
     "output_tokens = usage_hourly.output_tokens + excluded.output_tokens, "
     "bytes_in = usage_hourly.bytes_in + excluded.bytes_in, "
     "bytes_out = usage_hourly.bytes_out + excluded.bytes_out"},
    /* Hourly rows since the start plus the daily roll-ups (usage_daily, written by
     * gmcpctl cleanup, gmcp_retention.h) of days starting at or after it: the two hold
     * disjoint counts (a roll-up deletes the hours it adds), so for a day-aligned start
     * the sum is exact however much was rolled up. */
    {"gmcp_usage_sum",
     "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(errors), 0), "
     "COALESCE(SUM(rejected), 0), COALESCE(SUM(prompt_tokens), 0), "
     "COALESCE(SUM(output_tokens), 0), COALESCE(SUM(bytes_in), 0), "
     "COALESCE(SUM(bytes_out), 0) FROM ("
     "SELECT " USAGE_COLS " FROM usage_hourly WHERE key_id = %s AND hour >= %lld "
     "UNION ALL SELECT " USAGE_COLS " FROM usage_daily WHERE key_id = %s AND day >= %lld"
     ") u"},
    /* Rows of both: the last column says 'hour' or 'day' (the second is its start). */
    {"gmcp_usage_rows_key",
     "SELECT key_id, hour, " USAGE_COLS ", 'hour' FROM usage_hourly WHERE key_id = %s "
     "AND hour >= %lld UNION ALL "
     "SELECT key_id, day, " USAGE_COLS ", 'day' FROM usage_daily WHERE key_id = %s "
     "AND day >= %lld ORDER BY 2, 1, 10"},
    {"gmcp_usage_rows_all",
     "SELECT key_id, hour, " USAGE_COLS ", 'hour' FROM usage_hourly WHERE hour >= %lld "
     "UNION ALL SELECT key_id, day, " USAGE_COLS ", 'day' FROM usage_daily "
     "WHERE day >= %lld ORDER BY 2, 1, 10"},
    /* GCRA in one statement: tat' = max(tat, now) + interval, admitted while
     * tat' - now <= limit; a refused request changes nothing. */
    {"gmcp_ratelimit_pgsql",
     "INSERT INTO rate_limits (key_id, tat) VALUES (%s, %lld) ON CONFLICT (key_id) DO UPDATE "
     "SET tat = GREATEST(rate_limits.tat, %lld) + %lld "
     "WHERE GREATEST(rate_limits.tat, %lld) + %lld - %lld <= %lld RETURNING tat"},
    /* SQLite binds the parameters as text, and MAX() of an integer and a text picks
     * the text: cast them. */
    {"gmcp_ratelimit_sqlite",
     "INSERT INTO rate_limits (key_id, tat) VALUES (%s, CAST(%lld AS INTEGER)) "
     "ON CONFLICT (key_id) DO UPDATE "
     "SET tat = MAX(rate_limits.tat, CAST(%lld AS INTEGER)) + CAST(%lld AS INTEGER) "
     "WHERE MAX(rate_limits.tat, CAST(%lld AS INTEGER)) + CAST(%lld AS INTEGER) "
     "- CAST(%lld AS INTEGER) <= CAST(%lld AS INTEGER) RETURNING tat"},
    {"gmcp_ratelimit_tat", "SELECT tat FROM rate_limits WHERE key_id = %s"},
    {NULL, NULL}};

static const char *I(apr_pool_t *p, apr_int64_t v) { return gmcp_i64_str(p, v); }

/* ---- the key itself --------------------------------------------------------------------- */

apr_status_t gmcp_key_generate(apr_pool_t *p, const char **id, const char **secret)
{
    unsigned char idb[GMCP_KEY_ID_HEX / 2];
    const char *sec = gmcp_random_id(p, 32);
    if (!sec || RAND_bytes(idb, sizeof(idb)) != 1) return APR_ENOTENOUGHENTROPY;
    *id = gmcp_hex(p, idb, sizeof(idb));
    *secret = apr_pstrcat(p, GMCP_KEY_PREFIX, *id, "_", sec, NULL);
    return APR_SUCCESS;
}

apr_status_t gmcp_key_parse(apr_pool_t *p, const char *s, const char **id, const char **secret_part)
{
    const char *q;
    apr_size_t i, n;
    if (!s || strncmp(s, GMCP_KEY_PREFIX, strlen(GMCP_KEY_PREFIX)) != 0) return APR_EINVAL;
    s += strlen(GMCP_KEY_PREFIX);
    for (i = 0; i < GMCP_KEY_ID_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return APR_EINVAL;
    if (s[GMCP_KEY_ID_HEX] != '_') return APR_EINVAL;
    q = s + GMCP_KEY_ID_HEX + 1;
    n = strlen(q);
    if (n != 43) return APR_EINVAL; /* 32 bytes, base64url without padding */
    for (i = 0; i < n; i++)
        if (!((q[i] >= 'A' && q[i] <= 'Z') || (q[i] >= 'a' && q[i] <= 'z')
              || (q[i] >= '0' && q[i] <= '9') || q[i] == '-' || q[i] == '_'))
            return APR_EINVAL;
    *id = apr_pstrndup(p, s, GMCP_KEY_ID_HEX);
    if (secret_part) *secret_part = q;
    return APR_SUCCESS;
}

const char *gmcp_key_hash(apr_pool_t *p, const char *pepper, const char *presented)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), pepper, (int)strlen(pepper), (const unsigned char *)presented,
              strlen(presented), md, &mdlen))
        return NULL;
    return gmcp_hex(p, md, mdlen);
}

gmcp_key_verdict gmcp_key_verify(const gmcp_key *k, const char *hash, apr_int64_t now)
{
    int cur = gmcp_str_eq_ct(k->secret_hash, hash);
    int prev = *k->prev_hash && gmcp_str_eq_ct(k->prev_hash, hash) && now < k->prev_until;
    if (!cur && !prev) return GMCP_KEY_BAD;
    if (k->revoked) return GMCP_KEY_REVOKED;
    if (k->expires && now >= k->expires) return GMCP_KEY_EXPIRED;
    return GMCP_KEY_OK;
}

int gmcp_scope_allows(apr_pool_t *p, const char *scopes, const char *tool)
{
    char *list = apr_pstrdup(p, scopes ? scopes : "*"), *last = NULL, *pat;
    for (pat = apr_strtok(list, " ,", &last); pat; pat = apr_strtok(NULL, " ,", &last))
        if (apr_fnmatch(pat, tool, 0) == APR_SUCCESS) return 1;
    return 0;
}

apr_status_t gmcp_rate_parse(const char *s, const char *units, apr_int64_t *count,
                             apr_int64_t *period, const char **unit)
{
    static const struct {
        const char *name;
        char code;
        apr_int64_t secs;
    } U[] = {{"s", 's', 1},     {"sec", 's', 1},     {"m", 'm', 60},
             {"min", 'm', 60},  {"h", 'h', 3600},    {"hour", 'h', 3600},
             {"d", 'd', 86400}, {"day", 'd', 86400}, {"month", 'M', 30 * 86400},
             {NULL, 0, 0}};
    const char *slash = s ? strchr(s, '/') : NULL;
    apr_uint64_t v;
    int i;
    if (!slash) return APR_EINVAL;
    {
        char num[24];
        apr_size_t n = (apr_size_t)(slash - s);
        if (n == 0 || n >= sizeof(num)) return APR_EINVAL;
        memcpy(num, s, n);
        num[n] = '\0';
        if (gmcp_parse_u64(num, &v) != 0 || v == 0 || v > (apr_uint64_t)1 << 50) return APR_EINVAL;
    }
    for (i = 0; U[i].name; i++)
        if (!strcmp(slash + 1, U[i].name) && strchr(units, U[i].code)) {
            *count = (apr_int64_t)v;
            *period = U[i].secs;
            if (unit) *unit = U[i].code == 'M' ? "month" : U[i].code == 'd' ? "day" : U[i].name;
            return APR_SUCCESS;
        }
    return APR_EINVAL;
}

apr_int64_t gmcp_quota_period_start(const char *period, apr_int64_t now)
{
    apr_time_exp_t t;
    apr_time_t out;
    apr_time_exp_gmt(&t, apr_time_from_sec(now));
    t.tm_hour = t.tm_min = t.tm_sec = 0;
    t.tm_usec = 0;
    if (period && !strcmp(period, "month")) t.tm_mday = 1;
    if (apr_time_exp_gmt_get(&out, &t) != APR_SUCCESS) return now - now % 86400;
    return apr_time_sec(out);
}

apr_int64_t gmcp_quota_period_end(const char *period, apr_int64_t now)
{
    apr_time_exp_t t;
    apr_time_t out;
    if (!period || strcmp(period, "month") != 0)
        return gmcp_quota_period_start(period, now) + 86400;
    apr_time_exp_gmt(&t, apr_time_from_sec(now));
    t.tm_hour = t.tm_min = t.tm_sec = 0;
    t.tm_usec = 0;
    t.tm_mday = 1;
    if (++t.tm_mon == 12) {
        t.tm_mon = 0;
        t.tm_year++;
    }
    if (apr_time_exp_gmt_get(&out, &t) != APR_SUCCESS) return now + 31 * 86400;
    return apr_time_sec(out);
}

/* ---- rows --------------------------------------------------------------------------------- */

static void fill_key(const char **r, gmcp_key *k)
{
    k->id = r[0];
    k->name = r[1];
    k->tenant = r[2];
    k->apache_user = r[3];
    k->scopes = r[4];
    k->rate_count = apr_atoi64(r[5]);
    k->rate_period = apr_atoi64(r[6]);
    k->burst = apr_atoi64(r[7]);
    k->token_rate_count = apr_atoi64(r[8]);
    k->token_rate_period = apr_atoi64(r[9]);
    k->token_quota = apr_atoi64(r[10]);
    k->quota_period = r[11];
    k->max_inflight = apr_atoi64(r[12]);
    k->secret_hash = r[13];
    k->prev_hash = r[14];
    k->prev_until = apr_atoi64(r[15]);
    k->created = apr_atoi64(r[16]);
    k->updated = apr_atoi64(r[17]);
    k->expires = apr_atoi64(r[18]);
    k->revoked = apr_atoi64(r[19]);
}

apr_status_t gmcp_key_insert(gmcp_db *db, const gmcp_key *k)
{
    apr_pool_t *p = db->pool;
    int n = 0;
    return gmcp_db_exec(db, "gmcp_key_insert", &n,
                        GMCP_ARGS(k->id, k->name, k->tenant, k->apache_user, k->scopes,
                                  I(p, k->rate_count), I(p, k->rate_period), I(p, k->burst),
                                  I(p, k->token_rate_count), I(p, k->token_rate_period),
                                  I(p, k->token_quota), k->quota_period, I(p, k->max_inflight),
                                  k->secret_hash, I(p, k->created), I(p, k->updated),
                                  I(p, k->expires)));
}

static apr_status_t get_one(gmcp_db *db, const char *label, const char *arg, gmcp_key *out)
{
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select(db, label, &rs, GMCP_ARGS(arg));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    fill_key(GMCP_ROW(&rs, 0), out);
    return APR_SUCCESS;
}

apr_status_t gmcp_key_get(gmcp_db *db, const char *id, gmcp_key *out)
{
    return get_one(db, "gmcp_key_select", id, out);
}

apr_status_t gmcp_key_get_by_user(gmcp_db *db, const char *apache_user, gmcp_key *out)
{
    return get_one(db, "gmcp_key_by_user", apache_user, out);
}

apr_status_t gmcp_key_list(gmcp_db *db, apr_array_header_t **out)
{
    gmcp_rows rs;
    int i;
    apr_status_t rv = gmcp_db_select(db, "gmcp_key_list", &rs, 0, NULL);
    if (rv != APR_SUCCESS) return rv;
    *out = apr_array_make(db->pool, rs.rows->nelts + 1, sizeof(gmcp_key));
    for (i = 0; i < rs.rows->nelts; i++) fill_key(GMCP_ROW(&rs, i), apr_array_push(*out));
    return APR_SUCCESS;
}

/* An UPDATE of one live key that ran (rv) and changed n rows. */
static apr_status_t changed(apr_status_t rv, int n)
{
    return rv != APR_SUCCESS ? rv : n == 1 ? APR_SUCCESS : APR_ENOENT;
}

apr_status_t gmcp_key_revoke(gmcp_db *db, const char *id, apr_int64_t now)
{
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_key_revoke", &n, GMCP_ARGS(I(db->pool, now), I(db->pool, now), id));
    return changed(rv, n);
}

apr_status_t gmcp_key_rotate(gmcp_db *db, const char *id, const char *new_hash,
                             apr_int64_t grace_until, apr_int64_t now)
{
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_key_rotate", &n,
                     GMCP_ARGS(I(db->pool, grace_until), new_hash, I(db->pool, now), id));
    return changed(rv, n);
}

apr_status_t gmcp_key_update(gmcp_db *db, const gmcp_key *k, apr_int64_t now)
{
    apr_pool_t *p = db->pool;
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_key_update", &n,
                     GMCP_ARGS(k->name, k->tenant, k->apache_user, k->scopes, I(p, k->rate_count),
                               I(p, k->rate_period), I(p, k->burst), I(p, k->token_rate_count),
                               I(p, k->token_rate_period), I(p, k->token_quota), k->quota_period,
                               I(p, k->max_inflight), I(p, k->expires), I(p, now), k->id));
    return changed(rv, n);
}

static json_t *time_or_null(apr_int64_t t)
{
    char buf[APR_RFC822_DATE_LEN];
    if (!t) return json_null();
    apr_rfc822_date(buf, apr_time_from_sec(t));
    return json_string(buf);
}

json_t *gmcp_key_json(const gmcp_key *k, apr_int64_t now)
{
    const char *state = k->revoked          ? "revoked"
        : (k->expires && now >= k->expires) ? "expired"
                                            : "active";
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, "
        "s:I, s:o, s:o, s:o, s:o, s:b}",
        "id", k->id, "name", k->name, "tenant", k->tenant, "apache_user", k->apache_user, "scopes",
        k->scopes, "state", state, "rate_count", (json_int_t)k->rate_count, "rate_period",
        (json_int_t)k->rate_period, "burst", (json_int_t)k->burst, "token_rate_count",
        (json_int_t)k->token_rate_count, "token_rate_period", (json_int_t)k->token_rate_period,
        "token_quota", (json_int_t)k->token_quota, "quota_period", k->quota_period, "max_inflight",
        (json_int_t)k->max_inflight, "created", time_or_null(k->created), "updated",
        time_or_null(k->updated), "expires", time_or_null(k->expires), "revoked",
        time_or_null(k->revoked), "previous_secret_valid", *k->prev_hash && now < k->prev_until);
    if (*k->prev_hash && now < k->prev_until)
        json_object_set_new(o, "previous_secret_until", time_or_null(k->prev_until));
    return o;
}

/* ---- audit ------------------------------------------------------------------------------ */

apr_status_t gmcp_audit(gmcp_db *db, const char *actor, const char *action, const char *key_id,
                        const char *detail)
{
    int n = 0;
    return gmcp_db_exec(db, "gmcp_audit_insert", &n,
                        GMCP_ARGS(gmcp_now_str(db->pool), actor, action, key_id ? key_id : "",
                                  detail ? detail : ""));
}

apr_status_t gmcp_audit_list(gmcp_db *db, apr_int64_t since, gmcp_rows *out)
{
    return gmcp_db_select(db, "gmcp_audit_since", out, GMCP_ARGS(I(db->pool, since)));
}

/* ---- usage ------------------------------------------------------------------------------ */

apr_status_t gmcp_usage_add(gmcp_db *db, const char *key_id, apr_int64_t hour, const gmcp_usage *u)
{
    apr_pool_t *p = db->pool;
    int n = 0;
    return gmcp_db_exec(db, "gmcp_usage_add", &n,
                        GMCP_ARGS(key_id, I(p, hour), I(p, u->requests), I(p, u->errors),
                                  I(p, u->rejected), I(p, u->prompt_tokens), I(p, u->output_tokens),
                                  I(p, u->bytes_in), I(p, u->bytes_out)));
}

/* A select that must answer exactly one row: anything else is the database failing. */
static apr_status_t one_row(const char *label, const gmcp_rows *rs)
{
    if (rs->rows->nelts == 1) return APR_SUCCESS;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0210",
              "statement %s returned %d rows, "
              "not 1",
              label, rs->rows->nelts);
    return GMCP_EDB;
}

apr_status_t gmcp_usage_sum(gmcp_db *db, const char *key_id, apr_int64_t since, gmcp_usage *out)
{
    gmcp_rows rs;
    const char **r;
    apr_status_t rv;
    memset(out, 0, sizeof(*out));
    rv = gmcp_db_select(db, "gmcp_usage_sum", &rs,
                        GMCP_ARGS(key_id, I(db->pool, since), key_id, I(db->pool, since)));
    if (rv == APR_SUCCESS) rv = one_row("gmcp_usage_sum", &rs);
    if (rv != APR_SUCCESS) return rv;
    r = GMCP_ROW(&rs, 0);
    out->requests = apr_atoi64(r[0]);
    out->errors = apr_atoi64(r[1]);
    out->rejected = apr_atoi64(r[2]);
    out->prompt_tokens = apr_atoi64(r[3]);
    out->output_tokens = apr_atoi64(r[4]);
    out->bytes_in = apr_atoi64(r[5]);
    out->bytes_out = apr_atoi64(r[6]);
    return APR_SUCCESS;
}

apr_status_t gmcp_usage_rows(gmcp_db *db, const char *key_id, apr_int64_t since, gmcp_rows *out)
{
    return key_id
        ? gmcp_db_select(db, "gmcp_usage_rows_key", out,
                         GMCP_ARGS(key_id, I(db->pool, since), key_id, I(db->pool, since)))
        : gmcp_db_select(db, "gmcp_usage_rows_all", out,
                         GMCP_ARGS(I(db->pool, since), I(db->pool, since)));
}

void gmcp_usage_merge(gmcp_usage *into, const gmcp_usage *u)
{
    into->requests += u->requests;
    into->errors += u->errors;
    into->rejected += u->rejected;
    into->prompt_tokens += u->prompt_tokens;
    into->output_tokens += u->output_tokens;
    into->bytes_in += u->bytes_in;
    into->bytes_out += u->bytes_out;
}

int gmcp_usage_empty(const gmcp_usage *u)
{
    return !(u->requests | u->errors | u->rejected | u->prompt_tokens | u->output_tokens
             | u->bytes_in | u->bytes_out);
}

/* ---- the shared rate-limit store ----------------------------------------------------------- */

apr_status_t gmcp_ratelimit_dbd(gmcp_db *db, const char *key_id, apr_int64_t now_us,
                                apr_int64_t interval_us, apr_int64_t limit_us, int *allowed,
                                apr_int64_t *tat)
{
    apr_pool_t *p = db->pool;
    const char *now = I(p, now_us), *iv = I(p, interval_us);
    gmcp_rows rs;
    apr_status_t rv;
    rv = gmcp_db_select(
        db, db->pgsql ? "gmcp_ratelimit_pgsql" : "gmcp_ratelimit_sqlite", &rs,
        GMCP_ARGS(key_id, I(p, now_us + interval_us), now, iv, now, iv, now, I(p, limit_us)));
    if (rv != APR_SUCCESS) return rv;
    *allowed = rs.rows->nelts == 1;
    if (!*allowed) {
        rv = gmcp_db_select(db, "gmcp_ratelimit_tat", &rs, GMCP_ARGS(key_id));
        if (rv == APR_SUCCESS) rv = one_row("gmcp_ratelimit_tat", &rs);
        if (rv != APR_SUCCESS) return rv;
    }
    *tat = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
    return APR_SUCCESS;
}
