/* API keys, GCRA limits, usage buckets and metrics rendering, without httpd; the key
 * and usage SQL runs on real SQLite. */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_keys.h"
#include "gmcp_limits.h"
#include "gmcp_metrics.h"
#include "gmcp_migrate.h"
#include "gmcp_store.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <apr_strings.h>

static gmcp_db db;
static apr_dbd_t *handle;
static char dir[] = "/tmp/gmcp-access-XXXXXX";

static void nolock(void *b) { (void)b; }

static void t_key_format(apr_pool_t *p)
{
    const char *id, *secret, *id2, *part, *h1, *h2;
    gmcp_key k;
    CHECK(gmcp_key_generate(p, &id, &secret) == 0);
    CHECK(strlen(id) == 16 && strlen(secret) == 5 + 16 + 1 + 43);
    CHECK(gmcp_key_parse(p, secret, &id2, &part) == 0);
    CHECK_STR(id2, id);
    CHECK(gmcp_key_parse(p, "gmcp_0123456789abcdef_short", &id2, &part) != 0);
    CHECK(gmcp_key_parse(p, apr_pstrcat(p, "gmcp_0123456789ABCDEF_", part, NULL), &id2, NULL)
          != 0); /* upper-case hex id */
    CHECK(gmcp_key_parse(p, apr_pstrcat(p, secret, "x", NULL), &id2, NULL) != 0);
    CHECK(gmcp_key_parse(p, "Bearer", &id2, NULL) != 0);
    h1 = gmcp_key_hash(p, "pepper-one-0123456789", secret);
    h2 = gmcp_key_hash(p, "pepper-two-0123456789", secret);
    CHECK(h1 && h2 && strlen(h1) == 64 && strcmp(h1, h2) != 0); /* keyed */
    memset(&k, 0, sizeof(k));
    k.secret_hash = h1;
    k.prev_hash = "";
    CHECK(gmcp_key_verify(&k, h1, 100) == GMCP_KEY_OK);
    CHECK(gmcp_key_verify(&k, h2, 100) == GMCP_KEY_BAD);
    k.prev_hash = h2;
    k.prev_until = 150;
    CHECK(gmcp_key_verify(&k, h2, 149) == GMCP_KEY_OK); /* rotation grace */
    CHECK(gmcp_key_verify(&k, h2, 150) == GMCP_KEY_BAD);
    k.expires = 120;
    CHECK(gmcp_key_verify(&k, h1, 119) == GMCP_KEY_OK);
    CHECK(gmcp_key_verify(&k, h1, 120) == GMCP_KEY_EXPIRED);
    k.revoked = 110;
    CHECK(gmcp_key_verify(&k, h1, 111) == GMCP_KEY_REVOKED);
    CHECK(gmcp_key_verify(&k, "00", 111) == GMCP_KEY_BAD); /* never says "revoked" */
}

static void t_scopes_and_rates(apr_pool_t *p)
{
    apr_int64_t n = 0, per = 0;
    const char *unit = NULL;
    CHECK(gmcp_scope_allows(p, "*", "gemini_generate"));
    CHECK(gmcp_scope_allows(p, "gemini_chat_*, gemini_usage", "gemini_chat_send"));
    CHECK(gmcp_scope_allows(p, "gemini_chat_*,gemini_usage", "gemini_usage"));
    CHECK(!gmcp_scope_allows(p, "gemini_chat_*,gemini_usage", "gemini_generate"));
    CHECK(!gmcp_scope_allows(p, "", "gemini_generate"));
    CHECK(gmcp_rate_parse("10/s", "smh", &n, &per, &unit) == 0 && n == 10 && per == 1);
    CHECK(gmcp_rate_parse("600/m", "smh", &n, &per, &unit) == 0 && n == 600 && per == 60);
    CHECK(gmcp_rate_parse("5000/day", "dM", &n, &per, &unit) == 0 && !strcmp(unit, "day"));
    CHECK(gmcp_rate_parse("9/month", "dM", &n, &per, &unit) == 0 && !strcmp(unit, "month"));
    CHECK(gmcp_rate_parse("10/day", "smh", &n, &per, &unit) != 0);
    CHECK(gmcp_rate_parse("0/s", "smh", &n, &per, &unit) != 0);
    CHECK(gmcp_rate_parse("-1/s", "smh", &n, &per, &unit) != 0);
    CHECK(gmcp_rate_parse("10", "smh", &n, &per, &unit) != 0);
    /* 2026-11-22 01:02:03 UTC */
    CHECK(gmcp_quota_period_start("day", 1795309323) == 1795305600);
    CHECK(gmcp_quota_period_end("day", 1795309323) == 1795305600 + 86400);
    CHECK(gmcp_quota_period_start("month", 1795309323) == 1793491200); /* Nov 1 */
    CHECK(gmcp_quota_period_end("month", 1795309323) == 1796083200);   /* Dec 1 */
    CHECK(gmcp_quota_period_end("month", 1796083200 + 31 * 86400 - 1) == 1798761600);
}

