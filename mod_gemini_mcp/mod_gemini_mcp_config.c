/* mod_gemini_mcp_config.c — directives, defaults and getters, and what post_config
 * publishes for the whole module. Calls no other glue file: every glue file may call
 * it. The numeric directives are rows of one table (NUM below) read by one setter. */
#include "mod_gemini_mcp_config.h"
#include "gmcp_gemini.h"
#include "gmcp_retention.h"
#include "gmcp_scopes.h"
#include "gmcp_uploads.h"
#include "gmcp_util.h"

#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_uri.h>

/* What the configuration read uses of GeminiMCPAuth (bit 1 << mode). */
static int auth_modes_used;
static gmcp_module_state g_state;
/* GeminiMCPOAuthIssuer values and the sections with GeminiMCPAuth ... oauth, of the
 * configuration read (in pconf; the children inherit them). */
static gmcp_oauth_issuer oauth_issuers[GMCP_OAUTH_ISSUERS_MAX];
static int n_oauth_issuers;
static apr_array_header_t *oauth_dcs, *oauth_srvs;

/* ---- create and merge ------------------------------------------------------------------ */

void *gmcp_config_create_dir(apr_pool_t *p, char *dir)
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
    c->upload_durability = -1;
    c->auth_oauth = -1;
    return c;
}

void *gmcp_config_merge_dir(apr_pool_t *p, void *basev, void *addv)
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
    c->auth_oauth = a->auth_mode != GMCP_AUTH_UNSET ? a->auth_oauth : b->auth_oauth;
    c->oauth = a->oauth ? a->oauth : b->oauth;
    c->upload_max = a->upload_max >= 0 ? a->upload_max : b->upload_max;
    c->upload_quota = a->upload_quota >= 0 ? a->upload_quota : b->upload_quota;
    c->upload_rate = a->upload_rate >= 0 ? a->upload_rate : b->upload_rate;
    c->upload_key_rate = a->upload_key_rate >= 0 ? a->upload_key_rate : b->upload_key_rate;
    if (a->upload_durability >= 0) {
        c->upload_durability = a->upload_durability;
        c->upload_sync_lag = a->upload_sync_lag;
        c->upload_sync_secs = a->upload_sync_secs;
    }
    else {
        c->upload_durability = b->upload_durability;
        c->upload_sync_lag = b->upload_sync_lag;
        c->upload_sync_secs = b->upload_sync_secs;
    }
    return c;
}

void *gmcp_config_create_srv(apr_pool_t *p, server_rec *s)
{
    gmcp_srv_conf *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->session_idle = -1;
    c->event_retention = -1;
    c->gemini_timeout = -1;
    c->gemini_connect_timeout = -1;
    c->gemini_retries = -1;
    c->tool_timeout = -1;
    c->task_workers = -1;
    c->task_ttl = -1;
    c->chat_idle = -1;
    c->breaker_threshold = -1;
    c->breaker_cooldown = -1;
    c->ratelimit_store = -1;
    c->limiter_slots = -1;
    c->usage_flush = -1;
    c->upload_expiry = -1;
    c->jwks_min = -1;
    c->jwks_max = -1;
    return c;
}

void *gmcp_config_merge_srv(apr_pool_t *p, void *basev, void *addv)
{
    gmcp_srv_conf *b = basev, *a = addv, *c = apr_pcalloc(p, sizeof(*c));
    c->session_idle = a->session_idle >= 0 ? a->session_idle : b->session_idle;
    c->event_retention = a->event_retention >= 0 ? a->event_retention : b->event_retention;
    c->state_secret = a->state_secret ? a->state_secret : b->state_secret;
    c->gemini_key = a->gemini_key ? a->gemini_key : b->gemini_key;
    c->node_name = a->node_name ? a->node_name : b->node_name;
    c->gemini_base = a->gemini_base ? a->gemini_base : b->gemini_base;
    c->gemini_model = a->gemini_model ? a->gemini_model : b->gemini_model;
    c->gemini_timeout = a->gemini_timeout >= 0 ? a->gemini_timeout : b->gemini_timeout;
    c->gemini_connect_timeout =
        a->gemini_connect_timeout >= 0 ? a->gemini_connect_timeout : b->gemini_connect_timeout;
    c->gemini_retries = a->gemini_retries >= 0 ? a->gemini_retries : b->gemini_retries;
    c->tool_timeout = a->tool_timeout >= 0 ? a->tool_timeout : b->tool_timeout;
    c->task_workers = a->task_workers >= 0 ? a->task_workers : b->task_workers;
    c->task_ttl = a->task_ttl >= 0 ? a->task_ttl : b->task_ttl;
    c->chat_idle = a->chat_idle >= 0 ? a->chat_idle : b->chat_idle;
    c->breaker_threshold = a->breaker_threshold >= 0 ? a->breaker_threshold : b->breaker_threshold;
    c->breaker_cooldown = a->breaker_cooldown >= 0 ? a->breaker_cooldown : b->breaker_cooldown;
    c->key_pepper = a->key_pepper ? a->key_pepper : b->key_pepper;
    c->ratelimit_store = a->ratelimit_store >= 0 ? a->ratelimit_store : b->ratelimit_store;
    c->limiter_slots = a->limiter_slots >= 0 ? a->limiter_slots : b->limiter_slots;
    c->usage_flush = a->usage_flush >= 0 ? a->usage_flush : b->usage_flush;
    c->upload_dir = a->upload_dir ? a->upload_dir : b->upload_dir;
    c->upload_expiry = a->upload_expiry >= 0 ? a->upload_expiry : b->upload_expiry;
    c->jwks_min = a->jwks_min >= 0 ? a->jwks_min : b->jwks_min;
    c->jwks_max = a->jwks_max >= 0 ? a->jwks_max : b->jwks_max;
    return c;
}

