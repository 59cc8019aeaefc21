/* gmcp_tasks.h — MCP tasks (the io.modelcontextprotocol/tasks extension) in SQL.
 *
 * A task is one row of mcp_tasks (sql/<driver>/0011_mcp_tasks.sql): made and committed
 * before its CreateTaskResult is sent, so a tasks/get on any child or node finds it; run
 * by one worker, which holds it by its lease token; read, answered and cancelled by its
 * owner only (another caller's task is "not found", like an unknown id). The input
 * requests and their answers change by compare-and-set on the row's version, so
 * answers given at once through two nodes are both kept, and an answered key leaves
 * `inputs` before tasks/update returns. Shared by the module and gmcpctl; no httpd. */
#ifndef GMCP_TASKS_H
#define GMCP_TASKS_H

#include "gmcp_db.h"
#include "gmcp_sql.h"

#include <jansson.h>

/* The extension's name: in client capabilities (per request) and server/discover. */
#define GMCP_TASKS_EXTENSION "io.modelcontextprotocol/tasks"

#define GMCP_TASK_WORKING "working"
#define GMCP_TASK_INPUT "input_required"
#define GMCP_TASK_COMPLETED "completed"
#define GMCP_TASK_CANCELLED "cancelled"
#define GMCP_TASK_FAILED "failed"

typedef struct {
    const char *id, *owner, *key_id, *tool;
    const char *request; /* JSON text: the tools/call params */
    const char *status, *status_message;
    const char *inputs;  /* JSON object text: outstanding input requests by key */
    const char *answers; /* JSON object text: answers not yet taken by the worker */
    const char *outcome; /* JSON text: the result (completed) or error (failed); "" */
    const char *holder;  /* "" when no worker holds it */
    int cancel;
    apr_int64_t next_input, lease_until, version, created_ms, updated_ms, ttl_ms, expires;
} gmcp_task;

/* Is `status` one a task ends in? */
int gmcp_task_terminal(const char *status);

/* Insert a new task (t->id, owner, key_id, tool, request, holder, lease_until,
 * created_ms and ttl_ms set; it starts working). APR_SUCCESS, APR_EEXIST or GMCP_EDB. */
apr_status_t gmcp_task_create(gmcp_db *db, const gmcp_task *t);

/* The task `id` of `owner` (NULL: any owner, for gmcpctl). APR_ENOENT when there is
 * none or it is another owner's. */
apr_status_t gmcp_task_get(gmcp_db *db, const char *id, const char *owner, gmcp_task *out);

/* tasks/update: the answers in `responses` (an object keyed by input request) to keys
 * that are outstanding move from inputs to answers; other keys are ignored. When no
 * input is left outstanding the task is working again. APR_SUCCESS (also when nothing
 * applied, or the task has ended), APR_ENOENT, GMCP_EDB. */
apr_status_t gmcp_task_answer(gmcp_db *db, const char *id, const char *owner, json_t *responses,
                              apr_int64_t now_ms);

/* tasks/cancel: ask the worker to stop (a task that has ended stays as it is).
 * APR_SUCCESS, APR_ENOENT, GMCP_EDB. */
apr_status_t gmcp_task_cancel(gmcp_db *db, const char *id, const char *owner, apr_int64_t now_ms);

/* ---- the worker's side: each checks that `holder` still holds the task ------------- */

/* Record an input request (method, params: borrowed) under a fresh key (*key): the
 * task is input_required. APR_SUCCESS, APR_ENOENT (not ours any more), GMCP_EDB. */
apr_status_t gmcp_task_ask(gmcp_db *db, const char *id, const char *holder, const char *method,
                           json_t *params, apr_int64_t now_ms, const char **key);

/* The answer to `key`, when it came: *answer (new reference) taken out of the row, or
 * NULL when not yet. *cancel says whether a cancel was asked. APR_SUCCESS, APR_ENOENT,
 * GMCP_EDB. */
apr_status_t gmcp_task_take_answer(gmcp_db *db, const char *id, const char *holder, const char *key,
                                   json_t **answer, int *cancel);

/* Renew the lease to `lease_until` and, when `message` is not NULL, set the status
 * message; *cancel (when not NULL) says whether a cancel was asked. APR_SUCCESS,
 * APR_ENOENT, GMCP_EDB. */
apr_status_t gmcp_task_touch(gmcp_db *db, const char *id, const char *holder, const char *message,
                             apr_int64_t lease_until, apr_int64_t now_ms, int *cancel);

/* Renew the lease of every running task `holder` holds (one process's). */
apr_status_t gmcp_task_renew_all(gmcp_db *db, const char *holder, apr_int64_t lease_until);

/* End the task: completed (outcome: the CallToolResult), failed (outcome: the JSON-RPC
 * error object) or cancelled (outcome NULL). The lease is released. APR_SUCCESS,
 * APR_ENOENT (not ours any more), GMCP_EDB. */
apr_status_t gmcp_task_finish(gmcp_db *db, const char *id, const char *holder, const char *status,
                              json_t *outcome, const char *message, apr_int64_t now_ms);

/* Fail every task that has not ended and whose holder is gone: its lease ran out
 * before `now` (seconds), or `dead(holder)` says its process is gone. *n: how many
 * (with `dry`, only counted). */
apr_status_t gmcp_task_reap(gmcp_db *db, apr_int64_t now, int (*dead)(const char *holder), int dry,
                            int *n);

/* How many tasks gmcp_task_sweep would delete at `now`; -1 when that cannot be read. */
apr_int64_t gmcp_task_expired_count(gmcp_db *db, apr_int64_t now);

/* Delete the tasks past their TTL (expires before `now`, seconds) that have ended (one
 * still running is kept until it ends or is failed). *n: how many. */
apr_status_t gmcp_task_sweep(gmcp_db *db, apr_int64_t now, int *n);

/* The wire form (new reference): the Task fields — taskId, status, statusMessage when
 * set, createdAt, lastUpdatedAt, ttlMs, pollIntervalMs — and, when `detailed`, what
 * tasks/get adds: inputRequests (input_required), result (completed), error (failed). */
json_t *gmcp_task_json(apr_pool_t *p, const gmcp_task *t, int detailed, apr_int64_t poll_ms);

#endif
