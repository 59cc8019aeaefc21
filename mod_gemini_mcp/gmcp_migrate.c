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

static int cmp_version(const void *a, const void *b)
{
    return ((const gmcp_migration *)a)->version - ((const gmcp_migration *)b)->version;
}

/* The whole file at `path` into *data, NUL-terminated. APR_SUCCESS, or the error of the
 * file call (logged, *why set). */
static apr_status_t slurp(apr_pool_t *p, const char *path, char **data, apr_size_t *len,
                          const char **why)
{
    apr_file_t *f = NULL;
    apr_finfo_t ffi;
    apr_status_t rv;
    apr_size_t size;
    if ((rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, p)) != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0302", "cannot open %s", path);
        f = NULL;
        goto leave;
    }
    if ((rv = apr_file_info_get(&ffi, APR_FINFO_SIZE, f)) != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0303", "cannot stat %s", path);
        goto leave;
    }
    size = (apr_size_t)ffi.size;
    *data = apr_palloc(p, size + 1);
    if (size && (rv = apr_file_read_full(f, *data, size, NULL)) != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0304", "cannot read %s", path);
        goto leave;
    }
    (*data)[size] = '\0';
    *len = size;
leave:
    if (f) apr_file_close(f);
    if (rv != APR_SUCCESS) {
        *data = NULL;
        *why = apr_psprintf(p, "cannot read %s", path);
    }
    return rv;
}

static int ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && strcmp(s + len - n, suffix) == 0;
}

/* The NNNN_*.sql files of dir, read: up migrations into migs, down scripts (NNNN_name.down.sql
 * undoes NNNN_name.sql: kept aside, never an up migration) into downs, both unsorted.
 * APR_SUCCESS, or the error of the directory or file call (logged, *why set). */
static apr_status_t read_migration_files(apr_pool_t *p, const char *dir, apr_array_header_t *migs,
                                         apr_array_header_t *downs, const char **why)
{
    apr_dir_t *d;
    apr_finfo_t fi;
    apr_status_t rv;

    if ((rv = apr_dir_open(&d, dir, p)) != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0301",
                  "cannot open the migrations directory %s", dir);
        *why = apr_psprintf(p, "cannot open migrations directory %s", dir);
        return rv;
    }
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, d) == APR_SUCCESS) {
        const char *n = fi.name;
        size_t len = strlen(n);
        int down = ends_with(n, len, ".down.sql");
        gmcp_migration *m;
        char *sql = NULL;
        apr_size_t size = 0;
        if (fi.filetype != APR_REG || len < 9 || !ends_with(n, len, ".sql")
            || !isdigit((unsigned char)n[0]))
            continue;
        m = apr_array_push(down ? downs : migs);
        memset(m, 0, sizeof(*m));
        m->version = atoi(n);
        m->name = apr_pstrndup(p, n, len - (down ? 9 : 4));
        m->path = apr_pstrcat(p, dir, "/", n, NULL);
        if ((rv = slurp(p, m->path, &sql, &size, why)) != APR_SUCCESS) goto leave;
        m->sql = sql;
        m->checksum = gmcp_sha256_hex(p, m->sql, size);
    }
leave:
    apr_dir_close(d);
    return rv;
}

/* The up migrations (sorted) are 1, 2, 3... and there is at least one: APR_SUCCESS, or
 * APR_EINVAL with *why. */
