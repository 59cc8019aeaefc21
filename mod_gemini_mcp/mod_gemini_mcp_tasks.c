/* mod_gemini_mcp_tasks.c — MCP tasks (io.modelcontextprotocol/tasks) run by worker
 * threads of each child (mod_gemini_mcp_tasks.h).
 *
 * A tools/call made a task is written to mcp_tasks (committed) with this child's lease
 * token as holder before its CreateTaskResult is sent, then queued to the child's
 * thread pool. The worker runs the tool with a gmcp_call of its own: progress becomes
 * the statusMessage, an input request is written to the row and answered through
 * tasks/update on any node, cancellation is the row's flag, the tool timeout ends it as
 * failed. A thread of the child renews the leases of the tasks it holds and fails,
 * cluster-wide, the tasks whose process is gone (killed, or its node lost) — none is
 * left working for ever. When the child ends (a graceful restart too), its pool's
 * pre-cleanup waits for the tasks it runs; those still queued are failed at once.
 *
 * Every database section here has its own connection and pool, so a tool may report
 * progress or ask from several threads, and a long wait does not grow any pool. */
#include "mod_gemini_mcp_tasks.h"
#include "mod_gemini_mcp_child_thread.h"
#include "mod_gemini_mcp_config.h"
#include "mod_gemini_mcp_db.h"
#include "gmcp_lease.h"
#include "gmcp_stateless.h"
#include "gmcp_tasks.h"
#include "gmcp_util.h"

#include <http_log.h>
#include <apr_atomic.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_thread_pool.h>

#define LEASE_SECS 30
#define RENEW_EVERY apr_time_from_sec(5)
#define REAP_EVERY_ROUNDS 3 /* of RENEW_EVERY */
#define ANSWER_POLL apr_time_from_msec(200)
#define CANCEL_CHECK_EVERY apr_time_from_msec(250)
#define PROGRESS_EVERY apr_time_from_msec(500)
#define QUEUE_PER_WORKER 8 /* tasks queued or running per worker thread, at most */
#define POLL_MS 500

static server_rec *g_server;
static int g_on;                     /* GeminiMCPTaskWorkers is not 0 */
static apr_thread_pool_t *g_threads; /* NULL: none could be made in this process */
static const char *g_holder;         /* this child's lease token */
static apr_uint32_t g_active, g_active_max;
static apr_int64_t g_ttl_ms;
static apr_interval_time_t g_timeout;
static gmcp_child_thread g_renewer;
/* The tasks this child runs or has queued: what the renewer renews, and what is failed
 * at once when the child ends before running them. */
static apr_thread_mutex_t *g_runs_mu;
static apr_hash_t *g_runs;

typedef struct {
    apr_pool_t *pool; /* the task's own, destroyed when it ends */
    gmcp_call call;
    const gmcp_tool_entry *tool;
    json_t *params;     /* the tools/call params */
    json_t *state;      /* the verified requestState payload, or NULL */
    char id[32];        /* outside the pool: the run table's key */
    apr_pool_t *dbpool; /* the tool's own db_open section */
    ap_dbd_t *dbd;
    gmcp_db db;
    apr_time_t next_cancel_check, next_progress;
    volatile int cancelled, timed_out;
    const char *cancel_why;
} task_run;

/* ---- database sections ---------------------------------------------------------------- */

typedef struct {
    apr_pool_t *pool;
    ap_dbd_t *dbd;
    gmcp_db db;
} section;

static gmcp_db *section_open(section *s)
{
    const char *why;
    if (apr_pool_create(&s->pool, NULL) != APR_SUCCESS) return NULL;
    if (!(s->dbd = gmcp_db_open_server(g_server, s->pool, &s->db, &why))) {
        apr_pool_destroy(s->pool);
        return NULL;
    }
    return &s->db;
}

static void section_close(section *s)
{
    gmcp_db_close_server(g_server, s->dbd);
    apr_pool_destroy(s->pool);
}

/* ---- the run table ---------------------------------------------------------------------- */

static void runs_set(task_run *t, int add)
{
    apr_thread_mutex_lock(g_runs_mu);
    apr_hash_set(g_runs, t->id, APR_HASH_KEY_STRING, add ? t : NULL);
    apr_thread_mutex_unlock(g_runs_mu);
}

