/* gmcp_mcp.h — MCP method dispatch (revision 2025-11-25 and its predecessors).
 *
 * Transport-neutral: the HTTP glue parses headers, owns the response stream and hands
 * each JSON-RPC message here together with a gmcp_call whose ops reach the client. */
#ifndef GMCP_MCP_H
#define GMCP_MCP_H

#include <apr_pools.h>
#include <jansson.h>
#include "gmcp_db.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_provider.h"
#include "gmcp_registry.h"
#include "gmcp_store.h"

#define GMCP_LATEST_SESSION_VERSION "2025-11-25"

/* Tasks (io.modelcontextprotocol/tasks), provided by the transport that can run them. */
typedef struct {
    /* Make a task of the tools/call `params` of tool `t` (its arguments checked) and
     * start it: the CreateTaskResult (new ref), or NULL with c->error_code and
     * c->error_message set. */
    json_t *(*start)(gmcp_call *c, const gmcp_tool_entry *t, json_t *params);
    apr_int64_t poll_ms; /* the pollIntervalMs told to clients */
} gmcp_task_runner;

typedef struct {
    const gmcp_registry *registry;
    const gmcp_task_runner *tasks; /* NULL: no tasks */
    int page_size;
    const char *server_name;
    const char *server_version;
    const unsigned char *state_key; /* HMAC key for MRTR requestState */
    apr_size_t state_key_len;
} gmcp_server;

/* Everything one request's dispatch needs. */
typedef struct {
    apr_pool_t *pool;
    const gmcp_server *srv;
    gmcp_db *db;
    gmcp_session *session; /* NULL only for initialize */
    const char *principal;
    gmcp_call *call; /* transport-provided, ops set */
    int stateless;   /* 2026-07-28 rules (no session) */
    /* out */
    const char *new_session_id; /* set by initialize */
    int http_status;            /* stateless: status for this answer (0 = 200) */
} gmcp_rpc_ctx;

/* ---- the method table ------------------------------------------------------------- */

/* What a method is and in which revisions it exists (gmcp_method.flags). */
#define GMCP_METHOD_NOTIFICATION 0x01 /* a client notification: never answered */
#define GMCP_METHOD_BEFORE_SESSION \
    0x02                                /* runs before there is a session (initialize
                                          * opens one); every other request of the
                                          * session revisions needs its session */
#define GMCP_METHOD_SESSION_ONLY 0x04   /* a request 2026-07-28 removed (answered 404) */
#define GMCP_METHOD_STATELESS_ONLY 0x08 /* a request only 2026-07-28 defines */
#define GMCP_METHOD_MRTR \
    0x10                           /* 2026-07-28 multi-round-trip: inputResponses and
                                          * requestState, bound to the target's name */
#define GMCP_METHOD_CACHEABLE 0x20 /* 2026-07-28 results carry ttlMs and cacheScope */
#define GMCP_METHOD_STORES 0x40    /* its handler uses gmcp_rpc_ctx.db (writes a session's rows) */
#define GMCP_METHOD_CHANGES_SESSION \
    0x80 /* it changes the session row: answered once no cached copy of the old row is
          * served anywhere (gmcp_session_cache.h) */

/* Where a listing's entries are in the registry (gmcp_mcp.c). */
typedef struct gmcp_listing gmcp_listing;

/* One MCP method the server knows. A request is served by `listing` (pages from the
 * registry's cache) or `request`; one with neither is served by the transport
 * (subscriptions/listen). A notification without `notify` needs no action. */
typedef struct {
    const char *name;
    unsigned flags;
    const gmcp_listing *listing;
    json_t *(*request)(gmcp_rpc_ctx *x, const gmcp_msg *m);
    apr_status_t (*notify)(gmcp_rpc_ctx *x, const gmcp_msg *m); /* as gmcp_mcp_notification */
    /* The params member naming what the request acts on ("name", "uri"): the
     * 2026-07-28 Mcp-Name header and the requestState binding. NULL: none. */
    const char *target;
    int ttl_ms; /* GMCP_METHOD_CACHEABLE: ttlMs of its results */
} gmcp_method;

/* The method `name` (as the table spells it), or NULL when the server knows none. */
const gmcp_method *gmcp_mcp_method(const char *name);

/* Is this protocol version one we speak with sessions? */
int gmcp_version_supported(const char *version);
/* Does this revision define the SSE priming event (an id and `retry` with empty data,
 * 2025-11-25 on)? Clients of older revisions parse empty data as JSON and fail. */
int gmcp_version_has_priming(const char *version);
/* Comma-separated list of supported versions (for error messages). */
const char *gmcp_supported_versions(void);

/* Would answering this request involve notifications or client requests, so that it
 * should be answered as an SSE stream? */
int gmcp_mcp_wants_stream(const gmcp_server *srv, const gmcp_msg *m);

/* Handle a request: returns the JSON-RPC response (result or error; new ref), or NULL
 * when the request was cancelled and must not be answered. */
json_t *gmcp_mcp_request(gmcp_rpc_ctx *x, const gmcp_msg *m);

/* The same, serialized: NULL when cancelled. Listings come from a per-process cache of
 * serialized pages, so the hot path does no JSON building. */
const char *gmcp_mcp_request_text(gmcp_rpc_ctx *x, const gmcp_msg *m);

/* Handle a notification from the client: APR_SUCCESS when accepted (also one that needs
 * no action); APR_EINVAL when its params are unusable; GMCP_EDB. Never answered. */
apr_status_t gmcp_mcp_notification(gmcp_rpc_ctx *x, const gmcp_msg *m);

/* The client capability a server→client request method needs ("sampling" for
 * sampling/createMessage, ...), or NULL. */
const char *gmcp_capability_for(const char *method);

/* RFC 5424 level names used by logging/setLevel: the level (a gmcp_log_level value), or
 * -1 for an unknown name (a lookup, not a status). */
int gmcp_log_level_parse(const char *name);
const char *gmcp_log_level_name(gmcp_log_level l);

/* Check a tool's arguments against the top level of its input schema (required
 * properties, property types, additionalProperties:false). NULL when they fit,
 * else a message for an isError result. */
const char *gmcp_validate_arguments(apr_pool_t *p, const json_t *schema, const json_t *args);

#endif
