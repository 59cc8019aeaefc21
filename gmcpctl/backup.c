/* backup.c — gmcpctl backup [verify], restore, copy: a backend-neutral logical backup.
 *
 * Reading: one snapshot. SQLite: a deferred read transaction (BEGIN) on gmcpctl's own
 * connection (the native sqlite3*), which in WAL mode never blocks the server's writers;
 * never apr_dbd's transaction_start (BEGIN IMMEDIATE). PostgreSQL: BEGIN ISOLATION LEVEL
 * REPEATABLE READ READ ONLY and COPY (SELECT ... ORDER BY pk) TO STDOUT per table on the
 * native PGconn* (constant memory).
 * Writing (restore): one transaction on the target (native BEGIN IMMEDIATE / BEGIN):
 * migrations up to the archive's version, the rows (prepared INSERTs / COPY FROM STDIN),
 * sequences, then every table re-read and re-hashed against the manifest; COMMIT only
 * when all of it matched. The format is in gmcp_archive.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <apr_dbd.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <jansson.h>
#include <sqlite3.h>
#include <libpq-fe.h>

#include "gmcp_archive.h"
#include "gmcp_migrate.h"
#include "gmcp_util.h"
#include "gmcp_wire.h"
#include "gmcpctl.h"

#ifndef GMCP_VERSION
#define GMCP_VERSION "0.1.0"
#endif

#define SERIES_PREFIX "gmcp-backup-"
#define BACKUP_NICE 19 /* the lowest: a background job yields to every request */
#define SERIES_SUFFIX ".gmcpbak"
#define PEPPER_LABEL "gmcp-backup key pepper fingerprint"

/* ---- what the database holds ----------------------------------------------------------- */
typedef struct {
    const char *name;
    int ncols;
    const char **cols;   /* sorted by name (bytes) */
    int *types;          /* GMCP_COL_* */
    const char *order;   /* ORDER BY clause body */
    const char *collist; /* "c1","c2",... */
} table_info;

typedef struct {
    ctl *c;
    int pg;
    sqlite3 *lite;
    PGconn *pq;
    char errbuf[1024];
} dbx;