static void t_gcra(apr_pool_t *p)
{
    apr_time_t tat = 0, now = apr_time_from_sec(1000);
    apr_interval_time_t T = apr_time_from_msec(100), wait; /* 10/s */
    apr_int64_t rem, ok = 0;
    int i;
    (void)p;
    for (i = 0; i < 10; i++) ok += gmcp_gcra(&tat, now, T, 5 * T, T, &wait, &rem);
    CHECK(ok == 5); /* the burst, at once */
    CHECK(!gmcp_gcra(&tat, now, T, 5 * T, T, &wait, &rem) && wait == T && rem == 0);
    CHECK(gmcp_gcra(&tat, now + T, T, 5 * T, T, &wait, &rem) && rem == 0);
    /* Over a long run: exactly one per interval after the burst. */
    for (ok = 0, i = 0; i < 1000; i++)
        ok += gmcp_gcra(&tat, now + T + i * apr_time_from_msec(10), T, 5 * T, T, &wait, &rem);
    /* after the burst, the next slots are now+2T, now+3T, ... up to 10 s later */
    CHECK(ok == 99);
}

/* Bandwidth: the burst passes, then one pause per chunk keeps the average at the rate,
 * and the table's copy is shared by key. */
static void t_throttle(apr_pool_t *p)
{
    apr_int64_t rate = 1048576, sent = 0;
    apr_time_t tat = 0, now = apr_time_from_sec(1000), t = now;
    void *mem = apr_palloc(p, gmcp_limits_size(8));
    gmcp_limits l;
    int i;
    CHECK(GMCP_THROTTLE_BURST(rate) == 104857 && GMCP_THROTTLE_BURST(1000) == 65536);
    CHECK(gmcp_throttle(&tat, now, rate, 65536) == 0); /* inside the burst */
    tat = 0;
    CHECK(gmcp_throttle(&tat, now, rate, 204800) == 195312 - 99999);
    /* 10 MiB in 64 KiB reads, sleeping as told: 10 s minus the burst. */
    tat = 0;
    for (i = 0; i < 160; i++) {
        t += gmcp_throttle(&tat, t, rate, 65536);
        sent += 65536;
    }
    CHECK(sent == 10 * rate && t - now >= apr_time_from_msec(9800)
          && t - now <= apr_time_from_msec(9950));
    gmcp_limits_init(mem, 8);
    l.t = mem;
    l.lock = nolock;
    l.unlock = nolock;
    l.baton = NULL;
    CHECK(gmcp_limits_throttle(&l, "bw:key:a", rate, 204800, now) == 195312 - 99999);
    CHECK(gmcp_limits_throttle(&l, "bw:key:a", rate, 1024, now) > 195312 - 99999); /* shared */
    CHECK(gmcp_limits_throttle(&l, "bw:key:b", rate, 1024, now) == 0);             /* own */
    CHECK(gmcp_limits_throttle(&l, "bw:key:b", 0, 1 << 30, now) == 0);             /* off */
}

