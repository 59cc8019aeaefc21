/* gmcp_db.h — one set of statements, prepared by label, on SQLite and PostgreSQL.
 *
 * Works on any apr_dbd handle: a mod_dbd handle in httpd (statements are prepared
 * lazily into the handle's own `prepared` hash, after the schema check) or a handle
 * gmcpctl opened itself. Parameters are always passed as text (`%s`); the SQL casts
 * where a type cannot be inferred.
 */
#ifndef GMCP_DB_H
#define GMCP_DB_H

#include <apr_pools.h>
#include <apr_hash.h>
#include <apr_tables.h>
#include <apr_dbd.h>
#include "gmcp_util.h"

/* The schema version this build needs: the highest migration in sql/<driver>/. */
#define GMCP_SCHEMA_VERSION 11

typedef struct {
    const apr_dbd_driver_t *driver;
    apr_dbd_t *handle;
    apr_hash_t *prepared; /* label -> apr_dbd_prepared_t* */
    apr_pool_t *pool;     /* scratch pool for results (the request's) */
    int pgsql;            /* driver is PostgreSQL */
    /* The transaction gmcp_db_begin started and whether a statement in it failed
     * (later ones are skipped by the driver, and not logged again). */
    apr_dbd_transaction_t *txn;
    int txn_state;
} gmcp_db;

/* Rows of a select: each row is a `const char **` of ncols strings (NULL = SQL NULL). */
typedef struct {
    int ncols;
    apr_array_header_t *rows; /* const char ** */
} gmcp_rows;

#define GMCP_ROW(rs, i) (APR_ARRAY_IDX((rs)->rows, (i), const char **))

/* Initialise `db` for a handle. `prepared` is where labels are kept; for mod_dbd pass
 * dbd->prepared (statements are allocated from that hash's pool, which lives as long
 * as the connection). */
void gmcp_db_init(gmcp_db *db, const apr_dbd_driver_t *driver, apr_dbd_t *handle,
                  apr_hash_t *prepared, apr_pool_t *scratch);

/* How these functions fail (gmcp_util.h): GMCP_EDB whenever the database or the driver
 * failed, or no statement has the label — logged once, here (GMCP02xx, see
 * gmcp_errlog.h), with the label (or the start of the raw SQL) and the driver's message:
 * callers report the outcome to their client but need not log it again. */

/* Read the applied schema version (0 when schema_migrations is missing or empty).
 * APR_SUCCESS, or GMCP_EDB with *why. */
apr_status_t gmcp_db_schema_version(gmcp_db *db, int *version, const char **why);

/* Check once per connection that the schema is at GMCP_SCHEMA_VERSION or newer (on
 * SQLite also setting busy_timeout and synchronous=NORMAL); once the check passed,
 * later calls on the same connection return at once. Prepares nothing: statements are
 * prepared on first use. APR_SUCCESS when ready; otherwise *why is a message fit for the
 * error log (no secrets): GMCP_EDB when the database failed, GMCP_ESCHEMA when the schema
 * is older than this build needs (then also *schema_behind = 1; transitional: the glue
 * still tests it). */
apr_status_t gmcp_db_ready(gmcp_db *db, const char **why, int *schema_behind);

/* Prepare the statement for `label` on this handle now rather than on first use (a
 * no-op when it is prepared already). APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_db_prepare(gmcp_db *db, const char *label);

/* Run a labelled statement. args has the statement's parameter count; *nrows (when
 * not NULL) the rows it changed. APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_db_exec(gmcp_db *db, const char *label, int *nrows, int nargs, const char **args);
/* The same for an INSERT whose unique/primary-key conflict is an expected outcome
 * ("there already"): then APR_EEXIST, with nothing logged. Not inside a transaction (a
 * conflict there aborts it on PostgreSQL, and is GMCP_EDB). */
apr_status_t gmcp_db_exec_unique(gmcp_db *db, const char *label, int *nrows, int nargs,
                                 const char **args);
/* A labelled select: every row into *out. APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_db_select(gmcp_db *db, const char *label, gmcp_rows *out, int nargs,
                            const char **args);
/* Unprepared statement (migrations, admin). APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_db_exec_raw(gmcp_db *db, const char *sql, int *nrows);
apr_status_t gmcp_db_select_raw(gmcp_db *db, const char *sql, gmcp_rows *out);

/* Transactions: pair begin/end on the same pool; end rolls back when any statement
 * failed or when `rollback` is set. A failed begin leaves nothing open (*t is NULL;
 * ending it is allowed and quiet), nor does a failed end: the connection is fit for
 * the next caller either way. APR_SUCCESS or GMCP_EDB (end: also when begin had
 * failed). */
apr_status_t gmcp_db_begin(gmcp_db *db, apr_dbd_transaction_t **t);
apr_status_t gmcp_db_end(gmcp_db *db, apr_dbd_transaction_t *t, int rollback);

/* Last error text of the handle: the driver's message, first line only (PostgreSQL's
 * DETAIL, which can quote a key's value, is dropped) with quoted values replaced by
 * "...", so it never contains parameters. `driver_code` is the apr_dbd code of the
 * failure when known, else -1 (the sqlite3 and pgsql drivers report the handle's last
 * error either way). Never NULL. */
const char *gmcp_db_error(gmcp_db *db, int driver_code);

#define GMCP_ARGS(...)                                                                    \
    (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)), (const char *[]) \
    {                                                                                     \
        __VA_ARGS__                                                                       \
    }

#endif
