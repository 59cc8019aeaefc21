/* Unit tests for the core's error log (gmcp_errlog.h) on a real SQLite file: a failed
 * statement is logged exactly once, with its label and the driver's message; expected
 * outcomes (not found, an expected conflict, SQLITE_SCHEMA's one retry, statements a
 * failed transaction skips) are not logged as errors. */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_db.h"
#include "gmcp_errlog.h"
#include "gmcp_migrate.h"
#include "gmcp_store.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <apr_dbd.h>
#include <apr_strings.h>

static gmcp_db db;
static apr_dbd_t *handle;
static char tmpl[] = "/tmp/gmcp-unit-XXXXXX";

/* ---- a capturing printer ---------------------------------------------------------------- */

#define MAX_LINES 32
typedef struct {
    gmcp_elog_level level;
    char tag[16];
    char msg[1024];
} captured;
static captured lines[MAX_LINES];
static int nlines;

static void capture(const char *file, int line, gmcp_elog_level level, apr_status_t rv,
                    const char *tag, const char *msg, void *baton)
{
    (void)file;
    (void)line;
    (void)rv;
    (void)baton;
    if (getenv("UNIT_VERBOSE")) fprintf(stderr, "  log %d %s %s\n", (int)level, tag, msg);
    if (nlines >= MAX_LINES) return;
    lines[nlines].level = level;
    apr_cpystrn(lines[nlines].tag, tag, sizeof(lines[nlines].tag));
    apr_cpystrn(lines[nlines].msg, msg, sizeof(lines[nlines].msg));
    nlines++;
}

static void reset(void) { nlines = 0; }

/* Lines at ERR or WARN (what an admin would see as a failure). */
static int failures(void)
{
    int i, n = 0;
    for (i = 0; i < nlines; i++) n += lines[i].level <= GMCP_ELOG_WARN;
    return n;
}

static const captured *first_failure(void)
{
    int i;
    for (i = 0; i < nlines; i++)
        if (lines[i].level <= GMCP_ELOG_WARN) return &lines[i];
    return NULL;
}

static int db_tag(const char *tag) { return !strncmp(tag, "GMCP02", 6); }

/* ---- tests ----------------------------------------------------------------------------- */

static void t_setup(apr_pool_t *p)
{
    const char *err = NULL;
    apr_array_header_t *migs;
    int applied = 0, behind = 0;
    gmcp_elog_set(capture, NULL, NULL);
    CHECK(unit_open_sqlite(p, tmpl, "e.db", &db, &handle) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0);
    CHECK(gmcp_db_ready(&db, &err, &behind) == 0);
    CHECK(failures() == 0);
}

static void t_not_found_is_quiet(apr_pool_t *p)
{
    gmcp_session got;
    const char *resp = NULL;
    (void)p;
    reset();
    CHECK(gmcp_session_load(&db, "nobody", NULL, 3600, &got) == APR_ENOENT);
    CHECK(gmcp_pending_get(&db, "nobody", "1", &resp) == APR_ENOENT);
    CHECK(gmcp_session_delete(&db, "nobody") == APR_ENOENT);
    CHECK(nlines == 0);
}

static void t_expected_conflict_is_quiet(apr_pool_t *p)
{
    int cancelled = 0;
    (void)p;
    reset();
    CHECK(gmcp_db_exec_unique(&db, "gmcp_cancel_insert", NULL, GMCP_ARGS("s1", "7", "100"))
          == APR_SUCCESS);
    CHECK(gmcp_db_exec_unique(&db, "gmcp_cancel_insert", NULL, GMCP_ARGS("s1", "7", "101"))
          == APR_EEXIST);
    CHECK(failures() == 0);
    /* the same conflict through the plain call is a failure, logged once */
    CHECK(gmcp_db_exec(&db, "gmcp_cancel_insert", NULL, GMCP_ARGS("s1", "7", "102")) == GMCP_EDB);
    CHECK(failures() == 1 && db_tag(first_failure()->tag));
    CHECK(strstr(first_failure()->msg, "gmcp_cancel_insert") != NULL);
    CHECK(strstr(first_failure()->msg, "UNIQUE constraint failed") != NULL);
    /* no parameter in the line */
    CHECK(strstr(first_failure()->msg, "s1") == NULL);
    reset();
    CHECK(gmcp_cancel_record(&db, "s1", "7") == 0);
    CHECK(gmcp_cancel_check(&db, "s1", "7", &cancelled) == 0 && cancelled);
    CHECK(nlines == 0);
}

