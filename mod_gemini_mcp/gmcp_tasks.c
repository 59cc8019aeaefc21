/* gmcp_tasks.c — MCP tasks in SQL (gmcp_tasks.h). */
#include "gmcp_tasks.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_time.h>

#define TASK_COLS                                                                         \
    "id, owner, key_id, tool, request, status, status_message, inputs, answers, "         \
    "next_input, outcome, cancel, holder, lease_until, version, created_ms, updated_ms, " \
    "ttl_ms, expires"
#define NOT_ENDED "status IN ('working', 'input_required')"
/* How often a compare-and-set is tried again when another writer came between. */
#define CAS_TRIES 20

const gmcp_stmt gmcp_task_stmts[] = {
    {"gmcp_task_insert",
     "INSERT INTO mcp_tasks (id, owner, key_id, tool, request, status, holder, lease_until, "
     "created_ms, updated_ms, ttl_ms, expires) "
     "VALUES (%s, %s, %s, %s, %s, 'working', %s, %lld, %lld, %lld, %lld, %lld)"},
    {"gmcp_task_select", "SELECT " TASK_COLS " FROM mcp_tasks WHERE id = %s"},
    /* The input requests and answers: only over the version read. */
    {"gmcp_task_set_inputs",
     "UPDATE mcp_tasks SET inputs = %s, answers = %s, next_input = %lld, status = %s, "
     "updated_ms = %lld, version = version + 1 WHERE id = %s AND version = %lld AND " NOT_ENDED},
    {"gmcp_task_cancel",
     "UPDATE mcp_tasks SET cancel = 1, updated_ms = %lld WHERE id = %s AND " NOT_ENDED},
    {"gmcp_task_touch",
     "UPDATE mcp_tasks SET lease_until = %lld WHERE id = %s AND holder = %s AND " NOT_ENDED},
    {"gmcp_task_renew_all",
     "UPDATE mcp_tasks SET lease_until = %lld WHERE holder = %s AND " NOT_ENDED},
    {"gmcp_task_touch_msg",
     "UPDATE mcp_tasks SET lease_until = %lld, status_message = %s, updated_ms = %lld "
     "WHERE id = %s AND holder = %s AND " NOT_ENDED},
    {"gmcp_task_finish",
     "UPDATE mcp_tasks SET status = %s, outcome = %s, status_message = %s, inputs = '{}', "
     "holder = '', lease_until = 0, updated_ms = %lld, version = version + 1 "
     "WHERE id = %s AND holder = %s AND " NOT_ENDED},
    {"gmcp_task_running",
     "SELECT id, holder, lease_until FROM mcp_tasks WHERE " NOT_ENDED " LIMIT 1000"},
    {"gmcp_task_fail_orphan",
     "UPDATE mcp_tasks SET status = 'failed', outcome = %s, status_message = %s, "
     "inputs = '{}', holder = '', lease_until = 0, updated_ms = %lld, version = version + 1 "
     "WHERE id = %s AND holder = %s AND lease_until = %lld AND " NOT_ENDED},
    /* A task past its TTL that still runs is kept until it ends (or is failed). */
    {"gmcp_task_sweep", "DELETE FROM mcp_tasks WHERE expires < %lld AND NOT " NOT_ENDED},
    {"gmcp_count_tasks", "SELECT status, COUNT(*) FROM mcp_tasks GROUP BY status"},
    {"gmcp_count_tasks_expired",
     "SELECT COUNT(*) FROM mcp_tasks WHERE expires < %lld AND NOT " NOT_ENDED},
    {NULL, NULL}};

int gmcp_task_terminal(const char *s)
{
    return !strcmp(s, GMCP_TASK_COMPLETED) || !strcmp(s, GMCP_TASK_CANCELLED)
        || !strcmp(s, GMCP_TASK_FAILED);
}

static const char *ms_str(apr_pool_t *p, apr_int64_t v) { return gmcp_i64_str(p, v); }

apr_status_t gmcp_task_create(gmcp_db *db, const gmcp_task *t)
{
    apr_pool_t *p = db->pool;
    apr_int64_t expires = (t->created_ms + t->ttl_ms) / 1000 + 1;
    return gmcp_db_exec_unique(db, "gmcp_task_insert", NULL,
                               GMCP_ARGS(t->id, t->owner, t->key_id, t->tool, t->request, t->holder,
                                         ms_str(p, t->lease_until), ms_str(p, t->created_ms),
                                         ms_str(p, t->created_ms), ms_str(p, t->ttl_ms),
                                         ms_str(p, expires)));
}