static apr_status_t check_numbering(apr_pool_t *p, const char *dir, apr_array_header_t *migs,
                                    const char **why)
{
    int i;
    for (i = 0; i < migs->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(migs, i, gmcp_migration);
        if (m->version != i + 1) {
            *why = apr_psprintf(p,
                                "migrations in %s must be numbered 1, 2, 3... without gaps "
                                "or duplicates; found %s at position %d",
                                dir, m->name, i + 1);
            return APR_EINVAL;
        }
    }
    if (migs->nelts == 0) {
        *why = apr_psprintf(p, "no migrations found in %s", dir);
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

/* Each down script to the up migration of its number: at most one each. APR_SUCCESS, or
 * APR_EINVAL with *why. */
static apr_status_t attach_down_scripts(apr_pool_t *p, const char *dir, apr_array_header_t *migs,
                                        apr_array_header_t *downs, const char **why)
{
    int j;
    for (j = 0; j < downs->nelts; j++) {
        gmcp_migration *dn = &APR_ARRAY_IDX(downs, j, gmcp_migration);
        gmcp_migration *m;
        if (dn->version < 1 || dn->version > migs->nelts) {
            *why = apr_psprintf(p, "down script %s.down.sql in %s has no migration %04d", dn->name,
                                dir, dn->version);
            return APR_EINVAL;
        }
        m = &APR_ARRAY_IDX(migs, dn->version - 1, gmcp_migration);
        if (m->down_sql) {
            *why = apr_psprintf(p, "migration %s has two down scripts in %s", m->name, dir);
            return APR_EINVAL;
        }
        m->down_path = dn->path;
        m->down_sql = dn->sql;
    }
    return APR_SUCCESS;
}

apr_status_t gmcp_migrations_load(apr_pool_t *p, const char *sql_dir, const char *driver,
                                  apr_array_header_t **out, const char **why)
{
    const char *dir = apr_pstrcat(p, sql_dir, "/", driver, NULL);
    apr_array_header_t *migs = apr_array_make(p, 8, sizeof(gmcp_migration));
    apr_array_header_t *downs = apr_array_make(p, 8, sizeof(gmcp_migration));
    apr_status_t rv;

    if ((rv = read_migration_files(p, dir, migs, downs, why)) != APR_SUCCESS) return rv;
    qsort(migs->elts, (size_t)migs->nelts, sizeof(gmcp_migration), cmp_version);
    if ((rv = check_numbering(p, dir, migs, why)) != APR_SUCCESS
        || (rv = attach_down_scripts(p, dir, migs, downs, why)) != APR_SUCCESS)
        return rv;
    *out = migs;
    return APR_SUCCESS;
}

static apr_status_t ensure_table(gmcp_db *db, const char **why)
{
    apr_status_t rv = gmcp_db_exec_raw(db,
                                       "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                       "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                                       "checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                                       NULL);
    if (rv != APR_SUCCESS)
        *why = apr_psprintf(db->pool, "cannot create schema_migrations: %s", gmcp_db_error(db, -1));
    return rv;
}

apr_status_t gmcp_migrate_inspect(gmcp_db *db, apr_array_header_t *migs,
                                  apr_array_header_t **missing, const char **why)
{
    int version = 0, i, j;
    apr_status_t rv;
    gmcp_rows rs;
    *missing = apr_array_make(db->pool, 1, sizeof(gmcp_migration));
    for (j = 0; j < migs->nelts; j++) {
        gmcp_migration *m = &APR_ARRAY_IDX(migs, j, gmcp_migration);
        m->applied = 0;
        m->applied_at = 0;
        m->applied_checksum = NULL;
    }
    if ((rv = gmcp_db_schema_version(db, &version, why)) != APR_SUCCESS) return rv;
    if (version == 0) return APR_SUCCESS;
    rv = gmcp_db_select_raw(db,
                            "SELECT version, checksum, applied_at, name "
                            "FROM schema_migrations ORDER BY version",
                            &rs);
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(db->pool, "cannot read schema_migrations: %s", gmcp_db_error(db, -1));
        return rv;
    }
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **row = GMCP_ROW(&rs, i);
        int v = atoi(row[0]), found = 0;
        for (j = 0; j < migs->nelts; j++) {
            gmcp_migration *m = &APR_ARRAY_IDX(migs, j, gmcp_migration);
            if (m->version == v) {
                m->applied = 1;
                m->applied_checksum = row[1];
                m->applied_at = apr_atoi64(row[2]);
                found = 1;
            }
        }
        if (!found) {
            gmcp_migration *m = apr_array_push(*missing);
            memset(m, 0, sizeof(*m));
            m->version = v;
            m->name = row[3] ? row[3] : apr_psprintf(db->pool, "%04d", v);
            m->checksum = m->applied_checksum = row[1];
            m->applied_at = apr_atoi64(row[2]);
            m->applied = m->missing = 1;
        }
    }
    return APR_SUCCESS;
}

apr_status_t gmcp_migrate_status(gmcp_db *db, apr_array_header_t *migs, const char **why)
{
    apr_array_header_t *missing;
    apr_status_t rv = gmcp_migrate_inspect(db, migs, &missing, why);
    if (rv != APR_SUCCESS) return rv;
    if (missing->nelts) {
        gmcp_migration *m = &APR_ARRAY_IDX(missing, missing->nelts - 1, gmcp_migration);
        *why = apr_psprintf(db->pool,
                            "the database has migration %d applied, newer than "
                            "any this gmcpctl knows (%d): use a newer gmcpctl",
                            m->version, migs->nelts);
        return GMCP_ESCHEMA;
    }
    return APR_SUCCESS;
}

/* One migration and its schema_migrations row, in one transaction. */
static apr_status_t apply_one(gmcp_db *db, gmcp_migration *m, const char **why)
{
    apr_array_header_t *stmts = gmcp_sql_split(db->pool, m->sql);
    apr_dbd_transaction_t *t = NULL;
    const char *sql;
    apr_status_t rv, end;
    int i;
    if ((rv = gmcp_db_begin(db, &t)) != APR_SUCCESS) {
        *why = apr_psprintf(db->pool, "cannot start a transaction: %s", gmcp_db_error(db, -1));
        goto leave;
    }
    for (i = 0; i < stmts->nelts; i++) {
        rv = gmcp_db_exec_raw(db, APR_ARRAY_IDX(stmts, i, const char *), NULL);
        if (rv != APR_SUCCESS) {
            *why = apr_psprintf(db->pool, "migration %s failed at statement %d: %s", m->name, i + 1,
                                gmcp_db_error(db, -1));
            goto leave;
        }
    }
    sql = apr_psprintf(db->pool,
                       "INSERT INTO schema_migrations (version, name, checksum, "
                       "applied_at) VALUES (%d, '%s', '%s', %s)",
                       m->version, m->name, m->checksum, gmcp_now_str(db->pool));
    if ((rv = gmcp_db_exec_raw(db, sql, NULL)) != APR_SUCCESS)
        *why = apr_psprintf(db->pool, "cannot record migration %s: %s", m->name,
                            gmcp_db_error(db, -1));
leave:
    end = t ? gmcp_db_end(db, t, rv != APR_SUCCESS) : APR_SUCCESS;
    if (rv == APR_SUCCESS && end != APR_SUCCESS) {
        *why = apr_psprintf(db->pool, "cannot commit migration %s", m->name);
        rv = end;
    }
    return rv;
}

static apr_status_t sqlite_wal(gmcp_db *db, const char **why)
{
    gmcp_rows rs;
    /* WAL lets readers in every httpd child run beside one writer; it is a property of
     * the file, so setting it here once is enough. */
    apr_status_t rv = gmcp_db_select_raw(db, "PRAGMA journal_mode=WAL", &rs);
    if (rv == APR_SUCCESS
        && (rs.rows->nelts != 1 || !GMCP_ROW(&rs, 0)[0]
            || strcasecmp(GMCP_ROW(&rs, 0)[0], "wal") != 0))
        rv = GMCP_EDB; /* it answered, but stays in another mode */
    if (rv != APR_SUCCESS)
        *why = "cannot switch the SQLite database to WAL mode (is it on a network file system?)";
    return rv;
}

/* The migration lock (PostgreSQL; SQLite serialises writers itself). */
static apr_status_t pg_lock(gmcp_db *db, const char **why)
{
    gmcp_rows rs;
    apr_status_t rv = APR_SUCCESS;
    if (db->pgsql
        && (rv = gmcp_db_select_raw(db, "SELECT pg_advisory_lock(" GMCP_MIGRATE_LOCK_KEY ")", &rs))
            != APR_SUCCESS)
        *why = "cannot take the migration lock";
    return rv;
}

static void pg_unlock(gmcp_db *db)
{
    gmcp_rows rs;
    if (db->pgsql)
        gmcp_db_select_raw(db, "SELECT pg_advisory_unlock(" GMCP_MIGRATE_LOCK_KEY ")", &rs);
}

apr_status_t gmcp_migrate_apply(gmcp_db *db, apr_array_header_t *migs, int *applied,
                                const char **why)
{
    apr_status_t rv;
    int i;
    *applied = 0;
    if (!db->pgsql && (rv = sqlite_wal(db, why)) != APR_SUCCESS) return rv;
    if ((rv = pg_lock(db, why)) != APR_SUCCESS) return rv;
    if ((rv = ensure_table(db, why)) != APR_SUCCESS
        || (rv = gmcp_migrate_status(db, migs, why)) != APR_SUCCESS)
        goto leave;
    for (i = 0; i < migs->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(migs, i, gmcp_migration);
        if (m->applied && strcmp(m->applied_checksum, m->checksum) != 0) {
            *why = apr_psprintf(db->pool,
                                "migration %s was changed after it was applied "
                                "(checksum %.12s... in the database, %.12s... on disk); "
                                "restore the original file",
                                m->name, m->applied_checksum, m->checksum);
            rv = GMCP_ESCHEMA;
            goto leave;
        }
    }
    for (i = 0; i < migs->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(migs, i, gmcp_migration);
        if (m->applied) continue;
        if ((rv = apply_one(db, m, why)) != APR_SUCCESS) goto leave;
        m->applied = 1;
        m->applied_checksum = m->checksum;
        (*applied)++;
    }
leave:
    pg_unlock(db);
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
    int in_trigger = -1; /* unknown until the statement's first word */
    while (*s) {
        if (s[0] == '-' && s[1] == '-') { /* comment to end of line */
            while (*s && *s != '\n') s++;
            continue;
        }
        if (*s == '\'' || *s == '"') { /* quoted text or identifier */
            char q = *s++;
            while (*s && !(*s == q && s[1] != q)) s += (*s == q) ? 2 : 1;
            if (*s) s++;
            continue;
        }
        if (*s == '$') { /* $tag$ ... $tag$ */
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
                    APR_ARRAY_PUSH(out, const char *) =
                        apr_pstrndup(p, start, (apr_size_t)(s - start));
                in_trigger = -1;
                start = s + 1;
            }
        }
        s++;
    }
    if (in_trigger >= 0) {
        const char *e = s;
        while (e > start && isspace((unsigned char)e[-1])) e--;
        if (e > start)
            APR_ARRAY_PUSH(out, const char *) = apr_pstrndup(p, start, (apr_size_t)(e - start));
    }
    return out;
}

