/* tus header grammar, upload rows, and the upload handler's logic without httpd: a
 * body's pieces, the concatenation, the progress reports, the lease (rows on real
 * SQLite, spool files in temporary directories). */
#include "unit.h"
#include "unit_db.h"
#include "gmcp_migrate.h"
#include "gmcp_store.h"
#include "gmcp_uploads.h"
#include "gmcp_upload_body.h"
#include "gmcp_upload_concat.h"
#include "gmcp_upload_progress.h"
#include "gmcp_wire.h"
#include "gmcp_util.h"
#include "gmcp_sha256.h"
#include "gmcp_sniff.h"
#include "gmcp_spool.h"
#include "gmcp_files.h"

#include <stdlib.h>
#include <unistd.h>
#include <apr_strings.h>

static char dir[] = "/tmp/gmcp-uploads-XXXXXX";
static char lease_dir[] = "/tmp/gmcp-uploads-lease-XXXXXX";
static char concat_dir[] = "/tmp/gmcp-uploads-concat-XXXXXX";

static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0,
                                    0,    13,  'I', 'H', 'D',  'R',  0,    0,    0, 1,
                                    0,    0,   0,   1,   8,    6,    0,    0,    0};

static void write_file(apr_pool_t *p, const char *path, const void *data, apr_size_t n)
{
    apr_file_t *f;
    CHECK(apr_file_open(&f, path,
                        APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE | APR_FOPEN_BINARY,
                        APR_FPROT_UREAD | APR_FPROT_UWRITE, p)
          == APR_SUCCESS);
    CHECK(apr_file_write_full(f, data, n, NULL) == APR_SUCCESS);
    apr_file_close(f);
}

static const char *read_file(apr_pool_t *p, const char *path)
{
    apr_finfo_t fi;
    apr_file_t *f;
    char *buf;
    apr_size_t n;
    if (apr_stat(&fi, path, APR_FINFO_SIZE, p) != APR_SUCCESS) return NULL;
    buf = apr_pcalloc(p, (apr_size_t)fi.size + 1);
    n = (apr_size_t)fi.size;
    if (apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p) != APR_SUCCESS)
        return NULL;
    if (n && apr_file_read_full(f, buf, n, &n) != APR_SUCCESS) buf = NULL;
    apr_file_close(f);
    return buf;
}

/* A row as gmcp_upload_create takes it. */
static void make_row(gmcp_upload *u, const char *id, const char *owner, const char *concat,
                     const char *state, apr_int64_t length)
{
    memset(u, 0, sizeof(*u));
    u->id = id;
    u->owner = owner;
    u->key_id = "";
    u->length = length;
    u->offset = !strcmp(state, GMCP_UPLOAD_COMPLETE) ? length : 0;
    u->metadata = "";
    u->filename = "";
    u->filetype = "";
    u->concat = concat;
    u->parts = "";
    u->sha256 = "";
    u->state = state;
    u->created = 1;
    u->expires = gmcp_now_sec() + 1000;
}

static int open_db(apr_pool_t *p, char *tmpl, gmcp_db *db, apr_dbd_t **h)
{
    const char *err = NULL;
    apr_array_header_t *migs;
    int applied = 0;
    return unit_open_sqlite(p, tmpl, "u.db", db, h) == 0
            && gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0
            && gmcp_migrate_apply(db, migs, &applied, &err) == 0
        ? 0
        : -1;
}

static void t_metadata(apr_pool_t *p)
{
    apr_table_t *md;
    const char *err = NULL;
    CHECK(gmcp_tus_metadata(p, "filename d29ybGQ=,is_confidential,t dGV4dC9wbGFpbg==", &md, &err)
          == 0);
    CHECK_STR(apr_table_get(md, "filename"), "world");
    CHECK_STR(apr_table_get(md, "is_confidential"), "");
    CHECK_STR(apr_table_get(md, "t"), "text/plain");
    CHECK(gmcp_tus_metadata(p, NULL, &md, &err) == APR_SUCCESS && apr_is_empty_table(md));
    CHECK(gmcp_tus_metadata(p, "a b", &md, &err) != 0);  /* not base64 */
    CHECK(gmcp_tus_metadata(p, "a YQ", &md, &err) != 0); /* unpadded */
    CHECK(gmcp_tus_metadata(p, "a YQ==,a Yg==", &md, &err) == APR_EINVAL && strstr(err, "twice"));
    CHECK(gmcp_tus_metadata(p, "a AA==", &md, &err) != 0); /* NUL inside */
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
    CHECK(gmcp_tus_checksum(p, "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", &algo, &d, &n) == APR_SUCCESS
          && !strcmp(algo, "sha1") && n == 20);
    CHECK(gmcp_tus_checksum(p, "md5 1B2M2Y8AsgTpgAmY7PhCfg==", &algo, &d, &n) == APR_SUCCESS
          && n == 16);
    CHECK(gmcp_tus_checksum(p, "crc32 AAAAAA==", &algo, &d, &n) == APR_ENOTIMPL);
    CHECK(gmcp_tus_checksum(p, "sha256 AAAA", &algo, &d, &n) == APR_EINVAL); /* wrong length */
    CHECK(gmcp_tus_checksum(p, "sha256", &algo, &d, &n) == APR_EINVAL);
}

