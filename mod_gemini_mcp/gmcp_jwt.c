/* gmcp_jwt.c — JWT access tokens checked against a JWKS (gmcp_jwt.h).
 *
 * The header is read and its alg checked before cjose sees the token, so "none" and
 * the HMAC family never reach a verifier, and a key is used only for the algorithms
 * of its type (an RSA key for RS and PS, an EC key for the ES of its curve). */
#include "gmcp_jwt.h"
#include "gmcp_util.h"

#include <cjose/cjose.h>
#include <jansson.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <string.h>

typedef struct {
    cjose_jwk_t *jwk;
    const char *kid; /* NULL when the key has none */
    const char *alg; /* the key's own "alg", or NULL: any of its type */
    cjose_jwk_kty_t kty;
    long crv; /* EC only: the curve's NID */
} jwks_key;

struct gmcp_jwks {
    apr_array_header_t *keys; /* jwks_key */
};

static apr_status_t release_keys(void *d)
{
    gmcp_jwks *k = d;
    int i;
    for (i = 0; i < k->keys->nelts; i++) cjose_jwk_release(APR_ARRAY_IDX(k->keys, i, jwks_key).jwk);
    k->keys->nelts = 0;
    return APR_SUCCESS;
}

static const char *str_member(apr_pool_t *p, json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s ? apr_pstrdup(p, s) : NULL;
}

/* A base64url member of `size` decoded bytes (0: any but empty). */
static const char *b64_member(apr_pool_t *p, json_t *jk, const char *name, apr_size_t size)
{
    const char *v = json_string_value(json_object_get(jk, name));
    apr_size_t len = 0;
    if (!v || !gmcp_b64url_decode(p, v, &len) || !len || (size && len != size)) return NULL;
    return v;
}

/* The public part of a key, rebuilt from checked members only: cjose 0.6.2 asserts
 * (aborts the process) on base64url of an impossible length and leaks on some broken
 * keys, so what it is given is always well formed; private members are never kept. */
static char *public_part(apr_pool_t *p, json_t *jk, const char *kty)
{
    const char *crv = json_string_value(json_object_get(jk, "crv")), *a, *b;
    apr_size_t size;
    if (!strcmp(kty, "RSA")) {
        if (!(a = b64_member(p, jk, "n", 0)) || !(b = b64_member(p, jk, "e", 0))
            || strlen(a) < 340 /* 2048 bits at least */ || strlen(b) > 12)
            return NULL;
        return apr_psprintf(p, "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", a, b);
    }
    size = !crv                 ? 0
        : !strcmp(crv, "P-256") ? 32
        : !strcmp(crv, "P-384") ? 48
        : !strcmp(crv, "P-521") ? 66
                                : 0;
    if (!size || !(a = b64_member(p, jk, "x", size)) || !(b = b64_member(p, jk, "y", size)))
        return NULL;
    return apr_psprintf(p, "{\"kty\":\"EC\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}", crv, a, b);
}

/* One member of "keys" into the set, when it is a signing key we can use. */
static void add_key(apr_pool_t *p, gmcp_jwks *set, json_t *jk)
{
    const char *use = json_string_value(json_object_get(jk, "use"));
    const char *kty = json_string_value(json_object_get(jk, "kty"));
    const char *text;
    cjose_err err;
    jwks_key k;

    if (!json_is_object(jk) || (use && strcmp(use, "sig") != 0)) return;
    if (!kty || (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0)) return;
    if (!(text = public_part(p, jk, kty))) return;
    k.jwk = cjose_jwk_import(text, strlen(text), &err);
    if (!k.jwk) return;
    k.kid = str_member(p, jk, "kid");
    k.alg = str_member(p, jk, "alg");
    k.kty = cjose_jwk_get_kty(k.jwk, &err);
    k.crv = k.kty == CJOSE_JWK_KTY_EC ? (long)cjose_jwk_EC_get_curve(k.jwk, &err) : 0;
    APR_ARRAY_PUSH(set->keys, jwks_key) = k;
}

