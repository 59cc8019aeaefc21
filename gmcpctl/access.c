/* access.c — gmcpctl keys, usage and audit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pwd.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <jansson.h>

#include "gmcp_keys.h"
#include "gmcp_store.h"
#include "gmcp_util.h"
#include "gmcpctl.h"

#define MAX_TENANT 128
#define MAX_SCOPES 512
#define MAX_NAME   128

const char *actor(apr_pool_t *p)
{
    const char *who = getenv("SUDO_USER");
    struct passwd *pw;
    if (!who || !*who) who = (pw = getpwuid(getuid())) ? pw->pw_name : NULL;
    return apr_pstrcat(p, "gmcpctl:", who ? who : apr_itoa(p, (int)getuid()), NULL);
}

/* A duration like "90s", "30m", "24h", "7d" (seconds), or -1. */
static apr_int64_t parse_duration(const char *s)
{
    apr_uint64_t v;
    char num[24], unit;
    apr_size_t n;
    if (!s || !*s) return -1;
    n = strlen(s);
    unit = s[n - 1];
    if (unit >= '0' && unit <= '9') unit = 's';
    else n--;
    if (n == 0 || n >= sizeof(num)) return -1;
    memcpy(num, s, n);
    num[n] = '\0';
    if (gmcp_parse_u64(num, &v) || v > (apr_uint64_t)100 * 365 * 86400) return -1;
    switch (unit) {
    case 's': return (apr_int64_t)v;
    case 'm': return (apr_int64_t)v * 60;
    case 'h': return (apr_int64_t)v * 3600;
    case 'd': return (apr_int64_t)v * 86400;
    default: return -1;
    }
}

/* "2026-12-31", "2026-12-31T12:00:00Z" (UTC), "+30d" / "-24h" relative to now,
 * "never" (0). Seconds since the epoch, or -1. */
static apr_int64_t parse_when(const char *s)
{
    apr_time_exp_t t;
    apr_time_t out;
    int y, mo, d, h = 0, mi = 0, se = 0, n = 0;
    if (!s) return -1;
    if (!strcmp(s, "never")) return 0;
    if (*s == '+' || *s == '-') {
        apr_int64_t dur = parse_duration(s + 1);
        return dur < 0 ? -1 : gmcp_now_sec() + (*s == '+' ? dur : -dur);
    }
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3) return -1;
    if (s[n] == 'T' || s[n] == ' ') {
        int m = 0;
        if (sscanf(s + n + 1, "%2d:%2d%n", &h, &mi, &m) != 2) return -1;
        n += 1 + m;
        if (s[n] == ':') {
            if (sscanf(s + n + 1, "%2d%n", &se, &m) != 1) return -1;
            n += 1 + m;
        }
        if (s[n] == 'Z') n++;
    }
    if (s[n] || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return -1;
    memset(&t, 0, sizeof(t));
    t.tm_year = y - 1900; t.tm_mon = mo - 1; t.tm_mday = d;
    t.tm_hour = h; t.tm_min = mi; t.tm_sec = se;
    if (apr_time_exp_gmt_get(&out, &t) != APR_SUCCESS) return -1;
    return apr_time_sec(out);
}

static int bad_chars(const char *s, const char *extra)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')
              || strchr(extra, *s)))
            return 1;
    return 0;
}

