/* mod_gemini_mcp.h — declarations shared by the httpd glue files. */
#ifndef MOD_GEMINI_MCP_H
#define MOD_GEMINI_MCP_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <apr_tables.h>

#include "gmcp_mcp.h"

#define GMCP_VERSION "0.1.0"

APLOG_USE_MODULE(gemini_mcp);
extern module AP_MODULE_DECLARE_DATA gemini_mcp_module;

/* Per-directory settings (a <Location> serving the MCP endpoint). */
typedef struct {
    apr_off_t max_body;                 /* GeminiMCPMaxBodySize, -1 = unset */
    apr_array_header_t *allowed_origins;/* GeminiMCPAllowedOrigins (char*), NULL = unset */
    apr_array_header_t *allowed_hosts;  /* GeminiMCPAllowedHosts (char*), NULL = unset */
    apr_interval_time_t client_timeout; /* GeminiMCPClientRequestTimeout, -1 = unset */
    int sse_retry_ms;                   /* GeminiMCPSSERetry, -1 = unset */
    int page_size;                      /* GeminiMCPPageSize, -1 = unset */
    const char *default_principal;      /* GeminiMCPDefaultPrincipal */
} gmcp_dir_conf;

/* Per-server settings. */
typedef struct {
    const char *state_secret;           /* GeminiMCPStateSecret source (file:/env:) */
    const char *gemini_key;             /* GeminiMCPGeminiKey source (file:/env:) */
    const char *gemini_base;            /* GeminiMCPGeminiBaseURL */
    const char *gemini_model;           /* GeminiMCPGeminiModel */
    apr_int64_t gemini_timeout;         /* GeminiMCPGeminiTimeout (s), -1 = unset */
    apr_int64_t gemini_connect_timeout; /* GeminiMCPGeminiConnectTimeout (s), -1 = unset */
    int gemini_retries;                 /* GeminiMCPGeminiRetries, -1 = unset */
    apr_int64_t tool_timeout;           /* GeminiMCPToolTimeout (s), -1 = unset */
    apr_int64_t chat_idle;              /* GeminiMCPChatIdleTimeout (s), -1 = unset */
    int breaker_threshold;              /* GeminiMCPBreakerThreshold, -1 = unset */
    apr_int64_t breaker_cooldown;       /* GeminiMCPBreakerCooldown (s), -1 = unset */
    apr_int64_t session_idle;           /* GeminiMCPSessionIdleTimeout (s), -1 = unset */
    apr_int64_t event_retention;        /* GeminiMCPEventRetention (s), -1 = unset */
} gmcp_srv_conf;

#define GMCP_DEFAULT_MAX_BODY       (1024 * 1024)
#define GMCP_DEFAULT_CLIENT_TIMEOUT apr_time_from_sec(60)
#define GMCP_DEFAULT_SSE_RETRY      1000
#define GMCP_DEFAULT_PAGE_SIZE      50
#define GMCP_DEFAULT_PRINCIPAL      "default"
#define GMCP_DEFAULT_SESSION_IDLE   (24 * 3600)
#define GMCP_DEFAULT_EVENT_RETENTION 3600

/* Effective values (defaults applied). */
apr_off_t gmcp_conf_max_body(const gmcp_dir_conf *c);
apr_interval_time_t gmcp_conf_client_timeout(const gmcp_dir_conf *c);
int gmcp_conf_sse_retry(const gmcp_dir_conf *c);
const char *gmcp_conf_principal(const gmcp_dir_conf *c);
apr_int64_t gmcp_conf_session_idle(const gmcp_srv_conf *c);
apr_int64_t gmcp_conf_event_retention(const gmcp_srv_conf *c);
apr_interval_time_t gmcp_conf_tool_timeout(const gmcp_srv_conf *c);
apr_int64_t gmcp_conf_chat_idle(const gmcp_srv_conf *c);

/* The server description for a location (registry of all providers, page size). */
const gmcp_server *gmcp_server_for(apr_pool_t *p, const gmcp_dir_conf *c);

/* Handlers */
int gmcp_mcp_handler(request_rec *r);
int gmcp_status_handler(request_rec *r);

/* A JSON response (Cache-Control: no-store) with this status; returns OK. */
int gmcp_send_json(request_rec *r, int status, json_t *msg /* stolen */);

/* For the status handler: a consistent copy of the Gemini breaker's shared state, and
 * whether a Gemini API key is configured. */
#include "gmcp_breaker.h"
void gmcp_breaker_read(gmcp_breaker_state *out);
int gmcp_gemini_configured(void);

#endif
