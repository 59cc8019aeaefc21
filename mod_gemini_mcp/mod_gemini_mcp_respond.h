/* mod_gemini_mcp_respond.h — responses every handler sends: JSON, JSON-RPC errors at
 * the HTTP level, 503, 202, server-sent events; and whether Accept admits a type.
 *
 * One meaning of "answered" in the glue: a function that sends (or completes) the
 * response returns DONE; a step that lets the request go on returns OK. Callers test
 * the return (`if ((st = step(...)) != OK) return st;`), never r->status, and the
 * module's handler hook hands httpd OK for DONE. */
#ifndef MOD_GEMINI_MCP_RESPOND_H
#define MOD_GEMINI_MCP_RESPOND_H

#include "mod_gemini_mcp_config.h"

#include <jansson.h>

/* A JSON response (Cache-Control: no-store) with this status; returns DONE. */
int gmcp_send_json(request_rec *r, int status, json_t *msg /* stolen */);
/* The same with a body already serialised. */
int gmcp_send_json_text(request_rec *r, int status, const char *body);
/* An HTTP-level rejection with a JSON-RPC error body, logged at debug; returns DONE. */
int gmcp_reject(request_rec *r, int status, json_t *id, int code, const char *message);
/* 503 with Retry-After and a JSON-RPC error "Service unavailable: <why>"; returns DONE. */
int gmcp_send_unavailable(request_rec *r, json_t *id, const char *why);
/* 202 Accepted, no body; returns DONE. */
int gmcp_send_accepted(request_rec *r);

/* Does the Accept header admit `type` (exactly, or by type/x or wildcard)? */
int gmcp_http_accepts(request_rec *r, const char *type);
/* Server-sent events: the response headers, and one write flushed at once (-1 when
 * the client is gone). */
void gmcp_sse_headers(request_rec *r);
int gmcp_sse_write(request_rec *r, const char *text);

#endif
