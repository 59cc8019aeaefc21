/* test_archive.c — the backup archive: canonical values, write/read, tamper, truncation,
 * encryption. */
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "gmcp_archive.h"

static const char *canon(apr_pool_t *p, int type, const char *v)
{
    gmcp_abuf b = {0};
    const char *out;
    gmcp_canon_begin(&b);
    gmcp_canon_value(&b, 1, type, v, v ? strlen(v) : 0);
    gmcp_canon_end(&b);
    out = apr_pstrdup(p, b.data);
    gmcp_abuf_free(&b);
    return out;
}

static void t_canonical(apr_pool_t *p)
{
    CHECK_STR(canon(p, GMCP_COL_INT, "42"), "[42]\n");
    CHECK_STR(canon(p, GMCP_COL_INT, "+7"), "[7]\n");
    CHECK_STR(canon(p, GMCP_COL_INT, "-0"), "[0]\n");
    CHECK_STR(canon(p, GMCP_COL_INT, "12abc"), "[\"12abc\"]\n");
    CHECK_STR(canon(p, GMCP_COL_BOOL, "t"), "[true]\n"); /* PostgreSQL */
    CHECK_STR(canon(p, GMCP_COL_BOOL, "1"), "[true]\n"); /* SQLite */
    CHECK_STR(canon(p, GMCP_COL_BOOL, "f"), "[false]\n");
    CHECK_STR(canon(p, GMCP_COL_BOOL, "0"), "[false]\n");
    CHECK_STR(canon(p, GMCP_COL_TEXT, NULL), "[null]\n"); /* NULL ... */
    CHECK_STR(canon(p, GMCP_COL_TEXT, ""), "[\"\"]\n");   /* ... is not '' */
    CHECK_STR(canon(p, GMCP_COL_TEXT, "a\"b\\c\nd\te\x01"), "[\"a\\\"b\\\\c\\nd\\te\\u0001\"]\n");
    CHECK_STR(canon(p, GMCP_COL_TEXT, "\xc3\xa9"), "[\"\xc3\xa9\"]\n");
    CHECK_STR(canon(p, GMCP_COL_JSON, "{\"b\": 1, \"a\": [1, 2]}"),
              "[\"{\\\"a\\\":[1,2],\\\"b\\\":1}\"]\n");
    CHECK_STR(canon(p, GMCP_COL_TIME, "2026-12-01 19:22:10.526400+00"),
              "[\"2026-12-01T19:22:10.5264Z\"]\n");
    CHECK_STR(canon(p, GMCP_COL_TIME, "2026-12-01 19:22:10"), "[\"2026-12-01T19:22:10Z\"]\n");
    CHECK_STR(canon(p, GMCP_COL_TIME, "2026-12-01T19:22:10.000Z"), "[\"2026-12-01T19:22:10Z\"]\n");
    CHECK(gmcp_coltype_from_decl("BIGINT") == GMCP_COL_INT);
    CHECK(gmcp_coltype_from_decl("integer") == GMCP_COL_INT);
    CHECK(gmcp_coltype_from_decl("boolean") == GMCP_COL_BOOL);
    CHECK(gmcp_coltype_from_decl("jsonb") == GMCP_COL_JSON);
    CHECK(gmcp_coltype_from_decl("timestamp with time zone") == GMCP_COL_TIME);
    CHECK(gmcp_coltype_from_decl("TEXT") == GMCP_COL_TEXT);
}

/* A table written from engine values (gmcp_arc_val_*, encoded on the writer thread) must
 * be the same archive bytes as one written from the text lines gmcp_canon_* make: every
 * type, NULL, the integer edges, escapes, a zero-column row; enough rows that many
 * batches pass through the writer thread. */
