/* mod_gemini_mcp.c — the module: its record, the start-up hooks, and the handler hook
 * that dispatches to the three handlers. The top of the glue: it calls the other glue
 * files and none calls it (configuration lives in mod_gemini_mcp_config.c). */
#include "mod_gemini_mcp_config.h"
#include "mod_gemini_mcp_access.h"
#include "mod_gemini_mcp_oauth.h"
#include "mod_gemini_mcp_http.h"
#include "mod_gemini_mcp_status.h"
#include "mod_gemini_mcp_upload.h"
#include "mod_gemini_mcp_tailsync.h"
#include "mod_gemini_mcp_tasks.h"
#include "gmcp_gemini.h"
#include "gmcp_tools_gemini.h"
#include "gmcp_util.h"
#include "gmcp_errlog.h"
#include "gmcp_sqlite_rw.h"

#include <http_protocol.h>
#include <http_request.h>
#include <ap_provider.h>
#include <apr_shm.h>
#include <apr_global_mutex.h>
#include <util_mutex.h>
#include <apr_strings.h>
#include <util_cfgtree.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdlib.h>

/* HMAC key for MRTR requestState: from GeminiMCPStateSecret, or random per start. */
static unsigned char *g_state_key;
static apr_size_t g_state_key_len;
static gmcp_gemini_conf g_gemini;
/* The breaker's state in shared memory, guarded by a global mutex: one view for every
 * child process (made in post_config, before the fork). */
