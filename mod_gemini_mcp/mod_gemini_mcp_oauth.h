/* mod_gemini_mcp_oauth.h — the OAuth 2.1 resource server (mod_gemini_mcp_oauth.c):
 * each issuer's JWKS cached across children, access tokens checked with it, the
 * Protected Resource Metadata document (RFC 9728) and the Bearer challenges. */
#ifndef MOD_GEMINI_MCP_OAUTH_H
#define MOD_GEMINI_MCP_OAUTH_H

#include "mod_gemini_mcp_config.h"
#include "gmcp_jwt.h"

int gmcp_oauth_pre_config(apr_pool_t *pconf);
/* Checks every GeminiMCPAuth ... oauth section and makes the shared JWKS slots. */
int gmcp_oauth_post_config(apr_pool_t *p, server_rec *s);
void gmcp_oauth_child_init(apr_pool_t *pchild, server_rec *s);
/* quick_handler: the metadata document at /.well-known/oauth-protected-resource[path]. */
int gmcp_oauth_metadata(request_rec *r, int lookup);

/* What a token check found. */
typedef enum {
    GMCP_TOKEN_OK = 0,
    GMCP_TOKEN_INVALID,    /* 401 invalid_token, *why says why */
    GMCP_TOKEN_UNAVAILABLE /* the issuer's keys cannot be had: 503 */
} gmcp_token_verdict;

/* Check a bearer token for the location's resource: a JWT against the issuer's JWKS
 * (fetched on first use, when it is old, and once, rate-bounded, for an unknown kid); any
 * other token at the introspection endpoint, where GeminiMCPOAuthIntrospection is set. */
gmcp_token_verdict gmcp_oauth_check(request_rec *r, const gmcp_oauth_conf *o, const char *token,
                                    gmcp_jwt_claims *out, const char **why);

/* The WWW-Authenticate value for a 401 (error NULL: no token was sent) or for a 403
 * insufficient_scope (error "insufficient_scope", scope the scopes it needs). */
const char *gmcp_oauth_challenge(request_rec *r, const gmcp_oauth_conf *o, const char *error,
                                 const char *description, const char *scope);
/* The scope table of a resource (the built-in one when none is configured). */
const apr_array_header_t *gmcp_oauth_scopes(const gmcp_oauth_conf *o);

#endif
