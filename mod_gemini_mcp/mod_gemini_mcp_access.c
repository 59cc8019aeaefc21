/* mod_gemini_mcp_access.c — who is calling, and how much they may: Host and Origin
 * checks, API keys (or an Apache auth module's r->user), scopes, rate limits, in-flight
 * caps, token quotas, usage metering, request metrics, the per-request log line, and
 * CORS.
 *
 * Limits, usage and metrics live in one shared-memory block guarded by a global
 * mutex, so they hold across every child process; usage reaches SQL by a periodic
 * flush (and one at child exit), never per request. Key rows are cached per process
 * for KEY_CACHE_TTL, so a revoked key stops working everywhere within that time. */
#include "mod_gemini_mcp_access.h"
#include "mod_gemini_mcp_config.h"
#include "mod_gemini_mcp_db.h"
#include "mod_gemini_mcp_inflight.h"
#include "mod_gemini_mcp_oauth.h"
#include "mod_gemini_mcp_respond.h"
#include "gmcp_chat.h"
#include "gmcp_keys.h"
#include "gmcp_limits.h"
#include "gmcp_metrics.h"
#include "gmcp_scopes.h"
#include "gmcp_shared_limits.h"
#include "gmcp_util.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <mod_dbd.h>
#include <apr_atomic.h>
#include <apr_global_mutex.h>
#include <apr_hash.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_uri.h>
#include <util_mutex.h>
#include <stdlib.h>

#define STATS_MUTEX "gemini-mcp-stats"
#define KEY_CACHE_TTL apr_time_from_msec(500)
#define KEY_CACHE_MAX 10000
#define AUDIT_FAIL_EVERY apr_time_from_sec(1)
#define REALM "gemini-mcp"

typedef struct {
    gmcp_metrics metrics;
    /* gmcp_slot_table follows */
} shared_block;

static apr_global_mutex_t *g_mutex;
static shared_block *g_shared;
static gmcp_limits g_limits;
static const char *g_pepper; /* GeminiMCPKeyPepper's value */
static int g_store_dbd;      /* GeminiMCPRateLimitStore dbd */
static const char *g_node;   /* GeminiMCPNodeName: the metrics' node label, or NULL */
static apr_int64_t g_flush_every = 10;

static void lock(void *b)
{
    (void)b;
    apr_global_mutex_lock(g_mutex);
}
static void unlock(void *b)
{
    (void)b;
    apr_global_mutex_unlock(g_mutex);
}
static const gmcp_metrics_lock g_metrics_lock = {lock, unlock, NULL};

/* ---- start-up ------------------------------------------------------------------------ */

/* The slot (and shared bucket) of the caller's upload bandwidth. */
static const char *bw_slot(gmcp_access *a)
{
    if (!a->bw_slot) {
        /* Its own slot beside the key's request limits (made once per request: this
         * runs for every read of an upload); a long principal goes by its hash. */
        a->bw_slot = apr_pstrcat(a->r->pool, "bw:", a->principal, NULL);
        if (strlen(a->bw_slot) >= GMCP_SLOT_KEY_MAX)
            a->bw_slot = apr_pstrndup(
                a->r->pool,
                apr_pstrcat(a->r->pool, "bw#",
                            gmcp_sha256_hex(a->r->pool, a->principal, strlen(a->principal)), NULL),
                40);
    }
    return a->bw_slot;
}

/* Bytes charged to the shared bucket at a time: the nodes together run at most one
 * chunk each ahead of the rate. */
#define BW_CHUNK(rate) ((rate) / 20 > 65536 ? (rate) / 20 : 65536)

/* GeminiMCPRateLimitStore dbd: charge what is pending to the bucket every node
 * shares; the pause, or -1 when the store failed (the caller counts on this node). */
static apr_interval_time_t throttle_dbd(gmcp_access *a, apr_time_t now)
{
    gmcp_dbh *h = gmcp_dbh_make(a->r);
    apr_int64_t tat = 0, rate = a->bw_rate;
    apr_interval_time_t burst = GMCP_THROTTLE_BURST(rate) * APR_USEC_PER_SEC / rate;
    const char *why;
    apr_status_t rv;
    if (gmcp_dbh_open(h, &why)) return -1;
    rv = gmcp_bucket_charge(&h->db, bw_slot(a), now, a->bw_pending * APR_USEC_PER_SEC / rate, &tat);
    gmcp_dbh_close(h);
    if (rv) return -1;
    a->bw_pending = 0;
    return tat - now > burst ? tat - now - burst : 0;
}

apr_interval_time_t gmcp_access_throttle(gmcp_access *a, apr_int64_t rate, apr_int64_t bytes)
{
    apr_time_t now = apr_time_now();
    apr_interval_time_t wait;
    if (!g_limits.t || rate <= 0) return 0;
    if (g_store_dbd) {
        a->bw_pending += bytes;
        a->bw_rate = rate;
        if (a->bw_pending < BW_CHUNK(rate)) return 0;
        if ((wait = throttle_dbd(a, now)) >= 0) return wait;
        bytes = a->bw_pending; /* the store is away: this node's bucket for now */
        a->bw_pending = 0;
    }
    return gmcp_limits_throttle(&g_limits, bw_slot(a), rate, bytes, now);
}

int gmcp_access_pre_config(apr_pool_t *pconf)
{
    return ap_mutex_register(pconf, STATS_MUTEX, NULL, APR_LOCK_DEFAULT, 0) == APR_SUCCESS
        ? OK
        : HTTP_INTERNAL_SERVER_ERROR;
}

