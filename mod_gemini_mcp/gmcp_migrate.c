/* gmcp_migrate.c — apply sql/<driver>/NNNN_*.sql in order, recorded with checksums. */
#include "gmcp_migrate.h"
#include "gmcp_errlog.h"
#include "gmcp_util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <apr_file_io.h>
#include <apr_file_info.h>
#include <apr_strings.h>

#define MIGRATE_LOCK_ID "727071"   /* pg_advisory_lock key shared by all gmcpctl runs */

static int cmp_version(const void *a, const void *b)
{
    return ((const gmcp_migration *)a)->version - ((const gmcp_migration *)b)->version;
}

int gmcp_migrations_load(apr_pool_t *p, const char *sql_dir, const char *driver,
                         apr_array_header_t **out, const char **err)
{
    const char *dir = apr_pstrcat(p, sql_dir, "/", driver, NULL);
    apr_dir_t *d;
    apr_finfo_t fi;
    apr_array_header_t *migs = apr_array_make(p, 8, sizeof(gmcp_migration));
    apr_status_t rv;
    int i;

    if ((rv = apr_dir_open(&d, dir, p)) != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0301",
                  "cannot open the migrations directory %s", dir);
        *err = apr_psprintf(p, "cannot open migrations directory %s", dir);
        return -1;
    }
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, d) == APR_SUCCESS) {
        const char *n = fi.name;
        size_t len = strlen(n);
        gmcp_migration *m;
        char *data;
        apr_size_t size;
        apr_file_t *f;
        apr_finfo_t ffi;
        if (fi.filetype != APR_REG || len < 9 || strcmp(n + len - 4, ".sql") != 0
            || !isdigit((unsigned char)n[0]))
            continue;
        m = apr_array_push(migs);
        memset(m, 0, sizeof(*m));
        m->version = atoi(n);
        m->name = apr_pstrndup(p, n, len - 4);
        m->path = apr_pstrcat(p, dir, "/", n, NULL);
        if ((rv = apr_file_open(&f, m->path, APR_FOPEN_READ, 0, p)) != APR_SUCCESS) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0302", "cannot open %s", m->path);
            *err = apr_psprintf(p, "cannot read %s", m->path);
            apr_dir_close(d);
            return -1;
        }
        if ((rv = apr_file_info_get(&ffi, APR_FINFO_SIZE, f)) != APR_SUCCESS) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0303", "cannot stat %s", m->path);
            *err = apr_psprintf(p, "cannot read %s", m->path);
            apr_file_close(f);
            apr_dir_close(d);
            return -1;
        }
        size = (apr_size_t)ffi.size;
        data = apr_palloc(p, size + 1);
        if (size && (rv = apr_file_read_full(f, data, size, NULL)) != APR_SUCCESS) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0304", "cannot read %s", m->path);
            *err = apr_psprintf(p, "cannot read %s", m->path);
            apr_file_close(f);
            apr_dir_close(d);
            return -1;
        }
        data[size] = '\0';
        apr_file_close(f);
        m->sql = data;
        m->checksum = gmcp_sha256_hex(p, data, size);
    }
    apr_dir_close(d);
    qsort(migs->elts, (size_t)migs->nelts, sizeof(gmcp_migration), cmp_version);
    for (i = 0; i < migs->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(migs, i, gmcp_migration);
        if (m->version != i + 1) {
            *err = apr_psprintf(p, "migrations in %s must be numbered 1, 2, 3... without gaps "
                                "or duplicates; found %s at position %d", dir, m->name, i + 1);
            return -1;
        }
    }
    if (migs->nelts == 0) {
        *err = apr_psprintf(p, "no migrations found in %s", dir);
        return -1;
    }
    *out = migs;
    return 0;
}

static int ensure_table(gmcp_db *db, const char **err)
{
    int rv = gmcp_db_exec_raw(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                  "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                                  "checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)", NULL);
    if (rv) *err = apr_psprintf(db->pool, "cannot create schema_migrations: %s",
                                gmcp_db_error(db, rv));
    return rv;
}

