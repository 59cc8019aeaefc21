/* gmcp_db.c — labelled statements over apr_dbd, shared by the module and gmcpctl.
 *
 * Every failed statement is logged here, once (gmcp_errlog.h, tags GMCP02xx), with its
 * label and the driver's message cleaned of anything that could echo a parameter;
 * callers only decide what to answer. */
#include "gmcp_db.h"
#include "gmcp_errlog.h"
#include "gmcp_sql.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <apr_strings.h>

/* Key in the handle's prepared hash that records a passed schema check. */
#define SCHEMA_OK_KEY "gmcp__schema_ok"

/* db->txn_state */
#define TXN_NONE 0
#define TXN_OK 1     /* started, nothing failed yet */
#define TXN_FAILED 2 /* a statement failed: the driver skips the rest until end */

void gmcp_db_init(gmcp_db *db, const apr_dbd_driver_t *driver, apr_dbd_t *handle,
                  apr_hash_t *prepared, apr_pool_t *scratch)
{
    db->driver = driver;
    db->handle = handle;
    db->prepared = prepared;
    db->pool = scratch;
    db->pgsql = !strcmp(apr_dbd_name(driver), "pgsql");
    db->txn = NULL;
    db->txn_state = TXN_NONE;
}

/* Words after which PostgreSQL quotes an identifier ("relation "x"", "constraint "y""),
 * never a value. Any other quoted text in a message may be a parameter's value
 * (invalid input syntax for type bigint: "...", value "..." is out of range). */
static int names_identifier(const char *w, apr_size_t n)
{
    static const char *const words[] = {
        "relation",  "constraint", "column",    "table",     "index",    "function",
        "type",      "schema",     "database",  "role",      "sequence", "trigger",
        "view",      "statement",  "cursor",    "extension", "encoding", "near",
        "savepoint", "operator",   "portal",    "collation", "domain",   "tablespace",
        "aggregate", "policy",     "procedure", "rule",      "channel",  NULL};
    int i;
    for (i = 0; words[i]; i++)
        if (strlen(words[i]) == n && !strncasecmp(words[i], w, n)) return 1;
    return 0;
}

/* The driver's message fit for a log line: its first line only (PostgreSQL appends
 * DETAIL, whose "Key (id)=(...)" or "Failing row contains (...)" echoes values, and
 * HINT/CONTEXT/QUERY lines), quoted values replaced by "...", raw bytes cut. */
static const char *clean_message(apr_pool_t *p, const char *e)
{
    apr_size_t n = strcspn(e, "\r\n"), i = 0, o = 0;
    char *out = apr_palloc(p, n * 2 + 8);
    const char *x;
    while (i < n) {
        if (e[i] == '"') {
            const char *close = memchr(e + i + 1, '"', n - i - 1);
            apr_size_t w = o, wl;
            if (!close) {
                memcpy(out + o, e + i, n - i);
                o += n - i;
                break;
            }
            /* the word before the quote (after one blank) */
            if (w && out[w - 1] == ' ') w--;
            wl = w;
            while (w && isalpha((unsigned char)out[w - 1])) w--;
            if (wl > w && names_identifier(out + w, wl - w)) {
                apr_size_t len = (apr_size_t)(close - (e + i)) + 1;
                memcpy(out + o, e + i, len);
                o += len;
            }
            else {
                memcpy(out + o, "\"...\"", 5);
                o += 5;
            }
            i = (apr_size_t)(close - e) + 1;
            continue;
        }
        out[o++] = e[i++];
    }
    out[o] = '\0';
    /* "invalid byte sequence for encoding "UTF8": 0xc3 0x28": the bytes are the data's */
    if ((x = strstr(out, ": 0x")) != NULL) out[x - out] = '\0';
    while (o && (out[o - 1] == ' ' || out[o - 1] == '\t')) out[--o] = '\0';
    return *out ? out : "unknown database error";
}

const char *gmcp_db_error(gmcp_db *db, int driver_code)
{
    const char *e = apr_dbd_error(db->driver, db->handle, driver_code);
    return e ? clean_message(db->pool, e) : "unknown database error";
}

/* Is the handle's last error a unique or primary-key violation? */
static int is_conflict(gmcp_db *db, int drc)
{
    const char *e = apr_dbd_error(db->driver, db->handle, drc);
    if (!e) return 0;
    return strstr(e, "duplicate key value violates unique constraint") != NULL
        || strstr(e, "UNIQUE constraint failed") != NULL
        || strstr(e, "PRIMARY KEY must be unique") != NULL || strstr(e, " is not unique") != NULL
        || strstr(e, " are not unique") != NULL;
}