void gmcp_config_pre_config(void)
{
    auth_modes_used = 0;
    n_oauth_issuers = 0;
    oauth_dcs = oauth_srvs = NULL;
}

int gmcp_conf_oauth_issuers(const gmcp_oauth_issuer **out)
{
    *out = oauth_issuers;
    return n_oauth_issuers;
}

int gmcp_conf_oauth_sections(gmcp_dir_conf *const **dcs, server_rec *const **srvs)
{
    if (!oauth_dcs) return 0;
    *dcs = (gmcp_dir_conf *const *)oauth_dcs->elts;
    *srvs = (server_rec *const *)oauth_srvs->elts;
    return oauth_dcs->nelts;
}

int gmcp_conf_oauth_on(const gmcp_dir_conf *c) { return c->auth_oauth == 1 && c->oauth; }

apr_int64_t gmcp_conf_oauth_leeway(const gmcp_oauth_conf *o)
{
    return o->leeway >= 0 ? o->leeway : 60;
}

apr_int64_t gmcp_conf_jwks_min(const gmcp_srv_conf *c)
{
    return c->jwks_min >= 0 ? c->jwks_min : 10;
}

apr_int64_t gmcp_conf_jwks_max(const gmcp_srv_conf *c)
{
    return c->jwks_max >= 0 ? c->jwks_max : 3600;
}

int gmcp_conf_auth_mode_used(int mode) { return (auth_modes_used & (1 << mode)) != 0; }

const gmcp_dir_conf *gmcp_config_dir(const request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &gemini_mcp_module);
}

const gmcp_srv_conf *gmcp_config_srv(const server_rec *s)
{
    return ap_get_module_config(s->module_config, &gemini_mcp_module);
}

/* ---- effective values -------------------------------------------------------------------- */

apr_off_t gmcp_conf_max_body(const gmcp_dir_conf *c)
{
    return c->max_body >= 0 ? c->max_body : GMCP_DEFAULT_MAX_BODY;
}

apr_interval_time_t gmcp_conf_client_timeout(const gmcp_dir_conf *c)
{
    return c->client_timeout >= 0 ? c->client_timeout : GMCP_DEFAULT_CLIENT_TIMEOUT;
}

int gmcp_conf_sse_retry(const gmcp_dir_conf *c)
{
    return c->sse_retry_ms >= 0 ? c->sse_retry_ms : GMCP_DEFAULT_SSE_RETRY;
}

int gmcp_conf_page_size(const gmcp_dir_conf *c)
{
    return c->page_size > 0 ? c->page_size : GMCP_DEFAULT_PAGE_SIZE;
}

const char *gmcp_conf_principal(const gmcp_dir_conf *c)
{
    return c->default_principal ? c->default_principal : GMCP_DEFAULT_PRINCIPAL;
}

apr_off_t gmcp_conf_upload_max(const gmcp_dir_conf *c)
{
    return c->upload_max >= 0 ? c->upload_max : (apr_off_t)2 << 30;
}

int gmcp_conf_upload_interval(const gmcp_dir_conf *c, apr_int64_t *lag, apr_int64_t *secs)
{
    if (c->upload_durability != GMCP_DURABILITY_INTERVAL) return 0;
    *lag = c->upload_sync_lag;
    *secs = c->upload_sync_secs;
    return 1;
}

apr_int64_t gmcp_conf_upload_expiry(const gmcp_srv_conf *c)
{
    return c->upload_expiry >= 0 ? c->upload_expiry : 24 * 3600;
}

apr_int64_t gmcp_conf_session_idle(const gmcp_srv_conf *c)
{
    return c->session_idle >= 0 ? c->session_idle : GMCP_DEFAULT_SESSION_IDLE;
}

apr_int64_t gmcp_conf_event_retention(const gmcp_srv_conf *c)
{
    return c->event_retention >= 0 ? c->event_retention : GMCP_DEFAULT_EVENT_RETENTION;
}

apr_interval_time_t gmcp_conf_tool_timeout(const gmcp_srv_conf *c)
{
    return apr_time_from_sec(c->tool_timeout >= 0 ? c->tool_timeout : 300);
}

int gmcp_conf_task_workers(const gmcp_srv_conf *c)
{
    return c->task_workers >= 0 ? (int)c->task_workers : 4;
}

apr_int64_t gmcp_conf_task_ttl(const gmcp_srv_conf *c)
{
    return c->task_ttl >= 0 ? c->task_ttl : 3600;
}

apr_int64_t gmcp_conf_chat_idle(const gmcp_srv_conf *c)
{
    return c->chat_idle >= 0 ? c->chat_idle : 72 * 3600;
}

apr_interval_time_t gmcp_conf_gemini_timeout(const gmcp_srv_conf *c)
{
    return apr_time_from_sec(c->gemini_timeout >= 0 ? c->gemini_timeout : 120);
}

apr_interval_time_t gmcp_conf_gemini_connect_timeout(const gmcp_srv_conf *c)
{
    return apr_time_from_sec(c->gemini_connect_timeout >= 0 ? c->gemini_connect_timeout : 10);
}

int gmcp_conf_gemini_retries(const gmcp_srv_conf *c)
{
    return c->gemini_retries >= 0 ? c->gemini_retries : 3;
}

unsigned int gmcp_conf_breaker_threshold(const gmcp_srv_conf *c)
{
    return c->breaker_threshold > 0 ? (unsigned int)c->breaker_threshold : 5;
}