#define BREAKER_MUTEX "gemini-mcp-breaker"
static apr_global_mutex_t *g_breaker_mutex;
static gmcp_breaker g_breaker;

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
    const gmcp_srv_conf *c = gmcp_config_srv(s);
    const char *val;
    if (!c->state_secret) {
        g_state_key_len = 32;
        g_state_key = apr_palloc(p, g_state_key_len);
        if (RAND_bytes(g_state_key, (int)g_state_key_len) != 1) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         GMCP_LOGNO(0103) "gemini_mcp: cannot get random bytes for the state key");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        return OK;
    }
    val = gmcp_read_secret(p, c->state_secret);
    if (!val || strlen(val) < 16) {
        ap_log_error(
            APLOG_MARK, APLOG_EMERG, 0, s,
            GMCP_LOGNO(
                0104) "gemini_mcp: GeminiMCPStateSecret %s is missing, unreadable or shorter "
                      "than 16 characters",
            c->state_secret);
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
    const gmcp_srv_conf *c = gmcp_config_srv(s);
    apr_shm_t *shm = NULL;
    apr_status_t rv = apr_shm_create(&shm, sizeof(gmcp_breaker_state), NULL, p);
    if (rv != APR_SUCCESS) {
        ap_log_error(
            APLOG_MARK, APLOG_EMERG, rv, s,
            GMCP_LOGNO(0108) "gemini_mcp: cannot create shared memory for the circuit breaker");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rv = ap_global_mutex_create(&g_breaker_mutex, NULL, BREAKER_MUTEX, NULL, s, p, 0);
    if (rv != APR_SUCCESS) return HTTP_INTERNAL_SERVER_ERROR; /* httpd logged why */
    memset(&g_breaker, 0, sizeof(g_breaker));
    g_breaker.st = apr_shm_baseaddr_get(shm);
    memset(g_breaker.st, 0, sizeof(*g_breaker.st));
    g_breaker.lock = breaker_lock;
    g_breaker.unlock = breaker_unlock;
    g_breaker.threshold = gmcp_conf_breaker_threshold(c);
    g_breaker.cooldown = gmcp_conf_breaker_cooldown(c);
    return OK;
}

/* Gemini settings for the provider; a missing key is said plainly, once, at start. */
static void load_gemini(apr_pool_t *p, server_rec *s)
{
    const gmcp_srv_conf *c = gmcp_config_srv(s);
    memset(&g_gemini, 0, sizeof(g_gemini));
    g_gemini.base_url = c->gemini_base ? c->gemini_base : GMCP_GEMINI_DEFAULT_BASE;
    g_gemini.default_model = c->gemini_model ? c->gemini_model : GMCP_GEMINI_DEFAULT_MODEL;
    g_gemini.timeout = gmcp_conf_gemini_timeout(c);
    g_gemini.connect_timeout = gmcp_conf_gemini_connect_timeout(c);
    g_gemini.max_retries = gmcp_conf_gemini_retries(c);
    g_gemini.http = gmcp_http_for_thread;
    g_gemini.chat_idle = gmcp_conf_chat_idle(c);
    g_gemini.breaker = &g_breaker;
    g_gemini.upload_dir = c->upload_dir;
    g_gemini.api_key = c->gemini_key ? gmcp_read_secret(p, c->gemini_key) : NULL;
    if (!g_gemini.api_key)
        ap_log_error(
            APLOG_MARK, APLOG_NOTICE, 0, s,
            GMCP_LOGNO(0105) "gemini_mcp: no Gemini API key (%s%s): the gemini_* tools will answer "
                             "that Gemini is not configured",
            c->gemini_key ? "nothing in " : "GeminiMCPGeminiKey is not set",
            c->gemini_key ? c->gemini_key : "");
}

/* The core's failures go to the error log, with the request of the thread when the
 * handler named one (gmcp_elog_context), else the main server. */
static void elog_print(const char *file, int line, gmcp_elog_level level, apr_status_t rv,
                       const char *tag, const char *msg, void *baton)
{
    static const int levels[] = {APLOG_ERR, APLOG_WARNING, APLOG_INFO, APLOG_DEBUG};
    request_rec *r = gmcp_elog_context();
    int lvl = levels[level];
    if (r)
        ap_log_rerror(file, line, APLOG_MODULE_INDEX, lvl, rv, r, "%s: gemini_mcp: %s", tag, msg);
    else
        ap_log_error(file, line, APLOG_MODULE_INDEX, lvl, rv, (server_rec *)baton,
                     "%s: gemini_mcp: %s", tag, msg);
}

static int elog_enabled(gmcp_elog_level level, void *baton)
{
    static const int levels[] = {APLOG_ERR, APLOG_WARNING, APLOG_INFO, APLOG_DEBUG};
    request_rec *r = gmcp_elog_context();
    return r ? APLOG_R_MODULE_IS_LEVEL(r, APLOG_MODULE_INDEX, levels[level])
             : APLOG_MODULE_IS_LEVEL((server_rec *)baton, APLOG_MODULE_INDEX, levels[level]);
}

/* Every handler of ours runs with its request named as the core's log context. They
 * return DONE once they answered (mod_gemini_mcp_respond.h); httpd is handed OK. */
static int gmcp_handler(request_rec *r)
{
    int st;
    if (!r->handler || strncmp(r->handler, "gemini-mcp", 10) != 0) return DECLINED;
    gmcp_elog_context_set(r);
    st = gmcp_mcp_handler(r);
    if (st == DECLINED) st = gmcp_upload_handler(r);
    if (st == DECLINED) st = gmcp_status_handler(r);
    gmcp_elog_context_set(NULL);
    return st == DONE ? OK : st;
}

static void gmcp_child_init(apr_pool_t *p, server_rec *s)
{
    if (g_breaker_mutex
        && apr_global_mutex_child_init(&g_breaker_mutex, apr_global_mutex_lockfile(g_breaker_mutex),
                                       p)
            != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     GMCP_LOGNO(0109) "gemini_mcp: cannot attach to the circuit breaker's mutex");
    gmcp_elog_set(elog_print, elog_enabled, s);
    gmcp_access_child_init(p, s);
    gmcp_oauth_child_init(p, s);
    gmcp_mcp_child_init(p);
    gmcp_tailsync_child_init(p, s);
    gmcp_tasks_child_init(p, s);
    if (gmcp_http_child_init(p) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     GMCP_LOGNO(0107) "gemini_mcp: cannot create the per-thread HTTP client key");
}

/* Every module's provider, in name order so listings are stable across restarts;
 * slot 0 is left for the product's own (the Gemini tools). */
static const gmcp_provider **collect_providers(apr_pool_t *pconf, int *n)
{
    apr_array_header_t *names =
        ap_list_provider_names(pconf, GMCP_PROVIDER_GROUP, GMCP_PROVIDER_VERSION);
    const gmcp_provider **provs;
    int i;
    qsort(names->elts, (size_t)names->nelts, names->elt_size, cmp_provider_names);
    provs = apr_pcalloc(pconf, sizeof(*provs) * (size_t)(names->nelts + 2));
    for (i = 0; i < names->nelts; i++) {
        const char *name = APR_ARRAY_IDX(names, i, ap_list_provider_names_t).provider_name;
        provs[i + 1] = ap_lookup_provider(GMCP_PROVIDER_GROUP, name, GMCP_PROVIDER_VERSION);
    }
    *n = names->nelts;
    return provs;
}

/* Every DBDParams of the configuration as a full path (for the sqlite3 driver it is the
 * database file; a PostgreSQL connection string simply matches no file). */
static void collect_dbd_params(apr_pool_t *p, const ap_directive_t *d, apr_array_header_t *out)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "DBDParams") && d->args) {
            const char *args = d->args, *path = NULL;
            char *word = ap_getword_conf(p, &args);
            char real[PATH_MAX];
            if (*word && apr_filepath_merge((char **)&path, NULL, word, 0, p) == APR_SUCCESS)
                APR_ARRAY_PUSH(out, const char *) =
                    realpath(path, real) ? apr_pstrdup(p, real) : path;
        }
        if (d->first_child) collect_dbd_params(p, d->first_child, out);
    }
}