apr_status_t gmcp_jwks_parse(apr_pool_t *p, const char *json, apr_size_t len, gmcp_jwks **out,
                             const char **why)
{
    json_error_t jerr;
    json_t *doc = len <= GMCP_JWKS_MAX ? json_loadb(json, len, 0, &jerr) : NULL, *keys;
    gmcp_jwks *set;
    size_t i;

    keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        *why = len > GMCP_JWKS_MAX ? "the JWKS is larger than 64 KiB"
                                   : "the JWKS is not a JSON object with a \"keys\" array";
        json_decref(doc);
        return APR_EINVAL;
    }
    set = apr_pcalloc(p, sizeof(*set));
    set->keys = apr_array_make(p, (int)json_array_size(keys) + 1, sizeof(jwks_key));
    apr_pool_cleanup_register(p, set, release_keys, apr_pool_cleanup_null);
    for (i = 0; i < json_array_size(keys); i++) add_key(p, set, json_array_get(keys, i));
    json_decref(doc);
    *out = set;
    return APR_SUCCESS;
}

int gmcp_jwks_count(const gmcp_jwks *k) { return k ? k->keys->nelts : 0; }

/* ---- the token ------------------------------------------------------------------------ */

int gmcp_jwt_shaped(const char *t)
{
    const char *d1 = t ? strchr(t, '.') : NULL, *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    size_t n = t ? strlen(t) : 0;
    return d2 && d2[1] && !strchr(d2 + 1, '.') && d1 > t && d2 > d1 + 1 && n <= GMCP_JWT_MAX
        && strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") == n;
}

