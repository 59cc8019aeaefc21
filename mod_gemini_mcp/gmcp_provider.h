/* gmcp_provider.h — how tools, resources and prompts reach the MCP layer.
 *
 * A provider is a static table of definitions plus callbacks. Inside httpd a module
 * registers one with
 *     ap_register_provider(p, GMCP_PROVIDER_GROUP, "name", GMCP_PROVIDER_VERSION, &prov);
 * and mod_gemini_mcp collects every registered provider at start-up. Callbacks get a
 * gmcp_call whose operations are function pointers, so a provider module needs no
 * symbol from mod_gemini_mcp itself (only APR and jansson).
 */
#ifndef GMCP_PROVIDER_H
#define GMCP_PROVIDER_H

#include <apr_pools.h>
#include <apr_time.h>
#include <jansson.h>

#define GMCP_PROVIDER_GROUP "gemini_mcp"
#define GMCP_PROVIDER_VERSION "1"

typedef enum {
    GMCP_LOG_DEBUG = 0,
    GMCP_LOG_INFO,
    GMCP_LOG_NOTICE,
    GMCP_LOG_WARNING,
    GMCP_LOG_ERROR,
    GMCP_LOG_CRITICAL,
    GMCP_LOG_ALERT,
    GMCP_LOG_EMERGENCY
} gmcp_log_level;

typedef struct gmcp_call gmcp_call;

/* What gmcp_input() came to: a provider answers each differently (use the answer, return
 * gmcp_input_required(), go without), hence an outcome rather than a status. The values
 * are part of the provider interface. */
typedef enum {
    GMCP_INPUT_FAILED = -1,    /* c->error_message says why */
    GMCP_INPUT_OK = 0,         /* *response holds the client's answer */
    GMCP_INPUT_NEEDED = 1,     /* stateless: recorded; return gmcp_input_required() */
    GMCP_INPUT_UNSUPPORTED = 2 /* the client did not declare that capability */
} gmcp_input_result;

/* What the transport offers to a running call. */
typedef struct {
    /* notifications/progress for the call's progress token (no-op without one). */
    apr_status_t (*progress)(gmcp_call *c, double progress, double total, const char *message);
    /* notifications/message, filtered by the session's logging level. */
    apr_status_t (*log)(gmcp_call *c, gmcp_log_level level, const char *logger,
                        json_t *data /* stolen */);
    /* A server→client request (sampling/createMessage, elicitation/create, ...):
     * blocks until the client answers, the call is cancelled or the timeout hits.
     * On success *result holds a new reference; otherwise *errmsg says why and the
     * status what: APR_ENOTIMPL (this call cannot ask: no stream, stateless, capability not
     * declared), GMCP_EDB, APR_ECONNABORTED (could not send), GMCP_EUPSTREAM (the client
     * answered with an error), GMCP_ECANCELLED, APR_TIMEUP. */
    apr_status_t (*ask)(gmcp_call *c, const char *method, json_t *params /* stolen */,
                        json_t **result, const char **errmsg);
    /* True once the client cancelled the request or went away. */
    int (*cancelled)(gmcp_call *c);
    /* End the HTTP response stream now (the client resumes with GET +
     * Last-Event-ID); later messages and the result go to the event store only. */
    apr_status_t (*detach)(gmcp_call *c);
    /* Ask the client for input in either revision: with a session this is a blocking
     * server→client request; on the stateless revision (2026-07-28) the answer comes
     * from the request's inputResponses[key], or the request is recorded and the
     * tool must return input_required(). */
    gmcp_input_result (*input)(gmcp_call *c, const char *key, const char *method,
                               json_t *params /* stolen */, json_t **response);
    /* An InputRequiredResult for the recorded requests; `state` (stolen, may be NULL)
     * comes back verified in c->state on the client's retry. */
    json_t *(*input_required)(gmcp_call *c, json_t *state);
    /* A database handle (a gmcp_db *) for a short section — never held across a call
     * to another service; NULL with *why set when the database is unusable. */
    void *(*db_open)(gmcp_call *c, const char **why);
    void (*db_close)(gmcp_call *c);
    /* Optional (may be NULL): a call to Gemini made for this request finished — its
     * final HTTP status (0: no answer), time, retries and the tokens it used. Feeds
     * metrics, usage and the per-key token limits. */
    void (*gemini_observed)(gmcp_call *c, int http_status, apr_interval_time_t latency, int retries,
                            apr_int64_t prompt_tokens, apr_int64_t output_tokens);
    /* Optional: the caller's own usage, limits and remaining quota (new ref), or NULL
     * with *why set. */
    json_t *(*usage_report)(gmcp_call *c, const char **why);
} gmcp_call_ops;

