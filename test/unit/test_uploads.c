/* tus header grammar and upload rows, without httpd (rows on real SQLite). */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_migrate.h"
#include "gmcp_store.h"
#include "gmcp_uploads.h"
#include "gmcp_sha256.h"
#include "gmcp_sniff.h"
#include "gmcp_spool.h"
#include "gmcp_files.h"

#include <stdlib.h>
#include <unistd.h>
#include <apr_strings.h>

static char dir[] = "/tmp/gmcp-uploads-XXXXXX";

static void t_metadata(apr_pool_t *p)
{
    apr_table_t *md;
    const char *err = NULL;
    CHECK(gmcp_tus_metadata(p, "filename d29ybGQ=,is_confidential,t dGV4dC9wbGFpbg==", &md,
                            &err) == 0);
    CHECK_STR(apr_table_get(md, "filename"), "world");
    CHECK_STR(apr_table_get(md, "is_confidential"), "");
    CHECK_STR(apr_table_get(md, "t"), "text/plain");
    CHECK(gmcp_tus_metadata(p, NULL, &md, &err) == 0 && apr_is_empty_table(md));
    CHECK(gmcp_tus_metadata(p, "a b", &md, &err) != 0);            /* not base64 */
    CHECK(gmcp_tus_metadata(p, "a YQ", &md, &err) != 0);           /* unpadded */
    CHECK(gmcp_tus_metadata(p, "a YQ==,a Yg==", &md, &err) != 0 && strstr(err, "twice"));
    CHECK(gmcp_tus_metadata(p, "a AA==", &md, &err) != 0);         /* NUL inside */
    CHECK(gmcp_tus_metadata(p, "k\x01 YQ==", &md, &err) != 0);
    CHECK(gmcp_tus_filename_ok("report.pdf"));
    CHECK(gmcp_tus_filename_ok("Grüße 2026.txt"));
    CHECK(!gmcp_tus_filename_ok(""));
    CHECK(!gmcp_tus_filename_ok(".."));
    CHECK(!gmcp_tus_filename_ok("../x"));
    CHECK(!gmcp_tus_filename_ok("a/b"));
    CHECK(!gmcp_tus_filename_ok("a\\b"));
    CHECK(!gmcp_tus_filename_ok("a\nb"));
    CHECK(!gmcp_tus_filename_ok("\xff\xfe"));
}

static void t_checksum(apr_pool_t *p)
{
    const char *algo;
    unsigned char *d;
    apr_size_t n;
    CHECK(gmcp_tus_checksum(p, "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", &algo, &d, &n) == 0
          && !strcmp(algo, "sha1") && n == 20);
    CHECK(gmcp_tus_checksum(p, "md5 1B2M2Y8AsgTpgAmY7PhCfg==", &algo, &d, &n) == 0 && n == 16);
    CHECK(gmcp_tus_checksum(p, "crc32 AAAAAA==", &algo, &d, &n) == -2);
    CHECK(gmcp_tus_checksum(p, "sha256 AAAA", &algo, &d, &n) == -1);   /* wrong length */
    CHECK(gmcp_tus_checksum(p, "sha256", &algo, &d, &n) == -1);
}