static void t_sha_forms(apr_pool_t *p)
{
    /* sha256("") in hex, and Gemini's two possible base64 forms of it */
    const char *hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    CHECK(gmcp_files_sha_matches(p, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", hex));
    CHECK(gmcp_files_sha_matches(p,
                                 "ZTNiMGM0NDI5OGZjMWMxNDlhZmJmNGM4OTk2ZmI5MjQyN2FlNDFlNDY0"
                                 "OWI5MzRjYTQ5NTk5MWI3ODUyYjg1NQ==",
                                 hex));
    CHECK(!gmcp_files_sha_matches(
        p, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
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
    int applied = 0;
    gmcp_upload u, x;
    CHECK(unit_open_sqlite(p, dir, "u.db", &db, &h) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &migs, &err) == 0);
    CHECK(gmcp_migrate_apply(&db, migs, &applied, &err) == 0);
    memset(&u, 0, sizeof(u));
    u.id = "AAAAAAAAAAAAAAAAAAAAAA";
    u.owner = "key:1";
    u.key_id = "1";
    u.length = 10;
    u.metadata = "";
    u.filename = "f";
    u.filetype = "";
    u.concat = "";
    u.parts = "";
    u.sha256 = "";
    u.state = GMCP_UPLOAD_RECEIVING;
    u.created = 1;
    u.expires = 100;
    CHECK(gmcp_upload_create(&db, &u) == APR_SUCCESS);
    CHECK(gmcp_upload_get(&db, u.id, "key:2", &x) == APR_ENOENT); /* owner-scoped */
    CHECK(gmcp_upload_get(&db, u.id, "key:1", &x) == APR_SUCCESS && x.length == 10);
    CHECK(gmcp_upload_lock(&db, u.id, "h/1/a", 60) == APR_SUCCESS);
    CHECK(gmcp_upload_lock(&db, u.id, "h/2/b", 60) == APR_EBUSY);   /* held */
    CHECK(gmcp_upload_lock(&db, u.id, "h/1/a", 60) == APR_SUCCESS); /* renewed */
    CHECK(gmcp_upload_lock(&db, "NOSUCHUPLOADAAAAAAAAAA", "h/1/a", 60) == APR_EBUSY);
    CHECK(gmcp_upload_advance(&db, u.id, "h/2/b", 5, 10, 200, "") == APR_ENOENT);
    CHECK(gmcp_upload_advance(&db, u.id, "h/1/a", 5, 10, 200, "s1:x") == APR_SUCCESS);
    CHECK(gmcp_upload_holder(&db, u.id, &holder) == APR_SUCCESS && !strcmp(holder, "h/1/a"));
    CHECK(gmcp_upload_holder(&db, "NOSUCHUPLOADAAAAAAAAAA", &holder) == APR_ENOENT);
    CHECK(gmcp_upload_steal(&db, u.id, "h/9/z", "h/2/b", 60) == APR_EBUSY);
    CHECK(gmcp_upload_steal(&db, u.id, "h/1/a", "h/2/b", 60) == APR_SUCCESS);
    CHECK(gmcp_upload_unlock(&db, u.id, "h/2/b") == APR_SUCCESS);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == APR_SUCCESS && x.offset == 5 && x.expires == 200
          && !strcmp(x.sha_state, "s1:x") && !strcmp(x.phase, GMCP_PHASE_RECEIVING));
    CHECK(gmcp_upload_set_phase(&db, u.id, GMCP_PHASE_RECEIVING, 7, NULL) == APR_SUCCESS);
    CHECK(gmcp_upload_set_sniffed(&db, u.id, "image/png") == APR_SUCCESS);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == APR_SUCCESS && x.progress == 7
          && x.progress_at > 0 && x.offset == 5 && !strcmp(x.sniffed, "image/png"));
    CHECK(gmcp_upload_expired(&db, 150, &list) == APR_SUCCESS && list->nelts == 0);
    CHECK(gmcp_upload_expired(&db, 250, &list) == APR_SUCCESS && list->nelts == 1);
    CHECK(gmcp_upload_complete(&db, u.id, 10, "abc", 300, 400) == APR_SUCCESS);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == APR_SUCCESS && !strcmp(x.phase, "received")
          && x.progress == 10 && !*x.sha_state);
    CHECK(gmcp_upload_set_phase(&db, u.id, GMCP_PHASE_FAILED, 3, "quota") == APR_SUCCESS);
    CHECK(gmcp_upload_get(&db, u.id, NULL, &x) == APR_SUCCESS && !strcmp(x.detail, "quota"));
    CHECK(gmcp_upload_expired(&db, 250, &list) == APR_SUCCESS && list->nelts == 0); /* till 400 */
    CHECK(gmcp_upload_expired(&db, 401, &list) == APR_SUCCESS && list->nelts == 1);
    CHECK(gmcp_upload_terminate(&db, u.id, "key:2") == APR_ENOENT);
    CHECK(gmcp_upload_terminate(&db, u.id, "key:1") == APR_SUCCESS);
    CHECK(gmcp_upload_terminate(&db, u.id, "key:1") == APR_ENOENT); /* already */
    CHECK(gmcp_upload_list(&db, "key:1", &list) == APR_SUCCESS && list->nelts == 1);
    CHECK(gmcp_upload_delete(&db, u.id) == APR_SUCCESS);
    CHECK(gmcp_upload_list(&db, NULL, &list) == APR_SUCCESS && list->nelts == 0);
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
    CHECK(!strcmp(gmcp_sha256_result(p, a), want)); /* hex leaves it usable */
    for (i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
        const char *saved;
        gmcp_sha256 *first = gmcp_sha256_make(p);
        gmcp_sha256_update(first, data, splits[i]);
        saved = gmcp_sha256_save(p, first);
        b = gmcp_sha256_make(p);
        CHECK(gmcp_sha256_load(b, saved) == APR_SUCCESS
              && gmcp_sha256_bytes(b) == (apr_int64_t)splits[i]);
        CHECK(!strcmp(gmcp_sha256_save(p, b), saved));
        /* and on again in two more pieces */
        j = splits[i] + (sizeof(data) - splits[i]) / 2;
        gmcp_sha256_update(b, data + splits[i], j - splits[i]);
        CHECK(gmcp_sha256_load(first, gmcp_sha256_save(p, b)) == APR_SUCCESS);
        gmcp_sha256_update(first, data + j, sizeof(data) - j);
        CHECK(!strcmp(gmcp_sha256_result(p, first), want));
    }
    b = gmcp_sha256_make(p);
    CHECK(gmcp_sha256_load(b, "") == APR_EINVAL);
    CHECK(gmcp_sha256_load(b, "s1:zz") == APR_EINVAL);
    CHECK(gmcp_sha256_load(b, apr_pstrcat(p, "s1:", apr_psprintf(p, "%064d", 0), ":5:00", NULL))
          == APR_EINVAL); /* pending must be 5 bytes */
    CHECK(gmcp_sha256_load(b, apr_pstrcat(p, "s1:", apr_psprintf(p, "%064d", 0), ":2:0a0b", NULL))
              == 0
          && gmcp_sha256_bytes(b) == 2);
    CHECK(gmcp_sha256_load(b, apr_pstrcat(p, "s1:", apr_psprintf(p, "%064d", 0), ":x:", NULL))
          == APR_EINVAL);
}

