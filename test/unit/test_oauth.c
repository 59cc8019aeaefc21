/* Unit tests of JWT access tokens against a JWKS (gmcp_jwt) and of scopes onto tool
 * patterns (gmcp_scopes). Tokens are signed here with cjose, each refusal built on
 * purpose: the integration suite repeats them against a real authorization server. */
#include "unit.h"
#include "gmcp_jwt.h"
#include "gmcp_scopes.h"
#include "gmcp_util.h"

#include <cjose/cjose.h>
#include <jansson.h>
#include <stdlib.h>

#define ISS "https://as.example"
#define AUD "https://mcp.example/mcp"
#define NOW 1800000000

static cjose_jwk_t *g_rsa, *g_rsa2, *g_ec;

/* A compact JWS of `claims` under header {alg, kid, typ?}. */
static const char *sign(apr_pool_t *p, cjose_jwk_t *key, const char *alg, const char *kid,
                        json_t *claims)
{
    cjose_err err;
    cjose_header_t *h = cjose_header_new(&err);
    char *text = json_dumps(claims, JSON_COMPACT);
    const char *ser = NULL, *out = NULL;
    cjose_jws_t *jws;
    cjose_header_set(h, CJOSE_HDR_ALG, alg, &err);
    if (kid) cjose_header_set(h, CJOSE_HDR_KID, kid, &err);
    cjose_header_set(h, "typ", "at+jwt", &err);
    jws = cjose_jws_sign(key, h, (const uint8_t *)text, strlen(text), &err);
    if (jws && cjose_jws_export(jws, &ser, &err)) out = apr_pstrdup(p, ser);
    if (jws) cjose_jws_release(jws);
    cjose_header_release(h);
    free(text);
    json_decref(claims);
    return out;
}

static json_t *claims(apr_int64_t exp)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "iss", ISS, "aud", AUD, "sub", "alice",
                     "exp", (json_int_t)exp, "iat", (json_int_t)(NOW - 10), "scope",
                     "gemini:chat openid", "client_id", "c1");
}

static const char *jwks_json(apr_pool_t *p)
{
    cjose_err err;
    char *a = cjose_jwk_to_json(g_rsa, false, &err), *b = cjose_jwk_to_json(g_ec, false, &err);
    const char *out =
        apr_psprintf(p, "{\"keys\":[%s,%s,{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", a, b);
    free(a);
    free(b);
    return out;
}

static gmcp_jwt_verdict check(apr_pool_t *p, const gmcp_jwks *keys, const char *tok,
                              gmcp_jwt_claims *c)
{
    gmcp_jwt_policy pol = {ISS, AUD, NULL, "org", 30};
    const char *why = NULL;
    gmcp_jwt_verdict v = gmcp_jwt_verify(p, &pol, keys, tok, NOW, c, &why);
    CHECK(v == GMCP_JWT_OK || (why && !strstr(why, tok ? tok : "\x01")));
    return v;
}

static void setup(void)
{
    cjose_err err;
    static const uint8_t e[] = {1, 0, 1};
    g_rsa = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &err);
    g_rsa2 = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &err);
    g_ec = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
    cjose_jwk_set_kid(g_rsa, "r1", 2, &err);
    cjose_jwk_set_kid(g_ec, "e1", 2, &err);
}

static void t_good_tokens(apr_pool_t *p)
{
    gmcp_jwks *keys = NULL;
    gmcp_jwt_claims c;
    const char *why;
    json_t *cl;
    CHECK(gmcp_jwks_parse(p, jwks_json(p), strlen(jwks_json(p)), &keys, &why) == APR_SUCCESS);
    CHECK(gmcp_jwks_count(keys) == 2); /* the symmetric key is skipped */
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", claims(NOW + 60)), &c) == GMCP_JWT_OK);
    CHECK_STR(c.subject, "alice");
    CHECK_STR(c.scope, "gemini:chat openid");
    CHECK_STR(c.client_id, "c1");
    CHECK(c.tenant == NULL);
    CHECK(check(p, keys, sign(p, g_rsa, "PS256", "r1", claims(NOW + 60)), &c) == GMCP_JWT_OK);
    CHECK(check(p, keys, sign(p, g_ec, "ES256", "e1", claims(NOW + 60)), &c) == GMCP_JWT_OK);
    /* aud as an array, scp as an array, a tenant claim, a trailing slash */
    cl = claims(NOW + 60);
    json_object_set_new(cl, "aud", json_pack("[s,s]", "other", AUD "/"));
    json_object_del(cl, "scope");
    json_object_set_new(cl, "scp", json_pack("[s,s]", "gemini", "x"));
    json_object_set_new(cl, "org", json_string("acme"));
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_OK);
    CHECK_STR(c.scope, "gemini x");
    CHECK_STR(c.tenant, "acme");
    /* exp within the leeway still passes */
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", claims(NOW - 20)), &c) == GMCP_JWT_OK);
}