static void t_limits_table(apr_pool_t *p)
{
    apr_size_t sz = gmcp_limits_size(64);
    void *mem = apr_palloc(p, sz);
    gmcp_limits l;
    gmcp_key k;
    gmcp_key_limits kl;
    gmcp_admit_info info;
    gmcp_usage u, pend;
    apr_array_header_t *taken;
    apr_time_t now = apr_time_from_sec(7200 * 1000 + 10);
    int i, ok = 0;
    gmcp_limits_init(mem, 64);
    l.t = mem;
    l.lock = nolock;
    l.unlock = nolock;
    l.baton = NULL;
    memset(&k, 0, sizeof(k));
    k.rate_count = 2;
    k.rate_period = 1;
    k.burst = 3;
    k.max_inflight = 2;
    k.token_rate_count = 100;
    k.token_rate_period = 60;
    gmcp_key_limits_of(&k, &kl);
    CHECK(kl.req_interval == apr_time_from_msec(500) && kl.req_limit == 3 * kl.req_interval);
    for (i = 0; i < 5; i++)
        ok += gmcp_limits_admit(&l, "a", &kl, now, 1, 0, 0, &info) == GMCP_ADMIT_OK;
    CHECK(ok == 3);
    CHECK(gmcp_limits_admit(&l, "a", &kl, now, 1, 0, 0, &info) == GMCP_ADMIT_RATE
          && info.retry_after == apr_time_from_msec(500));
    /* in-flight */
    CHECK(gmcp_limits_admit(&l, "b", &kl, now, 0, 0, 1, &info) == GMCP_ADMIT_OK);
    CHECK(gmcp_limits_admit(&l, "b", &kl, now, 0, 0, 1, &info) == GMCP_ADMIT_OK);
    CHECK(gmcp_limits_admit(&l, "b", &kl, now, 0, 0, 1, &info) == GMCP_ADMIT_INFLIGHT);
    gmcp_limits_leave(&l, "b");
    CHECK(gmcp_limits_admit(&l, "b", &kl, now, 0, 0, 1, &info) == GMCP_ADMIT_OK);
    memset(&u, 0, sizeof(u));
    gmcp_limits_finish(&l, "b", now, &u, 1); /* leaves too */
    CHECK(gmcp_limits_admit(&l, "b", &kl, now, 0, 0, 1, &info) == GMCP_ADMIT_OK);
    CHECK(gmcp_limits_admit(&l, "b", &kl, now, 0, 0, 1, &info) == GMCP_ADMIT_INFLIGHT);
    /* tokens: spent after the call, checked before the next */
    CHECK(gmcp_limits_admit(&l, "c", &kl, now, 0, 1, 0, &info) == GMCP_ADMIT_OK);
    gmcp_limits_charge_tokens(&l, "c", &kl, 100, now);
    CHECK(gmcp_limits_admit(&l, "c", &kl, now, 0, 1, 0, &info) == GMCP_ADMIT_TOKENS
          && info.retry_after == kl.tok_interval);
    CHECK(gmcp_limits_admit(&l, "c", &kl, now, 0, 0, 0, &info) == GMCP_ADMIT_OK);
    /* usage buckets by hour, taken and given back */
    memset(&u, 0, sizeof(u));
    u.requests = 1;
    u.prompt_tokens = 3;
    gmcp_limits_account(&l, "a", now, &u);
    gmcp_limits_account(&l, "a", now, &u);
    gmcp_limits_account(&l, "a", now + apr_time_from_sec(3600), &u);
    memset(&pend, 0, sizeof(pend));
    gmcp_limits_pending(&l, "a", apr_time_sec(now), &pend);
    CHECK(pend.requests == 3 && pend.prompt_tokens == 9);
    taken = gmcp_limits_take(&l, p);
    CHECK(taken->nelts == 2);
    memset(&pend, 0, sizeof(pend));
    gmcp_limits_pending(&l, "a", 0, &pend);
    CHECK(pend.requests == 0);
    gmcp_limits_give_back(&l, taken);
    memset(&pend, 0, sizeof(pend));
    gmcp_limits_pending(&l, "a", 0, &pend);
    CHECK(pend.requests == 3);
    /* a third hour while two are unflushed: counted, never dropped */
    gmcp_limits_account(&l, "a", now + apr_time_from_sec(7200), &u);
    memset(&pend, 0, sizeof(pend));
    gmcp_limits_pending(&l, "a", 0, &pend);
    CHECK(pend.requests == 4);
    /* A full neighbourhood with dirty slots refuses new keys rather than losing counts. */
    for (i = 0, ok = 0; i < 200; i++) {
        gmcp_limits_account(&l, apr_psprintf(p, "k%d", i), now, &u);
        ok += gmcp_limits_admit(&l, apr_psprintf(p, "k%d", i), &kl, now, 0, 0, 0, &info)
            == GMCP_ADMIT_FULL;
    }
    CHECK(ok > 0 && l.t->full > 0);
    taken = gmcp_limits_take(&l, p);
    CHECK(gmcp_limits_admit(&l, "fresh", &kl, now, 0, 0, 0, &info) == GMCP_ADMIT_OK);
}

