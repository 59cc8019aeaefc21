/* gmcp_db.c — labelled statements over apr_dbd, shared by the module and gmcpctl. */
#include "gmcp_db.h"
#include "gmcp_sql.h"

#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>

/* Key in the handle's prepared hash that records a passed schema check. */
#define SCHEMA_OK_KEY "gmcp__schema_ok"

void gmcp_db_init(gmcp_db *db, const apr_dbd_driver_t *driver, apr_dbd_t *handle,
                  apr_hash_t *prepared, apr_pool_t *scratch)
{
    db->driver = driver;
    db->handle = handle;
    db->prepared = prepared;
    db->pool = scratch;
    db->pgsql = !strcmp(apr_dbd_name(driver), "pgsql");
}

const char *gmcp_db_error(gmcp_db *db, int rv)
{
    const char *e = apr_dbd_error(db->driver, db->handle, rv);
    return e ? apr_pstrdup(db->pool, e) : "unknown database error";
}

static int collect(gmcp_db *db, apr_dbd_results_t *res, gmcp_rows *out)
{
    apr_dbd_row_t *row = NULL;
    int rv;
    out->ncols = apr_dbd_num_cols(db->driver, res);
    out->rows = apr_array_make(db->pool, 4, sizeof(const char **));
    /* Selects are random-access (the pgsql driver only knows the column count up
     * front in that mode); still read to the end, as every driver expects. */
    while ((rv = apr_dbd_get_row(db->driver, db->pool, res, &row, -1)) == 0) {
        const char **cols = apr_palloc(db->pool, sizeof(char *) * (out->ncols + 1));
        int c;
        for (c = 0; c < out->ncols; c++) {
            const char *v = apr_dbd_get_entry(db->driver, row, c);
            cols[c] = v ? apr_pstrdup(db->pool, v) : NULL;
        }
        cols[out->ncols] = NULL;
        APR_ARRAY_PUSH(out->rows, const char **) = cols;
    }
    return rv == -1 ? 0 : rv;
}

int gmcp_db_select_raw(gmcp_db *db, const char *sql, gmcp_rows *out)
{
    apr_dbd_results_t *res = NULL;
    int rv = apr_dbd_select(db->driver, db->pool, db->handle, &res, sql, 1);
    if (rv) return rv;
    return collect(db, res, out);
}

int gmcp_db_exec_raw(gmcp_db *db, const char *sql, int *nrows)
{
    int n = 0;
    int rv = apr_dbd_query(db->driver, db->handle, &n, sql);
    if (nrows) *nrows = n;
    return rv;
}

static int schema_version_once(gmcp_db *db, int *version, const char **err);

int gmcp_db_schema_version(gmcp_db *db, int *version, const char **err)
{
    /* apr_dbd_sqlite3 runs unprepared statements through the legacy sqlite3_prepare,
     * so the first one on a connection after a schema change (gmcpctl migrate while
     * the server runs) fails once with SQLITE_SCHEMA: try a second time. */
    return schema_version_once(db, version, err) && schema_version_once(db, version, err);
}