int gmcp_access_post_config(apr_pool_t *p, server_rec *s)
{
    const gmcp_srv_conf *c = gmcp_config_srv(s);
    apr_uint32_t slots = gmcp_conf_limiter_slots(c);
    apr_size_t size = sizeof(shared_block) + gmcp_limits_size(slots);
    apr_shm_t *shm = NULL;
    apr_status_t rv;

    g_pepper = c->key_pepper ? gmcp_read_secret(p, c->key_pepper) : NULL;
    if (c->key_pepper && (!g_pepper || strlen(g_pepper) < 16)) {
        ap_log_error(
            APLOG_MARK, APLOG_EMERG, 0, s,
            GMCP_LOGNO(0120) "gemini_mcp: GeminiMCPKeyPepper %s is missing, unreadable or shorter "
                             "than 16 characters",
            c->key_pepper);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!g_pepper && gmcp_conf_auth_mode_used(GMCP_AUTH_APIKEY)) {
        ap_log_error(
            APLOG_MARK, APLOG_EMERG, 0, s,
            GMCP_LOGNO(0121) "gemini_mcp: GeminiMCPAuth apikey needs GeminiMCPKeyPepper "
                             "file:/path or env:NAME (the key that hashes API keys; gmcpctl reads "
                             "the same setting)");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    g_store_dbd = c->ratelimit_store == 1;
    g_node = c->node_name;
    g_flush_every = gmcp_conf_usage_flush(c);
    rv = apr_shm_create(&shm, size, NULL, p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     GMCP_LOGNO(0122) "gemini_mcp: cannot create %" APR_SIZE_T_FMT
                                      " bytes of shared memory "
                                      "for limits and metrics",
                     size);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rv = ap_global_mutex_create(&g_mutex, NULL, STATS_MUTEX, NULL, s, p, 0);
    if (rv != APR_SUCCESS) return HTTP_INTERNAL_SERVER_ERROR; /* httpd logged why */
    g_shared = apr_shm_baseaddr_get(shm);
    gmcp_metrics_init(&g_shared->metrics, apr_time_now());
    g_limits.t = (gmcp_slot_table *)(g_shared + 1);
    gmcp_limits_init(g_limits.t, slots);
    g_limits.lock = lock;
    g_limits.unlock = unlock;
    return OK;
}

/* ---- usage flush -------------------------------------------------------------------------- */

/* Write every unflushed bucket in one transaction; on any failure give them all back
 * (the next flush retries), so counts are neither lost nor doubled. */
static void flush_usage(apr_pool_t *p, server_rec *s)
{
    apr_array_header_t *b;
    ap_dbd_t *dbd;
    gmcp_db db;
    apr_dbd_transaction_t *t = NULL;
    const char *err = NULL;
    int i, failed = 0;
    if (!g_limits.t) return;
    b = gmcp_limits_take(&g_limits, p);
    if (!b->nelts) return;
    dbd = gmcp_db_open_server(s, p, &db, &err);
    if (!dbd && !err) {
        gmcp_limits_give_back(&g_limits, b);
        return; /* mod_dbd logged why; the next flush retries */
    }
    if (!dbd || gmcp_db_begin(&db, &t)) { failed = 1; }
    else {
        for (i = 0; i < b->nelts && !failed; i++) {
            gmcp_usage_bucket *u = &APR_ARRAY_IDX(b, i, gmcp_usage_bucket);
            failed = gmcp_usage_add(&db, u->key, u->hour, &u->usage) != 0;
        }
        if (gmcp_db_end(&db, t, failed)) failed = 1;
    }
    if (failed) {
        ap_log_error(
            APLOG_MARK, APLOG_WARNING, 0, s,
            GMCP_LOGNO(0123) "gemini_mcp: could not write usage to the database (kept in shared "
                             "memory, retried at the next flush): %s",
            err ? err : gmcp_db_error(&db, -1));
        gmcp_limits_give_back(&g_limits, b);
    }
    gmcp_db_close_server(s, dbd);
}

static volatile apr_uint32_t next_flush;

/* Chat leases this process could not release while the database was away. */
static void release_chats(request_rec *r)
{
    gmcp_dbh *h;
    const char *why;
    if (!gmcp_chat_releases_pending()) return;
    h = gmcp_dbh_make(r);
    if (gmcp_dbh_open(h, &why) == 0) gmcp_chat_release_pending(&h->db);
    gmcp_dbh_close(h);
}

static void maybe_flush(request_rec *r)
{
    if (gmcp_due(&next_flush, (apr_uint32_t)g_flush_every)) {
        flush_usage(r->pool, r->server);
        release_chats(r);
    }
}

static server_rec *g_child_server;

/* A pre-cleanup of the child pool: runs before mod_dbd's connection pool (a
 * sub-pool) is destroyed, so a graceful restart or stop writes the last counts. */
static apr_status_t flush_at_exit(void *pchild)
{
    apr_pool_t *p;
    if (apr_pool_create(&p, NULL) != APR_SUCCESS) return APR_SUCCESS;
    (void)pchild;
    flush_usage(p, g_child_server);
    apr_pool_destroy(p);
    return APR_SUCCESS;
}

/* ---- the per-process key cache ------------------------------------------------------------ */

typedef struct {
    char lookup[GMCP_SLOT_KEY_MAX + 4]; /* "k:<id>" or "u:<apache user>" */
    apr_time_t fetched;
    int found;
    gmcp_key k;
    char *strings; /* one malloc'd block behind k's strings */
    /* The last presented key that verified, with its HMAC: the same key again needs
     * no HMAC (the row's state is still checked on every request). Process memory
     * only, never logged or stored. */
    char ok_token[96];
    char ok_hash[72];
} cached_key;

static apr_thread_mutex_t *g_cache_mutex;
static apr_hash_t *g_cache;

static void cache_free_all(void)
{
    apr_hash_index_t *hi;
    for (hi = apr_hash_first(NULL, g_cache); hi; hi = apr_hash_next(hi)) {
        cached_key *e = apr_hash_this_val(hi);
        free(e->strings);
        free(e);
    }
    apr_hash_clear(g_cache);
}

/* Copy k's strings into one malloc'd block owned by the entry. */
static int cache_store(cached_key *e, const gmcp_key *k)
{
    const char *src[9] = {k->id,          k->name,      k->tenant,
                          k->apache_user, k->scopes,    k->quota_period,
                          k->secret_hash, k->prev_hash, ""};
    const char **dst[9] = {&e->k.id,          &e->k.name,      &e->k.tenant,
                           &e->k.apache_user, &e->k.scopes,    &e->k.quota_period,
                           &e->k.secret_hash, &e->k.prev_hash, NULL};
    apr_size_t total = 0, off = 0;
    int i;
    char *blk;
    for (i = 0; i < 8; i++) total += strlen(src[i] ? src[i] : "") + 1;
    if (!(blk = malloc(total))) return -1;
    free(e->strings);
    e->k = *k;
    e->strings = blk;
    for (i = 0; i < 8; i++) {
        apr_size_t n = strlen(src[i] ? src[i] : "") + 1;
        memcpy(blk + off, src[i] ? src[i] : "", n);
        *dst[i] = blk + off;
        off += n;
    }
    return 0;
}

static void copy_key(apr_pool_t *p, const gmcp_key *from, gmcp_key *to)
{
    *to = *from;
    to->id = apr_pstrdup(p, from->id);
    to->name = apr_pstrdup(p, from->name);
    to->tenant = apr_pstrdup(p, from->tenant);
    to->apache_user = apr_pstrdup(p, from->apache_user);
    to->scopes = apr_pstrdup(p, from->scopes);
    to->quota_period = apr_pstrdup(p, from->quota_period);
    to->secret_hash = apr_pstrdup(p, from->secret_hash);
    to->prev_hash = apr_pstrdup(p, from->prev_hash);
}

/* The key row for "k:<id>" / "u:<user>", from the cache when fresh, else the database.
 * APR_SUCCESS (copied into *out), APR_ENOENT or GMCP_EDB (*why set). */
static int key_lookup(request_rec *r, const char *lookup, gmcp_key *out, const char **why,
                      int *cached, const char *token, const char **known_hash)
{
    cached_key *e;
    apr_time_t now = apr_time_now();
    gmcp_dbh *h = gmcp_dbh_make(r);
    gmcp_key k;
    int rv;

    apr_thread_mutex_lock(g_cache_mutex);
    e = apr_hash_get(g_cache, lookup, APR_HASH_KEY_STRING);
    if (cached && *cached && e && now - e->fetched < KEY_CACHE_TTL) {
        rv = e->found ? APR_SUCCESS : APR_ENOENT;
        if (e->found) copy_key(r->pool, &e->k, out);
        if (e->found && token && known_hash && e->ok_token[0] && gmcp_str_eq_ct(e->ok_token, token))
            *known_hash = apr_pstrdup(r->pool, e->ok_hash);
        apr_thread_mutex_unlock(g_cache_mutex);
        return rv;
    }
    apr_thread_mutex_unlock(g_cache_mutex);
    if (cached) *cached = 0;

    if (gmcp_dbh_open(h, why)) return GMCP_EDB;
    rv = lookup[0] == 'k' ? gmcp_key_get(&h->db, lookup + 2, &k)
                          : gmcp_key_get_by_user(&h->db, lookup + 2, &k);
    if (rv == GMCP_EDB) {
        *why = "the key store is unavailable";
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      GMCP_LOGNO(0124) "gemini_mcp: database error while looking up an API key: %s",
                      gmcp_db_error(&h->db, -1));
    }
    gmcp_dbh_close(h);
    if (rv == GMCP_EDB) return rv;
    if (rv == APR_SUCCESS) copy_key(r->pool, &k, out);

    apr_thread_mutex_lock(g_cache_mutex);
    e = apr_hash_get(g_cache, lookup, APR_HASH_KEY_STRING);
    if (!e) {
        if (apr_hash_count(g_cache) >= KEY_CACHE_MAX) cache_free_all();
        if ((e = calloc(1, sizeof(*e))) != NULL) {
            apr_cpystrn(e->lookup, lookup, sizeof(e->lookup));
            apr_hash_set(g_cache, e->lookup, APR_HASH_KEY_STRING, e);
        }
    }
    if (e) {
        e->fetched = now;
        e->found = rv == APR_SUCCESS && cache_store(e, &k) == 0;
    }
    apr_thread_mutex_unlock(g_cache_mutex);
    return rv;
}

