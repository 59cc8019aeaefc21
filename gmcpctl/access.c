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
#define MAX_NAME 128
#define MAX_RATE 1000000                        /* requests per period */
#define MAX_TOKENS ((apr_int64_t)1000000000000) /* tokens per period or quota */

const char *actor(apr_pool_t *p)
{
    const char *who = getenv("SUDO_USER");
    struct passwd *pw;
    if (!who || !*who) who = (pw = getpwuid(getuid())) ? pw->pw_name : NULL;
    return apr_pstrcat(p, "gmcpctl:", who ? who : apr_itoa(p, (int)getuid()), NULL);
}

/* The longest duration or offset gmcpctl takes: 100 years. */
#define MAX_SPAN ((apr_int64_t)36525 * 86400)

/* A duration like "90s", "30m", "24h", "7d" or plain seconds, into *out; NULL, or why
 * not ("unknown unit ..."). */
static const char *parse_duration(apr_pool_t *p, const char *s, apr_int64_t *out)
{
    apr_uint64_t v, mul = 1;
    char num[24];
    apr_size_t n, i;
    if (!s || !*s) return "empty";
    if (*s == '-') return "negative";
    n = strlen(s);
    switch (s[n - 1]) {
    case 's': n--; break;
    case 'm':
        mul = 60;
        n--;
        break;
    case 'h':
        mul = 3600;
        n--;
        break;
    case 'd':
        mul = 86400;
        n--;
        break;
    default:
        if (s[n - 1] < '0' || s[n - 1] > '9')
            return apr_psprintf(p, "unknown unit '%c' (use s, m, h or d)", s[n - 1]);
    }
    if (n == 0) return "no number before the unit";
    for (i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return "not a whole number followed by s, m, h or d";
    if (n >= sizeof(num)) return "more than 100 years";
    memcpy(num, s, n);
    num[n] = '\0';
    if (gmcp_parse_u64(num, &v) || v > (apr_uint64_t)MAX_SPAN / mul) return "more than 100 years";
    *out = (apr_int64_t)(v * mul);
    return NULL;
}

/* `n` digits at *s (at least `min`), into *v; 0, or -1 when there are none. */
static int digits(const char **s, int min, int max, int *v)
{
    int n = 0;
    *v = 0;
    while (n < max && **s >= '0' && **s <= '9') {
        *v = *v * 10 + (**s - '0');
        (*s)++;
        n++;
    }
    return n >= min ? 0 : -1;
}

static int leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

#define WHEN_FORMS "YYYY-MM-DD[THH:MM[:SS]Z]"

/* "2026-12-31", "2026-12-31T12:00:00Z" (UTC), "+30d" / "-24h" relative to now,
 * "never" (0), into *out (seconds since the epoch); NULL, or why not. Impossible
 * dates (2026-02-30, month 13, hour 24) are refused, not normalised. */
static const char *parse_when(apr_pool_t *p, const char *s, apr_int64_t *out)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    apr_int64_t sec;
    const char *q = s;
    int y, mo, d, h = 0, mi = 0, se = 0, dim;
    if (!s || !*s) return "empty";
    if (!strcmp(s, "never")) {
        *out = 0;
        return NULL;
    }
    if (*s == '+' || *s == '-') {
        apr_int64_t dur;
        const char *why = parse_duration(p, s + 1, &dur);
        if (why) return apr_pstrcat(p, "offset: ", why, NULL);
        if (!dur) return "offset: zero";
        *out = gmcp_now_sec() + (*s == '+' ? dur : -dur);
        return NULL;
    }
    if (digits(&q, 4, 4, &y) || *q++ != '-' || digits(&q, 1, 2, &mo) || *q++ != '-'
        || digits(&q, 1, 2, &d))
        return "not a date (" WHEN_FORMS ")";
    if (*q == 'T' || *q == ' ') {
        q++;
        if (digits(&q, 1, 2, &h) || *q++ != ':' || digits(&q, 1, 2, &mi))
            return "no time of day HH:MM[:SS] after the date";
        if (*q == ':' && (q++, digits(&q, 1, 2, &se))) return "no seconds after HH:MM:";
        if (*q == 'Z') q++;
    }
    if (*q) return "not a date (" WHEN_FORMS ")";
    if (y < 1970 || y > 9999) return apr_psprintf(p, "year %04d out of range (1970-9999)", y);
    if (mo < 1 || mo > 12) return apr_psprintf(p, "there is no month %02d (01-12)", mo);
    dim = mdays[mo - 1] + (mo == 2 && leap(y));
    if (d < 1 || d > dim)
        return apr_psprintf(p, "%04d-%02d has no day %02d (it has %d days)", y, mo, d, dim);
    if (h > 23) return apr_psprintf(p, "there is no hour %02d (00-23)", h);
    if (mi > 59) return apr_psprintf(p, "there is no minute %02d (00-59)", mi);
    if (se > 59) return apr_psprintf(p, "there is no second %02d (00-59)", se);
    if (gmcp_utc_sec(y, mo, d, h, mi, se, &sec) != APR_SUCCESS) return "out of range";
    *out = sec;
    return NULL;
}

