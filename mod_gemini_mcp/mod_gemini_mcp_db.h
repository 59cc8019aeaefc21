/* mod_gemini_mcp_db.h — every database section of a request, through one holder
 * (mod_gemini_mcp_db.c). A leaf: it calls mod_dbd and the core only. */
#ifndef MOD_GEMINI_MCP_DB_H
#define MOD_GEMINI_MCP_DB_H

#include "mod_gemini_mcp_config.h"

#include <mod_dbd.h>
#include "gmcp_db.h"

/* The holder of a request's mod_dbd connection for short sections. Made from the
 * request pool, whose cleanup gives back a connection still held at its end. */
typedef struct {
    request_rec *r;
    ap_dbd_t *dbd; /* while a section is open */
    gmcp_db db;
} gmcp_dbh;

gmcp_dbh *gmcp_dbh_make(request_rec *r);
/* Open a section (a no-op while one is open): statements prepared, the schema checked
 * (logged when behind); 0 or -1 with *why fit for a client. */
int gmcp_dbh_open(gmcp_dbh *h, const char **why);
/* The connection only, without the schema check (health reports). */
int gmcp_dbh_open_raw(gmcp_dbh *h);
void gmcp_dbh_close(gmcp_dbh *h);

/* A connection outside any request (a child's thread, a pool cleanup), schema checked:
 * NULL when the database is away (mod_dbd logged why; *err stays NULL) or not ready
 * (*err says why). Give it back with gmcp_db_close_server. */
ap_dbd_t *gmcp_db_open_server(server_rec *s, apr_pool_t *p, gmcp_db *db, const char **err);
void gmcp_db_close_server(server_rec *s, ap_dbd_t *dbd);

#endif