int gmcp_token_syntax_ok(const char *t)
{
    size_t n = strlen(t),
           body = strspn(t,
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789-._~+/");
    return body && n <= GMCP_JWT_MAX && strspn(t + body, "=") == n - body;
}

/* The allowlist: which key type (and EC curve) each algorithm needs. */
static int alg_fits(const char *alg, const jwks_key *k)
{
    static const struct {
        const char *alg;
        cjose_jwk_kty_t kty;
        long crv;
    } A[] = {{"RS256", CJOSE_JWK_KTY_RSA, 0},
             {"RS384", CJOSE_JWK_KTY_RSA, 0},
             {"RS512", CJOSE_JWK_KTY_RSA, 0},
             {"PS256", CJOSE_JWK_KTY_RSA, 0},
             {"PS384", CJOSE_JWK_KTY_RSA, 0},
             {"PS512", CJOSE_JWK_KTY_RSA, 0},
             {"ES256", CJOSE_JWK_KTY_EC, CJOSE_JWK_EC_P_256},
             {"ES384", CJOSE_JWK_KTY_EC, CJOSE_JWK_EC_P_384},
             {"ES512", CJOSE_JWK_KTY_EC, CJOSE_JWK_EC_P_521}};
    size_t i;
    for (i = 0; i < sizeof(A) / sizeof(A[0]); i++)
        if (!strcmp(alg, A[i].alg))
            return !k
                || (k->kty == A[i].kty && (!A[i].crv || k->crv == A[i].crv)
                    && (!k->alg || !strcmp(k->alg, alg)));
    return 0;
}

/* The key for this header: the one with its kid, or (no kid) the only one of the set
 * that fits the algorithm. */
static const jwks_key *key_for(const gmcp_jwks *set, const char *kid, const char *alg)
{
    const jwks_key *found = NULL;
    int i, n = 0;
    for (i = 0; set && i < set->keys->nelts; i++) {
        const jwks_key *k = &APR_ARRAY_IDX(set->keys, i, jwks_key);
        if (kid ? (k->kid && !strcmp(k->kid, kid)) : alg_fits(alg, k)) {
            found = k;
            n++;
        }
    }
    return n == 1 ? found : NULL;
}

static json_t *decode_part(apr_pool_t *p, const char *part, apr_size_t n)
{
    apr_size_t len;
    unsigned char *raw = gmcp_b64url_decode(p, apr_pstrndup(p, part, n), &len);
    json_t *j = raw ? json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* The header: alg within the allowlist, typ absent or a JWT one; the key for it. */
static gmcp_jwt_verdict check_header(apr_pool_t *p, const gmcp_jwks *keys, const char *token,
                                     const jwks_key **key, const char **why)
{
    json_t *h = decode_part(p, token, strcspn(token, "."));
    const char *alg = json_string_value(json_object_get(h, "alg"));
    const char *typ = json_string_value(json_object_get(h, "typ"));
    json_t *kid = json_object_get(h, "kid");
    gmcp_jwt_verdict v = GMCP_JWT_OK;

    if (!h) {
        *why = "the token is not a JWT";
        v = GMCP_JWT_MALFORMED;
    }
    else if (!alg || !alg_fits(alg, NULL)) {
        *why = "the token's signing algorithm is not accepted";
        v = GMCP_JWT_ALG;
    }
    else if (typ && strcasecmp(typ, "JWT") && strcasecmp(typ, "at+jwt")
             && strcasecmp(typ, "application/at+jwt")) {
        *why = "the token is not an access token (typ)";
        v = GMCP_JWT_MALFORMED;
    }
    else if (kid && !json_is_string(kid)) {
        *why = "the token's kid is not a string";
        v = GMCP_JWT_MALFORMED;
    }
    else if (!(*key = key_for(keys, json_string_value(kid), alg))) {
        *why = "the token was signed by a key the issuer does not publish";
        v = GMCP_JWT_UNKNOWN_KID;
    }
    else if (!alg_fits(alg, *key)) {
        *why = "the token's signing algorithm does not match its key";
        v = GMCP_JWT_ALG;
    }
    json_decref(h);
    return v;
}

/* Do payload and signature decode, and is the signature as long as the key's
 * algorithm makes them? (cjose 0.6.2 leaks an EC key on an ECDSA signature of the
 * wrong length, so such a one never reaches it.) */
static int signature_sized(apr_pool_t *p, const char *token, const jwks_key *key)
{
    const char *d1 = strchr(token, '.'), *d2 = strrchr(token, '.');
    apr_size_t len = 0;
    cjose_err err;
    /* The payload too must decode here: cjose asserts on an impossible length. */
    if (!gmcp_b64url_decode(p, apr_pstrndup(p, d1 + 1, (apr_size_t)(d2 - d1 - 1)), &len)
        || !gmcp_b64url_decode(p, d2 + 1, &len))
        return 0;
    if (key->kty == CJOSE_JWK_KTY_EC)
        return len
            == (key->crv == CJOSE_JWK_EC_P_256       ? 64
                    : key->crv == CJOSE_JWK_EC_P_384 ? 96
                                                     : 132);
    return len == (cjose_jwk_get_keysize(key->jwk, &err) + 7) / 8;
}

/* The verified payload as JSON, or NULL. */
static json_t *verified_payload(apr_pool_t *p, const char *token, const jwks_key *key)
{
    cjose_err err;
    cjose_jws_t *jws =
        signature_sized(p, token, key) ? cjose_jws_import(token, strlen(token), &err) : NULL;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    json_t *j = NULL;
    if (jws && cjose_jws_verify(jws, key->jwk, &err)
        && cjose_jws_get_plaintext(jws, &plain, &plain_len, &err))
        j = json_loadb((const char *)plain, plain_len, JSON_REJECT_DUPLICATES, NULL);
    if (jws) cjose_jws_release(jws);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* aud names this resource (one trailing slash either side does not matter). */
static int same_resource(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la && a[la - 1] == '/') la--;
    if (lb && b[lb - 1] == '/') lb--;
    return la == lb && !strncmp(a, b, la);
}

static int audience_ok(json_t *aud, const char *want)
{
    size_t i;
    if (json_is_string(aud)) return same_resource(json_string_value(aud), want);
    for (i = 0; json_is_array(aud) && i < json_array_size(aud); i++)
        if (json_is_string(json_array_get(aud, i))
            && same_resource(json_string_value(json_array_get(aud, i)), want))
            return 1;
    return 0;
}

/* A NumericDate claim: 1 with *out, 0 when absent, -1 when not a number of seconds
 * within +-10^12 (so the arithmetic on it cannot overflow). */
static int numeric_date(json_t *c, const char *name, apr_int64_t *out)
{
    json_t *v = json_object_get(c, name);
    double d;
    if (!v) return 0;
    if (!json_is_number(v)) return -1;
    d = json_number_value(v);
    if (!(d >= -1e12 && d <= 1e12)) return -1;
    *out = (apr_int64_t)d;
    return 1;
}

static gmcp_jwt_verdict check_times(json_t *c, apr_int64_t now, apr_int64_t leeway,
                                    gmcp_jwt_claims *out, const char **why)
{
    apr_int64_t nbf = 0, iat = 0;
    int has_nbf = numeric_date(c, "nbf", &nbf), has_iat = numeric_date(c, "iat", &iat);
    int has_exp = numeric_date(c, "exp", &out->exp);
    if (has_exp == 0) {
        *why = "the token has no expiry (exp)";
        return GMCP_JWT_EXPIRED;
    }
    if (has_exp < 0) {
        *why = "the token's exp is not a date";
        return GMCP_JWT_CLAIMS;
    }
    if (has_nbf < 0 || has_iat < 0) {
        *why = "the token's nbf or iat is not a number";
        return GMCP_JWT_CLAIMS;
    }
    if (now >= out->exp + leeway) {
        *why = "the token has expired";
        return GMCP_JWT_EXPIRED;
    }
    if ((has_nbf && now + leeway < nbf) || (has_iat && now + leeway < iat)) {
        *why = "the token is not valid yet";
        return GMCP_JWT_NOT_YET;
    }
    return GMCP_JWT_OK;
}

/* Granted scopes: "scope" (RFC 9068, space-separated), else "scp" (a string or an
 * array, as Entra ID and Okta write it). */
static const char *scopes_of(apr_pool_t *p, json_t *c)
{
    json_t *s = json_object_get(c, "scope"), *scp = json_object_get(c, "scp");
    const char *out = "";
    size_t i;
    if (json_is_string(s)) return apr_pstrdup(p, json_string_value(s));
    if (json_is_string(scp)) return apr_pstrdup(p, json_string_value(scp));
    for (i = 0; json_is_array(scp) && i < json_array_size(scp); i++)
        if (json_is_string(json_array_get(scp, i)))
            out = apr_pstrcat(p, out, *out ? " " : "", json_string_value(json_array_get(scp, i)),
                              NULL);
    return out;
}

/* A name claim: a printable string of 1..255 bytes. */
static const char *name_claim(apr_pool_t *p, json_t *c, const char *name, int *bad)
{
    json_t *v = json_object_get(c, name);
    const char *s = json_string_value(v);
    size_t i, n = s ? strlen(s) : 0;
    if (!v) return NULL;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) break;
    if (!s || !n || n > 255 || i < n) {
        *bad = 1;
        return NULL;
    }
    return apr_pstrdup(p, s);
}

static gmcp_jwt_verdict check_claims(apr_pool_t *p, const gmcp_jwt_policy *pol, json_t *c,
                                     apr_int64_t now, gmcp_jwt_claims *out, const char **why)
{
    const char *iss = json_string_value(json_object_get(c, "iss"));
    gmcp_jwt_verdict v;
    int bad = 0;
    if (!iss || strcmp(iss, pol->issuer) != 0) {
        *why = "the token was issued by another issuer";
        return GMCP_JWT_ISSUER;
    }
    if (!audience_ok(json_object_get(c, "aud"), pol->audience)) {
        *why = "the token was issued for another resource (aud)";
        return GMCP_JWT_AUDIENCE;
    }
    if ((v = check_times(c, now, pol->leeway, out, why)) != GMCP_JWT_OK) return v;
    out->subject = name_claim(p, c, pol->principal_claim ? pol->principal_claim : "sub", &bad);
    out->tenant = pol->tenant_claim ? name_claim(p, c, pol->tenant_claim, &bad) : NULL;
    out->client_id = name_claim(p, c, "client_id", &bad);
    if (!out->client_id) out->client_id = name_claim(p, c, "azp", &bad);
    if (bad || !out->subject) {
        *why = "the token's principal or tenant claim is missing or not a plain string";
        return GMCP_JWT_CLAIMS;
    }
    out->scope = scopes_of(p, c);
    return GMCP_JWT_OK;
}

gmcp_jwt_verdict gmcp_jwt_verify(apr_pool_t *p, const gmcp_jwt_policy *pol, const gmcp_jwks *keys,
                                 const char *token, apr_int64_t now, gmcp_jwt_claims *out,
                                 const char **why)
{
    const jwks_key *key = NULL;
    gmcp_jwt_verdict v;
    json_t *claims;

    memset(out, 0, sizeof(*out));
    if (!gmcp_jwt_shaped(token)) {
        *why = "the token is not a JWT";
        return GMCP_JWT_MALFORMED;
    }
    if ((v = check_header(p, keys, token, &key, why)) != GMCP_JWT_OK) return v;
    if (!(claims = verified_payload(p, token, key))) {
        *why = "the token's signature does not verify";
        return GMCP_JWT_SIGNATURE;
    }
    v = check_claims(p, pol, claims, now, out, why);
    json_decref(claims);
    return v;
}

/* ---- introspection (RFC 7662) --------------------------------------------------------- */

static int type_is(json_t *c, const char *name, const char *const *ok)
{
    json_t *v = json_object_get(c, name);
    const char *s = json_string_value(v);
    if (!v) return 1;
    for (; s && *ok; ok++)
        if (!strcasecmp(s, *ok)) return 1;
    return 0;
}

gmcp_jwt_verdict gmcp_jwt_check_introspection(apr_pool_t *p, const gmcp_jwt_policy *pol,
                                              const char *json, apr_size_t len, apr_int64_t now,
                                              gmcp_jwt_claims *out, const char **why)
{
    static const char *const bearer[] = {"Bearer", NULL};
    static const char *const access[] = {"Bearer", "at+jwt", "application/at+jwt", NULL};
    const char *who = pol->principal_claim ? pol->principal_claim : "sub";
    gmcp_jwt_verdict v;
    json_t *c = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);

    memset(out, 0, sizeof(*out));
    if (!json_is_object(c)) {
        json_decref(c);
        *why = "the introspection response is not a JSON object";
        return GMCP_JWT_MALFORMED;
    }
    if (!json_is_true(json_object_get(c, "active"))) {
        *why = "the authorization server says the token is not active";
        v = GMCP_JWT_INACTIVE;
    }
    else if (!type_is(c, "token_type", bearer) || !type_is(c, "typ", access)) {
        *why = "the token is not an access token";
        v = GMCP_JWT_CLAIMS;
    }
    else {
        /* An answer without iss speaks for the one issuer this resource asks. */
        if (!json_object_get(c, "iss")) json_object_set_new(c, "iss", json_string(pol->issuer));
        if (!strcmp(who, "sub") && !json_object_get(c, "sub")
            && json_is_string(json_object_get(c, "client_id")))
            json_object_set(c, "sub", json_object_get(c, "client_id"));
        v = check_claims(p, pol, c, now, out, why);
    }
    json_decref(c);
    return v;
}