/* A raw statement named in a log line: its first line, shortened. */
static const char *sql_name(apr_pool_t *p, const char *sql)
{
    apr_size_t n = strcspn(sql, "\r\n");
    return n > 72 ? apr_pstrcat(p, apr_pstrndup(p, sql, 69), "...", NULL) : apr_pstrndup(p, sql, n);
}

/* Log a statement that failed with the driver's code `drc` (`what` names it). Once a
 * statement of a transaction failed to run, the driver refuses the later ones without
 * running them (until end): that is no news (debug only). A failed prepare does not
 * count as such a failure. */
static void failed(gmcp_db *db, gmcp_elog_level level, const char *tag, const char *fmt_what,
                   const char *what, int drc, int ran)
{
    if (ran && db->txn && db->txn_state == TXN_FAILED) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_DEBUG, 0, "GMCP0208",
                  "%s %s not run: an "
                  "earlier statement of its transaction failed",
                  fmt_what, what);
        return;
    }
    if (ran && db->txn && db->txn_state == TXN_OK) db->txn_state = TXN_FAILED;
    gmcp_elog(GMCP_ELOG_MARK, level, 0, tag, "%s %s failed (%s error %d): %s", fmt_what, what,
              apr_dbd_name(db->driver), drc, gmcp_db_error(db, drc));
}

/* Every row of `res` into *out. APR_SUCCESS, or GMCP_EDB (logged). */
static apr_status_t collect(gmcp_db *db, const char *what, const char *name, apr_dbd_results_t *res,
                            gmcp_rows *out)
{
    apr_dbd_row_t *row = NULL;
    int drc;
    out->ncols = apr_dbd_num_cols(db->driver, res);
    out->rows = apr_array_make(db->pool, 4, sizeof(const char **));
    /* Selects are random-access (the pgsql driver only knows the column count up
     * front in that mode); still read to the end, as every driver expects. */
    while ((drc = apr_dbd_get_row(db->driver, db->pool, res, &row, -1)) == 0) {
        const char **cols = apr_palloc(db->pool, sizeof(char *) * (out->ncols + 1));
        int c;
        for (c = 0; c < out->ncols; c++) {
            const char *v = apr_dbd_get_entry(db->driver, row, c);
            cols[c] = v ? apr_pstrdup(db->pool, v) : NULL;
        }
        cols[out->ncols] = NULL;
        APR_ARRAY_PUSH(out->rows, const char **) = cols;
    }
    if (drc == -1) return APR_SUCCESS;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0204",
              "reading the rows of %s %s "
              "failed (%s error %d): %s",
              what, name, apr_dbd_name(db->driver), drc, gmcp_db_error(db, drc));
    return GMCP_EDB;
}

/* `level` is how a failure is logged (GMCP_ELOG_DEBUG: an expected one). */
static apr_status_t select_raw(gmcp_db *db, const char *sql, gmcp_rows *out, gmcp_elog_level level)
{
    apr_dbd_results_t *res = NULL;
    int drc = apr_dbd_select(db->driver, db->pool, db->handle, &res, sql, 1);
    if (drc) {
        failed(db, level, "GMCP0207", "SQL",
               apr_psprintf(db->pool, "\"%s\"", sql_name(db->pool, sql)), drc, 1);
        return GMCP_EDB;
    }
    return collect(db, "SQL", sql_name(db->pool, sql), res, out);
}

static apr_status_t exec_raw(gmcp_db *db, const char *sql, int *nrows, gmcp_elog_level level)
{
    int n = 0;
    int drc = apr_dbd_query(db->driver, db->handle, &n, sql);
    if (nrows) *nrows = n;
    /* apr_dbd_sqlite3 answers SQLITE_ROW (100, "not an error") for a statement that
     * returns a row, like PRAGMA busy_timeout=N: it ran. */
    if (!drc || (drc == 100 && !db->pgsql)) return APR_SUCCESS;
    failed(db, level, "GMCP0207", "SQL", apr_psprintf(db->pool, "\"%s\"", sql_name(db->pool, sql)),
           drc, 1);
    return GMCP_EDB;
}

apr_status_t gmcp_db_select_raw(gmcp_db *db, const char *sql, gmcp_rows *out)
{
    return select_raw(db, sql, out, GMCP_ELOG_ERR);
}

apr_status_t gmcp_db_exec_raw(gmcp_db *db, const char *sql, int *nrows)
{
    return exec_raw(db, sql, nrows, GMCP_ELOG_ERR);
}

static apr_status_t schema_version_once(gmcp_db *db, int *version, const char **why,
                                        gmcp_elog_level level);

