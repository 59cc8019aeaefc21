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

/* Our own message tags ("GMCP0101: "), not numbers from httpd's AH space. The glue
 * uses 01xx, the core's gmcp_elog 02xx (database), 03xx (disk), 04xx (upstream). */
#define GMCP_LOGNO(n) "GMCP" #n ": "
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
    int auth_mode;                      /* GeminiMCPAuth, GMCP_AUTH_UNSET = unset */
    apr_off_t upload_max;               /* GeminiMCPUploadMaxSize, -1 = unset */
    apr_off_t upload_quota;             /* GeminiMCPUploadQuota, -1 = unset (none) */
    apr_int64_t upload_rate;            /* GeminiMCPUploadRate (bytes/s per upload), -1 = unset */
    apr_int64_t upload_key_rate;        /* GeminiMCPUploadKeyRate (bytes/s per key), -1 = unset */
} gmcp_dir_conf;

/* GeminiMCPAuth */
#define GMCP_AUTH_UNSET  -1
#define GMCP_AUTH_NONE    0
#define GMCP_AUTH_APIKEY  1
#define GMCP_AUTH_APACHE  2
/* Which modes the configuration uses (bit 1 << mode), reset at each (re)start. */
extern int gmcp_auth_modes_used;

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
    const char *key_pepper;             /* GeminiMCPKeyPepper source (file:/env:) */
    int ratelimit_store;                /* GeminiMCPRateLimitStore: 0 shm, 1 dbd, -1 unset */
    int limiter_slots;                  /* GeminiMCPLimiterSlots, -1 = unset */
    apr_int64_t usage_flush;            /* GeminiMCPUsageFlushInterval (s), -1 = unset */
    const char *upload_dir;             /* GeminiMCPUploadDir (spool), NULL = unset */
    apr_int64_t upload_expiry;          /* GeminiMCPUploadExpiry (s), -1 = unset */
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
int gmcp_upload_handler(request_rec *r);

/* Uploads: Tus-Max-Size and the expiry of unfinished uploads. */
apr_off_t gmcp_conf_upload_max(const gmcp_dir_conf *c);
apr_int64_t gmcp_conf_upload_expiry(const gmcp_srv_conf *c);

/* Host and Origin checks (DNS-rebinding and cross-site protection) of the MCP
 * endpoint, for the other handlers. */
int gmcp_request_origin_ok(request_rec *r, const gmcp_dir_conf *dc);

/* Does the Accept header admit `type` (exactly, or by type/x or wildcard)? */
int gmcp_http_accepts(request_rec *r, const char *type);
/* Server-sent events: the response headers, and one write flushed at once (-1 when
 * the client is gone). */
void gmcp_sse_headers(request_rec *r);
int gmcp_sse_write(request_rec *r, const char *text);

/* A JSON response (Cache-Control: no-store) with this status; returns OK. */
int gmcp_send_json(request_rec *r, int status, json_t *msg /* stolen */);
/* 503 with Retry-After and a JSON-RPC error "Service unavailable: <why>"; returns DONE. */
int gmcp_send_unavailable(request_rec *r, json_t *id, const char *why);

/* ---- database sections (mod_gemini_mcp_db.c) ---- */
#include <mod_dbd.h>
#include "gmcp_db.h"

/* The holder of a request's mod_dbd connection for short sections. Made from the
 * request pool, whose cleanup gives back a connection still held at its end. */
typedef struct {
    request_rec *r;
    ap_dbd_t *dbd;      /* while a section is open */
    gmcp_db db;
} gmcp_dbh;

gmcp_dbh *gmcp_dbh_make(request_rec *r);
/* Open a section (a no-op while one is open): statements prepared, the schema checked
 * (logged when behind); 0 or -1 with *why fit for a client. */
int gmcp_dbh_open(gmcp_dbh *h, const char **why);
/* The connection only, without the schema check (health reports). */
int gmcp_dbh_open_raw(gmcp_dbh *h);
void gmcp_dbh_close(gmcp_dbh *h);

/* ---- access (mod_gemini_mcp_access.c) ---- */
#include "gmcp_keys.h"
#include "gmcp_limits.h"

/* Who is calling and what they may do, for one request (in r->request_config). */
typedef struct {
    request_rec *r;
    apr_time_t start;
    int mode;
    const gmcp_key *key;          /* the caller's key row, NULL when none applies */
    const char *key_id;           /* what usage and limits are kept under */
    const char *principal;        /* owner of sessions, chats, uploads */
    const char *scopes;           /* NULL: every tool */
    gmcp_key_limits limits;
    int rejected;
    int entered;                  /* counted in flight, not yet left */
    const char *method, *tool;    /* for metrics and the log line */
    apr_int64_t bytes_in;
    int upstream_status, retries;
    apr_interval_time_t upstream_time;
    apr_int64_t prompt_tokens, output_tokens;
    const char *bw_slot;          /* upload bandwidth slot in the limiter table */
} gmcp_access;

int gmcp_access_pre_config(apr_pool_t *pconf);
int gmcp_access_post_config(apr_pool_t *p, server_rec *s);
void gmcp_access_child_init(apr_pool_t *pchild, server_rec *s);
/* Establish the caller (GeminiMCPAuth). OK, or DONE when a 401/503 was sent. */
int gmcp_access_identify(request_rec *r, const gmcp_dir_conf *dc, gmcp_access **out);
/* Scopes (403) and limits (429) for one message; OK or DONE when refused. */
int gmcp_access_admit(request_rec *r, gmcp_access *a, const char *method, const char *tool,
                      int spends_tokens, json_t *id);
gmcp_access *gmcp_access_get(request_rec *r);
void gmcp_access_gemini_observed(request_rec *r, int status, apr_interval_time_t latency,
                                 int retries, apr_int64_t prompt, apr_int64_t output);
json_t *gmcp_access_usage_report(request_rec *r, const char **why);
int gmcp_access_log(request_rec *r);
const char *gmcp_access_metrics_text(request_rec *r);
/* Upload bandwidth of the caller (all its uploads, every process): charge `bytes` at
 * `rate` bytes/s; how long to pause before reading more. */
apr_interval_time_t gmcp_access_throttle(gmcp_access *a, apr_int64_t rate, apr_int64_t bytes);
/* CORS headers for an allowed Origin, and the answer to a preflight (OPTIONS). */
void gmcp_access_cors(request_rec *r);
int gmcp_access_preflight(request_rec *r);

/* For the status handler: a consistent copy of the Gemini breaker's shared state, and
 * whether a Gemini API key is configured. */
#include "gmcp_breaker.h"
void gmcp_breaker_read(gmcp_breaker_state *out);
int gmcp_gemini_configured(void);

#endif