apr_interval_time_t gmcp_conf_breaker_cooldown(const gmcp_srv_conf *c)
{
    return apr_time_from_sec(c->breaker_cooldown > 0 ? c->breaker_cooldown : 30);
}

apr_uint32_t gmcp_conf_limiter_slots(const gmcp_srv_conf *c)
{
    return c->limiter_slots > 0 ? (apr_uint32_t)c->limiter_slots : 4096;
}

apr_int64_t gmcp_conf_usage_flush(const gmcp_srv_conf *c)
{
    return c->usage_flush > 0 ? c->usage_flush : 10;
}

/* ---- numeric directives ------------------------------------------------------------------ */

/* Where a numeric directive's value is kept: the location's settings, the server's, or
 * the main server's only (refused inside <VirtualHost>). */
typedef enum { IN_DIR, IN_SRV, IN_MAIN } num_scope;
#define CONF_OF_IN_DIR gmcp_dir_conf
#define CONF_OF_IN_SRV gmcp_srv_conf
#define CONF_OF_IN_MAIN gmcp_srv_conf

/* How it is written: a whole number, a whole number of seconds kept as an apr time
 * (microseconds), or a size in bytes with an optional K/M/G/T suffix. */
typedef enum { WHOLE, SECONDS_AS_TIME, SIZE } num_kind;

typedef struct {
    num_scope scope;
    num_kind kind;
    apr_size_t offset; /* of the field in its settings */
    apr_size_t width;  /* of the field: an int or 64 bits */
    apr_int64_t min, max;
} num_spec;

/* One row of the table: the directive, where its value goes (scope and field), how it
 * is written, its bounds, where it may appear, and its help. */
#define NUM(name, scope, field, kind, min, max, where, help)                                    \
    AP_INIT_TAKE1(name, set_num,                                                                \
                  ((void *)&(const num_spec){scope, kind, APR_OFFSETOF(CONF_OF_##scope, field), \
                                             sizeof(((CONF_OF_##scope *)0)->field), min, max}), \
                  where, help)

static gmcp_srv_conf *srv_conf(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
}

/* Parse a whole number of `unit`s within [min, max]; errors name the directive. */
static const char *parse_num(cmd_parms *cmd, const char *arg, apr_int64_t min, apr_int64_t max,
                             apr_int64_t *out)
{
    apr_uint64_t v;
    if (gmcp_parse_u64(arg, &v) != 0 || (apr_int64_t)v < min || (apr_int64_t)v > max)
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not a whole number between %" APR_INT64_T_FMT
                            " and %" APR_INT64_T_FMT,
                            cmd->cmd->name, arg, min, max);
    *out = (apr_int64_t)v;
    return NULL;
}

/* A bound of a size directive as its message writes it: "1 byte", "1K", "1G", "1T". */
static const char *size_text(apr_pool_t *p, apr_int64_t v)
{
    static const char units[] = "TGMK";
    int i;
    if (v == 1) return "1 byte";
    for (i = 0; units[i]; i++) {
        apr_int64_t unit = (apr_int64_t)1 << (10 * (4 - i));
        if (v % unit == 0) return apr_psprintf(p, "%" APR_INT64_T_FMT "%c", v / unit, units[i]);
    }
    return apr_psprintf(p, "%" APR_INT64_T_FMT, v);
}

static const char *parse_size(cmd_parms *cmd, const char *arg, apr_int64_t min, apr_int64_t max,
                              apr_int64_t *out)
{
    apr_uint64_t v;
    if (gmcp_parse_size(arg, &v) != 0 || v < (apr_uint64_t)min || v > (apr_uint64_t)max)
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not a size between %s and %s "
                            "(bytes, or with a K/M/G suffix)",
                            cmd->cmd->name, arg, size_text(cmd->pool, min),
                            size_text(cmd->pool, max));
    *out = (apr_int64_t)v;
    return NULL;
}

/* Every numeric directive (cmd->info: its num_spec). */
static const char *set_num(cmd_parms *cmd, void *dc, const char *arg)
{
    const num_spec *n = cmd->info;
    const char *err = n->scope == IN_MAIN ? ap_check_cmd_context(cmd, GLOBAL_ONLY) : NULL;
    char *field;
    apr_int64_t v = 0;
    if (err) return err;
    err = n->kind == SIZE ? parse_size(cmd, arg, n->min, n->max, &v)
                          : parse_num(cmd, arg, n->min, n->max, &v);
    if (err) return err;
    if (n->kind == SECONDS_AS_TIME) v = apr_time_from_sec(v);
    field = (char *)(n->scope == IN_DIR ? dc : (void *)srv_conf(cmd)) + n->offset;
    if (n->width == sizeof(int)) {
        int i = (int)v;
        memcpy(field, &i, sizeof(i));
    }
    else {
        memcpy(field, &v, sizeof(v));
    }
    return NULL;
}

/* ---- the other directives ------------------------------------------------------------------ */

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
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not an origin like https://app.example.com "
                            "or http://localhost:3000 (or *)",
                            cmd->cmd->name, arg);
    if (!c->allowed_origins) c->allowed_origins = apr_array_make(cmd->pool, 4, sizeof(char *));
    APR_ARRAY_PUSH(c->allowed_origins, const char *) = apr_pstrdup(
        cmd->pool,
        (u.path && !strcmp(u.path, "/")) ? apr_pstrndup(cmd->pool, arg, strlen(arg) - 1) : arg);
    return NULL;
}

static const char *add_host(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_dir_conf *c = dc;
    const char *p;
    for (p = arg; *p; p++)
        if (!(apr_isalnum(*p) || *p == '.' || *p == '-' || *p == ':' || *p == '[' || *p == ']'
              || *p == '*'))
            return apr_psprintf(cmd->pool,
                                "%s: '%s' is not a host name (optionally with "
                                ":port, or *)",
                                cmd->cmd->name, arg);
    if (!c->allowed_hosts) c->allowed_hosts = apr_array_make(cmd->pool, 4, sizeof(char *));
    APR_ARRAY_PUSH(c->allowed_hosts, const char *) = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

/* GeminiMCPGeminiKey, GeminiMCPKeyPepper, GeminiMCPStateSecret: where a secret is read
 * from (cmd->info: the field's offset in gmcp_srv_conf), never the secret itself. */
static const char *set_secret(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = srv_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) return err;
    if (strncmp(arg, "file:", 5) != 0 && strncmp(arg, "env:", 4) != 0)
        return apr_psprintf(cmd->pool,
                            "%s: use file:/path/to/secret or env:VARIABLE "
                            "(the secret itself never goes in the configuration)",
                            cmd->cmd->name);
    *(const char **)((char *)c + (apr_size_t)cmd->info) = arg;
    return NULL;
}

static const char *set_node_name(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = srv_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY), *ch;
    (void)dc;
    if (err) return err;
    for (ch = arg; *ch; ch++)
        if (!apr_isalnum(*ch) && !strchr("._:-", *ch)) break;
    if (!*arg || *ch || ch - arg > 64)
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not a node name (1 to 64 letters, digits and . _ : -)",
                            cmd->cmd->name, arg);
    c->node_name = arg;
    return NULL;
}