static apr_status_t cache_cleanup(void *d)
{
    (void)d;
    if (g_cache) cache_free_all();
    return APR_SUCCESS;
}

/* Remember a presented key that verified (see cached_key). */
static void remember_ok(const char *lookup, const char *token, const char *hash)
{
    cached_key *e;
    if (strlen(token) >= sizeof(e->ok_token) || strlen(hash) >= sizeof(e->ok_hash)) return;
    apr_thread_mutex_lock(g_cache_mutex);
    e = apr_hash_get(g_cache, lookup, APR_HASH_KEY_STRING);
    if (e && e->found) {
        apr_cpystrn(e->ok_token, token, sizeof(e->ok_token));
        apr_cpystrn(e->ok_hash, hash, sizeof(e->ok_hash));
    }
    apr_thread_mutex_unlock(g_cache_mutex);
}

void gmcp_access_child_init(apr_pool_t *pchild, server_rec *s)
{
    if (g_mutex
        && apr_global_mutex_child_init(&g_mutex, apr_global_mutex_lockfile(g_mutex), pchild)
            != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     GMCP_LOGNO(0125) "gemini_mcp: cannot attach to the limits/metrics mutex");
    apr_thread_mutex_create(&g_cache_mutex, APR_THREAD_MUTEX_DEFAULT, pchild);
    g_cache = apr_hash_make(pchild);
    g_child_server = s;
    apr_atomic_set32(&next_flush, (apr_uint32_t)(apr_time_sec(apr_time_now()) + g_flush_every));
    apr_pool_pre_cleanup_register(pchild, pchild, flush_at_exit);
    apr_pool_cleanup_register(pchild, NULL, cache_cleanup, apr_pool_cleanup_null);
    if (g_store_dbd) gmcp_inflight_child_init(pchild, s);
}

/* ---- Host and Origin ---------------------------------------------------------------------- */

/* Split "host:port" / "[v6]:port" into a lowercase host and a port string. */
static void split_host(apr_pool_t *p, const char *hp, const char **host, const char **port)
{
    const char *colon;
    *port = NULL;
    if (*hp == '[') {
        const char *end = strchr(hp, ']');
        *host = apr_pstrndup(p, hp, end ? (apr_size_t)(end - hp + 1) : strlen(hp));
        if (end && end[1] == ':') *port = end + 2;
    }
    else if ((colon = strrchr(hp, ':')) != NULL) {
        *host = apr_pstrndup(p, hp, (apr_size_t)(colon - hp));
        *port = colon + 1;
    }
    else {
        *host = apr_pstrdup(p, hp);
    }
    ap_str_tolower((char *)*host);
}

static int name_matches_server(request_rec *r, const char *host)
{
    server_rec *s = r->server;
    int i;
    if (s->server_hostname && !strcasecmp(host, s->server_hostname)) return 1;
    for (i = 0; s->names && i < s->names->nelts; i++)
        if (!strcasecmp(host, APR_ARRAY_IDX(s->names, i, const char *))) return 1;
    for (i = 0; s->wild_names && i < s->wild_names->nelts; i++)
        if (!ap_strcasecmp_match(host, APR_ARRAY_IDX(s->wild_names, i, const char *))) return 1;
    return 0;
}

/* DNS-rebinding protection: the Host header must name this server. */
int gmcp_access_host_ok(request_rec *r, const gmcp_dir_conf *c)
{
    const char *hp = apr_table_get(r->headers_in, "Host"), *host, *port;
    int i;
    if (!hp) hp = r->hostname;
    if (!hp || !*hp) return 0;
    split_host(r->pool, hp, &host, &port);
    if (c->allowed_hosts) {
        for (i = 0; i < c->allowed_hosts->nelts; i++) {
            const char *a = APR_ARRAY_IDX(c->allowed_hosts, i, const char *), *ah, *ap;
            if (!strcmp(a, "*")) return 1;
            split_host(r->pool, a, &ah, &ap);
            if (!ap_strcasecmp_match(host, ah) && (!ap || (port && !strcmp(ap, port)))) return 1;
        }
        return 0;
    }
    return !strcmp(host, "localhost") || !strcmp(host, "127.0.0.1") || !strcmp(host, "[::1]")
        || name_matches_server(r, host);
}

static const char *default_port(const char *scheme)
{
    return !strcasecmp(scheme, "https") ? "443" : "80";
}

/* Origin must be absent, the endpoint's own, or allow-listed. */
int gmcp_access_origin_ok(request_rec *r, const gmcp_dir_conf *c)
{
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *hp = apr_table_get(r->headers_in, "Host"), *oh, *op, *hh, *hport, *scheme;
    apr_uri_t u;
    int i;
    if (!origin) return 1;
    for (i = 0; c->allowed_origins && i < c->allowed_origins->nelts; i++) {
        const char *a = APR_ARRAY_IDX(c->allowed_origins, i, const char *);
        if (!strcmp(a, "*") || !strcasecmp(a, origin)) return 1;
    }
    if (!hp || apr_uri_parse(r->pool, origin, &u) != APR_SUCCESS || !u.scheme || !u.hostname)
        return 0;
    scheme = ap_http_scheme(r);
    if (strcasecmp(u.scheme, scheme) != 0) return 0;
    split_host(r->pool,
               apr_pstrcat(r->pool, u.hostname[0] != '[' && strchr(u.hostname, ':') ? "[" : "",
                           u.hostname, u.hostname[0] != '[' && strchr(u.hostname, ':') ? "]" : "",
                           NULL),
               &oh, &op);
    op = u.port_str ? u.port_str : default_port(u.scheme);
    split_host(r->pool, hp, &hh, &hport);
    if (!hport) hport = default_port(scheme);
    return !strcmp(oh, hh) && !strcmp(op, hport);
}

int gmcp_request_origin_ok(request_rec *r, const gmcp_dir_conf *dc)
{
    return gmcp_access_host_ok(r, dc) && gmcp_access_origin_ok(r, dc);
}

/* ---- per request ------------------------------------------------------------------------- */

gmcp_access *gmcp_access_get(request_rec *r)
{
    return ap_get_module_config(r->request_config, &gemini_mcp_module);
}

static void count_auth_failure(int reason)
{
    if (g_shared) gmcp_metrics_count(&g_shared->metrics.auth_failures[reason]);
}

/* Auth failures go to the audit log, at most one row per second per process (with the
 * number left out since), so a flood of bad keys cannot flood the table. */
static apr_time_t last_fail_audit;
static apr_uint32_t fails_unaudited;

