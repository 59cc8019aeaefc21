/* Unit tests for migrations and the MCP session store on a real SQLite file, without
 * httpd (the integration tests cover PostgreSQL through the module). */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_db.h"
#include "gmcp_lease.h"
#include "gmcp_migrate.h"
#include "gmcp_session_cache.h"
#include "gmcp_shared_limits.h"
#include "gmcp_store.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
#include <apr_network_io.h>
#include <apr_dbd.h>
#include <apr_hash.h>
#include <apr_file_io.h>
#include <apr_strings.h>

static gmcp_db db;
static apr_dbd_t *handle;
static char tmpl[] = "/tmp/gmcp-unit-XXXXXX";

static void t_open_and_migrate(apr_pool_t *p)
{
    const char *err = NULL;
    apr_array_header_t *migs;
    int applied = 0, version = -1, behind = 0;

    CHECK(unit_open_sqlite(p, tmpl, "u.db", &db, &handle) == 0);

    /* An empty database is version 0 and not ready. */
    CHECK(gmcp_db_schema_version(&db, &version, &err) == 0 && version == 0);
    CHECK(gmcp_db_ready(&db, &err, &behind) == GMCP_ESCHEMA && behind == 1);
    CHECK(strstr(err, "gmcpctl migrate") != NULL);

    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0 && applied == migs->nelts);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0 && applied == 0);
    CHECK(gmcp_db_schema_version(&db, &version, &err) == 0 && version == GMCP_SCHEMA_VERSION);
    CHECK(gmcp_db_ready(&db, &err, &behind) == 0);
}

static void t_sessions(apr_pool_t *p)
{
    gmcp_session s, got;
    memset(&s, 0, sizeof(s));
    s.id = "sess-1";
    s.owner = "alice";
    s.protocol_version = "2025-11-25";
    s.client_caps = "{\"sampling\":{}}";
    (void)p;
    CHECK(gmcp_session_create(&db, &s, "{\"name\":\"c\"}") == 0);
    CHECK(gmcp_session_load(&db, "sess-1", "alice", 3600, &got) == APR_SUCCESS);
    CHECK_STR(got.protocol_version, "2025-11-25");
    CHECK_STR(got.client_caps, "{\"sampling\":{}}");
    CHECK_STR(got.log_level, "");
    /* Another principal sees nothing; an unknown id neither. */
    CHECK(gmcp_session_load(&db, "sess-1", "mallory", 3600, &got) == APR_ENOENT);
    CHECK(gmcp_session_load(&db, "sess-x", NULL, 3600, &got) == APR_ENOENT);
    CHECK(gmcp_session_set_level(&db, "sess-1", "debug") == 0);
    CHECK(gmcp_session_load(&db, "sess-1", NULL, 3600, &got) == APR_SUCCESS);
    CHECK_STR(got.log_level, "debug");
    /* Idle past the timeout: gone. */
    CHECK(gmcp_db_exec_raw(&db, "UPDATE mcp_sessions SET last_seen = last_seen - 100", NULL) == 0);
    CHECK(gmcp_session_load(&db, "sess-1", NULL, 50, &got) == APR_ENOENT);
    /* A load within the timeout refreshes last_seen (it is older than a minute). */
    CHECK(gmcp_session_load(&db, "sess-1", NULL, 3600, &got) == APR_SUCCESS);
    CHECK(gmcp_session_load(&db, "sess-1", NULL, 50, &got) == APR_SUCCESS);
}

static void t_streams_and_events(apr_pool_t *p)
{
    gmcp_stream sm;
    gmcp_rows rs;
    (void)p;
    CHECK(gmcp_stream_create(&db, "st1", "sess-1", "1", "h/1/2/x") == 0);
    CHECK(gmcp_stream_get(&db, "st1", &sm) == APR_SUCCESS && sm.done == 0);
    CHECK_STR(sm.session_id, "sess-1");
    CHECK_STR(sm.holder, "h/1/2/x");
    CHECK_STR(sm.request_key, "1");
    CHECK(sm.created > 0);
    CHECK(gmcp_event_append(&db, "st1", "sess-1", 1, "{\"a\":1}") == 0);
    CHECK(gmcp_event_append(&db, "st1", "sess-1", 2, "{\"a\":2}") == 0);
    CHECK(gmcp_event_append(&db, "st1", "sess-1", 2, "{\"dup\":1}") != 0); /* unique */
    CHECK(gmcp_events_after(&db, "st1", 1, &rs) == 0 && rs.rows->nelts == 1);
    CHECK_STR(GMCP_ROW(&rs, 0)[1], "{\"a\":2}");
    CHECK(gmcp_events_after(&db, "st1", 0, &rs) == 0 && rs.rows->nelts == 2);
    CHECK(gmcp_stream_finish(&db, "st1") == 0);
    CHECK(gmcp_stream_get(&db, "st1", &sm) == APR_SUCCESS && sm.done == 1);
    CHECK(gmcp_stream_get(&db, "nope", &sm) == APR_ENOENT);
}

