/* mod_gemini_mcp.c — module declaration, directives and start-up hooks. */
#include "mod_gemini_mcp.h"
#include "gmcp_gemini.h"
#include "gmcp_tools_gemini.h"
#include "gmcp_util.h"
#include "gmcp_errlog.h"
#include "gmcp_retention.h"

#include <http_protocol.h>
#include <http_request.h>
#include <ap_provider.h>
#include <apr_lib.h>
#include <apr_thread_proc.h>
#include <apr_portable.h>
#include <apr_shm.h>
#include <apr_global_mutex.h>
#include <util_mutex.h>
#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <apr_file_io.h>
#include <stdlib.h>

/* The merged registry of every provider, built once in post_config (before the
 * children fork, so it is read-only afterwards). */
static gmcp_registry *g_registry;
/* HMAC key for MRTR requestState: from GeminiMCPStateSecret, or random per start. */
static unsigned char *g_state_key;
static apr_size_t g_state_key_len;
static gmcp_gemini_conf g_gemini;
/* The breaker's state in shared memory, guarded by a global mutex: one view for every
 * child process (made in post_config, before the fork). */
#define BREAKER_MUTEX "gemini-mcp-breaker"
static apr_global_mutex_t *g_breaker_mutex;
static gmcp_breaker g_breaker;

/* ---- configuration ----------------------------------------------------------------- */

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    gmcp_dir_conf *c = apr_pcalloc(p, sizeof(*c));
    (void)dir;
    c->max_body = -1;
    c->client_timeout = -1;
    c->sse_retry_ms = -1;
    c->page_size = -1;
    c->auth_mode = GMCP_AUTH_UNSET;
    c->upload_max = -1;
    c->upload_quota = -1;
    c->upload_rate = -1;
    c->upload_key_rate = -1;
    return c;
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    gmcp_dir_conf *b = basev, *a = addv, *c = apr_pcalloc(p, sizeof(*c));
    c->max_body = a->max_body >= 0 ? a->max_body : b->max_body;
    c->allowed_origins = a->allowed_origins ? a->allowed_origins : b->allowed_origins;
    c->allowed_hosts = a->allowed_hosts ? a->allowed_hosts : b->allowed_hosts;
    c->client_timeout = a->client_timeout >= 0 ? a->client_timeout : b->client_timeout;
    c->sse_retry_ms = a->sse_retry_ms >= 0 ? a->sse_retry_ms : b->sse_retry_ms;
    c->page_size = a->page_size >= 0 ? a->page_size : b->page_size;
    c->default_principal = a->default_principal ? a->default_principal : b->default_principal;
    c->auth_mode = a->auth_mode != GMCP_AUTH_UNSET ? a->auth_mode : b->auth_mode;
    c->upload_max = a->upload_max >= 0 ? a->upload_max : b->upload_max;
    c->upload_quota = a->upload_quota >= 0 ? a->upload_quota : b->upload_quota;
    c->upload_rate = a->upload_rate >= 0 ? a->upload_rate : b->upload_rate;
    c->upload_key_rate = a->upload_key_rate >= 0 ? a->upload_key_rate : b->upload_key_rate;
    return c;
}

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    gmcp_srv_conf *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->session_idle = -1;
    c->event_retention = -1;
    c->gemini_timeout = -1;
    c->gemini_connect_timeout = -1;
    c->gemini_retries = -1;
    c->tool_timeout = -1;
    c->chat_idle = -1;
    c->breaker_threshold = -1;
    c->breaker_cooldown = -1;
    c->ratelimit_store = -1;
    c->limiter_slots = -1;
    c->usage_flush = -1;
    c->upload_expiry = -1;
    return c;
}

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    gmcp_srv_conf *b = basev, *a = addv, *c = apr_pcalloc(p, sizeof(*c));
    c->session_idle = a->session_idle >= 0 ? a->session_idle : b->session_idle;
    c->event_retention = a->event_retention >= 0 ? a->event_retention : b->event_retention;
    c->state_secret = a->state_secret ? a->state_secret : b->state_secret;
    c->gemini_key = a->gemini_key ? a->gemini_key : b->gemini_key;
    c->gemini_base = a->gemini_base ? a->gemini_base : b->gemini_base;
    c->gemini_model = a->gemini_model ? a->gemini_model : b->gemini_model;
    c->gemini_timeout = a->gemini_timeout >= 0 ? a->gemini_timeout : b->gemini_timeout;
    c->gemini_connect_timeout = a->gemini_connect_timeout >= 0 ? a->gemini_connect_timeout
                                                               : b->gemini_connect_timeout;
    c->gemini_retries = a->gemini_retries >= 0 ? a->gemini_retries : b->gemini_retries;
    c->tool_timeout = a->tool_timeout >= 0 ? a->tool_timeout : b->tool_timeout;
    c->chat_idle = a->chat_idle >= 0 ? a->chat_idle : b->chat_idle;
    c->breaker_threshold = a->breaker_threshold >= 0 ? a->breaker_threshold
                                                     : b->breaker_threshold;
    c->breaker_cooldown = a->breaker_cooldown >= 0 ? a->breaker_cooldown : b->breaker_cooldown;
    c->key_pepper = a->key_pepper ? a->key_pepper : b->key_pepper;
    c->ratelimit_store = a->ratelimit_store >= 0 ? a->ratelimit_store : b->ratelimit_store;
    c->limiter_slots = a->limiter_slots >= 0 ? a->limiter_slots : b->limiter_slots;
    c->usage_flush = a->usage_flush >= 0 ? a->usage_flush : b->usage_flush;
    c->upload_dir = a->upload_dir ? a->upload_dir : b->upload_dir;
    c->upload_expiry = a->upload_expiry >= 0 ? a->upload_expiry : b->upload_expiry;
    return c;
}