static void audit_failure(request_rec *r, const char *reason, const char *key_id)
{
    apr_time_t now = apr_time_now();
    gmcp_dbh *h = gmcp_dbh_make(r);
    const char *why;
    apr_uint32_t skipped;
    if (now - last_fail_audit < AUDIT_FAIL_EVERY) {
        apr_atomic_inc32(&fails_unaudited);
        return;
    }
    last_fail_audit = now;
    skipped = apr_atomic_xchg32(&fails_unaudited, 0);
    if (gmcp_dbh_open(h, &why)) return;
    if (gmcp_audit(&h->db, apr_pstrcat(r->pool, "client ", r->useragent_ip, NULL), "auth.failure",
                   key_id,
                   skipped ? apr_psprintf(r->pool,
                                          "%s (and %u earlier failure(s) not "
                                          "recorded one by one)",
                                          reason, skipped)
                           : reason))
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      GMCP_LOGNO(0126) "gemini_mcp: cannot write the audit log: %s",
                      gmcp_db_error(&h->db, -1));
    gmcp_dbh_close(h);
}

/* 401 with a Bearer challenge (RFC 6750) and a JSON-RPC error body. */
static int unauthorized(request_rec *r, int reason, const char *error, const char *message,
                        const char *key_id)
{
    const gmcp_access *a = gmcp_access_get(r);
    count_auth_failure(reason);
    if (a && a->oauth)
        apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                       gmcp_oauth_challenge(r, a->oauth, error, message, NULL));
    else
        apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                       error ? apr_psprintf(r->pool,
                                            "Bearer realm=\"" REALM "\", error=\"%s\", "
                                            "error_description=\"%s\"",
                                            error, message)
                             : "Bearer realm=\"" REALM "\"");
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, GMCP_LOGNO(0127) "gemini_mcp: 401 %s%s%s", message,
                  key_id ? " key=" : "", key_id ? key_id : "");
    audit_failure(r, message, key_id);
    gmcp_send_json(r, HTTP_UNAUTHORIZED,
                   gmcp_rpc_error(NULL, GMCP_SERVER_ERROR,
                                  apr_pstrcat(r->pool, "Unauthorized: ", message, NULL), NULL));
    return DONE;
}

static void take_key(gmcp_access *a, const gmcp_key *k)
{
    a->key = apr_pmemdup(a->r->pool, k, sizeof(*k));
    a->key_id = k->id;
    a->principal = *k->tenant ? apr_pstrcat(a->r->pool, "tenant:", k->tenant, NULL)
                              : apr_pstrcat(a->r->pool, "key:", k->id, NULL);
    a->scopes = k->scopes;
    gmcp_key_limits_of(k, &a->limits);
}

/* The Authorization header's Bearer credential, or NULL. */
static const char *bearer_of(request_rec *r)
{
    const char *h = apr_table_get(r->headers_in, "Authorization"), *tok;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !*(tok = h + 7 + strspn(h + 7, " ")))
        return NULL;
    return tok;
}

/* GeminiMCPAuth apikey: the Bearer key, verified against its row. OK, or DONE when
 * answered (401, 503). */
static int identify_by_key(request_rec *r, gmcp_access *a, const char *tok)
{
    const char *id, *hash;
    const char *lookup, *known = NULL, *why = NULL;
    apr_int64_t now = gmcp_now_sec();
    int cached = 1, rv;
    gmcp_key k;

    if (!tok)
        return unauthorized(r, GMCP_AUTH_MISSING, NULL,
                            a->oauth ? "an API key or access token is required "
                                       "(Authorization: Bearer)"
                                     : "an API key is required (Authorization: Bearer <key>)",
                            NULL);
    if (gmcp_key_parse(r->pool, tok, &id, NULL) != 0)
        return unauthorized(r, GMCP_AUTH_INVALID, "invalid_token", "the API key is not valid",
                            NULL);
    lookup = apr_pstrcat(r->pool, "k:", id, NULL);
    rv = key_lookup(r, lookup, &k, &why, &cached, tok, &known);
    hash = known ? known : gmcp_key_hash(r->pool, g_pepper, tok);
    if (rv == APR_SUCCESS && hash && gmcp_key_verify(&k, hash, now) == GMCP_KEY_BAD && cached)
        /* Maybe just rotated: a secret the cached row does not know is checked
         * against the database before it is refused. */
        rv = key_lookup(r, lookup, &k, &why, NULL, NULL, NULL);
    if (rv == GMCP_EDB) return gmcp_send_unavailable(r, NULL, why);
    rv = rv == APR_SUCCESS && hash ? gmcp_key_verify(&k, hash, now) : GMCP_KEY_BAD;
    if (rv == GMCP_KEY_OK && !known) remember_ok(lookup, tok, hash);
    if (rv == GMCP_KEY_BAD)
        return unauthorized(r, GMCP_AUTH_INVALID, "invalid_token", "the API key is not valid", id);
    if (rv == GMCP_KEY_REVOKED)
        return unauthorized(r, GMCP_AUTH_REVOKED, "invalid_token", "the API key has been revoked",
                            id);
    if (rv == GMCP_KEY_EXPIRED)
        return unauthorized(r, GMCP_AUTH_EXPIRED, "invalid_token", "the API key has expired", id);
    take_key(a, &k);
    return OK;
}

/* GeminiMCPAuth apache: r->user, with its key row when it has one. OK, or DONE when
 * answered (401, 503). */
static int identify_by_user(request_rec *r, gmcp_access *a)
{
    const char *why = NULL;
    int cached = 1, rv;
    gmcp_key k;

    if (!r->user)
        return unauthorized(r, GMCP_AUTH_MISSING, NULL,
                            "authentication is required "
                            "(GeminiMCPAuth apache needs an Apache auth module with "
                            "Require valid-user on this location)",
                            NULL);
    rv = key_lookup(r, apr_pstrcat(r->pool, "u:", r->user, NULL), &k, &why, &cached, NULL, NULL);
    if (rv == GMCP_EDB) return gmcp_send_unavailable(r, NULL, why);
    if (rv == APR_SUCCESS && k.revoked)
        return unauthorized(r, GMCP_AUTH_REVOKED, "invalid_token",
                            "access for this user has been revoked", k.id);
    if (rv == APR_SUCCESS && k.expires && gmcp_now_sec() >= k.expires)
        return unauthorized(r, GMCP_AUTH_EXPIRED, "invalid_token",
                            "access for this user has expired", k.id);
    if (rv == APR_SUCCESS) { take_key(a, &k); }
    else {
        a->principal = apr_pstrcat(r->pool, "user:", r->user, NULL);
        a->key_id = a->principal;
    }
    return OK;
}

/* GeminiMCPAuth oauth: an access token for this resource; the limits of the key row
 * made for its subject (gmcpctl keys create --subject), if there is one. OK, or DONE
 * when answered (401, 503). */