int gmcp_migrate_status(gmcp_db *db, apr_array_header_t *migs, const char **err)
{
    int version = 0, rv, i, j;
    gmcp_rows rs;
    if (gmcp_db_schema_version(db, &version, err)) return -1;
    if (version == 0) return 0;
    rv = gmcp_db_select_raw(db, "SELECT version, checksum, applied_at FROM schema_migrations "
                                "ORDER BY version", &rs);
    if (rv) {
        *err = apr_psprintf(db->pool, "cannot read schema_migrations: %s",
                            gmcp_db_error(db, rv));
        return -1;
    }
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **row = GMCP_ROW(&rs, i);
        int v = atoi(row[0]);
        for (j = 0; j < migs->nelts; j++) {
            gmcp_migration *m = &APR_ARRAY_IDX(migs, j, gmcp_migration);
            if (m->version == v) {
                m->applied = 1;
                m->applied_checksum = row[1];
                m->applied_at = apr_atoi64(row[2]);
            }
        }
        if (v > migs->nelts) {
            *err = apr_psprintf(db->pool, "the database has migration %d applied, newer than "
                                "any this gmcpctl knows (%d): use a newer gmcpctl", v,
                                migs->nelts);
            return -1;
        }
    }
    return 0;
}

static int apply_one(gmcp_db *db, gmcp_migration *m, const char **err)
{
    apr_array_header_t *stmts = gmcp_sql_split(db->pool, m->sql);
    apr_dbd_transaction_t *t = NULL;
    int i, rv = 0;
    if ((rv = gmcp_db_begin(db, &t)) != 0) {
        *err = apr_psprintf(db->pool, "cannot start a transaction: %s", gmcp_db_error(db, rv));
        if (t) gmcp_db_end(db, t, 1);
        return -1;
    }
    for (i = 0; i < stmts->nelts && !rv; i++) {
        rv = gmcp_db_exec_raw(db, APR_ARRAY_IDX(stmts, i, const char *), NULL);
        if (rv)
            *err = apr_psprintf(db->pool, "migration %s failed at statement %d: %s",
                                m->name, i + 1, gmcp_db_error(db, rv));
    }
    if (!rv) {
        const char *sql = apr_psprintf(db->pool, "INSERT INTO schema_migrations (version, name, "
                                       "checksum, applied_at) VALUES (%d, '%s', '%s', %s)",
                                       m->version, m->name, m->checksum,
                                       gmcp_now_str(db->pool));
        rv = gmcp_db_exec_raw(db, sql, NULL);
        if (rv)
            *err = apr_psprintf(db->pool, "cannot record migration %s: %s", m->name,
                                gmcp_db_error(db, rv));
    }
    if (gmcp_db_end(db, t, rv != 0) && !rv) {
        *err = apr_psprintf(db->pool, "cannot commit migration %s", m->name);
        rv = -1;
    }
    return rv ? -1 : 0;
}

static int sqlite_wal(gmcp_db *db, const char **err)
{
    gmcp_rows rs;
    /* WAL lets readers in every httpd child run beside one writer; it is a property of
     * the file, so setting it here once is enough. */
    int rv = gmcp_db_select_raw(db, "PRAGMA journal_mode=WAL", &rs);
    if (rv || rs.rows->nelts != 1 || !GMCP_ROW(&rs, 0)[0]
        || strcasecmp(GMCP_ROW(&rs, 0)[0], "wal") != 0) {
        *err = "cannot switch the SQLite database to WAL mode (is it on a network file system?)";
        return -1;
    }
    return 0;
}