static void t_refusals(apr_pool_t *p)
{
    gmcp_jwks *keys = NULL;
    gmcp_jwt_claims c;
    const char *why, *tok, *dot;
    json_t *cl;
    cjose_err err;
    char *pub;
    cjose_jwk_t *hmac;
    gmcp_jwks_parse(p, jwks_json(p), strlen(jwks_json(p)), &keys, &why);

    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", claims(NOW - 31)), &c) == GMCP_JWT_EXPIRED);
    cl = claims(NOW + 60);
    json_object_del(cl, "exp");
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_EXPIRED);
    cl = claims(NOW + 60);
    json_object_set_new(cl, "nbf", json_integer(NOW + 31));
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_NOT_YET);
    cl = claims(NOW + 60);
    json_object_set_new(cl, "aud", json_string("https://mcp.example/other"));
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_AUDIENCE);
    cl = claims(NOW + 60);
    json_object_del(cl, "aud");
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_AUDIENCE);
    cl = claims(NOW + 60);
    json_object_set_new(cl, "iss", json_string("https://evil.example"));
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_ISSUER);
    cl = claims(NOW + 60);
    json_object_set_new(cl, "sub", json_integer(7));
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_CLAIMS);
    cl = claims(NOW + 60);
    json_object_set_new(cl, "sub", json_string("a\nb"));
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "r1", cl), &c) == GMCP_JWT_CLAIMS);

    /* a key the set does not hold; no kid and more than one candidate */
    CHECK(check(p, keys, sign(p, g_rsa2, "RS256", "r9", claims(NOW + 60)), &c)
          == GMCP_JWT_UNKNOWN_KID);
    CHECK(check(p, keys, sign(p, g_rsa2, "RS256", "r1", claims(NOW + 60)), &c)
          == GMCP_JWT_SIGNATURE);
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", NULL, claims(NOW + 60)), &c) == GMCP_JWT_OK);
    /* the EC key for an RSA algorithm */
    CHECK(check(p, keys, sign(p, g_rsa, "RS256", "e1", claims(NOW + 60)), &c) == GMCP_JWT_ALG);

    /* HS256 keyed with the public key's text, and alg none */
    pub = cjose_jwk_to_json(g_rsa, false, &err);
    hmac = cjose_jwk_create_oct_spec((const uint8_t *)pub, strlen(pub), &err);
    free(pub);
    CHECK(check(p, keys, sign(p, hmac, "HS256", "r1", claims(NOW + 60)), &c) == GMCP_JWT_ALG);
    cjose_jwk_release(hmac);
    tok = apr_pstrcat(
        p, gmcp_b64url_encode(p, (const unsigned char *)"{\"alg\":\"none\",\"kid\":\"r1\"}", 25),
        ".", "eyJzdWIiOiJhbGljZSJ9", ".", NULL);
    CHECK(check(p, keys, tok, &c) == GMCP_JWT_MALFORMED); /* no signature part at all */
    CHECK(check(p, keys, apr_pstrcat(p, tok, "x", NULL), &c) == GMCP_JWT_ALG);

    /* a tampered payload: another subject under the same signature */
    tok = sign(p, g_rsa, "RS256", "r1", claims(NOW + 60));
    dot = strchr(tok, '.');
    cl = claims(NOW + 60);
    json_object_set_new(cl, "sub", json_string("mallory"));
    {
        char *body = json_dumps(cl, JSON_COMPACT);
        const char *forged =
            apr_pstrcat(p, apr_pstrndup(p, tok, (apr_size_t)(dot - tok)), ".",
                        gmcp_b64url_encode(p, (const unsigned char *)body, strlen(body)),
                        strrchr(tok, '.'), NULL);
        free(body);
        CHECK(check(p, keys, forged, &c) == GMCP_JWT_SIGNATURE);
    }
    json_decref(cl);
    /* not JWTs */
    CHECK(check(p, keys, "gmcp_0123456789abcdef_x", &c) == GMCP_JWT_MALFORMED);
    CHECK(check(p, keys, "a.b.c.d", &c) == GMCP_JWT_MALFORMED);
    CHECK(check(p, keys, "e30.e30.e30", &c) == GMCP_JWT_ALG);
    CHECK(gmcp_jwks_parse(p, "{\"k\":1}", 7, &keys, &why) == APR_EINVAL);
    CHECK(gmcp_jwks_parse(p, "[", 1, &keys, &why) == APR_EINVAL);
}