static void t_dropped_table(apr_pool_t *p)
{
    gmcp_session s, got;
    const captured *l;
    const char *msg;
    (void)p;
    memset(&s, 0, sizeof(s));
    s.id = "sess-e";
    s.owner = "alice";
    s.protocol_version = "2025-06-18";
    s.client_caps = "{}";
    CHECK(gmcp_session_create(&db, &s, "{}") == 0);
    CHECK(gmcp_session_load(&db, "sess-e", NULL, 3600, &got) == APR_SUCCESS);

    /* A statement prepared before the drop... */
    CHECK(gmcp_db_exec_raw(&db, "DROP TABLE mcp_subscriptions", NULL) == 0);
    CHECK(gmcp_db_exec_raw(&db, "DROP TABLE mcp_sessions", NULL) == 0);
    reset();
    CHECK(gmcp_session_load(&db, "sess-e", NULL, 3600, &got) == GMCP_EDB);
    CHECK(nlines == 1 && failures() == 1);
    l = first_failure();
    CHECK(l && l->level == GMCP_ELOG_ERR && db_tag(l->tag));
    CHECK(l && strstr(l->msg, "gmcp_session_select") != NULL);
    msg = gmcp_db_error(&db, -1);
    CHECK(l && *msg && strstr(l->msg, msg) != NULL);
    CHECK(l && strstr(l->msg, "sess-e") == NULL);

    /* ...and one prepared on first use, after it. */
    reset();
    CHECK(gmcp_subscription_add(&db, "sess-e", "file:///x") == GMCP_EDB);
    CHECK(nlines == 1 && failures() == 1);
    l = first_failure();
    CHECK(l && !strcmp(l->tag, "GMCP0203"));
    CHECK(l && strstr(l->msg, "gmcp_sub_exists") != NULL);
    CHECK(l && strstr(l->msg, "no such table: mcp_subscriptions") != NULL);
    CHECK(l && strstr(l->msg, "file:///x") == NULL);
}

static void t_transaction_logs_once(apr_pool_t *p)
{
    (void)p;
    /* The schema changed under statements prepared earlier: the first of the six
     * deletes fails, and is the only line. */
    reset();
    CHECK(gmcp_session_delete(&db, "sess-e") == GMCP_EDB);
    CHECK(failures() == 1);
    CHECK(first_failure() && strstr(first_failure()->msg, "gmcp_session_del_events") != NULL);

    /* A statement the driver skips after a failure in the same transaction. */
    {
        apr_dbd_transaction_t *t = NULL;
        int failed;
        reset();
        CHECK(gmcp_db_begin(&db, &t) == 0);
        /* a conflict (s1/7 is there since t_expected_conflict_is_quiet), then a statement
         * the driver refuses without running */
        failed = gmcp_db_exec(&db, "gmcp_cancel_insert", NULL, GMCP_ARGS("s1", "7", "1")) != 0;
        CHECK(failed);
        CHECK(gmcp_db_exec(&db, "gmcp_stream_done", NULL, GMCP_ARGS("x")) != 0);
        CHECK(gmcp_db_end(&db, t, failed) == 0);
        CHECK(failures() == 1);
        CHECK(first_failure() && strstr(first_failure()->msg, "gmcp_cancel_insert") != NULL);
    }
    /* After the transaction, statements are logged again. */
    reset();
    CHECK(gmcp_db_exec(&db, "gmcp_session_level", NULL, GMCP_ARGS("info", "x")) != 0);
    CHECK(failures() == 1);
}

static void t_unknown_label(apr_pool_t *p)
{
    (void)p;
    reset();
    CHECK(gmcp_db_exec(&db, "gmcp_no_such_label", NULL, 0, NULL) != 0);
    CHECK(failures() == 1 && !strcmp(first_failure()->tag, "GMCP0202"));
    CHECK(strstr(first_failure()->msg, "gmcp_no_such_label") != NULL);
}

static void t_schema_change_retry_is_quiet(apr_pool_t *p)
{
    gmcp_db other;
    apr_dbd_t *h2 = NULL;
    const apr_dbd_driver_t *drv;
    const char *err = NULL;
    int version = -1;
    CHECK(apr_dbd_get_driver(p, "sqlite3", &drv) == APR_SUCCESS);
    CHECK(apr_dbd_open_ex(drv, p, apr_pstrcat(p, tmpl, "/e.db", NULL), &h2, &err) == 0);
    gmcp_db_init(&other, drv, h2, apr_hash_make(p), p);
    CHECK(gmcp_db_schema_version(&db, &version, &err) == 0);
    /* another connection changes the schema (gmcpctl migrate while the server runs) */
    CHECK(gmcp_db_exec_raw(&other, "CREATE TABLE errlog_probe (x INTEGER)", NULL) == 0);
    reset();
    CHECK(gmcp_db_schema_version(&db, &version, &err) == 0 && version == GMCP_SCHEMA_VERSION);
    CHECK(failures() == 0);
    apr_dbd_close(drv, h2);
}

static void t_secret_file(apr_pool_t *p)
{
    reset();
    /* missing: the caller's to report */
    CHECK(gmcp_read_secret(p, apr_pstrcat(p, "file:", tmpl, "/missing", NULL)) == NULL);
    CHECK(failures() == 0);
    /* a directory cannot be read: logged with its path */
    CHECK(gmcp_read_secret(p, apr_pstrcat(p, "file:", tmpl, NULL)) == NULL);
    CHECK(failures() == 1 && !strncmp(first_failure()->tag, "GMCP03", 6)
          && strstr(first_failure()->msg, tmpl) != NULL);
}

static void t_teardown(apr_pool_t *p)
{
    gmcp_elog_set(NULL, NULL, NULL);
    apr_dbd_close(db.driver, handle);
    unit_remove_db(p, tmpl, "e.db");
}

UNIT_MAIN("errlog", {
    RUN(t_setup);
    RUN(t_not_found_is_quiet);
    RUN(t_expected_conflict_is_quiet);
    RUN(t_dropped_table);
    RUN(t_transaction_logs_once);
    RUN(t_unknown_label);
    RUN(t_schema_change_retry_is_quiet);
    RUN(t_secret_file);
    RUN(t_teardown);
})
