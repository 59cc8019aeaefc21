/* gmcp_stateless.c — MCP 2026-07-28: request validation, discovery, MRTR. */
#include "gmcp_stateless.h"
#include "gmcp_mcp.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <string.h>
#include <apr_base64.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

int gmcp_version_is_legacy(const char *v)
{
    return v && (gmcp_version_supported(v) || !strcmp(v, "2024-11-05"));
}

int gmcp_is_stateless_request(const gmcp_msg *m, const char *header_version, int has_session)
{
    json_t *meta = m->params ? gmcp_json_obj(m->params, "_meta") : NULL;
    if (meta && json_object_get(meta, GMCP_META_VERSION)) return 1;
    /* No session and a non-legacy version header: a stateless client, also when its
     * request is malformed (it gets the stateless errors). */
    return !has_session && header_version && !gmcp_version_is_legacy(header_version);
}

int gmcp_method_removed(const char *method)
{
    const gmcp_method *meth = gmcp_mcp_method(method);
    return meth && (meth->flags & GMCP_METHOD_SESSION_ONLY);
}

static json_t *fail(const gmcp_msg *m, int *status, int http, int code, const char *msg,
                    json_t *data)
{
    *status = http;
    return gmcp_rpc_error(m->id, code, msg, data);
}

/* Header values are compared after removing optional whitespace (RFC 9110 5.5). */
static const char *trim_ows(apr_pool_t *p, const char *v)
{
    const char *e;
    if (!v) return NULL;
    while (*v == ' ' || *v == '\t') v++;
    e = v + strlen(v);
    while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
    return apr_pstrndup(p, v, (apr_size_t)(e - v));
}

const char *gmcp_param_header_decode(apr_pool_t *p, const char *value)
{
    size_t n = strlen(value), blen, i;
    const char *b64;
    char *out;
    int dlen;
    if (n < 12 || strncmp(value, "=?base64?", 9) != 0 || strcmp(value + n - 2, "?=") != 0)
        return value; /* not the Base64 form: literal */
    b64 = value + 9;
    blen = n - 11;
    /* Strict: the standard alphabet, whole 4-character groups, '=' only at the end. */
    if (blen == 0 || blen % 4 != 0) return NULL;
    for (i = 0; i < blen; i++) {
        char c = b64[i];
        if (c == '=') {
            if (i < blen - 2 || (i == blen - 2 && b64[blen - 1] != '=')) return NULL;
        }
        else if (!(apr_isalnum(c) || c == '+' || c == '/')) {
            return NULL;
        }
    }
    out = apr_palloc(p, (apr_size_t)apr_base64_decode_len(apr_pstrndup(p, b64, blen)) + 1);
    dlen = apr_base64_decode(out, apr_pstrndup(p, b64, blen));
    out[dlen] = '\0';
    if ((size_t)dlen != strlen(out) || !gmcp_utf8_valid(out, (apr_size_t)dlen)) return NULL;
    return out;
}

/* The text a header must carry for a scalar argument. */
static const char *scalar_text(apr_pool_t *p, const json_t *v)
{
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_true(v)) return "true";
    if (json_is_false(v)) return "false";
    if (json_is_number(v)) return gmcp_json_dump(p, v);
    return NULL;
}

/* Mcp-Param-<Name> headers for tool arguments whose schema property carries
 * "x-mcp-header": "<Name>" must be present and equal to the argument. */
