/* gmcp_tools_gemini.h — Gemini as MCP tools (the product's own provider). */
#ifndef GMCP_TOOLS_GEMINI_H
#define GMCP_TOOLS_GEMINI_H

#include <apr_pools.h>
#include <apr_time.h>
#include <curl/curl.h>
#include "gmcp_provider.h"

typedef struct {
    const char *base_url;          /* no trailing slash */
    const char *api_key;           /* NULL: not configured (tools say so) */
    const char *default_model;
    apr_interval_time_t timeout;   /* per attempt */
    apr_interval_time_t connect_timeout;
    int max_retries;
    CURL *(*curl)(void);           /* this thread's reusable handle */
} gmcp_gemini_conf;

/* The provider ("gemini"): gemini_generate, gemini_count_tokens, gemini_embed,
 * gemini_list_models. `conf` must outlive it. */
const gmcp_provider *gmcp_gemini_provider(apr_pool_t *p, const gmcp_gemini_conf *conf);

#endif