static const char *set_gemini_base(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = srv_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_uri_t u;
    (void)dc;
    if (err) return err;
    if (apr_uri_parse(cmd->pool, arg, &u) != APR_SUCCESS || !u.scheme || !u.hostname
        || (strcasecmp(u.scheme, "https") && strcasecmp(u.scheme, "http")) || u.query)
        return apr_psprintf(cmd->pool, "%s: '%s' is not an http(s) URL like %s", cmd->cmd->name,
                            arg, GMCP_GEMINI_DEFAULT_BASE);
    c->gemini_base = apr_pstrndup(cmd->pool, arg, strlen(arg) - (arg[strlen(arg) - 1] == '/'));
    return NULL;
}

static const char *set_gemini_model(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = srv_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) return err;
    if (!gmcp_gemini_model_path(cmd->pool, arg))
        return apr_psprintf(cmd->pool, "%s: '%s' is not a model name like %s", cmd->cmd->name, arg,
                            GMCP_GEMINI_DEFAULT_MODEL);
    c->gemini_model = arg;
    return NULL;
}

static const char *auth_word(cmd_parms *cmd, gmcp_dir_conf *c, const char *w)
{
    if (!strcasecmp(w, "apikey"))
        c->auth_mode = GMCP_AUTH_APIKEY;
    else if (!strcasecmp(w, "apache"))
        c->auth_mode = GMCP_AUTH_APACHE;
    else if (!strcasecmp(w, "none"))
        c->auth_mode = GMCP_AUTH_NONE;
    else if (!strcasecmp(w, "oauth"))
        c->auth_oauth = 1;
    else
        return apr_psprintf(cmd->pool, "%s: '%s' is not one of apikey, oauth, apache, none",
                            cmd->cmd->name, w);
    return NULL;
}

/* GeminiMCPAuth apikey | oauth | apikey oauth | apache | none */
static const char *set_auth(cmd_parms *cmd, void *dc, const char *arg, const char *arg2)
{
    gmcp_dir_conf *c = dc;
    const char *err;
    c->auth_mode = GMCP_AUTH_UNSET;
    c->auth_oauth = 0;
    if ((err = auth_word(cmd, c, arg)) || (arg2 && (err = auth_word(cmd, c, arg2)))) return err;
    if (arg2 && !(c->auth_oauth && c->auth_mode == GMCP_AUTH_APIKEY))
        return apr_psprintf(cmd->pool, "%s: only 'apikey oauth' combines two words",
                            cmd->cmd->name);
    if (c->auth_oauth && c->auth_mode == GMCP_AUTH_UNSET) c->auth_mode = GMCP_AUTH_OAUTH;
    auth_modes_used |= 1 << c->auth_mode;
    if (c->auth_oauth) {
        if (!oauth_dcs) {
            oauth_dcs = apr_array_make(cmd->pool, 4, sizeof(gmcp_dir_conf *));
            oauth_srvs = apr_array_make(cmd->pool, 4, sizeof(server_rec *));
        }
        APR_ARRAY_PUSH(oauth_dcs, gmcp_dir_conf *) = c;
        APR_ARRAY_PUSH(oauth_srvs, server_rec *) = cmd->server;
    }
    return NULL;
}

/* ---- GeminiMCPOAuth* ---- */

static gmcp_oauth_conf *oauth_of(cmd_parms *cmd, gmcp_dir_conf *c)
{
    gmcp_oauth_conf *o;
    if (c->oauth) return (gmcp_oauth_conf *)c->oauth;
    o = apr_pcalloc(cmd->pool, sizeof(*o));
    o->issuer = -1;
    o->leeway = -1;
    c->oauth = o;
    return o;
}

