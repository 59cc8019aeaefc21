/* fuzz_b64url — base64url without padding (gmcp_b64url_decode), with the round trip
 * decode(encode(x)) == x for whatever decodes. */
#include "fuzz.h"
#include "gmcp_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    apr_size_t len = 0, len2 = 0;
    unsigned char *raw = gmcp_b64url_decode(p, fuzz_cstr(p, data, size), &len), *again;
    const char *enc;
    if (raw) {
        enc = gmcp_b64url_encode(p, raw, len);
        FUZZ_ASSERT(enc);
        again = gmcp_b64url_decode(p, enc, &len2);
        FUZZ_ASSERT(again && len2 == len && !memcmp(again, raw, len));
    }
    /* And the encoder on the raw bytes. */
    enc = gmcp_b64url_encode(p, data, size);
    FUZZ_ASSERT(enc);
    raw = gmcp_b64url_decode(p, enc, &len);
    FUZZ_ASSERT(raw && len == size && (!size || !memcmp(raw, data, size)));
    apr_pool_destroy(p);
    return 0;
}
