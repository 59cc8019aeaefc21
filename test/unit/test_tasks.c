/* Unit tests of the task store (gmcp_tasks) on a real SQLite file: create and read back,
 * owners, input requests and answers (partial, unknown and repeated keys, keys never
 * reused), answers through two handles at once, cancel, finish by the holder only,
 * orphans failed, TTL sweep, and the wire form. */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_migrate.h"
#include "gmcp_tasks.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <apr_thread_proc.h>

static gmcp_db db;
static apr_dbd_t *handle;
static char tmpl[] = "/tmp/gmcp-unit-tasks-XXXXXX";
#define NOW_MS ((apr_int64_t)1800000000000)

static void t_migrate(apr_pool_t *p)
{
    const char *err = NULL;
    apr_array_header_t *migs;
    int applied = 0;
    CHECK(unit_open_sqlite(p, tmpl, "t.db", &db, &handle) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0);
}

static void make(const char *id, const char *owner, const char *holder, apr_int64_t lease_until)
{
    gmcp_task t;
    memset(&t, 0, sizeof(t));
    t.id = id;
    t.owner = owner;
    t.key_id = owner;
    t.tool = "slow_compute";
    t.request = "{\"name\":\"slow_compute\",\"arguments\":{\"seconds\":1}}";
    t.holder = holder;
    t.lease_until = lease_until;
    t.created_ms = NOW_MS;
    t.ttl_ms = 600000;
    CHECK(gmcp_task_create(&db, &t) == APR_SUCCESS);
}

