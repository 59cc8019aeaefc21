/* mod_gemini_mcp_config.h — the module's identity and configuration: directives,
 * defaults, the per-directory and per-server settings and their getters, and what
 * post_config builds once for the whole module (like mod_md's md_mod_conf_t).
 * Every glue file includes this header; mod_gemini_mcp_config.c calls no glue file. */
#ifndef MOD_GEMINI_MCP_CONFIG_H
#define MOD_GEMINI_MCP_CONFIG_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <apr_tables.h>

#include "gmcp_breaker.h"
#include "gmcp_mcp.h"

#define GMCP_VERSION "0.1.0"

APLOG_USE_MODULE(gemini_mcp);

/* Our own message tags ("GMCP0101: "), not numbers from httpd's AH space. The glue
 * uses 01xx, the core's gmcp_elog 02xx (database), 03xx (disk), 04xx (upstream). */
#define GMCP_LOGNO(n) "GMCP" #n ": "
extern module AP_MODULE_DECLARE_DATA gemini_mcp_module;

/* Per-directory settings (a <Location> serving the MCP endpoint). */
typedef struct {
    apr_off_t max_body;                  /* GeminiMCPMaxBodySize, -1 = unset */
    apr_array_header_t *allowed_origins; /* GeminiMCPAllowedOrigins (char*), NULL = unset */
    apr_array_header_t *allowed_hosts;   /* GeminiMCPAllowedHosts (char*), NULL = unset */
    apr_interval_time_t client_timeout;  /* GeminiMCPClientRequestTimeout, -1 = unset */
    int sse_retry_ms;                    /* GeminiMCPSSERetry, -1 = unset */
    int page_size;                       /* GeminiMCPPageSize, -1 = unset */
    const char *default_principal;       /* GeminiMCPDefaultPrincipal */
    int auth_mode;                       /* GeminiMCPAuth, GMCP_AUTH_UNSET = unset */
    apr_off_t upload_max;                /* GeminiMCPUploadMaxSize, -1 = unset */
    apr_off_t upload_quota;              /* GeminiMCPUploadQuota, -1 = unset (none) */
    apr_int64_t upload_rate;             /* GeminiMCPUploadRate (bytes/s per upload), -1 = unset */
    apr_int64_t upload_key_rate;         /* GeminiMCPUploadKeyRate (bytes/s per key), -1 = unset */
    int upload_durability;               /* GeminiMCPUploadDurability, -1 = unset (synced) */
    apr_int64_t upload_sync_lag;         /* ...interval: bytes that may be not yet durable */
    apr_int64_t upload_sync_secs;        /* ...interval: seconds between syncs at most */
    int auth_oauth;                      /* GeminiMCPAuth ... oauth: 1, 0 no, -1 unset */
    const struct gmcp_oauth_conf *oauth; /* GeminiMCPOAuth* of this section, NULL unset */
} gmcp_dir_conf;

/* GeminiMCPOAuth*: one protected resource, set in the section of its GeminiMCPAuth
 * (a section with any of them takes none from an enclosing one). */
typedef struct gmcp_oauth_conf {
    const char *resource;        /* GeminiMCPOAuthResource: canonical URI = audience */
    const char *prm_url;         /* its Protected Resource Metadata URL (RFC 9728) */
    const char *prm_path;        /* ... and that URL's path on this server */
    int issuer;                  /* GeminiMCPOAuthIssuer: index of gmcp_conf_oauth_issuers */
    const char *principal_claim; /* GeminiMCPOAuthClaims, NULL: sub */
    const char *tenant_claim;    /* NULL: none */
    apr_int64_t leeway;          /* GeminiMCPOAuthLeeway (s), -1 unset (60) */
    apr_array_header_t *scopes;  /* GeminiMCPOAuthScope (gmcp_scope_def), NULL: built-in */
    /* GeminiMCPOAuthIntrospection: opaque tokens are asked about (RFC 7662). */
    const char *introspect_url;    /* NULL: none */
    const char *introspect_client; /* the client_id this resource server authenticates as */
    const char *introspect_secret; /* where its secret is read from (file: or env:) */
    const char *introspect_auth;   /* the Authorization header, made in post_config */
    apr_int64_t introspect_cache;  /* seconds an active answer is reused */
} gmcp_oauth_conf;