/* ---- rolling back ---------------------------------------------------------------- */

/* The next word of a statement: an identifier or keyword (lower-cased unless quoted), or
 * one punctuation character; comments and whitespace skipped. NULL at the end. */
static const char *next_token(apr_pool_t *p, const char **sp)
{
    const char *s = *sp, *b;
    for (;;) {
        while (isspace((unsigned char)*s)) s++;
        if (s[0] == '-' && s[1] == '-') {
            while (*s && *s != '\n') s++;
            continue;
        }
        if (s[0] == '/' && s[1] == '*') {
            const char *e = strstr(s + 2, "*/");
            s = e ? e + 2 : s + strlen(s);
            continue;
        }
        break;
    }
    if (!*s) {
        *sp = s;
        return NULL;
    }
    b = s;
    if (*s == '"' || *s == '`') { /* quoted identifier: as written */
        char q = *s++;
        while (*s && *s != q) s++;
        *sp = *s ? s + 1 : s;
        return apr_pstrndup(p, b + 1, (apr_size_t)(s - b - 1));
    }
    if (isalnum((unsigned char)*s) || *s == '_') {
        char *w, *o;
        while (isalnum((unsigned char)*s) || *s == '_' || *s == '.' || *s == '$') s++;
        w = apr_pstrndup(p, b, (apr_size_t)(s - b));
        for (o = w; *o; o++) *o = (char)tolower((unsigned char)*o);
        *sp = s;
        return w;
    }
    *sp = s + 1;
    return apr_pstrndup(p, s, 1);
}

