/* mod_gemini_mcp_oauth.c — the OAuth 2.1 resource server (mod_gemini_mcp_oauth.h).
 *
 * Each issuer's JWKS document lives in one shared-memory slot under a global mutex,
 * so every child uses what one of them fetched; each process keeps it parsed (a
 * reference-counted copy, replaced when the slot's generation moves on). A fetch
 * happens at first use, when the document is older than the refresh age, and for a
 * token whose kid the set does not know — never more often than the minimum interval
 * per issuer across all children, so a flood of made-up kids cannot flood the issuer.
 * A failed fetch keeps the keys there are.
 *
 * A token that verified is remembered per process (by its SHA-256, for at most
 * VERIFIED_TTL and never past its exp or a change of the key set), so a client's next
 * request costs a hash, not a signature check.
 *
 * A token that is not a JWT, where GeminiMCPOAuthIntrospection is set, is asked about at
 * the authorization server (RFC 7662) — at most INTROSPECT_MAX at once per process — and
 * an active answer is remembered the same way for the configured seconds. */
#include "mod_gemini_mcp_oauth.h"
#include "gmcp_http.h"
#include "gmcp_scopes.h"
#include "gmcp_util.h"

#include <http_protocol.h>
#include <apr_atomic.h>
#include <apr_base64.h>
#include <apr_global_mutex.h>
#include <apr_lib.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <util_mutex.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define JWKS_MUTEX "gemini-mcp-jwks"
#define FETCH_TIMEOUT apr_time_from_sec(5)
#define FETCH_WAIT_STEP apr_time_from_msec(20)
#define URL_MAX 1024
#define PRM_ROOT "/.well-known/oauth-protected-resource"
#define INTROSPECT_MAX 8

typedef struct {
    apr_uint32_t gen;      /* moves on with every new document */
    apr_time_t fetched;    /* when the document came (0: never) */
    apr_time_t tried;      /* when the last fetch began */
    apr_time_t busy_until; /* a fetch is under way until then */
    apr_size_t len;
    char jwks_url[URL_MAX]; /* found in the issuer's metadata, or configured */
    char doc[GMCP_JWKS_MAX];
} jwks_slot;

/* One process's parsed copy of a slot. */
typedef struct {
    apr_pool_t *pool;
    gmcp_jwks *keys;
    apr_uint32_t gen;
    int refs, stale;
} jwks_copy;

static apr_global_mutex_t *g_mutex;
static jwks_slot *g_slots;
static int g_n;
static apr_time_t g_min, g_max; /* GeminiMCPOAuthJWKSRefresh */
static apr_thread_mutex_t *g_copy_mutex;
static apr_pool_t *g_copy_pool;
static jwks_copy *g_copies[GMCP_OAUTH_ISSUERS_MAX];

/* Tokens that verified: a direct-mapped table, so it never grows. */
#define VERIFIED_SLOTS 256
#define VERIFIED_TTL apr_time_from_sec(60)
typedef struct {
    unsigned char hash[SHA256_DIGEST_LENGTH]; /* of the resource and the token */
    apr_time_t until;                         /* 0: empty */
    apr_uint32_t gen;                         /* of the key set that verified it */
    int introspected;                         /* ... or the AS said so: no key set */
    apr_int64_t exp;
    char subject[256], tenant[256], client_id[128], scope[512];
    int has_tenant, has_client;
} verified_token;
static verified_token g_verified[VERIFIED_SLOTS];
static apr_uint32_t g_introspecting; /* introspections under way in this process */
/* Fetched once: OpenSSL 3's one-shot SHA256() looks the algorithm up on every call,
 * under a lock all threads share (measured: a tenth of a warm token request). */
static EVP_MD *g_sha256;

static apr_status_t free_sha256(void *d)
{
    (void)d;
    EVP_MD_free(g_sha256);
    g_sha256 = NULL;
    return APR_SUCCESS;
}

int gmcp_oauth_pre_config(apr_pool_t *pconf)
{
    return ap_mutex_register(pconf, JWKS_MUTEX, NULL, APR_LOCK_DEFAULT, 0) == APR_SUCCESS
        ? OK
        : HTTP_INTERNAL_SERVER_ERROR;
}

