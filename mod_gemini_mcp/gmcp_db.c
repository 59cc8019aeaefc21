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
#define TXN_NONE        0
#define TXN_OK          1   /* started, nothing failed yet */
#define TXN_FAILED      2   /* a statement failed: the driver skips the rest until end */
#define TXN_NOT_STARTED 3   /* begin failed (already logged): end is quiet */

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
        "relation", "constraint", "column", "table", "index", "function", "type", "schema",
        "database", "role", "sequence", "trigger", "view", "statement", "cursor",
        "extension", "encoding", "near", "savepoint", "operator", "portal", "collation",
        "domain", "tablespace", "aggregate", "policy", "procedure", "rule", "channel", NULL
    };
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
            if (!close) { memcpy(out + o, e + i, n - i); o += n - i; break; }
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

const char *gmcp_db_error(gmcp_db *db, int rv)
{
    const char *e = apr_dbd_error(db->driver, db->handle, rv);
    return e ? clean_message(db->pool, e) : "unknown database error";
}

/* Is the handle's last error a unique or primary-key violation? */
static int is_conflict(gmcp_db *db, int rv)
{
    const char *e = apr_dbd_error(db->driver, db->handle, rv);
    if (!e) return 0;
    return strstr(e, "duplicate key value violates unique constraint") != NULL
        || strstr(e, "UNIQUE constraint failed") != NULL
        || strstr(e, "PRIMARY KEY must be unique") != NULL
        || strstr(e, " is not unique") != NULL || strstr(e, " are not unique") != NULL;
}

/* A raw statement named in a log line: its first line, shortened. */
static const char *sql_name(apr_pool_t *p, const char *sql)
{
    apr_size_t n = strcspn(sql, "\r\n");
    return n > 72 ? apr_pstrcat(p, apr_pstrndup(p, sql, 69), "...", NULL)
                  : apr_pstrndup(p, sql, n);
}

/* Log a statement that failed (`what` names it). Once a statement of a transaction
 * failed to run, the driver refuses the later ones without running them (until end):
 * that is no news (debug only). A failed prepare does not count as such a failure. */
static void failed(gmcp_db *db, gmcp_elog_level level, const char *tag, const char *fmt_what,
                   const char *what, int rv, int ran)
{
    if (ran && db->txn && db->txn_state == TXN_FAILED) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_DEBUG, 0, "GMCP0208", "%s %s not run: an "
                  "earlier statement of its transaction failed", fmt_what, what);
        return;
    }
    if (ran && db->txn && db->txn_state == TXN_OK) db->txn_state = TXN_FAILED;
    gmcp_elog(GMCP_ELOG_MARK, level, 0, tag, "%s %s failed (%s error %d): %s", fmt_what, what,
              apr_dbd_name(db->driver), rv, gmcp_db_error(db, rv));
}

static int collect(gmcp_db *db, const char *what, const char *name, apr_dbd_results_t *res,
                   gmcp_rows *out)
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
    if (rv == -1) return 0;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0204", "reading the rows of %s %s "
              "failed (%s error %d): %s", what, name, apr_dbd_name(db->driver), rv,
              gmcp_db_error(db, rv));
    return rv;
}

/* `level` is how a failure is logged (GMCP_ELOG_DEBUG: an expected one). */
static int select_raw(gmcp_db *db, const char *sql, gmcp_rows *out, gmcp_elog_level level)
{
    apr_dbd_results_t *res = NULL;
    int rv = apr_dbd_select(db->driver, db->pool, db->handle, &res, sql, 1);
    if (rv) {
        failed(db, level, "GMCP0207", "SQL", apr_psprintf(db->pool, "\"%s\"",
                                                          sql_name(db->pool, sql)), rv, 1);
        return rv;
    }
    return collect(db, "SQL", sql_name(db->pool, sql), res, out);
}

static int exec_raw(gmcp_db *db, const char *sql, int *nrows, gmcp_elog_level level)
{
    int n = 0;
    int rv = apr_dbd_query(db->driver, db->handle, &n, sql);
    if (nrows) *nrows = n;
    /* apr_dbd_sqlite3 answers SQLITE_ROW (100, "not an error") for a statement that
     * returns a row, like PRAGMA busy_timeout=N: it ran. */
    if (rv && !(rv == 100 && !db->pgsql))
        failed(db, level, "GMCP0207", "SQL", apr_psprintf(db->pool, "\"%s\"",
                                                          sql_name(db->pool, sql)), rv, 1);
    return rv;
}

int gmcp_db_select_raw(gmcp_db *db, const char *sql, gmcp_rows *out)
{
    return select_raw(db, sql, out, GMCP_ELOG_ERR);
}

int gmcp_db_exec_raw(gmcp_db *db, const char *sql, int *nrows)
{
    return exec_raw(db, sql, nrows, GMCP_ELOG_ERR);
}

static int schema_version_once(gmcp_db *db, int *version, const char **err,
                               gmcp_elog_level level);

int gmcp_db_schema_version(gmcp_db *db, int *version, const char **err)
{
    /* apr_dbd_sqlite3 runs unprepared statements through the legacy sqlite3_prepare,
     * so the first one on a connection after a schema change (gmcpctl migrate while
     * the server runs) fails once with SQLITE_SCHEMA: try a second time (only a
     * second failure is news). */
    return schema_version_once(db, version, err, GMCP_ELOG_DEBUG)
           && schema_version_once(db, version, err, GMCP_ELOG_ERR);
}