static const char *qid(apr_pool_t *p, const char *id)
{
    /* "identifier" with "" doubled */
    const char *s;
    char *out = apr_palloc(p, strlen(id) * 2 + 3), *o = out;
    *o++ = '"';
    for (s = id; *s; s++) {
        if (*s == '"') *o++ = '"';
        *o++ = *s;
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static const char *qlit(apr_pool_t *p, const char *v)
{
    const char *s;
    char *out = apr_palloc(p, strlen(v) * 2 + 3), *o = out;
    *o++ = '\'';
    for (s = v; *s; s++) {
        if (*s == '\'') *o++ = '\'';
        *o++ = *s;
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

static const char *x_err(dbx *x)
{
    const char *m = x->pg ? PQerrorMessage(x->pq) : sqlite3_errmsg(x->lite);
    char *nl;
    snprintf(x->errbuf, sizeof(x->errbuf), "%s", m && *m ? m : "unknown error");
    if ((nl = strchr(x->errbuf, '\n'))) *nl = '\0';
    return x->errbuf;
}

static int x_init(ctl *c, dbx *x)
{
    memset(x, 0, sizeof(*x));
    x->c = c;
    x->pg = c->db.pgsql;
    if (x->pg)
        x->pq = apr_dbd_native_handle(c->db.driver, c->db.handle);
    else
        x->lite = apr_dbd_native_handle(c->db.driver, c->db.handle);
    return x->pg ? !x->pq : !x->lite;
}

static int x_exec(dbx *x, const char *sql)
{
    if (x->pg) {
        PGresult *r = PQexec(x->pq, sql);
        int st = PQresultStatus(r), ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        PQclear(r);
        return ok ? 0 : -1;
    }
    return sqlite3_exec(x->lite, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* A small query's rows as strings (NULL for SQL NULL): array of const char **. */
static int x_query(dbx *x, apr_pool_t *p, const char *sql, int *ncols, apr_array_header_t **rows)
{
    apr_array_header_t *out = apr_array_make(p, 16, sizeof(const char **));
    int i, j;
    if (x->pg) {
        PGresult *r = PQexec(x->pq, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(r);
            return -1;
        }
        *ncols = PQnfields(r);
        for (i = 0; i < PQntuples(r); i++) {
            const char **row = apr_palloc(p, sizeof(char *) * (size_t)(*ncols + 1));
            for (j = 0; j < *ncols; j++)
                row[j] = PQgetisnull(r, i, j) ? NULL : apr_pstrdup(p, PQgetvalue(r, i, j));
            APR_ARRAY_PUSH(out, const char **) = row;
        }
        PQclear(r);
    }
    else {
        sqlite3_stmt *st;
        int rc;
        if (sqlite3_prepare_v2(x->lite, sql, -1, &st, NULL) != SQLITE_OK) return -1;
        *ncols = sqlite3_column_count(st);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char **row = apr_palloc(p, sizeof(char *) * (size_t)(*ncols + 1));
            for (j = 0; j < *ncols; j++)
                row[j] = sqlite3_column_type(st, j) == SQLITE_NULL
                    ? NULL
                    : apr_pstrdup(p, (const char *)sqlite3_column_text(st, j));
            APR_ARRAY_PUSH(out, const char **) = row;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return -1;
    }
    *rows = out;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct {
    const char *name;
    int type;
} colent;
static int cmp_col(const void *a, const void *b)
{
    return strcmp(((const colent *)a)->name, ((const colent *)b)->name);
}

/* Every table's name (schema_migrations' too, but not SQLite's own), sorted by bytes: an
 * array of rows whose [0] is the name. */
static int table_names(dbx *x, apr_pool_t *p, apr_array_header_t **names, const char **err)
{
    const char *sql = x->pg
        ? "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
          "WHERE c.relkind IN ('r','p') AND n.nspname = current_schema()"
        : "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
          "ESCAPE '\\'";
    const char **flat;
    int nc, i;
    if (x_query(x, p, sql, &nc, names)) {
        *err = apr_psprintf(p, "cannot list the tables: %s", x_err(x));
        return -1;
    }
    flat = apr_palloc(p, sizeof(char *) * (size_t)((*names)->nelts + 1));
    for (i = 0; i < (*names)->nelts; i++) flat[i] = APR_ARRAY_IDX(*names, i, const char **)[0];
    qsort(flat, (size_t)(*names)->nelts, sizeof(char *), cmp_str);
    for (i = 0; i < (*names)->nelts; i++) APR_ARRAY_IDX(*names, i, const char **)[0] = flat[i];
    return 0;
}

/* A table's columns as rows (name, declared type), in the table's order, and its primary
 * key's as rows whose [0] is the name, in the key's order: PostgreSQL. */
static int pg_columns(dbx *x, apr_pool_t *p, const char *name, apr_array_header_t **cols,
                      apr_array_header_t **pk, const char **err)
{
    int nc, pnc;
    if (x_query(x, p,
                apr_psprintf(p,
                             "SELECT column_name, data_type FROM "
                             "information_schema.columns WHERE table_schema = current_schema() AND "
                             "table_name = %s ORDER BY ordinal_position",
                             qlit(p, name)),
                &nc, cols)
        || x_query(
            x, p,
            apr_psprintf(p,
                         "SELECT a.attname, format_type(a.atttypid, "
                         "NULL) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                         "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND "
                         "i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
                         qlit(p, qid(p, name))),
            &pnc, pk)) {
        *err = apr_psprintf(p, "cannot read the columns of %s: %s", name, x_err(x));
        return -1;
    }
    return 0;
}

/* The same from SQLite's PRAGMA table_info. */
static int lite_columns(dbx *x, apr_pool_t *p, const char *name, apr_array_header_t **cols,
                        apr_array_header_t **pk, const char **err)
{
    apr_array_header_t *info;
    int nc, j, k;
    if (x_query(x, p, apr_psprintf(p, "PRAGMA table_info(%s)", qid(p, name)), &nc, &info)) {
        *err = apr_psprintf(p, "cannot read the columns of %s: %s", name, x_err(x));
        return -1;
    }
    *cols = apr_array_make(p, info->nelts, sizeof(const char **));
    *pk = apr_array_make(p, 4, sizeof(const char **));
    /* cid, name, type, notnull, dflt_value, pk (1-based position in the key) */
    for (j = 1; j <= info->nelts; j++) {
        for (k = 0; k < info->nelts; k++) {
            const char **r = APR_ARRAY_IDX(info, k, const char **);
            if (r[5] && atoi(r[5]) == j) APR_ARRAY_PUSH(*pk, const char **) = r + 1;
        }
    }
    for (j = 0; j < info->nelts; j++)
        APR_ARRAY_PUSH(*cols, const char **) = APR_ARRAY_IDX(info, j, const char **) + 1;
    return 0;
}

/* t's columns sorted by name (bytes) with their canonical types, and its column list. */
static void set_columns(apr_pool_t *p, table_info *t, apr_array_header_t *cols)
{
    colent *ce = apr_palloc(p, sizeof(colent) * (size_t)(cols->nelts + 1));
    const char *collist = NULL;
    int j;
    t->ncols = cols->nelts;
    for (j = 0; j < cols->nelts; j++) {
        ce[j].name = APR_ARRAY_IDX(cols, j, const char **)[0];
        ce[j].type = gmcp_coltype_from_decl(APR_ARRAY_IDX(cols, j, const char **)[1]);
    }
    qsort(ce, (size_t)cols->nelts, sizeof(colent), cmp_col);
    t->cols = apr_palloc(p, sizeof(char *) * (size_t)(t->ncols + 1));
    t->types = apr_palloc(p, sizeof(int) * (size_t)(t->ncols + 1));
    for (j = 0; j < t->ncols; j++) {
        t->cols[j] = ce[j].name;
        t->types[j] = ce[j].type;
        collist =
            collist ? apr_pstrcat(p, collist, ", ", qid(p, ce[j].name), NULL) : qid(p, ce[j].name);
    }
    t->collist = collist ? collist : "*";
}

/* Rows by primary key (by every column, NULLs first, without one), in byte order on both
 * engines (PostgreSQL: COLLATE "C"): the ORDER BY clause body. */
static const char *order_by(dbx *x, apr_pool_t *p, const table_info *t, apr_array_header_t *pk)
{
    const char *order = NULL;
    int nk = pk->nelts, usepk = nk > 0, j;
    if (!usepk) nk = t->ncols;
    for (j = 0; j < nk; j++) {
        const char *cn = usepk ? APR_ARRAY_IDX(pk, j, const char **)[0] : t->cols[j];
        int k, ty = GMCP_COL_TEXT;
        const char *term;
        for (k = 0; k < t->ncols; k++)
            if (!strcmp(t->cols[k], cn)) ty = t->types[k];
        term = qid(p, cn);
        if (x->pg && ty == GMCP_COL_TEXT) term = apr_pstrcat(p, term, " COLLATE \"C\"", NULL);
        if (!usepk) term = apr_pstrcat(p, term, " NULLS FIRST", NULL);
        order = order ? apr_pstrcat(p, order, ", ", term, NULL) : term;
    }
    return order ? order : "1";
}

/* Every table (but schema_migrations and SQLite's own), by name, with its columns and
 * primary key. */
static int list_tables(dbx *x, apr_pool_t *p, apr_array_header_t **out, const char **err)
{
    apr_array_header_t *names, *res = apr_array_make(p, 16, sizeof(table_info));
    int i;
    if (table_names(x, p, &names, err)) return -1;
    for (i = 0; i < names->nelts; i++) {
        const char *name = APR_ARRAY_IDX(names, i, const char **)[0];
        apr_array_header_t *cols, *pk;
        table_info *t;
        if (!strcmp(name, "schema_migrations")) continue;
        t = apr_array_push(res);
        t->name = name;
        if (x->pg ? pg_columns(x, p, name, &cols, &pk, err)
                  : lite_columns(x, p, name, &cols, &pk, err))
            return -1;
        set_columns(p, t, cols);
        t->order = order_by(x, p, t, pk);
    }
    *out = res;
    return 0;
}

static json_t *columns_json(const table_info *t)
{
    json_t *a = json_array();
    int j;
    for (j = 0; j < t->ncols; j++)
        json_array_append_new(
            a, json_pack("{s:s, s:s}", "name", t->cols[j], "type", gmcp_coltype_name(t->types[j])));
    return a;
}

/* PostgreSQL COPY text format: one row, fields split by tab, \N NULL, backslash escapes. */
static void copy_row_to_canon(const table_info *t, char *line, size_t len, gmcp_abuf *b)
{
    size_t i = 0;
    int col;
    gmcp_canon_begin(b);
    if (len && line[len - 1] == '\n') len--;
    for (col = 0; col < t->ncols; col++) {
        size_t fs = i, end, r, o;
        int isnull;
        while (i < len && line[i] != '\t') i++;
        end = i;
        isnull = (end - fs == 2 && line[fs] == '\\' && line[fs + 1] == 'N');
        for (r = o = fs; r < end; r++) {
            char ch = line[r];
            if (ch == '\\' && r + 1 < end) {
                char e = line[++r];
                switch (e) {
                case 'n': ch = '\n'; break;
                case 't': ch = '\t'; break;
                case 'r': ch = '\r'; break;
                case 'b': ch = '\b'; break;
                case 'f': ch = '\f'; break;
                case 'v': ch = '\v'; break;
                default:
                    if (e >= '0' && e <= '7') {
                        int v = e - '0', k;
                        for (k = 0;
                             k < 2 && r + 1 < end && line[r + 1] >= '0' && line[r + 1] <= '7'; k++)
                            v = v * 8 + (line[++r] - '0');
                        ch = (char)v;
                    }
                    else
                        ch = e;
                }
            }
            line[o++] = ch;
        }
        gmcp_canon_value(b, col == 0, t->types[col], isnull ? NULL : line + fs, o - fs);
        i++;
    }
    gmcp_canon_end(b);
}

/* One table's rows through COPY (...) TO STDOUT, each made canonical here in `b`. */
static int dump_table_pg(dbx *x, apr_pool_t *p, const table_info *t, const char *sel,
                         gmcp_arc_out *o, gmcp_abuf *b, const char **err)
{
    PGresult *r = PQexec(x->pq, apr_psprintf(p, "COPY (%s) TO STDOUT", sel));
    char *buf;
    int n, rv = 0;
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        PQclear(r);
        *err = apr_psprintf(p, "cannot read table %s: %s", t->name, x_err(x));
        return -1;
    }
    PQclear(r);
    while ((n = PQgetCopyData(x->pq, &buf, 0)) > 0) {
        copy_row_to_canon(t, buf, (size_t)n, b);
        PQfreemem(buf);
        if (!rv && gmcp_arc_row(o, b->data, b->len)) {
            *err = apr_psprintf(p, "cannot write the archive: %s", strerror(errno));
            rv = -1;
        }
    }
    r = PQgetResult(x->pq);
    if (!rv && (n != -1 || PQresultStatus(r) != PGRES_COMMAND_OK)) {
        *err = apr_psprintf(p, "cannot read table %s: %s", t->name, x_err(x));
        rv = -1;
    }
    PQclear(r);
    while ((r = PQgetResult(x->pq))) PQclear(r);
    return rv;
}

/* One table's rows through a prepared SELECT, as the engine's values (the archive's
 * writer thread makes the lines meanwhile). */
static int dump_table_lite(dbx *x, apr_pool_t *p, const table_info *t, const char *sel,
                           gmcp_arc_out *o, const char **err)
{
    sqlite3_stmt *st;
    int rc, j, rv = 0;
    if (sqlite3_prepare_v2(x->lite, sel, -1, &st, NULL) != SQLITE_OK) {
        *err = apr_psprintf(p, "cannot read table %s: %s", t->name, x_err(x));
        return -1;
    }
    /* One call per value reaches the column (sqlite3_column_value); its type and
     * contents are read from that value directly, without the per-call checks of the
     * sqlite3_column_* functions. (Such an "unprotected" value is only unsafe to share
     * across threads; this connection is this thread's alone.) */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (j = 0; j < t->ncols; j++) {
            sqlite3_value *v = sqlite3_column_value(st, j);
            switch (sqlite3_value_type(v)) {
            case SQLITE_NULL: gmcp_arc_val_null(o); break;
            case SQLITE_INTEGER: gmcp_arc_val_int(o, (long long)sqlite3_value_int64(v)); break;
            case SQLITE_FLOAT: gmcp_arc_val_double(o, sqlite3_value_double(v)); break;
            default: {
                const char *s = (const char *)sqlite3_value_text(v);
                gmcp_arc_val_text(o, s ? s : "", s ? (size_t)sqlite3_value_bytes(v) : 0);
            }
            }
        }
        if (gmcp_arc_val_row_end(o)) {
            *err = apr_psprintf(p, "cannot write the archive: %s", strerror(errno));
            rv = -1;
            break;
        }
    }
    if (!rv && rc != SQLITE_DONE) {
        *err = apr_psprintf(p, "cannot read table %s: %s", t->name, x_err(x));
        rv = -1;
    }
    sqlite3_finalize(st);
    return rv;
}

/* Every row of every table into `o` (in the caller's snapshot or transaction). */
static int dump_tables(dbx *x, apr_pool_t *p, apr_array_header_t *tables, gmcp_arc_out *o,
                       const char **err)
{
    gmcp_abuf b = {0};
    int i, rv = 0;
    for (i = 0; i < tables->nelts && !rv; i++) {
        const table_info *t = &APR_ARRAY_IDX(tables, i, table_info);
        json_t *cols = columns_json(t);
        const char *sel =
            apr_psprintf(p, "SELECT %s FROM %s ORDER BY %s", t->collist, qid(p, t->name), t->order);
        rv = gmcp_arc_table_begin(o, t->name, cols) == APR_SUCCESS ? 0 : -1;
        json_decref(cols);
        if (rv) {
            *err = apr_psprintf(p, "cannot write the archive: %s", strerror(errno));
            break;
        }
        rv =
            x->pg ? dump_table_pg(x, p, t, sel, o, &b, err) : dump_table_lite(x, p, t, sel, o, err);
        if (!rv && gmcp_arc_table_end(o)) {
            *err = apr_psprintf(p, "cannot write the archive: %s", strerror(errno));
            rv = -1;
        }
    }
    gmcp_abuf_free(&b);
    return rv;
}

/* ---- helpers ------------------------------------------------------------------------------ */
static const char *sql_subdir(const char *driver)
{
    return !strcmp(driver, "sqlite3") ? "sqlite" : driver;
}

static const char *utc_iso(apr_pool_t *p, apr_time_t t, int compact)
{
    apr_time_exp_t e;
    apr_time_exp_gmt(&e, t);
    if (compact)
        return apr_psprintf(p, "%04d%02d%02dT%02d%02d%02d.%03dZ", e.tm_year + 1900, e.tm_mon + 1,
                            e.tm_mday, e.tm_hour, e.tm_min, e.tm_sec, e.tm_usec / 1000);
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", e.tm_year + 1900, e.tm_mon + 1,
                        e.tm_mday, e.tm_hour, e.tm_min, e.tm_sec, e.tm_usec / 1000);
}

static const char *enc_secret(ctl *c, int *bad)
{
    const char *src = opt(c, OPT_ENCRYPT), *v;
    *bad = 0;
    if (!src) return NULL;
    if ((strncmp(src, "file:", 5) && strncmp(src, "env:", 4))
        || !(v = gmcp_read_secret(c->pool, src)) || strlen(v) < 16) {
        *bad = fail("the --encrypt key %s is missing, unreadable or shorter than 16 "
                    "characters (give file:PATH or env:NAME)",
                    src);
        return NULL;
    }
    return v;
}

static const char *pepper_fp(ctl *c)
{
    const char *v;
    if (!c->pepper || (strncmp(c->pepper, "file:", 5) && strncmp(c->pepper, "env:", 4)))
        return NULL;
    if (!(v = gmcp_read_secret(c->pool, c->pepper)) || !*v) return NULL;
    return gmcp_arc_fingerprint(c->pool, v, PEPPER_LABEL);
}

static int is_dir(apr_pool_t *p, const char *path)
{
    apr_finfo_t fi;
    return apr_stat(&fi, path, APR_FINFO_TYPE, p) == APR_SUCCESS && fi.filetype == APR_DIR;
}

static int exists(apr_pool_t *p, const char *path)
{
    apr_finfo_t fi;
    return apr_stat(&fi, path, APR_FINFO_TYPE, p) == APR_SUCCESS;
}

static const char *dir_of(apr_pool_t *p, const char *path)
{
    const char *s = strrchr(path, '/');
    if (!s) return ".";
    if (s == path) return "/";
    return apr_pstrndup(p, path, (apr_size_t)(s - path));
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY), rv;
    if (fd < 0) return -1;
    rv = fsync(fd);
    close(fd);
    return rv;
}

/* ---- spool files (--include-uploads) ---------------------------------------------------- */
/* The spool directory: --upload-dir, else the configuration's GeminiMCPUploadDir (as
 * gmcpctl uploads/cleanup find it). */
static const char *spool_dir_of(ctl *c)
{
    const char *v = opt(c, OPT_UPLOAD_DIR);
    if (v) return v;
    return c->httpd_gmcp ? apr_table_get(c->httpd_gmcp, "GeminiMCPUploadDir") : NULL;
}

/* Live uploads as of the snapshot: state receiving and not expired, by id (bytes). */
static int live_uploads(dbx *x, apr_pool_t *p, apr_array_header_t **rows, const char **err)
{
    int nc;
    if (x_query(x, p,
                apr_psprintf(p,
                             "SELECT id, upload_offset FROM uploads WHERE state = "
                             "'receiving' AND expires >= %" APR_INT64_T_FMT " ORDER BY "
                             "id%s",
                             (apr_int64_t)apr_time_sec(apr_time_now()),
                             x->pg ? " COLLATE \"C\"" : ""),
                &nc, rows)) {
        *err = apr_psprintf(p, "cannot read the live uploads: %s", x_err(x));
        return -1;
    }
    return 0;
}

/* dump_spools' state: where the files are, where they go, what was left out. */
typedef struct {
    apr_pool_t *p;
    gmcp_arc_out *o;
    const char *dir;
    json_t *skipped;
    char *buf; /* one read's bytes */
    size_t cap;
    apr_int64_t total; /* bytes included */
    const char **err;
} spool_dump;

/* A spool file left out of the archive (fd -1: it could not be opened, errno says why;
 * else *st is its fstat): warned about and listed in skipped. */
static void skip_spool(spool_dump *d, const char *id, const char *path, apr_int64_t want, int fd,
                       const struct stat *st)
{
    const char *why = fd < 0    ? (errno == ENOENT ? "missing" : strerror(errno))
        : !S_ISREG(st->st_mode) ? "not a regular file"
                                : "shorter than its offset";
    if (fd >= 0 && S_ISREG(st->st_mode))
        fprintf(stderr,
                "gmcpctl: warning: upload %s: the spool file %s has %" APR_INT64_T_FMT
                " bytes, fewer than its offset %" APR_INT64_T_FMT ": not included\n",
                id, path, (apr_int64_t)st->st_size, want);
    else
        fprintf(stderr,
                "gmcpctl: warning: upload %s: the spool file %s is %s: not "
                "included\n",
                id, path, why);
    json_array_append_new(
        d->skipped,
        json_pack("{s:s, s:I, s:s}", "id", id, "upload_offset", (json_int_t)want, "reason", why));
    if (fd >= 0 && S_ISREG(st->st_mode))
        json_object_set_new(json_array_get(d->skipped, json_array_size(d->skipped) - 1),
                            "file_bytes", json_integer(st->st_size));
}

/* Exactly `want` bytes of the open spool file `path` as its section of the archive. */
static int copy_spool(spool_dump *d, const char *id, const char *path, int fd, apr_int64_t want)
{
    apr_int64_t left;
    int rv = 0;
    if (gmcp_arc_spool_begin(d->o, id, want)) {
        *d->err = apr_psprintf(d->p, "cannot write the archive: %s", strerror(errno));
        rv = -1;
    }
    for (left = want; !rv && left > 0;) {
        ssize_t n = read(fd, d->buf, left < (apr_int64_t)d->cap ? (size_t)left : d->cap);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            /* only something else than the module could truncate below the offset */
            *d->err = apr_psprintf(d->p,
                                   "the spool file %s shrank below its offset while it "
                                   "was read: %s",
                                   path, n < 0 ? strerror(errno) : "end of file");
            rv = -1;
            break;
        }
        if (gmcp_arc_spool_data(d->o, d->buf, (size_t)n)) {
            *d->err = apr_psprintf(d->p, "cannot write the archive: %s", strerror(errno));
            rv = -1;
        }
        left -= n;
    }
    close(fd);
    if (!rv && gmcp_arc_spool_end(d->o)) {
        *d->err = apr_psprintf(d->p, "cannot write the archive: %s", strerror(errno));
        rv = -1;
    }
    return rv;
}

/* One live upload (id, upload_offset): its spool file's section, or skipped. */
static int dump_spool(spool_dump *d, const char **r)
{
    const char *id = r[0], *path;
    apr_int64_t want = r[1] ? apr_atoi64(r[1]) : 0;
    struct stat st;
    int fd;
    if (!gmcp_upload_id_ok(id)) {
        fprintf(stderr, "gmcpctl: warning: upload %s: not a spool file name: not included\n", id);
        json_array_append_new(d->skipped,
                              json_pack("{s:s, s:I, s:s}", "id", id, "upload_offset",
                                        (json_int_t)want, "reason", "bad id"));
        return 0;
    }
    path = apr_pstrcat(d->p, d->dir, "/", id, NULL);
    fd = open(path, O_RDONLY | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT && want == 0) {
        /* The module inserts the row before it creates the file: nothing to copy yet,
         * and an empty file is what that upload has. */
        if (gmcp_arc_spool_begin(d->o, id, 0) || gmcp_arc_spool_end(d->o)) {
            *d->err = apr_psprintf(d->p, "cannot write the archive: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    if (fd >= 0 && fstat(fd, &st)) { /* as if it could not be opened: errno says why */
        int e = errno;
        close(fd);
        fd = -1;
        errno = e;
    }
    if (fd < 0 || !S_ISREG(st.st_mode) || st.st_size < want) {
        skip_spool(d, id, path, want, fd, &st);
        if (fd >= 0) close(fd);
        return 0;
    }
    if (copy_spool(d, id, path, fd, want)) return -1;
    d->total += want;
    return 0;
}

/* Exactly upload_offset bytes of each live upload's spool file into the archive (the
 * module never rewrites bytes below the recorded offset, so these are stable while later
 * ones may be being written). A file missing or shorter than its offset is skipped with a
 * warning and listed in *skipped. */
static int dump_spools(ctl *c, gmcp_arc_out *o, const char *dir, apr_array_header_t *ups,
                       json_t *skipped, apr_int64_t *total, const char **err)
{
    spool_dump d = {c->pool, o, dir, skipped, NULL, 1 << 20, 0, err};
    int i, rv = 0;
    if (!(d.buf = malloc(d.cap))) abort();
    for (i = 0; i < ups->nelts && !rv; i++)
        rv = dump_spool(&d, APR_ARRAY_IDX(ups, i, const char **));
    *total = d.total;
    free(d.buf);
    return rv;
}

/* write_backup's state. */
typedef struct {
    ctl *c;
    apr_pool_t *p;
    const char *final, *dir; /* the archive's name and its directory */
    const char *tmp;         /* the name it is written under */
    const char *secret;      /* --encrypt's key; NULL: plain */
    const char *spool_dir;   /* --include-uploads: the spool directory; else NULL */
    dbx x;
    FILE *fp;
    gmcp_arc_out *o;
    int in_tx;               /* the snapshot is open */
    int threads;             /* 2: with the archive's writer thread, 1: without */
    apr_array_header_t *mig; /* schema_migrations: version, name, checksum */
    apr_array_header_t *ups; /* the live uploads (spool_dir) */
    json_t *man;             /* the manifest, until gmcp_arc_finish takes it */
    json_t *skipped;         /* its spool.skipped */
    apr_int64_t spool_bytes;
    const char *err; /* why it failed */
} backup_job;

/* Is a core free for the archive's writer thread? On a busy host a second thread of the
 * backup costs the requests httpd serves more than its CPU share (bench/README.md,
 * "Backup": p99 3x instead of 1.5x), so it is taken only when no task waited for a CPU
 * during PROBE_MS before the backup starts its own work: Linux's CPU pressure counter
 * (microseconds in which some task was runnable but not running) grows by less than
 * BUSY_SHARE of that time. Without that counter, the 1-minute load average must be
 * under CPUs - 1/2. Seen here: 0 % quiet, ~20 % under a paced load of a third of the
 * two CPUs, ~90 % saturated. */
#define PROBE_MS 25
#define BUSY_SHARE 0.10
static int psi_cpu_total(apr_int64_t *us)
{
    char line[256], *t = NULL;
    FILE *f = fopen("/proc/pressure/cpu", "r");
    int ok = f && fgets(line, sizeof(line), f) && (t = strstr(line, "total=")) != NULL;
    if (f) fclose(f);
    if (ok) *us = apr_atoi64(t + 6);
    return ok;
}

static int cpu_spare(apr_pool_t *p, const char **why)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    apr_int64_t a, b;
    apr_time_t t0, dt;
    double load;
    if (ncpu < 2) {
        *why = "one CPU";
        return 0;
    }
    if (psi_cpu_total(&a)) {
        t0 = apr_time_now();
        apr_sleep(apr_time_from_msec(PROBE_MS));
        dt = apr_time_now() - t0;
        if (psi_cpu_total(&b)) {
            *why = apr_psprintf(p, "tasks waited for a CPU %.0f %% of %d ms",
                                100.0 * (double)(b - a) / (double)dt, (int)apr_time_as_msec(dt));
            return (double)(b - a) < BUSY_SHARE * (double)dt;
        }
    }
    if (getloadavg(&load, 1) == 1) {
        *why = apr_psprintf(p, "load average %.2f on %ld CPUs", load, ncpu);
        return load < (double)ncpu - 0.5;
    }
    *why = "no load figure";
    return 1;
}

/* Step 1: the temporary file (in the archive's directory) and the archive on it, on one
 * thread or two. */
static int backup_open(backup_job *B)
{
    const char *why;
    const char *base = strrchr(B->final, '/');
    int fd;
    base = base ? base + 1 : B->final;
    B->tmp = apr_psprintf(B->p, "%s/.%s.tmp-%ld", B->dir, base, (long)getpid());
    if (x_init(B->c, &B->x)) return fail("%s", "cannot reach the database's native handle");
    if ((fd = open(B->tmp, O_WRONLY | O_CREAT | O_EXCL, 0600)) < 0)
        return fail("%s", apr_psprintf(B->p, "cannot create %s: %s", B->tmp, strerror(errno)));
    if (!(B->fp = fdopen(fd, "wb"))) {
        close(fd);
        unlink(B->tmp);
        return fail("cannot write %s", B->tmp);
    }
    setvbuf(B->fp, NULL, _IOFBF, 1 << 20);
    B->o = gmcp_arc_out_open(B->p, B->fp, B->secret);
    B->threads = cpu_spare(B->p, &why) ? 2 : 1;
    gmcp_arc_out_inline(B->o, B->threads == 1);
    if (B->c->verbose)
        fprintf(stderr, "gmcpctl: backup on %d thread%s (%s)\n", B->threads,
                B->threads > 1 ? "s" : "", why);
    return 0;
}

/* The manifest of the snapshot `snap` (gmcp_arc_finish adds the tables and spool files). */
static json_t *backup_manifest(backup_job *B, const char *snap)
{
    json_t *migs = json_array(), *src, *man;
    const char *pfp;
    int i;
    for (i = 0; i < B->mig->nelts; i++) {
        const char **r = APR_ARRAY_IDX(B->mig, i, const char **);
        json_array_append_new(migs,
                              json_pack("{s:I, s:s, s:s}", "version", (json_int_t)apr_atoi64(r[0]),
                                        "name", r[1] ? r[1] : "", "checksum", r[2] ? r[2] : ""));
    }
    src = json_pack("{s:s}", "driver", B->c->driver);
    if (B->x.pg)
        json_object_set_new(src, "server_version", json_integer(PQserverVersion(B->x.pq)));
    else
        json_object_set_new(src, "server_version", json_string(sqlite3_libversion()));
    man =
        json_pack("{s:s, s:s, s:s, s:o, s:{s:i, s:o}, s:s}", "format", "gmcp-backup", "created_at",
                  utc_iso(B->p, apr_time_now(), 0), "tool_version", GMCP_VERSION, "source", src,
                  "schema", "version", B->mig->nelts, "migrations", migs, "snapshot", snap);
    if ((pfp = pepper_fp(B->c)))
        json_object_set_new(man, "key_pepper_fingerprint", json_string(pfp));
    json_object_set_new(man, "encrypted", json_boolean(B->secret != NULL));
    return man;
}

/* Step 2: one snapshot for everything read: the migrations, every table's rows, the
 * live uploads, the manifest; then it ends. */
static int backup_snapshot(backup_job *B)
{
    dbx *x = &B->x;
    const char *snap =
        x->pg ? "postgresql repeatable read read only" : "sqlite deferred read transaction";
    apr_array_header_t *tables;
    int nc;
    /* SQLite: read the database through a memory map, not a pread per 4 KiB page (a
     * tenth of the reading thread's time). Safe against truncation: no checkpoint can
     * shrink the file below this read transaction's snapshot. */
    if (!x->pg) x_exec(x, "PRAGMA mmap_size = 2147418112");
    if (x_exec(x, x->pg ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN DEFERRED")) {
        B->err = apr_psprintf(B->p, "cannot start the snapshot: %s", x_err(x));
        return -1;
    }
    B->in_tx = 1;
    if (x_query(x, B->p,
                "SELECT version, name, checksum FROM schema_migrations ORDER BY "
                "version",
                &nc, &B->mig)) {
        B->err = apr_psprintf(B->p,
                              "cannot read schema_migrations (is the database "
                              "migrated?): %s",
                              x_err(x));
        return -1;
    }
    if (list_tables(x, B->p, &tables, &B->err) || dump_tables(x, B->p, tables, B->o, &B->err))
        return -1;
    if (B->spool_dir && live_uploads(x, B->p, &B->ups, &B->err)) return -1;
    B->man = backup_manifest(B, snap);
    x_exec(x, "COMMIT");
    B->in_tx = 0;
    return 0;
}

/* Step 3 (--include-uploads): the spool files after the snapshot: their first
 * upload_offset bytes (as of the snapshot) no longer change. The job lock keeps cleanup
 * from removing them. */
static int backup_spools(backup_job *B)
{
    if (!B->spool_dir) return 0;
    B->skipped = json_array();
    json_object_set_new(B->man, "spool", json_pack("{s:[], s:o}", "files", "skipped", B->skipped));
    return dump_spools(B->c, B->o, B->spool_dir, B->ups, B->skipped, &B->spool_bytes, &B->err);
}

/* What was written (gmcpctl --json backup). */
static json_t *backup_summary(backup_job *B)
{
    json_t *tables = gmcp_arc_tables(B->o), *s;
    apr_int64_t total = 0;
    int i;
    for (i = 0; i < (int)json_array_size(tables); i++)
        total += json_integer_value(json_object_get(json_array_get(tables, i), "rows"));
    s = json_pack("{s:s, s:i, s:I, s:i, s:i}", "path", B->final, "tables",
                  (int)json_array_size(tables), "rows", (json_int_t)total, "schema_version",
                  B->mig->nelts, "threads", B->threads);
    if (B->spool_dir) {
        json_object_set_new(s, "spool_files",
                            json_integer((json_int_t)json_array_size(gmcp_arc_spools(B->o))));
        json_object_set_new(s, "spool_bytes", json_integer(B->spool_bytes));
        json_object_set_new(s, "spool_skipped",
                            json_integer((json_int_t)json_array_size(B->skipped)));
    }
    return s;
}

/* Step 4: the manifest and the end line; the file synced, closed, renamed to its name,
 * and its directory synced. */
static int backup_finish_file(backup_job *B)
{
    json_t *man = B->man;
    B->man = NULL; /* gmcp_arc_finish takes it */
    if (gmcp_arc_finish(B->o, man) || fflush(B->fp) || fsync(fileno(B->fp))) {
        B->err = apr_psprintf(B->p, "cannot write %s: %s", B->tmp, strerror(errno));
        return -1;
    }
    if (fclose(B->fp)) {
        B->fp = NULL;
        B->err = apr_psprintf(B->p, "cannot write %s: %s", B->tmp, strerror(errno));
        return -1;
    }
    B->fp = NULL;
    if (rename(B->tmp, B->final)) {
        B->err =
            apr_psprintf(B->p, "cannot rename %s to %s: %s", B->tmp, B->final, strerror(errno));
        return -1;
    }
    fsync_dir(B->dir);
    return 0;
}

/* Step 5, always: the snapshot ended, the archive closed; after a failure the temporary
 * file removed, no summary, and the one line said. */
static int backup_end(backup_job *B, int rv, json_t **summary)
{
    if (B->in_tx) x_exec(&B->x, "ROLLBACK");
    gmcp_arc_out_close(B->o);
    if (B->fp) fclose(B->fp);
    if (B->man) json_decref(B->man);
    if (!rv) return 0;
    unlink(B->tmp);
    if (summary && *summary) {
        json_decref(*summary);
        *summary = NULL;
    }
    return fail("backup failed: %s", B->err ? B->err : "unknown error");
}

/* Take a backup of c's open database into `final` (written as a temporary file in the
 * same directory, fsynced, renamed, directory fsynced). *summary: what was written. */
static int write_backup(ctl *c, const char *final, const char *secret, json_t **summary,
                        const char *spool_dir)
{
    backup_job B;
    int rv;
    memset(&B, 0, sizeof(B));
    B.c = c;
    B.p = c->pool;
    B.final = final;
    B.dir = dir_of(c->pool, final);
    B.secret = secret;
    B.spool_dir = spool_dir;
    if ((rv = backup_open(&B)) != 0) return rv; /* said; nothing to undo */
    rv = (backup_snapshot(&B) || backup_spools(&B)) ? -1 : 0;
    if (!rv && summary) *summary = backup_summary(&B);
    if (!rv) rv = backup_finish_file(&B);
    return backup_end(&B, rv, summary);
}

static int keep_prune(ctl *c, const char *dir, int keep)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    apr_array_header_t *names = apr_array_make(c->pool, 16, sizeof(const char *));
    size_t pl = strlen(SERIES_PREFIX), sl = strlen(SERIES_SUFFIX);
    int i, failed = 0;
    if (!d) return fail("cannot read the directory %s", dir);
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > pl + sl && !strncmp(e->d_name, SERIES_PREFIX, pl)
            && !strcmp(e->d_name + n - sl, SERIES_SUFFIX))
            APR_ARRAY_PUSH(names, const char *) = apr_pstrdup(c->pool, e->d_name);
    }
    closedir(d);
    qsort(names->elts, (size_t)names->nelts, sizeof(char *), cmp_str);
    for (i = 0; i < names->nelts - keep; i++) {
        const char *path =
            apr_pstrcat(c->pool, dir, "/", APR_ARRAY_IDX(names, i, const char *), NULL);
        if (unlink(path)) {
            fprintf(stderr, "gmcpctl: cannot remove %s\n", path);
            failed = 1;
        }
        else if (c->verbose)
            printf("removed %s\n", path);
    }
    if (names->nelts > keep) fsync_dir(dir);
    return failed ? EXIT_FAIL : 0;
}

/* A new file name of the series in dir (never an existing one). */
static const char *series_name(apr_pool_t *p, const char *dir, const char *prefix)
{
    for (;;) {
        const char *f =
            apr_pstrcat(p, dir, "/", prefix, utc_iso(p, apr_time_now(), 1), SERIES_SUFFIX, NULL);
        if (!exists(p, f)) return f;
        apr_sleep(2000);
    }
}

int cmd_backup(ctl *c)
{
    const char *out = opt(c, OPT_OUTPUT), *keep_s = opt(c, OPT_KEEP), *secret, *final, *dir;
    const char *sdir = NULL;
    int rv, bad, keep = 0, into_dir;
    gmcpctl_joblock l;
    json_t *summary = NULL;
    if (keep_s) {
        char *end;
        long k = strtol(keep_s, &end, 10);
        if (*end || k < 1 || k > 100000)
            return usage_err("--keep '%s' must be a count >= 1", keep_s);
        keep = (int)k;
    }
    if (!out) out = ".";
    into_dir = is_dir(c->pool, out);
    if (keep && !into_dir)
        return usage_err("--keep needs --output to be an existing directory (not '%s')", out);
    secret = enc_secret(c, &bad);
    if (bad) return bad;
    if (!into_dir && exists(c->pool, out)) return fail("%s already exists (not overwritten)", out);
    if ((rv = open_db(c, 0)) != 0) return rv; /* also reads --config */
    if (opt(c, OPT_INCLUDE_UPLOADS)) {
        if (!(sdir = spool_dir_of(c)))
            return usage_err("--include-uploads needs --upload-dir DIR or a --config with "
                             "GeminiMCPUploadDir%s",
                             "");
        if (!is_dir(c->pool, sdir)) return fail("the upload directory %s does not exist", sdir);
    }
    if ((rv = joblock_take(c, &l)) != 0) return rv;
    /* A background job: on a busy host the requests httpd serves come first (the writer
     * thread, created later, inherits this). */
    if (setpriority(PRIO_PROCESS, 0, BACKUP_NICE) != 0 && c->verbose)
        fprintf(stderr, "gmcpctl: cannot lower the backup's CPU priority: %s\n", strerror(errno));
    dir = into_dir ? out : dir_of(c->pool, out);
    final = into_dir ? series_name(c->pool, out, SERIES_PREFIX) : out;
    rv = write_backup(c, final, secret, &summary, sdir);
    joblock_release(&l);
    if (rv) return rv;
    if (keep) rv = keep_prune(c, dir, keep);
    if (c->json) {
        json_dumpf(summary, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    else if (c->verbose)
        printf("backup written to %s\n", final);
    json_decref(summary);
    return rv;
}

/* ---- verify ------------------------------------------------------------------------------ */
/* Names of the tables migrations 1..version create (minus those they drop). */
static apr_array_header_t *schema_tables(apr_pool_t *p, const char *sql_dir, const char *driver,
                                         int version)
{
    apr_array_header_t *migs, *out = apr_array_make(p, 16, sizeof(const char *));
    const char *err;
    int i, j, k;
    if (gmcp_migrations_load(p, sql_dir, sql_subdir(driver), &migs, &err) || version > migs->nelts)
        return NULL;
    for (i = 0; i < version; i++) {
        apr_array_header_t *st = gmcp_sql_split(p, APR_ARRAY_IDX(migs, i, gmcp_migration).sql);
        for (j = 0; j < st->nelts; j++) {
            const char *s = APR_ARRAY_IDX(st, j, const char *);
            char name[256];
            int drop;
            while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
            if (!strncasecmp(s, "CREATE TABLE ", 13)) {
                s += 13;
                drop = 0;
            }
            else if (!strncasecmp(s, "DROP TABLE ", 11)) {
                s += 11;
                drop = 1;
            }
            else
                continue;
            while (*s == ' ') s++;
            if (!strncasecmp(s, "IF NOT EXISTS ", 14)) s += 14;
            if (!strncasecmp(s, "IF EXISTS ", 10)) s += 10;
            for (k = 0; k < 255
                 && (s[k] == '_' || (s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z')
                     || (s[k] >= '0' && s[k] <= '9'));
                 k++)
                name[k] = (char)(s[k] >= 'A' && s[k] <= 'Z' ? s[k] + 32 : s[k]);
            name[k] = '\0';
            if (!k || !strcmp(name, "schema_migrations")) continue;
            for (k = 0; k < out->nelts; k++)
                if (!strcmp(APR_ARRAY_IDX(out, k, const char *), name)) break;
            if (drop && k < out->nelts) {
                APR_ARRAY_IDX(out, k, const char *) =
                    APR_ARRAY_IDX(out, out->nelts - 1, const char *);
                out->nelts--;
            }
            else if (!drop && k == out->nelts)
                APR_ARRAY_PUSH(out, const char *) = apr_pstrdup(p, name);
        }
    }
    return out;
}

static json_t *find_table(json_t *man, const char *name)
{
    json_t *t = json_object_get(man, "tables"), *e;
    size_t i;
    json_array_foreach(
        t, i, e) if (!strcmp(json_string_value(json_object_get(e, "name")) ?: "", name)) return e;
    return NULL;
}

/* Verify the archive; *manifest on success. Prints nothing. */
static int check_archive(ctl *c, const char *path, const char *secret, json_t **manifest,
                         const char **why)
{
    const char *err = NULL, *drv;
    apr_array_header_t *want;
    json_t *man;
    int version, i;
    if (gmcp_arc_read(c->pool, path, secret, NULL, NULL, &man, &err)) {
        *why = err;
        return -1;
    }
    drv = json_string_value(json_object_get(json_object_get(man, "source"), "driver"));
    version = (int)json_integer_value(json_object_get(json_object_get(man, "schema"), "version"));
    if (!drv || (strcmp(drv, "sqlite3") && strcmp(drv, "pgsql")) || version < 1) {
        json_decref(man);
        *why = "corrupt manifest (source driver or schema version missing)";
        return -1;
    }
    /* Every table of the recorded schema version must be in the archive (when this
     * gmcpctl's migrations know that version). */
    if ((want = schema_tables(c->pool, c->sql_dir, drv, version)))
        for (i = 0; i < want->nelts; i++)
            if (!find_table(man, APR_ARRAY_IDX(want, i, const char *))) {
                *why = apr_psprintf(c->pool,
                                    "incomplete: table %s of schema version %d is "
                                    "missing from the archive",
                                    APR_ARRAY_IDX(want, i, const char *), version);
                json_decref(man);
                return -1;
            }
    *manifest = man;
    return 0;
}

static const char *archive_secret(ctl *c, const char *path, int *bad)
{
    const char *s = enc_secret(c, bad);
    if (*bad) return NULL;
    (void)path;
    return s;
}

int cmd_backup_verify(ctl *c, const char *path)
{
    json_t *man;
    const char *why, *secret;
    int bad;
    secret = archive_secret(c, path, &bad);
    if (bad) return bad;
    if (check_archive(c, path, secret, &man, &why))
        return fail("%s", apr_psprintf(c->pool, "%s: %s", path, why));
    if (c->json) {
        json_t *o = json_pack(
            "{s:s, s:b, s:O, s:O, s:O, s:O}", "path", path, "ok", 1, "schema",
            json_object_get(man, "schema"), "source", json_object_get(man, "source"), "created_at",
            json_object_get(man, "created_at"), "tables", json_object_get(man, "tables"));
        if (json_object_get(man, "spool"))
            json_object_set(o, "spool", json_object_get(man, "spool"));
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    }
    else if (c->verbose)
        printf("%s: ok\n", path);
    json_decref(man);
    return 0;
}

/* ---- restore ----------------------------------------------------------------------------- */
typedef struct {
    dbx *x;
    apr_pool_t *p;
    apr_array_header_t *tables; /* the target's */
    const table_info *cur;
    sqlite3_stmt *ins;
    int copying;
    gmcp_abuf b;
    const char *err;
    /* spool files: written under temporary names during the load, put in place after
     * the commit */
    const char *sdir;
    json_t *want;               /* the verified manifest's spool.files */
    apr_array_header_t *spools; /* spool_out */
    int fd;
} loader;

typedef struct {
    const char *id, *tmp, *final;
    int placed;
} spool_out;

static int load_finish(loader *L)
{
    int rv = 0;
    if (L->ins) {
        sqlite3_finalize(L->ins);
        L->ins = NULL;
    }
    if (L->copying) {
        PGresult *r;
        L->copying = 0;
        if (PQputCopyEnd(L->x->pq, NULL) != 1) rv = -1;
        while ((r = PQgetResult(L->x->pq))) {
            if (PQresultStatus(r) != PGRES_COMMAND_OK) rv = -1;
            PQclear(r);
        }
        if (rv && !L->err)
            L->err = apr_psprintf(L->p, "cannot load table %s: %s", L->cur->name, x_err(L->x));
    }
    return rv;
}

static int load_table(void *baton, const char *name, json_t *cols)
{
    loader *L = baton;
    int i;
    if (load_finish(L)) return -1;
    L->cur = NULL;
    for (i = 0; i < L->tables->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(L->tables, i, table_info).name, name))
            L->cur = &APR_ARRAY_IDX(L->tables, i, table_info);
    if (!L->cur) {
        L->err = apr_psprintf(L->p,
                              "the target has no table %s at the archive's schema "
                              "version",
                              name);
        return -1;
    }
    if ((int)json_array_size(cols) != L->cur->ncols) goto mismatch;
    for (i = 0; i < L->cur->ncols; i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(cols, (size_t)i), "name"))
                       ?: "",
                   L->cur->cols[i]))
            goto mismatch;
    if (L->x->pg) {
        PGresult *r =
            PQexec(L->x->pq,
                   apr_psprintf(L->p, "COPY %s (%s) FROM STDIN", qid(L->p, name), L->cur->collist));
        int st = PQresultStatus(r);
        PQclear(r);
        if (st != PGRES_COPY_IN) {
            L->err = apr_psprintf(L->p, "cannot load table %s: %s", name, x_err(L->x));
            return -1;
        }
        L->copying = 1;
    }
    else {
        const char *q = "?";
        for (i = 1; i < L->cur->ncols; i++) q = apr_pstrcat(L->p, q, ",?", NULL);
        if (sqlite3_prepare_v2(L->x->lite,
                               apr_psprintf(L->p, "INSERT INTO %s (%s) VALUES (%s)",
                                            qid(L->p, name), L->cur->collist, q),
                               -1, &L->ins, NULL)
            != SQLITE_OK) {
            L->err = apr_psprintf(L->p, "cannot load table %s: %s", name, x_err(L->x));
            return -1;
        }
    }
    return 0;
mismatch:
    L->err = apr_psprintf(L->p,
                          "the columns of table %s differ between the archive and the "
                          "target",
                          name);
    return -1;
}