static int identify_by_token(request_rec *r, gmcp_access *a, const char *tok)
{
    gmcp_jwt_claims c;
    const char *why = NULL, *subject;
    int cached = 1, rv;
    gmcp_key k;
    if (!tok)
        return unauthorized(r, GMCP_AUTH_MISSING, NULL,
                            "an access token is required (Authorization: Bearer)", NULL);
    rv = gmcp_oauth_check(r, a->oauth, tok, &c, &why);
    if (rv == GMCP_TOKEN_UNAVAILABLE) return gmcp_send_unavailable(r, NULL, why);
    if (rv != GMCP_TOKEN_OK) return unauthorized(r, GMCP_AUTH_INVALID, "invalid_token", why, NULL);
    subject = apr_pstrcat(r->pool, "oauth:", c.subject, NULL);
    a->granted = c.scope;
    a->token_tools = gmcp_scopes_tools(r->pool, gmcp_oauth_scopes(a->oauth), c.scope);
    a->key_id = subject;
    /* The owner: the row's tenant, the token's tenant claim, or the subject. */
    a->principal = c.tenant ? apr_pstrcat(r->pool, "tenant:", c.tenant, NULL) : subject;
    rv = key_lookup(r, apr_pstrcat(r->pool, "u:", subject, NULL), &k, &why, &cached, NULL, NULL);
    if (rv == GMCP_EDB) return gmcp_send_unavailable(r, NULL, why);
    if (rv == APR_SUCCESS && k.revoked)
        return unauthorized(r, GMCP_AUTH_REVOKED, "invalid_token",
                            "access for this subject has been revoked", k.id);
    if (rv == APR_SUCCESS && k.expires && gmcp_now_sec() >= k.expires)
        return unauthorized(r, GMCP_AUTH_EXPIRED, "invalid_token",
                            "access for this subject has expired", k.id);
    if (rv != APR_SUCCESS) return OK;
    take_key(a, &k); /* its limits, scopes and, when it has one, tenant */
    if (!*k.tenant)
        a->principal = c.tenant ? apr_pstrcat(r->pool, "tenant:", c.tenant, NULL) : subject;
    return OK;
}

/* MCP forbids tokens in the URI; one there is refused, not ignored (400). */
static int token_in_query(request_rec *r)
{
    const char *q = r->args;
    return q && (!strncmp(q, "access_token=", 13) || strstr(q, "&access_token="));
}

static int refuse_query_token(request_rec *r, gmcp_access *a)
{
    count_auth_failure(GMCP_AUTH_INVALID);
    apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                   gmcp_oauth_challenge(r, a->oauth, "invalid_request",
                                        "access tokens are taken in the Authorization header "
                                        "only",
                                        NULL));
    return gmcp_send_json(r, HTTP_BAD_REQUEST,
                          gmcp_rpc_error(NULL, GMCP_SERVER_ERROR,
                                         "Bad Request: access tokens are not accepted in the "
                                         "query string",
                                         NULL));
}

int gmcp_access_identify(request_rec *r, const gmcp_dir_conf *dc, gmcp_access **out)
{
    gmcp_access *a = apr_pcalloc(r->pool, sizeof(*a));
    const char *tok = bearer_of(r);
    int st = OK;
    a->r = r;
    a->start = r->request_time;
    a->mode = dc->auth_mode;
    a->oauth = gmcp_conf_oauth_on(dc) ? dc->oauth : NULL;
    ap_set_module_config(r->request_config, &gemini_mcp_module, a);
    *out = a;

    if (a->oauth && token_in_query(r)) return refuse_query_token(r, a);
    if (a->mode == GMCP_AUTH_OAUTH
        || (a->mode == GMCP_AUTH_APIKEY && a->oauth && tok
            && strncmp(tok, GMCP_KEY_PREFIX, strlen(GMCP_KEY_PREFIX)) != 0))
        st = identify_by_token(r, a, tok);
    else if (a->mode == GMCP_AUTH_APIKEY) {
        st = identify_by_key(r, a, tok);
    }
    else if (a->mode == GMCP_AUTH_APACHE) {
        st = identify_by_user(r, a);
    }
    else {
        a->principal = r->user ? r->user : gmcp_conf_principal(dc);
        a->key_id = a->principal;
    }
    if (st != OK) return st;
    apr_table_setn(r->notes, "gmcp-key", a->key_id);
    return OK;
}

static void ratelimit_headers(request_rec *r, const gmcp_access *a, const gmcp_admit_info *in)
{
    apr_int64_t burst;
    if (!a->limits.req_interval) return;
    burst = a->limits.req_limit / a->limits.req_interval;
    apr_table_setn(
        r->err_headers_out, "RateLimit-Policy",
        apr_psprintf(r->pool, "%" APR_INT64_T_FMT ";w=%" APR_INT64_T_FMT ";burst=%" APR_INT64_T_FMT,
                     a->key->rate_count, a->key->rate_period, burst));
    apr_table_setn(r->err_headers_out, "RateLimit-Limit",
                   apr_psprintf(r->pool, "%" APR_INT64_T_FMT, burst));
    apr_table_setn(
        r->err_headers_out, "RateLimit-Remaining",
        apr_psprintf(r->pool, "%" APR_INT64_T_FMT, in->remaining < 0 ? 0 : in->remaining));
    apr_table_setn(
        r->err_headers_out, "RateLimit-Reset",
        apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                     (apr_int64_t)((in->reset + APR_USEC_PER_SEC - 1) / APR_USEC_PER_SEC)));
}

static int too_many(request_rec *r, gmcp_access *a, json_t *id, int reason,
                    apr_interval_time_t retry_after, const char *message)
{
    gmcp_usage u;
    apr_int64_t secs = (retry_after + APR_USEC_PER_SEC - 1) / APR_USEC_PER_SEC;
    if (secs < 1) secs = 1;
    gmcp_metrics_count(&g_shared->metrics.rejected[reason]);
    memset(&u, 0, sizeof(u));
    u.rejected = 1;
    gmcp_limits_account(&g_limits, a->key_id, apr_time_now(), &u);
    a->rejected = 1;
    apr_table_setn(r->err_headers_out, "Retry-After",
                   apr_psprintf(r->pool, "%" APR_INT64_T_FMT, secs));
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, GMCP_LOGNO(0128) "gemini_mcp: 429 key=%s: %s",
                  a->key_id, message);
    gmcp_send_json(r, HTTP_TOO_MANY_REQUESTS,
                   gmcp_rpc_error(id, GMCP_SERVER_ERROR,
                                  apr_pstrcat(r->pool, "Too Many Requests: ", message, NULL),
                                  json_pack("{s:s, s:f}", "reason",
                                            reason == GMCP_REJ_QUOTA          ? "quota"
                                                : reason == GMCP_REJ_TOKENS   ? "tokens"
                                                : reason == GMCP_REJ_INFLIGHT ? "inflight"
                                                : reason == GMCP_REJ_FULL     ? "capacity"
                                                                              : "rate",
                                            "retryAfter", (double)retry_after / APR_USEC_PER_SEC)));
    return DONE;
}

/* Normally the log hook leaves (with the usage, under one lock); this cleanup covers
 * a request that never reaches logging. */
static apr_status_t leave_inflight(void *d)
{
    gmcp_access *a = d;
    if (a->entered) gmcp_limits_leave(&g_limits, a->key_id);
    a->entered = 0;
    return APR_SUCCESS;
}

/* Tokens used this quota period: flushed rows plus what is still in shared memory. */
static int quota_used(request_rec *r, gmcp_access *a, apr_int64_t *used, const char **why)
{
    gmcp_dbh *h = gmcp_dbh_make(r);
    gmcp_usage u;
    apr_int64_t start = gmcp_quota_period_start(a->key->quota_period, gmcp_now_sec());
    if (gmcp_dbh_open(h, why)) return -1;
    if (gmcp_usage_sum(&h->db, a->key_id, start, &u)) {
        *why = "the usage store is unavailable";
        gmcp_dbh_close(h);
        return -1;
    }
    gmcp_dbh_close(h);
    gmcp_limits_pending(&g_limits, a->key_id, start, &u);
    *used = u.prompt_tokens + u.output_tokens;
    return 0;
}