static void t_sha_forms(apr_pool_t *p)
{
    /* sha256("") in hex, and Gemini's two possible base64 forms of it */
    const char *hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    CHECK(gmcp_files_sha_matches(p, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", hex));
    CHECK(gmcp_files_sha_matches(p, "ZTNiMGM0NDI5OGZjMWMxNDlhZmJmNGM4OTk2ZmI5MjQyN2FlNDFlNDY0"
                                    "OWI5MzRjYTQ5NTk5MWI3ODUyYjg1NQ==", hex));
    CHECK(!gmcp_files_sha_matches(p, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                                  "00b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    CHECK(!gmcp_files_sha_matches(p, "AAAA", hex));
    CHECK(!gmcp_files_sha_matches(p, NULL, hex));
}

static void t_rows(apr_pool_t *p)
{
    gmcp_db db;
    apr_dbd_t *h;
    const char *err = NULL, *holder = NULL;
    apr_array_header_t *migs, *list;
    int applied = 0, got = 0;
    gmcp_upload u, x;
    CHECK(unit_open_sqlite(p, dir, "u.db", &db, &h) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0);
    memset(&u, 0, sizeof(u));
    u.id = "AAAAAAAAAAAAAAAAAAAAAA"; u.owner = "key:1"; u.key_id = "1"; u.length = 10;
    u.metadata = ""; u.filename = "f"; u.filetype = ""; u.concat = ""; u.parts = "";
    u.sha256 = ""; u.state = GMCP_UPLOAD_RECEIVING; u.created = 1; u.expires = 100;
    CHECK(gmcp_upload_create(&db, &u) == 0);
    CHECK(gmcp_upload_get(&db, u.id, "key:2", &x) == GMCP_NOT_FOUND);   /* owner-scoped */
    CHECK(gmcp_upload_get(&db, u.id, "key:1", &x) == GMCP_FOUND && x.length == 10);
    CHECK(gmcp_upload_lock(&db, u.id, "h/1/a", 60, &got) == 0 && got);
    CHECK(gmcp_upload_lock(&db, u.id, "h/2/b", 60, &got) == 0 && !got);  /* held */
    CHECK(gmcp_upload_lock(&db, u.id, "h/1/a", 60, &got) == 0 && got);   /* renewed */
    CHECK(gmcp_upload_advance(&db, u.id, "h/2/b", 5, 10, 200, "") == GMCP_NOT_FOUND);
    CHECK(gmcp_upload_advance(&db, u.id, "h/1/a", 5, 10, 200, "s1:x") == GMCP_FOUND);
    CHECK(gmcp_upload_holder(&db, u.id, &holder) == GMCP_FOUND && !strcmp(holder, "h/1/a"));
    CHECK(gmcp_upload_steal(&db, u.id, "h/9/z", "h/2/b", 60, &got) == 0 && !got);
    CHECK(gmcp_upload_steal(&db, u.id, "h/1/a", "h/2/b", 60, &got) == 0 && got);
    CHECK(gmcp_upload_unlock(&db, u.id, "h/2/b") == 0);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == GMCP_FOUND && x.offset == 5 && x.expires == 200
          && !strcmp(x.sha_state, "s1:x") && !strcmp(x.phase, GMCP_PHASE_RECEIVING));
    CHECK(gmcp_upload_set_phase(&db, u.id, GMCP_PHASE_RECEIVING, 7, NULL) == 0);
    CHECK(gmcp_upload_set_sniffed(&db, u.id, "image/png") == 0);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == GMCP_FOUND && x.progress == 7
          && x.progress_at > 0 && x.offset == 5 && !strcmp(x.sniffed, "image/png"));
    CHECK(gmcp_upload_expired(&db, 150, &list) == 0 && list->nelts == 0);
    CHECK(gmcp_upload_expired(&db, 250, &list) == 0 && list->nelts == 1);
    CHECK(gmcp_upload_complete(&db, u.id, 10, "abc", 300, 400) == 0);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == GMCP_FOUND && !strcmp(x.phase, "received")
          && x.progress == 10 && !*x.sha_state);
    CHECK(gmcp_upload_set_phase(&db, u.id, GMCP_PHASE_FAILED, 3, "quota") == 0);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == GMCP_FOUND && !strcmp(x.detail, "quota"));
    CHECK(gmcp_upload_expired(&db, 250, &list) == 0 && list->nelts == 0); /* kept till 400 */
    CHECK(gmcp_upload_expired(&db, 401, &list) == 0 && list->nelts == 1);
    CHECK(gmcp_upload_terminate(&db, u.id, "key:2") == GMCP_NOT_FOUND);
    CHECK(gmcp_upload_terminate(&db, u.id, "key:1") == GMCP_FOUND);
    CHECK(gmcp_upload_list(&db, "key:1", &list) == 0 && list->nelts == 1);
    CHECK(gmcp_upload_delete(&db, u.id) == 0);
    CHECK(gmcp_upload_list(&db, NULL, &list) == 0 && list->nelts == 0);
    apr_dbd_close(db.driver, h);
    unit_remove_db(p, dir, "u.db");
}

/* The running SHA-256 saved at any split point and loaded elsewhere ends where a
 * one-shot hash of the whole does. */
