/* gmcp_migrate.h — versioned SQL migrations with checksums. */
#ifndef GMCP_MIGRATE_H
#define GMCP_MIGRATE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "gmcp_db.h"

typedef struct {
    int version;
    const char *name;        /* file name without the .sql suffix */
    const char *path;
    const char *checksum;    /* sha256 hex of the file */
    const char *sql;         /* file contents */
    /* filled by gmcp_migrate_status */
    int applied;
    apr_int64_t applied_at;
    const char *applied_checksum;
} gmcp_migration;

/* Read sql_dir/<driver>/NNNN_name.sql, sorted by version. Versions must be unique and
 * start at 1 without gaps. */
int gmcp_migrations_load(apr_pool_t *p, const char *sql_dir, const char *driver,
                         apr_array_header_t **out, const char **err);

/* Mark which migrations are applied (and with which checksum). */
int gmcp_migrate_status(gmcp_db *db, apr_array_header_t *migs, const char **err);

/* Apply every pending migration, each in its own transaction. Refuses to run when an
 * applied migration's checksum differs from its file. *applied counts what ran.
 * On SQLite it also switches the database to WAL (which persists in the file). */
int gmcp_migrate_apply(gmcp_db *db, apr_array_header_t *migs, int *applied,
                       const char **err);

/* Split a SQL script into statements (handles quotes, comments, $$ bodies and
 * CREATE TRIGGER ... END blocks). */
apr_array_header_t *gmcp_sql_split(apr_pool_t *p, const char *script);

#endif
