/* fuzz_files_sha — Gemini's sha256Hash against our hex digest (gmcp_files_sha_matches).
 * Input: "<sha256Hash>\n<hex>" (no newline: the hash against a fixed digest). */
#include "fuzz.h"
#include "gmcp_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    char *s = fuzz_cstr(p, data, size), *nl = strchr(s, '\n');
    const char *hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    if (nl) {
        *nl = '\0';
        hex = nl + 1;
    }
    (void)gmcp_files_sha_matches(p, s, hex);
    (void)gmcp_files_sha_matches(p, s, NULL);
    apr_pool_destroy(p);
    return 0;
}