static void t_sniff(apr_pool_t *p)
{
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0,
                                        0,    13,  'I', 'H', 'D',  'R',  0,    0,    0, 1,
                                        0,    0,   0,   1,   8,    6,    0,    0,    0};
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
    CHECK(!gmcp_sniff_conflict("IMAGE/JPG; q=1", "image/jpeg")); /* alias, case, params */
    CHECK(!gmcp_sniff_conflict("audio/mp4", "video/mp4"));       /* one container */
    CHECK(!gmcp_sniff_conflict("text/csv", "text/plain"));       /* text never conflicts */
    CHECK(!gmcp_sniff_conflict("application/json", "text/plain"));
    CHECK(!gmcp_sniff_conflict("application/vnd.openxmlformats-officedocument."
                               "wordprocessingml.document",
                               "application/zip"));
    CHECK(!gmcp_sniff_conflict("", "image/png"));                          /* nothing declared */
    CHECK(!gmcp_sniff_conflict("Application/Octet-Stream", "audio/mpeg")); /* nor generic */
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
    CHECK(gmcp_spool_open(&w, p, f, h, GMCP_SPOOL_SYNCED) == APR_SUCCESS && w);
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
    CHECK(gmcp_spool_open(&w, p, f, gmcp_sha256_make(p), GMCP_SPOOL_SYNCED) == APR_SUCCESS && w);
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
        CHECK(
            apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_TRUNCATE | APR_FOPEN_BINARY, 0, req)
            == APR_SUCCESS);
        CHECK(gmcp_spool_open(&w, req, f, gmcp_sha256_make(req), GMCP_SPOOL_SYNCED) == APR_SUCCESS
              && w);
        for (j = 0; j < 1 + i % 4; j++) {
            CHECK(gmcp_spool_write(w, data, sizeof(data) - (apr_size_t)j) == APR_SUCCESS);
            apr_pool_create(&sub, req);
            apr_palloc(sub, 4096);
            apr_pool_destroy(sub);
            apr_palloc(req, 1000);
        }
        if (i % 3 == 0) gmcp_spool_checkpoint(w);
        apr_pool_destroy(req); /* no close: the cleanup joins the threads */
    }
    apr_file_remove(path, p);
}

/* Interval policy: reception runs ahead of the disk by at most the lag bound, and
 * finish_written ends without making the tail durable; what is durable is a prefix
 * whose hash state matches it. */
static void t_spool_interval(apr_pool_t *p)
{
    char path[] = "/tmp/gmcp-spool-interval-XXXXXX";
    int fd = mkstemp(path);
    apr_size_t total = 80 * GMCP_SPOOL_BUFFER + 99, at = 0;
    unsigned char *data = apr_palloc(p, total);
    apr_int64_t durable = 0, all = -1, lag = 32 * GMCP_SPOOL_BUFFER;
    apr_file_t *f;
    gmcp_sha256 *h = gmcp_sha256_make(p), *state = gmcp_sha256_make(p), *want;
    gmcp_spool_writer *w;
    gmcp_spool_policy pol = gmcp_spool_interval(lag, apr_time_from_sec(3600));
    CHECK(fd >= 0);
    close(fd);
    CHECK(pol.max_lag == lag && pol.gap == lag / 4);
    CHECK(gmcp_spool_interval(1, 0).max_lag == GMCP_SPOOL_SYNC_GAP);
    memset(data, 'i', total);
    CHECK(apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_BINARY, 0, p) == APR_SUCCESS);
    CHECK(gmcp_spool_open(&w, p, f, h, pol) == APR_SUCCESS && w);
    while (at < total) {
        apr_size_t n = total - at < 65536 ? total - at : 65536;
        CHECK(gmcp_spool_write(w, data + at, n) == APR_SUCCESS);
        at += n;
        /* A bound the writer keeps: at most the lag, plus the buffer being written and
         * the one filling, plus the one retired after the wait. */
        gmcp_spool_durable(w, &durable, state);
        CHECK((apr_int64_t)at - durable <= lag + 3 * GMCP_SPOOL_BUFFER);
    }
    CHECK(gmcp_spool_finish_written(w, &all) == APR_SUCCESS && all == (apr_int64_t)total);
    gmcp_spool_durable(w, &durable, state);
    CHECK(durable > 0 && durable <= all && gmcp_sha256_bytes(state) == durable);
    want = gmcp_sha256_make(p);
    gmcp_sha256_update(want, data, (apr_size_t)durable);
    CHECK(!strcmp(gmcp_sha256_result(p, state), gmcp_sha256_result(p, want)));
    gmcp_spool_close(w);
    CHECK(gmcp_sha256_bytes(h) == (apr_int64_t)total);
    apr_file_close(f);
    apr_file_remove(path, p);
}

/* A tail written but not synced counts while its machine runs; after that machine
 * restarted (or its sync failed, or another host sees it too old) the upload is read
 * at its durable point, a complete one receiving again. */
static void t_tail_lost(apr_pool_t *p)
{
    gmcp_upload u;
    apr_int64_t now = 100000;
    (void)p;
    make_row(&u, "TTTTTTTTTTTTTTTTTTTTT1", "key:1", "", GMCP_UPLOAD_COMPLETE, 1000);
    u.sha256 = "abc";
    u.sha_state = "final";
    u.durable_offset = 600;
    u.durable_state = "at600";
    u.unsynced_at = now - 5;
    gmcp_upload_tail_lost(&u, GMCP_MACHINE_SAME, now);
    CHECK(u.offset == 1000 && !u.rewound && !strcmp(u.state, GMCP_UPLOAD_COMPLETE));
    gmcp_upload_tail_lost(&u, GMCP_MACHINE_OTHER, now);
    CHECK(u.offset == 1000 && !u.rewound);
    u.unsynced_at = now - GMCP_UPLOAD_TAIL_TRUST - 1;
    gmcp_upload_tail_lost(&u, GMCP_MACHINE_OTHER, now);
    CHECK(u.offset == 600 && u.rewound && !strcmp(u.sha_state, "at600"));
    CHECK(!strcmp(u.state, GMCP_UPLOAD_RECEIVING) && !*u.sha256 && u.durable_offset == -1);
    make_row(&u, "TTTTTTTTTTTTTTTTTTTTT2", "key:1", "", GMCP_UPLOAD_RECEIVING, 1000);
    u.offset = 700;
    u.durable_offset = 0;
    u.durable_state = "";
    u.unsynced_at = now;
    gmcp_upload_tail_lost(&u, GMCP_MACHINE_RESTARTED, now);
    CHECK(u.offset == 0 && u.rewound);
    /* Nothing lagging: nothing to lose, whoever looks. */
    make_row(&u, "TTTTTTTTTTTTTTTTTTTTT3", "key:1", "", GMCP_UPLOAD_RECEIVING, 1000);
    u.offset = 700;
    u.durable_offset = -1;
    gmcp_upload_tail_lost(&u, GMCP_MACHINE_RESTARTED, now);
    CHECK(u.offset == 700 && !u.rewound);
    /* The machine id: this one is the same, another boot of this host restarted. */
    CHECK(gmcp_machine_check(p, gmcp_machine_id(p)) == GMCP_MACHINE_SAME);
    {
        const char *me = gmcp_machine_id(p), *sp = strchr(me, ' ');
        const char *other = apr_pstrcat(p, apr_pstrndup(p, me, (apr_size_t)(sp - me)), " x", NULL);
        CHECK(gmcp_machine_check(p, other) == GMCP_MACHINE_RESTARTED);
        CHECK(gmcp_machine_check(p, "no-such-host.invalid b") == GMCP_MACHINE_OTHER);
        CHECK(gmcp_machine_check(p, "!sync failed") == GMCP_MACHINE_OTHER);
    }
}

