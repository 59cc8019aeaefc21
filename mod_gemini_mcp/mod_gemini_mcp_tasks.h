/* mod_gemini_mcp_tasks.h — MCP tasks run by a child's worker threads
 * (mod_gemini_mcp_tasks.c), behind the core's gmcp_task_runner. */
#ifndef MOD_GEMINI_MCP_TASKS_H
#define MOD_GEMINI_MCP_TASKS_H

#include "gmcp_mcp.h"

#include <httpd.h>

/* Start this child's workers (GeminiMCPTaskWorkers; none when 0) and the thread that
 * renews their leases and fails tasks whose process is gone. */
void gmcp_tasks_child_init(apr_pool_t *pchild, server_rec *s);

/* The runner gmcp_server.tasks points to, or NULL when tasks are off. */
const gmcp_task_runner *gmcp_tasks_runner(void);

#endif