static void t_values_same_as_lines(apr_pool_t *p)
{
    static const int types[] = {GMCP_COL_INT,  GMCP_COL_TEXT, GMCP_COL_BOOL, GMCP_COL_JSON,
                                GMCP_COL_TIME, GMCP_COL_INT,  GMCP_COL_TEXT};
    json_t *cols = json_array(), *none = json_array(), *ta, *tb;
    FILE *fa = tmpfile(), *fb = tmpfile();
    gmcp_arc_out *a = gmcp_arc_out_open(p, fa, NULL), *b = gmcp_arc_out_open(p, fb, NULL);
    gmcp_abuf line = {0};
    long long edges[] = {0, -1, 1, 9223372036854775807LL, -9223372036854775807LL - 1};
    int i, j, same = 1;
    long na, nb;
    for (j = 0; j < 7; j++)
        json_array_append_new(cols,
                              json_pack("{s:s, s:s}", "name", apr_psprintf(p, "c%d", j), "type",
                                        gmcp_coltype_name(types[j])));
    gmcp_arc_table_begin(a, "t", cols);
    gmcp_arc_table_begin(b, "t", cols);
    for (i = 0; i < 60000; i++) {
        long long n = edges[i % 5] + (i % 5 ? 0 : i);
        const char *txt = apr_psprintf(p, "row %d \"q\" \\ \n\t\x01 \xc3\xa9", i);
        const char *js = "{\"b\": 1, \"a\": [1, 2]}", *ts = "2026-12-01 19:22:10.500000";
        char num[24];
        snprintf(num, sizeof(num), "%lld", n);
        gmcp_canon_begin(&line);
        gmcp_canon_value(&line, 1, types[0], num, strlen(num));
        gmcp_canon_value(&line, 0, types[1], txt, strlen(txt));
        gmcp_canon_value(&line, 0, types[2], i % 2 ? "1" : "0", 1);
        gmcp_canon_value(&line, 0, types[3], js, strlen(js));
        gmcp_canon_value(&line, 0, types[4], ts, strlen(ts));
        gmcp_canon_value(&line, 0, types[5], NULL, 0);
        gmcp_canon_value(&line, 0, types[6], "1.5", 3);
        gmcp_canon_end(&line);
        gmcp_arc_row(a, line.data, line.len);
        gmcp_arc_val_int(b, n);
        gmcp_arc_val_text(b, txt, strlen(txt));
        gmcp_arc_val_int(b, i % 2);
        gmcp_arc_val_text(b, js, strlen(js));
        gmcp_arc_val_text(b, ts, strlen(ts));
        gmcp_arc_val_null(b);
        gmcp_arc_val_double(b, 1.5);
        if (gmcp_arc_val_row_end(b)) same = 0;
    }
    gmcp_arc_table_end(a);
    gmcp_arc_table_end(b);
    /* Every byte alone as text, an integer in a text column, longest integers. */
    {
        json_t *ycols = json_pack("[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}]", "name", "b", "type",
                                  "text", "name", "n", "type", "text", "name", "i", "type", "int");
        gmcp_arc_table_begin(a, "y", ycols);
        gmcp_arc_table_begin(b, "y", ycols);
        for (i = 0; i < 256; i++) {
            char c = (char)i, num[24];
            long long n = i % 2 ? -9223372036854775807LL - 1 + i : 1000000000000000000LL * (i % 9);
            snprintf(num, sizeof(num), "%lld", n);
            gmcp_canon_begin(&line);
            gmcp_canon_value(&line, 1, GMCP_COL_TEXT, &c, 1);
            gmcp_canon_value(&line, 0, GMCP_COL_TEXT, num, strlen(num));
            gmcp_canon_value(&line, 0, GMCP_COL_INT, num, strlen(num));
            gmcp_canon_end(&line);
            gmcp_arc_row(a, line.data, line.len);
            gmcp_arc_val_text(b, &c, 1);
            gmcp_arc_val_int(b, n);
            gmcp_arc_val_int(b, n);
            if (gmcp_arc_val_row_end(b)) same = 0;
        }
        gmcp_arc_table_end(a);
        gmcp_arc_table_end(b);
        json_decref(ycols);
    }
    gmcp_arc_table_begin(a, "z", none);
    gmcp_arc_table_begin(b, "z", none);
    gmcp_arc_row(a, "[]\n", 3);
    gmcp_arc_val_row_end(b);
    gmcp_arc_table_end(a);
    gmcp_arc_table_end(b);
    ta = gmcp_arc_tables(a);
    tb = gmcp_arc_tables(b);
    CHECK(same); /* no row end failed */
    CHECK(json_equal(ta, tb));
    CHECK(json_integer_value(json_object_get(json_array_get(tb, 0), "rows")) == 60000);
    gmcp_arc_out_close(a);
    gmcp_arc_out_close(b);
    na = ftell(fa);
    nb = ftell(fb);
    CHECK(na == nb && na > 4 * (1 << 20)); /* several writer batches */
    rewind(fa);
    rewind(fb);
    for (;;) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) {
            same = 0;
            break;
        }
        if (ca == EOF) break;
    }
    CHECK(same);
    fclose(fa);
    fclose(fb);
    gmcp_abuf_free(&line);
    json_decref(cols);
    json_decref(none);
}

static const char *write_archive(apr_pool_t *p, const char *dir, const char *secret, int rows)
{
    const char *path = apr_pstrcat(p, dir, "/t.gmcpbak", NULL);
    FILE *fp = fopen(path, "wb");
    gmcp_arc_out *o = gmcp_arc_out_open(p, fp, secret);
    json_t *cols = json_pack("[{s:s, s:s}, {s:s, s:s}]", "name", "id", "type", "int", "name", "v",
                             "type", "text");
    int i;
    gmcp_arc_table_begin(o, "t", cols);
    for (i = 0; i < rows; i++) {
        char line[64];
        int n = snprintf(line, sizeof(line), "[%d,\"row %d\"]\n", i, i);
        gmcp_arc_row(o, line, (size_t)n);
    }
    gmcp_arc_table_end(o);
    json_decref(cols);
    CHECK(gmcp_arc_finish(o, json_pack("{s:{s:i}}", "schema", "version", 1)) == APR_SUCCESS);
    gmcp_arc_out_close(o);
    fclose(fp);
    return path;
}