static gmcp_jwt_verdict ask(apr_pool_t *p, json_t *answer, gmcp_jwt_claims *c)
{
    gmcp_jwt_policy pol = {ISS, AUD, NULL, "org", 30};
    const char *why = NULL;
    char *text = json_dumps(answer, JSON_COMPACT);
    gmcp_jwt_verdict v = gmcp_jwt_check_introspection(p, &pol, text, strlen(text), NOW, c, &why);
    CHECK(v == GMCP_JWT_OK || why);
    free(text);
    json_decref(answer);
    return v;
}

static json_t *active(apr_int64_t exp)
{
    json_t *a = claims(exp);
    json_object_set_new(a, "active", json_true());
    json_object_set_new(a, "token_type", json_string("Bearer"));
    return a;
}

/* RFC 7662 answers: what an authorization server says about an opaque token. */
static void t_introspection(apr_pool_t *p)
{
    gmcp_jwt_claims c;
    json_t *a;
    const char *why;
    gmcp_jwt_policy pol = {ISS, AUD, NULL, NULL, 0};
    CHECK(ask(p, active(NOW + 60), &c) == GMCP_JWT_OK);
    CHECK_STR(c.subject, "alice");
    CHECK_STR(c.scope, "gemini:chat openid");
    CHECK_STR(c.client_id, "c1");
    CHECK(c.exp == NOW + 60);
    /* no iss: the configured issuer's; no sub: the client's (client_credentials) */
    a = active(NOW + 60);
    json_object_del(a, "iss");
    json_object_del(a, "sub");
    CHECK(ask(p, a, &c) == GMCP_JWT_OK);
    CHECK_STR(c.subject, "c1");
    a = active(NOW + 60);
    json_object_set_new(a, "typ", json_string("Bearer")); /* Keycloak's */
    json_object_set_new(a, "org", json_string("acme"));
    CHECK(ask(p, a, &c) == GMCP_JWT_OK);
    CHECK_STR(c.tenant, "acme");

    CHECK(ask(p, json_pack("{s:b}", "active", 0), &c) == GMCP_JWT_INACTIVE);
    a = active(NOW + 60);
    json_object_set_new(a, "active", json_string("true"));
    CHECK(ask(p, a, &c) == GMCP_JWT_INACTIVE);
    a = active(NOW + 60);
    json_object_del(a, "active");
    CHECK(ask(p, a, &c) == GMCP_JWT_INACTIVE);
    a = active(NOW + 60);
    json_object_set_new(a, "token_type", json_string("refresh_token"));
    CHECK(ask(p, a, &c) == GMCP_JWT_CLAIMS);
    a = active(NOW + 60);
    json_object_set_new(a, "token_type", json_string("DPoP")); /* needs a proof we do not take */
    CHECK(ask(p, a, &c) == GMCP_JWT_CLAIMS);
    a = active(NOW + 60);
    json_object_set_new(a, "typ", json_string("Refresh"));
    CHECK(ask(p, a, &c) == GMCP_JWT_CLAIMS);
    a = active(NOW + 60);
    json_object_set_new(a, "iss", json_string("https://evil.example"));
    CHECK(ask(p, a, &c) == GMCP_JWT_ISSUER);
    a = active(NOW + 60);
    json_object_del(a, "aud"); /* a refresh token (oidc-provider names no aud for one) */
    json_object_del(a, "token_type");
    CHECK(ask(p, a, &c) == GMCP_JWT_AUDIENCE);
    a = active(NOW + 60);
    json_object_set_new(a, "aud", json_string("https://mcp.example/other"));
    CHECK(ask(p, a, &c) == GMCP_JWT_AUDIENCE);
    CHECK(ask(p, active(NOW - 31), &c) == GMCP_JWT_EXPIRED);
    a = active(NOW + 60);
    json_object_del(a, "exp");
    CHECK(ask(p, a, &c) == GMCP_JWT_EXPIRED);
    a = active(NOW + 60);
    json_object_set_new(a, "nbf", json_integer(NOW + 31));
    CHECK(ask(p, a, &c) == GMCP_JWT_NOT_YET);
    a = active(NOW + 60);
    json_object_del(a, "sub");
    json_object_del(a, "client_id");
    CHECK(ask(p, a, &c) == GMCP_JWT_CLAIMS);
    /* not an answer at all */
    CHECK(gmcp_jwt_check_introspection(p, &pol, "[true]", 6, NOW, &c, &why) == GMCP_JWT_MALFORMED);
    why = "{\"active\":true,\"active\":false}"; /* duplicate members */
    CHECK(gmcp_jwt_check_introspection(p, &pol, why, strlen(why), NOW, &c, &why)
          == GMCP_JWT_MALFORMED);
    CHECK(gmcp_jwt_check_introspection(p, &pol, "", 0, NOW, &c, &why) == GMCP_JWT_MALFORMED);

    /* what is sent to be asked about at all */
    CHECK(gmcp_token_syntax_ok("2YotnFZFEjr1zCsicMWpAA"));
    CHECK(gmcp_token_syntax_ok("a-b._~+/c=="));
    CHECK(!gmcp_token_syntax_ok(""));
    CHECK(!gmcp_token_syntax_ok("=="));
    CHECK(!gmcp_token_syntax_ok("a b"));
    CHECK(!gmcp_token_syntax_ok("a==b"));
    CHECK(!gmcp_token_syntax_ok("a&token=b"));
}

