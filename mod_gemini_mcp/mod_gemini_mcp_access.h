/* mod_gemini_mcp_access.h — who is calling and what they may (mod_gemini_mcp_access.c):
 * Host and Origin checks, identity, scopes, limits, usage, metrics, CORS. Functions
 * that may answer the request return OK to go on, DONE once they answered. */
#ifndef MOD_GEMINI_MCP_ACCESS_H
#define MOD_GEMINI_MCP_ACCESS_H

#include "mod_gemini_mcp_config.h"

#include <jansson.h>
#include "gmcp_keys.h"
#include "gmcp_limits.h"

/* Who is calling and what they may do, for one request (in r->request_config). */
typedef struct {
    request_rec *r;
    apr_time_t start;
    int mode;
    const gmcp_key *key;                 /* the caller's key row, NULL when none applies */
    const char *key_id;                  /* what usage and limits are kept under */
    const char *principal;               /* owner of sessions, chats, uploads */
    const char *scopes;                  /* NULL: every tool */
    const struct gmcp_oauth_conf *oauth; /* the location's OAuth resource, when on */
    const char *token_tools;             /* an access token's scopes as tool patterns */
    const char *granted;                 /* ... and the scopes themselves */
    gmcp_key_limits limits;
    int rejected;
    int entered;               /* counted in flight, not yet left */
    const char *method, *tool; /* for metrics and the log line */
    apr_int64_t bytes_in;
    int upstream_status, retries;
    apr_interval_time_t upstream_time;
    apr_int64_t prompt_tokens, output_tokens;
    const char *bw_slot; /* upload bandwidth slot in the limiter table */
    /* GeminiMCPRateLimitStore dbd: received bytes not yet charged to the shared
     * bandwidth bucket (at bw_rate), and tokens already written to the usage table. */
    apr_int64_t bw_pending, bw_rate;
    apr_int64_t stored_prompt, stored_output;
} gmcp_access;

/* Start-up and child hooks (called by mod_gemini_mcp.c). */
int gmcp_access_pre_config(apr_pool_t *pconf);
int gmcp_access_post_config(apr_pool_t *p, server_rec *s);
void gmcp_access_child_init(apr_pool_t *pchild, server_rec *s);
/* The log_transaction hook: metrics, usage, the per-request log line. */
int gmcp_access_log(request_rec *r);

/* DNS-rebinding protection: does the Host header name this server (or an allowed
 * host)? And is the Origin absent, the endpoint's own, or allowed? */
int gmcp_access_host_ok(request_rec *r, const gmcp_dir_conf *dc);
int gmcp_access_origin_ok(request_rec *r, const gmcp_dir_conf *dc);
/* Both, for the other handlers. */
int gmcp_request_origin_ok(request_rec *r, const gmcp_dir_conf *dc);

/* Establish the caller (GeminiMCPAuth). OK, or DONE when a 401/503 was sent. */
int gmcp_access_identify(request_rec *r, const gmcp_dir_conf *dc, gmcp_access **out);
/* Scopes (403) and limits (429) for one message; OK or DONE when refused. */
int gmcp_access_admit(request_rec *r, gmcp_access *a, const char *method, const char *tool,
                      int spends_tokens, json_t *id);
gmcp_access *gmcp_access_get(request_rec *r);
void gmcp_access_gemini_observed(request_rec *r, int status, apr_interval_time_t latency,
                                 int retries, apr_int64_t prompt, apr_int64_t output);
json_t *gmcp_access_usage_report(request_rec *r, const char **why);
const char *gmcp_access_metrics_text(request_rec *r);
/* Upload bandwidth of the caller (all its uploads, every process): charge `bytes` at
 * `rate` bytes/s; how long to pause before reading more. */
apr_interval_time_t gmcp_access_throttle(gmcp_access *a, apr_int64_t rate, apr_int64_t bytes);
/* CORS headers for an allowed Origin, and the answer to a preflight (OPTIONS; DONE). */
void gmcp_access_cors(request_rec *r);
int gmcp_access_preflight(request_rec *r);

#endif