/* The lease for a PATCH: taken on the row as checked, refused while held, given back at
 * once when the upload moved on (the current offset told), or is no longer the
 * caller's. */
static void t_lease(apr_pool_t *p)
{
    gmcp_db db;
    apr_dbd_t *h;
    const char *holder = NULL, *id = "LLLLLLLLLLLLLLLLLLLLL1";
    apr_int64_t off = -1;
    gmcp_upload u, x;
    CHECK(open_db(p, lease_dir, &db, &h) == 0);
    make_row(&u, id, "key:1", "", GMCP_UPLOAD_RECEIVING, 10);
    CHECK(gmcp_upload_create(&db, &u) == APR_SUCCESS);
    CHECK(gmcp_upload_get(&db, id, "key:1", &x) == APR_SUCCESS);
    CHECK(gmcp_upload_lease(&db, id, "key:1", &x, "h/1/a", 60, &off) == GMCP_LEASE_TAKEN);
    CHECK(gmcp_upload_lease(&db, id, "key:1", &x, "h/2/b", 60, &off) == GMCP_LEASE_HELD);
    CHECK(gmcp_upload_lease(&db, id, "key:1", &x, "h/1/a", 60, &off) == GMCP_LEASE_TAKEN);
    /* The holder records 5 bytes and lets go; a request that checked offset 0 waits. */
    CHECK(gmcp_upload_advance(&db, id, "h/1/a", 5, 10, gmcp_now_sec() + 1000, "") == APR_SUCCESS);
    CHECK(gmcp_upload_unlock(&db, id, "h/1/a") == APR_SUCCESS);
    CHECK(gmcp_upload_lease(&db, id, "key:1", &x, "h/2/b", 60, &off) == GMCP_LEASE_MOVED
          && off == 5);
    CHECK(gmcp_upload_holder(&db, id, &holder) == APR_SUCCESS && !*holder); /* given back */
    /* A row just created: nothing to compare. */
    CHECK(gmcp_upload_lease(&db, id, "key:1", NULL, "h/3/c", 60, &off) == GMCP_LEASE_TAKEN);
    CHECK(gmcp_upload_unlock(&db, id, "h/3/c") == APR_SUCCESS);
    /* Not the caller's (any more): moved on, at the offset the request knew. */
    off = -1;
    CHECK(gmcp_upload_lease(&db, id, "key:2", &x, "h/4/d", 60, &off) == GMCP_LEASE_MOVED
          && off == 0);
    CHECK(gmcp_upload_holder(&db, id, &holder) == APR_SUCCESS && !*holder);
    /* Terminated since it was checked at its current offset. */
    CHECK(gmcp_upload_get(&db, id, "key:1", &x) == APR_SUCCESS && x.offset == 5);
    CHECK(gmcp_upload_terminate(&db, id, "key:1") == APR_SUCCESS);
    CHECK(gmcp_upload_lease(&db, id, "key:1", &x, "h/5/e", 60, &off) == GMCP_LEASE_MOVED
          && off == 5);
    apr_dbd_close(db.driver, h);
    unit_remove_db(p, lease_dir, "u.db");
}

/* A creation request's row: metadata checked, fields filled; ids never look like an
 * option. */
static void t_fill_new(apr_pool_t *p)
{
    apr_table_t *md;
    const char *err = NULL, *meta = "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm";
    gmcp_upload x;
    int i, ok = 1;
    memset(&x, 0, sizeof(x));
    x.length = 42;
    CHECK(gmcp_tus_metadata(p, meta, &md, &err) == APR_SUCCESS);
    CHECK(gmcp_upload_fill_new(&x, md, meta, "partial", "key:1", NULL, 100, 50, &err)
          == APR_SUCCESS);
    CHECK_STR(x.filename, "report.pdf");
    CHECK_STR(x.filetype, "application/pdf");
    CHECK_STR(x.metadata, meta);
    CHECK_STR(x.concat, "partial");
    CHECK_STR(x.key_id, "");
    CHECK_STR(x.state, GMCP_UPLOAD_RECEIVING);
    CHECK(x.created == 100 && x.expires == 150 && x.length == 42 && !*x.parts && !*x.sha256);
    CHECK(gmcp_tus_metadata(p, NULL, &md, &err) == APR_SUCCESS);
    CHECK(gmcp_upload_fill_new(&x, md, NULL, NULL, "key:1", "7", 1, 1, &err) == APR_SUCCESS
          && !*x.filename && !*x.filetype && !*x.metadata && !*x.concat && !strcmp(x.key_id, "7"));
    CHECK(gmcp_tus_metadata(p, "filename Li4veA==", &md, &err) == APR_SUCCESS);
    CHECK(gmcp_upload_fill_new(&x, md, NULL, NULL, "key:1", NULL, 1, 1, &err) == APR_EINVAL
          && strstr(err, "filename must be a plain file name"));
    CHECK(gmcp_tus_metadata(p, "filetype dGV4dC9wbGFpbjsgY2hhcnNldD11dGYtOA==", &md, &err)
          == APR_SUCCESS);
    CHECK(gmcp_upload_fill_new(&x, md, NULL, NULL, "key:1", NULL, 1, 1, &err) == APR_EINVAL
          && !strcmp(err, "Upload-Metadata: filetype is not a media type"));
    for (i = 0; i < 300; i++) {
        const char *id = gmcp_upload_new_id(p);
        if (!id || id[0] == '-' || !gmcp_upload_id_ok(id)) ok = 0;
    }
    CHECK(ok);
    CHECK_STR(gmcp_upload_spool_path(p, "/spool", "abc"), "/spool/abc");
}