/* An authorization server whose tokens are taken (GeminiMCPOAuthIssuer). */
typedef struct {
    const char *issuer;
    const char *jwks_url; /* NULL: from its metadata (RFC 8414, else OpenID discovery) */
} gmcp_oauth_issuer;
#define GMCP_OAUTH_ISSUERS_MAX 8

/* GeminiMCPUploadDurability */
#define GMCP_DURABILITY_SYNCED 0
#define GMCP_DURABILITY_INTERVAL 1
#define GMCP_DEFAULT_SYNC_LAG ((apr_int64_t)256 << 20)
#define GMCP_DEFAULT_SYNC_SECS 5

/* GeminiMCPAuth */
#define GMCP_AUTH_UNSET -1
#define GMCP_AUTH_NONE 0
#define GMCP_AUTH_APIKEY 1
#define GMCP_AUTH_APACHE 2
#define GMCP_AUTH_OAUTH 3 /* OAuth access tokens only */

/* Per-server settings. */
typedef struct {
    const char *state_secret;           /* GeminiMCPStateSecret source (file:/env:) */
    const char *node_name;              /* GeminiMCPNodeName, NULL = unset */
    const char *gemini_key;             /* GeminiMCPGeminiKey source (file:/env:) */
    const char *gemini_base;            /* GeminiMCPGeminiBaseURL */
    const char *gemini_model;           /* GeminiMCPGeminiModel */
    apr_int64_t gemini_timeout;         /* GeminiMCPGeminiTimeout (s), -1 = unset */
    apr_int64_t gemini_connect_timeout; /* GeminiMCPGeminiConnectTimeout (s), -1 = unset */
    int gemini_retries;                 /* GeminiMCPGeminiRetries, -1 = unset */
    apr_int64_t tool_timeout;           /* GeminiMCPToolTimeout (s), -1 = unset */
    apr_int64_t task_workers;           /* GeminiMCPTaskWorkers (per child; 0: off), -1 = unset */
    apr_int64_t task_ttl;               /* GeminiMCPTaskTTL (s), -1 = unset */
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
    apr_int64_t jwks_min;               /* GeminiMCPOAuthJWKSRefresh: seconds between fetches */
    apr_int64_t jwks_max;               /* ... and the age that refreshes (-1 = unset) */
} gmcp_srv_conf;

#define GMCP_DEFAULT_MAX_BODY (1024 * 1024)
#define GMCP_DEFAULT_CLIENT_TIMEOUT apr_time_from_sec(60)
#define GMCP_DEFAULT_SSE_RETRY 1000
#define GMCP_DEFAULT_PAGE_SIZE 50
#define GMCP_DEFAULT_PRINCIPAL "default"
#define GMCP_DEFAULT_SESSION_IDLE (24 * 3600)
#define GMCP_DEFAULT_EVENT_RETENTION 3600

/* ---- the module record's configuration (mod_gemini_mcp.c declares the module) ---- */

extern const command_rec gmcp_config_cmds[];
void *gmcp_config_create_dir(apr_pool_t *p, char *dir);
void *gmcp_config_merge_dir(apr_pool_t *p, void *basev, void *addv);
void *gmcp_config_create_srv(apr_pool_t *p, server_rec *s);
void *gmcp_config_merge_srv(apr_pool_t *p, void *basev, void *addv);

/* pre_config: a configuration is about to be read (again); forget what the last one
 * used. */