struct gmcp_call {
    apr_pool_t *pool; /* lives for the request */
    const gmcp_call_ops *ops;
    void *transport;              /* the transport's own state */
    const char *principal;        /* who is calling (API key id, r->user, or default) */
    const char *session_id;       /* MCP session, NULL on stateless requests */
    json_t *client_caps;          /* the client's declared capabilities (borrowed) */
    json_t *progress_token;       /* borrowed, NULL when none */
    apr_interval_time_t deadline; /* absolute apr_time_t by which the call must end */
    /* 2026-07-28 (stateless) requests */
    int stateless;
    const char *name;        /* tool or prompt being served */
    json_t *input_responses; /* borrowed: the retry's inputResponses, or NULL */
    json_t *state;           /* borrowed: verified requestState payload, or NULL */
    json_t *pending_inputs;  /* owned by the transport: input requests recorded */
    /* A provider reports a protocol error (JSON-RPC error instead of a result)
     * by returning NULL with these set (error_data: new reference or NULL). */
    int error_code;
    const char *error_message;
    json_t *error_data;
};

/* A tool. input_schema etc. are JSON texts, parsed once at start-up. */
#define GMCP_TOOL_STREAMS 0x1       /* may notify or ask the client: answer as SSE */
#define GMCP_TOOL_SPENDS_TOKENS 0x2 /* calls Gemini for tokens: token limits and quotas apply */
/* May run as a task (io.modelcontextprotocol/tasks, 2026-07-28) when the request declares
 * the extension: the call then runs on a worker thread after its answer was sent, and
 * c->ops->input waits for tasks/update; only as a task (-32021 without the extension). */
#define GMCP_TOOL_TASK 0x4
#define GMCP_TOOL_TASK_REQUIRED 0x8

typedef json_t *(*gmcp_tool_fn)(gmcp_call *c, json_t *arguments /* object, borrowed */,
                                void *baton);
typedef struct {
    const char *name;
    const char *title;
    const char *description;
    const char *input_schema;
    const char *output_schema; /* may be NULL */
    const char *annotations;   /* may be NULL */
    unsigned flags;
    gmcp_tool_fn call; /* returns a CallToolResult (new ref) */
    /* Optional, for GMCP_TOOL_TASK: runs in the request before its task is made, for the
     * input rounds (MRTR) that must come first: an InputRequiredResult to answer now, or
     * NULL to go on (the task's call then finds the answers in c->input_responses). */
    gmcp_tool_fn prepare;
} gmcp_tool;

/* Static resources and URI templates (RFC 6570 level 1: "{var}" segments). */
typedef json_t *(*gmcp_read_fn)(gmcp_call *c, const char *uri, json_t *vars /* object */,
                                void *baton);
typedef struct {
    const char *uri;
    const char *name;
    const char *title;
    const char *description;
    const char *mime_type;
    gmcp_read_fn read; /* returns {"contents":[...]} (new ref), NULL = not found */
} gmcp_resource;

typedef struct {
    const char *uri_template;
    const char *name;
    const char *title;
    const char *description;
    const char *mime_type;
    gmcp_read_fn read;
} gmcp_resource_template;

typedef json_t *(*gmcp_prompt_fn)(gmcp_call *c, json_t *arguments, void *baton);
typedef struct {
    const char *name;
    const char *title;
    const char *description;
    const char *arguments; /* JSON text: array of {name, description, required} */
    gmcp_prompt_fn get;    /* returns GetPromptResult (new ref) */
} gmcp_prompt;

/* completion/complete: `ref` is the request's ref object; returns a JSON array of
 * string values (new ref) or NULL when the provider has nothing for this ref. */
typedef json_t *(*gmcp_complete_fn)(gmcp_call *c, json_t *ref, const char *arg_name,
                                    const char *arg_value, json_t *context_args, void *baton);

typedef struct gmcp_provider {
    const char *name;
    void *baton;
    const gmcp_tool *tools; /* each array ends with a NULL name */
    const gmcp_resource *resources;
    const gmcp_resource_template *templates;
    const gmcp_prompt *prompts;
    gmcp_complete_fn complete;
} gmcp_provider;

/* Helpers for providers (header-only so provider modules need no core symbol). */
static inline apr_status_t gmcp_progress(gmcp_call *c, double progress, double total,
                                         const char *msg)
{
    return c->ops->progress(c, progress, total, msg);
}
static inline apr_status_t gmcp_log(gmcp_call *c, gmcp_log_level l, const char *logger,
                                    json_t *data)
{
    return c->ops->log(c, l, logger, data);
}
static inline apr_status_t gmcp_ask(gmcp_call *c, const char *method, json_t *params,
                                    json_t **result, const char **errmsg)
{
    return c->ops->ask(c, method, params, result, errmsg);
}
static inline int gmcp_cancelled(gmcp_call *c) { return c->ops->cancelled(c); }
static inline apr_status_t gmcp_detach(gmcp_call *c) { return c->ops->detach(c); }
static inline gmcp_input_result gmcp_input(gmcp_call *c, const char *key, const char *method,
                                           json_t *params, json_t **response)
{
    return c->ops->input(c, key, method, params, response);
}
static inline json_t *gmcp_input_required(gmcp_call *c, json_t *state)
{
    return c->ops->input_required(c, state);
}

/* A CallToolResult with one text item; isError when is_error. New reference. */
static inline json_t *gmcp_text_result(const char *text, int is_error)
{
    json_t *r = json_pack("{s:[{s:s, s:s}]}", "content", "type", "text", "text", text);
    if (is_error) json_object_set_new(r, "isError", json_true());
    return r;
}

#endif
