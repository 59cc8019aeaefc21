/* mod_gemini_mcp_upload.h — tus 1.0 resumable uploads (SetHandler gemini-mcp-upload). */
#ifndef MOD_GEMINI_MCP_UPLOAD_H
#define MOD_GEMINI_MCP_UPLOAD_H

#include <httpd.h>

/* DECLINED for another handler; else the request was answered. */
int gmcp_upload_handler(request_rec *r);

#endif
