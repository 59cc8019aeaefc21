/* unit_db.h — a fresh SQLite database in a temp directory, for unit tests. */
#ifndef GMCP_UNIT_DB_H
#define GMCP_UNIT_DB_H

#include <stdlib.h>
#include <apr_dbd.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include "gmcp_db.h"

/* mkdtemp(dir_template), open <dir>/<name> with the sqlite3 driver, init `db`.
 * Returns 0 on success. */
static inline int unit_open_sqlite(apr_pool_t *p, char *dir_template, const char *name, gmcp_db *db,
                                   apr_dbd_t **handle)
{
    const apr_dbd_driver_t *drv;
    const char *err = NULL;
    if (!mkdtemp(dir_template) || apr_dbd_init(p) != APR_SUCCESS
        || apr_dbd_get_driver(p, "sqlite3", &drv) != APR_SUCCESS
        || apr_dbd_open_ex(drv, p, apr_pstrcat(p, dir_template, "/", name, NULL), handle, &err)
            != 0)
        return -1;
    gmcp_db_init(db, drv, *handle, apr_hash_make(p), p);
    return 0;
}

#endif