static json_t *check_param_headers(apr_pool_t *p, const gmcp_registry *reg, const gmcp_msg *m,
                                   gmcp_header_fn header, void *baton, int *status)
{
    const char *tool = gmcp_json_str(m->params, "name");
    const gmcp_tool_entry *t = tool ? gmcp_registry_tool(reg, tool) : NULL;
    json_t *props, *def, *args = gmcp_json_obj(m->params, "arguments");
    const char *prop;
    if (!t) return NULL;
    props = json_object_get(json_object_get(t->listing, "inputSchema"), "properties");
    json_object_foreach(props, prop, def)
    {
        const char *hname = gmcp_json_str(def, "x-mcp-header"), *raw, *want, *got;
        json_t *arg = args ? json_object_get(args, prop) : NULL;
        if (!hname) continue;
        raw = header(baton, apr_pstrcat(p, "Mcp-Param-", hname, NULL));
        want = arg ? scalar_text(p, arg) : NULL;
        if (!raw) {
            if (!want) continue;
            return fail(
                m, status, 400, GMCP_HEADER_MISMATCH,
                apr_psprintf(p,
                             "Header mismatch: Mcp-Param-%s is required when the argument '%s' "
                             "is present",
                             hname, prop),
                NULL);
        }
        got = gmcp_param_header_decode(p, trim_ows(p, raw));
        if (!got)
            return fail(m, status, 400, GMCP_HEADER_MISMATCH,
                        apr_psprintf(p,
                                     "Header mismatch: Mcp-Param-%s is not valid Base64 in its "
                                     "=?base64?...?= form",
                                     hname),
                        NULL);
        if (!want || strcmp(got, want) != 0)
            return fail(
                m, status, 400, GMCP_HEADER_MISMATCH,
                apr_psprintf(p, "Header mismatch: Mcp-Param-%s does not match the argument '%s'",
                             hname, prop),
                NULL);
    }
    return NULL;
}

json_t *gmcp_stateless_check(apr_pool_t *p, const gmcp_registry *reg, const gmcp_msg *m,
                             gmcp_header_fn header, void *baton, int *status)
{
    const char *hv = header(baton, "MCP-Protocol-Version");
    json_t *meta = m->params ? gmcp_json_obj(m->params, "_meta") : NULL;
    const char *mv = meta ? gmcp_json_str(meta, GMCP_META_VERSION) : NULL;
    const char *hm, *hn, *name = NULL;
    const gmcp_method *meth;

    if (!hv)
        return fail(m, status, 400, GMCP_HEADER_MISMATCH,
                    "Header mismatch: MCP-Protocol-Version header is required", NULL);
    if (!meta || !mv || !gmcp_json_obj(meta, GMCP_META_CAPS))
        return fail(m, status, 400, GMCP_INVALID_PARAMS,
                    "Invalid params: _meta must carry " GMCP_META_VERSION " and " GMCP_META_CAPS,
                    NULL);
    if (strcmp(trim_ows(p, hv), mv) != 0)
        return fail(m, status, 400, GMCP_HEADER_MISMATCH,
                    "Header mismatch: "
                    "MCP-Protocol-Version differs from _meta's protocolVersion",
                    NULL);
    if (strcmp(mv, GMCP_STATELESS_VERSION) != 0)
        return fail(
            m, status, 400, GMCP_UNSUPPORTED_VERSION,
            apr_psprintf(p, "Unsupported protocol version: %s", mv),
            json_pack("{s:[s], s:s}", "supported", GMCP_STATELESS_VERSION, "requested", mv));
    /* Mcp-Method must name the body's method exactly (values are case-sensitive). */
    hm = header(baton, "Mcp-Method");
    if (!hm || strcmp(trim_ows(p, hm), m->method) != 0)
        return fail(m, status, 400, GMCP_HEADER_MISMATCH,
                    hm ? "Header mismatch: Mcp-Method differs from the body's method"
                       : "Header mismatch: Mcp-Method header is required",
                    NULL);
    if ((meth = gmcp_mcp_method(m->method)) != NULL && meth->target)
        name = gmcp_json_str(m->params, meth->target);
    hn = header(baton, "Mcp-Name");
    if (name && (!hn || strcmp(trim_ows(p, hn), name) != 0))
        return fail(m, status, 400, GMCP_HEADER_MISMATCH,
                    hn ? "Header mismatch: Mcp-Name differs from the body"
                       : "Header mismatch: Mcp-Name header is required",
                    NULL);
    if (!strcmp(m->method, "tools/call"))
        return check_param_headers(p, reg, m, header, baton, status);
    return NULL;
}

void gmcp_stateless_decorate(const char *method, json_t *result)
{
    const gmcp_method *meth = gmcp_mcp_method(method);
    if (!json_is_object(result)) return;
    if (!json_object_get(result, "resultType"))
        json_object_set_new(result, "resultType", json_string("complete"));
    if (!meth || !(meth->flags & GMCP_METHOD_CACHEABLE)) return;
    /* Scope is private: what a caller sees can depend on who calls. */
    if (!json_object_get(result, "ttlMs"))
        json_object_set_new(result, "ttlMs", json_integer(meth->ttl_ms));
    if (!json_object_get(result, "cacheScope"))
        json_object_set_new(result, "cacheScope", json_string("private"));
}