/* 403: the tool is outside the key's scopes. DONE. */
static int refuse_scope(request_rec *r, gmcp_access *a, const char *tool, json_t *id)
{
    count_auth_failure(GMCP_AUTH_FORBIDDEN);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  GMCP_LOGNO(0129) "gemini_mcp: 403 key=%s tool=%s: outside the key's scopes",
                  a->key_id, tool);
    return gmcp_send_json(
        r, HTTP_FORBIDDEN,
        gmcp_rpc_error(id, GMCP_SERVER_ERROR,
                       apr_psprintf(r->pool,
                                    "Forbidden: this API key's scopes (%s) do not allow "
                                    "the tool '%s'",
                                    a->scopes, tool),
                       NULL));
}

/* The scopes to ask for: the one the tool needs, with those already granted that
 * this resource knows (so a client asking again does not lose them). */
static const char *scopes_to_ask(request_rec *r, const gmcp_access *a, const char *needed)
{
    const apr_array_header_t *defs = gmcp_oauth_scopes(a->oauth);
    char *list = apr_pstrdup(r->pool, a->granted ? a->granted : ""), *last = NULL, *g;
    const char *out = needed;
    int i;
    for (g = apr_strtok(list, " ", &last); g; g = apr_strtok(NULL, " ", &last))
        for (i = 0; i < defs->nelts; i++)
            if (!strcmp(APR_ARRAY_IDX(defs, i, gmcp_scope_def).name, g) && strcmp(g, needed)) {
                out = apr_pstrcat(r->pool, out, " ", g, NULL);
                break;
            }
    return out;
}

/* 403 insufficient_scope (RFC 6750): the token's scopes do not allow the tool. DONE. */
static int refuse_token_scope(request_rec *r, gmcp_access *a, const char *tool, json_t *id)
{
    const char *needed = gmcp_scopes_needed(r->pool, gmcp_oauth_scopes(a->oauth), tool);
    const char *msg = needed
        ? apr_psprintf(r->pool, "the tool '%s' needs the scope %s", tool, needed)
        : apr_psprintf(r->pool, "no scope allows the tool '%s'", tool);
    count_auth_failure(GMCP_AUTH_FORBIDDEN);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  GMCP_LOGNO(0185) "gemini_mcp: 403 key=%s tool=%s: %s", a->key_id, tool, msg);
    /* The challenge names no tool: the body does. */
    apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                   gmcp_oauth_challenge(r, a->oauth, "insufficient_scope",
                                        "the token's scopes do not allow this tool",
                                        needed ? scopes_to_ask(r, a, needed) : ""));
    return gmcp_send_json(r, HTTP_FORBIDDEN,
                          gmcp_rpc_error(id, GMCP_SERVER_ERROR,
                                         apr_pstrcat(r->pool, "Forbidden: ", msg, NULL), NULL));
}

/* GeminiMCPRateLimitStore dbd: the request rate in the database, so it holds across
 * nodes. OK, or DONE when answered (429, 503). */
static int admit_rate_dbd(request_rec *r, gmcp_access *a, apr_time_t now, json_t *id)
{
    gmcp_dbh *h = gmcp_dbh_make(r);
    gmcp_admit_info info;
    int rv, allowed = 0;
    apr_int64_t tat = 0;
    const char *why;
    if (gmcp_dbh_open(h, &why)) return gmcp_send_unavailable(r, NULL, why);
    rv = gmcp_ratelimit_dbd(&h->db, a->key_id, now, a->limits.req_interval, a->limits.req_limit,
                            &allowed, &tat);
    if (rv)
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      GMCP_LOGNO(0130) "gemini_mcp: database error in the rate-limit store: %s",
                      gmcp_db_error(&h->db, -1));
    gmcp_dbh_close(h);
    if (rv) return gmcp_send_unavailable(r, NULL, "the rate-limit store is unavailable");
    memset(&info, 0, sizeof(info));
    info.reset = tat - now;
    if (!allowed) {
        info.retry_after = tat + a->limits.req_interval - now - a->limits.req_limit;
        ratelimit_headers(r, a, &info);
        return too_many(r, a, id, GMCP_REJ_RATE, info.retry_after,
                        "this API key's request rate limit is reached");
    }
    info.remaining = (a->limits.req_limit - (tat - now)) / a->limits.req_interval;
    ratelimit_headers(r, a, &info);
    return OK;
}

/* The verdict of the limits in shared memory: OK, or DONE when refused (429). */
static int refuse_over_limit(request_rec *r, gmcp_access *a, json_t *id, int verdict,
                             const gmcp_admit_info *info)
{
    switch (verdict) {
    case GMCP_ADMIT_RATE:
        return too_many(r, a, id, GMCP_REJ_RATE, info->retry_after,
                        "this API key's request rate limit is reached");
    case GMCP_ADMIT_TOKENS:
        return too_many(r, a, id, GMCP_REJ_TOKENS, info->retry_after,
                        "this API key's Gemini token rate limit is reached");
    case GMCP_ADMIT_INFLIGHT:
        return too_many(r, a, id, GMCP_REJ_INFLIGHT, info->retry_after,
                        apr_psprintf(r->pool,
                                     "this API key already has %" APR_INT64_T_FMT
                                     " requests in flight",
                                     a->limits.max_inflight));
    case GMCP_ADMIT_FULL:
        return too_many(r, a, id, GMCP_REJ_FULL, info->retry_after,
                        "too many distinct keys are active at once; try again shortly");
    default: return OK;
    }
}

/* The key's token quota, for a call that spends tokens. OK, or DONE when answered
 * (429, 503). */
static int admit_quota(request_rec *r, gmcp_access *a, json_t *id)
{
    apr_int64_t used = 0, now;
    const char *why;
    if (quota_used(r, a, &used, &why)) return gmcp_send_unavailable(r, NULL, why);
    if (used < a->key->token_quota) return OK;
    now = gmcp_now_sec();
    return too_many(
        r, a, id, GMCP_REJ_QUOTA,
        apr_time_from_sec(gmcp_quota_period_end(a->key->quota_period, now) - now),
        apr_psprintf(r->pool, "this API key's token quota (%" APR_INT64_T_FMT " per %s) is used up",
                     a->key->token_quota, a->key->quota_period));
}

/* GeminiMCPRateLimitStore dbd, a call that spends tokens: the key's token bucket in
 * the database must not be in debt. OK, or DONE when answered (429, 503). */
static int admit_tokens_dbd(request_rec *r, gmcp_access *a, apr_time_t now, json_t *id)
{
    gmcp_dbh *h = gmcp_dbh_make(r);
    apr_int64_t tat = 0, late;
    const char *why;
    apr_status_t rv;
    if (gmcp_dbh_open(h, &why)) return gmcp_send_unavailable(r, NULL, why);
    rv = gmcp_bucket_peek(&h->db, apr_pstrcat(r->pool, "tok:", a->key_id, NULL), &tat);
    gmcp_dbh_close(h);
    if (rv) return gmcp_send_unavailable(r, NULL, "the rate-limit store is unavailable");
    /* As in shared memory: at least one token must be left. */
    late = (tat > now ? tat : now) + a->limits.tok_interval - now - a->limits.tok_limit;
    if (late <= 0) return OK;
    return too_many(r, a, id, GMCP_REJ_TOKENS, late,
                    "this API key's Gemini token rate limit is reached");
}

/* GeminiMCPRateLimitStore dbd, a key with max_inflight: a slot of the key's in the
 * database. OK, or DONE when answered (429, 503). */
static int enter_dbd(request_rec *r, gmcp_access *a, json_t *id)
{
    int st = gmcp_inflight_enter(r, a->key_id, a->limits.max_inflight);
    if (st < 0) return gmcp_send_unavailable(r, NULL, "the in-flight store is unavailable");
    if (st == 0) return OK;
    return too_many(r, a, id, GMCP_REJ_INFLIGHT, apr_time_from_sec(1),
                    apr_psprintf(r->pool,
                                 "this API key already has %" APR_INT64_T_FMT " requests in flight",
                                 a->limits.max_inflight));
}