static int nrows;
static apr_status_t count_row(void *b, const char *l, size_t n)
{
    (void)b;
    (void)l;
    (void)n;
    nrows++;
    return APR_SUCCESS;
}

/* Stops the read at the third row, with a status of its own. */
static apr_status_t stop_row(void *b, const char *l, size_t n)
{
    (void)b;
    (void)l;
    (void)n;
    return ++nrows == 3 ? APR_EGENERAL : APR_SUCCESS;
}

static void rewrite(const char *path, long at, int byte, long truncate_to)
{
    FILE *f = fopen(path, "r+b");
    if (byte >= 0) {
        fseek(f, at, SEEK_SET);
        fputc(byte, f);
    }
    fclose(f);
    if (truncate_to >= 0 && truncate(path, truncate_to)) { /* checked by the caller */
    }
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

static void t_roundtrip(apr_pool_t *p)
{
    char tmpl[] = "/tmp/gmcp-arc-XXXXXX";
    const char *dir = mkdtemp(tmpl), *path, *err = NULL;
    json_t *man = NULL;
    gmcp_arc_cb cb = {NULL, count_row}, stop = {NULL, stop_row};
    apr_status_t rv;
    int enc = -1;
    long size;
    path = write_archive(p, dir, NULL, 1000);
    nrows = 0;
    rv = gmcp_arc_read(p, path, NULL, &cb, NULL, &man, &err);
    CHECK(rv == APR_SUCCESS && nrows == 1000 && man);
    CHECK(json_integer_value(
              json_object_get(json_array_get(json_object_get(man, "tables"), 0), "rows"))
          == 1000);
    if (man) json_decref(man);
    /* a callback's status stops the read as it is; *why is the archive's only */
    nrows = 0;
    err = NULL;
    CHECK(gmcp_arc_read(p, path, NULL, &stop, NULL, &man, &err) == APR_EGENERAL && nrows == 3
          && !err && !man);
    CHECK(gmcp_arc_is_encrypted(path, &enc) == APR_SUCCESS && enc == 0);
    CHECK(APR_STATUS_IS_ENOENT(
              gmcp_arc_read(p, "/nonexistent/t.gmcpbak", NULL, NULL, NULL, &man, &err))
          && strstr(err, "cannot open"));
    /* a changed byte in a row */
    size = file_size(path);
    rewrite(path, 200, 'X', -1);
    CHECK(gmcp_arc_read(p, path, NULL, NULL, NULL, &man, &err) == APR_EINVAL
          && strstr(err, "tampered"));
    /* truncated */
    path = write_archive(p, dir, NULL, 1000);
    rewrite(path, 0, -1, size / 2);
    CHECK(gmcp_arc_read(p, path, NULL, NULL, NULL, &man, &err) == APR_EINVAL
          && strstr(err, "truncated"));
    /* encrypted: needs the key, refuses another one, detects a flipped bit and truncation */
    path = write_archive(p, dir, "the right key, long enough", 100000);
    CHECK(gmcp_arc_is_encrypted(path, &enc) == APR_SUCCESS && enc == 1);
    CHECK(gmcp_arc_read(p, path, NULL, NULL, NULL, &man, &err) == APR_EINVAL
          && strstr(err, "encrypted"));
    CHECK(gmcp_arc_read(p, path, "another key, long enough", NULL, NULL, &man, &err) == APR_EINVAL
          && strstr(err, "wrong key"));
    nrows = 0;
    rv = gmcp_arc_read(p, path, "the right key, long enough", &cb, NULL, &man, &err);
    CHECK(rv == APR_SUCCESS && nrows == 100000);
    if (!rv) json_decref(man);
    size = file_size(path);
    rewrite(path, size - 100, 'Z', -1);
    CHECK(gmcp_arc_read(p, path, "the right key, long enough", NULL, NULL, &man, &err) == APR_EINVAL
          && strstr(err, "tampered"));
    path = write_archive(p, dir, "the right key, long enough", 100000);
    rewrite(path, 0, -1, size - 40);
    CHECK(gmcp_arc_read(p, path, "the right key, long enough", NULL, NULL, &man, &err) == APR_EINVAL
          && strstr(err, "truncated"));
    unlink(path);
    rmdir(dir);
}

UNIT_MAIN("test_archive", {
    RUN(t_canonical);
    RUN(t_roundtrip);
    RUN(t_values_same_as_lines);
})
