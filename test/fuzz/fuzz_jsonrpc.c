/* fuzz_jsonrpc — a POST body through JSON-RPC framing and validation (gmcp_msg_parse),
 * then the id's SQL key (gmcp_id_key) and the stateless-revision probe. */
#include "fuzz.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_stateless.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    gmcp_msg m;
    gmcp_msg_parse(p, (const char *)data, size, &m);
    switch (m.kind) {
    case GMCP_MSG_INVALID: FUZZ_ASSERT(m.error_code && m.error_msg); break;
    case GMCP_MSG_REQUEST:
    case GMCP_MSG_NOTIFICATION:
        FUZZ_ASSERT(m.root && m.method && *m.method);
        FUZZ_ASSERT(!m.params || json_is_object(m.params));
        FUZZ_ASSERT((m.kind == GMCP_MSG_REQUEST) == (m.id != NULL));
        (void)gmcp_is_stateless_request(&m, NULL, 0);
        (void)gmcp_is_stateless_request(&m, GMCP_STATELESS_VERSION, 0);
        (void)gmcp_method_removed(m.method);
        break;
    case GMCP_MSG_RESPONSE:
    case GMCP_MSG_BATCH: FUZZ_ASSERT(m.root); break;
    }
    if (m.id) {
        const char *key = gmcp_id_key(p, m.id);
        FUZZ_ASSERT(key && *key);
        FUZZ_ASSERT(json_is_string(m.id) ? key[0] == '"' : key[0] != '"');
    }
    FUZZ_ASSERT(!strcmp(gmcp_id_key(p, NULL), "null"));
    if (m.root) (void)gmcp_json_dump(p, m.root);
    gmcp_msg_release(&m);
    apr_pool_destroy(p);
    return 0;
}