static void t_room(apr_pool_t *p)
{
    (void)p;
    CHECK(gmcp_upload_room(10, 3, 100, -1, 0) == 7);
    CHECK(gmcp_upload_room(10, 3, 100, 5, 99) == 7);   /* a known length: no quota */
    CHECK(gmcp_upload_room(-1, 3, 100, -1, 0) == 97);  /* deferred: up to the max */
    CHECK(gmcp_upload_room(-1, 3, 100, 50, 20) == 30); /* ...and what the quota leaves */
    CHECK(gmcp_upload_room(-1, 3, 100, 1000, 20) == 97);
    CHECK(gmcp_upload_room(-1, 3, 100, 50, 60) == 0); /* over quota: nothing */
}

/* The spool file continued at the durable offset: created only at 0, cut back to the
 * offset and positioned there; gone or short is lost. The hash resumes from its saved
 * state, or from the file. */
static void t_spool_continue(apr_pool_t *p)
{
    char tmp[] = "/tmp/gmcp-uploads-spool-XXXXXX";
    const char *path, *want;
    apr_file_t *f;
    apr_off_t at = 0;
    gmcp_sha256 *h;
    gmcp_upload x;
    int lost = -1, reread = -1;
    CHECK(mkdtemp(tmp) != NULL);
    path = apr_pstrcat(p, tmp, "/u", NULL);
    CHECK(gmcp_upload_spool_continue(p, path, 5, 1, &f, &lost) != APR_SUCCESS && lost && !f);
    /* Created at offset 0 only when allowed (an upload from before creation made it). */
    CHECK(gmcp_upload_spool_continue(p, path, 0, 0, &f, &lost) != APR_SUCCESS && lost && !f);
    CHECK(gmcp_upload_spool_continue(p, path, 0, 1, &f, &lost) == APR_SUCCESS && !lost && f);
    apr_file_close(f);
    write_file(p, path, "0123456789", 10);
    CHECK(gmcp_upload_spool_continue(p, path, 20, 0, &f, &lost) != APR_SUCCESS && lost && !f);
    CHECK(gmcp_upload_spool_continue(p, path, 5, 0, &f, &lost) == APR_SUCCESS && !lost);
    CHECK(apr_file_seek(f, APR_CUR, &at) == APR_SUCCESS && at == 5);
    CHECK(apr_file_write_full(f, "X", 1, NULL) == APR_SUCCESS);
    apr_file_close(f);
    CHECK_STR(read_file(p, path), "01234X");
    /* The hash at offset 5: saved, or read back. */
    memset(&x, 0, sizeof(x));
    x.offset = 5;
    h = gmcp_sha256_make(p);
    gmcp_sha256_update(h, "01234", 5);
    want = gmcp_sha256_result(p, h);
    x.sha_state = gmcp_sha256_save(p, h);
    CHECK((h = gmcp_upload_resume_hash(p, path, &x, &reread)) && !reread
          && !strcmp(gmcp_sha256_result(p, h), want));
    x.sha_state = "";
    CHECK((h = gmcp_upload_resume_hash(p, path, &x, &reread)) && reread
          && !strcmp(gmcp_sha256_result(p, h), want));
    x.offset = 50; /* more than the file holds */
    CHECK(gmcp_upload_resume_hash(p, path, &x, &reread) == NULL && reread);
    x.offset = 0;
    CHECK((h = gmcp_upload_resume_hash(p, path, &x, &reread)) && !reread
          && gmcp_sha256_bytes(h) == 0);
    apr_file_remove(path, p);
    apr_dir_remove(tmp, p);
}

/* A body started on a spool file (at offset 0, or on) and fed pieces. */
static gmcp_spool_writer *body_on(apr_pool_t *p, const char *path, gmcp_upload_body *b,
                                  gmcp_receipt *rc, apr_int64_t offset, const char *filetype,
                                  apr_int64_t room, const char *algo)
{
    apr_file_t *f;
    gmcp_spool_writer *w;
    gmcp_upload x;
    int lost;
    memset(&x, 0, sizeof(x));
    memset(rc, 0, sizeof(*rc));
    x.offset = offset;
    x.filetype = filetype;
    if (offset) write_file(p, path, apr_pcalloc(p, (apr_size_t)offset), (apr_size_t)offset);
    if (gmcp_upload_spool_continue(p, path, offset, 1, &f, &lost) != APR_SUCCESS) return NULL;
    if (gmcp_spool_open(&w, p, f, gmcp_sha256_make(p), GMCP_SPOOL_SYNCED) != APR_SUCCESS)
        return NULL;
    gmcp_body_start(b, p, &x, room, algo, w, rc);
    return w;
}

/* Room: a piece that fits exactly is taken, one byte more stops the body. Bytes are
 * recorded as they came (committed), or are still to be. */
static void t_body_room(apr_pool_t *p, const char *path)
{
    apr_int64_t all = 0;
    gmcp_upload_body b;
    gmcp_receipt rc;
    gmcp_spool_writer *w;
    CHECK((w = body_on(p, path, &b, &rc, 4, "", 10, NULL)) != NULL);
    CHECK(gmcp_body_may_record(&b)); /* past offset 0, no checksum */
    CHECK(gmcp_body_take(&b, "abcdef", 6) == APR_SUCCESS
          && gmcp_body_take(&b, "ghij", 4) == APR_SUCCESS);
    CHECK(gmcp_body_take(&b, "k", 1) == APR_EINVAL && rc.too_big && rc.got == 10);
    CHECK(gmcp_body_outcome(&b) == GMCP_BODY_DISCARD);
    gmcp_spool_close(w);
    CHECK((w = body_on(p, path, &b, &rc, 0, "", 100, NULL)) != NULL);
    CHECK(!gmcp_body_may_record(&b)); /* the first bytes not sniffed yet */
    CHECK(gmcp_body_take(&b, "hello, world\n", 13) == APR_SUCCESS);
    gmcp_body_ended(&b);
    CHECK(rc.sniffed && !strncmp(rc.sniffed, "text/", 5) && !rc.conflict);
    CHECK(gmcp_body_may_record(&b));
    gmcp_body_verify(&b, NULL, 0); /* no checksum: nothing to say */
    CHECK(!rc.mismatch && gmcp_body_outcome(&b) == GMCP_BODY_COMMIT);
    CHECK(gmcp_spool_finish(w, &all) == APR_SUCCESS && all == 13);
    rc.committed = rc.got;
    CHECK(gmcp_body_outcome(&b) == GMCP_BODY_KEEP);
    gmcp_spool_close(w);
    CHECK_STR(read_file(p, path), "hello, world\n");
    rc.io_error = 1;
    CHECK(gmcp_body_outcome(&b) == GMCP_BODY_FAILED);
}

