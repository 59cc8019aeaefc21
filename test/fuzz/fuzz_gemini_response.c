/* fuzz_gemini_response — a Gemini response body: the first candidate's text
 * (gmcp_gemini_text) and an error body's RetryInfo delay (gmcp_gemini_retry_info). */
#include "fuzz.h"
#include "gmcp_gemini.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (j) {
        apr_interval_time_t d = gmcp_gemini_retry_info(j);
        FUZZ_ASSERT(d >= -1);
        (void)gmcp_gemini_text(p, j);
        json_decref(j);
    }
    apr_pool_destroy(p);
    return 0;
}