/* Giving up a stream: the error once, after what is stored, and never after the
 * response or on a stream that is done. */
static void t_stream_give_up(apr_pool_t *p)
{
    gmcp_stream sm;
    gmcp_rows rs;
    const char *err = "{\"jsonrpc\":\"2.0\",\"id\":5,\"error\":{\"code\":-32603}}";
    (void)p;
    CHECK(gmcp_stream_create(&db, "st2", "sess-1", "5", "") == 0);
    CHECK(gmcp_event_append(&db, "st2", "sess-1", 1, "{\"method\":\"n\"}") == 0);
    CHECK(gmcp_stream_give_up(&db, "st2", "sess-1", err) == 0);
    CHECK(gmcp_stream_give_up(&db, "st2", "sess-1", err) == 0); /* a second follower */
    CHECK(gmcp_events_after(&db, "st2", 0, &rs) == 0 && rs.rows->nelts == 2);
    CHECK_STR(GMCP_ROW(&rs, 1)[0], "2");
    CHECK_STR(GMCP_ROW(&rs, 1)[1], err);
    CHECK(gmcp_stream_get(&db, "st2", &sm) == APR_SUCCESS && sm.done == 1);
    /* The response was stored, only "done" was not: nothing is added. */
    CHECK(gmcp_stream_create(&db, "st3", "sess-1", "6", "") == 0);
    CHECK(gmcp_event_append(&db, "st3", "sess-1", 1, "{\"jsonrpc\":\"2.0\",\"id\":6,\"result\":{}}")
          == 0);
    CHECK(gmcp_stream_give_up(&db, "st3", "sess-1", err) == 0);
    CHECK(gmcp_events_after(&db, "st3", 0, &rs) == 0 && rs.rows->nelts == 1);
    CHECK(gmcp_stream_get(&db, "st3", &sm) == APR_SUCCESS && sm.done == 1);
    /* A finished stream is left alone. */
    CHECK(gmcp_stream_give_up(&db, "st1", "sess-1", err) == 0);
    CHECK(gmcp_events_after(&db, "st1", 0, &rs) == 0 && rs.rows->nelts == 2);
}

static void t_pending_and_cancel(apr_pool_t *p)
{
    const char *resp = "x";
    int cancelled = -1;
    (void)p;
    CHECK(gmcp_pending_create(&db, "sess-1", "\"r1\"") == 0);
    CHECK(gmcp_pending_get(&db, "sess-1", "\"r1\"", &resp) == APR_SUCCESS && resp == NULL);
    CHECK(gmcp_pending_answer(&db, "sess-1", "\"r1\"", "{\"result\":{}}") == APR_SUCCESS);
    CHECK(gmcp_pending_answer(&db, "sess-1", "\"r1\"", "{}") == APR_ENOENT); /* once */
    CHECK(gmcp_pending_answer(&db, "sess-1", "\"zz\"", "{}") == APR_ENOENT);
    CHECK(gmcp_pending_get(&db, "sess-1", "\"r1\"", &resp) == APR_SUCCESS);
    CHECK_STR(resp, "{\"result\":{}}");
    CHECK(gmcp_pending_delete(&db, "sess-1", "\"r1\"") == 0);
    CHECK(gmcp_pending_get(&db, "sess-1", "\"r1\"", &resp) == APR_ENOENT);
    CHECK(gmcp_cancel_check(&db, "sess-1", "7", &cancelled) == 0 && cancelled == 0);
    CHECK(gmcp_cancel_record(&db, "sess-1", "7") == 0);
    CHECK(gmcp_cancel_record(&db, "sess-1", "7") == 0); /* repeat */
    CHECK(gmcp_cancel_check(&db, "sess-1", "7", &cancelled) == 0 && cancelled == 1);
    CHECK(gmcp_subscription_add(&db, "sess-1", "test://x") == 0);
    CHECK(gmcp_subscription_add(&db, "sess-1", "test://x") == 0);
    CHECK(gmcp_subscription_remove(&db, "sess-1", "test://x") == 0);
}