/* The first bytes against the declared type: a short body when it ends, a long one as
 * soon as the sniff window is full (that piece is not written). */
static void t_body_sniff(apr_pool_t *p, const char *path)
{
    char *big = apr_pcalloc(p, 2 * GMCP_SNIFF_BYTES);
    gmcp_upload_body b;
    gmcp_receipt rc;
    gmcp_spool_writer *w;
    CHECK((w = body_on(p, path, &b, &rc, 0, "application/pdf", 100, NULL)) != NULL);
    CHECK(gmcp_body_take(&b, (const char *)png, sizeof(png)) == APR_SUCCESS && !rc.sniffed);
    gmcp_body_ended(&b);
    CHECK(rc.conflict && !strcmp(rc.sniffed, "image/png"));
    CHECK(gmcp_body_outcome(&b) == GMCP_BODY_DISCARD);
    gmcp_spool_close(w);
    memcpy(big, png, sizeof(png));
    CHECK((w = body_on(p, path, &b, &rc, 0, "application/pdf", 1 << 20, NULL)) != NULL);
    CHECK(gmcp_body_take(&b, big, GMCP_SNIFF_BYTES / 2) == APR_SUCCESS && !rc.sniffed);
    CHECK(gmcp_body_take(&b, big + GMCP_SNIFF_BYTES / 2, GMCP_SNIFF_BYTES) == APR_EINVAL
          && rc.conflict && rc.got == GMCP_SNIFF_BYTES / 2);
    gmcp_spool_close(w);
    CHECK((w = body_on(p, path, &b, &rc, 0, "image/png", 1 << 20, NULL)) != NULL);
    CHECK(gmcp_body_take(&b, big, 2 * GMCP_SNIFF_BYTES) == APR_SUCCESS
          && !strcmp(rc.sniffed, "image/png") && !rc.conflict && rc.got == 2 * GMCP_SNIFF_BYTES);
    gmcp_spool_close(w);
}

/* Upload-Checksum: nothing is recorded before the whole body verified; a mismatch or a
 * body cut short discards the chunk (without a checksum, what came is kept). */
static void t_body_checksum(apr_pool_t *p, const char *path)
{
    const char *algo;
    unsigned char *sha1_abc;
    apr_size_t n;
    gmcp_upload_body b;
    gmcp_receipt rc;
    gmcp_spool_writer *w;
    CHECK(gmcp_tus_checksum(p, "sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=", &algo, &sha1_abc, &n)
          == APR_SUCCESS);
    CHECK((w = body_on(p, path, &b, &rc, 3, "", 100, "sha1")) != NULL);
    CHECK(!gmcp_body_may_record(&b));
    CHECK(gmcp_body_take(&b, "abc", 3) == APR_SUCCESS);
    gmcp_body_verify(&b, sha1_abc, n);
    CHECK(!rc.mismatch && gmcp_body_outcome(&b) == GMCP_BODY_COMMIT);
    gmcp_spool_close(w);
    CHECK((w = body_on(p, path, &b, &rc, 3, "", 100, "sha1")) != NULL);
    CHECK(gmcp_body_take(&b, "abd", 3) == APR_SUCCESS);
    gmcp_body_verify(&b, sha1_abc, n);
    CHECK(rc.mismatch && gmcp_body_outcome(&b) == GMCP_BODY_DISCARD);
    gmcp_spool_close(w);
    CHECK((w = body_on(p, path, &b, &rc, 3, "", 100, "md5")) != NULL);
    CHECK(gmcp_body_take(&b, "ab", 2) == APR_SUCCESS);
    rc.aborted = 1;
    gmcp_body_verify(&b, sha1_abc, n);
    CHECK(!rc.mismatch && gmcp_body_outcome(&b) == GMCP_BODY_DISCARD);
    gmcp_spool_close(w);
    CHECK((w = body_on(p, path, &b, &rc, 3, "", 100, NULL)) != NULL);
    CHECK(gmcp_body_take(&b, "ab", 2) == APR_SUCCESS);
    rc.aborted = 1;
    CHECK(gmcp_body_outcome(&b) == GMCP_BODY_COMMIT);
    gmcp_spool_close(w);
    /* A digest never verified goes with its pool. */
    CHECK((w = body_on(p, path, &b, &rc, 3, "", 100, "sha256")) != NULL);
    gmcp_spool_close(w);
}

static void t_body(apr_pool_t *p)
{
    char tmp[] = "/tmp/gmcp-uploads-body-XXXXXX";
    const char *path;
    CHECK(mkdtemp(tmp) != NULL);
    path = apr_pstrcat(p, tmp, "/u", NULL);
    t_body_room(p, path);
    t_body_sniff(p, path);
    t_body_checksum(p, path);
    apr_file_remove(path, p);
    apr_dir_remove(tmp, p);
}