apr_status_t gmcp_db_schema_version(gmcp_db *db, int *version, const char **why)
{
    /* apr_dbd_sqlite3 runs unprepared statements through the legacy sqlite3_prepare,
     * so the first one on a connection after a schema change (gmcpctl migrate while
     * the server runs) fails once with SQLITE_SCHEMA: try a second time (only a
     * second failure is news). */
    if (schema_version_once(db, version, why, GMCP_ELOG_DEBUG) == APR_SUCCESS) return APR_SUCCESS;
    return schema_version_once(db, version, why, GMCP_ELOG_ERR);
}

static apr_status_t schema_version_once(gmcp_db *db, int *version, const char **why,
                                        gmcp_elog_level level)
{
    gmcp_rows rs;
    apr_status_t rv;
    *version = 0;
    /* A missing table (fresh or mistyped database) is version 0, not an error.
     * On PostgreSQL look first, so no failed statement is left behind. */
    if (db->pgsql) {
        rv = select_raw(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", &rs, level);
        if (rv) {
            *why = gmcp_db_error(db, -1);
            return rv;
        }
        if (rs.rows->nelts != 1 || strcmp(GMCP_ROW(&rs, 0)[0], "t") != 0) return APR_SUCCESS;
    }
    else {
        rv = select_raw(db,
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                        "AND name = 'schema_migrations'",
                        &rs, level);
        if (rv) {
            *why = gmcp_db_error(db, -1);
            return rv;
        }
        if (rs.rows->nelts != 1 || strcmp(GMCP_ROW(&rs, 0)[0], "1") != 0) return APR_SUCCESS;
    }
    rv = select_raw(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &rs, level);
    if (rv) {
        *why = gmcp_db_error(db, -1);
        return rv;
    }
    if (rs.rows->nelts == 1 && GMCP_ROW(&rs, 0)[0]) *version = atoi(GMCP_ROW(&rs, 0)[0]);
    return APR_SUCCESS;
}

apr_status_t gmcp_db_ready(gmcp_db *db, const char **why, int *schema_behind)
{
    int version = 0;
    apr_status_t rv;
    *schema_behind = 0;
    if (apr_hash_get(db->prepared, SCHEMA_OK_KEY, APR_HASH_KEY_STRING)) return APR_SUCCESS;
    /* SQLite: wait for a writer in another process instead of failing at once with
     * "database is locked" (before the first statement that reads). */
    if (!db->pgsql) exec_raw(db, "PRAGMA busy_timeout=5000", NULL, GMCP_ELOG_WARN);
    if ((rv = gmcp_db_schema_version(db, &version, why)) != APR_SUCCESS) return rv;
    if (version < GMCP_SCHEMA_VERSION) {
        *schema_behind = 1;
        *why = apr_psprintf(db->pool,
                            "database schema is at version %d, this build needs %d: "
                            "run 'gmcpctl migrate' against this database",
                            version, GMCP_SCHEMA_VERSION);
        return GMCP_ESCHEMA;
    }
    /* Once per connection: in WAL mode, synchronous=NORMAL is SQLite's recommended
     * setting — always consistent, fsync at checkpoints instead of every commit (an OS
     * crash or power loss may lose the last commits, never corrupt the file). */
    if (!db->pgsql) exec_raw(db, "PRAGMA synchronous=NORMAL", NULL, GMCP_ELOG_WARN);
    apr_hash_set(db->prepared, SCHEMA_OK_KEY, APR_HASH_KEY_STRING, "1");
    return APR_SUCCESS;
}

/* The statement for `label` into *ps, prepared on this connection on first use.
 * APR_SUCCESS, or GMCP_EDB (logged): no SQL for the label, or the driver refused it. */
static apr_status_t statement(gmcp_db *db, const char *label, apr_dbd_prepared_t **ps)
{
    const char *sql;
    apr_pool_t *cp;
    int drc;
    *ps = apr_hash_get(db->prepared, label, APR_HASH_KEY_STRING);
    if (*ps) return APR_SUCCESS;
    sql = gmcp_sql_lookup(label);
    if (!sql) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, APR_EINVAL, "GMCP0202",
                  "no SQL for statement label %s", label);
        return GMCP_EDB;
    }
    /* The hash's pool is the connection's: the statement lives exactly as long. */
    cp = apr_hash_pool_get(db->prepared);
    drc = apr_dbd_prepare(db->driver, cp, db->handle, sql, label, ps);
    if (drc) {
        failed(db, GMCP_ELOG_ERR, "GMCP0203", "preparing statement", label, drc, 0);
        *ps = NULL;
        return GMCP_EDB;
    }
    apr_hash_set(db->prepared, apr_pstrdup(cp, label), APR_HASH_KEY_STRING, *ps);
    return APR_SUCCESS;
}

apr_status_t gmcp_db_prepare(gmcp_db *db, const char *label)
{
    apr_dbd_prepared_t *ps;
    return statement(db, label, &ps);
}