/* The ids in the table, copied into p. */
static apr_array_header_t *runs_ids(apr_pool_t *p)
{
    apr_array_header_t *ids = apr_array_make(p, 8, sizeof(const char *));
    apr_hash_index_t *hi;
    apr_thread_mutex_lock(g_runs_mu);
    for (hi = apr_hash_first(p, g_runs); hi; hi = apr_hash_next(hi))
        APR_ARRAY_PUSH(ids, const char *) = apr_pstrdup(p, apr_hash_this_key(hi));
    apr_thread_mutex_unlock(g_runs_mu);
    return ids;
}

/* ---- the worker's gmcp_call ----------------------------------------------------------- */

/* The tool's own section (a provider's db_open/db_close pair, on its main thread). */
static void *op_db_open(gmcp_call *c, const char **why)
{
    task_run *t = c->transport;
    if (t->dbd) return &t->db;
    if (apr_pool_create(&t->dbpool, NULL) != APR_SUCCESS) return NULL;
    if (!(t->dbd = gmcp_db_open_server(g_server, t->dbpool, &t->db, why))) {
        if (!*why) *why = "the database is unavailable";
        apr_pool_destroy(t->dbpool);
        return NULL;
    }
    return &t->db;
}

static void op_db_close(gmcp_call *c)
{
    task_run *t = c->transport;
    if (!t->dbd) return;
    gmcp_db_close_server(g_server, t->dbd);
    t->dbd = NULL;
    apr_pool_destroy(t->dbpool);
}

static void stop_run(task_run *t, const char *why)
{
    if (t->cancelled) return;
    t->cancel_why = why;
    t->cancelled = 1;
}

/* Renew the lease, set the status message (NULL: keep it), and learn of a cancel. */
static void touch(task_run *t, const char *message)
{
    section sec;
    gmcp_db *db = section_open(&sec);
    int cancel = 0;
    apr_status_t rv;
    if (!db) return;
    rv = gmcp_task_touch(db, t->id, g_holder, message, apr_time_sec(apr_time_now()) + LEASE_SECS,
                         apr_time_as_msec(apr_time_now()), &cancel);
    section_close(&sec);
    if (rv == APR_ENOENT)
        stop_run(t, "the task was taken over"); /* failed as orphaned, or gone */
    else if (rv == APR_SUCCESS && cancel)
        stop_run(t, "the task was cancelled");
}

static int op_cancelled(gmcp_call *c)
{
    task_run *t = c->transport;
    if (!t->cancelled && apr_time_now() >= c->deadline) {
        t->timed_out = 1;
        stop_run(t, "the tool ran out of time (GeminiMCPToolTimeout)");
    }
    if (!t->cancelled && apr_time_now() >= t->next_cancel_check) {
        t->next_cancel_check = apr_time_now() + CANCEL_CHECK_EVERY;
        touch(t, NULL);
    }
    return t->cancelled;
}

/* The status message, written twice a second at most. */
static apr_status_t op_progress(gmcp_call *c, double progress, double total, const char *message)
{
    task_run *t = c->transport;
    char buf[256];
    if (apr_time_now() < t->next_progress) return APR_SUCCESS;
    if (message)
        apr_cpystrn(buf, message, sizeof(buf));
    else if (total > 0)
        apr_snprintf(buf, sizeof(buf), "%.0f of %.0f", progress, total);
    else
        apr_snprintf(buf, sizeof(buf), "%.0f", progress);
    touch(t, buf);
    t->next_progress = apr_time_now() + PROGRESS_EVERY;
    t->next_cancel_check = apr_time_now() + CANCEL_CHECK_EVERY;
    return APR_SUCCESS;
}

/* A task's messages have no stream to go to (and must not go to a listen stream). */
static apr_status_t op_log(gmcp_call *c, gmcp_log_level level, const char *logger, json_t *data)
{
    (void)c;
    (void)level;
    (void)logger;
    json_decref(data);
    return APR_SUCCESS;
}

static apr_status_t op_ask(gmcp_call *c, const char *method, json_t *params, json_t **result,
                           const char **errmsg)
{
    (void)c;
    (void)method;
    json_decref(params);
    *result = NULL;
    *errmsg = "a task asks its client through input requests (tasks/update)";
    return APR_ENOTIMPL;
}

static apr_status_t op_detach(gmcp_call *c)
{
    (void)c;
    return APR_SUCCESS;
}

