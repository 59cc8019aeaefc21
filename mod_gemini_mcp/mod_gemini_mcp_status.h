/* mod_gemini_mcp_status.h — health and metrics (SetHandler gemini-mcp-status). */
#ifndef MOD_GEMINI_MCP_STATUS_H
#define MOD_GEMINI_MCP_STATUS_H

#include <httpd.h>

/* DECLINED for another handler; else DONE (answered). */
int gmcp_status_handler(request_rec *r);

#endif