apr_off_t gmcp_conf_max_body(const gmcp_dir_conf *c)
{ return c->max_body >= 0 ? c->max_body : GMCP_DEFAULT_MAX_BODY; }
apr_interval_time_t gmcp_conf_client_timeout(const gmcp_dir_conf *c)
{ return c->client_timeout >= 0 ? c->client_timeout : GMCP_DEFAULT_CLIENT_TIMEOUT; }
int gmcp_conf_sse_retry(const gmcp_dir_conf *c)
{ return c->sse_retry_ms >= 0 ? c->sse_retry_ms : GMCP_DEFAULT_SSE_RETRY; }
const char *gmcp_conf_principal(const gmcp_dir_conf *c)
{ return c->default_principal ? c->default_principal : GMCP_DEFAULT_PRINCIPAL; }
apr_int64_t gmcp_conf_session_idle(const gmcp_srv_conf *c)
{ return c->session_idle >= 0 ? c->session_idle : GMCP_DEFAULT_SESSION_IDLE; }
apr_int64_t gmcp_conf_event_retention(const gmcp_srv_conf *c)
{ return c->event_retention >= 0 ? c->event_retention : GMCP_DEFAULT_EVENT_RETENTION; }
apr_interval_time_t gmcp_conf_tool_timeout(const gmcp_srv_conf *c)
{ return apr_time_from_sec(c->tool_timeout >= 0 ? c->tool_timeout : 300); }
apr_int64_t gmcp_conf_chat_idle(const gmcp_srv_conf *c)
{ return c->chat_idle >= 0 ? c->chat_idle : 72 * 3600; }

/* Parse a whole number of `unit`s within [min, max]; errors name the directive. */
static const char *parse_num(cmd_parms *cmd, const char *arg, apr_int64_t min,
                             apr_int64_t max, apr_int64_t *out)
{
    apr_uint64_t v;
    if (gmcp_parse_u64(arg, &v) != 0 || (apr_int64_t)v < min || (apr_int64_t)v > max)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a whole number between %"
                            APR_INT64_T_FMT " and %" APR_INT64_T_FMT, cmd->cmd->name, arg,
                            min, max);
    *out = (apr_int64_t)v;
    return NULL;
}

static const char *set_max_body(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    apr_uint64_t v;
    if (gmcp_parse_size(arg, &v) != 0 || v < 1024 || v > (apr_uint64_t)1 << 30)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a size between 1K and 1G "
                            "(bytes, or with a K/M/G suffix)", cmd->cmd->name, arg);
    c->max_body = (apr_off_t)v;
    return NULL;
}

static const char *set_client_timeout(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    apr_int64_t v = 0;
    const char *err = parse_num(cmd, arg, 1, 3600, &v);
    if (!err) c->client_timeout = apr_time_from_sec(v);
    return err;
}

static const char *set_sse_retry(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    apr_int64_t v = 0;
    const char *err = parse_num(cmd, arg, 0, 600000, &v);
    if (!err) c->sse_retry_ms = (int)v;
    return err;
}

static const char *set_page_size(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    apr_int64_t v = 0;
    const char *err = parse_num(cmd, arg, 1, 1000, &v);
    if (!err) c->page_size = (int)v;
    return err;
}

