/* httpd_conf.h — read mod_dbd's DBDriver/DBDParams (and GeminiMCPKeyPepper) out of an httpd configuration,
 * following Include/IncludeOptional the way httpd does, so gmcpctl and the server
 * always agree on the database. */
#ifndef GMCP_HTTPD_CONF_H
#define GMCP_HTTPD_CONF_H

#include <apr_pools.h>
#include <apr_tables.h>

typedef struct {
    const char *driver;     /* DBDriver, NULL if absent */
    const char *params;     /* DBDParams, NULL if absent */
    const char *where;      /* "file:line" of DBDParams, for messages */
    const char *key_pepper; /* GeminiMCPKeyPepper source (file:/env:), NULL if absent */
    apr_table_t *gmcp;      /* every GeminiMCP* directive's value, by name */
} gmcp_httpd_dbd;

/* Returns 0 and fills `out` (fields may stay NULL), or -1 with *err set. A directive
 * given twice takes its last value, as httpd does; one only inside <VirtualHost> counts
 * when the main server has none. */
int gmcp_httpd_conf_dbd(apr_pool_t *p, const char *path, gmcp_httpd_dbd *out, const char **err);

#endif