static void fill(const char **r, gmcp_task *t)
{
    t->id = r[0];
    t->owner = r[1];
    t->key_id = r[2];
    t->tool = r[3];
    t->request = r[4];
    t->status = r[5];
    t->status_message = r[6];
    t->inputs = r[7];
    t->answers = r[8];
    t->next_input = apr_atoi64(r[9]);
    t->outcome = r[10];
    t->cancel = atoi(r[11]);
    t->holder = r[12];
    t->lease_until = apr_atoi64(r[13]);
    t->version = apr_atoi64(r[14]);
    t->created_ms = apr_atoi64(r[15]);
    t->updated_ms = apr_atoi64(r[16]);
    t->ttl_ms = apr_atoi64(r[17]);
    t->expires = apr_atoi64(r[18]);
}

apr_status_t gmcp_task_get(gmcp_db *db, const char *id, const char *owner, gmcp_task *out)
{
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select(db, "gmcp_task_select", &rs, GMCP_ARGS(id));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    fill(GMCP_ROW(&rs, 0), out);
    if (owner && strcmp(owner, out->owner) != 0) return APR_ENOENT;
    return APR_SUCCESS;
}

/* Write inputs/answers over the version `t` was read at: APR_SUCCESS, APR_EAGAIN when
 * another writer came first (or the task ended), GMCP_EDB. */
static apr_status_t set_inputs(gmcp_db *db, const gmcp_task *t, json_t *inputs, json_t *answers,
                               apr_int64_t next_input, const char *status, apr_int64_t now_ms)
{
    apr_pool_t *p = db->pool;
    int n = 0;
    apr_status_t rv = gmcp_db_exec(db, "gmcp_task_set_inputs", &n,
                                   GMCP_ARGS(gmcp_json_dump(p, inputs), gmcp_json_dump(p, answers),
                                             ms_str(p, next_input), status, ms_str(p, now_ms),
                                             t->id, ms_str(p, t->version)));
    return rv != APR_SUCCESS ? rv : n == 1 ? APR_SUCCESS : APR_EAGAIN;
}

/* Read the task, let `change` edit its inputs and answers, write them back over the
 * version read; again when another writer came between. change returns 1 to write, 0
 * when there is nothing to do. */
typedef int (*edit_fn)(void *baton, gmcp_task *t, json_t *inputs, json_t *answers,
                       apr_int64_t *next_input);

static apr_status_t edit(gmcp_db *db, const char *id, const char *owner, const char *holder,
                         edit_fn change, void *baton, apr_int64_t now_ms)
{
    int tries;
    for (tries = 0; tries < CAS_TRIES; tries++) {
        gmcp_task t;
        json_t *inputs, *answers;
        apr_int64_t next;
        apr_status_t rv = gmcp_task_get(db, id, owner, &t);
        int write;
        if (rv != APR_SUCCESS) return rv;
        if (holder && strcmp(holder, t.holder) != 0) return APR_ENOENT;
        if (gmcp_task_terminal(t.status)) return holder ? APR_ENOENT : APR_SUCCESS;
        inputs = json_loads(t.inputs, 0, NULL);
        answers = json_loads(t.answers, 0, NULL);
        if (!json_is_object(inputs) || !json_is_object(answers)) {
            json_decref(inputs);
            json_decref(answers);
            return GMCP_EDB; /* not what this code writes */
        }
        next = t.next_input;
        write = change(baton, &t, inputs, answers, &next);
        rv = write
            ? set_inputs(db, &t, inputs, answers, next,
                         json_object_size(inputs) ? GMCP_TASK_INPUT : GMCP_TASK_WORKING, now_ms)
            : APR_SUCCESS;
        json_decref(inputs);
        json_decref(answers);
        if (rv != APR_EAGAIN) return rv;
        apr_sleep(apr_time_from_msec(2 + tries));
    }
    return GMCP_EDB;
}