static const char *set_principal(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    if (!*arg || strlen(arg) > 128)
        return apr_psprintf(cmd->pool, "%s: the principal must be 1-128 characters",
                            cmd->cmd->name);
    c->default_principal = arg;
    return NULL;
}

static const char *add_origin(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    apr_uri_t u;
    if (strcmp(arg, "*") != 0
        && (apr_uri_parse(cmd->pool, arg, &u) != APR_SUCCESS || !u.scheme || !u.hostname
            || (u.path && *u.path && strcmp(u.path, "/") != 0) || u.query))
        return apr_psprintf(cmd->pool, "%s: '%s' is not an origin like https://app.example.com "
                            "or http://localhost:3000 (or *)", cmd->cmd->name, arg);
    if (!c->allowed_origins) c->allowed_origins = apr_array_make(cmd->pool, 4, sizeof(char *));
    APR_ARRAY_PUSH(c->allowed_origins, const char *) =
        apr_pstrdup(cmd->pool, (u.path && !strcmp(u.path, "/"))
                    ? apr_pstrndup(cmd->pool, arg, strlen(arg) - 1) : arg);
    return NULL;
}

static const char *add_host(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    const char *p;
    for (p = arg; *p; p++)
        if (!(apr_isalnum(*p) || *p == '.' || *p == '-' || *p == ':' || *p == '[' || *p == ']'
              || *p == '*'))
            return apr_psprintf(cmd->pool, "%s: '%s' is not a host name (optionally with "
                                ":port, or *)", cmd->cmd->name, arg);
    if (!c->allowed_hosts) c->allowed_hosts = apr_array_make(cmd->pool, 4, sizeof(char *));
    APR_ARRAY_PUSH(c->allowed_hosts, const char *) = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

static const char *set_session_idle(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    (void)dc;
    return parse_num(cmd, arg, 1, 365 * 24 * 3600, &c->session_idle);
}

static const char *set_event_retention(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    (void)dc;
    return parse_num(cmd, arg, 1, 30 * 24 * 3600, &c->event_retention);
}

/* GeminiMCPGeminiKey, GeminiMCPKeyPepper, GeminiMCPStateSecret: where a secret is read
 * from (cmd->info: the field's offset in gmcp_srv_conf), never the secret itself. */
static const char *set_secret(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) return err;
    if (strncmp(arg, "file:", 5) != 0 && strncmp(arg, "env:", 4) != 0)
        return apr_psprintf(cmd->pool, "%s: use file:/path/to/secret or env:VARIABLE "
                            "(the secret itself never goes in the configuration)",
                            cmd->cmd->name);
    *(const char **)((char *)c + (apr_size_t)cmd->info) = arg;
    return NULL;
}

static const char *set_gemini_base(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_uri_t u;
    (void)dc;
    if (err) return err;
    if (apr_uri_parse(cmd->pool, arg, &u) != APR_SUCCESS || !u.scheme || !u.hostname
        || (strcasecmp(u.scheme, "https") && strcasecmp(u.scheme, "http")) || u.query)
        return apr_psprintf(cmd->pool, "%s: '%s' is not an http(s) URL like %s",
                            cmd->cmd->name, arg, GMCP_GEMINI_DEFAULT_BASE);
    c->gemini_base = apr_pstrndup(cmd->pool, arg, strlen(arg) - (arg[strlen(arg) - 1] == '/'));
    return NULL;
}

static const char *set_gemini_model(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) return err;
    if (!gmcp_gemini_model_path(cmd->pool, arg))
        return apr_psprintf(cmd->pool, "%s: '%s' is not a model name like %s",
                            cmd->cmd->name, arg, GMCP_GEMINI_DEFAULT_MODEL);
    c->gemini_model = arg;
    return NULL;
}

static const char *set_gemini_num(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t v = 0;
    const char *which = cmd->cmd->name;
    (void)dc;
    if (err) return err;
    if (!strcasecmp(which, "GeminiMCPGeminiRetries")) {
        if ((err = parse_num(cmd, arg, 0, 10, &v)) == NULL) c->gemini_retries = (int)v;
    }
    else if (!strcasecmp(which, "GeminiMCPGeminiTimeout")) {
        if ((err = parse_num(cmd, arg, 1, 3600, &v)) == NULL) c->gemini_timeout = v;
    }
    else if (!strcasecmp(which, "GeminiMCPGeminiConnectTimeout")) {
        if ((err = parse_num(cmd, arg, 1, 300, &v)) == NULL) c->gemini_connect_timeout = v;
    }
    else if (!strcasecmp(which, "GeminiMCPBreakerThreshold")) {
        if ((err = parse_num(cmd, arg, 1, 1000, &v)) == NULL) c->breaker_threshold = (int)v;
    }
    else if (!strcasecmp(which, "GeminiMCPBreakerCooldown")) {
        if ((err = parse_num(cmd, arg, 1, 3600, &v)) == NULL) c->breaker_cooldown = v;
    }
    else if (!strcasecmp(which, "GeminiMCPChatIdleTimeout")) {
        if ((err = parse_num(cmd, arg, 1, 365 * 24 * 3600, &v)) == NULL) c->chat_idle = v;
    }
    else if ((err = parse_num(cmd, arg, 1, 24 * 3600, &v)) == NULL) {
        c->tool_timeout = v;
    }
    return err;
}