static void add_table(apr_array_header_t *out, const char *t)
{
    int i;
    if (!t || !*t || strchr(",;()", *t)) return;
    for (i = 0; i < out->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(out, i, const char *), t)) return;
    APR_ARRAY_PUSH(out, const char *) = t;
}

apr_array_header_t *gmcp_sql_data_tables(apr_pool_t *p, const char *script)
{
    apr_array_header_t *stmts = gmcp_sql_split(p, script);
    apr_array_header_t *out = apr_array_make(p, 4, sizeof(const char *));
    int i;
    for (i = 0; i < stmts->nelts; i++) {
        const char *s = APR_ARRAY_IDX(stmts, i, const char *);
        const char *w1 = next_token(p, &s), *w2 = next_token(p, &s), *t;
        if (!w1 || !w2) continue;
        if (!strcmp(w1, "drop") && !strcmp(w2, "table")) {
            /* DROP TABLE [IF EXISTS] a [, b ...] [CASCADE|RESTRICT] */
            while ((t = next_token(p, &s)) != NULL) {
                if (!strcmp(t, "if") || !strcmp(t, "exists") || !strcmp(t, ",")
                    || !strcmp(t, "cascade") || !strcmp(t, "restrict"))
                    continue;
                add_table(out, t);
            }
        }
        else if (!strcmp(w1, "truncate")) {
            /* TRUNCATE [TABLE] [ONLY] a [*] [, b ...] [options] */
            t = w2;
            do {
                if (!strcmp(t, "table") || !strcmp(t, "only") || !strcmp(t, ",") || !strcmp(t, "*"))
                    continue;
                if (!strcmp(t, "restart") || !strcmp(t, "continue") || !strcmp(t, "cascade")
                    || !strcmp(t, "restrict"))
                    break;
                add_table(out, t);
            } while ((t = next_token(p, &s)) != NULL);
        }
        else if (!strcmp(w1, "delete") && !strcmp(w2, "from")) {
            t = next_token(p, &s);
            if (t && !strcmp(t, "only")) t = next_token(p, &s);
            add_table(out, t);
        }
        else if (!strcmp(w1, "alter") && !strcmp(w2, "table")) {
            /* ALTER TABLE [IF EXISTS] [ONLY] t ... DROP [COLUMN] c ... (not DROP
             * CONSTRAINT / DEFAULT / NOT NULL / EXPRESSION / IDENTITY) */
            const char *name = NULL, *prev = NULL;
            while ((t = next_token(p, &s)) != NULL) {
                if (!name) {
                    if (strcmp(t, "if") && strcmp(t, "exists") && strcmp(t, "only")) name = t;
                    prev = t;
                    continue;
                }
                if (prev && !strcmp(prev, "drop")) {
                    if (!strcmp(t, "column")
                        || (strcmp(t, "constraint") && strcmp(t, "default") && strcmp(t, "not")
                            && strcmp(t, "expression") && strcmp(t, "identity")))
                        add_table(out, name);
                }
                prev = t;
            }
        }
    }
    return out;
}