int gmcp_migrate_apply(gmcp_db *db, apr_array_header_t *migs, int *applied, const char **err)
{
    int i, rv = 0;
    gmcp_rows rs;
    *applied = 0;
    if (!db->pgsql && sqlite_wal(db, err)) return -1;
    if (db->pgsql && gmcp_db_select_raw(db, "SELECT pg_advisory_lock(" MIGRATE_LOCK_ID ")", &rs)) {
        *err = "cannot take the migration lock";
        return -1;
    }
    if (ensure_table(db, err) || gmcp_migrate_status(db, migs, err)) {
        rv = -1;
        goto done;
    }
    for (i = 0; i < migs->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(migs, i, gmcp_migration);
        if (m->applied && strcmp(m->applied_checksum, m->checksum) != 0) {
            *err = apr_psprintf(db->pool, "migration %s was changed after it was applied "
                                "(checksum %.12s... in the database, %.12s... on disk); "
                                "restore the original file", m->name, m->applied_checksum,
                                m->checksum);
            rv = -1;
            goto done;
        }
    }
    for (i = 0; i < migs->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(migs, i, gmcp_migration);
        if (m->applied) continue;
        if (apply_one(db, m, err)) { rv = -1; goto done; }
        m->applied = 1;
        m->applied_checksum = m->checksum;
        (*applied)++;
    }
done:
    if (db->pgsql) gmcp_db_select_raw(db, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_ID ")", &rs);
    return rv;
}

static int starts_with_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Does [s, e) contain `w` as a whole word (case-insensitive)? */
static int has_word(const char *s, const char *e, const char *w)
{
    size_t n = strlen(w);
    const char *q;
    for (q = s; q + n <= e; q++)
        if (strncasecmp(q, w, n) == 0 && (q == s || !isalnum((unsigned char)q[-1]))
            && (q + n == e || !isalnum((unsigned char)q[n])))
            return 1;
    return 0;
}

apr_array_header_t *gmcp_sql_split(apr_pool_t *p, const char *s)
{
    apr_array_header_t *out = apr_array_make(p, 8, sizeof(const char *));
    const char *start = s;
    int in_trigger = -1;   /* unknown until the statement's first word */
    while (*s) {
        if (s[0] == '-' && s[1] == '-') {             /* comment to end of line */
            while (*s && *s != '\n') s++;
            continue;
        }
        if (*s == '\'' || *s == '"') {                /* quoted text or identifier */
            char q = *s++;
            while (*s && !(*s == q && s[1] != q)) s += (*s == q) ? 2 : 1;
            if (*s) s++;
            continue;
        }
        if (*s == '$') {                              /* $tag$ ... $tag$ */
            const char *e = s + 1;
            while (isalnum((unsigned char)*e) || *e == '_') e++;
            if (*e == '$') {
                size_t tlen = (size_t)(e - s + 1);
                const char *close = strstr(e + 1, apr_pstrndup(p, s, tlen));
                s = close ? close + tlen : s + strlen(s);
                continue;
            }
        }
        if (in_trigger < 0 && !isspace((unsigned char)*s)) {
            /* First significant character of a statement: note triggers, whose
             * bodies (SQLite's BEGIN ... END) contain semicolons up to END. */
            in_trigger = starts_with_ci(s, "CREATE TRIGGER") ? 1 : 0;
            start = s;
        }
        if (*s == ';') {
            int end = 1;
            if (in_trigger == 1 && has_word(start, s, "BEGIN")) {
                const char *b = s;
                while (b > start && isspace((unsigned char)b[-1])) b--;
                end = b - start >= 3 && strncasecmp(b - 3, "END", 3) == 0
                      && (b - start == 3 || !isalnum((unsigned char)b[-4]));
            }
            if (end) {
                if (in_trigger >= 0)
                    APR_ARRAY_PUSH(out, const char *) = apr_pstrndup(p, start,
                                                                     (apr_size_t)(s - start));
                in_trigger = -1;
                start = s + 1;
            }
        }
        s++;
    }
    if (in_trigger >= 0) {
        const char *e = s;
        while (e > start && isspace((unsigned char)e[-1])) e--;
        if (e > start) APR_ARRAY_PUSH(out, const char *) = apr_pstrndup(p, start,
                                                                         (apr_size_t)(e - start));
    }
    return out;
}