/* The copy of a plan's two parts a and b: in order, hashed, the first bytes sniffed. */
static void t_concat_copy(apr_pool_t *p, const gmcp_concat_plan *plan, const char *a, const char *b)
{
    const char *out = gmcp_upload_spool_path(p, concat_dir, "final");
    gmcp_sha256 *sha = gmcp_sha256_make(p);
    gmcp_concat_copy res;
    write_file(p, gmcp_upload_spool_path(p, concat_dir, a), "hello", 5);
    write_file(p, gmcp_upload_spool_path(p, concat_dir, b), "abc", 3);
    CHECK(gmcp_concat_copy_parts(p, concat_dir, plan, "", out, sha, &res) == GMCP_FINAL_OK);
    CHECK_STR(read_file(p, out), "helloabc");
    CHECK_STR(gmcp_sha256_result(p, sha),
              "f6c9737012d25c41df35f6d5d03d8d84912795326ffd5d429ce73977526c67c6");
    CHECK(res.sniffed && !strncmp(res.sniffed, "text/", 5));
    /* The first bytes contradict the declared type: no file is left. */
    write_file(p, gmcp_upload_spool_path(p, concat_dir, a), png, sizeof(png));
    CHECK(gmcp_concat_copy_parts(p, concat_dir, plan, "application/pdf", out, gmcp_sha256_make(p),
                                 &res)
          == GMCP_FINAL_CONFLICT);
    CHECK(!strcmp(res.sniffed, "image/png") && read_file(p, out) == NULL);
    /* A part's file gone, or nowhere to write: which file, and why. */
    apr_file_remove(gmcp_upload_spool_path(p, concat_dir, b), p);
    CHECK(gmcp_concat_copy_parts(p, concat_dir, plan, "", out, gmcp_sha256_make(p), &res)
              == GMCP_FINAL_DISK
          && !strcmp(res.path, gmcp_upload_spool_path(p, concat_dir, b))
          && APR_STATUS_IS_ENOENT(res.rv));
    CHECK(gmcp_concat_copy_parts(p, concat_dir, plan, "", "/nonexistent-dir/final",
                                 gmcp_sha256_make(p), &res)
              == GMCP_FINAL_DISK
          && !strcmp(res.path, "/nonexistent-dir/final"));
    apr_file_remove(out, p);
    apr_file_remove(gmcp_upload_spool_path(p, concat_dir, a), p);
}

/* A final upload's parts: each a finished partial upload of the owner's, in order; then
 * their bytes copied, hashed and sniffed. */
static void t_concat(apr_pool_t *p)
{
    gmcp_db db;
    apr_dbd_t *h;
    gmcp_upload u;
    gmcp_concat_plan plan;
    const char *a = "AAAAAAAAAAAAAAAAAAAAA1", *b = "BBBBBBBBBBBBBBBBBBBBB1";
    const char *busy = "CCCCCCCCCCCCCCCCCCCCC1", *whole = "DDDDDDDDDDDDDDDDDDDDD1";
    const char *theirs = "EEEEEEEEEEEEEEEEEEEEE1";
    CHECK(open_db(p, concat_dir, &db, &h) == 0);
    make_row(&u, a, "key:1", "partial", GMCP_UPLOAD_COMPLETE, 5);
    CHECK(gmcp_upload_create(&db, &u) == APR_SUCCESS);
    make_row(&u, b, "key:1", "partial", GMCP_UPLOAD_COMPLETE, 3);
    CHECK(gmcp_upload_create(&db, &u) == APR_SUCCESS);
    make_row(&u, busy, "key:1", "partial", GMCP_UPLOAD_RECEIVING, 3);
    CHECK(gmcp_upload_create(&db, &u) == APR_SUCCESS);
    make_row(&u, whole, "key:1", "", GMCP_UPLOAD_COMPLETE, 3);
    CHECK(gmcp_upload_create(&db, &u) == APR_SUCCESS);
    make_row(&u, theirs, "key:2", "partial", GMCP_UPLOAD_COMPLETE, 3);
    CHECK(gmcp_upload_create(&db, &u) == APR_SUCCESS);
    CHECK(gmcp_concat_plan_make(&db, p, "key:1",
                                apr_pstrcat(p, "final;/up/", a, " https://h/up/", b, NULL), 100,
                                &plan)
          == GMCP_FINAL_OK);
    CHECK(plan.total == 8 && plan.parts->nelts == 2
          && !strcmp(plan.ids, apr_pstrcat(p, a, " ", b, NULL)));
    CHECK(gmcp_concat_plan_make(&db, p, "key:1",
                                apr_pstrcat(p, "final;/up/", a, " /up/", busy, NULL), 100, &plan)
              == GMCP_FINAL_BAD_PART
          && !strcmp(plan.bad_url, apr_pstrcat(p, "/up/", busy, NULL)));
    CHECK(gmcp_concat_plan_make(&db, p, "key:1", apr_pstrcat(p, "final;/up/", whole, NULL), 100,
                                &plan)
          == GMCP_FINAL_BAD_PART);
    CHECK(gmcp_concat_plan_make(&db, p, "key:1", apr_pstrcat(p, "final;/up/", theirs, NULL), 100,
                                &plan)
          == GMCP_FINAL_BAD_PART);
    CHECK(gmcp_concat_plan_make(&db, p, "key:1", "final;/up/not-an-id", 100, &plan)
              == GMCP_FINAL_BAD_PART
          && !strcmp(plan.bad_url, "/up/not-an-id"));
    CHECK(gmcp_concat_plan_make(&db, p, "key:1", "final;", 100, &plan) == GMCP_FINAL_NO_PARTS);
    CHECK(gmcp_concat_plan_make(&db, p, "key:1", apr_pstrcat(p, "final;/up/", a, " /up/", b, NULL),
                                7, &plan)
          == GMCP_FINAL_TOO_BIG);
    CHECK(gmcp_concat_plan_make(&db, p, "key:1", apr_pstrcat(p, "final;/up/", a, " /up/", b, NULL),
                                100, &plan)
          == GMCP_FINAL_OK);
    t_concat_copy(p, &plan, a, b);
    apr_dbd_close(db.driver, h);
    unit_remove_db(p, concat_dir, "u.db");
}

/* A row as the progress stream reads it. */
static void progress_row(gmcp_upload *x, const char *phase, apr_int64_t progress, apr_int64_t at)
{
    memset(x, 0, sizeof(*x));
    x->id = "U";
    x->state = GMCP_UPLOAD_RECEIVING;
    x->phase = phase;
    x->length = 10000;
    x->progress = progress;
    x->progress_at = at;
    x->expires = gmcp_now_sec() + 1000;
    x->detail = "";
    x->sniffed = "";
}