static int plain_identifier(const char *t)
{
    if (!*t || isdigit((unsigned char)*t)) return 0;
    for (; *t; t++)
        if (!isalnum((unsigned char)*t) && *t != '_') return 0;
    return 1;
}

static const char *sql_quote(apr_pool_t *p, const char *v)
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

/* Does table `t` exist (*exists 1 or 0)? APR_SUCCESS or GMCP_EDB. */
static apr_status_t table_exists(gmcp_db *db, const char *t, int *exists)
{
    gmcp_rows rs;
    const char *sql = db->pgsql
        ? apr_psprintf(db->pool, "SELECT to_regclass(%s) IS NOT NULL",
                       sql_quote(db->pool, apr_pstrcat(db->pool, "\"", t, "\"", NULL)))
        : apr_psprintf(db->pool,
                       "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                       "AND name = %s",
                       sql_quote(db->pool, t));
    apr_status_t rv = gmcp_db_select_raw(db, sql, &rs);
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1 || !GMCP_ROW(&rs, 0)[0]) return GMCP_EDB;
    *exists = !strcmp(GMCP_ROW(&rs, 0)[0], db->pgsql ? "t" : "1");
    return APR_SUCCESS;
}

/* Does existing table `t` hold a row (*has_rows 1 or 0)? APR_SUCCESS or GMCP_EDB. On
 * PostgreSQL the table is locked first (until the transaction ends), so that no row
 * arrives between this check and the down script. */