/* Apply the limit/scope flags given on the command line to k. */
static int apply_flags(ctl *c, gmcp_key *k)
{
    const char *v, *unit;
    apr_uint64_t n;
    if ((v = opt(c, OPT_NAME))) {
        if (!*v || strlen(v) > MAX_NAME) return usage_err("--name must be 1-%s characters", "128");
        k->name = v;
    }
    if ((v = opt(c, OPT_TENANT))) {
        if (strlen(v) > MAX_TENANT || bad_chars(v, "._-@"))
            return usage_err("--tenant '%s' must be up to 128 of [A-Za-z0-9._-@]", v);
        k->tenant = v;
    }
    if ((v = opt(c, OPT_USER))) {
        if (strlen(v) > 256) return usage_err("--user is too long%s", "");
        k->apache_user = v;
    }
    if ((v = opt(c, OPT_SCOPES))) {
        if (!*v || strlen(v) > MAX_SCOPES || bad_chars(v, "_.-*?[], "))
            return usage_err("--scopes '%s' must list tool names or patterns (gemini_*), "
                             "comma-separated", v);
        k->scopes = v;
    }
    if ((v = opt(c, OPT_RATE))) {
        if (!strcmp(v, "none")) k->rate_count = 0;
        else if (gmcp_rate_parse(v, "smh", &k->rate_count, &k->rate_period, &unit))
            return usage_err("--rate '%s' must look like 10/s, 600/m or 1000/h (or none)", v);
    }
    if ((v = opt(c, OPT_BURST))) {
        if (gmcp_parse_u64(v, &n) || n > 1000000)
            return usage_err("--burst '%s' must be a whole number (0: as many as the rate)", v);
        k->burst = (apr_int64_t)n;
    }
    if ((v = opt(c, OPT_TOKEN_RATE))) {
        if (!strcmp(v, "none")) k->token_rate_count = 0;
        else if (gmcp_rate_parse(v, "smh", &k->token_rate_count, &k->token_rate_period, &unit))
            return usage_err("--token-rate '%s' must look like 10000/m (or none)", v);
    }
    if ((v = opt(c, OPT_TOKEN_QUOTA))) {
        apr_int64_t per;
        if (!strcmp(v, "none")) k->token_quota = 0;
        else if (gmcp_rate_parse(v, "dM", &k->token_quota, &per, &unit))
            return usage_err("--token-quota '%s' must look like 1000000/day or 20000000/month "
                             "(or none)", v);
        else k->quota_period = unit;
    }
    if ((v = opt(c, OPT_MAX_INFLIGHT))) {
        if (gmcp_parse_u64(v, &n) || n > 100000)
            return usage_err("--max-inflight '%s' must be a whole number (0: no cap)", v);
        k->max_inflight = (apr_int64_t)n;
    }
    if ((v = opt(c, OPT_EXPIRES))) {
        apr_int64_t t = parse_when(v);
        if (t < 0) return usage_err("--expires '%s' must be YYYY-MM-DD[THH:MM[:SS]Z], +30d or "
                                    "never", v);
        k->expires = t;
    }
    return 0;
}

static const char *pepper_value(ctl *c)
{
    const char *v;
    if (!c->pepper) {
        fail("%s", "no key pepper: set GeminiMCPKeyPepper in the httpd configuration "
             "(read with --config) or give --pepper file:PATH|env:NAME");
        return NULL;
    }
    if ((strncmp(c->pepper, "file:", 5) && strncmp(c->pepper, "env:", 4))
        || !(v = gmcp_read_secret(c->pool, c->pepper)) || strlen(v) < 16) {
        fail("the key pepper %s is missing, unreadable or shorter than 16 characters",
             c->pepper);
        return NULL;
    }
    return v;
}