static void copy_escape(gmcp_abuf *b, const char *s, size_t n)
{
    size_t i, run = 0;
    for (i = 0; i < n; i++) {
        const char *e = NULL;
        switch (s[i]) {
        case '\\': e = "\\\\"; break;
        case '\t': e = "\\t"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        }
        if (e) {
            gmcp_abuf_add(b, s + i - run, run);
            run = 0;
            gmcp_abuf_add(b, e, 2);
        }
        else
            run++;
    }
    gmcp_abuf_add(b, s + n - run, run);
}

/* One archive value as a field of PostgreSQL's COPY text format; -1 if it has no column
 * type (an object or array). */
static int copy_value(gmcp_abuf *b, json_t *v)
{
    char num[32];
    if (json_is_null(v))
        gmcp_abuf_add(b, "\\N", 2);
    else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        gmcp_abuf_add(b, num, strlen(num));
    }
    else if (json_is_boolean(v))
        gmcp_abuf_add(b, json_is_true(v) ? "t" : "f", 1);
    else if (json_is_real(v)) {
        snprintf(num, sizeof(num), "%.17g", json_real_value(v));
        gmcp_abuf_add(b, num, strlen(num));
    }
    else if (json_is_string(v))
        copy_escape(b, json_string_value(v), json_string_length(v));
    else
        return -1;
    return 0;
}