/* A form value (RFC 6749 appendix B): all but the unreserved characters %-escaped. */
static const char *form_escape(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = apr_palloc(p, 3 * strlen(s) + 1), *o = out;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (apr_isalnum(c) || strchr("-._~", c))
            *o++ = (char)c;
        else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

/* The introspection request's client_secret_basic header (RFC 6749 2.3.1: both parts
 * form-escaped first), from the secret read now; NULL when it cannot be read. */
static const char *introspection_auth(apr_pool_t *p, const gmcp_oauth_conf *o)
{
    const char *secret = gmcp_read_secret(p, o->introspect_secret), *pair;
    char *b64;
    if (!secret || !*secret) return NULL;
    pair = apr_pstrcat(p, form_escape(p, o->introspect_client), ":", form_escape(p, secret), NULL);
    b64 = apr_palloc(p, apr_base64_encode_len((int)strlen(pair)));
    apr_base64_encode(b64, pair, (int)strlen(pair));
    return apr_pstrcat(p, "Authorization: Basic ", b64, NULL);
}

/* Each section with GeminiMCPAuth ... oauth names its resource and issuer itself; the
 * secret of its introspection client is there to read. */
static int sections_complete(apr_pool_t *p, server_rec *s)
{
    gmcp_dir_conf *const *dcs;
    server_rec *const *srvs;
    int i, n = gmcp_conf_oauth_sections(&dcs, &srvs);
    for (i = 0; i < n; i++) {
        gmcp_oauth_conf *o = (gmcp_oauth_conf *)dcs[i]->oauth;
        if (!o || !o->resource || o->issuer < 0) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         GMCP_LOGNO(0180) "gemini_mcp: GeminiMCPAuth oauth needs "
                                          "GeminiMCPOAuthResource and GeminiMCPOAuthIssuer in "
                                          "the same section");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (o->introspect_url && !(o->introspect_auth = introspection_auth(p, o))) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         GMCP_LOGNO(0187) "gemini_mcp: GeminiMCPOAuthIntrospection: cannot "
                                          "read the client secret from %s",
                         o->introspect_secret);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}

int gmcp_oauth_post_config(apr_pool_t *p, server_rec *s)
{
    const gmcp_srv_conf *c = gmcp_config_srv(s);
    const gmcp_oauth_issuer *iss;
    apr_shm_t *shm = NULL;
    int i;
    gmcp_oauth_conf none = {0};
    if (sections_complete(p, s) != OK) return HTTP_INTERNAL_SERVER_ERROR;
    gmcp_oauth_scopes(&none); /* the built-in table, made before any thread exists */
    g_n = gmcp_conf_oauth_issuers(&iss);
    g_min = apr_time_from_sec(gmcp_conf_jwks_min(c));
    g_max = apr_time_from_sec(gmcp_conf_jwks_max(c));
    g_slots = NULL;
    if (!g_n) return OK;
    if (!g_sha256 && (g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) != NULL)
        apr_pool_cleanup_register(p, NULL, free_sha256, apr_pool_cleanup_null);
    if (!g_sha256
        || apr_shm_create(&shm, sizeof(jwks_slot) * (apr_size_t)g_n, NULL, p) != APR_SUCCESS
        || ap_global_mutex_create(&g_mutex, NULL, JWKS_MUTEX, NULL, s, p, 0) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     GMCP_LOGNO(0181) "gemini_mcp: cannot set up the shared JWKS cache");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    g_slots = apr_shm_baseaddr_get(shm);
    memset(g_slots, 0, sizeof(jwks_slot) * (apr_size_t)g_n);
    for (i = 0; i < g_n; i++)
        if (iss[i].jwks_url) apr_cpystrn(g_slots[i].jwks_url, iss[i].jwks_url, URL_MAX);
    return OK;
}

