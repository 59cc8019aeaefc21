/* gmcp_stateless.h — the MCP 2026-07-28 (stateless) revision: per-request _meta, the
 * standard and custom request headers, server/discover, result decoration, and
 * multi-round-trip requests (MRTR) with integrity-protected requestState. */
#ifndef GMCP_STATELESS_H
#define GMCP_STATELESS_H

#include <apr_pools.h>
#include <jansson.h>
#include "gmcp_jsonrpc.h"
#include "gmcp_provider.h"
#include "gmcp_registry.h"

#define GMCP_STATELESS_VERSION "2026-07-28"

#define GMCP_HEADER_MISMATCH -32020
#define GMCP_MISSING_CAPABILITY -32021
#define GMCP_UNSUPPORTED_VERSION -32022

#define GMCP_META_VERSION "io.modelcontextprotocol/protocolVersion"
#define GMCP_META_CAPS "io.modelcontextprotocol/clientCapabilities"
#define GMCP_META_INFO "io.modelcontextprotocol/clientInfo"
#define GMCP_META_LOGLEVEL "io.modelcontextprotocol/logLevel"
#define GMCP_META_SERVERINFO "io.modelcontextprotocol/serverInfo"
#define GMCP_META_SUBSCRIPTION "io.modelcontextprotocol/subscriptionId"

/* Is this a session-era (initialize-based) protocol version? */
int gmcp_version_is_legacy(const char *version);

/* Should a POST be served by the stateless rules? `header_version` is the
 * MCP-Protocol-Version header (or NULL), `has_session` whether Mcp-Session-Id came. */
int gmcp_is_stateless_request(const gmcp_msg *m, const char *header_version, int has_session);

/* Header lookup used by the checks below (case-insensitive name). */
typedef const char *(*gmcp_header_fn)(void *baton, const char *name);

/* Validate a stateless request's _meta and headers. On failure returns the JSON-RPC
 * error to send (new ref) and sets *http_status; NULL when the request may proceed. */
json_t *gmcp_stateless_check(apr_pool_t *p, const gmcp_registry *reg, const gmcp_msg *m,
                             gmcp_header_fn header, void *baton, int *http_status);

/* Decode an Mcp-Param header value: "=?base64?...?=" is strict (padded) base64 of the
 * value, anything else is literal. NULL for an invalid Base64 form. */
const char *gmcp_param_header_decode(apr_pool_t *p, const char *value);

/* Methods removed in 2026-07-28 (answered 404 + -32601). */
int gmcp_method_removed(const char *method);

/* Add resultType (and for cacheable methods ttlMs/cacheScope) to a result. */
void gmcp_stateless_decorate(const char *method, json_t *result);

/* requestState sealing: "<b64url(json)>.<b64url(HMAC-SHA256)>" bound to `bind` (the
 * tool or prompt name and the principal), so a state cannot be altered or replayed
 * elsewhere. seal: NULL when the HMAC fails. open: APR_SUCCESS with *state (a new
 * reference), APR_EINVAL (*state NULL) when it does not verify or parse. */
const char *gmcp_state_seal(apr_pool_t *p, const unsigned char *key, apr_size_t keylen,
                            const char *bind, json_t *state);
apr_status_t gmcp_state_open(apr_pool_t *p, const unsigned char *key, apr_size_t keylen,
                             const char *bind, const char *sealed, json_t **state);

/* MRTR building blocks used by the transport's input/input_required operations:
 * gmcp_mrtr_input answers as gmcp_call_ops.input (never GMCP_INPUT_FAILED). */
gmcp_input_result gmcp_mrtr_input(gmcp_call *c, const char *key, const char *method, json_t *params,
                                  json_t **response);
json_t *gmcp_mrtr_result(gmcp_call *c, json_t *state, const unsigned char *secret,
                         apr_size_t secret_len, const char *bind);

/* The server/discover result. */
json_t *gmcp_discover_result(const char *name, const char *version);

#endif