json_t *gmcp_discover_result(const char *name, const char *version)
{
    return json_pack("{s:[s, s, s, s], s:{s:{}, s:{}, s:{}, s:{}, s:{}}, s:{s:{s:s, s:s}}}",
                     "supportedVersions", GMCP_STATELESS_VERSION, "2025-11-25", "2025-06-18",
                     "2025-03-26", "capabilities", "tools", "resources", "prompts", "logging",
                     "completions", "_meta", GMCP_META_SERVERINFO, "name", name, "version",
                     version);
}

/* ---- requestState ------------------------------------------------------------------ */

static const char *mac(apr_pool_t *p, const unsigned char *key, apr_size_t keylen, const char *bind,
                       const char *payload)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *msg = apr_pstrcat(p, bind, "\n", payload, NULL);
    if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), md, &mdlen))
        return NULL;
    return gmcp_b64url_encode(p, md, mdlen);
}

const char *gmcp_state_seal(apr_pool_t *p, const unsigned char *key, apr_size_t keylen,
                            const char *bind, json_t *state)
{
    const char *json = gmcp_json_dump(p, state);
    const char *body = gmcp_b64url_encode(p, (const unsigned char *)json, strlen(json));
    const char *tag = mac(p, key, keylen, bind, body);
    return tag ? apr_pstrcat(p, body, ".", tag, NULL) : NULL;
}

apr_status_t gmcp_state_open(apr_pool_t *p, const unsigned char *key, apr_size_t keylen,
                             const char *bind, const char *sealed, json_t **state)
{
    const char *dot = strrchr(sealed, '.'), *body, *tag;
    unsigned char *json;
    apr_size_t len = 0;
    *state = NULL;
    if (!dot) return APR_EINVAL;
    body = apr_pstrndup(p, sealed, (apr_size_t)(dot - sealed));
    tag = mac(p, key, keylen, bind, body);
    if (!tag || strlen(tag) != strlen(dot + 1) || CRYPTO_memcmp(tag, dot + 1, strlen(tag)) != 0)
        return APR_EINVAL;
    if (!(json = gmcp_b64url_decode(p, body, &len))) return APR_EINVAL;
    *state = json_loadb((const char *)json, len, 0, NULL);
    return *state ? APR_SUCCESS : APR_EINVAL;
}

/* ---- MRTR ------------------------------------------------------------------------- */

gmcp_input_result gmcp_mrtr_input(gmcp_call *c, const char *key, const char *method, json_t *params,
                                  json_t **response)
{
    const char *cap = gmcp_capability_for(method);
    json_t *answer = c->input_responses ? json_object_get(c->input_responses, key) : NULL;
    *response = NULL;
    if (!cap || !c->client_caps || !json_object_get(c->client_caps, cap)) {
        json_decref(params);
        return GMCP_INPUT_UNSUPPORTED;
    }
    /* An answer must be an object; anything else counts as missing and is asked for
     * again, which is how the client learns what is still needed. */
    if (json_is_object(answer)) {
        json_decref(params);
        *response = json_incref(answer);
        return GMCP_INPUT_OK;
    }
    if (!c->pending_inputs) c->pending_inputs = json_object();
    json_object_set_new(
        c->pending_inputs, key,
        json_pack("{s:s, s:o}", "method", method, "params", params ? params : json_object()));
    return GMCP_INPUT_NEEDED;
}

json_t *gmcp_mrtr_result(gmcp_call *c, json_t *state, const unsigned char *secret,
                         apr_size_t secret_len, const char *bind)
{
    json_t *r;
    if (!c->pending_inputs) c->pending_inputs = json_object();
    r = json_pack("{s:s, s:O}", "resultType", "input_required", "inputRequests", c->pending_inputs);
    if (state) {
        const char *sealed = gmcp_state_seal(c->pool, secret, secret_len, bind, state);
        json_decref(state);
        if (!sealed) {
            json_decref(r);
            return NULL;
        }
        json_object_set_new(r, "requestState", json_string(sealed));
    }
    return r;
}