int gmcp_auth_modes_used;

static const char *set_auth(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    if (!strcasecmp(arg, "apikey")) c->auth_mode = GMCP_AUTH_APIKEY;
    else if (!strcasecmp(arg, "apache")) c->auth_mode = GMCP_AUTH_APACHE;
    else if (!strcasecmp(arg, "none")) c->auth_mode = GMCP_AUTH_NONE;
    else return apr_psprintf(cmd->pool, "%s: '%s' is not one of apikey, apache, none",
                             cmd->cmd->name, arg);
    gmcp_auth_modes_used |= 1 << c->auth_mode;
    return NULL;
}

static const char *set_access_num(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t v = 0;
    (void)dc;
    if (err) return err;
    if (!strcasecmp(cmd->cmd->name, "GeminiMCPRateLimitStore")) {
        if (!strcasecmp(arg, "shm")) c->ratelimit_store = 0;
        else if (!strcasecmp(arg, "dbd")) c->ratelimit_store = 1;
        else return apr_psprintf(cmd->pool, "%s: '%s' is not shm or dbd", cmd->cmd->name, arg);
        return NULL;
    }
    if (!strcasecmp(cmd->cmd->name, "GeminiMCPLimiterSlots")) {
        if ((err = parse_num(cmd, arg, 64, 1 << 20, &v)) == NULL) c->limiter_slots = (int)v;
        return err;
    }
    if ((err = parse_num(cmd, arg, 1, 3600, &v)) == NULL) c->usage_flush = v;
    return err;
}

static const char *set_upload_max(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    apr_uint64_t v;
    if (gmcp_parse_size(arg, &v) != 0 || v < 1 || v > (apr_uint64_t)1 << 40)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a size between 1 byte and 1T "
                            "(bytes, or with a K/M/G suffix)", cmd->cmd->name, arg);
    if (!strcasecmp(cmd->cmd->name, "GeminiMCPUploadQuota")) c->upload_quota = (apr_off_t)v;
    else if (!strcasecmp(cmd->cmd->name, "GeminiMCPUploadRate")) c->upload_rate = (apr_int64_t)v;
    else if (!strcasecmp(cmd->cmd->name, "GeminiMCPUploadKeyRate"))
        c->upload_key_rate = (apr_int64_t)v;
    else c->upload_max = (apr_off_t)v;
    return NULL;
}

static const char *set_upload_dir(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) return err;
    c->upload_dir = ap_server_root_relative(cmd->pool, arg);
    if (!c->upload_dir)
        return apr_psprintf(cmd->pool, "%s: invalid path '%s'", cmd->cmd->name, arg);
    return NULL;
}

static const char *set_upload_expiry(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    (void)dc;
    return parse_num(cmd, arg, 1, 365 * 24 * 3600, &c->upload_expiry);
}

/* GeminiMCPUsageRetention, GeminiMCPUsageDailyRetention, GeminiMCPAuditRetention:
 * applied by `gmcpctl cleanup` (which reads them from this configuration), checked
 * here so that `apachectl -t` catches a bad value. One database: global only. */
static const char *set_retention(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t v;
    (void)dc;
    if (err) return err;
    if ((err = gmcp_duration_parse(cmd->pool, arg, GMCP_RETENTION_MIN, GMCP_RETENTION_MAX,
                                   &v)) != NULL)
        return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, err);
    return NULL;
}