int gmcp_access_admit(request_rec *r, gmcp_access *a, const char *method, const char *tool,
                      int spends_tokens, json_t *id)
{
    gmcp_admit_info info;
    gmcp_key_limits here;
    apr_time_t now = apr_time_now();
    int st, check_rate = 1;
    a->method = method;
    a->tool = tool;
    if (tool && a->token_tools && !gmcp_scope_allows(r->pool, a->token_tools, tool))
        return refuse_token_scope(r, a, tool, id);
    if (tool && a->scopes && !gmcp_scope_allows(r->pool, a->scopes, tool))
        return refuse_scope(r, a, tool, id);
    if (!a->key) return OK; /* no limits configured for this caller */

    here = a->limits;
    if (g_store_dbd) {
        /* What the database counts for every node is not counted here again. */
        if (a->limits.req_interval) {
            if ((st = admit_rate_dbd(r, a, now, id)) != OK) return st;
            check_rate = 0;
        }
        if (spends_tokens && a->limits.tok_interval && (st = admit_tokens_dbd(r, a, now, id)) != OK)
            return st;
        here.tok_interval = 0;
        here.max_inflight = 0;
    }
    st = gmcp_limits_admit(&g_limits, a->key_id, &here, now, check_rate, spends_tokens, 1, &info);
    if (check_rate) ratelimit_headers(r, a, &info);
    if ((st = refuse_over_limit(r, a, id, st, &info)) != OK) return st;
    a->entered = 1;
    apr_pool_cleanup_register(r->pool, a, leave_inflight, apr_pool_cleanup_null);
    if (spends_tokens && a->key->token_quota > 0 && (st = admit_quota(r, a, id)) != OK) return st;
    if (g_store_dbd && a->limits.max_inflight) return enter_dbd(r, a, id);
    return OK;
}

/* GeminiMCPRateLimitStore dbd: the tokens a call spent, charged to the key's token
 * bucket and (with a quota) written to its usage at once, so every node sees them
 * before the next call. 0, or -1 when the store failed (counted here instead). */
static int charge_tokens_dbd(request_rec *r, gmcp_access *a, apr_int64_t prompt, apr_int64_t output)
{
    gmcp_dbh *h = gmcp_dbh_make(r);
    apr_time_t now = apr_time_now();
    apr_int64_t sec = apr_time_sec(now), tat;
    const char *why;
    int failed = 0;
    if (gmcp_dbh_open(h, &why)) return -1;
    if (a->limits.tok_interval
        && gmcp_bucket_charge(&h->db, apr_pstrcat(r->pool, "tok:", a->key_id, NULL), now,
                              (prompt + output) * a->limits.tok_interval, &tat))
        failed = 1;
    else if (a->key->token_quota > 0) {
        gmcp_usage u;
        memset(&u, 0, sizeof(u));
        u.prompt_tokens = prompt;
        u.output_tokens = output;
        if (gmcp_usage_add(&h->db, a->key_id, sec - sec % 3600, &u) == APR_SUCCESS) {
            a->stored_prompt += prompt;
            a->stored_output += output;
        }
    }
    gmcp_dbh_close(h);
    return failed ? -1 : 0;
}

void gmcp_access_gemini_observed(request_rec *r, int status, apr_interval_time_t latency,
                                 int retries, apr_int64_t prompt, apr_int64_t output)
{
    gmcp_access *a = gmcp_access_get(r);
    if (a) {
        a->upstream_status = status;
        a->upstream_time += latency;
        a->retries += retries;
        a->prompt_tokens += prompt;
        a->output_tokens += output;
        if (a->key && (!g_store_dbd || charge_tokens_dbd(r, a, prompt, output)))
            gmcp_limits_charge_tokens(&g_limits, a->key_id, &a->limits, prompt + output,
                                      apr_time_now());
    }
    if (g_shared)
        gmcp_metrics_gemini(&g_shared->metrics, &g_metrics_lock, status, latency, retries, prompt,
                            output);
}

static json_t *usage_json(const gmcp_usage *u)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "requests", (json_int_t)u->requests,
                     "errors", (json_int_t)u->errors, "rejected", (json_int_t)u->rejected,
                     "prompt_tokens", (json_int_t)u->prompt_tokens, "output_tokens",
                     (json_int_t)u->output_tokens, "bytes_in", (json_int_t)u->bytes_in, "bytes_out",
                     (json_int_t)u->bytes_out);
}

/* The caller's limits, as the usage report shows them. */
static json_t *limits_json(const gmcp_access *a)
{
    const gmcp_key *k = a->key;
    if (!k)
        return json_pack("{s:n, s:n, s:n, s:n, s:s}", "requests", "tokens", "max_inflight",
                         "token_quota", "scopes", "*");
    return json_pack(
        "{s:o, s:o, s:o, s:o, s:s}", "requests",
        k->rate_count ? json_pack("{s:I, s:I, s:I}", "count", (json_int_t)k->rate_count,
                                  "per_seconds", (json_int_t)k->rate_period, "burst",
                                  (json_int_t)(a->limits.req_limit / a->limits.req_interval))
                      : json_null(),
        "tokens",
        k->token_rate_count ? json_pack("{s:I, s:I}", "count", (json_int_t)k->token_rate_count,
                                        "per_seconds", (json_int_t)k->token_rate_period)
                            : json_null(),
        "max_inflight", k->max_inflight ? json_integer(k->max_inflight) : json_null(),
        "token_quota", k->token_quota ? json_integer(k->token_quota) : json_null(), "scopes",
        k->scopes);
}

/* The token quota's state for its period, from the usage of today and this month. */
static json_t *quota_json(const gmcp_access *a, const gmcp_usage *today, const gmcp_usage *month,
                          apr_int64_t now)
{
    const char *per = a->key->quota_period;
    const gmcp_usage *u = !strcmp(per, "month") ? month : today;
    apr_int64_t used = u->prompt_tokens + u->output_tokens;
    char buf[APR_RFC822_DATE_LEN];
    apr_rfc822_date(buf, apr_time_from_sec(gmcp_quota_period_end(per, now)));
    return json_pack("{s:s, s:I, s:I, s:I, s:s}", "period", per, "limit",
                     (json_int_t)a->key->token_quota, "used", (json_int_t)used, "remaining",
                     (json_int_t)(used < a->key->token_quota ? a->key->token_quota - used : 0),
                     "resets", buf);
}

json_t *gmcp_access_usage_report(request_rec *r, const char **why)
{
    gmcp_access *a = gmcp_access_get(r);
    gmcp_dbh *h = gmcp_dbh_make(r);
    apr_int64_t now = gmcp_now_sec(), starts[3];
    gmcp_usage u[3];
    const char *names[3] = {"this_hour", "today", "this_month"};
    json_t *usage = json_object(), *out;
    int i;
    if (!a) {
        *why = "no caller identity";
        json_decref(usage);
        return NULL;
    }
    starts[0] = now - now % 3600;
    starts[1] = gmcp_quota_period_start("day", now);
    starts[2] = gmcp_quota_period_start("month", now);
    if (gmcp_dbh_open(h, why)) {
        json_decref(usage);
        return NULL;
    }
    for (i = 0; i < 3; i++) {
        if (gmcp_usage_sum(&h->db, a->key_id, starts[i], &u[i])) {
            *why = "the usage store is unavailable";
            gmcp_dbh_close(h);
            json_decref(usage);
            return NULL;
        }
        gmcp_limits_pending(&g_limits, a->key_id, starts[i], &u[i]);
        json_object_set_new(usage, names[i], usage_json(&u[i]));
    }
    gmcp_dbh_close(h);
    out = json_pack("{s:s, s:s, s:o, s:o}", "key_id", a->key_id, "principal", a->principal,
                    "limits", limits_json(a), "usage", usage);
    if (a->key && a->key->token_quota > 0)
        json_object_set_new(out, "quota", quota_json(a, &u[1], &u[2], now));
    return out;
}