/* An absolute http(s) URL without query or fragment, scheme and host lowercased. */
static const char *canonical_url(cmd_parms *cmd, const char *arg, apr_uri_t *u)
{
    char *h;
    if (apr_uri_parse(cmd->pool, arg, u) != APR_SUCCESS || !u->scheme || !u->hostname
        || (strcasecmp(u->scheme, "https") && strcasecmp(u->scheme, "http")) || u->query
        || u->fragment || u->user || strchr(arg, '"') || strchr(arg, ' '))
        return NULL;
    for (h = u->scheme; *h; h++) *h = apr_tolower(*h);
    for (h = u->hostname; *h; h++) *h = apr_tolower(*h);
    if (u->path && !strcmp(u->path, "/")) u->path = NULL;
    return apr_uri_unparse(cmd->pool, u, APR_URI_UNP_OMITUSERINFO);
}

static const char *set_oauth_resource(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_oauth_conf *o = oauth_of(cmd, dc);
    apr_uri_t u;
    const char *canon = canonical_url(cmd, arg, &u);
    apr_size_t n;
    char *path;
    if (!canon)
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not an absolute http(s) URL without query or fragment "
                            "(the endpoint's public URL, e.g. https://mcp.example.com/mcp)",
                            cmd->cmd->name, arg);
    path = apr_pstrdup(cmd->pool, u.path ? u.path : "");
    n = strlen(path);
    if (n && path[n - 1] == '/') path[n - 1] = '\0';
    o->resource = canon;
    o->prm_path = apr_pstrcat(cmd->pool, "/.well-known/oauth-protected-resource", path, NULL);
    u.path = (char *)o->prm_path;
    o->prm_url = apr_uri_unparse(cmd->pool, &u, APR_URI_UNP_OMITUSERINFO);
    return NULL;
}

static const char *set_oauth_issuer(cmd_parms *cmd, void *dc, const char *iss, const char *jwks)
{
    gmcp_oauth_conf *o = oauth_of(cmd, dc);
    apr_uri_t u;
    int i;
    if (!canonical_url(cmd, iss, &u) || (jwks && !canonical_url(cmd, jwks, &u)))
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not an absolute http(s) URL without query "
                            "or fragment",
                            cmd->cmd->name, jwks ? jwks : iss);
    for (i = 0; i < n_oauth_issuers; i++)
        if (!strcmp(oauth_issuers[i].issuer, iss)) break;
    if (i < n_oauth_issuers
        && (jwks ? !oauth_issuers[i].jwks_url || strcmp(oauth_issuers[i].jwks_url, jwks)
                 : oauth_issuers[i].jwks_url != NULL))
        return apr_psprintf(cmd->pool, "%s: %s is configured elsewhere with another JWKS URL",
                            cmd->cmd->name, iss);
    if (i == n_oauth_issuers) {
        if (i == GMCP_OAUTH_ISSUERS_MAX)
            return apr_psprintf(cmd->pool, "%s: at most %d issuers", cmd->cmd->name,
                                GMCP_OAUTH_ISSUERS_MAX);
        oauth_issuers[i].issuer = apr_pstrdup(cmd->pool, iss); /* exactly as tokens say it */
        oauth_issuers[i].jwks_url = jwks ? apr_pstrdup(cmd->pool, jwks) : NULL;
        n_oauth_issuers++;
    }
    o->issuer = i;
    return NULL;
}

static int claim_name_ok(const char *s)
{
    return *s && strlen(s) <= 64
        && strspn(s,
                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789_-.:/")
        == strlen(s);
}

static const char *set_oauth_claims(cmd_parms *cmd, void *dc, const char *who, const char *tenant)
{
    gmcp_oauth_conf *o = oauth_of(cmd, dc);
    if (!claim_name_ok(who) || (tenant && !claim_name_ok(tenant)))
        return apr_psprintf(cmd->pool, "%s: '%s' is not a claim name", cmd->cmd->name,
                            claim_name_ok(who) ? tenant : who);
    o->principal_claim = who;
    o->tenant_claim = tenant;
    return NULL;
}

static const char *set_oauth_leeway(cmd_parms *cmd, void *dc, const char *arg)
{
    apr_uint64_t v;
    if (gmcp_parse_u64(arg, &v) || v > 300)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number of seconds from 0 to 300",
                            cmd->cmd->name, arg);
    oauth_of(cmd, dc)->leeway = (apr_int64_t)v;
    return NULL;
}

/* GeminiMCPOAuthIntrospection URL CLIENT-ID file:PATH|env:NAME [CACHE-SECONDS] */
static const char *set_oauth_introspection(cmd_parms *cmd, void *dc, int argc, char *const argv[])
{
    gmcp_oauth_conf *o = oauth_of(cmd, dc);
    apr_uint64_t cache = 30;
    apr_uri_t u;
    if (argc < 3 || argc > 4)
        return apr_psprintf(cmd->pool, "%s: URL CLIENT-ID file:PATH|env:NAME [CACHE-SECONDS]",
                            cmd->cmd->name);
    if (!canonical_url(cmd, argv[0], &u))
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not an absolute http(s) URL without query or fragment",
                            cmd->cmd->name, argv[0]);
    if (!*argv[1] || strlen(argv[1]) > 255 || strpbrk(argv[1], " \t\"\r\n"))
        return apr_psprintf(cmd->pool, "%s: '%s' is not a client_id", cmd->cmd->name, argv[1]);
    if (strncmp(argv[2], "file:", 5) != 0 && strncmp(argv[2], "env:", 4) != 0)
        return apr_psprintf(cmd->pool,
                            "%s: the client secret is given as file:/path/to/secret or "
                            "env:VARIABLE (never itself in the configuration)",
                            cmd->cmd->name);
    if (argc == 4 && (gmcp_parse_u64(argv[3], &cache) || cache > 300))
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number of seconds from 0 to 300",
                            cmd->cmd->name, argv[3]);
    o->introspect_url = argv[0];
    o->introspect_client = argv[1];
    o->introspect_secret = argv[2];
    o->introspect_cache = (apr_int64_t)cache;
    return NULL;
}