static const command_rec gmcp_cmds[] = {
    AP_INIT_TAKE1("GeminiMCPMaxBodySize", set_max_body, NULL, RSRC_CONF | ACCESS_CONF,
                  "Largest accepted JSON-RPC request body (default 1M)"),
    AP_INIT_ITERATE("GeminiMCPAllowedOrigins", add_origin, NULL, RSRC_CONF | ACCESS_CONF,
                    "Origins allowed besides the endpoint's own (or *)"),
    AP_INIT_ITERATE("GeminiMCPAllowedHosts", add_host, NULL, RSRC_CONF | ACCESS_CONF,
                    "Host header values accepted (DNS-rebinding protection); default: the "
                    "ServerName, ServerAlias and loopback names"),
    AP_INIT_TAKE1("GeminiMCPClientRequestTimeout", set_client_timeout, NULL, RSRC_CONF | ACCESS_CONF,
                  "Seconds a tool waits for the client's answer to sampling/elicitation"),
    AP_INIT_TAKE1("GeminiMCPSSERetry", set_sse_retry, NULL, RSRC_CONF | ACCESS_CONF,
                  "Reconnection delay (ms) announced in SSE 'retry:' fields"),
    AP_INIT_TAKE1("GeminiMCPPageSize", set_page_size, NULL, RSRC_CONF | ACCESS_CONF,
                  "Items per page of tools/list, resources/list, prompts/list"),
    AP_INIT_TAKE1("GeminiMCPDefaultPrincipal", set_principal, NULL, RSRC_CONF | ACCESS_CONF,
                  "Owner recorded for sessions when no caller identity is known"),
    AP_INIT_TAKE1("GeminiMCPSessionIdleTimeout", set_session_idle, NULL, RSRC_CONF,
                  "Seconds after which an idle MCP session expires (default 86400)"),
    AP_INIT_TAKE1("GeminiMCPEventRetention", set_event_retention, NULL, RSRC_CONF,
                  "Seconds stored SSE events stay available for resumption (default 3600)"),
    AP_INIT_TAKE1("GeminiMCPGeminiKey", set_secret,
                  (void *)APR_OFFSETOF(gmcp_srv_conf, gemini_key), RSRC_CONF,
                  "file:PATH or env:NAME holding the Gemini API key"),
    AP_INIT_TAKE1("GeminiMCPGeminiBaseURL", set_gemini_base, NULL, RSRC_CONF,
                  "Gemini API base URL (default " GMCP_GEMINI_DEFAULT_BASE ")"),
    AP_INIT_TAKE1("GeminiMCPGeminiModel", set_gemini_model, NULL, RSRC_CONF,
                  "Default model (default " GMCP_GEMINI_DEFAULT_MODEL ")"),
    AP_INIT_TAKE1("GeminiMCPGeminiTimeout", set_gemini_num, NULL, RSRC_CONF,
                  "Seconds one Gemini call may take (default 120)"),
    AP_INIT_TAKE1("GeminiMCPGeminiConnectTimeout", set_gemini_num, NULL, RSRC_CONF,
                  "Seconds to connect to Gemini (default 10)"),
    AP_INIT_TAKE1("GeminiMCPGeminiRetries", set_gemini_num, NULL, RSRC_CONF,
                  "Retries of 429/5xx/transport failures (default 3)"),
    AP_INIT_TAKE1("GeminiMCPBreakerThreshold", set_gemini_num, NULL, RSRC_CONF,
                  "Consecutive failed Gemini calls that open the circuit breaker (default 5)"),
    AP_INIT_TAKE1("GeminiMCPBreakerCooldown", set_gemini_num, NULL, RSRC_CONF,
                  "Seconds the breaker stays open before a probe call (default 30)"),
    AP_INIT_TAKE1("GeminiMCPChatIdleTimeout", set_gemini_num, NULL, RSRC_CONF,
                  "Seconds after which an unused chat session expires (default 259200)"),
    AP_INIT_TAKE1("GeminiMCPToolTimeout", set_gemini_num, NULL, RSRC_CONF,
                  "Seconds a tool call may take in all, retries included (default 300)"),
    AP_INIT_TAKE1("GeminiMCPAuth", set_auth, NULL, RSRC_CONF | ACCESS_CONF,
                  "How callers are identified: apikey (Authorization: Bearer), apache "
                  "(r->user from any Apache auth module) or none (default)"),
    AP_INIT_TAKE1("GeminiMCPKeyPepper", set_secret,
                  (void *)APR_OFFSETOF(gmcp_srv_conf, key_pepper), RSRC_CONF,
                  "file:PATH or env:NAME holding the key that hashes API keys (needed by "
                  "GeminiMCPAuth apikey; gmcpctl reads the same setting)"),
    AP_INIT_TAKE1("GeminiMCPRateLimitStore", set_access_num, NULL, RSRC_CONF,
                  "Where request-rate state lives: shm (this server, default) or dbd "
                  "(the database, shared by several httpd nodes)"),
    AP_INIT_TAKE1("GeminiMCPLimiterSlots", set_access_num, NULL, RSRC_CONF,
                  "Keys tracked at once in shared memory for limits and usage (default 4096)"),
    AP_INIT_TAKE1("GeminiMCPUsageFlushInterval", set_access_num, NULL, RSRC_CONF,
                  "Seconds between writes of aggregated usage to the database (default 10)"),
    AP_INIT_TAKE1("GeminiMCPUploadDir", set_upload_dir, NULL, RSRC_CONF,
                  "Spool directory for tus uploads (writable by the httpd user)"),
    AP_INIT_TAKE1("GeminiMCPUploadMaxSize", set_upload_max, NULL, RSRC_CONF | ACCESS_CONF,
                  "Largest upload (Tus-Max-Size; default 2G)"),
    AP_INIT_TAKE1("GeminiMCPUploadQuota", set_upload_max, NULL, RSRC_CONF | ACCESS_CONF,
                  "Spool space one owner's live uploads may take (default: no limit)"),
    AP_INIT_TAKE1("GeminiMCPUploadRate", set_upload_max, NULL, RSRC_CONF | ACCESS_CONF,
                  "Bytes per second one upload may arrive at (K/M/G suffix; default: no limit)"),
    AP_INIT_TAKE1("GeminiMCPUploadKeyRate", set_upload_max, NULL, RSRC_CONF | ACCESS_CONF,
                  "Bytes per second all of one caller's uploads together may arrive at, "
                  "across processes (default: no limit)"),
    AP_INIT_TAKE1("GeminiMCPUploadExpiry", set_upload_expiry, NULL, RSRC_CONF,
                  "Seconds an unfinished upload lives after its last PATCH (default 86400)"),
    AP_INIT_TAKE1("GeminiMCPUsageRetention", set_retention, NULL, RSRC_CONF,
                  "How long hourly usage rows are kept before gmcpctl cleanup rolls them "
                  "up per day (N with s/m/h/d; 0 = forever; default 90d)"),
    AP_INIT_TAKE1("GeminiMCPUsageDailyRetention", set_retention, NULL, RSRC_CONF,
                  "How long daily usage roll-ups are kept (0 = forever, the default)"),
    AP_INIT_TAKE1("GeminiMCPAuditRetention", set_retention, NULL, RSRC_CONF,
                  "How long audit log rows are kept (0 = forever, the default)"),
    AP_INIT_TAKE1("GeminiMCPStateSecret", set_secret,
                  (void *)APR_OFFSETOF(gmcp_srv_conf, state_secret), RSRC_CONF,
                  "file:PATH or env:NAME holding the key that seals MRTR requestState; "
                  "set the same one on every node (default: random per start)"),
    {NULL}
};