void gmcp_oauth_child_init(apr_pool_t *pchild, server_rec *s)
{
    memset(g_copies, 0, sizeof(g_copies));
    memset(g_verified, 0, sizeof(g_verified));
    g_introspecting = 0;
    if (!g_slots) return;
    if (apr_global_mutex_child_init(&g_mutex, apr_global_mutex_lockfile(g_mutex), pchild)
        || apr_thread_mutex_create(&g_copy_mutex, APR_THREAD_MUTEX_DEFAULT, pchild)
        || apr_pool_create(&g_copy_pool, pchild)) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     GMCP_LOGNO(0182) "gemini_mcp: cannot attach to the shared JWKS cache");
        g_slots = NULL;
    }
}

/* ---- fetching ------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    apr_size_t len;
} body_buf;

static apr_status_t on_body(void *baton, int status, const char *data, apr_size_t len)
{
    body_buf *b = baton;
    (void)status;
    if (b->len + len > GMCP_JWKS_MAX) return APR_ENOSPC;
    memcpy(b->buf + b->len, data, len);
    b->len += len;
    return APR_SUCCESS;
}

/* GET url (body NULL) or POST the form `body` there: the body (up to 64 KiB) of a 200,
 * or NULL with *why. */
static const char *http_fetch(apr_pool_t *p, const char *url, const char *body,
                              const char *const *headers, apr_size_t *len, const char **why)
{
    body_buf b = {apr_palloc(p, GMCP_JWKS_MAX + 1), 0};
    gmcp_http_request req = {0};
    gmcp_http_response res = {0};
    gmcp_http *h = gmcp_http_for_thread();
    apr_status_t rv;
    req.method = body ? "POST" : "GET";
    req.url = url;
    req.body = body;
    req.headers = headers;
    req.connect_timeout = FETCH_TIMEOUT;
    req.timeout = FETCH_TIMEOUT;
    req.on_body = on_body;
    req.baton = &b;
    rv = h ? gmcp_http_perform(h, &req, &res) : GMCP_EUPSTREAM;
    if (rv != APR_SUCCESS || res.status != 200) {
        *why = apr_psprintf(p, "%s %s: %s", req.method, url,
                            rv == APR_TIMEUP ? "timed out"
                                : rv         ? (res.error ? res.error : "failed")
                                             : apr_psprintf(p, "HTTP %d", res.status));
        return NULL;
    }
    b.buf[b.len] = '\0';
    *len = b.len;
    return b.buf;
}

static const char *http_get(apr_pool_t *p, const char *url, apr_size_t *len, const char **why)
{
    static const char *const headers[] = {"Accept: application/json", NULL};
    return http_fetch(p, url, NULL, headers, len, why);
}

/* RFC 8414 inserts the well-known part before the issuer's path; OpenID Connect
 * Discovery appends it. The metadata must name the issuer itself. */
static const char *discover_jwks(apr_pool_t *p, const char *issuer, const char **why)
{
    apr_uri_t u;
    const char *urls[2], *doc, *got, *jwks;
    apr_size_t len;
    json_t *j;
    int i;
    apr_uri_parse(p, issuer, &u);
    u.path = apr_pstrcat(p, "/.well-known/oauth-authorization-server",
                         u.path && strcmp(u.path, "/") ? u.path : "", NULL);
    urls[0] = apr_uri_unparse(p, &u, APR_URI_UNP_OMITUSERINFO);
    urls[1] = apr_pstrcat(p, issuer, issuer[strlen(issuer) - 1] == '/' ? "" : "/",
                          ".well-known/openid-configuration", NULL);
    for (i = 0; i < 2; i++) {
        if (!(doc = http_get(p, urls[i], &len, why))) continue;
        j = json_loadb(doc, len, 0, NULL);
        got = json_string_value(json_object_get(j, "issuer"));
        jwks = json_string_value(json_object_get(j, "jwks_uri"));
        jwks = got && !strcmp(got, issuer) && jwks && strlen(jwks) < URL_MAX ? apr_pstrdup(p, jwks)
                                                                             : NULL;
        json_decref(j);
        if (jwks) return jwks;
        *why = apr_psprintf(p, "%s does not name issuer %s with a jwks_uri", urls[i], issuer);
    }
    return NULL;
}