static apr_status_t table_has_rows(gmcp_db *db, const char *t, int *has_rows)
{
    gmcp_rows rs;
    apr_status_t rv;
    if (db->pgsql
        && (rv = gmcp_db_exec_raw(db,
                                  apr_psprintf(db->pool,
                                               "LOCK TABLE \"%s\" IN ACCESS "
                                               "EXCLUSIVE MODE",
                                               t),
                                  NULL))
            != APR_SUCCESS)
        return rv;
    rv = gmcp_db_select_raw(db, apr_psprintf(db->pool, "SELECT EXISTS (SELECT 1 FROM \"%s\")", t),
                            &rs);
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1 || !GMCP_ROW(&rs, 0)[0]) return GMCP_EDB;
    *has_rows = !strcmp(GMCP_ROW(&rs, 0)[0], db->pgsql ? "t" : "1");
    return APR_SUCCESS;
}

/* gmcp_migrate_down's plan: what to undo and what was found on the way. */
typedef struct {
    gmcp_db *db;
    apr_pool_t *p;
    apr_array_header_t *migs;
    int target;
    int current;              /* the highest applied version */
    apr_array_header_t *todo; /* gmcp_migration *: what to undo, newest first */
    const char *names;        /* their names, newest first, space-separated */
    const char *lossy;        /* what the rollback would drop; NULL: nothing */
    int audit_survives;       /* no down script drops data from audit_log */
    const char **why;
} down_plan;

/* Step 1: every applied migration is as its file says (else GMCP_ESCHEMA); none to undo
 * lacks a file (GMCP_ESCHEMA). */
static apr_status_t down_check_applied(down_plan *dp)
{
    apr_array_header_t *missing;
    apr_status_t rv;
    int i;
    if ((rv = gmcp_migrate_inspect(dp->db, dp->migs, &missing, dp->why)) != APR_SUCCESS) return rv;
    for (i = 0; i < dp->migs->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(dp->migs, i, gmcp_migration);
        if (m->applied && m->version > dp->current) dp->current = m->version;
        if (m->applied && strcmp(m->applied_checksum, m->checksum) != 0) {
            *dp->why = apr_psprintf(dp->p,
                                    "migration %s was changed after it was applied "
                                    "(checksum %.12s... in the database, %.12s... on disk): "
                                    "restore the original file before rolling back",
                                    m->name, m->applied_checksum, m->checksum);
            return GMCP_ESCHEMA;
        }
    }
    for (i = 0; i < missing->nelts; i++) {
        gmcp_migration *m = &APR_ARRAY_IDX(missing, i, gmcp_migration);
        if (m->version > dp->target) {
            *dp->why = apr_psprintf(dp->p,
                                    "migration %s is applied but has no file in the "
                                    "migrations directory: it cannot be rolled back",
                                    m->name);
            return GMCP_ESCHEMA;
        }
    }
    return APR_SUCCESS;
}

/* Step 2: what to undo, newest first; each one must have its down script (else
 * APR_ENOENT). */
static apr_status_t down_collect(down_plan *dp)
{
    int i;
    dp->todo = apr_array_make(dp->p, 4, sizeof(gmcp_migration *));
    for (i = dp->migs->nelts - 1; i >= 0; i--) {
        gmcp_migration *m = &APR_ARRAY_IDX(dp->migs, i, gmcp_migration);
        if (!m->applied || m->version <= dp->target) continue;
        if (!m->down_sql) {
            *dp->why = apr_psprintf(dp->p,
                                    "migration %s has no down script (%s.down.sql): it "
                                    "cannot be rolled back",
                                    m->name, m->name);
            return APR_ENOENT;
        }
        APR_ARRAY_PUSH(dp->todo, gmcp_migration *) = m;
        dp->names = apr_pstrcat(dp->p, dp->names, *dp->names ? " " : "", m->name, NULL);
    }
    return APR_SUCCESS;
}

/* Step 3: one transaction for the whole rollback: the checks below hold until it ends.
 * *t is NULL when it could not be started. */
static apr_status_t down_begin(down_plan *dp, apr_dbd_transaction_t **t)
{
    apr_status_t rv = gmcp_db_begin(dp->db, t);
    if (rv != APR_SUCCESS) {
        *dp->why = apr_psprintf(dp->p, "cannot start a transaction: %s", gmcp_db_error(dp->db, -1));
        if (*t) gmcp_db_end(dp->db, *t, 1);
        *t = NULL;
    }
    return rv;
}

/* Every table a down script drops, drops columns of, deletes from or truncates, each
 * once, with the names of the migrations whose scripts do ("a, b") in *owners. */
