/* fuzz_jwt — an access token as a client sends it, checked against a JWKS
 * (gmcp_jwks_parse, gmcp_jwt_verify). Byte 0 chooses the form, the rest is the payload:
 *   0 mod 3: the payload is the token itself (a forgery: must never verify);
 *   1 mod 3: the payload is a JWKS document, against which a fixed real token is
 *            checked (the key-set parser and the key choice);
 *   2 mod 3: the payload is the claims JSON, signed here with the real key, so the claim
 *            checks behind the signature are reached.
 * A token that verifies has a principal and a scope string. */
#define FUZZ_SETUP setup
#include "fuzz.h"
#include "gmcp_jwt.h"

#include <cjose/cjose.h>

static cjose_jwk_t *g_key;
static gmcp_jwks *g_keys;
static const char *g_real; /* a valid token for the policy below */
static const gmcp_jwt_policy g_pol = {"https://as.example", "https://mcp.example/mcp", NULL, "org",
                                      60};
#define NOW 1800000000

static const char *sign(apr_pool_t *p, const char *claims, size_t len)
{
    cjose_err err;
    cjose_header_t *h = cjose_header_new(&err);
    const char *ser = NULL, *out = NULL;
    cjose_jws_t *jws;
    cjose_header_set(h, CJOSE_HDR_ALG, "ES256", &err);
    cjose_header_set(h, CJOSE_HDR_KID, "e1", &err);
    jws = cjose_jws_sign(g_key, h, (const uint8_t *)claims, len, &err);
    if (jws && cjose_jws_export(jws, &ser, &err)) out = apr_pstrdup(p, ser);
    if (jws) cjose_jws_release(jws);
    cjose_header_release(h);
    return out;
}

static apr_pool_t *g_pool; /* g_keys' (LeakSanitizer does not see into APR's nodes) */

static void release_key(void)
{
    apr_pool_destroy(g_pool);
    cjose_jwk_release(g_key);
}

static void setup(apr_pool_t *root)
{
    cjose_err err;
    const char *why, *claims;
    char *pub;
    g_key = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
    if (!g_key || !cjose_jwk_set_kid(g_key, "e1", 2, &err)) abort();
    if (apr_pool_create(&g_pool, root) != APR_SUCCESS) abort();
    atexit(release_key);
    pub = cjose_jwk_to_json(g_key, false, &err);
    if (gmcp_jwks_parse(g_pool, apr_psprintf(root, "{\"keys\":[%s]}", pub), strlen(pub) + 11,
                        &g_keys, &why))
        abort();
    free(pub);
    claims = "{\"iss\":\"https://as.example\",\"aud\":\"https://mcp.example/mcp\","
             "\"sub\":\"alice\",\"exp\":1800000100,\"scope\":\"gemini\"}";
    if (!(g_real = sign(root, claims, strlen(claims)))) abort();
}

static void check(apr_pool_t *p, const gmcp_jwks *keys, const char *token, int may_verify)
{
    gmcp_jwt_claims c;
    const char *why = NULL;
    gmcp_jwt_verdict v = gmcp_jwt_verify(p, &g_pol, keys, token, NOW, &c, &why);
    FUZZ_ASSERT(v >= GMCP_JWT_OK && v <= GMCP_JWT_CLAIMS);
    FUZZ_ASSERT(v == GMCP_JWT_OK || why);
    FUZZ_ASSERT(v != GMCP_JWT_OK || may_verify);
    FUZZ_ASSERT(v != GMCP_JWT_OK || (c.subject && *c.subject && c.scope));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    gmcp_jwks *keys = NULL;
    const char *why, *token;
    if (size < 1) return 0;
    p = fuzz_pool();
    if (data[0] % 3 == 0) {
        token = fuzz_cstr(p, data + 1, size - 1);
        /* Only the real token (or its exact bytes) may verify. */
        check(p, g_keys, token, !strcmp(token, g_real));
    }
    else if (data[0] % 3 == 1) {
        if (gmcp_jwks_parse(p, (const char *)data + 1, size - 1, &keys, &why) == APR_SUCCESS)
            check(p, keys, g_real, 1);
    }
    else if ((token = sign(p, (const char *)data + 1, size - 1)))
        check(p, g_keys, token, 1);
    apr_pool_destroy(p);
    return 0;
}