/* Ask for input and wait for the answer, each poll in a section of its own. */
static gmcp_input_result ask_and_wait(task_run *t, const char *method, json_t *params,
                                      json_t **response)
{
    section sec;
    gmcp_db *db;
    char tkey[32] = "";
    const char *key = NULL;
    apr_status_t rv;
    if ((db = section_open(&sec)) != NULL) {
        rv = gmcp_task_ask(db, t->id, g_holder, method, params, apr_time_as_msec(apr_time_now()),
                           &key);
        if (rv == APR_SUCCESS && key) apr_cpystrn(tkey, key, sizeof(tkey));
        if (rv == APR_ENOENT) stop_run(t, "the task was taken over");
        section_close(&sec);
    }
    if (!*tkey) return GMCP_INPUT_FAILED;
    while (!op_cancelled(&t->call)) {
        int cancel = 0;
        apr_sleep(ANSWER_POLL);
        if (!(db = section_open(&sec))) continue;
        rv = gmcp_task_take_answer(db, t->id, g_holder, tkey, response, &cancel);
        section_close(&sec);
        if (rv == APR_SUCCESS && *response && !json_is_object(*response)) {
            json_decref(*response); /* not an answer: wait for one */
            *response = NULL;
        }
        if (rv == APR_SUCCESS && *response) return GMCP_INPUT_OK;
        if (rv == APR_ENOENT) stop_run(t, "the task was taken over");
        if (cancel) stop_run(t, "the task was cancelled");
    }
    return GMCP_INPUT_FAILED;
}

/* An input request: answered in the request already (an MRTR round before the task was
 * made), else written to the row and waited for until answered, cancelled or out of
 * time. As on a request, only what the client declared it answers is asked. */
static gmcp_input_result op_input(gmcp_call *c, const char *key, const char *method, json_t *params,
                                  json_t **response)
{
    task_run *t = c->transport;
    json_t *given = c->input_responses ? json_object_get(c->input_responses, key) : NULL;
    const char *cap = gmcp_capability_for(method);
    gmcp_input_result rv;
    *response = NULL;
    if (cap && !json_object_get(c->client_caps, cap)) {
        json_decref(params);
        return GMCP_INPUT_UNSUPPORTED;
    }
    if (json_is_object(given)) {
        json_decref(params);
        *response = json_incref(given);
        return GMCP_INPUT_OK;
    }
    rv = ask_and_wait(t, method, params, response);
    json_decref(params);
    if (rv != GMCP_INPUT_OK)
        c->error_message = t->cancel_why ? t->cancel_why : "the task store is unavailable";
    return rv;
}

static json_t *op_input_required(gmcp_call *c, json_t *state)
{
    json_decref(state);
    c->error_code = GMCP_INTERNAL_ERROR;
    c->error_message = "a task cannot answer with input_required";
    return NULL;
}

static const gmcp_call_ops TASK_OPS = {
    op_progress,       op_log,     op_ask,      op_cancelled, op_detach, op_input,
    op_input_required, op_db_open, op_db_close, NULL,         NULL};

/* ---- running ---------------------------------------------------------------------------- */

static json_t *rpc_error_of(gmcp_call *c, const char *message)
{
    json_t *e = json_pack("{s:i, s:s}", "code", c->error_code ? c->error_code : GMCP_INTERNAL_ERROR,
                          "message", message);
    if (c->error_data) json_object_set_new(e, "data", c->error_data);
    c->error_data = NULL;
    return e;
}

/* The task's end written: failed (a JSON-RPC error, or out of time), cancelled, or
 * completed with exactly what the call would have answered. A database away leaves
 * the lease to run out; the task is then failed as orphaned. */
static void finish(task_run *t, json_t *result)
{
    gmcp_call *c = &t->call;
    const char *status, *message = NULL;
    json_t *outcome = NULL;
    gmcp_db *db;
    section sec;
    int tries;
    if (t->timed_out || (!t->cancelled && !result)) {
        status = GMCP_TASK_FAILED;
        message = t->timed_out ? t->cancel_why
            : c->error_message ? c->error_message
                               : "Internal error";
        outcome = rpc_error_of(c, message);
    }
    else if (t->cancelled) {
        status = GMCP_TASK_CANCELLED;
        message = t->cancel_why;
    }
    else {
        status = GMCP_TASK_COMPLETED;
        outcome = json_incref(result);
        if (!json_object_get(outcome, "resultType"))
            json_object_set_new(outcome, "resultType", json_string("complete"));
    }
    for (tries = 0; tries < 3; tries++) {
        apr_status_t rv = APR_EGENERAL;
        if ((db = section_open(&sec)) != NULL) {
            rv = gmcp_task_finish(db, t->id, g_holder, status, outcome, message,
                                  apr_time_as_msec(apr_time_now()));
            section_close(&sec);
        }
        if (rv == APR_SUCCESS || rv == APR_ENOENT) break;
        apr_sleep(apr_time_from_sec(1));
    }
    json_decref(outcome);
}