static void print_json(ctl *c, json_t *o)
{
    json_dumpf(o, stdout, c->json ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
}

static const char *limit_text(apr_pool_t *p, apr_int64_t count, apr_int64_t period)
{
    if (!count) return "-";
    return apr_psprintf(p, "%" APR_INT64_T_FMT "/%s", count, period == 1 ? "s"
                        : period == 60 ? "m" : period == 3600 ? "h"
                        : apr_psprintf(p, "%" APR_INT64_T_FMT "s", period));
}

static int need_key(ctl *c, const char *id, gmcp_key *k)
{
    int rv;
    if (!id) return usage_err("a key id is required%s", "");
    if ((rv = open_db(c, 0)) != 0) return rv;
    /* Accept the whole secret too, but only ever use its id part. */
    if (!strncmp(id, GMCP_KEY_PREFIX, strlen(GMCP_KEY_PREFIX))
        && gmcp_key_parse(c->pool, id, &id, NULL) != 0)
        return usage_err("'%s' is not a key id", "that");
    rv = gmcp_key_get(&c->db, id, k);
    if (rv == GMCP_NOT_FOUND) return fail("no API key '%s'", id);
    if (rv) return fail("cannot read the key store: %s", gmcp_db_error(&c->db, -1));
    return 0;
}

static const char *describe(ctl *c, const gmcp_key *k)
{
    return apr_psprintf(c->pool, "name=%s tenant=%s scopes=%s rate=%s burst=%" APR_INT64_T_FMT
                        " token_rate=%s token_quota=%" APR_INT64_T_FMT "/%s max_inflight=%"
                        APR_INT64_T_FMT " expires=%s user=%s", k->name, k->tenant, k->scopes,
                        limit_text(c->pool, k->rate_count, k->rate_period), k->burst,
                        limit_text(c->pool, k->token_rate_count, k->token_rate_period),
                        k->token_quota, k->quota_period, k->max_inflight,
                        k->expires ? iso(c->pool, k->expires) : "never", k->apache_user);
}

/* Key changes and their audit row commit together. */
static int commit(ctl *c, apr_dbd_transaction_t *t, int failed)
{
    if (gmcp_db_end(&c->db, t, failed) || failed)
        return fail("the change was not made: %s", gmcp_db_error(&c->db, -1));
    return 0;
}

int cmd_keys(ctl *c, const char *sub, const char *id)
{
    gmcp_key k;
    apr_int64_t now = gmcp_now_sec();
    apr_dbd_transaction_t *t = NULL;
    int rv, i;

    if (!strcmp(sub, "create")) {
        const char *pepper, *secret, *kid;
        if (id) return usage_err("keys create takes no argument (use --name)%s", "");
        memset(&k, 0, sizeof(k));
        k.tenant = ""; k.apache_user = ""; k.scopes = "*"; k.quota_period = "day";
        k.rate_period = 1; k.token_rate_period = 60;
        if ((rv = apply_flags(c, &k)) != 0) return rv;
        if (!k.name) return usage_err("keys create needs --name%s", "");
        if ((rv = open_db(c, 0)) != 0) return rv;   /* also reads --config's pepper */
        if (!(pepper = pepper_value(c))) return EXIT_FAIL;
        if (gmcp_key_generate(c->pool, &kid, &secret)) return fail("%s", "no randomness");
        k.id = kid;
        k.secret_hash = gmcp_key_hash(c->pool, pepper, secret);
        k.prev_hash = "";
        k.created = k.updated = now;
        if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
        rv = gmcp_key_insert(&c->db, &k) || gmcp_audit(&c->db, actor(c->pool), "key.create",
                                                         k.id, describe(c, &k));
        if ((rv = commit(c, t, rv)) != 0) return rv;
        if (c->json) {
            json_t *o = gmcp_key_json(&k, now);
            json_object_set_new(o, "secret", json_string(secret));
            print_json(c, o);
        }
        else {
            printf("%s\n", secret);
            fprintf(stderr, "gmcpctl: created key %s (%s); the secret above is shown only "
                    "once\n", k.id, k.name);
        }
        return 0;
    }
    if (!strcmp(sub, "list")) {
        apr_array_header_t *list;
        json_t *arr = json_array();
        if (id) { json_decref(arr); return usage_err("keys list takes no argument%s", ""); }
        if ((rv = open_db(c, 0)) != 0) { json_decref(arr); return rv; }
        if (gmcp_key_list(&c->db, &list)) {
            json_decref(arr);
            return fail("cannot read the key store: %s", gmcp_db_error(&c->db, -1));
        }
        for (i = 0; i < list->nelts; i++) {
            gmcp_key *x = &APR_ARRAY_IDX(list, i, gmcp_key);
            if (c->json) {
                json_array_append_new(arr, gmcp_key_json(x, now));
            }
            else {
                const char *state = x->revoked ? "revoked"
                                    : (x->expires && now >= x->expires) ? "expired" : "active";
                printf("%-16s %-8s %-20s %-16s %-10s %s\n", x->id, state, x->name,
                       *x->tenant ? x->tenant : "-",
                       limit_text(c->pool, x->rate_count, x->rate_period), x->scopes);
            }
        }
        if (c->json) { json_dumpf(arr, stdout, JSON_COMPACT); fputc('\n', stdout); }
        json_decref(arr);
        return 0;
    }
    if (!strcmp(sub, "show")) {
        if ((rv = need_key(c, id, &k)) != 0) return rv;
        print_json(c, gmcp_key_json(&k, now));
        return 0;
    }
    if (!strcmp(sub, "revoke")) {
        if ((rv = need_key(c, id, &k)) != 0) return rv;
        if (k.revoked) return fail("key %s is already revoked", k.id);
        if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
        rv = gmcp_key_revoke(&c->db, k.id, now) != GMCP_FOUND
             || gmcp_audit(&c->db, actor(c->pool), "key.revoke", k.id, k.name);
        if ((rv = commit(c, t, rv)) != 0) return rv;
        if (c->verbose) printf("revoked %s\n", k.id);
        return 0;
    }
    if (!strcmp(sub, "rotate")) {
        const char *pepper, *grace_s = opt(c, OPT_GRACE), *secret, *kid, *sp;
        apr_int64_t grace = grace_s ? parse_duration(grace_s) : 24 * 3600;
        if (grace < 0) return usage_err("--grace '%s' must be a duration like 30m, 24h or 0",
                                        grace_s);
        if ((rv = need_key(c, id, &k)) != 0) return rv;
        if (!(pepper = pepper_value(c))) return EXIT_FAIL;
        if (k.revoked) return fail("key %s is revoked: create a new one", k.id);
        /* Same id (so usage, limits and ownership carry over), new secret. */
        if (gmcp_key_generate(c->pool, &kid, &secret)) return fail("%s", "no randomness");
        gmcp_key_parse(c->pool, secret, &kid, &sp);
        secret = apr_pstrcat(c->pool, GMCP_KEY_PREFIX, k.id, "_", sp, NULL);
        if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
        rv = gmcp_key_rotate(&c->db, k.id, gmcp_key_hash(c->pool, pepper, secret),
                             grace ? now + grace : 0, now) != GMCP_FOUND
             || gmcp_audit(&c->db, actor(c->pool), "key.rotate", k.id,
                           apr_psprintf(c->pool, "previous secret valid for %" APR_INT64_T_FMT
                                        "s", grace));
        if ((rv = commit(c, t, rv)) != 0) return rv;
        if (c->json) {
            print_json(c, json_pack("{s:s, s:s, s:I}", "id", k.id, "secret", secret,
                                    "grace_seconds", (json_int_t)grace));
        }
        else {
            printf("%s\n", secret);
            fprintf(stderr, "gmcpctl: rotated key %s; the old secret works for %" APR_INT64_T_FMT
                    " more seconds\n", k.id, grace);
        }
        return 0;
    }
    if (!strcmp(sub, "update")) {
        if ((rv = need_key(c, id, &k)) != 0) return rv;
        if (k.revoked) return fail("key %s is revoked", k.id);
        if ((rv = apply_flags(c, &k)) != 0) return rv;
        if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
        rv = gmcp_key_update(&c->db, &k, now) != GMCP_FOUND
             || gmcp_audit(&c->db, actor(c->pool), "key.update", k.id, describe(c, &k));
        if ((rv = commit(c, t, rv)) != 0) return rv;
        if (c->json || c->verbose) {
            gmcp_key_get(&c->db, k.id, &k);
            print_json(c, gmcp_key_json(&k, now));
        }
        return 0;
    }
    return usage_err("unknown command 'keys %s' (see gmcpctl --help)", sub);
}

static apr_int64_t since_opt(ctl *c, apr_int64_t dflt, int *bad)
{
    const char *v = opt(c, OPT_SINCE);
    apr_int64_t t;
    *bad = 0;
    if (!v) return dflt;
    /* "24h" means 24 hours ago, like "-24h". */
    t = (*v >= '0' && *v <= '9' && !strchr(v, '-')) ? parse_when(apr_pstrcat(c->pool, "-", v,
                                                                               NULL))
                                                    : parse_when(v);
    if (t < 0) *bad = 1;
    return t;
}

int cmd_usage(ctl *c)
{
    gmcp_rows rs;
    int bad, rv, i;
    apr_int64_t since = since_opt(c, gmcp_now_sec() - 24 * 3600, &bad);
    json_t *arr;
    if (bad) return usage_err("--since '%s' must be a date (YYYY-MM-DD...) or 24h, 7d",
                              opt(c, OPT_SINCE));
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_usage_rows(&c->db, opt(c, OPT_KEY), since - since % 3600, &rs))
        return fail("cannot read usage: %s", gmcp_db_error(&c->db, -1));
    arr = json_array();
    if (!c->json)
        printf("%-24s %-29s %8s %6s %6s %10s %10s %10s %10s\n", "KEY", "HOUR", "REQUESTS",
               "ERRORS", "REJECT", "PROMPT", "OUTPUT", "BYTES_IN", "BYTES_OUT");
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **r = GMCP_ROW(&rs, i);
        if (c->json)
            json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, "
                                  "s:I, s:I}", "key_id", r[0], "hour",
                                  iso(c->pool, apr_atoi64(r[1])), "hour_epoch",
                                  (json_int_t)apr_atoi64(r[1]),
                                  "requests", (json_int_t)apr_atoi64(r[2]),
                                  "errors", (json_int_t)apr_atoi64(r[3]),
                                  "rejected", (json_int_t)apr_atoi64(r[4]),
                                  "prompt_tokens", (json_int_t)apr_atoi64(r[5]),
                                  "output_tokens", (json_int_t)apr_atoi64(r[6]),
                                  "bytes_in", (json_int_t)apr_atoi64(r[7]),
                                  "bytes_out", (json_int_t)apr_atoi64(r[8])));
        else
            printf("%-24s %-29s %8s %6s %6s %10s %10s %10s %10s\n", r[0],
                   iso(c->pool, apr_atoi64(r[1])), r[2], r[3], r[4], r[5], r[6], r[7], r[8]);
    }
    if (c->json) { json_dumpf(arr, stdout, JSON_COMPACT); fputc('\n', stdout); }
    json_decref(arr);
    return 0;
}