void gmcp_config_pre_config(void);
/* Does any GeminiMCPAuth of the configuration read use `mode`? */
int gmcp_conf_auth_mode_used(int mode);
/* The issuers of the configuration read (their index is gmcp_oauth_conf.issuer). */
int gmcp_conf_oauth_issuers(const gmcp_oauth_issuer **out);
/* Every section with GeminiMCPAuth ... oauth: *dcs[i] in server *srvs[i]. */
int gmcp_conf_oauth_sections(gmcp_dir_conf *const **dcs, server_rec *const **srvs);
/* OAuth effective values: is it on, the leeway, the JWKS refresh bounds (seconds). */
int gmcp_conf_oauth_on(const gmcp_dir_conf *c);
apr_int64_t gmcp_conf_oauth_leeway(const gmcp_oauth_conf *o);
apr_int64_t gmcp_conf_jwks_min(const gmcp_srv_conf *c);
apr_int64_t gmcp_conf_jwks_max(const gmcp_srv_conf *c);

/* The settings of a request's location, and of a server. */
const gmcp_dir_conf *gmcp_config_dir(const request_rec *r);
const gmcp_srv_conf *gmcp_config_srv(const server_rec *s);

/* ---- effective values (defaults applied) ---- */

apr_off_t gmcp_conf_max_body(const gmcp_dir_conf *c);
apr_interval_time_t gmcp_conf_client_timeout(const gmcp_dir_conf *c);
int gmcp_conf_sse_retry(const gmcp_dir_conf *c);
int gmcp_conf_page_size(const gmcp_dir_conf *c);
const char *gmcp_conf_principal(const gmcp_dir_conf *c);
apr_int64_t gmcp_conf_session_idle(const gmcp_srv_conf *c);
apr_int64_t gmcp_conf_event_retention(const gmcp_srv_conf *c);
apr_interval_time_t gmcp_conf_tool_timeout(const gmcp_srv_conf *c);
int gmcp_conf_task_workers(const gmcp_srv_conf *c);
apr_int64_t gmcp_conf_task_ttl(const gmcp_srv_conf *c);
apr_int64_t gmcp_conf_chat_idle(const gmcp_srv_conf *c);
apr_interval_time_t gmcp_conf_gemini_timeout(const gmcp_srv_conf *c);
apr_interval_time_t gmcp_conf_gemini_connect_timeout(const gmcp_srv_conf *c);
int gmcp_conf_gemini_retries(const gmcp_srv_conf *c);
unsigned int gmcp_conf_breaker_threshold(const gmcp_srv_conf *c);
apr_interval_time_t gmcp_conf_breaker_cooldown(const gmcp_srv_conf *c);
apr_uint32_t gmcp_conf_limiter_slots(const gmcp_srv_conf *c);
apr_int64_t gmcp_conf_usage_flush(const gmcp_srv_conf *c);
/* Uploads: Tus-Max-Size and the expiry of unfinished uploads. */
apr_off_t gmcp_conf_upload_max(const gmcp_dir_conf *c);
apr_int64_t gmcp_conf_upload_expiry(const gmcp_srv_conf *c);
/* GeminiMCPUploadDurability: 1 for interval (with its lag bound and seconds), else 0. */
int gmcp_conf_upload_interval(const gmcp_dir_conf *c, apr_int64_t *lag, apr_int64_t *secs);

/* ---- what post_config builds for the whole module ---- */

/* Made once in post_config, before the children fork, so read-only in them. */
typedef struct {
    const gmcp_registry *registry;  /* every provider, merged and validated */
    const unsigned char *state_key; /* HMAC key of MRTR requestState */
    apr_size_t state_key_len;
    const gmcp_breaker *breaker; /* Gemini's circuit breaker, in shared memory */
    int gemini_configured;       /* a Gemini API key was found */
} gmcp_module_state;

/* post_config (mod_gemini_mcp.c) publishes what it built; the handlers read it. */
void gmcp_config_publish(const gmcp_module_state *st);
/* The server description for a location (registry of all providers, page size). */
const gmcp_server *gmcp_server_for(apr_pool_t *p, const gmcp_dir_conf *c,
                                   const gmcp_task_runner *tasks);
/* A consistent copy of the Gemini breaker's shared state, and whether a Gemini API
 * key is configured. */
void gmcp_breaker_read(gmcp_breaker_state *out);
int gmcp_gemini_configured(void);

#endif