/* Claim the fetch of slot i: 1 when this caller is to fetch now, 0 when the minimum
 * interval has not passed or another one is under way. */
static int claim_fetch(int i, apr_time_t now, char *url)
{
    jwks_slot *s = &g_slots[i];
    int mine = 0;
    apr_global_mutex_lock(g_mutex);
    if (s->busy_until <= now && (!s->tried || now - s->tried >= g_min)) {
        s->tried = now;
        s->busy_until = now + 2 * FETCH_TIMEOUT + apr_time_from_sec(1);
        apr_cpystrn(url, s->jwks_url, URL_MAX);
        mine = 1;
    }
    apr_global_mutex_unlock(g_mutex);
    return mine;
}

static void publish(int i, const char *url, const char *doc, apr_size_t len)
{
    jwks_slot *s = &g_slots[i];
    apr_global_mutex_lock(g_mutex);
    if (doc) {
        memcpy(s->doc, doc, len);
        s->len = len;
        s->gen++;
        s->fetched = apr_time_now();
        apr_cpystrn(s->jwks_url, url, URL_MAX);
    }
    s->busy_until = 0;
    apr_global_mutex_unlock(g_mutex);
}

/* Fetch issuer i's JWKS into its slot if this caller may; otherwise wait (bounded)
 * for a fetch another one has under way. */
static void refresh(request_rec *r, int i)
{
    const gmcp_oauth_issuer *iss;
    char url[URL_MAX];
    const char *why = NULL, *doc = NULL, *found;
    apr_size_t len = 0;
    apr_uint32_t gen = g_slots[i].gen;
    gmcp_jwks *probe = NULL;
    apr_time_t until = apr_time_now() + 2 * FETCH_TIMEOUT;

    gmcp_conf_oauth_issuers(&iss);
    if (!claim_fetch(i, apr_time_now(), url)) {
        while (g_slots[i].busy_until > apr_time_now() && g_slots[i].gen == gen
               && apr_time_now() < until)
            apr_sleep(FETCH_WAIT_STEP);
        return;
    }
    found = *url ? url : discover_jwks(r->pool, iss[i].issuer, &why);
    if (found && (doc = http_get(r->pool, found, &len, &why))
        && gmcp_jwks_parse(r->pool, doc, len, &probe, &why) == APR_SUCCESS
        && !gmcp_jwks_count(probe)) {
        why = "it holds no signing key this server can use";
        doc = NULL;
    }
    else if (doc && !probe)
        doc = NULL;
    if (!doc)
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      GMCP_LOGNO(0183) "gemini_mcp: cannot fetch the JWKS of %s: %s", iss[i].issuer,
                      why);
    else
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      GMCP_LOGNO(0184) "gemini_mcp: JWKS of %s fetched from %s (%d keys)",
                      iss[i].issuer, found, gmcp_jwks_count(probe));
    publish(i, found ? found : "", doc, len);
}

/* ---- the parsed copy ------------------------------------------------------------------ */

static apr_status_t release_copy(void *d)
{
    jwks_copy *c = d;
    apr_thread_mutex_lock(g_copy_mutex);
    if (--c->refs == 0 && c->stale) apr_pool_destroy(c->pool);
    apr_thread_mutex_unlock(g_copy_mutex);
    return APR_SUCCESS;
}

/* Parse slot i's document into a new copy (under g_copy_mutex): NULL when it has none. */
static jwks_copy *new_copy(int i)
{
    apr_pool_t *p;
    jwks_copy *c;
    const char *why;
    char *doc;
    apr_size_t len;
    apr_pool_create(&p, g_copy_pool);
    c = apr_pcalloc(p, sizeof(*c));
    c->pool = p;
    doc = apr_palloc(p, GMCP_JWKS_MAX);
    apr_global_mutex_lock(g_mutex);
    c->gen = g_slots[i].gen;
    len = g_slots[i].len;
    memcpy(doc, g_slots[i].doc, len);
    apr_global_mutex_unlock(g_mutex);
    if (!len || gmcp_jwks_parse(p, doc, len, &c->keys, &why) != APR_SUCCESS) {
        apr_pool_destroy(p);
        return NULL;
    }
    return c;
}