/* One archive value bound to the SQLite insert's parameter i (1-based); -1 on failure. */
static int bind_value(sqlite3_stmt *ins, int i, json_t *v)
{
    int rc;
    if (json_is_null(v))
        rc = sqlite3_bind_null(ins, i);
    else if (json_is_integer(v))
        rc = sqlite3_bind_int64(ins, i, json_integer_value(v));
    else if (json_is_boolean(v))
        rc = sqlite3_bind_int(ins, i, json_is_true(v));
    else if (json_is_real(v))
        rc = sqlite3_bind_double(ins, i, json_real_value(v));
    else if (json_is_string(v))
        rc = sqlite3_bind_text(ins, i, json_string_value(v), (int)json_string_length(v),
                               SQLITE_TRANSIENT);
    else
        return -1;
    return rc == SQLITE_OK ? 0 : -1;
}

/* The row's values into the COPY line (PostgreSQL) or the insert's bindings (SQLite). */
static int take_values(loader *L, json_t *a)
{
    int i;
    if (L->x->pg) L->b.len = 0;
    for (i = 0; i < L->cur->ncols; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (L->x->pg) {
            if (i) gmcp_abuf_add(&L->b, "\t", 1);
            if (copy_value(&L->b, v)) return -1;
        }
        else if (bind_value(L->ins, i + 1, v))
            return -1;
    }
    return 0;
}