static int apply_answers(void *baton, gmcp_task *t, json_t *inputs, json_t *answers,
                         apr_int64_t *next)
{
    json_t *responses = baton, *v;
    const char *k;
    int n = 0;
    (void)t;
    (void)next;
    json_object_foreach(responses, k, v)
    {
        /* Not asked, answered already, or not an answer (an object): ignored. */
        if (!json_object_get(inputs, k) || !json_is_object(v)) continue;
        json_object_set(answers, k, v);
        json_object_del(inputs, k);
        n++;
    }
    return n > 0;
}

apr_status_t gmcp_task_answer(gmcp_db *db, const char *id, const char *owner, json_t *responses,
                              apr_int64_t now_ms)
{
    if (!json_is_object(responses)) return APR_SUCCESS;
    return edit(db, id, owner, NULL, apply_answers, responses, now_ms);
}

apr_status_t gmcp_task_cancel(gmcp_db *db, const char *id, const char *owner, apr_int64_t now_ms)
{
    gmcp_task t;
    apr_status_t rv = gmcp_task_get(db, id, owner, &t);
    if (rv != APR_SUCCESS) return rv;
    return gmcp_db_exec(db, "gmcp_task_cancel", NULL, GMCP_ARGS(ms_str(db->pool, now_ms), id));
}

typedef struct {
    const char *method;
    json_t *params;
    const char *key;
    apr_pool_t *pool;
} ask_baton;

static int add_input(void *baton, gmcp_task *t, json_t *inputs, json_t *answers, apr_int64_t *next)
{
    ask_baton *a = baton;
    (void)t;
    (void)answers;
    a->key = apr_psprintf(a->pool, "t%" APR_INT64_T_FMT, (*next)++);
    json_object_set_new(inputs, a->key,
                        json_pack("{s:s, s:o}", "method", a->method, "params",
                                  a->params ? json_incref(a->params) : json_object()));
    return 1;
}

apr_status_t gmcp_task_ask(gmcp_db *db, const char *id, const char *holder, const char *method,
                           json_t *params, apr_int64_t now_ms, const char **key)
{
    ask_baton a = {method, params, NULL, db->pool};
    apr_status_t rv = edit(db, id, NULL, holder, add_input, &a, now_ms);
    *key = a.key;
    return rv;
}

typedef struct {
    const char *key;
    json_t *answer;
} take_baton;

static int take(void *baton, gmcp_task *t, json_t *inputs, json_t *answers, apr_int64_t *next)
{
    take_baton *b = baton;
    (void)t;
    (void)inputs;
    (void)next;
    json_decref(b->answer);
    b->answer = json_incref(json_object_get(answers, b->key));
    if (!b->answer) return 0;
    json_object_del(answers, b->key);
    return 1;
}

apr_status_t gmcp_task_take_answer(gmcp_db *db, const char *id, const char *holder, const char *key,
                                   json_t **answer, int *cancel)
{
    take_baton b = {key, NULL};
    gmcp_task t;
    apr_status_t rv = edit(db, id, NULL, holder, take, &b, apr_time_as_msec(apr_time_now()));
    *answer = NULL;
    if (rv != APR_SUCCESS) {
        json_decref(b.answer);
        return rv;
    }
    *answer = b.answer;
    *cancel = gmcp_task_get(db, id, NULL, &t) == APR_SUCCESS && t.cancel;
    return APR_SUCCESS;
}

apr_status_t gmcp_task_touch(gmcp_db *db, const char *id, const char *holder, const char *message,
                             apr_int64_t lease_until, apr_int64_t now_ms, int *cancel)
{
    apr_pool_t *p = db->pool;
    gmcp_task t;
    int n = 0;
    apr_status_t rv = message
        ? gmcp_db_exec(db, "gmcp_task_touch_msg", &n,
                       GMCP_ARGS(ms_str(p, lease_until), message, ms_str(p, now_ms), id, holder))
        : gmcp_db_exec(db, "gmcp_task_touch", &n, GMCP_ARGS(ms_str(p, lease_until), id, holder));
    if (rv != APR_SUCCESS) return rv;
    if (n != 1) return APR_ENOENT;
    if (cancel) *cancel = gmcp_task_get(db, id, NULL, &t) == APR_SUCCESS && t.cancel;
    return APR_SUCCESS;
}

