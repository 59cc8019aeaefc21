/* mod_gemini_mcp_inflight.h — a key's in-flight cap counted in the database for every
 * node (GeminiMCPRateLimitStore dbd; mod_gemini_mcp_inflight.c). A request holds one
 * of the key's slots from admission to its end; a thread in each child renews the
 * slots its requests hold, so a node that dies frees them within INFLIGHT_TTL and a
 * child killed on this host frees them at once (gmcp_lease.h). */
#ifndef MOD_GEMINI_MCP_INFLIGHT_H
#define MOD_GEMINI_MCP_INFLIGHT_H

#include <httpd.h>

/* Start the renewing thread (only when the store is dbd). */
void gmcp_inflight_child_init(apr_pool_t *pchild, server_rec *s);

/* Take a slot of `key_id` for r, given back when r's pool is cleaned up at the latest.
 * 0 when taken, 1 when all `max` are held, -1 when the store failed (logged). */
int gmcp_inflight_enter(request_rec *r, const char *key_id, apr_int64_t max);
/* Give r's slot back now (a no-op without one). */
void gmcp_inflight_leave(request_rec *r);

#endif