static int schema_version_once(gmcp_db *db, int *version, const char **err,
                               gmcp_elog_level level)
{
    gmcp_rows rs;
    int rv;
    *version = 0;
    /* A missing table (fresh or mistyped database) is version 0, not an error.
     * On PostgreSQL look first, so no failed statement is left behind. */
    if (db->pgsql) {
        rv = select_raw(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", &rs, level);
        if (rv) { *err = gmcp_db_error(db, rv); return rv; }
        if (rs.rows->nelts != 1 || strcmp(GMCP_ROW(&rs, 0)[0], "t") != 0) return 0;
    }
    else {
        rv = select_raw(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'schema_migrations'", &rs, level);
        if (rv) { *err = gmcp_db_error(db, rv); return rv; }
        if (rs.rows->nelts != 1 || strcmp(GMCP_ROW(&rs, 0)[0], "1") != 0) return 0;
    }
    rv = select_raw(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &rs, level);
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
    if (!db->pgsql) exec_raw(db, "PRAGMA busy_timeout=5000", NULL, GMCP_ELOG_WARN);
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
    if (!db->pgsql) exec_raw(db, "PRAGMA synchronous=NORMAL", NULL, GMCP_ELOG_WARN);
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
    if (!sql) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, APR_EINVAL, "GMCP0202",
                  "no SQL for statement label %s", label);
        *rv = APR_EINVAL;
        return NULL;
    }
    /* The hash's pool is the connection's: the statement lives exactly as long. */
    cp = apr_hash_pool_get(db->prepared);
    *rv = apr_dbd_prepare(db->driver, cp, db->handle, sql, label, &st);
    if (*rv) {
        failed(db, GMCP_ELOG_ERR, "GMCP0203", "preparing statement", label, *rv, 0);
        return NULL;
    }
    apr_hash_set(db->prepared, apr_pstrdup(cp, label), APR_HASH_KEY_STRING, st);
    return st;
}

int gmcp_db_prepare(gmcp_db *db, const char *label)
{
    int rv = 0;
    if (statement(db, label, &rv)) return 0;
    return rv ? rv : APR_EINVAL;
}

static int exec_labelled(gmcp_db *db, const char *label, int *nrows, int *conflict,
                         int nargs, const char **args)
{
    int rv = 0, n = 0;
    apr_dbd_prepared_t *st = statement(db, label, &rv);
    if (conflict) *conflict = 0;
    if (!st) return rv ? rv : APR_EINVAL;
    rv = apr_dbd_pquery(db->driver, db->pool, db->handle, &n, st, nargs, args);
    if (nrows) *nrows = n;
    if (rv && conflict && !db->txn && is_conflict(db, rv)) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_DEBUG, 0, "GMCP0209", "statement %s: the row "
                  "exists already (expected)", label);
        *conflict = 1;
        return 0;
    }
    if (rv) failed(db, GMCP_ELOG_ERR, "GMCP0201", "statement", label, rv, 1);
    return rv;
}

int gmcp_db_exec(gmcp_db *db, const char *label, int *nrows, int nargs, const char **args)
{
    return exec_labelled(db, label, nrows, NULL, nargs, args);
}

int gmcp_db_exec_unique(gmcp_db *db, const char *label, int *nrows, int *conflict, int nargs,
                        const char **args)
{
    return exec_labelled(db, label, nrows, conflict, nargs, args);
}

int gmcp_db_select(gmcp_db *db, const char *label, gmcp_rows *out, int nargs,
                   const char **args)
{
    apr_dbd_results_t *res = NULL;
    int rv = 0;
    apr_dbd_prepared_t *st = statement(db, label, &rv);
    if (!st) return rv ? rv : APR_EINVAL;
    rv = apr_dbd_pselect(db->driver, db->pool, db->handle, &res, st, 1, nargs, args);
    if (rv) {
        failed(db, GMCP_ELOG_ERR, "GMCP0201", "statement", label, rv, 1);
        return rv;
    }
    return collect(db, "statement", label, res, out);
}

int gmcp_db_begin(gmcp_db *db, apr_dbd_transaction_t **t)
{
    int rv;
    *t = NULL;
    rv = apr_dbd_transaction_start(db->driver, db->pool, db->handle, t);
    db->txn = *t;
    db->txn_state = rv ? TXN_NOT_STARTED : TXN_OK;
    if (rv)
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0205", "cannot start a transaction "
                  "(%s error %d): %s", apr_dbd_name(db->driver), rv, gmcp_db_error(db, rv));
    return rv;
}

int gmcp_db_end(gmcp_db *db, apr_dbd_transaction_t *t, int rollback)
{
    int rv, state = db->txn == t ? db->txn_state : TXN_OK;
    db->txn = NULL;
    db->txn_state = TXN_NONE;
    if (!t) return APR_EINVAL;      /* begin failed, and said so */
    if (rollback)
        apr_dbd_transaction_mode_set(db->driver, t, APR_DBD_TRANSACTION_ROLLBACK);
    rv = apr_dbd_transaction_end(db->driver, db->pool, t);
    if (rv && state != TXN_NOT_STARTED)
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0206", "cannot %s a transaction "
                  "(%s error %d): %s", rollback || state == TXN_FAILED ? "roll back" : "commit",
                  apr_dbd_name(db->driver), rv, gmcp_db_error(db, rv));
    return rv;
}