/* GeminiMCPOAuthScope NAME [TOOL-PATTERN...]: one row of the scope table. */
static const char *set_oauth_scope(cmd_parms *cmd, void *dc, int argc, char *const argv[])
{
    gmcp_oauth_conf *o = oauth_of(cmd, dc);
    gmcp_scope_def d;
    int i;
    if (argc < 1 || !gmcp_scope_name_ok(argv[0]))
        return apr_psprintf(cmd->pool,
                            "%s: '%s' is not a scope name (printable, no spaces "
                            "or quotes)",
                            cmd->cmd->name, argc ? argv[0] : "");
    if (!o->scopes) o->scopes = apr_array_make(cmd->pool, 4, sizeof(gmcp_scope_def));
    for (i = 0; i < o->scopes->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(o->scopes, i, gmcp_scope_def).name, argv[0]))
            return apr_psprintf(cmd->pool, "%s: %s is defined twice", cmd->cmd->name, argv[0]);
    d.name = argv[0];
    d.tools = "";
    for (i = 1; i < argc; i++)
        d.tools = apr_pstrcat(cmd->pool, d.tools, *d.tools ? " " : "", argv[i], NULL);
    APR_ARRAY_PUSH(o->scopes, gmcp_scope_def) = d;
    return NULL;
}

static const char *set_jwks_refresh(cmd_parms *cmd, void *dc, const char *min, const char *max)
{
    gmcp_srv_conf *c = ap_get_module_config(cmd->server->module_config, &gemini_mcp_module);
    apr_uint64_t lo, hi = 3600;
    (void)dc;
    if (gmcp_parse_u64(min, &lo) || lo < 1 || lo > 3600 || (max && gmcp_parse_u64(max, &hi))
        || hi < lo || hi > 7 * 24 * 3600)
        return apr_psprintf(cmd->pool,
                            "%s: MIN (1-3600 seconds) [MAX-AGE (MIN-604800 seconds)] expected",
                            cmd->cmd->name);
    c->jwks_min = (apr_int64_t)lo;
    c->jwks_max = (apr_int64_t)hi;
    return NULL;
}

static const char *set_ratelimit_store(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = srv_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) return err;
    if (!strcasecmp(arg, "shm"))
        c->ratelimit_store = 0;
    else if (!strcasecmp(arg, "dbd"))
        c->ratelimit_store = 1;
    else
        return apr_psprintf(cmd->pool, "%s: '%s' is not shm or dbd", cmd->cmd->name, arg);
    return NULL;
}

static const char *set_upload_dir(cmd_parms *cmd, void *dc, const char *arg)
{
    gmcp_srv_conf *c = srv_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) return err;
    c->upload_dir = ap_server_root_relative(cmd->pool, arg);
    if (!c->upload_dir)
        return apr_psprintf(cmd->pool, "%s: invalid path '%s'", cmd->cmd->name, arg);
    return NULL;
}

/* GeminiMCPUploadDurability synced | interval [SIZE [SECONDS]]. */
static const char *set_durability(cmd_parms *cmd, void *dcv, const char *mode, const char *size,
                                  const char *secs)
{
    gmcp_dir_conf *dc = dcv;
    const char *err;
    if (!strcasecmp(mode, "synced")) {
        if (size)
            return apr_psprintf(cmd->pool, "%s: synced takes no size or seconds", cmd->cmd->name);
        dc->upload_durability = GMCP_DURABILITY_SYNCED;
        return NULL;
    }
    if (strcasecmp(mode, "interval") != 0)
        return apr_psprintf(cmd->pool, "%s: '%s' is neither synced nor interval", cmd->cmd->name,
                            mode);
    dc->upload_durability = GMCP_DURABILITY_INTERVAL;
    dc->upload_sync_lag = GMCP_DEFAULT_SYNC_LAG;
    dc->upload_sync_secs = GMCP_DEFAULT_SYNC_SECS;
    if (size
        && (err = parse_size(cmd, size, (apr_int64_t)4 << 20, (apr_int64_t)1 << 40,
                             &dc->upload_sync_lag)))
        return err;
    if (secs
        && (err = parse_num(cmd, secs, 1, GMCP_UPLOAD_SYNC_MAX_SECONDS, &dc->upload_sync_secs)))
        return err;
    return NULL;
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
    if (gmcp_duration_parse(cmd->pool, arg, GMCP_RETENTION_MIN, GMCP_RETENTION_MAX, &v, &err)
        != APR_SUCCESS)
        return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, err);
    return NULL;
}

#define SRV_OR_DIR (RSRC_CONF | ACCESS_CONF)
#define DAY_SECS (24 * 3600)