/* ---- after the response: metrics, usage, the log line -------------------------------- */

int gmcp_access_log(request_rec *r)
{
    gmcp_access *a;
    apr_interval_time_t took;
    gmcp_usage u;
    int status;
    if (r->main || !(a = gmcp_access_get(r)) || !g_shared) return DECLINED;
    took = apr_time_now() - a->start;
    status = r->status;
    gmcp_metrics_request(&g_shared->metrics, &g_metrics_lock, a->method ? a->method : r->method,
                         a->tool, status, took, a->bytes_in, (apr_int64_t)r->bytes_sent);
    if (a->key_id && !a->rejected) {
        /* The request's usage and the end of its in-flight count: one lock. */
        memset(&u, 0, sizeof(u));
        u.requests = 1;
        u.errors = status >= 400;
        u.prompt_tokens = a->prompt_tokens - a->stored_prompt;
        u.output_tokens = a->output_tokens - a->stored_output;
        u.bytes_in = a->bytes_in;
        u.bytes_out = (apr_int64_t)r->bytes_sent;
        gmcp_limits_finish(&g_limits, a->key_id, apr_time_now(), &u, a->entered);
        a->entered = 0;
    }
    if (a->bw_pending > 0 && g_store_dbd) throttle_dbd(a, apr_time_now()); /* the last bytes */
    gmcp_inflight_leave(r);
    ap_log_rerror(
        APLOG_MARK, APLOG_INFO, 0, r,
        GMCP_LOGNO(0131) "gemini_mcp: key=%s method=%s tool=%s status=%d ms=%.1f upstream=%d "
                         "upstream_ms=%.1f retries=%d tokens=%" APR_INT64_T_FMT
                         "/%" APR_INT64_T_FMT,
        a->key_id ? a->key_id : "-", a->method ? a->method : r->method, a->tool ? a->tool : "-",
        status, (double)took / 1000.0, a->upstream_status, (double)a->upstream_time / 1000.0,
        a->retries, a->prompt_tokens, a->output_tokens);
    maybe_flush(r);
    return OK;
}

/* ---- metrics endpoint ------------------------------------------------------------------- */

const char *gmcp_access_metrics_text(request_rec *r)
{
    gmcp_metrics_gauges g;
    gmcp_breaker_state bs;
    gmcp_dbh *h = gmcp_dbh_make(r);
    const char *why;
    memset(&g, 0, sizeof(g));
    g.mcp_sessions = g.chat_sessions = -1;
    g.node = g_node;
    g.version = GMCP_VERSION;
    if (!g_shared) return "";
    lock(NULL);
    g.limiter_evictions = g_limits.t->evictions;
    g.limiter_full = g_limits.t->full;
    unlock(NULL);
    gmcp_breaker_read(&bs);
    g.breaker_state = (int)bs.state;
    g.breaker_opens = bs.opens;
    if (gmcp_dbh_open(h, &why) == 0) {
        gmcp_rows rs;
        const gmcp_srv_conf *sc = gmcp_config_srv(r->server);
        const char *since = gmcp_i64_str(r->pool, gmcp_now_sec() - gmcp_conf_session_idle(sc));
        const char *csince = gmcp_i64_str(r->pool, gmcp_now_sec() - gmcp_conf_chat_idle(sc));
        if (gmcp_db_select(&h->db, "gmcp_count_sessions", &rs, GMCP_ARGS(since)) == 0
            && rs.rows->nelts == 1)
            g.mcp_sessions = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
        if (gmcp_db_select(&h->db, "gmcp_count_chats", &rs, GMCP_ARGS(csince)) == 0
            && rs.rows->nelts == 1)
            g.chat_sessions = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
        gmcp_dbh_close(h);
    }
    return gmcp_metrics_render(r->pool, &g_shared->metrics, &g, apr_time_now());
}

/* ---- CORS ------------------------------------------------------------------------------------ */

#define CORS_EXPOSE                                                         \
    "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate, Retry-After, " \
    "RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"
#define CORS_METHODS "GET, POST, DELETE, OPTIONS"

/* Request headers a browser MCP client may send (Mcp-Param-* are the 2026 revision's
 * mirrored parameters). */
static int cors_header_ok(const char *h)
{
    static const char *const OK_HEADERS[] = {
        "content-type",  "accept",     "authorization", "mcp-session-id", "mcp-protocol-version",
        "last-event-id", "mcp-method", "mcp-name",      "cache-control",  NULL};
    int i;
    if (!strncasecmp(h, "mcp-param-", 10)) return 1;
    for (i = 0; OK_HEADERS[i]; i++)
        if (!strcasecmp(h, OK_HEADERS[i])) return 1;
    return 0;
}

void gmcp_access_cors(request_rec *r)
{
    const char *origin = apr_table_get(r->headers_in, "Origin");
    if (!origin) return;
    /* Only reached for origins gmcp_access_origin_ok() accepted. */
    apr_table_setn(r->err_headers_out, "Access-Control-Allow-Origin", origin);
    apr_table_mergen(r->err_headers_out, "Vary", "Origin");
    apr_table_setn(r->err_headers_out, "Access-Control-Expose-Headers", CORS_EXPOSE);
}

int gmcp_access_preflight(request_rec *r)
{
    const char *want = apr_table_get(r->headers_in, "Access-Control-Request-Headers");
    const char *method = apr_table_get(r->headers_in, "Access-Control-Request-Method");
    char *list, *tok, *last = NULL;
    if (!apr_table_get(r->headers_in, "Origin") || !method) {
        apr_table_setn(r->headers_out, "Allow", CORS_METHODS);
        r->status = HTTP_NO_CONTENT;
        return DONE;
    }
    if (!ap_strstr_c(CORS_METHODS, method) || !*method)
        return gmcp_send_json(
            r, HTTP_FORBIDDEN,
            gmcp_rpc_error(NULL, GMCP_SERVER_ERROR,
                           apr_psprintf(r->pool, "Forbidden: method %s is not allowed", method),
                           NULL));
    list = apr_pstrdup(r->pool, want ? want : "");
    for (tok = apr_strtok(list, ", ", &last); tok; tok = apr_strtok(NULL, ", ", &last))
        if (!cors_header_ok(tok))
            return gmcp_send_json(r, HTTP_FORBIDDEN,
                                  gmcp_rpc_error(NULL, GMCP_SERVER_ERROR,
                                                 apr_psprintf(r->pool,
                                                              "Forbidden: request header %s is not "
                                                              "allowed",
                                                              tok),
                                                 NULL));
    gmcp_access_cors(r);
    apr_table_setn(r->err_headers_out, "Access-Control-Allow-Methods", CORS_METHODS);
    if (want && *want) apr_table_setn(r->err_headers_out, "Access-Control-Allow-Headers", want);
    apr_table_setn(r->err_headers_out, "Access-Control-Max-Age", "600");
    r->status = HTTP_NO_CONTENT;
    return DONE;
}
