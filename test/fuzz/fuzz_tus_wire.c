/* fuzz_tus_wire — the upload handler's small grammars (gmcp_wire.c) on one value:
 * Upload-Offset/Upload-Length decimals, the upload id in a URL's last segment, and
 * Upload-Concat (partial, final;<urls>). */
#include "fuzz.h"
#include "gmcp_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *s = fuzz_cstr(p, data, size), *seg;
    apr_int64_t v = -1;
    apr_array_header_t *parts;
    gmcp_concat_kind kind;
    int i;

    if (gmcp_tus_offset_parse(s, &v) == APR_SUCCESS) {
        FUZZ_ASSERT(v >= 0 && v <= (apr_int64_t)1 << 62);
        FUZZ_ASSERT(!strcmp(apr_psprintf(p, "%" APR_INT64_T_FMT, v), s)); /* canonical */
    }
    seg = gmcp_url_last_segment(p, s);
    FUZZ_ASSERT(seg && !strchr(seg, '/') && strstr(s, seg));
    if (gmcp_upload_id_ok(seg)) FUZZ_ASSERT(strlen(seg) == 22);

    kind = gmcp_tus_concat_kind(s);
    parts = gmcp_tus_concat_parse(p, s);
    FUZZ_ASSERT((kind == GMCP_CONCAT_FINAL) == (parts != NULL));
    for (i = 0; parts && i < parts->nelts; i++) {
        const gmcp_concat_part *pt = &APR_ARRAY_IDX(parts, i, gmcp_concat_part);
        FUZZ_ASSERT(pt->url && *pt->url && !strchr(pt->url, ' '));
        FUZZ_ASSERT(!pt->id || gmcp_upload_id_ok(pt->id));
    }
    apr_pool_destroy(p);
    return 0;
}