static void t_sha_state(apr_pool_t *p)
{
    unsigned char data[300];
    apr_size_t splits[] = {0, 1, 63, 64, 65, 127, 128, 200, 300}, i, j;
    const char *want;
    gmcp_sha256 *a = gmcp_sha256_make(p), *b;
    for (i = 0; i < sizeof(data); i++) data[i] = (unsigned char)(i * 7 + 3);
    CHECK(!strcmp(gmcp_sha256_result(p, a),
                  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    gmcp_sha256_update(a, data, sizeof(data));
    want = gmcp_sha256_result(p, a);
    CHECK(!strcmp(gmcp_sha256_result(p, a), want));            /* hex leaves it usable */
    for (i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
        const char *saved;
        gmcp_sha256 *first = gmcp_sha256_make(p);
        gmcp_sha256_update(first, data, splits[i]);
        saved = gmcp_sha256_save(p, first);
        b = gmcp_sha256_make(p);
        CHECK(gmcp_sha256_load(b, saved) == 0 && gmcp_sha256_bytes(b) == (apr_int64_t)splits[i]);
        CHECK(!strcmp(gmcp_sha256_save(p, b), saved));
        /* and on again in two more pieces */
        j = splits[i] + (sizeof(data) - splits[i]) / 2;
        gmcp_sha256_update(b, data + splits[i], j - splits[i]);
        CHECK(gmcp_sha256_load(first, gmcp_sha256_save(p, b)) == 0);
        gmcp_sha256_update(first, data + j, sizeof(data) - j);
        CHECK(!strcmp(gmcp_sha256_result(p, first), want));
    }
    b = gmcp_sha256_make(p);
    CHECK(gmcp_sha256_load(b, "") == -1);
    CHECK(gmcp_sha256_load(b, "s1:zz") == -1);
    CHECK(gmcp_sha256_load(b, apr_pstrcat(p, "s1:", apr_psprintf(p, "%064d", 0), ":5:00", NULL))
          == -1);                                           /* pending must be 5 bytes */
    CHECK(gmcp_sha256_load(b, apr_pstrcat(p, "s1:", apr_psprintf(p, "%064d", 0), ":2:0a0b", NULL))
          == 0 && gmcp_sha256_bytes(b) == 2);
    CHECK(gmcp_sha256_load(b, apr_pstrcat(p, "s1:", apr_psprintf(p, "%064d", 0), ":x:", NULL))
          == -1);
}

static void t_sniff(apr_pool_t *p)
{
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                        0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 0, 0, 1, 0, 0, 0,
                                        1, 8, 6, 0, 0, 0};
    static const char pdf[] = "%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
    const char *t = gmcp_sniff(p, png, sizeof(png));
    CHECK(t && !strcmp(t, "image/png"));
    t = gmcp_sniff(p, pdf, sizeof(pdf) - 1);
    CHECK(t && !strcmp(t, "application/pdf"));
    t = gmcp_sniff(p, "hello, world\n", 13);
    CHECK(t && !strncmp(t, "text/", 5));
    CHECK(gmcp_sniff_conflict("application/pdf", "image/png"));
    CHECK(gmcp_sniff_conflict("image/jpeg", "image/png"));
    CHECK(gmcp_sniff_conflict("text/plain", "application/pdf"));
    CHECK(gmcp_sniff_conflict("image/png", "audio/mpeg"));
    CHECK(!gmcp_sniff_conflict("image/png", "image/png"));
    CHECK(!gmcp_sniff_conflict("IMAGE/JPG; q=1", "image/jpeg"));    /* alias, case, params */
    CHECK(!gmcp_sniff_conflict("audio/mp4", "video/mp4"));          /* one container */
    CHECK(!gmcp_sniff_conflict("text/csv", "text/plain"));          /* text never conflicts */
    CHECK(!gmcp_sniff_conflict("application/json", "text/plain"));
    CHECK(!gmcp_sniff_conflict("application/vnd.openxmlformats-officedocument."
                               "wordprocessingml.document", "application/zip"));
    CHECK(!gmcp_sniff_conflict("", "image/png"));                   /* nothing declared */
    CHECK(!gmcp_sniff_conflict("image/png", NULL));
}

/* The spool writer: bytes in odd pieces come out in order, hashed, with durable points
 * along the way whose hash state matches their byte count; a write error surfaces. */
static void t_spool(apr_pool_t *p)
{
    char path[] = "/tmp/gmcp-spool-XXXXXX";
    int fd = mkstemp(path);
    apr_size_t total = 5 * GMCP_SPOOL_BUFFER + 12345, at = 0, piece = 1;
    unsigned char *data = apr_palloc(p, total), *back = apr_palloc(p, total);
    apr_int64_t durable = 0, last = 0, all = -1;
    int points = 0;
    apr_file_t *f;
    gmcp_sha256 *h = gmcp_sha256_make(p), *state = gmcp_sha256_make(p), *want;
    gmcp_spool_writer *w;
    apr_size_t i, n;
    CHECK(fd >= 0);
    close(fd);
    for (i = 0; i < total; i++) data[i] = (unsigned char)(i * 31 + (i >> 11));
    CHECK(apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p)
          == APR_SUCCESS);
    CHECK((w = gmcp_spool_open(p, f, h)) != NULL);
    while (at < total) {
        n = piece < total - at ? piece : total - at;
        CHECK(gmcp_spool_write(w, data + at, n) == APR_SUCCESS);
        at += n;
        piece = piece * 3 + 7;
        gmcp_spool_settle(w);
        if (gmcp_spool_durable(w, &durable, state)) {
            points++;
            CHECK(durable > last && gmcp_sha256_bytes(state) == durable);
            last = durable;
        }
    }
    CHECK(points >= 1);
    CHECK(gmcp_spool_finish(w, &all) == APR_SUCCESS && all == (apr_int64_t)total);
    gmcp_spool_close(w);
    want = gmcp_sha256_make(p);
    gmcp_sha256_update(want, data, total);
    CHECK(!strcmp(gmcp_sha256_result(p, h), gmcp_sha256_result(p, want)));
    apr_file_close(f);
    CHECK(apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p) == APR_SUCCESS);
    CHECK(apr_file_read_full(f, back, total, &n) == APR_SUCCESS && n == total);
    CHECK(memcmp(back, data, total) == 0);
    apr_file_close(f);
    /* A file opened for reading only: the write error comes back, nothing hangs. */
    CHECK(apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p) == APR_SUCCESS);
    CHECK((w = gmcp_spool_open(p, f, gmcp_sha256_make(p))) != NULL);
    CHECK(gmcp_spool_write(w, data, 3 * GMCP_SPOOL_BUFFER) != APR_SUCCESS
          || gmcp_spool_finish(w, &all) != APR_SUCCESS);
    gmcp_spool_close(w);
    apr_file_close(f);
    apr_file_remove(path, p);
}