static void t_metrics(apr_pool_t *p)
{
    gmcp_metrics *m = apr_pcalloc(p, sizeof(*m));
    gmcp_metrics_gauges g;
    const char *text;
    int i;
    gmcp_metrics_init(m, apr_time_from_sec(1));
    CHECK_STR(gmcp_metrics_method("tools/call"), "tools/call");
    CHECK_STR(gmcp_metrics_method("evil\"}\n"), "other");
    for (i = 0; i < 3; i++)
        gmcp_metrics_request(m, NULL, "tools/call", "gemini_generate", 200, apr_time_from_msec(20),
                             100, 200);
    gmcp_metrics_request(m, NULL, "x", NULL, 400, apr_time_from_msec(2), 10, 20);
    gmcp_metrics_gemini(m, NULL, 429, apr_time_from_sec(2), 2, 0, 0);
    memset(&g, 0, sizeof(g));
    g.mcp_sessions = 4;
    g.chat_sessions = -1;
    text = gmcp_metrics_render(p, m, &g, apr_time_from_sec(11));
    CHECK(strstr(text,
                 "gmcp_requests_total{method=\"tools/call\",tool=\"gemini_generate\","
                 "status=\"200\"} 3\n")
          != NULL);
    CHECK(strstr(text, "gmcp_requests_total{method=\"other\",tool=\"\",status=\"400\"} 1\n")
          != NULL);
    CHECK(strstr(text,
                 "gmcp_request_duration_seconds_bucket{method=\"tools/call\",tool="
                 "\"gemini_generate\",status=\"200\",le=\"0.01\"} 0\n")
          != NULL);
    CHECK(strstr(text, "le=\"0.025\"} 3\n") != NULL);
    CHECK(strstr(text, "gmcp_gemini_retries_total 2\n") != NULL);
    CHECK(strstr(text, "gmcp_gemini_errors_total 1\n") != NULL);
    CHECK(strstr(text, "gmcp_bytes_total{direction=\"in\"} 310\n") != NULL);
    CHECK(strstr(text, "gmcp_active_sessions 4\n") != NULL);
    CHECK(strstr(text, "gmcp_active_chat_sessions") == NULL); /* unknown: left out */
    CHECK(strstr(text, "gmcp_uptime_seconds 10\n") != NULL);
    CHECK(strstr(text, "node=") == NULL && strstr(text, "gmcp_node_info") == NULL);
    /* GeminiMCPNodeName: every sample, with labels or without, names the node first. */
    g.node = "n-1";
    g.version = "9.9";
    text = gmcp_metrics_render(p, m, &g, apr_time_from_sec(11));
    CHECK(strstr(text, "\ngmcp_node_info{node=\"n-1\",version=\"9.9\"} 1\n") != NULL);
    CHECK(strstr(text,
                 "\ngmcp_requests_total{node=\"n-1\",method=\"tools/call\",tool=\"gemini_"
                 "generate\",status=\"200\"} 3\n")
          != NULL);
    CHECK(strstr(text, "\ngmcp_uptime_seconds{node=\"n-1\"} 10\n") != NULL);
    CHECK(strstr(text, "# TYPE gmcp_uptime_seconds gauge\n") != NULL);
    {
        /* No sample line is left without it. */
        char *copy = apr_pstrdup(p, text), *last = NULL, *l;
        int unlabelled = 0, samples = 0;
        for (l = apr_strtok(copy, "\n", &last); l; l = apr_strtok(NULL, "\n", &last))
            if (*l != '#' && ++samples && !strstr(l, "{node=\"n-1\"")) unlabelled++;
        CHECK(samples > 20 && unlabelled == 0);
    }
    g.node = NULL;
    for (i = 0; i < GMCP_REQ_SERIES + 5; i++)
        gmcp_metrics_request(m, NULL, "tools/call", apr_psprintf(p, "t%d", i), 200, 1, 0, 0);
    CHECK(m->nreq == GMCP_REQ_SERIES && m->series_overflow > 0);
}