/* The current keys of issuer i, held until the request ends; NULL when there are none. */
static const gmcp_jwks *keys_for(request_rec *r, int i)
{
    jwks_copy *c;
    apr_thread_mutex_lock(g_copy_mutex);
    c = g_copies[i];
    if (!c || c->gen != g_slots[i].gen) {
        jwks_copy *fresh = new_copy(i);
        if (fresh && c) {
            c->stale = 1; /* freed by its last holder */
            if (!c->refs) apr_pool_destroy(c->pool);
        }
        if (fresh) g_copies[i] = c = fresh;
    }
    if (c) c->refs++;
    apr_thread_mutex_unlock(g_copy_mutex);
    if (!c) return NULL;
    apr_pool_cleanup_register(r->pool, c, release_copy, apr_pool_cleanup_null);
    return c->keys;
}

/* ---- the verified-token table (under g_copy_mutex) ------------------------------------ */

static void token_hash(apr_pool_t *p, const gmcp_oauth_conf *o, const char *token,
                       unsigned char *out)
{
    const char *both = apr_pstrcat(p, o->resource, "\n", token, NULL);
    EVP_Digest(both, strlen(both), out, NULL, g_sha256, NULL);
}

static int recall(apr_pool_t *p, const unsigned char *hash, int issuer, apr_time_t now,
                  gmcp_jwt_claims *out)
{
    verified_token *v = &g_verified[hash[0]];
    int hit;
    apr_thread_mutex_lock(g_copy_mutex);
    hit = v->until > now && (v->introspected || v->gen == g_slots[issuer].gen)
        && !memcmp(v->hash, hash, SHA256_DIGEST_LENGTH);
    if (hit) {
        out->subject = apr_pstrdup(p, v->subject);
        out->tenant = v->has_tenant ? apr_pstrdup(p, v->tenant) : NULL;
        out->client_id = v->has_client ? apr_pstrdup(p, v->client_id) : NULL;
        out->scope = apr_pstrdup(p, v->scope);
        out->exp = v->exp;
    }
    apr_thread_mutex_unlock(g_copy_mutex);
    return hit;
}

static int fits(const char *s, apr_size_t size) { return !s || strlen(s) < size; }

/* Remember a token until `until`, and never past its exp (with the leeway); gen is the
 * key set's that verified it, or -1 when the authorization server vouched for it. */
static void remember(const unsigned char *hash, apr_int64_t gen, apr_time_t until,
                     apr_int64_t leeway, const gmcp_jwt_claims *c)
{
    verified_token *v = &g_verified[hash[0]];
    apr_time_t end = apr_time_from_sec(c->exp + leeway);
    if (!fits(c->tenant, sizeof(v->tenant)) || !fits(c->client_id, sizeof(v->client_id))
        || !fits(c->scope, sizeof(v->scope)))
        return;
    apr_thread_mutex_lock(g_copy_mutex);
    memcpy(v->hash, hash, SHA256_DIGEST_LENGTH);
    v->until = until < end ? until : end;
    v->introspected = gen < 0;
    v->gen = gen < 0 ? 0 : (apr_uint32_t)gen;
    v->exp = c->exp;
    apr_cpystrn(v->subject, c->subject, sizeof(v->subject));
    apr_cpystrn(v->tenant, c->tenant ? c->tenant : "", sizeof(v->tenant));
    apr_cpystrn(v->client_id, c->client_id ? c->client_id : "", sizeof(v->client_id));
    apr_cpystrn(v->scope, c->scope, sizeof(v->scope));
    v->has_tenant = c->tenant != NULL;
    v->has_client = c->client_id != NULL;
    apr_thread_mutex_unlock(g_copy_mutex);
}

/* ---- checking a token ----------------------------------------------------------------- */

