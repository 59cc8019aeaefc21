/* test_statements.c — every labelled statement of every table (gmcp_sql_tables)
 * prepares against the schema the migrations build, on SQLite and on PostgreSQL; labels
 * are plain SQL identifiers, unique across the tables.
 *
 * PostgreSQL is reached through GMCP_TEST_PG, the libpq connection string the
 * integration tests also take (e.g. "host=127.0.0.1 port=5432 user=postgres"); the
 * statements are prepared in a schema of its own, dropped at the end. Without it that
 * half is skipped, and says so. */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_db.h"
#include "gmcp_errlog.h"
#include "gmcp_migrate.h"
#include "gmcp_sql.h"

#include <stdlib.h>
#include <unistd.h>

static int logged_errors, log_quiet;

/* Failures the core logs (a statement that does not prepare: GMCP0203 with the
 * driver's message) are shown, and counted. */
static void print_log(const char *file, int line, gmcp_elog_level level, apr_status_t rv,
                      const char *tag, const char *msg, void *baton)
{
    (void)file;
    (void)line;
    (void)rv;
    (void)baton;
    if (level > GMCP_ELOG_WARN) return;
    logged_errors++;
    if (!log_quiet) fprintf(stderr, "  log %s: %s\n", tag, msg);
}

/* [a-z_][a-z0-9_]*: PostgreSQL runs PREPARE <label>, unquoted. */
static int plain_identifier(const char *s)
{
    const char *c;
    if (!*s || (*s >= '0' && *s <= '9')) return 0;
    for (c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return 0;
    return c - s <= 63;
}

static void t_labels(apr_pool_t *p)
{
    apr_hash_t *seen = apr_hash_make(p);
    const gmcp_stmt *s;
    int t, n = 0;
    for (t = 0; gmcp_sql_tables[t]; t++) {
        for (s = gmcp_sql_tables[t]; s->label; s++, n++) {
            if (!plain_identifier(s->label) || apr_hash_get(seen, s->label, APR_HASH_KEY_STRING)
                || !s->sql)
                fprintf(stderr, "  label %s: not a plain identifier, or twice\n", s->label);
            CHECK(plain_identifier(s->label));
            CHECK(!apr_hash_get(seen, s->label, APR_HASH_KEY_STRING));
            CHECK(s->sql && gmcp_sql_lookup(s->label) == s->sql);
            apr_hash_set(seen, s->label, APR_HASH_KEY_STRING, s);
        }
    }
    CHECK(n > 0);
    CHECK(gmcp_sql_lookup("gmcp_no_such_statement") == NULL);
}

/* A label ending in _pgsql or _sqlite is that driver's variant of a statement (see
 * gmcp_sql.h): the other driver never runs it. */
static int meant_for(const char *label, const char *driver)
{
    size_t n = strlen(label);
    if (n > 6 && !strcmp(label + n - 6, "_pgsql")) return !strcmp(driver, "pgsql");
    if (n > 7 && !strcmp(label + n - 7, "_sqlite")) return !strcmp(driver, "sqlite");
    return 1;
}

/* Migrate `db` to the current schema, then prepare every labelled statement on it. */
static void prepare_all(apr_pool_t *p, gmcp_db *db, const char *driver)
{
    apr_array_header_t *migs;
    const char *err = NULL;
    const gmcp_stmt *s;
    int applied = 0, behind = 0, t, failed = 0, n = 0;

    CHECK(gmcp_migrations_load(p, "sql", driver, &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(db, migs, &applied, &err) == 0 && applied == migs->nelts);
    CHECK(gmcp_db_ready(db, &err, &behind) == 0);
    logged_errors = 0;
    for (t = 0; gmcp_sql_tables[t]; t++) {
        for (s = gmcp_sql_tables[t]; s->label; s++, n++) {
            if (!meant_for(s->label, driver)) {
                n--;
                continue;
            }
            if (gmcp_db_prepare(db, s->label) == 0) continue;
            fprintf(stderr, "  %s: statement %s does not prepare\n", driver, s->label);
            failed++;
        }
    }
    CHECK(failed == 0 && logged_errors == 0);
    /* Prepared once per connection: asking again is a no-op. */
    CHECK(gmcp_db_prepare(db, gmcp_sql_tables[0][0].label) == 0);
    CHECK(apr_hash_count(db->prepared) >= (unsigned)n);
    /* An unknown label is refused (and logged). */
    logged_errors = 0;
    log_quiet = 1;
    CHECK(gmcp_db_prepare(db, "gmcp_no_such_statement") != 0 && logged_errors == 1);
    log_quiet = 0;
    printf("statements: %d prepared on %s\n", n - failed, driver);
}

static void t_sqlite(apr_pool_t *p)
{
    char dir[] = "/tmp/gmcp-ustmt-XXXXXX";
    apr_dbd_t *h = NULL;
    gmcp_db db;
    if (unit_open_sqlite(p, dir, "s.db", &db, &h) != 0) {
        CHECK(!"cannot open a SQLite database");
        return;
    }
    prepare_all(p, &db, "sqlite");
    apr_dbd_close(db.driver, h);
    unit_remove_db(p, dir, "s.db");
}

static void t_pgsql(apr_pool_t *p)
{
    const char *dsn = getenv("GMCP_TEST_PG"), *err = NULL;
    const char *schema = apr_psprintf(p, "gmcp_unit_stmt_%ld", (long)getpid());
    const apr_dbd_driver_t *drv;
    apr_dbd_t *h = NULL;
    gmcp_db db;
    if (!dsn || !*dsn) {
        printf("statements: PostgreSQL skipped: GMCP_TEST_PG is not set (a libpq connection "
               "string, e.g. \"host=127.0.0.1 port=5432 user=postgres\")\n");
        return;
    }
    if (apr_dbd_init(p) != APR_SUCCESS || apr_dbd_get_driver(p, "pgsql", &drv) != APR_SUCCESS
        || apr_dbd_open_ex(drv, p, dsn, &h, &err) != 0) {
        fprintf(stderr, "  cannot connect to GMCP_TEST_PG (%s): %s\n", dsn,
                err ? err : "no pgsql driver");
        CHECK(!"cannot connect to PostgreSQL");
        return;
    }
    gmcp_db_init(&db, drv, h, apr_hash_make(p), p);
    CHECK(gmcp_db_exec_raw(&db, apr_psprintf(p, "CREATE SCHEMA %s", schema), NULL) == 0);
    CHECK(gmcp_db_exec_raw(&db, apr_psprintf(p, "SET search_path TO %s", schema), NULL) == 0);
    prepare_all(p, &db, "pgsql");
    CHECK(gmcp_db_exec_raw(&db, apr_psprintf(p, "DROP SCHEMA %s CASCADE", schema), NULL) == 0);
    apr_dbd_close(drv, h);
}

UNIT_MAIN("statements", gmcp_elog_set(print_log, NULL, NULL); RUN(t_labels); RUN(t_sqlite);
          RUN(t_pgsql);)
