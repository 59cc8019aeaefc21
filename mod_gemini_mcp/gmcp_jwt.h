/* gmcp_jwt.h — OAuth access tokens as JWTs (RFC 9068), checked the way an MCP resource
 * server must: a signature by a key of the issuer's JWKS (through cjose), an algorithm
 * from the allowlist (never "none", never HMAC: the keys are public), the issuer, this
 * resource as an audience (RFC 8707), exp (required) and nbf with a bounded leeway.
 * Shared by the module; no httpd. */
#ifndef GMCP_JWT_H
#define GMCP_JWT_H

#include <apr_pools.h>
#include <apr_errno.h>

/* The longest token taken at all, and the largest JWKS document. */
#define GMCP_JWT_MAX 16384
#define GMCP_JWKS_MAX 65536

typedef struct gmcp_jwks gmcp_jwks; /* a parsed key set; released with its pool */

/* Parse a JWKS document ({"keys":[...]}): the signing keys of supported types (RSA and
 * EC P-256/384/521) are kept; encryption keys, symmetric keys and keys of other types
 * are skipped. APR_SUCCESS (possibly with no usable key), or APR_EINVAL with *why when
 * it is not a JWKS. */
apr_status_t gmcp_jwks_parse(apr_pool_t *p, const char *json, apr_size_t len, gmcp_jwks **out,
                             const char **why);
int gmcp_jwks_count(const gmcp_jwks *k);

typedef struct {
    const char *issuer;          /* the token's iss, exactly */
    const char *audience;        /* this resource's canonical URI: one of aud */
    const char *principal_claim; /* names the caller; "sub" when NULL */
    const char *tenant_claim;    /* optional; NULL: none */
    apr_int64_t leeway;          /* seconds of clock skew allowed on exp and nbf */
} gmcp_jwt_policy;

/* What the check found. Every verdict but OK is a refused token (401 invalid_token);
 * UNKNOWN_KID alone says a fresher JWKS might know the key. */
typedef enum {
    GMCP_JWT_OK = 0,
    GMCP_JWT_MALFORMED,   /* not a compact JWS, or its JSON is broken */
    GMCP_JWT_ALG,         /* alg outside the allowlist, or not the key's */
    GMCP_JWT_UNKNOWN_KID, /* no key of the set matches */
    GMCP_JWT_SIGNATURE,   /* the signature does not verify */
    GMCP_JWT_ISSUER,
    GMCP_JWT_AUDIENCE,
    GMCP_JWT_EXPIRED, /* or without exp */
    GMCP_JWT_NOT_YET, /* nbf (or iat) in the future */
    GMCP_JWT_CLAIMS,  /* no principal, or a claim of the wrong type */
    GMCP_JWT_INACTIVE /* introspection: the authorization server says not active */
} gmcp_jwt_verdict;

typedef struct {
    const char *subject;   /* the principal claim's value */
    const char *tenant;    /* the tenant claim's value, or NULL */
    const char *scope;     /* granted scopes, space-separated ("scope" or "scp"); "" none */
    const char *client_id; /* or NULL */
    apr_int64_t exp;
} gmcp_jwt_claims;

/* Check `token` at `now` (seconds). On GMCP_JWT_OK *out holds its claims; otherwise
 * *why says what was wrong, in words safe to send back (never the token). */
gmcp_jwt_verdict gmcp_jwt_verify(apr_pool_t *p, const gmcp_jwt_policy *pol, const gmcp_jwks *keys,
                                 const char *token, apr_int64_t now, gmcp_jwt_claims *out,
                                 const char **why);

/* Does the bearer look like a JWT at all (three base64url parts)? */
int gmcp_jwt_shaped(const char *token);

/* Is it a bearer token as RFC 6750 writes one (b64token, at most GMCP_JWT_MAX bytes)? */
int gmcp_token_syntax_ok(const char *token);

/* Check an RFC 7662 introspection response (the JSON body the authorization server
 * sent for a token) as gmcp_jwt_verify checks a JWT's claims: active, an access token
 * (token_type, where given, Bearer; not Keycloak's typ Refresh or ID), iss the policy's
 * issuer when it names one, this resource as an audience, exp required, nbf. Without a
 * principal claim, a client_credentials answer names its client (client_id), as RFC
 * 9068 has sub do. GMCP_JWT_MALFORMED: the body is not a JSON object. */
gmcp_jwt_verdict gmcp_jwt_check_introspection(apr_pool_t *p, const gmcp_jwt_policy *pol,
                                              const char *json, apr_size_t len, apr_int64_t now,
                                              gmcp_jwt_claims *out, const char **why);

#endif