static const apr_array_header_t *sqlite_paths(apr_pool_t *p)
{
    apr_array_header_t *paths = apr_array_make(p, 2, sizeof(const char *));
    collect_dbd_params(p, ap_conftree, paths);
    return paths;
}

static int gmcp_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    int n;
    const gmcp_provider **provs = collect_providers(pconf, &n);
    const gmcp_registry *registry;
    gmcp_module_state st;
    const char *err = NULL;
    (void)plog;
    (void)ptemp;

    gmcp_elog_set(elog_print, elog_enabled, s);
    if (load_state_key(pconf, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    /* Once per process, before any thread exists. */
    if (gmcp_http_init() != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     GMCP_LOGNO(0106) "gemini_mcp: cannot initialise libcurl");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (gmcp_sqlite_rw_only(pconf, sqlite_paths(pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     GMCP_LOGNO(0115) "gemini_mcp: cannot set up SQLite's read-write VFS");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (make_breaker(pconf, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    if (gmcp_access_post_config(pconf, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    if (gmcp_oauth_post_config(pconf, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    load_gemini(pconf, s);
    provs[0] = gmcp_gemini_provider(pconf, &g_gemini);
    registry = gmcp_registry_create(pconf, provs, n + 1, &err);
    if (!registry) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     GMCP_LOGNO(0101) "gemini_mcp: invalid MCP provider definition: %s", err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_log_error(
        APLOG_MARK, APLOG_DEBUG, 0, s,
        GMCP_LOGNO(0102) "gemini_mcp: %d provider(s), %d tool(s), %d resource(s), %d template(s), "
                         "%d prompt(s)",
        n, registry->tools->nelts, registry->resources->nelts, registry->templates->nelts,
        registry->prompts->nelts);
    st.registry = registry;
    st.state_key = g_state_key;
    st.state_key_len = g_state_key_len;
    st.breaker = &g_breaker;
    st.gemini_configured = g_gemini.api_key != NULL;
    gmcp_config_publish(&st);
    return OK;
}

static int gmcp_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog;
    (void)ptemp;
    gmcp_config_pre_config();
    /* Configurable with the Mutex directive, like httpd's own mutexes. */
    if (ap_mutex_register(pconf, BREAKER_MUTEX, NULL, APR_LOCK_DEFAULT, 0) != APR_SUCCESS)
        return HTTP_INTERNAL_SERVER_ERROR;
    if (gmcp_oauth_pre_config(pconf) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    return gmcp_access_pre_config(pconf);
}

static void register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(gmcp_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(gmcp_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(gmcp_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_quick_handler(gmcp_oauth_metadata, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(gmcp_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(gmcp_access_log, NULL, NULL, APR_HOOK_MIDDLE);
}

/* Declared without AP_DECLARE_MODULE: mod_gemini_mcp_config.h already does
 * APLOG_USE_MODULE for every glue file. */
module AP_MODULE_DECLARE_DATA gemini_mcp_module = {
    STANDARD20_MODULE_STUFF, gmcp_config_create_dir, gmcp_config_merge_dir, gmcp_config_create_srv,
    gmcp_config_merge_srv,   gmcp_config_cmds,       register_hooks,        AP_MODULE_FLAG_NONE};