static json_int_t jint(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

/* One report per poll: the phase, its bytes, a rate from the recent samples (none when
 * stale), an ETA while it means something. */
static void t_progress_rate(apr_pool_t *p, apr_int64_t t0)
{
    gmcp_rate_window w;
    gmcp_upload x;
    json_t *o;
    (void)p;
    memset(&w, 0, sizeof(w));
    progress_row(&x, GMCP_PHASE_RECEIVING, 0, 0);
    o = gmcp_upload_progress_json(&x, &w, t0);
    CHECK_STR(json_string_value(json_object_get(o, "phase")), "receiving");
    CHECK(jint(o, "bytes") == 0 && jint(o, "rate") == 0 && jint(o, "length") == 10000
          && json_is_null(json_object_get(o, "eta")) && !json_object_get(o, "detail"));
    json_decref(o);
    progress_row(&x, GMCP_PHASE_RECEIVING, 1000, t0);
    json_decref(gmcp_upload_progress_json(&x, &w, t0 + 100));
    progress_row(&x, GMCP_PHASE_RECEIVING, 3000, t0 + 1000);
    o = gmcp_upload_progress_json(&x, &w, t0 + 1100);
    CHECK(jint(o, "bytes") == 3000 && jint(o, "rate") == 2000);
    CHECK(json_real_value(json_object_get(o, "eta")) == 3.5); /* 7000 bytes at 2000/s */
    json_decref(o);
    o = gmcp_upload_progress_json(&x, &w, t0 + 3000); /* no news for 2 s */
    CHECK(jint(o, "rate") == 0 && json_is_null(json_object_get(o, "eta")));
    json_decref(o);
    /* The durable offset counts while receiving, even ahead of the progress written. */
    progress_row(&x, GMCP_PHASE_RECEIVING, 3000, t0 + 1000);
    x.offset = 5000;
    o = gmcp_upload_progress_json(&x, &w, t0 + 1100);
    CHECK(jint(o, "bytes") == 5000 && jint(o, "offset") == 5000);
    json_decref(o);
}

/* Samples older than the window go (two stay); the ring holds the newest 16; a new
 * phase starts the window over. */
static void t_progress_window(apr_pool_t *p, apr_int64_t t0)
{
    gmcp_rate_window w;
    gmcp_upload x;
    json_t *o;
    int i;
    (void)p;
    memset(&w, 0, sizeof(w));
    for (i = 0; i <= 50; i++) {
        progress_row(&x, GMCP_PHASE_RECEIVING, i < 40 ? 0 : (i - 40) * 100, t0 + i * 100);
        json_decref(gmcp_upload_progress_json(&x, &w, t0 + i * 100));
    }
    CHECK(w.n == GMCP_RATE_SAMPLES);
    o = gmcp_upload_progress_json(&x, &w, t0 + 5000);
    CHECK(jint(o, "rate") > 0 && jint(o, "rate") < 1000); /* 1000 bytes over 1.5 s */
    json_decref(o);
    progress_row(&x, GMCP_PHASE_RECEIVING, 900, t0 + 9000);
    json_decref(gmcp_upload_progress_json(&x, &w, t0 + 9000));
    progress_row(&x, GMCP_PHASE_RECEIVING, 1900, t0 + 9500);
    o = gmcp_upload_progress_json(&x, &w, t0 + 9500); /* the old ones are out */
    CHECK(jint(o, "rate") == 2000 && w.n == 2);
    json_decref(o);
    progress_row(&x, GMCP_PHASE_RECEIVED, 0, t0 + 9600); /* received: the whole length */
    o = gmcp_upload_progress_json(&x, &w, t0 + 9600);
    CHECK(jint(o, "bytes") == 10000 && w.n == 1 && !strcmp(w.phase, GMCP_PHASE_RECEIVED));
    json_decref(o);
}

/* The end: active names the file, failed says why, a deferred length is null;
 * terminated and expired rows say so whatever their phase. */
static void t_progress_phases(apr_pool_t *p, apr_int64_t t0)
{
    gmcp_rate_window w;
    gmcp_upload x;
    json_t *o;
    (void)p;
    memset(&w, 0, sizeof(w));
    progress_row(&x, GMCP_PHASE_ACTIVE, 0, t0);
    x.detail = "files/abc";
    x.sniffed = "application/pdf";
    o = gmcp_upload_progress_json(&x, &w, t0);
    CHECK_STR(json_string_value(json_object_get(o, "file")), "files/abc");
    CHECK_STR(json_string_value(json_object_get(o, "sniffed_type")), "application/pdf");
    json_decref(o);
    progress_row(&x, GMCP_PHASE_FAILED, 0, t0);
    x.detail = "quota";
    x.length = -1;
    o = gmcp_upload_progress_json(&x, &w, t0);
    CHECK_STR(json_string_value(json_object_get(o, "detail")), "quota");
    CHECK(json_is_null(json_object_get(o, "length")));
    json_decref(o);
    CHECK(gmcp_upload_phase_final(GMCP_PHASE_ACTIVE) && gmcp_upload_phase_final(GMCP_PHASE_FAILED)
          && gmcp_upload_phase_final("terminated") && gmcp_upload_phase_final("expired")
          && !gmcp_upload_phase_final(GMCP_PHASE_RECEIVING)
          && !gmcp_upload_phase_final(GMCP_PHASE_RELAYING));
    progress_row(&x, GMCP_PHASE_RECEIVING, 0, 0);
    x.state = GMCP_UPLOAD_TERMINATED;
    CHECK_STR(gmcp_upload_phase(&x, gmcp_now_sec()), "terminated");
    progress_row(&x, GMCP_PHASE_RECEIVING, 0, 0);
    x.expires = 100;
    CHECK(gmcp_upload_is_expired(&x, 101) && !gmcp_upload_is_expired(&x, 100));
    o = gmcp_upload_progress_json(&x, &w, t0);
    CHECK_STR(json_string_value(json_object_get(o, "phase")), "expired");
    json_decref(o);
}

static void t_progress(apr_pool_t *p)
{
    apr_int64_t t0 = apr_time_as_msec(apr_time_now());
    t_progress_rate(p, t0);
    t_progress_window(p, t0);
    t_progress_phases(p, t0);
}

UNIT_MAIN("uploads", {
    RUN(t_spool);
    RUN(t_spool_abandoned);
    RUN(t_spool_interval);
    RUN(t_tail_lost);
    RUN(t_sniff);
    RUN(t_sha_state);
    RUN(t_metadata);
    RUN(t_checksum);
    RUN(t_sha_forms);
    RUN(t_rows);
    RUN(t_lease);
    RUN(t_fill_new);
    RUN(t_room);
    RUN(t_spool_continue);
    RUN(t_body);
    RUN(t_concat);
    RUN(t_progress);
})