static int schema_version_once(gmcp_db *db, int *version, const char **err)
{
    gmcp_rows rs;
    int rv;
    *version = 0;
    /* A missing table (fresh or mistyped database) is version 0, not an error.
     * On PostgreSQL look first, so no failed statement is left behind. */
    if (db->pgsql) {
        rv = gmcp_db_select_raw(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", &rs);
        if (rv) { *err = gmcp_db_error(db, rv); return rv; }
        if (rs.rows->nelts != 1 || strcmp(GMCP_ROW(&rs, 0)[0], "t") != 0) return 0;
    }
    else {
        rv = gmcp_db_select_raw(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                    "AND name = 'schema_migrations'", &rs);
        if (rv) { *err = gmcp_db_error(db, rv); return rv; }
        if (rs.rows->nelts != 1 || strcmp(GMCP_ROW(&rs, 0)[0], "1") != 0) return 0;
    }
    rv = gmcp_db_select_raw(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &rs);
    if (rv) { *err = gmcp_db_error(db, rv); return rv; }
    if (rs.rows->nelts == 1 && GMCP_ROW(&rs, 0)[0]) *version = atoi(GMCP_ROW(&rs, 0)[0]);
    return 0;
}

int gmcp_db_ready(gmcp_db *db, const char **err, int *schema_behind)
{
    int version = 0;
    *schema_behind = 0;
    if (apr_hash_get(db->prepared, SCHEMA_OK_KEY, APR_HASH_KEY_STRING)) return 0;
    /* SQLite: wait for a writer in another process instead of failing at once with
     * "database is locked" (before the first statement that reads). */
    if (!db->pgsql) gmcp_db_exec_raw(db, "PRAGMA busy_timeout=5000", NULL);
    if (gmcp_db_schema_version(db, &version, err)) return -1;
    if (version < GMCP_SCHEMA_VERSION) {
        *schema_behind = 1;
        *err = apr_psprintf(db->pool, "database schema is at version %d, this build needs %d: "
                            "run 'gmcpctl migrate' against this database", version,
                            GMCP_SCHEMA_VERSION);
        return -1;
    }
    /* Once per connection: in WAL mode, synchronous=NORMAL is SQLite's recommended
     * setting — always consistent, fsync at checkpoints instead of every commit (an OS
     * crash or power loss may lose the last commits, never corrupt the file). */
    if (!db->pgsql) gmcp_db_exec_raw(db, "PRAGMA synchronous=NORMAL", NULL);
    apr_hash_set(db->prepared, SCHEMA_OK_KEY, APR_HASH_KEY_STRING, "1");
    return 0;
}

/* Find the statement for `label`, preparing it on this connection on first use. */
static apr_dbd_prepared_t *statement(gmcp_db *db, const char *label, int *rv)
{
    apr_dbd_prepared_t *st = apr_hash_get(db->prepared, label, APR_HASH_KEY_STRING);
    const char *sql;
    apr_pool_t *cp;
    if (st) return st;
    sql = gmcp_sql_lookup(label);
    if (!sql) { *rv = APR_EINVAL; return NULL; }
    /* The hash's pool is the connection's: the statement lives exactly as long. */
    cp = apr_hash_pool_get(db->prepared);
    *rv = apr_dbd_prepare(db->driver, cp, db->handle, sql, label, &st);
    if (*rv) return NULL;
    apr_hash_set(db->prepared, apr_pstrdup(cp, label), APR_HASH_KEY_STRING, st);
    return st;
}

int gmcp_db_exec(gmcp_db *db, const char *label, int *nrows, int nargs, const char **args)
{
    int rv = 0, n = 0;
    apr_dbd_prepared_t *st = statement(db, label, &rv);
    if (!st) return rv ? rv : APR_EINVAL;
    rv = apr_dbd_pquery(db->driver, db->pool, db->handle, &n, st, nargs, args);
    if (nrows) *nrows = n;
    return rv;
}

int gmcp_db_select(gmcp_db *db, const char *label, gmcp_rows *out, int nargs,
                   const char **args)
{
    apr_dbd_results_t *res = NULL;
    int rv = 0;
    apr_dbd_prepared_t *st = statement(db, label, &rv);
    if (!st) return rv ? rv : APR_EINVAL;
    rv = apr_dbd_pselect(db->driver, db->pool, db->handle, &res, st, 1, nargs, args);
    if (rv) return rv;
    return collect(db, res, out);
}

int gmcp_db_begin(gmcp_db *db, apr_dbd_transaction_t **t)
{
    *t = NULL;
    return apr_dbd_transaction_start(db->driver, db->pool, db->handle, t);
}

int gmcp_db_end(gmcp_db *db, apr_dbd_transaction_t *t, int rollback)
{
    if (!t) return APR_EINVAL;
    if (rollback)
        apr_dbd_transaction_mode_set(db->driver, t, APR_DBD_TRANSACTION_ROLLBACK);
    return apr_dbd_transaction_end(db->driver, db->pool, t);
}
