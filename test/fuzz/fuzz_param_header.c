/* fuzz_param_header — an Mcp-Param-* header value (gmcp_param_header_decode): literal,
 * or "=?base64?...?=" strict padded base64 of UTF-8 without NUL. */
#include "fuzz.h"
#include "gmcp_stateless.h"
#include "gmcp_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *v = fuzz_cstr(p, data, size);
    const char *out = gmcp_param_header_decode(p, v);
    if (out && out != v) FUZZ_ASSERT(gmcp_utf8_valid(out, strlen(out)));
    apr_pool_destroy(p);
    return 0;
}
