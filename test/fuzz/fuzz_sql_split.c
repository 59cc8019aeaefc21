/* fuzz_sql_split — the migration script splitter (gmcp_sql_split): quotes, comments,
 * $tag$ bodies and CREATE TRIGGER ... BEGIN ... END blocks. */
#include "fuzz.h"
#include "gmcp_migrate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *s = fuzz_cstr(p, data, size);
    apr_array_header_t *st = gmcp_sql_split(p, s);
    size_t total = 0;
    int i;
    FUZZ_ASSERT(st);
    for (i = 0; i < st->nelts; i++) {
        const char *one = APR_ARRAY_IDX(st, i, const char *);
        FUZZ_ASSERT(one);
        total += strlen(one);
    }
    FUZZ_ASSERT(total <= strlen(s));
    apr_pool_destroy(p);
    return 0;
}