static void run_free(task_run *t)
{
    runs_set(t, 0); /* a finish that could not be written: the lease runs out */
    json_decref(t->params);
    json_decref(t->state);
    apr_pool_destroy(t->pool);
    apr_atomic_dec32(&g_active);
}

static void *APR_THREAD_FUNC run_task(apr_thread_t *th, void *data)
{
    task_run *t = data;
    json_t *args = json_object_get(t->params, "arguments"), *owned = NULL, *result;
    (void)th;
    if (!json_is_object(args)) args = owned = json_object();
    t->call.deadline = apr_time_now() + g_timeout;
    result = t->tool->def->call(&t->call, args, t->tool->provider->baton);
    finish(t, result);
    json_decref(result);
    json_decref(owned);
    run_free(t);
    return NULL;
}

static json_t *refuse(gmcp_call *c, const char *message)
{
    c->error_code = GMCP_INTERNAL_ERROR;
    c->error_message = message;
    return NULL;
}

/* The row of a new task, committed through the request's own handle. */
static apr_status_t insert_row(gmcp_call *c, const gmcp_tool_entry *tool, json_t *params,
                               const char *id, gmcp_task *row)
{
    const char *why = NULL;
    gmcp_db *db;
    apr_status_t rv;
    memset(row, 0, sizeof(*row));
    row->id = id;
    row->owner = row->key_id = c->principal;
    row->tool = tool->def->name;
    row->request = gmcp_json_dump(c->pool, params);
    row->holder = g_holder;
    row->lease_until = apr_time_sec(apr_time_now()) + LEASE_SECS;
    row->created_ms = row->updated_ms = apr_time_as_msec(apr_time_now());
    row->ttl_ms = g_ttl_ms;
    row->status = GMCP_TASK_WORKING;
    row->status_message = "";
    if (!(db = c->ops->db_open(c, &why))) return GMCP_EDB;
    rv = gmcp_task_create(db, row);
    c->ops->db_close(c);
    return rv;
}

/* gmcp_task_runner.start: the row committed, the run queued, the CreateTaskResult. */
static json_t *start_task(gmcp_call *c, const gmcp_tool_entry *tool, json_t *params)
{
    apr_pool_t *p;
    task_run *t;
    gmcp_task row;
    const char *id = gmcp_random_id(c->pool, 16);
    json_t *out;

    if (!g_threads) return refuse(c, "Internal error: tasks cannot run in this server process");
    if (!id) return refuse(c, "Internal error: no task id could be made");
    if (apr_atomic_inc32(&g_active) >= g_active_max) {
        apr_atomic_dec32(&g_active);
        return refuse(c, "Internal error: too many tasks run here; try again");
    }
    if (insert_row(c, tool, params, id, &row) != APR_SUCCESS) {
        apr_atomic_dec32(&g_active);
        return refuse(c, "Internal error: the task store is unavailable");
    }
    out = gmcp_task_json(c->pool, &row, 0, POLL_MS);
    json_object_set_new(out, "resultType", json_string("task"));

    apr_pool_create(&p, NULL);
    t = apr_pcalloc(p, sizeof(*t));
    t->pool = p;
    t->tool = tool;
    apr_cpystrn(t->id, id, sizeof(t->id));
    t->params = json_deep_copy(params);
    t->state = c->state ? json_deep_copy(c->state) : NULL;
    t->call.pool = p;
    t->call.ops = &TASK_OPS;
    t->call.transport = t;
    t->call.principal = apr_pstrdup(p, c->principal);
    t->call.client_caps = gmcp_json_obj(gmcp_json_obj(t->params, "_meta"), GMCP_META_CAPS);
    t->call.stateless = 1;
    t->call.name = tool->def->name;
    t->call.input_responses = gmcp_json_obj(t->params, "inputResponses");
    t->call.state = t->state;
    t->call.deadline = apr_time_now() + g_timeout;
    t->next_cancel_check = apr_time_now() + CANCEL_CHECK_EVERY;
    runs_set(t, 1);
    /* Every thread exists from the start: a push fails only before queueing. */
    if (apr_thread_pool_push(g_threads, run_task, t, APR_THREAD_TASK_PRIORITY_NORMAL, NULL)
        != APR_SUCCESS) {
        t->call.error_message = "the task could not be started";
        finish(t, NULL);
        run_free(t);
    }
    return out;
}

static const gmcp_task_runner RUNNER = {start_task, POLL_MS};

const gmcp_task_runner *gmcp_tasks_runner(void) { return g_on ? &RUNNER : NULL; }

