/* Chat store and exports on real SQLite, without httpd; exports are compared with the
 * golden files in test/golden/ (regenerate with GMCP_GOLDEN_WRITE=1 and review). */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_chat.h"
#include "gmcp_db.h"
#include "gmcp_migrate.h"
#include "gmcp_store.h"

#include <stdlib.h>
#include <unistd.h>
#include <apr_dbd.h>
#include <apr_file_io.h>
#include <apr_strings.h>

static gmcp_db db;
static apr_dbd_t *handle;
static char dir[] = "/tmp/gmcp-chat-XXXXXX";

static void t_setup(apr_pool_t *p)
{
    const char *err = NULL;
    apr_array_header_t *migs;
    int applied = 0;
    CHECK(unit_open_sqlite(p, dir, "c.db", &db, &handle) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0);
}

static void t_turns_and_lease(apr_pool_t *p)
{
    gmcp_chat_session s, got;
    gmcp_chat_message u, m;
    apr_array_header_t *msgs;
    memset(&s, 0, sizeof(s));
    s.id = "chat_1";
    s.owner = "alice";
    s.title = "Trip planning";
    s.model = "gemini-2.5-flash";
    s.system_instruction = "Be brief.";
    CHECK(gmcp_chat_create(&db, &s) == 0);
    CHECK(gmcp_chat_get(&db, "chat_1", "bob", 0, &got) == APR_ENOENT); /* foreign */
    CHECK(gmcp_chat_lock(&db, "chat_1", "alice", "tok1", 60) == APR_SUCCESS);
    CHECK(gmcp_chat_lock(&db, "chat_1", "alice", "tok2", 60) == APR_EBUSY);
    CHECK(gmcp_chat_lock(&db, "chat_1", "bob", "tok3", 60) == APR_EBUSY);
    memset(&u, 0, sizeof(u));
    memset(&m, 0, sizeof(m));
    u.seq = 1;
    u.role = "user";
    u.parts = "[{\"text\":\"Where to in May?\"}]";
    u.text = "Where to in May?";
    u.created = 1795300000;
    m.seq = 2;
    m.role = "model";
    m.parts = "[{\"text\":\"Lisbon.\"}]";
    m.text = "Lisbon.";
    m.prompt_tokens = 7;
    m.output_tokens = 2;
    m.finish_reason = "STOP";
    m.model_version = "gemini-2.5-flash";
    m.created = 1795300003;
    /* Only the lease holder may complete the turn. */
    CHECK(gmcp_chat_append_turn(&db, &s, "not-the-token", &u, &m) == APR_ENOENT);
    CHECK(gmcp_chat_append_turn(&db, &s, "tok1", &u, &m) == 0);
    /* Lease and session in one step: only the owner, only while free. */
    CHECK(gmcp_chat_lock_get(&db, "chat_1", "bob", 0, "tok2", 60, &got) == APR_ENOENT);
    CHECK(gmcp_chat_lock_get(&db, "chat_nope", "alice", 0, "tok2", 60, &got) == APR_ENOENT);
    memset(&got, 0, sizeof(got));
    CHECK(gmcp_chat_lock_get(&db, "chat_1", "alice", 0, "tok2", 60, &got) == APR_SUCCESS);
    CHECK_STR(got.title, "Trip planning");
    CHECK(got.message_count == 2);
    CHECK(gmcp_chat_lock_get(&db, "chat_1", "alice", 0, "tok3", 60, &got) == APR_EBUSY);
    u.seq = 3;
    u.parts = "[{\"text\":\"And in June?\"}]";
    u.text = "And in June?";
    u.created = 1795300060;
    m.seq = 4;
    m.parts = "[{\"text\":\"Porto, for **São João**.\"}]";
    m.text = "Porto, for **São João**.";
    m.prompt_tokens = 12;
    m.output_tokens = 6;
    m.created = 1795300062;
    CHECK(gmcp_chat_append_turn(&db, &s, "tok2", &u, &m) == 0);
    CHECK(gmcp_chat_get(&db, "chat_1", "alice", 0, &got) == APR_SUCCESS);
    CHECK(got.message_count == 4 && got.prompt_tokens == 19 && got.output_tokens == 8);
    CHECK(gmcp_chat_messages(&db, "chat_1", 0, 100, &msgs) == 0 && msgs->nelts == 4);
    CHECK(gmcp_chat_messages(&db, "chat_1", 2, 1, &msgs) == 0 && msgs->nelts == 1
          && APR_ARRAY_IDX(msgs, 0, gmcp_chat_message).seq == 3);
    (void)p;
}