static void down_data_tables(down_plan *dp, apr_array_header_t **tables,
                             apr_array_header_t **owners)
{
    int i, j, k;
    *tables = apr_array_make(dp->p, 8, sizeof(const char *));
    *owners = apr_array_make(dp->p, 8, sizeof(const char *));
    for (i = 0; i < dp->todo->nelts; i++) {
        gmcp_migration *m = APR_ARRAY_IDX(dp->todo, i, gmcp_migration *);
        apr_array_header_t *ts = gmcp_sql_data_tables(dp->p, m->down_sql);
        for (j = 0; j < ts->nelts; j++) {
            const char *tn = APR_ARRAY_IDX(ts, j, const char *);
            if (!strcmp(tn, "audit_log")) dp->audit_survives = 0;
            for (k = 0; k < (*tables)->nelts; k++)
                if (!strcmp(APR_ARRAY_IDX(*tables, k, const char *), tn)) break;
            if (k == (*tables)->nelts) {
                APR_ARRAY_PUSH(*tables, const char *) = tn;
                APR_ARRAY_PUSH(*owners, const char *) = m->name;
            }
            else {
                APR_ARRAY_IDX(*owners, k, const char *) = apr_pstrcat(
                    dp->p, APR_ARRAY_IDX(*owners, k, const char *), ", ", m->name, NULL);
            }
        }
    }
}

/* Step 4: would it drop data? Of the tables above, those that exist now and hold a row
 * (and those whose names cannot be checked) go into dp->lossy; refused unless `force`
 * (APR_EINVAL, *refused = 1). */
