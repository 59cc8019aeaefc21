/* gmcp_tools_gemini.h — Gemini as MCP tools (the product's own provider). */
#ifndef GMCP_TOOLS_GEMINI_H
#define GMCP_TOOLS_GEMINI_H

#include <apr_pools.h>
#include <apr_time.h>
#include "gmcp_breaker.h"
#include "gmcp_http.h"
#include "gmcp_provider.h"

typedef struct {
    const char *base_url; /* no trailing slash */
    const char *api_key;  /* NULL: not configured (tools say so) */
    const char *default_model;
    apr_interval_time_t timeout; /* per attempt */
    apr_interval_time_t connect_timeout;
    int max_retries;
    gmcp_http *(*http)(void); /* this thread's reusable handle (gmcp_http_for_thread) */
    apr_int64_t chat_idle;    /* seconds before an unused chat session expires */
    gmcp_breaker *breaker;    /* shared by every child process */
    const char *upload_dir;   /* GeminiMCPUploadDir: finished uploads to relay */
    apr_int64_t files_chunk;  /* relay chunk size (0: 8 MiB, as the SDKs) */
} gmcp_gemini_conf;

/* The provider ("gemini"): gemini_generate, gemini_count_tokens, gemini_embed,
 * gemini_list_models. `conf` must outlive it. */
const gmcp_provider *gmcp_gemini_provider(apr_pool_t *p, const gmcp_gemini_conf *conf);

/* Shared by the Gemini tool files. */
#include "gmcp_gemini.h"
gmcp_gemini *gmcp_tool_client(gmcp_call *c, const gmcp_gemini_conf *conf, json_t **result);
json_t *gmcp_tool_error_result(gmcp_call *c, const gmcp_gemini_error *e);
const char *gmcp_tool_model(gmcp_call *c, json_t *args, const char *fallback, json_t **result);
json_t *gmcp_tool_generation_config(json_t *args);
const char *gmcp_tool_file_uri(gmcp_call *c, const gmcp_gemini_conf *conf, const char *ref);
/* [{text}, {fileData}...] for a user turn; NULL with *result set for a bad reference. */
json_t *gmcp_tool_user_parts(gmcp_call *c, const gmcp_gemini_conf *conf, const char *text,
                             json_t *files, json_t **result);
/* A database handle (gmcp_db *) for a short section, or NULL with *result set to the
 * tool error: the transport's reason, else `unavailable`. Close with db_close. */
void *gmcp_tool_db(gmcp_call *c, const char *unavailable, json_t **result);
/* `result` with structuredContent `sc` (stolen); returns `result`. */
json_t *gmcp_tool_structured(json_t *result, json_t *sc);
/* generateContent, or the SSE stream when the call has a progress token (each chunk
 * forwarded as progress). Returns the tool result; on success *final is the last
 * response (new ref: usage, finish reason) and *text the whole answer. */
json_t *gmcp_tool_run_generate(gmcp_call *c, gmcp_gemini *g, const char *model, const char *req,
                               json_t **final, const char **text);

extern const gmcp_tool gmcp_chat_tools[];
extern const gmcp_tool gmcp_file_tools[];
extern const gmcp_resource_template gmcp_chat_templates[];

#endif