const command_rec gmcp_config_cmds[] = {
    NUM("GeminiMCPMaxBodySize", IN_DIR, max_body, SIZE, 1024, 1 << 30, SRV_OR_DIR,
        "Largest accepted JSON-RPC request body (default 1M)"),
    AP_INIT_ITERATE("GeminiMCPAllowedOrigins", add_origin, NULL, SRV_OR_DIR,
                    "Origins allowed besides the endpoint's own (or *)"),
    AP_INIT_ITERATE("GeminiMCPAllowedHosts", add_host, NULL, SRV_OR_DIR,
                    "Host header values accepted (DNS-rebinding protection); default: the "
                    "ServerName, ServerAlias and loopback names"),
    NUM("GeminiMCPClientRequestTimeout", IN_DIR, client_timeout, SECONDS_AS_TIME, 1, 3600,
        SRV_OR_DIR, "Seconds a tool waits for the client's answer to sampling/elicitation"),
    NUM("GeminiMCPSSERetry", IN_DIR, sse_retry_ms, WHOLE, 0, 600000, SRV_OR_DIR,
        "Reconnection delay (ms) announced in SSE 'retry:' fields"),
    NUM("GeminiMCPPageSize", IN_DIR, page_size, WHOLE, 1, 1000, SRV_OR_DIR,
        "Items per page of tools/list, resources/list, prompts/list"),
    AP_INIT_TAKE1("GeminiMCPDefaultPrincipal", set_principal, NULL, SRV_OR_DIR,
                  "Owner recorded for sessions when no caller identity is known"),
    NUM("GeminiMCPSessionIdleTimeout", IN_SRV, session_idle, WHOLE, 1, 365 * DAY_SECS, RSRC_CONF,
        "Seconds after which an idle MCP session expires (default 86400)"),
    NUM("GeminiMCPEventRetention", IN_SRV, event_retention, WHOLE, 1, 30 * DAY_SECS, RSRC_CONF,
        "Seconds stored SSE events stay available for resumption (default 3600)"),
    AP_INIT_TAKE1("GeminiMCPGeminiKey", set_secret, (void *)APR_OFFSETOF(gmcp_srv_conf, gemini_key),
                  RSRC_CONF, "file:PATH or env:NAME holding the Gemini API key"),
    AP_INIT_TAKE1("GeminiMCPGeminiBaseURL", set_gemini_base, NULL, RSRC_CONF,
                  "Gemini API base URL (default " GMCP_GEMINI_DEFAULT_BASE ")"),
    AP_INIT_TAKE1("GeminiMCPGeminiModel", set_gemini_model, NULL, RSRC_CONF,
                  "Default model (default " GMCP_GEMINI_DEFAULT_MODEL ")"),
    NUM("GeminiMCPGeminiTimeout", IN_MAIN, gemini_timeout, WHOLE, 1, 3600, RSRC_CONF,
        "Seconds one Gemini call may take (default 120)"),
    NUM("GeminiMCPGeminiConnectTimeout", IN_MAIN, gemini_connect_timeout, WHOLE, 1, 300, RSRC_CONF,
        "Seconds to connect to Gemini (default 10)"),
    NUM("GeminiMCPGeminiRetries", IN_MAIN, gemini_retries, WHOLE, 0, 10, RSRC_CONF,
        "Retries of 429/5xx/transport failures (default 3)"),
    NUM("GeminiMCPBreakerThreshold", IN_MAIN, breaker_threshold, WHOLE, 1, 1000, RSRC_CONF,
        "Consecutive failed Gemini calls that open the circuit breaker (default 5)"),
    NUM("GeminiMCPBreakerCooldown", IN_MAIN, breaker_cooldown, WHOLE, 1, 3600, RSRC_CONF,
        "Seconds the breaker stays open before a probe call (default 30)"),
    NUM("GeminiMCPChatIdleTimeout", IN_MAIN, chat_idle, WHOLE, 1, 365 * DAY_SECS, RSRC_CONF,
        "Seconds after which an unused chat session expires (default 259200)"),
    NUM("GeminiMCPTaskWorkers", IN_MAIN, task_workers, WHOLE, 0, 256, RSRC_CONF,
        "Threads per child that run tools as MCP tasks (io.modelcontextprotocol/tasks); 0 "
        "turns tasks off (default 4)"),
    NUM("GeminiMCPTaskTTL", IN_MAIN, task_ttl, WHOLE, 60, 7 * DAY_SECS, RSRC_CONF,
        "Seconds a task is kept after it was made, for tasks/get (default 3600)"),
    NUM("GeminiMCPToolTimeout", IN_MAIN, tool_timeout, WHOLE, 1, DAY_SECS, RSRC_CONF,
        "Seconds a tool call may take in all, retries included (default 300)"),
    AP_INIT_TAKE12("GeminiMCPAuth", set_auth, NULL, SRV_OR_DIR,
                   "How callers are identified: apikey (Authorization: Bearer), oauth "
                   "(OAuth access tokens), apikey oauth (either), apache (r->user from any "
                   "Apache auth module) or none (default)"),
    AP_INIT_TAKE1("GeminiMCPOAuthResource", set_oauth_resource, NULL, SRV_OR_DIR,
                  "This endpoint's canonical public URL: the audience its tokens must name"),
    AP_INIT_TAKE12("GeminiMCPOAuthIssuer", set_oauth_issuer, NULL, SRV_OR_DIR,
                   "The authorization server whose tokens are taken (its issuer URL), and "
                   "optionally its JWKS URL (default: from its metadata)"),
    AP_INIT_TAKE12("GeminiMCPOAuthClaims", set_oauth_claims, NULL, SRV_OR_DIR,
                   "The claim naming the caller (default sub) and optionally the tenant's"),
    AP_INIT_TAKE1("GeminiMCPOAuthLeeway", set_oauth_leeway, NULL, SRV_OR_DIR,
                  "Seconds of clock skew allowed on exp and nbf (0-300, default 60)"),
    AP_INIT_TAKE_ARGV("GeminiMCPOAuthIntrospection", set_oauth_introspection, NULL, SRV_OR_DIR,
                      "URL CLIENT-ID file:PATH|env:NAME [CACHE-SECONDS]: ask the authorization "
                      "server (RFC 7662) about tokens that are not JWTs; an active answer is "
                      "reused CACHE-SECONDS (0-300, default 30)"),
    AP_INIT_TAKE_ARGV("GeminiMCPOAuthScope", set_oauth_scope, NULL, SRV_OR_DIR,
                      "SCOPE [TOOL-PATTERN...]: the tools a scope allows (repeatable; "
                      "default gemini, gemini:generate, gemini:chat, gemini:files)"),
    AP_INIT_TAKE12("GeminiMCPOAuthJWKSRefresh", set_jwks_refresh, NULL, RSRC_CONF,
                   "Seconds between JWKS fetches at least (for an unknown kid; default 10) "
                   "and the age that refetches it (default 3600)"),
    AP_INIT_TAKE1("GeminiMCPKeyPepper", set_secret, (void *)APR_OFFSETOF(gmcp_srv_conf, key_pepper),
                  RSRC_CONF,
                  "file:PATH or env:NAME holding the key that hashes API keys (needed by "
                  "GeminiMCPAuth apikey; gmcpctl reads the same setting)"),
    AP_INIT_TAKE1("GeminiMCPRateLimitStore", set_ratelimit_store, NULL, RSRC_CONF,
                  "Where request-rate state lives: shm (this server, default) or dbd "
                  "(the database, shared by several httpd nodes)"),
    NUM("GeminiMCPLimiterSlots", IN_MAIN, limiter_slots, WHOLE, 64, 1 << 20, RSRC_CONF,
        "Keys tracked at once in shared memory for limits and usage (default 4096)"),
    NUM("GeminiMCPUsageFlushInterval", IN_MAIN, usage_flush, WHOLE, 1, 3600, RSRC_CONF,
        "Seconds between writes of aggregated usage to the database (default 10)"),
    AP_INIT_TAKE1("GeminiMCPUploadDir", set_upload_dir, NULL, RSRC_CONF,
                  "Spool directory for tus uploads (writable by the httpd user)"),
    NUM("GeminiMCPUploadMaxSize", IN_DIR, upload_max, SIZE, 1, (apr_int64_t)1 << 40, SRV_OR_DIR,
        "Largest upload (Tus-Max-Size; default 2G)"),
    NUM("GeminiMCPUploadQuota", IN_DIR, upload_quota, SIZE, 1, (apr_int64_t)1 << 40, SRV_OR_DIR,
        "Spool space one owner's live uploads may take (default: no limit)"),
    NUM("GeminiMCPUploadRate", IN_DIR, upload_rate, SIZE, 1, (apr_int64_t)1 << 40, SRV_OR_DIR,
        "Bytes per second one upload may arrive at (K/M/G suffix; default: no limit)"),
    NUM("GeminiMCPUploadKeyRate", IN_DIR, upload_key_rate, SIZE, 1, (apr_int64_t)1 << 40,
        SRV_OR_DIR,
        "Bytes per second all of one caller's uploads together may arrive at, "
        "across processes (default: no limit)"),
    AP_INIT_TAKE123("GeminiMCPUploadDurability", set_durability, NULL, SRV_OR_DIR,
                    "When an upload's bytes are on disk: synced (before each PATCH answers, "
                    "the default) or interval [SIZE [SECONDS]] (at most SIZE, default 256M, "
                    "and SECONDS, default 5, behind; a machine crash loses at most that)"),
    NUM("GeminiMCPUploadExpiry", IN_SRV, upload_expiry, WHOLE, 1, 365 * DAY_SECS, RSRC_CONF,
        "Seconds an unfinished upload lives after its last PATCH (default 86400)"),
    AP_INIT_TAKE1("GeminiMCPUsageRetention", set_retention, NULL, RSRC_CONF,
                  "How long hourly usage rows are kept before gmcpctl cleanup rolls them "
                  "up per day (N with s/m/h/d; 0 = forever; default 90d)"),
    AP_INIT_TAKE1("GeminiMCPUsageDailyRetention", set_retention, NULL, RSRC_CONF,
                  "How long daily usage roll-ups are kept (0 = forever, the default)"),
    AP_INIT_TAKE1("GeminiMCPAuditRetention", set_retention, NULL, RSRC_CONF,
                  "How long audit log rows are kept (0 = forever, the default)"),
    AP_INIT_TAKE1("GeminiMCPNodeName", set_node_name, NULL, RSRC_CONF,
                  "This node's name: the node label on every /status/metrics series, "
                  "for one Prometheus job over several nodes (default: no label)"),
    AP_INIT_TAKE1("GeminiMCPStateSecret", set_secret,
                  (void *)APR_OFFSETOF(gmcp_srv_conf, state_secret), RSRC_CONF,
                  "file:PATH or env:NAME holding the key that seals MRTR requestState; "
                  "set the same one on every node (default: random per start)"),
    {NULL}};

/* ---- what post_config built ------------------------------------------------------------------ */

void gmcp_config_publish(const gmcp_module_state *st) { g_state = *st; }

const gmcp_server *gmcp_server_for(apr_pool_t *p, const gmcp_dir_conf *c,
                                   const gmcp_task_runner *tasks)
{
    gmcp_server *srv = apr_pcalloc(p, sizeof(*srv));
    srv->registry = g_state.registry;
    srv->tasks = tasks;
    srv->page_size = gmcp_conf_page_size(c);
    srv->server_name = "mod_gemini_mcp";
    srv->server_version = GMCP_VERSION;
    srv->state_key = g_state.state_key;
    srv->state_key_len = g_state.state_key_len;
    return srv;
}

void gmcp_breaker_read(gmcp_breaker_state *out)
{
    const gmcp_breaker *b = g_state.breaker;
    memset(out, 0, sizeof(*out));
    if (!b || !b->st) return;
    b->lock(b->baton);
    *out = *b->st;
    b->unlock(b->baton);
}

int gmcp_gemini_configured(void) { return g_state.gemini_configured; }