/* Rows of `table` a second connection sees: what `db` has committed. */
static const char *committed_count(apr_pool_t *p, gmcp_db *d, const char *path, const char *table)
{
    apr_dbd_t *other;
    const char *err = NULL;
    gmcp_db o;
    gmcp_rows rs;
    const char *n = "error";
    if (apr_dbd_open_ex(d->driver, p, path, &other, &err)) return n;
    gmcp_db_init(&o, d->driver, other, apr_hash_make(p), p);
    if (gmcp_db_select_raw(&o, apr_pstrcat(p, "SELECT count(*) FROM ", table, NULL), &rs) == 0)
        n = GMCP_ROW(&rs, 0)[0];
    apr_dbd_close(d->driver, other);
    return n;
}

/* A failed begin or end leaves the pooled connection out of any transaction, in the
 * driver and in the engine, for whoever uses it next (the request pool that held the
 * driver's transaction record may be gone by then). */
static void t_failed_transactions(apr_pool_t *p)
{
    static char dir[] = "/tmp/gmcp-unit-tx-XXXXXX";
    apr_dbd_transaction_t *t = NULL;
    apr_dbd_t *h;
    apr_pool_t *req;
    gmcp_db d, r;
    const char *path;
    int n = 0;
    CHECK(unit_open_sqlite(p, dir, "tx.db", &d, &h) == 0);
    path = apr_pstrcat(p, dir, "/tx.db", NULL);
    CHECK(gmcp_db_exec_raw(&d, "CREATE TABLE parent (id INTEGER PRIMARY KEY)", NULL) == 0);
    CHECK(gmcp_db_exec_raw(&d,
                           "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
                           "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)",
                           NULL)
          == 0);
    CHECK(gmcp_db_exec_raw(&d, "PRAGMA foreign_keys = ON", NULL) == 0);

    /* Begin fails (the engine was left inside a transaction): nothing is kept, also
     * when the caller returns at once without an end. */
    CHECK(apr_dbd_query(d.driver, h, &n, "BEGIN") == 0);
    apr_pool_create(&req, p);
    gmcp_db_init(&r, d.driver, h, d.prepared, req);
    CHECK(gmcp_db_begin(&r, &t) == GMCP_EDB && t == NULL);
    apr_pool_destroy(req);
    CHECK(gmcp_db_exec_raw(&d, "SELECT * FROM no_such_table", NULL) == GMCP_EDB);
    CHECK(gmcp_db_exec_raw(&d, "INSERT INTO parent (id) VALUES (1)", NULL) == 0);
    CHECK_STR(committed_count(p, &d, path, "parent"), "1");

    /* COMMIT fails (a deferred constraint; SQLite keeps the transaction open): the
     * connection is out of it afterwards, and the failed rows are gone. */
    CHECK(gmcp_db_begin(&d, &t) == 0);
    CHECK(gmcp_db_exec_raw(&d, "INSERT INTO child (id, parent) VALUES (1, 99)", NULL) == 0);
    CHECK(gmcp_db_end(&d, t, 0) == GMCP_EDB);
    CHECK(gmcp_db_exec_raw(&d, "INSERT INTO parent (id) VALUES (2)", NULL) == 0);
    CHECK_STR(committed_count(p, &d, path, "parent"), "2");
    CHECK_STR(committed_count(p, &d, path, "child"), "0");
    apr_dbd_close(d.driver, h);
    unit_remove_db(p, dir, "tx.db");
}

/* In-flight slots: never more holders than the cap, whatever the order; a slot comes
 * free when given back, when it expired, and at once when its holder died here. */
