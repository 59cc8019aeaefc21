/* fuzz_introspection — an RFC 7662 introspection answer as an authorization server (or
 * whatever answers at its URL) sends it (gmcp_jwt_check_introspection), and the bearer
 * syntax check that decides what is sent there (gmcp_token_syntax_ok). An answer that
 * passes names a principal, has a scope string and an exp; every verdict is one of the
 * enum's and comes with a reason. */
#include "fuzz.h"
#include "gmcp_jwt.h"

#define NOW 1800000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const gmcp_jwt_policy pol = {"https://as.example", "https://mcp.example/mcp", NULL,
                                        "org", 60};
    apr_pool_t *p = fuzz_pool();
    gmcp_jwt_claims c;
    const char *why = NULL, *text = fuzz_cstr(p, data, size);
    gmcp_jwt_verdict v =
        gmcp_jwt_check_introspection(p, &pol, (const char *)data, size, NOW, &c, &why);
    if (!(v >= GMCP_JWT_OK && v <= GMCP_JWT_INACTIVE)) abort();
    if (v != GMCP_JWT_OK && !why) abort();
    if (v == GMCP_JWT_OK && !(c.subject && *c.subject && c.scope && c.exp + 60 > NOW)) abort();
    /* The syntax check: accepted tokens carry no byte that needs more than form escaping
     * of + / = ~ (no space, quote, control or ampersand). */
    if (gmcp_token_syntax_ok(text) && strpbrk(text, " \t\"&\r\n\\%")) abort();
    apr_pool_destroy(p);
    return 0;
}
