/* gmcp_jsonrpc.h — JSON-RPC 2.0 message parsing and building (jansson). */
#ifndef GMCP_JSONRPC_H
#define GMCP_JSONRPC_H

#include <apr_pools.h>
#include <jansson.h>

#define GMCP_PARSE_ERROR -32700
#define GMCP_INVALID_REQUEST -32600
#define GMCP_METHOD_NOT_FOUND -32601
#define GMCP_INVALID_PARAMS -32602
#define GMCP_INTERNAL_ERROR -32603
#define GMCP_RESOURCE_NOT_FOUND -32002
#define GMCP_REQUEST_CANCELLED -32800
#define GMCP_SERVER_ERROR -32000

typedef enum {
    GMCP_MSG_INVALID = 0,
    GMCP_MSG_REQUEST,
    GMCP_MSG_NOTIFICATION,
    GMCP_MSG_RESPONSE,
    GMCP_MSG_BATCH
} gmcp_msg_kind;

typedef struct {
    gmcp_msg_kind kind;
    json_t *root;       /* owned: the whole parsed message (NULL on parse error) */
    json_t *id;         /* borrowed; requests and responses */
    const char *method; /* requests and notifications */
    json_t *params;     /* borrowed; object or NULL */
    int error_code;     /* set when kind == INVALID */
    const char *error_msg;
} gmcp_msg;

/* Parse one HTTP body. Always fills `m`; m->root must be released with
 * gmcp_msg_release(). Invalid UTF-8 and syntax errors give -32700, structural
 * errors -32600 (with m->id kept when it was readable). */
void gmcp_msg_parse(apr_pool_t *p, const char *body, apr_size_t len, gmcp_msg *m);
void gmcp_msg_release(gmcp_msg *m);

/* Builders; all return new references. `id` is borrowed (may be NULL → null). */
json_t *gmcp_rpc_result(json_t *id, json_t *result /* stolen */);
json_t *gmcp_rpc_error(json_t *id, int code, const char *message,
                       json_t *data /* stolen, may be NULL */);
json_t *gmcp_rpc_notification(const char *method, json_t *params /* stolen, may be NULL */);
json_t *gmcp_rpc_request(json_t *id /* stolen */, const char *method, json_t *params /* stolen */);

/* Serialise compactly into the pool (UTF-8, no trailing newline). */
const char *gmcp_json_dump(apr_pool_t *p, const json_t *j);
/* Canonical text for an id (string ids are quoted JSON), used as a SQL key. */
const char *gmcp_id_key(apr_pool_t *p, const json_t *id);

/* Small typed getters that tolerate missing keys. */
const char *gmcp_json_str(const json_t *obj, const char *key);
json_t *gmcp_json_obj(const json_t *obj, const char *key);

#endif