static void t_inflight_slots(apr_pool_t *p)
{
    char host[APRMAXHOSTLEN + 1] = "";
    const char *dead;
    int slot = -1, s2 = -1;
    pid_t pid;
    apr_int64_t tat = -1;
    CHECK(gmcp_inflight_acquire(&db, "k1", 2, "a", 100, 130, &slot) == 0 && slot == 0);
    CHECK(gmcp_inflight_acquire(&db, "k1", 2, "b", 100, 130, &slot) == 0 && slot == 1);
    CHECK(gmcp_inflight_acquire(&db, "k1", 2, "c", 100, 130, &slot) == APR_EBUSY);
    /* Another key has its own slots. */
    CHECK(gmcp_inflight_acquire(&db, "k2", 1, "c", 100, 130, &slot) == 0 && slot == 0);
    /* Given back: free again; a stranger's give-back or renewal changes nothing. */
    CHECK(gmcp_inflight_release(&db, "k1", 0, "not-a") == 0);
    CHECK(gmcp_inflight_acquire(&db, "k1", 2, "c", 100, 130, &slot) == APR_EBUSY);
    CHECK(gmcp_inflight_renew(&db, "k1", 0, "not-a", 200) == APR_ENOENT);
    CHECK(gmcp_inflight_release(&db, "k1", 0, "a") == 0);
    CHECK(gmcp_inflight_acquire(&db, "k1", 2, "c", 100, 130, &slot) == 0 && slot == 0);
    /* Renewed slots stay held past their first expiry; expired ones come free. */
    CHECK(gmcp_inflight_renew(&db, "k1", 1, "b", 200) == 0);
    CHECK(gmcp_inflight_acquire(&db, "k1", 2, "d", 150, 180, &slot) == 0 && slot == 0);
    CHECK(gmcp_inflight_renew(&db, "k1", 0, "c", 300) == APR_ENOENT); /* c lost it to d */
    CHECK(gmcp_inflight_acquire(&db, "k1", 2, "e", 150, 180, &slot) == APR_EBUSY);
    /* A holder that died on this host gives its slot up at once. */
    apr_gethostname(host, sizeof(host), p);
    if ((pid = fork()) == 0) _exit(0);
    CHECK(pid > 0 && waitpid(pid, NULL, 0) == pid);
    dead = apr_psprintf(p, "%s/%ld/1/x", host, (long)pid);
    CHECK(gmcp_inflight_acquire(&db, "k3", 1, dead, 100, 130, &s2) == 0 && s2 == 0);
    CHECK(gmcp_inflight_acquire(&db, "k3", 1, "f", 100, 130, &s2) == 0 && s2 == 0);
    CHECK(gmcp_inflight_acquire(&db, "k3", 1, "g", 100, 130, &s2) == APR_EBUSY);
    /* A shared bucket: charged unconditionally, from now when it ran dry. */
    CHECK(gmcp_bucket_peek(&db, "tok:k1", &tat) == 0 && tat == 0);
    CHECK(gmcp_bucket_charge(&db, "tok:k1", 1000, 50, &tat) == 0 && tat == 1050);
    CHECK(gmcp_bucket_charge(&db, "tok:k1", 1010, 50, &tat) == 0 && tat == 1100);
    CHECK(gmcp_bucket_charge(&db, "tok:k1", 5000, 7, &tat) == 0 && tat == 5007);
    CHECK(gmcp_bucket_peek(&db, "tok:k1", &tat) == 0 && tat == 5007);
}

/* The per-process session cache: served only within its TTL, only to the owner, never
 * near the idle limit or the last_seen refresh, and forgotten on drop. */