/* A writer its owner never closes (an early return) is closed by the owner pool's
 * cleanup; meanwhile the owner thread keeps allocating from that pool and making
 * subpools of it, as a request thread does. Repeated, so a pool shared with the
 * threads would show (ASan, valgrind). */
static void t_spool_abandoned(apr_pool_t *p)
{
    char path[] = "/tmp/gmcp-spool-abandoned-XXXXXX";
    int fd = mkstemp(path), i, j;
    static unsigned char data[3 * GMCP_SPOOL_BUFFER + 17];
    CHECK(fd >= 0);
    close(fd);
    memset(data, 'x', sizeof(data));
    for (i = 0; i < 60; i++) {
        apr_pool_t *req, *sub;
        apr_file_t *f;
        gmcp_spool_writer *w;
        apr_pool_create(&req, p);
        CHECK(apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_TRUNCATE | APR_FOPEN_BINARY,
                            0, req) == APR_SUCCESS);
        CHECK((w = gmcp_spool_open(req, f, gmcp_sha256_make(req))) != NULL);
        for (j = 0; j < 1 + i % 4; j++) {
            CHECK(gmcp_spool_write(w, data, sizeof(data) - (apr_size_t)j) == APR_SUCCESS);
            apr_pool_create(&sub, req);
            apr_palloc(sub, 4096);
            apr_pool_destroy(sub);
            apr_palloc(req, 1000);
        }
        if (i % 3 == 0) gmcp_spool_checkpoint(w);
        apr_pool_destroy(req);      /* no close: the cleanup joins the threads */
    }
    apr_file_remove(path, p);
}

UNIT_MAIN("uploads", {
    RUN(t_spool);
    RUN(t_spool_abandoned);
    RUN(t_sniff);
    RUN(t_sha_state);
    RUN(t_metadata);
    RUN(t_checksum);
    RUN(t_sha_forms);
    RUN(t_rows);
})
