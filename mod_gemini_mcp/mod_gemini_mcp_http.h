/* mod_gemini_mcp_http.h — the Streamable HTTP transport (SetHandler gemini-mcp). */
#ifndef MOD_GEMINI_MCP_HTTP_H
#define MOD_GEMINI_MCP_HTTP_H

#include <httpd.h>

/* DECLINED for another handler; else DONE (answered) or an HTTP status. */
int gmcp_mcp_handler(request_rec *r);
/* Per child: the session cache. */
void gmcp_mcp_child_init(apr_pool_t *pchild);

#endif