static void t_session_cache(apr_pool_t *p)
{
    gmcp_session_cache *c = gmcp_session_cache_create(p);
    gmcp_session s = {"sid-1", "alice", "2025-11-25", "{\"sampling\":{}}", "debug", 0}, out;
    char big[GMCP_SESSION_CACHE_MAX_BYTES + 16];
    apr_time_t now = apr_time_now();
    CHECK(c != NULL);
    s.last_seen = apr_time_sec(now);
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
    gmcp_session_cache_put(c, &s, now);
    CHECK(gmcp_session_cache_get(c, "sid-1", "alice", 3600, 60, p, &out));
    CHECK_STR(out.owner, "alice");
    CHECK_STR(out.protocol_version, "2025-11-25");
    CHECK_STR(out.client_caps, "{\"sampling\":{}}");
    CHECK_STR(out.log_level, "debug");
    CHECK(out.last_seen == s.last_seen);
    /* another owner, an unknown id: a miss, never someone else's session */
    CHECK(!gmcp_session_cache_get(c, "sid-1", "bob", 3600, 60, p, &out));
    CHECK(!gmcp_session_cache_get(c, "sid-2", NULL, 3600, 60, p, &out));
    /* close to the idle limit or due for a refresh: the database decides */
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 0, 60, p, &out));
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 3600, 0, p, &out));
    /* past half its life: one caller refreshes, the others still use it */
    gmcp_session_cache_put(c, &s, now - GMCP_SESSION_CACHE_TTL / 2 - apr_time_from_msec(2));
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
    CHECK(gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
    gmcp_session_cache_put(c, &s, now);
    CHECK(gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
    /* a read that began a TTL ago is not served */
    gmcp_session_cache_put(c, &s, now - GMCP_SESSION_CACHE_TTL);
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
    /* dropped: gone at once */
    gmcp_session_cache_put(c, &s, now);
    gmcp_session_cache_drop(c, "sid-1");
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
    /* too large to keep: not kept */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    s.client_caps = big;
    gmcp_session_cache_put(c, &s, now);
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
    /* expires in real time */
    s.client_caps = "{}";
    gmcp_session_cache_put(c, &s, apr_time_now());
    apr_sleep(GMCP_SESSION_CACHE_TTL + apr_time_from_msec(5));
    CHECK(!gmcp_session_cache_get(c, "sid-1", NULL, 3600, 60, p, &out));
}

/* Lease holder tokens: "host/pid/start/random"; a holder is dead when its process is
 * gone, or when its pid now belongs to a process that started at another time. */
static void t_lease_holders(apr_pool_t *p)
{
    int fds[2];
    char buf[256] = "", *slash;
    const char *mine = gmcp_lease_token(p), *f;
    pid_t pid;
    ssize_t n;
    CHECK(mine != NULL && !gmcp_lease_holder_dead(mine));
    f = mine ? strchr(strchr(strchr(mine, '/') + 1, '/') + 1, '/') : NULL;
    CHECK(f && strchr(mine, '/')[1] >= '0'); /* the pid */
    /* the start time is digits (it once was a literal "%lu") */
    slash = mine ? strchr(strchr(mine, '/') + 1, '/') + 1 : NULL;
    CHECK(slash && *slash >= '1' && *slash <= '9'
          && strspn(slash, "0123456789") == (size_t)(f - slash));
    if (pipe(fds) != 0) return;
    if ((pid = fork()) == 0) {
        const char *t = gmcp_lease_token(p);
        if (write(fds[1], t, strlen(t)) < 0) _exit(1);
        close(fds[1]);
        pause();
        _exit(0);
    }
    close(fds[1]);
    n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    CHECK(n > 0);
    CHECK(!gmcp_lease_holder_dead(buf)); /* alive */
    {
        /* the same pid with another start time: reused by another process */
        char *start = strchr(strchr(buf, '/') + 1, '/') + 1;
        const char *other = apr_psprintf(p, "%.*s1%s", (int)(start - buf), buf, start);
        CHECK(gmcp_lease_holder_dead(other));
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK(gmcp_lease_holder_dead(buf)); /* gone */
}

static void t_delete_and_sweep(apr_pool_t *p)
{
    gmcp_session s, got;
    gmcp_rows rs;
    (void)p;
    memset(&s, 0, sizeof(s));
    s.owner = "bob";
    s.protocol_version = "2025-06-18";
    s.client_caps = "{}";
    s.id = "old";
    CHECK(gmcp_session_create(&db, &s, "{}") == 0);
    s.id = "fresh";
    CHECK(gmcp_session_create(&db, &s, "{}") == 0);
    CHECK(gmcp_stream_create(&db, "st-old", "old", "1", NULL) == 0);
    CHECK(gmcp_event_append(&db, "st-old", "old", 1, "{}") == 0);
    CHECK(gmcp_db_exec_raw(&db,
                           "UPDATE mcp_sessions SET last_seen = last_seen - 1000 "
                           "WHERE id = 'old'",
                           NULL)
          == 0);
    CHECK(gmcp_store_sweep(&db, 500, 3600) == 0);
    CHECK(gmcp_session_load(&db, "old", NULL, 1 << 30, &got) == APR_ENOENT);
    CHECK(gmcp_session_load(&db, "fresh", NULL, 500, &got) == APR_SUCCESS);
    CHECK(gmcp_db_select_raw(&db, "SELECT count(*) FROM mcp_events WHERE session_id = 'old'", &rs)
          == 0);
    CHECK_STR(GMCP_ROW(&rs, 0)[0], "0");
    /* Explicit delete removes the session and everything hanging off it. */
    CHECK(gmcp_session_delete(&db, "sess-1") == APR_SUCCESS);
    CHECK(gmcp_session_delete(&db, "sess-1") == APR_ENOENT);
    CHECK(gmcp_db_select_raw(&db,
                             "SELECT (SELECT count(*) FROM mcp_events WHERE session_id = "
                             "'sess-1') + (SELECT count(*) FROM mcp_streams WHERE "
                             "session_id = 'sess-1') + (SELECT count(*) FROM mcp_cancels "
                             "WHERE session_id = 'sess-1')",
                             &rs)
          == 0);
    CHECK_STR(GMCP_ROW(&rs, 0)[0], "0");
    apr_dbd_close(db.driver, handle);
    unit_remove_db(p, tmpl, "u.db");
}

UNIT_MAIN("store", {
    RUN(t_open_and_migrate);
    RUN(t_sessions);
    RUN(t_streams_and_events);
    RUN(t_stream_give_up);
    RUN(t_pending_and_cancel);
    RUN(t_failed_transactions);
    RUN(t_inflight_slots);
    RUN(t_delete_and_sweep);
    RUN(t_session_cache);
    RUN(t_lease_holders);
})
