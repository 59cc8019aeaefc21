/* gmcp_scopes.h — OAuth scopes onto the tool patterns API keys already use.
 *
 * Each scope names tool patterns (apr_fnmatch, as a key's --scopes). Scopes form a
 * colon hierarchy, as MCP 2026-07-28 requires servers to honour: a granted "gemini"
 * covers "gemini:chat" and "gemini:chat:read". No httpd. */
#ifndef GMCP_SCOPES_H
#define GMCP_SCOPES_H

#include <apr_pools.h>
#include <apr_tables.h>

typedef struct {
    const char *name;  /* the scope */
    const char *tools; /* its own tool patterns, space-separated ("" none) */
} gmcp_scope_def;

/* The built-in table, used when no GeminiMCPOAuthScope is configured: "gemini" (every
 * tool) over gemini:generate, gemini:chat and gemini:files. */
apr_array_header_t *gmcp_scopes_default(apr_pool_t *p);
/* Is the scope name well formed (printable, no space, quote or backslash)? */
int gmcp_scope_name_ok(const char *name);
/* Does a granted scope cover `scope`: the same, or below it in the hierarchy? */
int gmcp_scope_covers(const char *granted, const char *scope);
/* The tool patterns the space-separated `granted` scopes give (every defined scope they
 * cover); "" when none. */
const char *gmcp_scopes_tools(apr_pool_t *p, const apr_array_header_t *defs, const char *granted);
/* The narrowest defined scope whose own patterns allow `tool`,
 * or NULL when none does. */
const char *gmcp_scopes_needed(apr_pool_t *p, const apr_array_header_t *defs, const char *tool);
/* The defined scopes no other defined scope covers, space-separated: what a client
 * asks for to be allowed everything. */
const char *gmcp_scopes_roots(apr_pool_t *p, const apr_array_header_t *defs);

#endif