/* Verify against the keys there are; for an unknown kid, once more after a refresh. */
static gmcp_jwt_verdict verify(request_rec *r, const gmcp_jwt_policy *pol, int i,
                               const gmcp_jwks *keys, const char *token, gmcp_jwt_claims *out,
                               apr_uint32_t *gen, const char **why)
{
    gmcp_jwt_verdict v;
    *gen = g_slots[i].gen;
    v = gmcp_jwt_verify(r->pool, pol, keys, token, apr_time_sec(apr_time_now()), out, why);
    if (v != GMCP_JWT_UNKNOWN_KID) return v;
    refresh(r, i);
    if (g_slots[i].gen == *gen || !(keys = keys_for(r, i))) return v;
    *gen = g_slots[i].gen;
    return gmcp_jwt_verify(r->pool, pol, keys, token, apr_time_sec(apr_time_now()), out, why);
}

/* Ask the authorization server about an opaque token (RFC 7662, client_secret_basic). */
static gmcp_token_verdict introspect(request_rec *r, const gmcp_oauth_conf *o,
                                     const gmcp_jwt_policy *pol, const char *token,
                                     const unsigned char *hash, gmcp_jwt_claims *out,
                                     const char **why)
{
    const char *headers[] = {"Accept: application/json",
                             "Content-Type: application/x-www-form-urlencoded", o->introspect_auth,
                             NULL};
    const char *body, *doc, *err = NULL;
    apr_time_t now = apr_time_now();
    apr_size_t len = 0;
    gmcp_jwt_verdict v;

    if (!gmcp_token_syntax_ok(token)) {
        *why = "the token is not a bearer token";
        return GMCP_TOKEN_INVALID;
    }
    if (apr_atomic_inc32(&g_introspecting) >= INTROSPECT_MAX) {
        apr_atomic_dec32(&g_introspecting);
        *why = "too many access tokens are being checked at once; try again";
        return GMCP_TOKEN_UNAVAILABLE;
    }
    body = apr_pstrcat(r->pool, "token=", form_escape(r->pool, token),
                       "&token_type_hint=access_token", NULL);
    doc = http_fetch(r->pool, o->introspect_url, body, headers, &len, &err);
    apr_atomic_dec32(&g_introspecting);
    v = doc ? gmcp_jwt_check_introspection(r->pool, pol, doc, len, apr_time_sec(now), out, why)
            : GMCP_JWT_MALFORMED;
    if (v == GMCP_JWT_MALFORMED) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      GMCP_LOGNO(0186) "gemini_mcp: token introspection at %s: %s",
                      o->introspect_url, err ? err : *why);
        *why = "the authorization server cannot be asked about the token";
        return GMCP_TOKEN_UNAVAILABLE;
    }
    if (v != GMCP_JWT_OK) return GMCP_TOKEN_INVALID;
    if (o->introspect_cache > 0)
        remember(hash, -1, now + apr_time_from_sec(o->introspect_cache), pol->leeway, out);
    return GMCP_TOKEN_OK;
}

gmcp_token_verdict gmcp_oauth_check(request_rec *r, const gmcp_oauth_conf *o, const char *token,
                                    gmcp_jwt_claims *out, const char **why)
{
    const gmcp_oauth_issuer *iss;
    gmcp_jwt_policy pol;
    const gmcp_jwks *keys;
    unsigned char hash[SHA256_DIGEST_LENGTH];
    apr_time_t now = apr_time_now();
    apr_uint32_t gen;
    int i = o->issuer;

    if (!g_slots) {
        *why = "the OAuth key cache is not available";
        return GMCP_TOKEN_UNAVAILABLE;
    }
    token_hash(r->pool, o, token, hash);
    if (recall(r->pool, hash, i, now, out)) return GMCP_TOKEN_OK;
    gmcp_conf_oauth_issuers(&iss);
    pol.issuer = iss[i].issuer;
    pol.audience = o->resource;
    pol.principal_claim = o->principal_claim;
    pol.tenant_claim = o->tenant_claim;
    pol.leeway = gmcp_conf_oauth_leeway(o);
    if (o->introspect_url && !gmcp_jwt_shaped(token))
        return introspect(r, o, &pol, token, hash, out, why);
    if (!g_slots[i].fetched || now - g_slots[i].fetched > g_max) refresh(r, i);
    if (!(keys = keys_for(r, i))) {
        *why = "the authorization server's signing keys cannot be fetched";
        return GMCP_TOKEN_UNAVAILABLE;
    }
    if (verify(r, &pol, i, keys, token, out, &gen, why) != GMCP_JWT_OK) return GMCP_TOKEN_INVALID;
    remember(hash, gen, now + VERIFIED_TTL, pol.leeway, out);
    return GMCP_TOKEN_OK;
}