/* ---- start-up ------------------------------------------------------------------------ */

static int cmp_provider_names(const void *a, const void *b)
{
    return strcmp(((const ap_list_provider_names_t *)a)->provider_name,
                  ((const ap_list_provider_names_t *)b)->provider_name);
}

/* Load (or make) the requestState key before the children fork, so every child of
 * this server shares it; several nodes share it through GeminiMCPStateSecret. */
static int load_state_key(apr_pool_t *p, server_rec *s)
{
    gmcp_srv_conf *c = ap_get_module_config(s->module_config, &gemini_mcp_module);
    const char *val;
    if (!c->state_secret) {
        g_state_key_len = 32;
        g_state_key = apr_palloc(p, g_state_key_len);
        if (RAND_bytes(g_state_key, (int)g_state_key_len) != 1) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, GMCP_LOGNO(0103)
                         "gemini_mcp: cannot get random bytes for the state key");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        return OK;
    }
    val = gmcp_read_secret(p, c->state_secret);
    if (!val || strlen(val) < 16) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, GMCP_LOGNO(0104)
                     "gemini_mcp: GeminiMCPStateSecret %s is missing, unreadable or shorter "
                     "than 16 characters", c->state_secret);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    g_state_key = (unsigned char *)apr_pstrdup(p, val);
    g_state_key_len = strlen(val);
    return OK;
}

static void breaker_lock(void *baton)
{
    (void)baton;
    apr_global_mutex_lock(g_breaker_mutex);
}

static void breaker_unlock(void *baton)
{
    (void)baton;
    apr_global_mutex_unlock(g_breaker_mutex);
}

