/* fuzz_files_header — one raw response header line of the Files API resumable upload
 * (gmcp_files_header_value), read the way the relay reads X-Goog-Upload-URL,
 * X-Goog-Upload-Status and X-Goog-Upload-Size-Received. The line is not NUL-terminated,
 * as libcurl's header callback gets it. */
#include "fuzz.h"
#include "gmcp_files.h"

static const char *const names[] = {"X-Goog-Upload-URL", "X-Goog-Upload-Status",
                                    "X-Goog-Upload-Size-Received",
                                    "X-Goog-Upload-Chunk-Granularity", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    char *line = malloc(size ? size : 1);
    int i;
    if (!line) abort();
    memcpy(line, data, size);
    for (i = 0; names[i]; i++) {
        const char *v = gmcp_files_header_value(p, line, size, names[i]);
        if (!v) continue;
        FUZZ_ASSERT(strlen(v) < size);
        if (i == 2) (void)apr_atoi64(v);
    }
    free(line);
    apr_pool_destroy(p);
    return 0;
}