/* ---- leases and orphans --------------------------------------------------------------- */

static void renew_and_reap(int reap)
{
    apr_pool_t *p;
    section sec;
    gmcp_db *db;
    apr_array_header_t *ids;
    apr_int64_t until = apr_time_sec(apr_time_now()) + LEASE_SECS;
    int i, n = 0;
    if (apr_pool_create(&p, NULL) != APR_SUCCESS) return;
    ids = runs_ids(p);
    if ((db = section_open(&sec)) != NULL) {
        for (i = 0; i < ids->nelts; i++)
            gmcp_task_touch(db, APR_ARRAY_IDX(ids, i, const char *), g_holder, NULL, until,
                            apr_time_as_msec(apr_time_now()), NULL);
        if (reap
            && gmcp_task_reap(db, apr_time_sec(apr_time_now()), gmcp_lease_holder_dead, 0, &n)
                == APR_SUCCESS
            && n)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, g_server,
                         GMCP_LOGNO(0188) "gemini_mcp: %d task(s) failed: the process running "
                                          "them stopped",
                         n);
        section_close(&sec);
    }
    apr_pool_destroy(p);
}

static void *APR_THREAD_FUNC renewer(apr_thread_t *th, void *data)
{
    int round = 0;
    (void)th;
    (void)data;
    apr_thread_mutex_lock(g_renewer.mu);
    while (!g_renewer.stop) {
        apr_thread_cond_timedwait(g_renewer.cv, g_renewer.mu, RENEW_EVERY);
        if (g_renewer.stop) break;
        apr_thread_mutex_unlock(g_renewer.mu);
        renew_and_reap(++round % REAP_EVERY_ROUNDS == 0);
        apr_thread_mutex_lock(g_renewer.mu);
    }
    apr_thread_mutex_unlock(g_renewer.mu);
    return NULL; /* not apr_thread_exit(): see gmcp_child_thread_start */
}

/* A pre-cleanup of the child pool, run before the renewer's: the running tasks finish,
 * their leases still renewed, before the child and mod_dbd go; the ones still queued
 * (the thread pool drops them) are failed now. */
static apr_status_t stop_workers(void *d)
{
    apr_hash_index_t *hi;
    apr_pool_t *p;
    (void)d;
    if (!g_threads) return APR_SUCCESS;
    apr_thread_pool_destroy(g_threads);
    g_threads = NULL;
    if (apr_pool_create(&p, NULL) != APR_SUCCESS) return APR_SUCCESS;
    for (hi = apr_hash_first(p, g_runs); hi; hi = apr_hash_next(hi)) {
        task_run *t = apr_hash_this_val(hi);
        t->call.error_message = "the server process stopped before running this task; call "
                                "the tool again";
        finish(t, NULL);
    }
    apr_pool_destroy(p);
    return APR_SUCCESS;
}

void gmcp_tasks_child_init(apr_pool_t *pchild, server_rec *s)
{
    const gmcp_srv_conf *c = gmcp_config_srv(s);
    int n = gmcp_conf_task_workers(c);
    g_server = s;
    g_threads = NULL;
    g_active = 0;
    g_on = n > 0;
    if (!g_on) return;
    g_ttl_ms = gmcp_conf_task_ttl(c) * 1000;
    g_timeout = gmcp_conf_tool_timeout(c);
    g_active_max = (apr_uint32_t)n * QUEUE_PER_WORKER;
    g_holder = gmcp_lease_token(pchild);
    g_runs = apr_hash_make(pchild);
    if (!g_holder
        || apr_thread_mutex_create(&g_runs_mu, APR_THREAD_MUTEX_DEFAULT, pchild) != APR_SUCCESS
        || apr_thread_pool_create(&g_threads, (apr_size_t)n, (apr_size_t)n, pchild)
            != APR_SUCCESS) {
        g_threads = NULL;
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     GMCP_LOGNO(0189) "gemini_mcp: cannot start the task workers: tools/call "
                                      "that would make a task fail in this process");
        return;
    }
    apr_thread_pool_idle_max_set(g_threads, (apr_size_t)n);
    if (gmcp_child_thread_start(&g_renewer, pchild, renewer) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     GMCP_LOGNO(0190) "gemini_mcp: cannot start the thread that renews task "
                                      "leases: tasks longer than %d s are failed as orphaned",
                     LEASE_SECS);
    /* After the renewer's: pre-cleanups run last registered first. */
    apr_pool_pre_cleanup_register(pchild, NULL, stop_workers);
}
