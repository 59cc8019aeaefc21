/* gmcp_jsonrpc.c — JSON-RPC 2.0 framing on top of jansson. */
#include "gmcp_jsonrpc.h"
#include "gmcp_util.h"

#include <string.h>
#include <apr_strings.h>

static void invalid(gmcp_msg *m, int code, const char *msg)
{
    m->kind = GMCP_MSG_INVALID;
    m->error_code = code;
    m->error_msg = msg;
}

static int valid_id(const json_t *id)
{
    /* MCP: ids are strings or integers, never null. */
    return json_is_string(id) || json_is_integer(id);
}

void gmcp_msg_parse(apr_pool_t *p, const char *body, apr_size_t len, gmcp_msg *m)
{
    json_error_t err;
    json_t *root, *jv, *id, *method, *params;
    int has_result, has_error;

    memset(m, 0, sizeof(*m));
    if (!gmcp_utf8_valid(body, len)) {
        invalid(m, GMCP_PARSE_ERROR, "Parse error: body is not valid UTF-8");
        return;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!root) {
        invalid(m, GMCP_PARSE_ERROR,
                apr_psprintf(p, "Parse error: %s at line %d column %d", err.text, err.line,
                             err.column));
        return;
    }
    m->root = root;
    if (json_is_array(root)) {
        m->kind = GMCP_MSG_BATCH;
        m->error_code = GMCP_INVALID_REQUEST;
        m->error_msg = "JSON-RPC batches are not supported (removed in MCP 2025-06-18)";
        return;
    }
    if (!json_is_object(root)) {
        invalid(m, GMCP_INVALID_REQUEST, "Invalid Request: message must be a JSON object");
        return;
    }
    id = json_object_get(root, "id");
    if (id && valid_id(id)) m->id = id;
    jv = json_object_get(root, "jsonrpc");
    if (!json_is_string(jv) || strcmp(json_string_value(jv), "2.0") != 0) {
        invalid(m, GMCP_INVALID_REQUEST, "Invalid Request: \"jsonrpc\" must be \"2.0\"");
        return;
    }
    if (id && !valid_id(id)) {
        invalid(m, GMCP_INVALID_REQUEST, "Invalid Request: \"id\" must be a string or an integer");
        return;
    }
    method = json_object_get(root, "method");
    params = json_object_get(root, "params");
    has_result = json_object_get(root, "result") != NULL;
    has_error = json_object_get(root, "error") != NULL;

    if (method) {
        if (!json_is_string(method) || !*json_string_value(method)) {
            invalid(m, GMCP_INVALID_REQUEST,
                    "Invalid Request: \"method\" must be a non-empty string");
            return;
        }
        if (has_result || has_error) {
            invalid(m, GMCP_INVALID_REQUEST,
                    "Invalid Request: a request cannot carry result or error");
            return;
        }
        if (params && !json_is_object(params)) {
            invalid(m, GMCP_INVALID_REQUEST, "Invalid Request: \"params\" must be an object");
            return;
        }
        m->method = json_string_value(method);
        m->params = params;
        m->kind = id ? GMCP_MSG_REQUEST : GMCP_MSG_NOTIFICATION;
        return;
    }
    if (has_result == has_error || !id) {
        invalid(m, GMCP_INVALID_REQUEST,
                "Invalid Request: expected a request, a notification or a response");
        return;
    }
    m->kind = GMCP_MSG_RESPONSE;
}

void gmcp_msg_release(gmcp_msg *m)
{
    if (m->root) json_decref(m->root);
    m->root = NULL;
}

json_t *gmcp_rpc_result(json_t *id, json_t *result)
{
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
                     result ? result : json_object());
}

json_t *gmcp_rpc_error(json_t *id, int code, const char *message, json_t *data)
{
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (data) json_object_set_new(err, "data", data);
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error",
                     err);
}

json_t *gmcp_rpc_notification(const char *method, json_t *params)
{
    json_t *n = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
    if (params) json_object_set_new(n, "params", params);
    return n;
}

json_t *gmcp_rpc_request(json_t *id, const char *method, json_t *params)
{
    json_t *n = json_pack("{s:s, s:o, s:s}", "jsonrpc", "2.0", "id", id, "method", method);
    if (params) json_object_set_new(n, "params", params);
    return n;
}

const char *gmcp_json_dump(apr_pool_t *p, const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    char *r;
    if (!s) return NULL;
    r = apr_pstrdup(p, s);
    free(s);
    return r;
}

const char *gmcp_id_key(apr_pool_t *p, const json_t *id)
{
    return id ? gmcp_json_dump(p, id) : "null";
}

const char *gmcp_json_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

json_t *gmcp_json_obj(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_object(v) ? v : NULL;
}
