/* test_migrate.c — down scripts in the loader, the data-loss parser, gmcp_migrate_down. */
#include <stdlib.h>
#include "unit.h"
#include "unit_db.h"
#include "gmcp_migrate.h"

static void put(apr_pool_t *p, const char *dir, const char *name, const char *text)
{
    apr_file_t *f;
    apr_file_open(&f, apr_pstrcat(p, dir, "/", name, NULL),
                  APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE, APR_OS_DEFAULT, p);
    apr_file_puts(text, f);
    apr_file_close(f);
}

static const char *idx(apr_array_header_t *a, int i)
{
    return i < a->nelts ? APR_ARRAY_IDX(a, i, const char *) : NULL;
}

static void t_data_tables(apr_pool_t *p)
{
    apr_array_header_t *t = gmcp_sql_data_tables(
        p,
        "-- c\nDROP INDEX x_i;\nDROP TABLE IF EXISTS \"Quoted\", b CASCADE;\n"
        "ALTER TABLE ONLY c DROP COLUMN d;\nALTER TABLE e DROP CONSTRAINT e_k;\n"
        "ALTER TABLE f ALTER COLUMN g DROP DEFAULT, ALTER COLUMN g DROP NOT NULL;\n"
        "ALTER TABLE h DROP i;\nDELETE FROM j WHERE 1;\nTRUNCATE TABLE k, l RESTART IDENTITY;\n"
        "DROP TRIGGER tr ON b;\nCREATE TRIGGER t2 BEFORE DELETE ON m BEGIN DELETE FROM n; END;\n"
        "ALTER TABLE b RENAME TO o;\n");
    CHECK(t->nelts == 7);
    CHECK_STR(idx(t, 0), "Quoted");
    CHECK_STR(idx(t, 1), "b");
    CHECK_STR(idx(t, 2), "c");
    CHECK_STR(idx(t, 3), "h");
    CHECK_STR(idx(t, 4), "j");
    CHECK_STR(idx(t, 5), "k");
    CHECK_STR(idx(t, 6), "l");
}

static void t_loader_and_down(apr_pool_t *p)
{
    char tmpl[] = "/tmp/gmcp-umig-XXXXXX";
    char tdb[] = "/tmp/gmcp-umigdb-XXXXXX";
    const char *dir, *err = NULL;
    apr_array_header_t *migs, *done, *missing;
    gmcp_migration *m;
    gmcp_db db;
    apr_dbd_t *h;
    gmcp_rows rs;
    int applied = 0, refused = 0, audited = 0;

    CHECK(mkdtemp(tmpl) != NULL);
    dir = apr_pstrcat(p, tmpl, "/sqlite", NULL);
    apr_dir_make(dir, APR_OS_DEFAULT, p);
    put(p, dir, "0001_a.sql", "CREATE TABLE a (x TEXT);\n");
    put(p, dir, "0001_a.down.sql", "DROP TABLE a;\n");
    put(p, dir, "0002_b.sql", "CREATE TABLE b (y TEXT);\n");
    /* A down script is never an up migration: two versions, the first reversible. */
    CHECK(gmcp_migrations_load(p, tmpl, "sqlite", &migs, &err) == 0);
    CHECK(migs->nelts == 2);
    m = &APR_ARRAY_IDX(migs, 0, gmcp_migration);
    CHECK_STR(m->name, "0001_a");
    CHECK(m->down_sql && strstr(m->down_sql, "DROP TABLE a"));
    CHECK(APR_ARRAY_IDX(migs, 1, gmcp_migration).down_sql == NULL);

    CHECK(unit_open_sqlite(p, tdb, "m.db", &db, &h) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0 && applied == 2);
    /* 0002 has no down script: refused, nothing changed. */
    CHECK(gmcp_migrate_down(&db, migs, 0, 1, NULL, &done, &refused, &audited, &err) == APR_ENOENT);
    CHECK(err && strstr(err, "0002_b has no down script"));
    put(p, dir, "0002_b.down.sql", "DROP TABLE b;\n");
    CHECK(gmcp_migrations_load(p, tmpl, "sqlite", &migs, &err) == 0);
    CHECK(gmcp_db_exec_raw(&db, "INSERT INTO a VALUES ('keep')", NULL) == 0);
    /* 0001 would drop a's row: refused without force. */
    CHECK(gmcp_migrate_down(&db, migs, 0, 0, NULL, &done, &refused, &audited, &err) == APR_EINVAL);
    CHECK(refused == 1 && strstr(err, "a has rows (0001_a)"));
    CHECK(gmcp_db_select_raw(&db, "SELECT count(*) FROM schema_migrations", &rs) == 0);
    CHECK_STR(GMCP_ROW(&rs, 0)[0], "2");
    /* Down to 1 touches only the empty b. */
    CHECK(gmcp_migrate_down(&db, migs, 1, 0, NULL, &done, &refused, &audited, &err) == 0);
    CHECK(done->nelts == 1 && !strcmp(idx(done, 0), "0002_b") && !audited);
    CHECK(gmcp_migrate_down(&db, migs, 0, 1, NULL, &done, &refused, &audited, &err) == 0);
    CHECK(done->nelts == 1 && !strcmp(idx(done, 0), "0001_a"));
    CHECK(gmcp_migrate_inspect(&db, migs, &missing, &err) == 0 && missing->nelts == 0);
    CHECK(!APR_ARRAY_IDX(migs, 0, gmcp_migration).applied);

    /* An orphan down script is an error, not a migration. */
    put(p, dir, "0003_c.down.sql", "DROP TABLE c;\n");
    CHECK(gmcp_migrations_load(p, tmpl, "sqlite", &migs, &err) == APR_EINVAL);
    CHECK(err && strstr(err, "has no migration 0003"));

    apr_dbd_close(db.driver, h);
    unit_remove_db(p, tdb, "m.db");
    apr_file_remove(apr_pstrcat(p, dir, "/0001_a.sql", NULL), p);
    apr_file_remove(apr_pstrcat(p, dir, "/0001_a.down.sql", NULL), p);
    apr_file_remove(apr_pstrcat(p, dir, "/0002_b.sql", NULL), p);
    apr_file_remove(apr_pstrcat(p, dir, "/0002_b.down.sql", NULL), p);
    apr_file_remove(apr_pstrcat(p, dir, "/0003_c.down.sql", NULL), p);
    apr_dir_remove(dir, p);
    apr_dir_remove(tmpl, p);
}

static void t_real_scripts(apr_pool_t *p)
{
    apr_array_header_t *lite, *pg;
    const char *err = NULL;
    int i;
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &lite, &err) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "pgsql", &pg, &err) == 0);
    for (i = 0; i < lite->nelts; i++) {
        CHECK(APR_ARRAY_IDX(lite, i, gmcp_migration).down_sql != NULL);
        CHECK(i >= pg->nelts || APR_ARRAY_IDX(pg, i, gmcp_migration).down_sql != NULL);
    }
}

UNIT_MAIN("test_migrate", RUN(t_data_tables); RUN(t_loader_and_down); RUN(t_real_scripts);)