/* A usage error for option `name`'s value `v`, saying why and what it takes. */
static int bad_value(ctl *c, const char *name, const char *v, const char *why)
{
    return usage_err("%s", apr_psprintf(c->pool, "%s '%s': %s", name, v, why));
}

static int bad_chars(const char *s, const char *extra)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')
              || strchr(extra, *s)))
            return 1;
    return 0;
}

/* --name, --tenant, --user (or --subject: an OAuth token's, as the module looks it
 * up) and --scopes into k. */
static int apply_who_flags(ctl *c, gmcp_key *k)
{
    const char *v;
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
    if ((v = opt(c, OPT_SUBJECT))) {
        if (opt(c, OPT_USER)) return usage_err("--user and --subject exclude each other%s", "");
        if (!*v || strlen(v) > 255 || bad_chars(v, "._-@:|/+="))
            return usage_err("--subject '%s' must be up to 255 of [A-Za-z0-9._-@:|/+=]", v);
        k->apache_user = apr_pstrcat(c->pool, "oauth:", v, NULL);
    }
    if ((v = opt(c, OPT_SCOPES))) {
        if (!*v || strlen(v) > MAX_SCOPES || bad_chars(v, "_.-*?[], "))
            return usage_err("--scopes '%s' must list tool names or patterns (gemini_*), "
                             "comma-separated",
                             v);
        k->scopes = v;
    }
    return 0;
}

/* --rate, --burst and --token-rate into k. */
static int apply_rate_flags(ctl *c, gmcp_key *k)
{
    const char *v, *unit;
    apr_uint64_t n;
    if ((v = opt(c, OPT_RATE))) {
        if (!strcmp(v, "none"))
            k->rate_count = 0;
        else if (gmcp_rate_parse(v, "smh", &k->rate_count, &k->rate_period, &unit))
            return usage_err("--rate '%s' must look like 10/s, 600/m or 1000/h (or none)", v);
        else if (k->rate_count > MAX_RATE)
            return bad_value(c, "--rate", v, "more than 1000000 requests per period");
    }
    if ((v = opt(c, OPT_BURST))) {
        if (gmcp_parse_u64(v, &n) || n > 1000000)
            return usage_err("--burst '%s' must be a whole number (0: as many as the rate)", v);
        k->burst = (apr_int64_t)n;
    }
    if ((v = opt(c, OPT_TOKEN_RATE))) {
        if (!strcmp(v, "none"))
            k->token_rate_count = 0;
        else if (gmcp_rate_parse(v, "smh", &k->token_rate_count, &k->token_rate_period, &unit))
            return usage_err("--token-rate '%s' must look like 10000/m (or none)", v);
        else if (k->token_rate_count > MAX_TOKENS)
            return bad_value(c, "--token-rate", v, "more than 10^12 tokens per period");
    }
    return 0;
}

/* --token-quota, --max-inflight and --expires into k. */
static int apply_cap_flags(ctl *c, gmcp_key *k)
{
    const char *v, *unit;
    apr_uint64_t n;
    if ((v = opt(c, OPT_TOKEN_QUOTA))) {
        apr_int64_t per;
        if (!strcmp(v, "none"))
            k->token_quota = 0;
        else if (gmcp_rate_parse(v, "dM", &k->token_quota, &per, &unit))
            return usage_err("--token-quota '%s' must look like 1000000/day or 20000000/month "
                             "(or none)",
                             v);
        else if (k->token_quota > MAX_TOKENS)
            return bad_value(c, "--token-quota", v, "more than 10^12 tokens");
        else
            k->quota_period = unit;
    }
    if ((v = opt(c, OPT_MAX_INFLIGHT))) {
        if (gmcp_parse_u64(v, &n) || n > 100000)
            return usage_err("--max-inflight '%s' must be a whole number (0: no cap)", v);
        k->max_inflight = (apr_int64_t)n;
    }
    if ((v = opt(c, OPT_EXPIRES))) {
        apr_int64_t t = 0;
        const char *why = parse_when(c->pool, v, &t);
        if (!why && t && t <= gmcp_now_sec()) why = "in the past";
        if (!why && t > gmcp_now_sec() + MAX_SPAN) why = "more than 100 years away";
        if (why) return bad_value(c, "--expires", v, why);
        k->expires = t;
    }
    return 0;
}