static void t_sql(apr_pool_t *p)
{
    const char *err = NULL, *id, *secret;
    apr_array_header_t *migs, *list;
    int applied = 0, allowed = 0, i, ok = 0;
    gmcp_key k, got;
    gmcp_usage u, sum;
    gmcp_rows rs;
    apr_int64_t tat = 0, now = 1000000000;
    CHECK(unit_open_sqlite(p, dir, "a.db", &db, &handle) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0);
    CHECK(gmcp_key_generate(p, &id, &secret) == 0);
    memset(&k, 0, sizeof(k));
    k.id = id;
    k.name = "n";
    k.tenant = "t";
    k.apache_user = "";
    k.scopes = "*";
    k.quota_period = "day";
    k.rate_count = 5;
    k.rate_period = 1;
    k.token_rate_period = 60;
    k.secret_hash = gmcp_key_hash(p, "0123456789abcdef", secret);
    k.created = k.updated = 100;
    CHECK(gmcp_key_insert(&db, &k) == 0);
    CHECK(gmcp_key_insert(&db, &k) == GMCP_EDB); /* ids are unique */
    CHECK(gmcp_key_get(&db, id, &got) == APR_SUCCESS && !strcmp(got.tenant, "t")
          && got.rate_count == 5 && !strcmp(got.secret_hash, k.secret_hash));
    CHECK(gmcp_key_get(&db, "0000000000000000", &got) == APR_ENOENT);
    CHECK(gmcp_key_rotate(&db, id, "newhash", 500, 200) == APR_SUCCESS);
    CHECK(gmcp_key_get(&db, id, &got) == APR_SUCCESS && !strcmp(got.prev_hash, k.secret_hash)
          && !strcmp(got.secret_hash, "newhash") && got.prev_until == 500);
    got.scopes = "gemini_*";
    got.apache_user = "alice";
    CHECK(gmcp_key_update(&db, &got, 300) == APR_SUCCESS);
    CHECK(gmcp_key_get_by_user(&db, "alice", &got) == APR_SUCCESS && !strcmp(got.id, id));
    CHECK(gmcp_key_get_by_user(&db, "", &got) == APR_ENOENT);
    CHECK(gmcp_key_revoke(&db, id, 400) == APR_SUCCESS);
    CHECK(gmcp_key_revoke(&db, id, 401) == APR_ENOENT);   /* once */
    CHECK(gmcp_key_update(&db, &got, 402) == APR_ENOENT); /* revoked stays revoked */
    CHECK(gmcp_key_list(&db, &list) == 0 && list->nelts == 1);
    /* usage: flushes add up */
    memset(&u, 0, sizeof(u));
    u.requests = 2;
    u.output_tokens = 7;
    u.bytes_out = 100;
    CHECK(gmcp_usage_add(&db, id, 3600, &u) == 0);
    CHECK(gmcp_usage_add(&db, id, 3600, &u) == 0);
    CHECK(gmcp_usage_add(&db, id, 7200, &u) == 0);
    CHECK(gmcp_usage_sum(&db, id, 0, &sum) == 0 && sum.requests == 6 && sum.output_tokens == 21);
    CHECK(gmcp_usage_sum(&db, id, 7200, &sum) == 0 && sum.requests == 2);
    CHECK(gmcp_usage_rows(&db, NULL, 0, &rs) == 0 && rs.rows->nelts == 2);
    /* audit: append-only */
    CHECK(gmcp_audit(&db, "tester", "key.create", id, "x") == 0);
    CHECK(gmcp_audit_list(&db, 0, &rs) == 0 && rs.rows->nelts == 1);
    CHECK(gmcp_db_exec_raw(&db, "DELETE FROM audit_log", NULL) != 0);
    CHECK(gmcp_db_exec_raw(&db, "UPDATE audit_log SET actor = 'x'", NULL) != 0);
    CHECK(gmcp_audit_list(&db, 0, &rs) == 0 && rs.rows->nelts == 1);
    /* the shared GCRA statement: 10/s, burst 3 */
    for (i = 0; i < 5; i++) {
        CHECK(gmcp_ratelimit_dbd(&db, id, now, 100000, 300000, &allowed, &tat) == 0);
        ok += allowed;
    }
    CHECK(ok == 3 && tat == now + 300000);
    CHECK(gmcp_ratelimit_dbd(&db, id, now + 100000, 100000, 300000, &allowed, &tat) == 0
          && allowed);
    apr_dbd_close(db.driver, handle);
    unit_remove_db(p, dir, "a.db");
}

UNIT_MAIN("access", {
    RUN(t_key_format);
    RUN(t_scopes_and_rates);
    RUN(t_gcra);
    RUN(t_throttle);
    RUN(t_limits_table);
    RUN(t_metrics);
    RUN(t_sql);
})
