/* fuzz_last_event_id — the SSE Last-Event-ID "<stream>.<seq>" (gmcp_last_event_id_parse). */
#include "fuzz.h"
#include "gmcp_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *s = fuzz_cstr(p, data, size), *sid = NULL;
    apr_uint64_t seq = 0;
    if (gmcp_last_event_id_parse(p, s, &sid, &seq) == APR_SUCCESS) {
        size_t n = strlen(sid);
        FUZZ_ASSERT(!strncmp(s, sid, n) && s[n] == '.' && !strchr(s + n + 1, '.'));
        FUZZ_ASSERT(s[n + 1] >= '0' && s[n + 1] <= '9');
    }
    apr_pool_destroy(p);
    return 0;
}
