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

typedef struct {
    const gmcp_registry *registry;
    int page_size;
    const char *server_name;
    const char *server_version;
    const unsigned char *state_key;   /* HMAC key for MRTR requestState */
    apr_size_t state_key_len;
} gmcp_server;

/* Everything one request's dispatch needs. */
typedef struct {
    apr_pool_t *pool;
    const gmcp_server *srv;
    gmcp_db *db;
    gmcp_session *session;     /* NULL only for initialize */
    const char *principal;
    gmcp_call *call;           /* transport-provided, ops set */
    int stateless;             /* 2026-07-28 rules (no session) */
    /* out */
    const char *new_session_id;/* set by initialize */
    int http_status;           /* stateless: status for this answer (0 = 200) */
} gmcp_rpc_ctx;

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

/* Handle a notification from the client. Returns 0 if accepted. */
int gmcp_mcp_notification(gmcp_rpc_ctx *x, const gmcp_msg *m);

/* The client capability a server→client request method needs ("sampling" for
 * sampling/createMessage, ...), or NULL. */
const char *gmcp_capability_for(const char *method);

/* RFC 5424 level names used by logging/setLevel. -1 for an unknown name. */
int gmcp_log_level_parse(const char *name);
const char *gmcp_log_level_name(gmcp_log_level l);

/* Check a tool's arguments against the top level of its input schema (required
 * properties, property types, additionalProperties:false). NULL when they fit,
 * else a message for an isError result. */
const char *gmcp_validate_arguments(apr_pool_t *p, const json_t *schema, const json_t *args);

#endif
