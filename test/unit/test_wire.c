/* Header and URL grammars of gmcp_wire.c (tus offsets, upload ids, Upload-Concat,
 * Last-Event-ID), without httpd. */
#include "unit.h"
#include "gmcp_wire.h"

static void t_offset(apr_pool_t *p)
{
    apr_int64_t v = -7;
    (void)p;
    CHECK(gmcp_tus_offset_parse("0", &v) == APR_SUCCESS && v == 0);
    CHECK(gmcp_tus_offset_parse("1", &v) == APR_SUCCESS && v == 1);
    CHECK(gmcp_tus_offset_parse("123456789", &v) == APR_SUCCESS && v == 123456789);
    CHECK(gmcp_tus_offset_parse("4611686018427387904", &v) == APR_SUCCESS /* 2^62 */
          && v == (apr_int64_t)1 << 62);
    v = -7;
    CHECK(gmcp_tus_offset_parse("4611686018427387905", &v) == APR_EINVAL && v == -7);
    CHECK(gmcp_tus_offset_parse("18446744073709551616", &v) == APR_EINVAL); /* 2^64 */
    CHECK(gmcp_tus_offset_parse(NULL, &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("00", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("01", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("-1", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("+1", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse(" 1", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("1 ", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("1e3", &v) == APR_EINVAL);
    CHECK(gmcp_tus_offset_parse("0x10", &v) == APR_EINVAL);
}

static void t_id(apr_pool_t *p)
{
    (void)p;
    CHECK(gmcp_upload_id_ok("abcdefghijklmnopqrstuv"));
    CHECK(gmcp_upload_id_ok("AZaz09-_AZaz09-_AZaz09"));
    CHECK(!gmcp_upload_id_ok("abcdefghijklmnopqrstu"));   /* 21 */
    CHECK(!gmcp_upload_id_ok("abcdefghijklmnopqrstuvw")); /* 23 */
    CHECK(!gmcp_upload_id_ok(""));
    CHECK(!gmcp_upload_id_ok(NULL));
    CHECK(!gmcp_upload_id_ok("abcdefghijklmnopqrstu="));
    CHECK(!gmcp_upload_id_ok("abcdefghijklmnopqrst/u"));
    CHECK(!gmcp_upload_id_ok("abcdefghijklmnopqrst\xc3\xa9"));
}

static void t_last_segment(apr_pool_t *p)
{
    CHECK_STR(gmcp_url_last_segment(p, "https://h/mcp/uploads/abc"), "abc");
    CHECK_STR(gmcp_url_last_segment(p, "/mcp/uploads/abc/"), "abc");
    CHECK_STR(gmcp_url_last_segment(p, "/mcp/uploads/abc///"), "abc");
    CHECK_STR(gmcp_url_last_segment(p, "abc"), "abc");
    CHECK_STR(gmcp_url_last_segment(p, "/mcp/uploads/"), "uploads");
    CHECK_STR(gmcp_url_last_segment(p, "/"), "");
    CHECK_STR(gmcp_url_last_segment(p, "///"), "");
    CHECK_STR(gmcp_url_last_segment(p, ""), "");
    CHECK_STR(gmcp_url_last_segment(p, "/a?x=1"), "a?x=1"); /* no query handling */
}

static void t_concat(apr_pool_t *p)
{
    apr_array_header_t *a;
    gmcp_concat_part *pt;
    CHECK(gmcp_tus_concat_kind(NULL) == GMCP_CONCAT_NONE);
    CHECK(gmcp_tus_concat_kind("partial") == GMCP_CONCAT_PARTIAL);
    CHECK(gmcp_tus_concat_kind("final;") == GMCP_CONCAT_FINAL);
    CHECK(gmcp_tus_concat_kind("final;/a /b") == GMCP_CONCAT_FINAL);
    CHECK(gmcp_tus_concat_kind("final") == GMCP_CONCAT_INVALID);
    CHECK(gmcp_tus_concat_kind("partial;") == GMCP_CONCAT_INVALID);
    CHECK(gmcp_tus_concat_kind("Partial") == GMCP_CONCAT_INVALID);
    CHECK(gmcp_tus_concat_kind("") == GMCP_CONCAT_INVALID);

    CHECK(gmcp_tus_concat_parse(p, NULL) == NULL);
    CHECK(gmcp_tus_concat_parse(p, "partial") == NULL);
    CHECK(gmcp_tus_concat_parse(p, "final") == NULL);
    a = gmcp_tus_concat_parse(p, "final;");
    CHECK(a && a->nelts == 0);
    a = gmcp_tus_concat_parse(p, "final;   ");
    CHECK(a && a->nelts == 0);
    a = gmcp_tus_concat_parse(p,
                              "final;/mcp/uploads/abcdefghijklmnopqrstuv  "
                              "https://h/mcp/uploads/AZaz09-_AZaz09-_AZaz09/ /x/short");
    CHECK(a && a->nelts == 3);
    if (a && a->nelts == 3) {
        pt = &APR_ARRAY_IDX(a, 0, gmcp_concat_part);
        CHECK_STR(pt->url, "/mcp/uploads/abcdefghijklmnopqrstuv");
        CHECK_STR(pt->id, "abcdefghijklmnopqrstuv");
        pt = &APR_ARRAY_IDX(a, 1, gmcp_concat_part);
        CHECK_STR(pt->url, "https://h/mcp/uploads/AZaz09-_AZaz09-_AZaz09/");
        CHECK_STR(pt->id, "AZaz09-_AZaz09-_AZaz09");
        pt = &APR_ARRAY_IDX(a, 2, gmcp_concat_part);
        CHECK_STR(pt->url, "/x/short");
        CHECK(pt->id == NULL);
    }
    /* Only spaces separate (as apr_strtok(" ") did in the glue). */
    a = gmcp_tus_concat_parse(p, "final;/a\t/b");
    CHECK(a && a->nelts == 1);
}

static void t_last_event_id(apr_pool_t *p)
{
    const char *sid = NULL;
    apr_uint64_t seq = 99;
    CHECK(gmcp_last_event_id_parse(p, "abc.0", &sid, &seq) == APR_SUCCESS && seq == 0);
    CHECK_STR(sid, "abc");
    CHECK(gmcp_last_event_id_parse(p, "a.b.c.17", &sid, &seq) == APR_SUCCESS && seq == 17);
    CHECK_STR(sid, "a.b.c");
    CHECK(gmcp_last_event_id_parse(p, ".5", &sid, &seq) == APR_SUCCESS && seq == 5);
    CHECK_STR(sid, "");
    CHECK(gmcp_last_event_id_parse(p, "s.007", &sid, &seq) == APR_SUCCESS && seq == 7);
    CHECK(gmcp_last_event_id_parse(p, "s.18446744073709551615", &sid, &seq) == APR_SUCCESS
          && seq == APR_UINT64_MAX);
    sid = NULL;
    seq = 99;
    CHECK(gmcp_last_event_id_parse(p, "s.18446744073709551616", &sid, &seq) == APR_EINVAL
          && sid == NULL && seq == 99);
    CHECK(gmcp_last_event_id_parse(p, NULL, &sid, &seq) == APR_EINVAL);
    CHECK(gmcp_last_event_id_parse(p, "", &sid, &seq) == APR_EINVAL);
    CHECK(gmcp_last_event_id_parse(p, "abc", &sid, &seq) == APR_EINVAL);
    CHECK(gmcp_last_event_id_parse(p, "abc.", &sid, &seq) == APR_EINVAL);
    CHECK(gmcp_last_event_id_parse(p, "abc.-1", &sid, &seq) == APR_EINVAL);
    CHECK(gmcp_last_event_id_parse(p, "abc.1 ", &sid, &seq) == APR_EINVAL);
    CHECK(gmcp_last_event_id_parse(p, "abc.1.x", &sid, &seq) == APR_EINVAL);
}

UNIT_MAIN("wire", {
    RUN(t_offset);
    RUN(t_id);
    RUN(t_last_segment);
    RUN(t_concat);
    RUN(t_last_event_id);
})