apr_status_t gmcp_task_renew_all(gmcp_db *db, const char *holder, apr_int64_t lease_until)
{
    return gmcp_db_exec(db, "gmcp_task_renew_all", NULL,
                        GMCP_ARGS(ms_str(db->pool, lease_until), holder));
}

apr_status_t gmcp_task_finish(gmcp_db *db, const char *id, const char *holder, const char *status,
                              json_t *outcome, const char *message, apr_int64_t now_ms)
{
    apr_pool_t *p = db->pool;
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_task_finish", &n,
                     GMCP_ARGS(status, outcome ? gmcp_json_dump(p, outcome) : "",
                               message ? message : "", ms_str(p, now_ms), id, holder));
    return rv != APR_SUCCESS ? rv : n == 1 ? APR_SUCCESS : APR_ENOENT;
}

apr_status_t gmcp_task_reap(gmcp_db *db, apr_int64_t now, int (*dead)(const char *holder), int dry,
                            int *n)
{
    static const char why[] = "the server process running this task stopped; call the tool again";
    apr_pool_t *p = db->pool;
    gmcp_rows rs;
    const char *err;
    int i;
    apr_status_t rv = gmcp_db_select(db, "gmcp_task_running", &rs, 0, NULL);
    *n = 0;
    if (rv != APR_SUCCESS) return rv;
    {
        json_t *e = json_pack("{s:i, s:s}", "code", -32603, "message", why);
        err = gmcp_json_dump(p, e);
        json_decref(e);
    }
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **r = GMCP_ROW(&rs, i);
        int changed = 0;
        if (apr_atoi64(r[2]) >= now && !(dead && *r[1] && dead(r[1]))) continue;
        if (dry) {
            ++*n;
            continue;
        }
        rv = gmcp_db_exec(
            db, "gmcp_task_fail_orphan", &changed,
            GMCP_ARGS(err, why, ms_str(p, apr_time_as_msec(apr_time_now())), r[0], r[1], r[2]));
        if (rv != APR_SUCCESS) return rv;
        *n += changed;
    }
    return APR_SUCCESS;
}

apr_int64_t gmcp_task_expired_count(gmcp_db *db, apr_int64_t now)
{
    gmcp_rows rs;
    if (gmcp_db_select(db, "gmcp_count_tasks_expired", &rs, GMCP_ARGS(ms_str(db->pool, now)))
            != APR_SUCCESS
        || rs.rows->nelts != 1)
        return -1;
    return apr_atoi64(GMCP_ROW(&rs, 0)[0]);
}

apr_status_t gmcp_task_sweep(gmcp_db *db, apr_int64_t now, int *n)
{
    *n = 0;
    return gmcp_db_exec(db, "gmcp_task_sweep", n, GMCP_ARGS(ms_str(db->pool, now)));
}

static const char *iso8601_ms(apr_pool_t *p, apr_int64_t ms)
{
    apr_time_exp_t t;
    char buf[32];
    apr_size_t n;
    apr_time_exp_gmt(&t, apr_time_from_msec(ms));
    apr_strftime(buf, &n, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &t);
    return apr_psprintf(p, "%s.%03dZ", buf, (int)(ms % 1000));
}

json_t *gmcp_task_json(apr_pool_t *p, const gmcp_task *t, int detailed, apr_int64_t poll_ms)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "taskId", t->id, "status", t->status,
                          "createdAt", iso8601_ms(p, t->created_ms), "lastUpdatedAt",
                          iso8601_ms(p, t->updated_ms), "ttlMs", (json_int_t)t->ttl_ms);
    if (*t->status_message) json_object_set_new(j, "statusMessage", json_string(t->status_message));
    if (!gmcp_task_terminal(t->status) && poll_ms > 0)
        json_object_set_new(j, "pollIntervalMs", json_integer(poll_ms));
    if (!detailed) return j;
    {
        const char *name = !strcmp(t->status, GMCP_TASK_INPUT) ? "inputRequests"
            : !strcmp(t->status, GMCP_TASK_COMPLETED)          ? "result"
            : !strcmp(t->status, GMCP_TASK_FAILED)             ? "error"
                                                               : NULL;
        json_t *v = name
            ? json_loads(!strcmp(name, "inputRequests") ? t->inputs : t->outcome, 0, NULL)
            : NULL;
        if (v) json_object_set_new(j, name, v);
    }
    return j;
}