static apr_status_t down_check_loss(down_plan *dp, int force, int *refused)
{
    apr_array_header_t *tables, *owners;
    apr_status_t rv;
    int k;
    down_data_tables(dp, &tables, &owners);
    for (k = 0; k < tables->nelts; k++) {
        const char *tn = APR_ARRAY_IDX(tables, k, const char *), *why = NULL;
        int ex = 0, rows = 0;
        if (!plain_identifier(tn)) { why = apr_psprintf(dp->p, "%s cannot be checked", tn); }
        else if ((rv = table_exists(dp->db, tn, &ex)) != APR_SUCCESS
                 || (ex && (rv = table_has_rows(dp->db, tn, &rows)) != APR_SUCCESS)) {
            *dp->why =
                apr_psprintf(dp->p, "cannot check table %s: %s", tn, gmcp_db_error(dp->db, -1));
            return rv;
        }
        else if (ex && rows) {
            why = apr_psprintf(dp->p, "%s has rows", tn);
        }
        if (why)
            dp->lossy =
                apr_psprintf(dp->p, "%s%s%s (%s)", dp->lossy ? dp->lossy : "",
                             dp->lossy ? "; " : "", why, APR_ARRAY_IDX(owners, k, const char *));
    }
    if (dp->lossy && !force) {
        *refused = 1;
        *dp->why = apr_psprintf(dp->p,
                                "rolling back to version %d would drop data: %s; "
                                "nothing was changed (--force drops it)",
                                dp->target, dp->lossy);
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

/* Step 5: the audit row goes in first, in the same transaction, while the table exists;
 * when the rollback drops audit_log itself there is nowhere left to keep it (nor when
 * whether it exists cannot be told: then the down scripts fail too). */
static apr_status_t down_audit(down_plan *dp, const char *actor, int *audited)
{
    const char *detail, *sql;
    apr_status_t rv;
    int exists = 0;
    if (!actor || !dp->audit_survives || table_exists(dp->db, "audit_log", &exists) != APR_SUCCESS
        || !exists)
        return APR_SUCCESS;
    detail = apr_psprintf(dp->p, "from version %d to %d: %s%s", dp->current, dp->target, dp->names,
                          dp->lossy ? " (forced)" : "");
    sql = apr_psprintf(dp->p,
                       "INSERT INTO audit_log (at, actor, action, key_id, detail) "
                       "VALUES (%s, %s, 'schema.down', '', %s)",
                       gmcp_now_str(dp->p), sql_quote(dp->p, actor), sql_quote(dp->p, detail));
    if ((rv = gmcp_db_exec_raw(dp->db, sql, NULL)) != APR_SUCCESS) {
        *dp->why = apr_psprintf(dp->p, "cannot write the audit log: %s", gmcp_db_error(dp->db, -1));
        return rv;
    }
    *audited = 1;
    return APR_SUCCESS;
}

/* Step 6: each down script, then its schema_migrations row; `done` lists them. */
static apr_status_t down_run_scripts(down_plan *dp, apr_array_header_t *done)
{
    apr_status_t rv;
    int i, j;
    for (i = 0; i < dp->todo->nelts; i++) {
        gmcp_migration *m = APR_ARRAY_IDX(dp->todo, i, gmcp_migration *);
        apr_array_header_t *stmts = gmcp_sql_split(dp->p, m->down_sql);
        for (j = 0; j < stmts->nelts; j++) {
            rv = gmcp_db_exec_raw(dp->db, APR_ARRAY_IDX(stmts, j, const char *), NULL);
            if (rv != APR_SUCCESS) {
                *dp->why = apr_psprintf(dp->p,
                                        "down script of %s failed at statement %d: %s; "
                                        "nothing was changed",
                                        m->name, j + 1, gmcp_db_error(dp->db, -1));
                return rv;
            }
        }
        rv = gmcp_db_exec_raw(dp->db,
                              apr_psprintf(dp->p,
                                           "DELETE FROM schema_migrations "
                                           "WHERE version = %d",
                                           m->version),
                              NULL);
        if (rv != APR_SUCCESS) {
            *dp->why = apr_psprintf(dp->p,
                                    "cannot remove migration %s from schema_migrations: "
                                    "%s",
                                    m->name, gmcp_db_error(dp->db, -1));
            return rv;
        }
        APR_ARRAY_PUSH(done, const char *) = m->name;
    }
    return APR_SUCCESS;
}

/* Step 7: commit when everything went through (rv APR_SUCCESS), else roll back; after a
 * rollback nothing was done or audited, after a commit the undone migrations are not
 * applied. The outcome: rv, or the commit's failure. */
static apr_status_t down_end(down_plan *dp, apr_dbd_transaction_t *t, apr_status_t rv,
                             apr_array_header_t *done, int *audited)
{
    apr_status_t end = gmcp_db_end(dp->db, t, rv != APR_SUCCESS);
    int i;
    if (rv == APR_SUCCESS && end != APR_SUCCESS) {
        *dp->why = "cannot commit the rollback; nothing was changed";
        rv = end;
    }
    if (rv != APR_SUCCESS) {
        apr_array_clear(done);
        *audited = 0;
        return rv;
    }
    for (i = 0; i < dp->todo->nelts; i++) {
        gmcp_migration *m = APR_ARRAY_IDX(dp->todo, i, gmcp_migration *);
        m->applied = 0;
        m->applied_at = 0;
        m->applied_checksum = NULL;
    }
    return APR_SUCCESS;
}

apr_status_t gmcp_migrate_down(gmcp_db *db, apr_array_header_t *migs, int target, int force,
                               const char *actor, apr_array_header_t **done, int *refused,
                               int *audited, const char **why)
{
    down_plan dp;
    apr_dbd_transaction_t *t = NULL;
    apr_status_t rv;

    *done = apr_array_make(db->pool, 4, sizeof(const char *));
    *refused = 0;
    *audited = 0;
    if (target < 0) {
        *why = "the target version must be 0 or more";
        return APR_EINVAL;
    }
    if ((rv = pg_lock(db, why)) != APR_SUCCESS) return rv;
    memset(&dp, 0, sizeof(dp));
    dp.db = db;
    dp.p = db->pool;
    dp.migs = migs;
    dp.target = target;
    dp.names = "";
    dp.audit_survives = 1;
    dp.why = why;
    if ((rv = down_check_applied(&dp)) != APR_SUCCESS || (rv = down_collect(&dp)) != APR_SUCCESS
        || !dp.todo->nelts)
        goto leave;
    if ((rv = down_begin(&dp, &t)) != APR_SUCCESS) goto leave;
    if ((rv = down_check_loss(&dp, force, refused)) == APR_SUCCESS
        && (rv = down_audit(&dp, actor, audited)) == APR_SUCCESS)
        rv = down_run_scripts(&dp, *done);
    rv = down_end(&dp, t, rv, *done, audited);
leave:
    pg_unlock(db);
    return rv;
}