static void t_create_and_owners(apr_pool_t *p)
{
    gmcp_task t;
    json_t *j;
    make("task1", "alice", "h1", gmcp_now_sec() + 60);
    CHECK(gmcp_task_get(&db, "task1", "alice", &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_WORKING);
    CHECK_STR(t.tool, "slow_compute");
    CHECK(t.created_ms == NOW_MS && t.ttl_ms == 600000
          && t.expires == (NOW_MS + 600000) / 1000 + 1);
    CHECK(gmcp_task_get(&db, "task1", "mallory", &t) == APR_ENOENT);
    CHECK(gmcp_task_get(&db, "nope", NULL, &t) == APR_ENOENT);
    /* An id is never made twice. */
    {
        gmcp_task dup;
        memset(&dup, 0, sizeof(dup));
        dup.id = "task1";
        dup.owner = dup.key_id = dup.tool = dup.request = dup.holder = "x";
        dup.created_ms = NOW_MS;
        CHECK(gmcp_task_create(&db, &dup) == APR_EEXIST);
    }
    CHECK(gmcp_task_get(&db, "task1", NULL, &t) == APR_SUCCESS);
    j = gmcp_task_json(p, &t, 1, 500);
    CHECK_STR(json_string_value(json_object_get(j, "taskId")), "task1");
    CHECK_STR(json_string_value(json_object_get(j, "status")), "working");
    CHECK_STR(json_string_value(json_object_get(j, "createdAt")), "2027-01-15T08:00:00.000Z");
    CHECK(json_integer_value(json_object_get(j, "ttlMs")) == 600000);
    CHECK(json_integer_value(json_object_get(j, "pollIntervalMs")) == 500);
    CHECK(!json_object_get(j, "result") && !json_object_get(j, "inputRequests")
          && !json_object_get(j, "statusMessage"));
    json_decref(j);
}

/* gmcp_task_ask with params made here and released. */
static apr_status_t ask(const char *id, const char *holder, json_t *params, apr_int64_t now,
                        const char **key)
{
    apr_status_t rv = gmcp_task_ask(&db, id, holder, "elicitation/create", params, now, key);
    json_decref(params);
    return rv;
}

static json_t *accepted(const char *name)
{
    return json_pack("{s:s, s:{s:s}}", "action", "accept", "content", "name", name);
}

static void t_inputs_and_answers(apr_pool_t *p)
{
    gmcp_task t;
    const char *k1, *k2, *k3;
    json_t *resp, *answer = NULL, *j;
    int cancel = 1;
    CHECK(ask("task1", "h1", json_pack("{s:s}", "message", "a?"), NOW_MS + 1, &k1) == APR_SUCCESS);
    CHECK(ask("task1", "h1", json_pack("{s:s}", "message", "b?"), NOW_MS + 2, &k2) == APR_SUCCESS);
    CHECK(k1 && k2 && strcmp(k1, k2) != 0);
    /* Only the holder asks. */
    CHECK(ask("task1", "h2", NULL, NOW_MS, &k3) == APR_ENOENT);
    CHECK(gmcp_task_get(&db, "task1", "alice", &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_INPUT);
    j = gmcp_task_json(p, &t, 1, 500);
    CHECK(json_object_size(json_object_get(j, "inputRequests")) == 2);
    CHECK_STR(gmcp_json_str(json_object_get(json_object_get(j, "inputRequests"), k1), "method"),
              "elicitation/create");
    json_decref(j);

    /* Nothing answered yet. */
    CHECK(gmcp_task_take_answer(&db, "task1", "h1", k1, &answer, &cancel) == APR_SUCCESS);
    CHECK(answer == NULL && cancel == 0);
    /* One key answered, plus one never asked: the asked one leaves inputs at once. */
    resp = json_object();
    json_object_set_new(resp, k1, accepted("first"));
    json_object_set_new(resp, "unknown-key", json_pack("{s:b}", "ignored", 1));
    CHECK(gmcp_task_answer(&db, "task1", "alice", resp, NOW_MS + 3) == APR_SUCCESS);
    json_decref(resp);
    CHECK(gmcp_task_get(&db, "task1", "alice", &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_INPUT);
    CHECK(strstr(t.inputs, k1) == NULL && strstr(t.inputs, k2) != NULL);
    CHECK(strstr(t.inputs, "unknown-key") == NULL && strstr(t.answers, "unknown-key") == NULL);
    /* Another caller's answers go nowhere. */
    resp = json_object();
    json_object_set_new(resp, k2, accepted("mallory"));
    CHECK(gmcp_task_answer(&db, "task1", "mallory", resp, NOW_MS) == APR_ENOENT);
    json_decref(resp);
    /* The worker takes the first answer once. */
    CHECK(gmcp_task_take_answer(&db, "task1", "h1", k1, &answer, &cancel) == APR_SUCCESS);
    CHECK(answer
          && !strcmp(json_string_value(json_object_get(json_object_get(answer, "content"), "name")),
                     "first"));
    json_decref(answer);
    CHECK(gmcp_task_take_answer(&db, "task1", "h1", k1, &answer, &cancel) == APR_SUCCESS);
    CHECK(answer == NULL);
    /* Answering an answered key again changes nothing. */
    resp = json_object();
    json_object_set_new(resp, k1, accepted("again"));
    json_object_set_new(resp, k2, accepted("second"));
    CHECK(gmcp_task_answer(&db, "task1", "alice", resp, NOW_MS + 4) == APR_SUCCESS);
    json_decref(resp);
    CHECK(gmcp_task_get(&db, "task1", "alice", &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_WORKING); /* nothing outstanding */
    CHECK(strstr(t.answers, "again") == NULL && strstr(t.answers, "second") != NULL);
    CHECK(t.updated_ms == NOW_MS + 4);
    /* A new request gets a new key: never one used before. */
    CHECK(ask("task1", "h1", NULL, NOW_MS + 5, &k3) == APR_SUCCESS);
    CHECK(strcmp(k3, k1) != 0 && strcmp(k3, k2) != 0);
}

/* Two writers answering different keys at once through two handles: both kept. */
typedef struct {
    const char *key, *value;
    int rv;
    char dir[64];
} writer;

static void *APR_THREAD_FUNC answer_thread(apr_thread_t *th, void *d)
{
    writer *w = d;
    apr_pool_t *p;
    apr_dbd_t *h;
    const apr_dbd_driver_t *drv;
    gmcp_db mine;
    const char *err;
    json_t *resp;
    apr_pool_create(&p, NULL);
    w->rv = -1;
    if (apr_dbd_get_driver(p, "sqlite3", &drv) == APR_SUCCESS
        && apr_dbd_open_ex(drv, p, apr_pstrcat(p, w->dir, "/t.db", NULL), &h, &err) == 0) {
        gmcp_db_init(&mine, drv, h, apr_hash_make(p), p);
        gmcp_db_exec_raw(&mine, "PRAGMA busy_timeout = 5000", NULL);
        resp = json_object();
        json_object_set_new(resp, w->key, accepted(w->value));
        w->rv = gmcp_task_answer(&mine, "task2", "bob", resp, NOW_MS + 9);
        json_decref(resp);
        apr_dbd_close(drv, h);
    }
    apr_pool_destroy(p);
    apr_thread_exit(th, APR_SUCCESS);
    return NULL;
}

static void t_concurrent_answers(apr_pool_t *p)
{
    writer w[2] = {{NULL, "one", 0, ""}, {NULL, "two", 0, ""}};
    apr_thread_t *th[2];
    apr_status_t st;
    gmcp_task t;
    int i;
    make("task2", "bob", "h9", gmcp_now_sec() + 60);
    CHECK(ask("task2", "h9", NULL, NOW_MS, &w[0].key) == 0);
    CHECK(ask("task2", "h9", NULL, NOW_MS, &w[1].key) == 0);
    for (i = 0; i < 2; i++) {
        apr_cpystrn(w[i].dir, tmpl, sizeof(w[i].dir));
        CHECK(apr_thread_create(&th[i], NULL, answer_thread, &w[i], p) == APR_SUCCESS);
    }
    for (i = 0; i < 2; i++) apr_thread_join(&st, th[i]);
    CHECK(w[0].rv == APR_SUCCESS && w[1].rv == APR_SUCCESS);
    CHECK(gmcp_task_get(&db, "task2", "bob", &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_WORKING);
    CHECK(strstr(t.answers, "\"one\"") && strstr(t.answers, "\"two\""));
}

static int holder_dead(const char *h) { return !strcmp(h, "dead-holder"); }

static void t_cancel_finish_and_orphans(apr_pool_t *p)
{
    gmcp_task t;
    json_t *res = json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", "done",
                            "isError", 0),
           *j;
    int cancel = 0, n = -1;
    CHECK(gmcp_task_touch(&db, "task1", "h1", "half way", gmcp_now_sec() + 60, NOW_MS + 6, &cancel)
          == APR_SUCCESS);
    CHECK(cancel == 0);
    CHECK(gmcp_task_cancel(&db, "task1", "mallory", NOW_MS) == APR_ENOENT);
    CHECK(gmcp_task_cancel(&db, "task1", "alice", NOW_MS + 7) == APR_SUCCESS);
    CHECK(gmcp_task_touch(&db, "task1", "h1", NULL, gmcp_now_sec() + 60, NOW_MS, &cancel)
          == APR_SUCCESS);
    CHECK(cancel == 1);
    CHECK(gmcp_task_touch(&db, "task1", "other", NULL, 0, NOW_MS, &cancel) == APR_ENOENT);
    /* Only the holder finishes it, once. */
    CHECK(gmcp_task_finish(&db, "task1", "other", GMCP_TASK_COMPLETED, res, NULL, NOW_MS)
          == APR_ENOENT);
    CHECK(gmcp_task_finish(&db, "task1", "h1", GMCP_TASK_COMPLETED, res, NULL, NOW_MS + 8)
          == APR_SUCCESS);
    CHECK(gmcp_task_finish(&db, "task1", "h1", GMCP_TASK_FAILED, res, NULL, NOW_MS) == APR_ENOENT);
    CHECK(gmcp_task_get(&db, "task1", "alice", &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_COMPLETED);
    CHECK_STR(t.holder, "");
    CHECK_STR(t.status_message, "");
    j = gmcp_task_json(p, &t, 1, 500);
    CHECK_STR(
        gmcp_json_str(json_array_get(json_object_get(json_object_get(j, "result"), "content"), 0),
                      "text"),
        "done");
    CHECK(!json_object_get(j, "pollIntervalMs") && !json_object_get(j, "inputRequests"));
    json_decref(j);
    json_decref(res);
    /* A cancel or an answer for a finished task is acknowledged and changes nothing. */
    CHECK(gmcp_task_cancel(&db, "task1", "alice", NOW_MS + 20) == APR_SUCCESS);
    CHECK(gmcp_task_get(&db, "task1", "alice", &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_COMPLETED);
    CHECK(t.updated_ms == NOW_MS + 8);

    /* Orphans: a lease that ran out, and a holder said dead; a live one stays. */
    make("task3", "carol", "gone", gmcp_now_sec() - 1);
    make("task4", "carol", "dead-holder", gmcp_now_sec() + 60);
    make("task5", "carol", "alive", gmcp_now_sec() + 60);
    CHECK(gmcp_task_reap(&db, gmcp_now_sec(), holder_dead, 1, &n) == APR_SUCCESS);
    CHECK(n == 2); /* counted only */
    CHECK(gmcp_task_reap(&db, gmcp_now_sec(), NULL, 0, &n) == APR_SUCCESS);
    CHECK(n == 1);
    CHECK(gmcp_task_get(&db, "task3", NULL, &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_FAILED);
    CHECK(strstr(t.outcome, "-32603") && strstr(t.status_message, "stopped"));
    CHECK(gmcp_task_get(&db, "task5", NULL, &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_WORKING);
}

static void t_dead_holder_and_sweep(apr_pool_t *p)
{
    gmcp_task t;
    int n = -1;
    (void)p;
    CHECK(gmcp_task_reap(&db, gmcp_now_sec(), holder_dead, 0, &n) == APR_SUCCESS && n == 1);
    CHECK(gmcp_task_get(&db, "task4", NULL, &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_FAILED);
    CHECK(gmcp_task_get(&db, "task5", NULL, &t) == APR_SUCCESS);
    CHECK_STR(t.status, GMCP_TASK_WORKING);
    /* Not swept before its TTL; swept after once it has ended (task2 and task5 run). */
    CHECK(gmcp_task_expired_count(&db, (NOW_MS + 600000) / 1000 + 2) == 3);
    CHECK(gmcp_task_sweep(&db, (NOW_MS + 600000) / 1000, &n) == APR_SUCCESS && n == 0);
    CHECK(gmcp_task_sweep(&db, (NOW_MS + 600000) / 1000 + 2, &n) == APR_SUCCESS && n == 3);
    CHECK(gmcp_task_get(&db, "task1", NULL, &t) == APR_ENOENT);
    CHECK(gmcp_task_get(&db, "task5", NULL, &t) == APR_SUCCESS);
}

UNIT_MAIN("tasks", {
    RUN(t_migrate);
    RUN(t_create_and_owners);
    RUN(t_inputs_and_answers);
    RUN(t_concurrent_answers);
    RUN(t_cancel_finish_and_orphans);
    RUN(t_dead_holder_and_sweep);
    apr_dbd_close(db.driver, handle);
    {
        char cmd[128];
        apr_snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpl);
        if (system(cmd) != 0) unit_failed++;
    }
})
