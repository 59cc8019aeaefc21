/* mod_gemini_mcp_respond.c — the responses every handler sends (see the header for
 * what they return). A leaf: it calls httpd and the core only. */
#include "mod_gemini_mcp_respond.h"
#include "gmcp_jsonrpc.h"

#include <http_protocol.h>
#include <apr_strings.h>

int gmcp_send_json_text(request_rec *r, int status, const char *body)
{
    r->status = status;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_length(r, (apr_off_t)strlen(body));
    ap_rwrite(body, (int)strlen(body), r);
    return DONE;
}

int gmcp_send_json(request_rec *r, int status, json_t *msg /* stolen */)
{
    const char *body = gmcp_json_dump(r->pool, msg);
    json_decref(msg);
    return gmcp_send_json_text(r, status, body);
}

int gmcp_reject(request_rec *r, int status, json_t *id, int code, const char *message)
{
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, GMCP_LOGNO(0113) "gemini_mcp: %d: %s", status,
                  message);
    return gmcp_send_json(r, status, gmcp_rpc_error(id, code, message, NULL));
}

int gmcp_send_unavailable(request_rec *r, json_t *id, const char *why)
{
    apr_table_setn(r->headers_out, "Retry-After", "5");
    return gmcp_reject(r, HTTP_SERVICE_UNAVAILABLE, id, GMCP_INTERNAL_ERROR,
                       apr_psprintf(r->pool, "Service unavailable: %s", why));
}

int gmcp_send_accepted(request_rec *r)
{
    r->status = HTTP_ACCEPTED;
    ap_set_content_length(r, 0);
    return DONE;
}

/* "application/json" or "text/event-stream", as the transport asks. */
int gmcp_http_accepts(request_rec *r, const char *type)
{
    const char *accept = apr_table_get(r->headers_in, "Accept");
    const char *slash = strchr(type, '/');
    char *list, *tok, *state;
    if (!accept) return 0;
    list = apr_pstrdup(r->pool, accept);
    for (tok = apr_strtok(list, ",", &state); tok; tok = apr_strtok(NULL, ",", &state)) {
        char *semi = strchr(tok, ';');
        if (semi) *semi = '\0';
        apr_collapse_spaces(tok, tok);
        if (!strcasecmp(tok, type) || !strcmp(tok, "*/*")
            || (!strncasecmp(tok, type, (size_t)(slash - type + 1))
                && !strcmp(tok + (slash - type + 1), "*")))
            return 1;
    }
    return 0;
}

void gmcp_sse_headers(request_rec *r)
{
    ap_set_content_type(r, "text/event-stream");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
    /* Compression would hold events back until a buffer fills. */
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
}

int gmcp_sse_write(request_rec *r, const char *text)
{
    if (r->connection->aborted) return -1;
    if (ap_rputs(text, r) < 0 || ap_rflush(r) < 0) return -1;
    return 0;
}