/* `unique`: a unique/primary-key conflict outside a transaction is APR_EEXIST, quietly. */
static apr_status_t exec_labelled(gmcp_db *db, const char *label, int *nrows, int unique, int nargs,
                                  const char **args)
{
    apr_dbd_prepared_t *ps;
    int drc, n = 0;
    apr_status_t rv = statement(db, label, &ps);
    if (rv != APR_SUCCESS) return rv;
    drc = apr_dbd_pquery(db->driver, db->pool, db->handle, &n, ps, nargs, args);
    if (nrows) *nrows = n;
    if (!drc) return APR_SUCCESS;
    if (unique && !db->txn && is_conflict(db, drc)) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_DEBUG, 0, "GMCP0209",
                  "statement %s: the row "
                  "exists already (expected)",
                  label);
        return APR_EEXIST;
    }
    failed(db, GMCP_ELOG_ERR, "GMCP0201", "statement", label, drc, 1);
    return GMCP_EDB;
}

apr_status_t gmcp_db_exec(gmcp_db *db, const char *label, int *nrows, int nargs, const char **args)
{
    return exec_labelled(db, label, nrows, 0, nargs, args);
}

apr_status_t gmcp_db_exec_unique(gmcp_db *db, const char *label, int *nrows, int nargs,
                                 const char **args)
{
    return exec_labelled(db, label, nrows, 1, nargs, args);
}

apr_status_t gmcp_db_select(gmcp_db *db, const char *label, gmcp_rows *out, int nargs,
                            const char **args)
{
    apr_dbd_results_t *res = NULL;
    apr_dbd_prepared_t *ps;
    int drc;
    apr_status_t rv = statement(db, label, &ps);
    if (rv != APR_SUCCESS) return rv;
    drc = apr_dbd_pselect(db->driver, db->pool, db->handle, &res, ps, 1, nargs, args);
    if (drc) {
        failed(db, GMCP_ELOG_ERR, "GMCP0201", "statement", label, drc, 1);
        return GMCP_EDB;
    }
    return collect(db, "statement", label, res, out);
}

/* A transaction the driver holds must not outlive a failed begin or end: the pooled
 * connection goes back to mod_dbd and serves the next request. apr_dbd_sqlite3 records
 * a transaction even when its BEGIN failed (and keeps it on the handle, allocated from
 * this request's pool, checked by every later statement), so a failed begin ends it at
 * once; after a failed end, this quiet ROLLBACK makes sure the engine is out of it too
 * (SQLite keeps a transaction whose COMMIT failed on a deferred constraint or a busy
 * lock; ROLLBACK outside one is harmless). */
static void leave_transaction(gmcp_db *db)
{
    int n = 0;
    (void)apr_dbd_query(db->driver, db->handle, &n, "ROLLBACK");
}

apr_status_t gmcp_db_begin(gmcp_db *db, apr_dbd_transaction_t **t)
{
    int drc;
    *t = NULL;
    drc = apr_dbd_transaction_start(db->driver, db->pool, db->handle, t);
    if (!drc) {
        db->txn = *t;
        db->txn_state = TXN_OK;
        return APR_SUCCESS;
    }
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0205",
              "cannot start a transaction "
              "(%s error %d): %s",
              apr_dbd_name(db->driver), drc, gmcp_db_error(db, drc));
    if (*t) { /* its ROLLBACK also ends an engine transaction the BEGIN ran into */
        apr_dbd_transaction_mode_set(db->driver, *t, APR_DBD_TRANSACTION_ROLLBACK);
        (void)apr_dbd_transaction_end(db->driver, db->pool, *t);
        *t = NULL;
    }
    db->txn = NULL;
    db->txn_state = TXN_NONE;
    return GMCP_EDB;
}

apr_status_t gmcp_db_end(gmcp_db *db, apr_dbd_transaction_t *t, int rollback)
{
    int drc, state = db->txn == t ? db->txn_state : TXN_OK;
    db->txn = NULL;
    db->txn_state = TXN_NONE;
    if (!t) return GMCP_EDB; /* begin failed, and said so */
    if (rollback) apr_dbd_transaction_mode_set(db->driver, t, APR_DBD_TRANSACTION_ROLLBACK);
    drc = apr_dbd_transaction_end(db->driver, db->pool, t);
    if (!drc) return APR_SUCCESS;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0206",
              "cannot %s a transaction "
              "(%s error %d): %s",
              rollback || state == TXN_FAILED ? "roll back" : "commit", apr_dbd_name(db->driver),
              drc, gmcp_db_error(db, drc));
    leave_transaction(db);
    return GMCP_EDB;
}
