/* fuzz_tus_checksum — a tus Upload-Checksum header (gmcp_tus_checksum). */
#include "fuzz.h"
#include "gmcp_uploads.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *algo = NULL;
    unsigned char *digest = NULL;
    apr_size_t len = 0;
    apr_status_t rv = gmcp_tus_checksum(p, fuzz_cstr(p, data, size), &algo, &digest, &len);
    FUZZ_ASSERT(rv == APR_SUCCESS || rv == APR_EINVAL || rv == APR_ENOTIMPL);
    if (rv == APR_SUCCESS) {
        FUZZ_ASSERT(algo && digest);
        FUZZ_ASSERT(len == (!strcmp(algo, "sha256") ? 32u : !strcmp(algo, "sha1") ? 20u : 16u));
        FUZZ_ASSERT(!strcmp(algo, "sha256") || !strcmp(algo, "sha1") || !strcmp(algo, "md5"));
    }
    apr_pool_destroy(p);
    return 0;
}