static int make_breaker(apr_pool_t *p, server_rec *s)
{
    gmcp_srv_conf *c = ap_get_module_config(s->module_config, &gemini_mcp_module);
    apr_shm_t *shm = NULL;
    apr_status_t rv = apr_shm_create(&shm, sizeof(gmcp_breaker_state), NULL, p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, GMCP_LOGNO(0108)
                     "gemini_mcp: cannot create shared memory for the circuit breaker");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rv = ap_global_mutex_create(&g_breaker_mutex, NULL, BREAKER_MUTEX, NULL, s, p, 0);
    if (rv != APR_SUCCESS) return HTTP_INTERNAL_SERVER_ERROR;   /* httpd logged why */
    memset(&g_breaker, 0, sizeof(g_breaker));
    g_breaker.st = apr_shm_baseaddr_get(shm);
    memset(g_breaker.st, 0, sizeof(*g_breaker.st));
    g_breaker.lock = breaker_lock;
    g_breaker.unlock = breaker_unlock;
    g_breaker.threshold = c->breaker_threshold > 0 ? (unsigned int)c->breaker_threshold : 5;
    g_breaker.cooldown = apr_time_from_sec(c->breaker_cooldown > 0 ? c->breaker_cooldown : 30);
    return OK;
}

void gmcp_breaker_read(gmcp_breaker_state *out)
{
    memset(out, 0, sizeof(*out));
    if (!g_breaker.st) return;
    g_breaker.lock(NULL);
    *out = *g_breaker.st;
    g_breaker.unlock(NULL);
}

int gmcp_gemini_configured(void)
{
    return g_gemini.api_key != NULL;
}

/* Gemini settings for the provider; a missing key is said plainly, once, at start. */
static void load_gemini(apr_pool_t *p, server_rec *s)
{
    gmcp_srv_conf *c = ap_get_module_config(s->module_config, &gemini_mcp_module);
    memset(&g_gemini, 0, sizeof(g_gemini));
    g_gemini.base_url = c->gemini_base ? c->gemini_base : GMCP_GEMINI_DEFAULT_BASE;
    g_gemini.default_model = c->gemini_model ? c->gemini_model : GMCP_GEMINI_DEFAULT_MODEL;
    g_gemini.timeout = apr_time_from_sec(c->gemini_timeout >= 0 ? c->gemini_timeout : 120);
    g_gemini.connect_timeout = apr_time_from_sec(c->gemini_connect_timeout >= 0
                                                 ? c->gemini_connect_timeout : 10);
    g_gemini.max_retries = c->gemini_retries >= 0 ? c->gemini_retries : 3;
    g_gemini.http = gmcp_http_for_thread;
    g_gemini.chat_idle = gmcp_conf_chat_idle(c);
    g_gemini.breaker = &g_breaker;
    g_gemini.upload_dir = c->upload_dir;
    g_gemini.api_key = c->gemini_key ? gmcp_read_secret(p, c->gemini_key) : NULL;
    if (!g_gemini.api_key)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, GMCP_LOGNO(0105)
                     "gemini_mcp: no Gemini API key (%s%s): the gemini_* tools will answer "
                     "that Gemini is not configured", c->gemini_key ? "nothing in " :
                     "GeminiMCPGeminiKey is not set",
                     c->gemini_key ? c->gemini_key : "");
}

/* The core's failures go to the error log, with the request of the thread when the
 * handler named one (gmcp_elog_context), else the main server. */
static void elog_print(const char *file, int line, gmcp_elog_level level, apr_status_t rv,
                       const char *tag, const char *msg, void *baton)
{
    static const int levels[] = { APLOG_ERR, APLOG_WARNING, APLOG_INFO, APLOG_DEBUG };
    request_rec *r = gmcp_elog_context();
    int lvl = levels[level];
    if (r)
        ap_log_rerror(file, line, APLOG_MODULE_INDEX, lvl, rv, r, "%s: gemini_mcp: %s",
                      tag, msg);
    else
        ap_log_error(file, line, APLOG_MODULE_INDEX, lvl, rv, (server_rec *)baton,
                     "%s: gemini_mcp: %s", tag, msg);
}

static int elog_enabled(gmcp_elog_level level, void *baton)
{
    static const int levels[] = { APLOG_ERR, APLOG_WARNING, APLOG_INFO, APLOG_DEBUG };
    request_rec *r = gmcp_elog_context();
    return r ? APLOG_R_MODULE_IS_LEVEL(r, APLOG_MODULE_INDEX, levels[level])
             : APLOG_MODULE_IS_LEVEL((server_rec *)baton, APLOG_MODULE_INDEX, levels[level]);
}