/* The row into the target: the COPY stream, or one step of the insert. */
static int put_row(loader *L)
{
    int rc;
    if (L->x->pg) {
        gmcp_abuf_add(&L->b, "\n", 1);
        return PQputCopyData(L->x->pq, L->b.data, (int)L->b.len) == 1 ? 0 : -1;
    }
    rc = sqlite3_step(L->ins);
    sqlite3_reset(L->ins);
    sqlite3_clear_bindings(L->ins);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int load_row(void *baton, const char *line, size_t len)
{
    loader *L = baton;
    json_error_t je;
    json_t *a = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    int bad =
        !a || !json_is_array(a) || (int)json_array_size(a) != L->cur->ncols || take_values(L, a);
    if (a) json_decref(a);
    if (bad) {
        L->err = apr_psprintf(L->p, "corrupt row in table %s", L->cur->name);
        return -1;
    }
    if (put_row(L)) {
        L->err = apr_psprintf(L->p, "cannot load table %s: %s", L->cur->name, x_err(L->x));
        return -1;
    }
    return 0;
}

static int load_spool_begin(void *baton, const char *id, apr_int64_t bytes)
{
    loader *L = baton;
    spool_out *so;
    (void)bytes;
    if (!gmcp_upload_id_ok(id)) {
        L->err = apr_psprintf(L->p, "corrupt: '%s' is not an upload id", id);
        return -1;
    }
    if (!L->sdir) {
        L->err = "the archive holds spool files and no upload directory is known";
        return -1;
    }
    so = apr_array_push(L->spools);
    so->id = apr_pstrdup(L->p, id);
    so->final = apr_pstrcat(L->p, L->sdir, "/", id, NULL);
    so->tmp = apr_psprintf(L->p, "%s/.%s.restore-%ld", L->sdir, id, (long)getpid());
    so->placed = 0;
    L->fd = open(so->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
    if (L->fd < 0) {
        L->err = apr_psprintf(L->p, "cannot create %s: %s", so->tmp, strerror(errno));
        return -1;
    }
    return 0;
}

static int load_spool_data(void *baton, const unsigned char *d, size_t n)
{
    loader *L = baton;
    while (n) {
        ssize_t k = write(L->fd, d, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            L->err = apr_psprintf(L->p, "cannot write %s: %s",
                                  APR_ARRAY_IDX(L->spools, L->spools->nelts - 1, spool_out).tmp,
                                  strerror(errno));
            return -1;
        }
        d += k;
        n -= (size_t)k;
    }
    return 0;
}

static int load_spool_end(void *baton, const char *id, const char *sha256)
{
    loader *L = baton;
    const char *tmp = APR_ARRAY_IDX(L->spools, L->spools->nelts - 1, spool_out).tmp;
    json_t *e;
    size_t i;
    int ok = 0;
    if (fsync(L->fd) || close(L->fd)) {
        L->fd = -1;
        L->err = apr_psprintf(L->p, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    L->fd = -1;
    json_array_foreach(
        L->want, i,
        e) if (!strcmp(json_string_value(json_object_get(e, "id")) ?: "", id)
               && !strcmp(json_string_value(json_object_get(e, "sha256")) ?: "", sha256)) ok = 1;
    if (!ok) {
        L->err = apr_psprintf(L->p, "the archive changed while it was read (spool file %s)", id);
        return -1;
    }
    return 0;
}

/* Remove the temporary spool files not put in place. */
static void spools_discard(loader *L)
{
    int i;
    if (L->fd >= 0) {
        close(L->fd);
        L->fd = -1;
    }
    for (i = 0; L->spools && i < L->spools->nelts; i++) {
        spool_out *so = &APR_ARRAY_IDX(L->spools, i, spool_out);
        if (!so->placed) unlink(so->tmp);
    }
}

/* After the commit: the temporary spool files to their names (refusing to overwrite
 * unless `replace`), then the directory fsynced. Returns how many failed. */
static int spools_place(loader *L, int replace)
{
    int i, failed = 0;
    for (i = 0; i < L->spools->nelts; i++) {
        spool_out *so = &APR_ARRAY_IDX(L->spools, i, spool_out);
        int r =
            replace ? rename(so->tmp, so->final) : (link(so->tmp, so->final) || unlink(so->tmp));
        if (r) {
            fprintf(stderr,
                    "gmcpctl: cannot put the spool file %s in place (%s): it is kept "
                    "as %s\n",
                    so->final, strerror(errno), so->tmp);
            failed++;
        }
        so->placed = 1; /* in place, or kept for the operator */
    }
    if (L->spools->nelts) fsync_dir(L->sdir);
    return failed;
}

/* Live uploads of the restored database whose spool file is neither in the archive nor
 * in the upload directory: warned about (their clients must start over). */
static void warn_missing_spools(dbx *x, apr_pool_t *p, const char *sdir, json_t *files)
{
    apr_array_header_t *ups;
    const char *err, *first = NULL;
    int i, n = 0;
    if (live_uploads(x, p, &ups, &err)) return; /* a schema without uploads */
    for (i = 0; i < ups->nelts; i++) {
        const char *id = APR_ARRAY_IDX(ups, i, const char **)[0];
        json_t *e;
        size_t k;
        int found = 0;
        json_array_foreach(files, k,
                           e) if (!strcmp(json_string_value(json_object_get(e, "id")) ?: "", id))
            found = 1;
        if (found || (sdir && exists(p, apr_pstrcat(p, sdir, "/", id, NULL)))) continue;
        if (!first) first = id;
        n++;
    }
    if (n && sdir)
        fprintf(stderr,
                "gmcpctl: warning: %d live upload(s) (e.g. %s) have no spool file in "
                "the archive nor in %s: their clients must start them over (cleanup removes "
                "the rows once they expire; back up with --include-uploads to keep them)\n",
                n, first, sdir);
    else if (n)
        fprintf(stderr,
                "gmcpctl: warning: %d live upload(s) (e.g. %s) have no spool file in "
                "the archive: unless GeminiMCPUploadDir still holds them, their clients must "
                "start them over (cleanup removes the rows once they expire; back up with "
                "--include-uploads to keep them)\n",
                n, first);
}

static apr_int64_t table_rows(dbx *x, apr_pool_t *p, const char *name)
{
    apr_array_header_t *r;
    int nc;
    if (x_query(x, p, apr_psprintf(p, "SELECT COUNT(*) FROM %s", qid(p, name)), &nc, &r)
        || r->nelts != 1)
        return -1;
    return apr_atoi64(APR_ARRAY_IDX(r, 0, const char **)[0]);
}

/* do_restore's state. */
typedef struct {
    ctl *c;
    apr_pool_t *p;
    const char *path, *secret;
    json_t *man;    /* the verified manifest (borrowed) */
    json_t *sfiles; /* its spool.files */
    size_t nspool;
    int dry, replace;
    int aver, tver;             /* schema versions: the archive's, the target's */
    int created;                /* the SQLite target is new: removed unless restored */
    apr_array_header_t *migs;   /* this gmcpctl's migrations */
    apr_array_header_t *tables; /* the target's (table_info) */
    apr_array_header_t *trig;   /* SQLite: the triggers dropped to empty it (name, sql) */
    apr_int64_t existing;       /* rows the target holds */
    const char *sdir;           /* the upload directory, or NULL */
    dbx x;
    gmcpctl_joblock l;
    loader L;
    gmcp_arc_out *chk; /* the target re-read */
    json_t *mt;        /* its tables: what was restored (borrowed from chk) */
    const char *err;   /* why the transaction failed */
} restore_job;

/* "<verb> <table> <n> rows" for each table of a manifest's "tables". */
static void print_tables(const char *verb, json_t *tables)
{
    int i;
    for (i = 0; i < (int)json_array_size(tables); i++)
        printf("%s %-22s %" JSON_INTEGER_FORMAT " rows\n", verb,
               json_string_value(json_object_get(json_array_get(tables, (size_t)i), "name")),
               json_integer_value(json_object_get(json_array_get(tables, (size_t)i), "rows")));
}

/* Step 1: the target, opened; a new SQLite file is created only by a real restore (not
 * by a dry run), and removed again by a failed one. */
static int restore_open(restore_job *R)
{
    ctl *c = R->c;
    int rv;
    if (c->driver && !strcmp(c->driver, "sqlite3") && c->params && !exists(R->p, c->params)) {
        if (R->dry) printf("would create the SQLite database %s\n", c->params);
        R->created = 1;
    }
    if (!(R->dry && R->created) && (rv = open_db(c, 1)) != 0) return rv;
    if (!c->driver) c->driver = "sqlite3";
    return 0;
}

/* Step 2a: the archive's migrations are this gmcpctl's (names; checksums when the
 * archive is of the same engine), and it knows the archive's version. */
static int restore_check_migrations(restore_job *R)
{
    ctl *c = R->c;
    json_t *amigs = json_object_get(json_object_get(R->man, "schema"), "migrations");
    const char *adrv =
        json_string_value(json_object_get(json_object_get(R->man, "source"), "driver"));
    const char *err = NULL;
    int i;
    if (gmcp_migrations_load(R->p, c->sql_dir, sql_subdir(c->driver), &R->migs, &err))
        return fail("%s", err);
    if (R->aver > R->migs->nelts)
        return fail("%s",
                    apr_psprintf(R->p,
                                 "refused: the archive's schema version %d is "
                                 "newer than this gmcpctl's migrations (%d in %s/%s): "
                                 "use a newer gmcpctl",
                                 R->aver, R->migs->nelts, c->sql_dir, sql_subdir(c->driver)));
    for (i = 0; i < R->aver; i++) {
        json_t *am = json_array_get(amigs, (size_t)i);
        gmcp_migration *m = &APR_ARRAY_IDX(R->migs, i, gmcp_migration);
        if (!am || strcmp(json_string_value(json_object_get(am, "name")) ?: "", m->name)
            || (adrv && !strcmp(adrv, c->driver)
                && strcmp(json_string_value(json_object_get(am, "checksum")) ?: "", m->checksum)))
            return fail(
                "%s",
                apr_psprintf(R->p,
                             "refused: migration %d of the archive (%s) "
                             "differs from this gmcpctl's (%s)",
                             i + 1, am ? json_string_value(json_object_get(am, "name")) : "missing",
                             m->name));
    }
    return 0;
}

/* Step 2b: the target's schema is not newer than the archive's, and as its files say. */
static int restore_check_target(restore_job *R)
{
    ctl *c = R->c;
    const char *err = NULL;
    int i;
    if (x_init(c, &R->x)) return fail("%s", "cannot reach the database's native handle");
    if (gmcp_db_schema_version(&c->db, &R->tver, &err)) return fail("%s", err);
    if (R->tver > R->aver)
        return fail("%s",
                    apr_psprintf(R->p,
                                 "refused: the target's schema (version %d) is "
                                 "newer than the archive's (%d); restore into an empty "
                                 "database or migrate it down first",
                                 R->tver, R->aver));
    if (R->tver > 0 && gmcp_migrate_status(&c->db, R->migs, &err)) return fail("%s", err);
    for (i = 0; i < R->tver; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(R->migs, i, gmcp_migration);
        if (m->applied && strcmp(m->applied_checksum, m->checksum))
            return fail("refused: the target's migration %s was changed after it was applied",
                        m->name);
    }
    return 0;
}

/* Step 2c: the target's rows: it must be empty, unless --replace. */
static int restore_count_rows(restore_job *R)
{
    const char *err = NULL, *busy_table = NULL;
    int i;
    if (list_tables(&R->x, R->p, &R->tables, &err)) return fail("%s", err);
    for (i = 0; i < R->tables->nelts; i++) {
        apr_int64_t n = table_rows(&R->x, R->p, APR_ARRAY_IDX(R->tables, i, table_info).name);
        if (n < 0) return fail("cannot count the target's rows: %s", x_err(&R->x));
        if (n > 0 && !busy_table) busy_table = APR_ARRAY_IDX(R->tables, i, table_info).name;
        R->existing += n;
    }
    if (R->existing && !R->replace)
        return fail("%s",
                    apr_psprintf(R->p,
                                 "refused: the target database is not empty (%" APR_INT64_T_FMT
                                 " rows, e.g. in %s); give --replace to "
                                 "overwrite it (a backup of it is taken first)",
                                 R->existing, busy_table));
    return 0;
}

/* Step 2d: the archive's spool files (--include-uploads) need a known, existing upload
 * directory, and no file is overwritten without --replace. */
static int restore_check_spools(restore_job *R)
{
    size_t si;
    R->sdir = spool_dir_of(R->c);
    if (!R->nspool) return 0;
    if (!R->sdir)
        return fail("%s",
                    apr_psprintf(R->p,
                                 "refused: the archive holds %d spool file(s) of "
                                 "live uploads: give --upload-dir DIR (or a --config "
                                 "with GeminiMCPUploadDir)",
                                 (int)R->nspool));
    if (!is_dir(R->p, R->sdir))
        return fail("refused: the upload directory %s does not exist", R->sdir);
    for (si = 0; si < R->nspool; si++) {
        const char *id = json_string_value(json_object_get(json_array_get(R->sfiles, si), "id"));
        if (!gmcp_upload_id_ok(id))
            return fail("refused: the archive's spool file '%s' is not an upload id", id ? id : "");
        if (!R->replace && exists(R->p, apr_pstrcat(R->p, R->sdir, "/", id, NULL)))
            return fail("%s",
                        apr_psprintf(R->p,
                                     "refused: the spool file %s/%s exists; give "
                                     "--replace to overwrite it",
                                     R->sdir, id));
    }
    return 0;
}

/* Step 2: everything that can refuse, before anything changes; the job lock taken. A
 * dry run into a new SQLite file has no target to look into. */
static int restore_prepare(restore_job *R)
{
    int rv;
    if ((rv = restore_check_migrations(R)) != 0) return rv;
    if (R->dry && R->created) return 0;
    if ((rv = restore_check_target(R)) != 0) return rv;
    if ((rv = joblock_take(R->c, &R->l)) != 0) return rv;
    if ((rv = restore_count_rows(R)) != 0) return rv;
    return restore_check_spools(R);
}

/* Step 3 (--dry-run): what the restore would do. */
static void restore_print_plan(restore_job *R)
{
    json_t *mt = json_object_get(R->man, "tables");
    size_t si;
    if (R->created) {
        const char *sdir = spool_dir_of(R->c);
        printf("would apply migrations 1..%d\n", R->aver);
        print_tables("would load", mt);
        for (si = 0; si < R->nspool; si++)
            printf("would write spool file %s/%s (%" JSON_INTEGER_FORMAT " bytes)\n",
                   sdir ? sdir : "<no upload directory: refused>",
                   json_string_value(json_object_get(json_array_get(R->sfiles, si), "id")),
                   json_integer_value(json_object_get(json_array_get(R->sfiles, si), "bytes")));
        return;
    }
    for (si = 0; si < R->nspool; si++) {
        json_t *e = json_array_get(R->sfiles, si);
        const char *id = json_string_value(json_object_get(e, "id"));
        printf("would write spool file %s/%s (%" JSON_INTEGER_FORMAT " bytes)%s\n", R->sdir, id,
               json_integer_value(json_object_get(e, "bytes")),
               exists(R->p, apr_pstrcat(R->p, R->sdir, "/", id, NULL)) ? ", replacing it" : "");
    }
    if (R->tver < R->aver) printf("would apply migrations %d..%d\n", R->tver + 1, R->aver);
    if (R->existing)
        printf("would back up and delete the target's %" APR_INT64_T_FMT " rows\n", R->existing);
    print_tables("would load", mt);
    printf("nothing changed (dry run)\n");
}

/* Step 4a: an archive taken under another key pepper restores, but its API keys will
 * not verify. */
static void warn_other_pepper(restore_job *R)
{
    const char *afp = json_string_value(json_object_get(R->man, "key_pepper_fingerprint"));
    const char *cfp = pepper_fp(R->c);
    if (afp && cfp && strcmp(afp, cfp))
        fprintf(stderr,
                "gmcpctl: warning: the archive was taken with another key pepper "
                "than this configuration's: its API keys will not verify until "
                "GeminiMCPKeyPepper is the original one\n");
}

/* Step 4b (--replace): the target's rows backed up next to the archive first. */
static int backup_previous(restore_job *R)
{
    const char *pre = series_name(R->p, dir_of(R->p, R->path), "gmcp-pre-restore-");
    int rv = write_backup(R->c, pre, NULL, NULL, NULL);
    if (rv == 0) printf("the target's previous contents were backed up to %s\n", pre);
    return rv;
}

/* In the transaction: the migrations from the target's version to the archive's. */
static int tx_migrate(restore_job *R)
{
    dbx *x = &R->x;
    apr_pool_t *p = R->p;
    int i, j;
    if (x_exec(x,
               "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
               "name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)")) {
        R->err = apr_psprintf(p, "cannot create schema_migrations: %s", x_err(x));
        return -1;
    }
    for (i = R->tver; i < R->aver; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(R->migs, i, gmcp_migration);
        apr_array_header_t *st = gmcp_sql_split(p, m->sql);
        for (j = 0; j < st->nelts; j++)
            if (x_exec(x, APR_ARRAY_IDX(st, j, const char *))) {
                R->err = apr_psprintf(p, "migration %s failed at statement %d: %s", m->name, j + 1,
                                      x_err(x));
                return -1;
            }
        if (x_exec(x,
                   apr_psprintf(p,
                                "INSERT INTO schema_migrations (version, name, checksum, "
                                "applied_at) VALUES (%d, %s, %s, %s)",
                                m->version, qlit(p, m->name), qlit(p, m->checksum),
                                gmcp_now_str(p)))) {
            R->err = apr_psprintf(p, "cannot record migration %s: %s", m->name, x_err(x));
            return -1;
        }
    }
    return 0;
}

/* ... every table of the target's schema must come from the archive. */
static int tx_check_tables(restore_job *R)
{
    int i;
    if (list_tables(&R->x, R->p, &R->tables, &R->err)) return -1;
    for (i = 0; i < R->tables->nelts; i++)
        if (!find_table(R->man, APR_ARRAY_IDX(R->tables, i, table_info).name)) {
            R->err = apr_psprintf(R->p,
                                  "the archive has no table %s, which schema version %d "
                                  "has",
                                  APR_ARRAY_IDX(R->tables, i, table_info).name, R->aver);
            return -1;
        }
    return 0;
}

/* ... (--replace) every table emptied; the append-only triggers are suspended for it
 * (PostgreSQL: disabled; SQLite: dropped, kept in R->trig for tx_triggers_back). */
static int tx_empty(restore_job *R)
{
    dbx *x = &R->x;
    apr_pool_t *p = R->p;
    int i, nc;
    if (x->pg) {
        for (i = 0; i < R->tables->nelts; i++)
            if (x_exec(x,
                       apr_psprintf(p, "ALTER TABLE %s DISABLE TRIGGER USER",
                                    qid(p, APR_ARRAY_IDX(R->tables, i, table_info).name))))
                goto failed;
    }
    else {
        if (x_query(x, p,
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND "
                    "sql IS NOT NULL",
                    &nc, &R->trig)) {
            R->err = apr_psprintf(p, "cannot read the triggers: %s", x_err(x));
            return -1;
        }
        for (i = 0; i < R->trig->nelts; i++)
            if (x_exec(x,
                       apr_psprintf(p, "DROP TRIGGER %s",
                                    qid(p, APR_ARRAY_IDX(R->trig, i, const char **)[0]))))
                goto failed;
    }
    for (i = 0; i < R->tables->nelts; i++)
        if (x_exec(x,
                   apr_psprintf(p, "DELETE FROM %s",
                                qid(p, APR_ARRAY_IDX(R->tables, i, table_info).name))))
            goto failed;
    return 0;
failed:
    R->err = apr_psprintf(p, "cannot empty the target: %s", x_err(x));
    return -1;
}

/* ... the archive read again (it must still verify) and its rows and spool files loaded
 * (the files under temporary names). */
static int tx_load(restore_job *R)
{
    loader *L = &R->L;
    gmcp_arc_cb cb = {load_table, load_row};
    gmcp_arc_spool_cb scb = {load_spool_begin, load_spool_data, load_spool_end};
    json_t *again = NULL;
    const char *rerr = NULL;
    apr_status_t rv;
    int failed;
    L->x = &R->x;
    L->p = R->p;
    L->tables = R->tables;
    L->sdir = R->sdir;
    L->want = R->sfiles;
    L->spools = apr_array_make(R->p, (int)R->nspool + 1, sizeof(spool_out));
    rv = gmcp_arc_read_ex(R->p, R->path, R->secret, &cb, &scb, L, &again, &rerr);
    /* Also after a failure: it ends a COPY under way. */
    failed = load_finish(L) || rv != APR_SUCCESS;
    if (again) json_decref(again);
    /* rerr is set only when the archive itself failed (not a callback, nor the load). */
    if (failed)
        R->err = rerr ? apr_pstrcat(R->p, "the archive changed while it was read: ", rerr, NULL)
            : L->err  ? L->err
                      : "cannot load the archive";
    return failed ? -1 : 0;
}

/* ... (--replace) the triggers back. */
static int tx_triggers_back(restore_job *R)
{
    dbx *x = &R->x;
    int i;
    if (x->pg) {
        for (i = 0; i < R->tables->nelts; i++)
            if (x_exec(x,
                       apr_psprintf(R->p, "ALTER TABLE %s ENABLE TRIGGER USER",
                                    qid(R->p, APR_ARRAY_IDX(R->tables, i, table_info).name)))) {
                R->err = apr_psprintf(R->p, "cannot re-enable the triggers: %s", x_err(x));
                return -1;
            }
        return 0;
    }
    for (i = 0; R->trig && i < R->trig->nelts; i++)
        if (x_exec(x, APR_ARRAY_IDX(R->trig, i, const char **)[1])) {
            R->err = apr_psprintf(R->p, "cannot recreate the triggers: %s", x_err(x));
            return -1;
        }
    return 0;
}

/* ... the sequences past the loaded ids: PostgreSQL's serial columns. */
static int tx_sequences_pg(restore_job *R)
{
    dbx *x = &R->x;
    apr_pool_t *p = R->p;
    apr_array_header_t *seqs;
    int i, nc;
    if (x_query(x, p,
                "SELECT table_name, column_name FROM information_schema.columns WHERE "
                "table_schema = current_schema() AND column_default LIKE 'nextval(%'",
                &nc, &seqs)) {
        R->err = apr_psprintf(p, "cannot read the sequences: %s", x_err(x));
        return -1;
    }
    for (i = 0; i < seqs->nelts; i++) {
        const char **r = APR_ARRAY_IDX(seqs, i, const char **);
        const char *col = qid(p, r[1]);
        if (x_exec(x,
                   apr_psprintf(p,
                                "SELECT setval(pg_get_serial_sequence(%s, %s), "
                                "GREATEST(COALESCE(MAX(%s), 0), 1), MAX(%s) IS NOT NULL) "
                                "FROM %s",
                                qlit(p, qid(p, r[0])), qlit(p, r[1]), col, col, qid(p, r[0])))) {
            R->err = apr_psprintf(p, "cannot set the sequence of %s: %s", r[0], x_err(x));
            return -1;
        }
    }
    return 0;
}

/* ... and SQLite's sqlite_sequence (when some table is AUTOINCREMENT). */
static int tx_sequences_lite(restore_job *R)
{
    dbx *x = &R->x;
    apr_pool_t *p = R->p;
    apr_array_header_t *has, *seqs;
    int i, nc;
    if (x_query(x, p, "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'", &nc, &has)
        || !has->nelts)
        return 0;
    if (x_query(x, p, "SELECT name FROM sqlite_sequence", &nc, &seqs)) {
        R->err = apr_psprintf(p, "cannot read sqlite_sequence: %s", x_err(x));
        return -1;
    }
    for (i = 0; i < seqs->nelts; i++) {
        const char *t = APR_ARRAY_IDX(seqs, i, const char **)[0];
        if (x_exec(x,
                   apr_psprintf(p,
                                "UPDATE sqlite_sequence SET seq = MAX(seq, "
                                "(SELECT COALESCE(MAX(rowid), 0) FROM %s)) WHERE "
                                "name = %s",
                                qid(p, t), qlit(p, t)))) {
            R->err = apr_psprintf(p, "cannot set sqlite_sequence: %s", x_err(x));
            return -1;
        }
    }
    return 0;
}

/* ... everything re-read from the target and compared with the manifest. */
static int tx_compare(restore_job *R)
{
    json_t *man = R->man;
    int i;
    R->chk = gmcp_arc_out_open(R->p, NULL, NULL);
    if (dump_tables(&R->x, R->p, R->tables, R->chk, &R->err)) return -1;
    R->mt = gmcp_arc_tables(R->chk);
    for (i = 0; i < (int)json_array_size(R->mt); i++) {
        json_t *got = json_array_get(R->mt, (size_t)i);
        const char *name = json_string_value(json_object_get(got, "name"));
        json_t *want = find_table(man, name);
        if (!want || !json_equal(json_object_get(want, "rows"), json_object_get(got, "rows"))
            || !json_equal(json_object_get(want, "sha256"), json_object_get(got, "sha256"))) {
            R->err = apr_psprintf(
                R->p,
                "table %s reads back differently from the archive "
                "(rows %" APR_INT64_T_FMT " vs %" APR_INT64_T_FMT ")",
                name, (apr_int64_t)json_integer_value(json_object_get(got, "rows")),
                (apr_int64_t)(want ? json_integer_value(json_object_get(want, "rows")) : -1));
            return -1;
        }
    }
    if (json_array_size(R->mt) != json_array_size(json_object_get(man, "tables"))) {
        R->err = "the archive has tables the target's schema does not";
        return -1;
    }
    return 0;
}

/* The transaction failed: the load ended, everything rolled back. */
static int tx_abort(restore_job *R)
{
    if (R->L.ins || R->L.copying) load_finish(&R->L);
    x_exec(&R->x, "ROLLBACK");
    return fail("restore failed, nothing changed: %s", R->err ? R->err : "unknown error");
}

/* Step 4c: one transaction: migrations up to the archive's version, the tables checked,
 * emptied (--replace), loaded, triggers back, sequences set, everything re-read and
 * compared; committed only when all of it matched. */
static int restore_transaction(restore_job *R)
{
    dbx *x = &R->x;
    if (!x->pg) x_exec(x, "PRAGMA journal_mode=WAL");
    if (x_exec(x, x->pg ? "BEGIN" : "BEGIN IMMEDIATE"))
        return fail("cannot start the restore transaction: %s", x_err(x));
    if (tx_migrate(R) || tx_check_tables(R) || (R->existing && tx_empty(R)) || tx_load(R)
        || (R->existing && tx_triggers_back(R))
        || (x->pg ? tx_sequences_pg(R) : tx_sequences_lite(R)) || tx_compare(R))
        return tx_abort(R);
    if (x_exec(x, "COMMIT")) {
        R->err = apr_psprintf(R->p, "cannot commit: %s", x_err(x));
        return tx_abort(R);
    }
    R->created = 0; /* restored: the target stays */
    return 0;
}

/* Step 4e: what was restored (-v, --json). */
static void restore_report(restore_job *R)
{
    ctl *c = R->c;
    json_t *o;
    size_t si;
    if (!c->verbose && !c->json) return;
    o = json_pack("{s:s, s:i, s:O}", "restored", R->path, "schema_version", R->aver, "tables",
                  R->mt);
    if (R->nspool) {
        json_object_set_new(o, "spool_files", json_integer((json_int_t)R->nspool));
        json_object_set_new(o, "upload_dir", json_string(R->sdir));
    }
    if (c->json) {
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    else
        print_tables("restored", R->mt);
    if (!c->json)
        for (si = 0; si < R->nspool; si++)
            printf("restored spool file %s/%s\n", R->sdir,
                   json_string_value(json_object_get(json_array_get(R->sfiles, si), "id")));
    json_decref(o);
}

/* Step 4: the restore itself; after the commit the spool files take their names. */
static int restore_run(restore_job *R)
{
    int rv;
    warn_other_pepper(R);
    if (R->existing && (rv = backup_previous(R)) != 0) return rv;
    if ((rv = restore_transaction(R)) != 0) return rv;
    if (spools_place(&R->L, R->replace))
        return fail("%s",
                    apr_psprintf(R->p,
                                 "the database was restored, but spool files could "
                                 "not be put in place in %s (see above)",
                                 R->sdir));
    warn_missing_spools(&R->x, R->p, R->sdir, R->sfiles);
    restore_report(R);
    return 0;
}

/* Step 5, always: temporary spool files not put in place removed, the job lock
 * released, and a target this restore created removed again unless it was restored. */
static int restore_end(restore_job *R, int rv)
{
    ctl *c = R->c;
    spools_discard(&R->L);
    if (R->chk) gmcp_arc_out_close(R->chk);
    gmcp_abuf_free(&R->L.b);
    joblock_release(&R->l);
    if (rv && R->created && c->db.handle && c->params) {
        apr_dbd_close(c->db.driver, c->db.handle);
        c->db.handle = NULL;
        unlink(c->params);
        unlink(apr_pstrcat(R->p, c->params, "-wal", NULL));
        unlink(apr_pstrcat(R->p, c->params, "-shm", NULL));
        unlink(apr_pstrcat(R->p, c->params, ".cleanup-lock", NULL));
    }
    return rv;
}

/* Restore `path` into c's target. `man`: the archive's manifest (already verified).
 * 1. the target opened (or to be created); 2. every check that can refuse, the job lock;
 * 3. a dry run prints the plan, or 4. the pepper warning, the pre-restore backup, one
 * transaction, the spool files put in place, the report; 5. the end, always. */
static int do_restore(ctl *c, const char *path, const char *secret, json_t *man, int dry,
                      int replace)
{
    restore_job R;
    int rv;
    memset(&R, 0, sizeof(R));
    R.c = c;
    R.p = c->pool;
    R.path = path;
    R.secret = secret;
    R.man = man;
    R.sfiles = json_object_get(json_object_get(man, "spool"), "files");
    R.nspool = json_array_size(R.sfiles);
    R.dry = dry;
    R.replace = replace;
    R.aver = (int)json_integer_value(json_object_get(json_object_get(man, "schema"), "version"));
    R.L.fd = -1;
    if ((rv = restore_open(&R)) != 0) return rv; /* open_db said why */
    rv = restore_prepare(&R);
    if (!rv && dry)
        restore_print_plan(&R);
    else if (!rv)
        rv = restore_run(&R);
    return restore_end(&R, rv);
}

int cmd_restore(ctl *c, const char *path)
{
    json_t *man;
    const char *why, *secret;
    int bad, rv;
    secret = archive_secret(c, path, &bad);
    if (bad) return bad;
    if (check_archive(c, path, secret, &man, &why))
        return fail("%s", apr_psprintf(c->pool, "refused: %s does not verify: %s", path, why));
    if (c->config && !c->driver) {
        /* resolve the driver from --config before deciding whether the file exists */
        int r = open_db(c, 1);
        if (r) {
            json_decref(man);
            return r;
        }
    }
    rv = do_restore(c, path, secret, man, opt(c, OPT_DRY_RUN) != NULL, opt(c, OPT_REPLACE) != NULL);
    json_decref(man);
    return rv;
}

/* ---- copy ---------------------------------------------------------------------------------- */
int cmd_copy(ctl *c)
{
    const char *to_d = opt(c, OPT_TO_DRIVER), *to_p = opt(c, OPT_TO_PARAMS), *tmpdir, *tmp;
    const char *sdir = NULL;
    ctl t;
    json_t *man;
    const char *why;
    int rv;
    gmcpctl_joblock l;
    if (!to_d || !to_p) return usage_err("copy needs --to-driver and --to-params%s", "");
    if (strcmp(to_d, "sqlite3") && strcmp(to_d, "pgsql"))
        return usage_err("--to-driver '%s' must be sqlite3 or pgsql", to_d);
    if ((rv = open_db(c, 0)) != 0) return rv; /* also reads --config */
    if (opt(c, OPT_INCLUDE_UPLOADS)) {
        /* the source's spool directory is its configuration's; --upload-dir the target's */
        const char *tdir = opt(c, OPT_UPLOAD_DIR);
        struct stat a, b;
        sdir = c->httpd_gmcp ? apr_table_get(c->httpd_gmcp, "GeminiMCPUploadDir") : NULL;
        if (!sdir || !tdir)
            return usage_err("copy --include-uploads needs a --config with GeminiMCPUploadDir "
                             "(the source's spool files) and --upload-dir DIR (the target's)%s",
                             "");
        if (stat(sdir, &a) || !S_ISDIR(a.st_mode))
            return fail("the upload directory %s does not exist", sdir);
        if (stat(tdir, &b) || !S_ISDIR(b.st_mode))
            return fail("the upload directory %s does not exist", tdir);
        if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            return usage_err("--upload-dir %s is the source's own spool directory: the files "
                             "are already there (copy without --include-uploads)",
                             tdir);
    }
    tmpdir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    tmp = apr_psprintf(c->pool, "%s/gmcp-copy-%ld-%s" SERIES_SUFFIX, tmpdir, (long)getpid(),
                       utc_iso(c->pool, apr_time_now(), 1));
    if ((rv = joblock_take(c, &l)) != 0) return rv;
    rv = write_backup(c, tmp, NULL, NULL, sdir);
    joblock_release(&l);
    if (rv) return rv;
    if (check_archive(c, tmp, NULL, &man, &why)) {
        unlink(tmp);
        return fail("the copy's archive does not verify: %s", why);
    }
    t = *c;
    t.config = NULL;
    t.driver = to_d;
    t.params = to_p;
    t.httpd_gmcp = NULL;
    memset(&t.db, 0, sizeof(t.db));
    rv = do_restore(&t, tmp, NULL, man, opt(c, OPT_DRY_RUN) != NULL, opt(c, OPT_REPLACE) != NULL);
    if (t.db.handle) apr_dbd_close(t.db.driver, t.db.handle);
    json_decref(man);
    unlink(tmp);
    return rv;
}
