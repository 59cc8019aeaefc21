/* gmcp_migrate.h — versioned SQL migrations with checksums. */
#ifndef GMCP_MIGRATE_H
#define GMCP_MIGRATE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "gmcp_db.h"
#include "gmcp_util.h"

/* The PostgreSQL advisory lock key (pg_advisory_lock) that gmcp_migrate_apply and
 * gmcp_migrate_down hold while they run, so that two gmcpctl runs never migrate the same
 * database at once: any 64-bit number no other application on the database uses. It
 * must differ from gmcpctl's job lock (GMCPCTL_JOB_LOCK_KEY, gmcpctl/gmcpctl.h). */
#define GMCP_MIGRATE_LOCK_KEY "727071"

typedef struct {
    int version;
    const char *name; /* file name without the .sql suffix */
    const char *path;
    const char *checksum;  /* sha256 hex of the file */
    const char *sql;       /* file contents */
    const char *down_path; /* NNNN_*.down.sql of the same version; NULL when none */
    const char *down_sql;  /* its contents (NULL: this migration cannot be rolled back) */
    /* filled by gmcp_migrate_status / gmcp_migrate_inspect */
    int applied;
    apr_int64_t applied_at;
    const char *applied_checksum;
    int missing; /* only in gmcp_migrate_inspect's *missing: applied, no file */
} gmcp_migration;

/* Every function here that returns an apr_status_t says why it failed in *why (a
 * message for the operator): APR_SUCCESS; GMCP_EDB when the database failed (gmcp_db
 * logged it); GMCP_ESCHEMA when the database's migrations do not match the files; others
 * as each says. */

/* Read sql_dir/<driver>/NNNN_name.sql, sorted by version. Versions must be unique and
 * start at 1 without gaps. NNNN_name.down.sql is the down script of migration NNNN
 * (matched by number; at most one per version, never an up migration of its own).
 * The error of a directory or file call as it came (logged), or APR_EINVAL when the
 * files are not numbered so. */
apr_status_t gmcp_migrations_load(apr_pool_t *p, const char *sql_dir, const char *driver,
                                  apr_array_header_t **out, const char **why);

/* Mark which migrations are applied (and with which checksum). GMCP_ESCHEMA when the
 * database has a migration applied that has no file (see gmcp_migrate_inspect). */
apr_status_t gmcp_migrate_status(gmcp_db *db, apr_array_header_t *migs, const char **why);

/* The same, but an applied version without a file is not an error: each is returned in
 * *missing (gmcp_migration with version, name, applied checksum and time, missing = 1;
 * no path or SQL), sorted by version. APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_migrate_inspect(gmcp_db *db, apr_array_header_t *migs,
                                  apr_array_header_t **missing, const char **why);

/* Roll back every applied migration above `target` (0 <= target, else APR_EINVAL),
 * newest first, running each one's down script and deleting its schema_migrations row,
 * all in ONE transaction (DDL is transactional on PostgreSQL and SQLite): either the
 * schema ends at `target` or nothing changed. Refuses (nothing changed) when a migration
 * to roll back has no file or when any applied migration's file drifted (GMCP_ESCHEMA),
 * when one has no down script (APR_ENOENT), and, unless `force`, when the rollback would
 * drop data: a table that a down script drops, drops columns of (ALTER TABLE ... DROP
 * COLUMN), deletes from or truncates holds a row; then APR_EINVAL, *refused is 1 and
 * *why names the tables. With `actor` set and when audit_log survives the rollback, a
 * "schema.down" audit row is written in the same transaction, before the down scripts
 * run (*audited = 1). *done lists the names rolled back, newest first. */
apr_status_t gmcp_migrate_down(gmcp_db *db, apr_array_header_t *migs, int target, int force,
                               const char *actor, apr_array_header_t **done, int *refused,
                               int *audited, const char **why);

/* The tables a script may drop data from (DROP TABLE, ALTER TABLE t DROP COLUMN, DELETE
 * FROM, TRUNCATE), as lower-case names without quotes, each once, in script order. */
apr_array_header_t *gmcp_sql_data_tables(apr_pool_t *p, const char *script);

/* Apply every pending migration, each in its own transaction. Refuses to run
 * (GMCP_ESCHEMA) when an applied migration's checksum differs from its file, or one has
 * no file. *applied counts what ran. On SQLite it also switches the database to WAL
 * (which persists in the file; GMCP_EDB when it cannot). */
apr_status_t gmcp_migrate_apply(gmcp_db *db, apr_array_header_t *migs, int *applied,
                                const char **why);

/* Split a SQL script into statements (handles quotes, comments, $$ bodies and
 * CREATE TRIGGER ... END blocks). */
apr_array_header_t *gmcp_sql_split(apr_pool_t *p, const char *script);

#endif