int cmd_audit(ctl *c)
{
    gmcp_rows rs;
    int bad, rv, i;
    apr_int64_t since = since_opt(c, 0, &bad);
    json_t *arr;
    if (bad) return usage_err("--since '%s' must be a date (YYYY-MM-DD...) or 24h, 7d",
                              opt(c, OPT_SINCE));
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_audit_list(&c->db, since, &rs))
        return fail("cannot read the audit log: %s", gmcp_db_error(&c->db, -1));
    arr = json_array();
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **r = GMCP_ROW(&rs, i);
        if (c->json)
            json_array_append_new(arr, json_pack("{s:I, s:s, s:I, s:s, s:s, s:s, s:s}",
                                  "id", (json_int_t)apr_atoi64(r[0]),
                                  "at", iso(c->pool, apr_atoi64(r[1])),
                                  "at_epoch", (json_int_t)apr_atoi64(r[1]), "actor", r[2],
                                  "action", r[3], "key_id", r[4], "detail", r[5]));
        else
            printf("%s  %-24s %-14s %-16s %s\n", iso(c->pool, apr_atoi64(r[1])), r[2], r[3],
                   *r[4] ? r[4] : "-", r[5]);
    }
    if (c->json) { json_dumpf(arr, stdout, JSON_COMPACT); fputc('\n', stdout); }
    json_decref(arr);
    return 0;
}