static void t_scopes(apr_pool_t *p)
{
    apr_array_header_t *d = gmcp_scopes_default(p);
    gmcp_scope_def extra = {"gemini:chat:read", "gemini_chat_history gemini_chat_list"};
    CHECK(gmcp_scope_covers("gemini", "gemini:chat"));
    CHECK(gmcp_scope_covers("gemini:chat", "gemini:chat"));
    CHECK(!gmcp_scope_covers("gemini:chat", "gemini"));
    CHECK(!gmcp_scope_covers("gem", "gemini:chat"));
    CHECK(!gmcp_scope_covers("gemini:chat", "gemini:chatter"));
    CHECK_STR(gmcp_scopes_tools(p, d, "gemini:chat openid"), "gemini_chat_*");
    CHECK_STR(gmcp_scopes_tools(p, d, "openid"), "");
    CHECK(strncmp(gmcp_scopes_tools(p, d, "gemini"), "* ", 2) == 0);
    CHECK_STR(gmcp_scopes_needed(p, d, "gemini_chat_send"), "gemini:chat");
    CHECK_STR(gmcp_scopes_needed(p, d, "gemini_embed"), "gemini:generate");
    CHECK_STR(gmcp_scopes_needed(p, d, "some_other_tool"), "gemini");
    CHECK_STR(gmcp_scopes_roots(p, d), "gemini");
    APR_ARRAY_PUSH(d, gmcp_scope_def) = extra;
    CHECK_STR(gmcp_scopes_needed(p, d, "gemini_chat_list"), "gemini:chat:read");
    CHECK(strstr(gmcp_scopes_tools(p, d, "gemini:chat"), "gemini_chat_history") != NULL);
    CHECK(gmcp_scope_name_ok("gemini:chat") && !gmcp_scope_name_ok("a b")
          && !gmcp_scope_name_ok("a\"b") && !gmcp_scope_name_ok(""));
}

UNIT_MAIN("oauth", {
    setup();
    RUN(t_good_tokens);
    RUN(t_refusals);
    RUN(t_introspection);
    RUN(t_scopes);
    cjose_jwk_release(g_rsa);
    cjose_jwk_release(g_rsa2);
    cjose_jwk_release(g_ec);
})