/* Every handler of ours runs with its request named as the core's log context. */
static int gmcp_handler(request_rec *r)
{
    int st;
    if (!r->handler || strncmp(r->handler, "gemini-mcp", 10) != 0) return DECLINED;
    gmcp_elog_context_set(r);
    st = gmcp_mcp_handler(r);
    if (st == DECLINED) st = gmcp_upload_handler(r);
    if (st == DECLINED) st = gmcp_status_handler(r);
    gmcp_elog_context_set(NULL);
    return st;
}

static void gmcp_child_init(apr_pool_t *p, server_rec *s)
{
    if (g_breaker_mutex
        && apr_global_mutex_child_init(&g_breaker_mutex,
                                       apr_global_mutex_lockfile(g_breaker_mutex), p)
           != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, GMCP_LOGNO(0109)
                     "gemini_mcp: cannot attach to the circuit breaker's mutex");
    gmcp_elog_set(elog_print, elog_enabled, s);
    gmcp_access_child_init(p, s);
    if (gmcp_http_child_init(p) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, GMCP_LOGNO(0107)
                     "gemini_mcp: cannot create the per-thread HTTP client key");
}

static int gmcp_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                            server_rec *s)
{
    apr_array_header_t *names = ap_list_provider_names(pconf, GMCP_PROVIDER_GROUP,
                                                       GMCP_PROVIDER_VERSION);
    const gmcp_provider **provs;
    const char *err = NULL;
    int i;
    (void)plog; (void)ptemp;

    /* Providers in name order, so listings are stable across restarts. */
    qsort(names->elts, (size_t)names->nelts, names->elt_size, cmp_provider_names);
    provs = apr_pcalloc(pconf, sizeof(*provs) * (size_t)(names->nelts + 2));
    /* provs[0] is the product's own provider (filled below), then every module's. */
    for (i = 0; i < names->nelts; i++) {
        const char *n = APR_ARRAY_IDX(names, i, ap_list_provider_names_t).provider_name;
        provs[i + 1] = ap_lookup_provider(GMCP_PROVIDER_GROUP, n, GMCP_PROVIDER_VERSION);
    }
    gmcp_elog_set(elog_print, elog_enabled, s);
    if (load_state_key(pconf, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    /* Once per process, before any thread exists. */
    if (gmcp_http_init() != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, GMCP_LOGNO(0106)
                     "gemini_mcp: cannot initialise libcurl");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (make_breaker(pconf, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    if (gmcp_access_post_config(pconf, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    load_gemini(pconf, s);
    provs[0] = gmcp_gemini_provider(pconf, &g_gemini);
    g_registry = gmcp_registry_create(pconf, provs, names->nelts + 1, &err);
    if (!g_registry) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, GMCP_LOGNO(0101)
                     "gemini_mcp: invalid MCP provider definition: %s", err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, GMCP_LOGNO(0102)
                 "gemini_mcp: %d provider(s), %d tool(s), %d resource(s), %d template(s), "
                 "%d prompt(s)", names->nelts, g_registry->tools->nelts,
                 g_registry->resources->nelts, g_registry->templates->nelts,
                 g_registry->prompts->nelts);
    return OK;
}

const gmcp_server *gmcp_server_for(apr_pool_t *p, const gmcp_dir_conf *c)
{
    gmcp_server *srv = apr_pcalloc(p, sizeof(*srv));
    srv->registry = g_registry;
    srv->page_size = c->page_size > 0 ? c->page_size : GMCP_DEFAULT_PAGE_SIZE;
    srv->server_name = "mod_gemini_mcp";
    srv->server_version = GMCP_VERSION;
    srv->state_key = g_state_key;
    srv->state_key_len = g_state_key_len;
    return srv;
}

static int gmcp_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog; (void)ptemp;
    gmcp_auth_modes_used = 0;
    /* Configurable with the Mutex directive, like httpd's own mutexes. */
    if (ap_mutex_register(pconf, BREAKER_MUTEX, NULL, APR_LOCK_DEFAULT, 0) != APR_SUCCESS)
        return HTTP_INTERNAL_SERVER_ERROR;
    return gmcp_access_pre_config(pconf);
}

static void register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(gmcp_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(gmcp_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(gmcp_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(gmcp_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(gmcp_access_log, NULL, NULL, APR_HOOK_MIDDLE);
}

/* Declared without AP_DECLARE_MODULE: mod_gemini_mcp.h already does APLOG_USE_MODULE
 * for every glue file. */
module AP_MODULE_DECLARE_DATA gemini_mcp_module = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    create_srv_conf,
    merge_srv_conf,
    gmcp_cmds,
    register_hooks,
    AP_MODULE_FLAG_NONE
};