/* ---- metadata and challenges ---------------------------------------------------------- */

const apr_array_header_t *gmcp_oauth_scopes(const gmcp_oauth_conf *o)
{
    static apr_array_header_t *builtin;
    if (o->scopes) return o->scopes;
    if (!builtin) {
        /* Made once in the parent (post_config reads it first), then read-only. */
        apr_pool_t *p;
        apr_pool_create(&p, NULL);
        builtin = gmcp_scopes_default(p);
    }
    return builtin;
}

const char *gmcp_oauth_challenge(request_rec *r, const gmcp_oauth_conf *o, const char *error,
                                 const char *description, const char *scope)
{
    const char *s = scope ? scope : gmcp_scopes_roots(r->pool, gmcp_oauth_scopes(o));
    if (!error)
        return apr_psprintf(r->pool, "Bearer resource_metadata=\"%s\", scope=\"%s\"", o->prm_url,
                            s);
    return apr_psprintf(r->pool,
                        "Bearer error=\"%s\", error_description=\"%s\", resource_metadata=\"%s\", "
                        "scope=\"%s\"",
                        error, description, o->prm_url, s);
}

/* The section whose document `uri` is: its own path, or the root one when this server
 * has a single OAuth resource. */
static const gmcp_oauth_conf *resource_at(request_rec *r)
{
    gmcp_dir_conf *const *dcs;
    server_rec *const *srvs;
    const gmcp_oauth_conf *only = NULL;
    int i, n = gmcp_conf_oauth_sections(&dcs, &srvs), here = 0;
    for (i = 0; i < n; i++) {
        const gmcp_oauth_conf *o = dcs[i]->oauth;
        if (srvs[i] != r->server || !o || !o->resource) continue;
        if (!strcmp(o->prm_path, r->uri)) return o;
        if (!only || strcmp(only->resource, o->resource)) here++;
        only = o;
    }
    return here == 1 && !strcmp(r->uri, PRM_ROOT) ? only : NULL;
}

static json_t *metadata_json(const gmcp_oauth_conf *o)
{
    const apr_array_header_t *defs = gmcp_oauth_scopes(o);
    const gmcp_oauth_issuer *iss;
    json_t *scopes = json_array();
    int i;
    gmcp_conf_oauth_issuers(&iss);
    for (i = 0; i < defs->nelts; i++)
        json_array_append_new(scopes, json_string(APR_ARRAY_IDX(defs, i, gmcp_scope_def).name));
    return json_pack("{s:s, s:[s], s:o, s:[s], s:s}", "resource", o->resource,
                     "authorization_servers", iss[o->issuer].issuer, "scopes_supported", scopes,
                     "bearer_methods_supported", "header", "resource_name", "mod_gemini_mcp");
}

int gmcp_oauth_metadata(request_rec *r, int lookup)
{
    const gmcp_oauth_conf *o;
    json_t *doc;
    char *text;
    if (strncmp(r->uri, PRM_ROOT, sizeof(PRM_ROOT) - 1) || !(o = resource_at(r))) return DECLINED;
    if (lookup) return DECLINED;
    /* Public, read by browser-based clients from other origins too. */
    apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", "*");
    if (r->method_number == M_OPTIONS) {
        apr_table_setn(r->headers_out, "Access-Control-Allow-Methods", "GET, OPTIONS");
        apr_table_setn(r->headers_out, "Access-Control-Allow-Headers", "*");
        return HTTP_NO_CONTENT;
    }
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD, OPTIONS");
        return HTTP_METHOD_NOT_ALLOWED;
    }
    doc = metadata_json(o);
    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "max-age=300");
    if (text) {
        ap_rputs(text, r);
        free(text);
    }
    return OK;
}
