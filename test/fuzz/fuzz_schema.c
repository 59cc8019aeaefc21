/* fuzz_schema — tools/call arguments against an input schema (gmcp_validate_arguments).
 * A JSON array [schema, arguments] brings its own schema; any other JSON value is the
 * arguments, checked against a fixed schema shaped like the real tools'. */
#include "gmcp_mcp.h"

#define FUZZ_SETUP setup
#include "fuzz.h"

static json_t *fixed;

static void setup(apr_pool_t *root)
{
    (void)root;
    fixed = json_loads(
        "{\"type\":\"object\",\"required\":[\"prompt\",\"n\"],\"additionalProperties\":false,"
        "\"properties\":{\"prompt\":{\"type\":\"string\"},\"n\":{\"type\":\"integer\"},"
        "\"t\":{\"type\":\"number\"},\"stream\":{\"type\":\"boolean\"},"
        "\"files\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
        "\"opts\":{\"type\":\"object\"},\"nothing\":{\"type\":\"null\"},"
        "\"either\":{\"type\":[\"string\",\"integer\"]},"
        "\"mode\":{\"type\":\"string\",\"enum\":[\"fast\",\"slow\"]},"
        "\"level\":{\"enum\":[1,2,3,null]},\"any\":{}}}",
        0, NULL);
    if (!fixed) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (in) {
        /* tools/call only ever passes an object (a missing or null one becomes {}). */
        if (json_is_array(in) && json_array_size(in) == 2) {
            if (json_is_object(json_array_get(in, 1)))
                (void)gmcp_validate_arguments(p, json_array_get(in, 0), json_array_get(in, 1));
        }
        else if (json_is_object(in))
            (void)gmcp_validate_arguments(p, fixed, in);
        json_decref(in);
    }
    apr_pool_destroy(p);
    return 0;
}
