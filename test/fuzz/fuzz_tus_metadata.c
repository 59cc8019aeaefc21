/* fuzz_tus_metadata — a tus Upload-Metadata header (gmcp_tus_metadata), and the file
 * name check applied to its filename (gmcp_tus_filename_ok). */
#include "fuzz.h"
#include "gmcp_uploads.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    apr_table_t *md = NULL;
    const char *err = NULL;
    if (gmcp_tus_metadata(p, fuzz_cstr(p, data, size), &md, &err) == APR_SUCCESS) {
        const char *name = apr_table_get(md, "filename");
        FUZZ_ASSERT(md);
        if (name) (void)gmcp_tus_filename_ok(name);
    }
    else
        FUZZ_ASSERT(err);
    (void)gmcp_tus_filename_ok(fuzz_cstr(p, data, size));
    apr_pool_destroy(p);
    return 0;
}