static void golden(apr_pool_t *p, const char *format, const char *file)
{
    gmcp_chat_session s;
    apr_array_header_t *msgs;
    const char *out, *path = apr_pstrcat(p, "test/golden/", file, NULL);
    char *want = NULL;
    apr_file_t *f;
    apr_finfo_t fi;
    CHECK(gmcp_chat_get(&db, "chat_1", NULL, 0, &s) == APR_SUCCESS);
    CHECK(gmcp_chat_messages(&db, "chat_1", 0, 100, &msgs) == 0);
    /* Fixed times, so the exports are byte-for-byte stable. */
    s.created = 1795300000;
    s.last_used = 1795300062;
    out = gmcp_chat_export(p, &s, msgs, format);
    CHECK(out != NULL);
    if (getenv("GMCP_GOLDEN_WRITE")) {
        apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE,
                      APR_FPROT_OS_DEFAULT, p);
        apr_file_write_full(f, out, strlen(out), NULL);
        apr_file_close(f);
    }
    if (apr_file_open(&f, path, APR_FOPEN_READ, 0, p) == APR_SUCCESS
        && apr_file_info_get(&fi, APR_FINFO_SIZE, f) == APR_SUCCESS) {
        want = apr_pcalloc(p, (apr_size_t)fi.size + 1);
        apr_file_read_full(f, want, (apr_size_t)fi.size, NULL);
        apr_file_close(f);
    }
    CHECK_STR(out, want);
}

static void t_exports(apr_pool_t *p)
{
    golden(p, "json", "chat.json");
    golden(p, "text", "chat.txt");
    golden(p, "markdown", "chat.md");
    CHECK(gmcp_chat_export(p, NULL, NULL, "pdf") == NULL);
}

static void t_delete_and_sweep(apr_pool_t *p)
{
    gmcp_chat_session s, got;
    apr_array_header_t *list;
    memset(&s, 0, sizeof(s));
    s.id = "chat_old";
    s.owner = "alice";
    s.title = "";
    s.model = "m";
    s.system_instruction = "";
    CHECK(gmcp_chat_create(&db, &s) == 0);
    CHECK(gmcp_db_exec_raw(&db,
                           "UPDATE chat_sessions SET last_used = last_used - 1000 "
                           "WHERE id = 'chat_old'",
                           NULL)
          == 0);
    CHECK(gmcp_chat_list(&db, "alice", 0, 0, 10, &list) == 0 && list->nelts == 2);
    CHECK(gmcp_chat_list(&db, "alice", 500, 0, 10, &list) == 0 && list->nelts == 1);
    CHECK(gmcp_chat_get(&db, "chat_old", "alice", 500, &got) == APR_ENOENT);
    CHECK(gmcp_chat_sweep(&db, 500) == 0);
    CHECK(gmcp_chat_get(&db, "chat_old", NULL, 0, &got) == APR_ENOENT);
    CHECK(gmcp_chat_delete(&db, "chat_1", "bob") == APR_ENOENT);
    CHECK(gmcp_chat_delete(&db, "chat_1", "alice") == APR_SUCCESS);
    CHECK(gmcp_chat_list(&db, NULL, 0, 0, 10, &list) == 0 && list->nelts == 0);
    apr_dbd_close(db.driver, handle);
    unit_remove_db(p, dir, "c.db");
}

UNIT_MAIN("chat", {
    RUN(t_setup);
    RUN(t_turns_and_lease);
    RUN(t_exports);
    RUN(t_delete_and_sweep);
})