/* Apply the limit/scope flags given on the command line to k, in the usage's order. */
static int apply_flags(ctl *c, gmcp_key *k)
{
    int rv;
    if ((rv = apply_who_flags(c, k)) == 0 && (rv = apply_rate_flags(c, k)) == 0)
        rv = apply_cap_flags(c, k);
    return rv;
}

static const char *pepper_value(ctl *c)
{
    const char *v;
    if (!c->pepper) {
        fail("%s",
             "no key pepper: set GeminiMCPKeyPepper in the httpd configuration "
             "(read with --config) or give --pepper file:PATH|env:NAME");
        return NULL;
    }
    if ((strncmp(c->pepper, "file:", 5) && strncmp(c->pepper, "env:", 4))
        || !(v = gmcp_read_secret(c->pool, c->pepper)) || strlen(v) < 16) {
        fail("the key pepper %s is missing, unreadable or shorter than 16 characters", c->pepper);
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
    return apr_psprintf(p, "%" APR_INT64_T_FMT "/%s", count,
                        period == 1          ? "s"
                            : period == 60   ? "m"
                            : period == 3600 ? "h"
                                             : apr_psprintf(p, "%" APR_INT64_T_FMT "s", period));
}

static int need_key(ctl *c, const char *id, gmcp_key *k)
{
    apr_status_t st;
    int rv;
    if (!id) return usage_err("a key id is required%s", "");
    if ((rv = open_db(c, 0)) != 0) return rv;
    /* Accept the whole secret too, but only ever use its id part. */
    if (!strncmp(id, GMCP_KEY_PREFIX, strlen(GMCP_KEY_PREFIX))
        && gmcp_key_parse(c->pool, id, &id, NULL) != APR_SUCCESS)
        return usage_err("'%s' is not a key id", "that");
    st = gmcp_key_get(&c->db, id, k);
    if (st == APR_ENOENT) return fail("no API key '%s'", id);
    if (st != APR_SUCCESS) return fail("cannot read the key store: %s", gmcp_db_error(&c->db, -1));
    return 0;
}

static const char *describe(ctl *c, const gmcp_key *k)
{
    return apr_psprintf(c->pool,
                        "name=%s tenant=%s scopes=%s rate=%s burst=%" APR_INT64_T_FMT
                        " token_rate=%s token_quota=%" APR_INT64_T_FMT
                        "/%s max_inflight=%" APR_INT64_T_FMT " expires=%s user=%s",
                        k->name, k->tenant, k->scopes,
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

int cmd_keys_create(ctl *c)
{
    gmcp_key k;
    apr_int64_t now = gmcp_now_sec();
    apr_dbd_transaction_t *t = NULL;
    const char *pepper, *secret, *kid;
    int rv, failed;

    memset(&k, 0, sizeof(k));
    k.tenant = "";
    k.apache_user = "";
    k.scopes = "*";
    k.quota_period = "day";
    k.rate_period = 1;
    k.token_rate_period = 60;
    if ((rv = apply_flags(c, &k)) != 0) return rv;
    if (!k.name) return usage_err("keys create needs --name%s", "");
    if ((rv = open_db(c, 0)) != 0) return rv; /* also reads --config's pepper */
    if (!(pepper = pepper_value(c))) return EXIT_FAIL;
    if (gmcp_key_generate(c->pool, &kid, &secret)) return fail("%s", "no randomness");
    k.id = kid;
    k.secret_hash = gmcp_key_hash(c->pool, pepper, secret);
    k.prev_hash = "";
    k.created = k.updated = now;
    if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
    failed = gmcp_key_insert(&c->db, &k) != APR_SUCCESS
        || gmcp_audit(&c->db, actor(c->pool), "key.create", k.id, describe(c, &k)) != APR_SUCCESS;
    if ((rv = commit(c, t, failed)) != 0) return rv;
    if (c->json) {
        json_t *o = gmcp_key_json(&k, now);
        json_object_set_new(o, "secret", json_string(secret));
        print_json(c, o);
    }
    else {
        printf("%s\n", secret);
        fprintf(stderr,
                "gmcpctl: created key %s (%s); the secret above is shown only "
                "once\n",
                k.id, k.name);
    }
    return 0;
}

int cmd_keys_list(ctl *c)
{
    apr_array_header_t *list;
    apr_int64_t now = gmcp_now_sec();
    json_t *arr;
    int rv, i;
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_key_list(&c->db, &list))
        return fail("cannot read the key store: %s", gmcp_db_error(&c->db, -1));
    arr = json_array();
    for (i = 0; i < list->nelts; i++) {
        gmcp_key *x = &APR_ARRAY_IDX(list, i, gmcp_key);
        if (c->json) { json_array_append_new(arr, gmcp_key_json(x, now)); }
        else {
            const char *state = x->revoked          ? "revoked"
                : (x->expires && now >= x->expires) ? "expired"
                                                    : "active";
            printf("%-16s %-8s %-20s %-16s %-10s %s\n", x->id, state, x->name,
                   *x->tenant ? x->tenant : "-", limit_text(c->pool, x->rate_count, x->rate_period),
                   x->scopes);
        }
    }
    if (c->json) {
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    json_decref(arr);
    return 0;
}

int cmd_keys_show(ctl *c, const char *id)
{
    gmcp_key k;
    apr_int64_t now = gmcp_now_sec();
    int rv;
    if ((rv = need_key(c, id, &k)) != 0) return rv;
    print_json(c, gmcp_key_json(&k, now));
    return 0;
}

int cmd_keys_revoke(ctl *c, const char *id)
{
    gmcp_key k;
    apr_int64_t now = gmcp_now_sec();
    apr_dbd_transaction_t *t = NULL;
    int rv, failed;
    if ((rv = need_key(c, id, &k)) != 0) return rv;
    if (k.revoked) return fail("key %s is already revoked", k.id);
    if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
    failed = gmcp_key_revoke(&c->db, k.id, now) != APR_SUCCESS
        || gmcp_audit(&c->db, actor(c->pool), "key.revoke", k.id, k.name) != APR_SUCCESS;
    if ((rv = commit(c, t, failed)) != 0) return rv;
    if (c->verbose) printf("revoked %s\n", k.id);
    return 0;
}

int cmd_keys_rotate(ctl *c, const char *id)
{
    gmcp_key k;
    apr_int64_t now = gmcp_now_sec(), grace = 24 * 3600;
    apr_dbd_transaction_t *t = NULL;
    const char *pepper, *grace_s = opt(c, OPT_GRACE), *secret, *kid, *sp;
    const char *why = grace_s ? parse_duration(c->pool, grace_s, &grace) : NULL;
    int rv, failed;

    if (why) return bad_value(c, "--grace", grace_s, why);
    if ((rv = need_key(c, id, &k)) != 0) return rv;
    if (!(pepper = pepper_value(c))) return EXIT_FAIL;
    if (k.revoked) return fail("key %s is revoked: create a new one", k.id);
    /* Same id (so usage, limits and ownership carry over), new secret. */
    if (gmcp_key_generate(c->pool, &kid, &secret)) return fail("%s", "no randomness");
    gmcp_key_parse(c->pool, secret, &kid, &sp);
    secret = apr_pstrcat(c->pool, GMCP_KEY_PREFIX, k.id, "_", sp, NULL);
    if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
    failed = gmcp_key_rotate(&c->db, k.id, gmcp_key_hash(c->pool, pepper, secret),
                             grace ? now + grace : 0, now)
            != APR_SUCCESS
        || gmcp_audit(
               &c->db, actor(c->pool), "key.rotate", k.id,
               apr_psprintf(c->pool, "previous secret valid for %" APR_INT64_T_FMT "s", grace))
            != APR_SUCCESS;
    if ((rv = commit(c, t, failed)) != 0) return rv;
    if (c->json) {
        print_json(c,
                   json_pack("{s:s, s:s, s:I}", "id", k.id, "secret", secret, "grace_seconds",
                             (json_int_t)grace));
    }
    else {
        printf("%s\n", secret);
        fprintf(stderr,
                "gmcpctl: rotated key %s; the old secret works for %" APR_INT64_T_FMT
                " more seconds\n",
                k.id, grace);
    }
    return 0;
}

int cmd_keys_update(ctl *c, const char *id)
{
    gmcp_key k;
    apr_int64_t now = gmcp_now_sec();
    apr_dbd_transaction_t *t = NULL;
    int rv, failed;
    if ((rv = need_key(c, id, &k)) != 0) return rv;
    if (k.revoked) return fail("key %s is revoked", k.id);
    if ((rv = apply_flags(c, &k)) != 0) return rv;
    if (gmcp_db_begin(&c->db, &t)) return fail("%s", gmcp_db_error(&c->db, -1));
    failed = gmcp_key_update(&c->db, &k, now) != APR_SUCCESS
        || gmcp_audit(&c->db, actor(c->pool), "key.update", k.id, describe(c, &k)) != APR_SUCCESS;
    if ((rv = commit(c, t, failed)) != 0) return rv;
    if (c->json || c->verbose) {
        gmcp_key_get(&c->db, k.id, &k);
        print_json(c, gmcp_key_json(&k, now));
    }
    return 0;
}

/* --since: a date, "-24h"/"-7d", or "24h"/"7d" (ago); *since, or EXIT_USAGE. */
static int since_opt(ctl *c, apr_int64_t dflt, apr_int64_t *since)
{
    const char *v = opt(c, OPT_SINCE), *why;
    *since = dflt;
    if (!v) return 0;
    if (*v == '+')
        why = "in the future (24h or -24h: 24 hours ago)";
    else if (!strcmp(v, "never"))
        why = "not a date (" WHEN_FORMS ", 24h or 7d)";
    else {
        /* "24h" (digits, then at most a unit letter) means 24 hours ago, like "-24h". */
        apr_size_t n = strspn(v, "0123456789");
        int ago = n > 0 && (!v[n] || (((v[n] | 0x20) >= 'a' && (v[n] | 0x20) <= 'z') && !v[n + 1]));
        why = parse_when(c->pool, ago ? apr_pstrcat(c->pool, "-", v, NULL) : v, since);
    }
    if (why) return bad_value(c, "--since", v, why);
    return 0;
}

int cmd_usage(ctl *c)
{
    gmcp_rows rs;
    int rv, i;
    apr_int64_t since;
    json_t *arr;
    if ((rv = since_opt(c, gmcp_now_sec() - 24 * 3600, &since)) != 0) return rv;
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_usage_rows(&c->db, opt(c, OPT_KEY), since - since % 3600, &rs))
        return fail("cannot read usage: %s", gmcp_db_error(&c->db, -1));
    arr = json_array();
    if (!c->json)
        printf("%-24s %-29s %8s %6s %6s %10s %10s %10s %10s %s\n", "KEY", "HOUR", "REQUESTS",
               "ERRORS", "REJECT", "PROMPT", "OUTPUT", "BYTES_IN", "BYTES_OUT", "PERIOD");
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **r = GMCP_ROW(&rs, i);
        if (c->json)
            /* period "hour", or "day": a daily roll-up (gmcpctl cleanup) of hours past
             * GeminiMCPUsageRetention; "hour" is then the start of the UTC day. */
            json_array_append_new(
                arr,
                json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, "
                          "s:I, s:I, s:I}",
                          "key_id", r[0], "period", r[9], "hour", iso(c->pool, apr_atoi64(r[1])),
                          "hour_epoch", (json_int_t)apr_atoi64(r[1]), "requests",
                          (json_int_t)apr_atoi64(r[2]), "errors", (json_int_t)apr_atoi64(r[3]),
                          "rejected", (json_int_t)apr_atoi64(r[4]), "prompt_tokens",
                          (json_int_t)apr_atoi64(r[5]), "output_tokens",
                          (json_int_t)apr_atoi64(r[6]), "bytes_in", (json_int_t)apr_atoi64(r[7]),
                          "bytes_out", (json_int_t)apr_atoi64(r[8])));
        else
            printf("%-24s %-29s %8s %6s %6s %10s %10s %10s %10s %s\n", r[0],
                   iso(c->pool, apr_atoi64(r[1])), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]);
    }
    if (c->json) {
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    json_decref(arr);
    return 0;
}

int cmd_audit(ctl *c)
{
    gmcp_rows rs;
    int rv, i;
    apr_int64_t since;
    json_t *arr;
    if ((rv = since_opt(c, 0, &since)) != 0) return rv;
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_audit_list(&c->db, since, &rs))
        return fail("cannot read the audit log: %s", gmcp_db_error(&c->db, -1));
    arr = json_array();
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **r = GMCP_ROW(&rs, i);
        if (c->json)
            json_array_append_new(arr,
                                  json_pack("{s:I, s:s, s:I, s:s, s:s, s:s, s:s}", "id",
                                            (json_int_t)apr_atoi64(r[0]), "at",
                                            iso(c->pool, apr_atoi64(r[1])), "at_epoch",
                                            (json_int_t)apr_atoi64(r[1]), "actor", r[2], "action",
                                            r[3], "key_id", r[4], "detail", r[5]));
        else
            printf("%s  %-24s %-14s %-16s %s\n", iso(c->pool, apr_atoi64(r[1])), r[2], r[3],
                   *r[4] ? r[4] : "-", r[5]);
    }
    if (c->json) {
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    json_decref(arr);
    return 0;
}
