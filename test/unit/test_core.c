/* Unit tests for the core helpers: encodings, UTF-8, JSON-RPC framing, registry. */
#include "unit.h"
#include <apr_strings.h>
#include "gmcp_util.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_registry.h"
#include "gmcp_mcp.h"
#include "gmcp_migrate.h"
#include "gmcp_stateless.h"
#include "gmcp_breaker.h"

static void t_b64url(apr_pool_t *p)
{
    apr_size_t len = 0;
    const char *e = gmcp_b64url_encode(p, (const unsigned char *)"hello?>", 7);
    unsigned char *d;
    CHECK_STR(e, "aGVsbG8_Pg");
    d = gmcp_b64url_decode(p, e, &len);
    CHECK(d && len == 7 && !memcmp(d, "hello?>", 7));
    CHECK(gmcp_b64url_decode(p, "a+b/", &len) == NULL); /* not the url alphabet */
    CHECK(gmcp_b64url_decode(p, "aGVsbG8", &len) && len == 5);
    CHECK(gmcp_b64url_decode(p, "aGVsbG8=", &len) == NULL); /* no padding */
    CHECK(gmcp_b64url_decode(p, "aGVsbG9", &len) == NULL);  /* non-canonical tail */
}

static void t_random(apr_pool_t *p)
{
    const char *a = gmcp_random_id(p, 24), *b = gmcp_random_id(p, 24);
    size_t i;
    CHECK(a && b && strcmp(a, b) != 0 && strlen(a) == 32);
    for (i = 0; a && a[i]; i++) CHECK(a[i] >= 0x21 && a[i] <= 0x7e);
}

static void t_utf8(apr_pool_t *p)
{
    (void)p;
    CHECK(gmcp_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    CHECK(!gmcp_utf8_valid("\xc3", 1));             /* truncated */
    CHECK(!gmcp_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!gmcp_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!gmcp_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!gmcp_utf8_valid("\xff", 1));
}

static void t_numbers(apr_pool_t *p)
{
    apr_uint64_t v;
    (void)p;
    CHECK(gmcp_parse_u64("123", &v) == APR_SUCCESS && v == 123);
    CHECK(gmcp_parse_u64("-1", &v) == APR_EINVAL);
    CHECK(gmcp_parse_u64("", &v) == APR_EINVAL);
    CHECK(gmcp_parse_u64("99999999999999999999", &v) == APR_EINVAL);
    CHECK(gmcp_parse_size("2M", &v) == APR_SUCCESS && v == 2 * 1024 * 1024);
    CHECK(gmcp_parse_size("1x", &v) == APR_EINVAL);
}

static gmcp_msg parse(apr_pool_t *p, const char *s)
{
    gmcp_msg m;
    gmcp_msg_parse(p, s, strlen(s), &m);
    return m;
}

static void t_jsonrpc(apr_pool_t *p)
{
    gmcp_msg m = parse(p, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    CHECK(m.kind == GMCP_MSG_REQUEST && !strcmp(m.method, "ping"));
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    CHECK(m.kind == GMCP_MSG_NOTIFICATION);
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":{}}");
    CHECK(m.kind == GMCP_MSG_RESPONSE);
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":");
    CHECK(m.kind == GMCP_MSG_INVALID && m.error_code == GMCP_PARSE_ERROR);
    gmcp_msg_release(&m);
    m = parse(p, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]");
    CHECK(m.kind == GMCP_MSG_BATCH);
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"1.0\",\"id\":7,\"method\":\"ping\"}");
    CHECK(m.kind == GMCP_MSG_INVALID && m.error_code == GMCP_INVALID_REQUEST && m.id
          && json_integer_value(m.id) == 7);
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}");
    CHECK(m.kind == GMCP_MSG_INVALID && m.error_code == GMCP_INVALID_REQUEST);
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":[1]}");
    CHECK(m.kind == GMCP_MSG_INVALID && m.error_code == GMCP_INVALID_REQUEST);
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}");
    CHECK(m.kind == GMCP_MSG_INVALID && m.error_code == GMCP_PARSE_ERROR);
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"ping\"}");
    CHECK(m.kind == GMCP_MSG_INVALID && m.error_code == GMCP_PARSE_ERROR);
    gmcp_msg_release(&m);
    {
        json_t *five = json_integer(5);
        CHECK_STR(gmcp_id_key(p, five), "5");
        json_decref(five);
    }
}

static void t_template(apr_pool_t *p)
{
    json_t *v = json_object();
    (void)p;
    CHECK(gmcp_uri_template_match("test://template/{id}/data", "test://template/123/data", v));
    CHECK_STR(json_string_value(json_object_get(v, "id")), "123");
    CHECK(!gmcp_uri_template_match("test://template/{id}/data", "test://template//data", v));
    CHECK(!gmcp_uri_template_match("test://template/{id}/data", "test://template/1/2/data", v));
    CHECK(!gmcp_uri_template_match("test://template/{id}/data", "test://template/1/datax", v));
    json_decref(v);
}

static json_t *dummy(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return NULL;
}

static json_t *dummy_read(gmcp_call *c, const char *uri, json_t *vars, void *b)
{
    (void)c;
    (void)uri;
    (void)vars;
    (void)b;
    return NULL;
}

/* A URI to its reader: an exact resource, a template (with its variables), or none. */
static void t_registry_resource(apr_pool_t *p)
{
    static const gmcp_resource res[] = {{"test://one", "one", NULL, NULL, NULL, dummy_read},
                                        {NULL, NULL, NULL, NULL, NULL, NULL}};
    static const gmcp_resource_template tpl[] = {
        {"test://t/{id}", "t", NULL, NULL, NULL, dummy_read}, {NULL, NULL, NULL, NULL, NULL, NULL}};
    gmcp_provider r = {"r", NULL, NULL, res, tpl, NULL, NULL};
    const gmcp_provider *rp[] = {&r}, *prov = NULL;
    const char *why = NULL;
    gmcp_registry *reg = gmcp_registry_create(p, rp, 1, &why);
    gmcp_read_fn read = NULL;
    json_t *vars = NULL;
    CHECK(reg != NULL);
    if (!reg) return;
    CHECK(gmcp_registry_resource(reg, "test://one", &prov, &read, &vars) == APR_SUCCESS
          && prov == &r && read == dummy_read && json_object_size(vars) == 0);
    json_decref(vars);
    vars = NULL;
    CHECK(gmcp_registry_resource(reg, "test://t/7", &prov, &read, &vars) == APR_SUCCESS);
    CHECK_STR(json_string_value(json_object_get(vars, "id")), "7");
    json_decref(vars);
    CHECK(gmcp_registry_resource(reg, "test://none", &prov, &read, &vars) == APR_ENOENT);
}

static void t_registry(apr_pool_t *p)
{
    static const gmcp_tool good[] = {
        {"a_tool", NULL, "d", "{\"type\":\"object\"}", NULL, NULL, 0, dummy, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL}};
    static const gmcp_tool bad_name[] = {{"bad name", NULL, "d", "{}", NULL, NULL, 0, dummy, NULL},
                                         {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL}};
    static const gmcp_tool bad_schema[] = {
        {"t", NULL, "d", "{not json", NULL, NULL, 0, dummy, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL}};
    gmcp_provider a = {"a", NULL, good, NULL, NULL, NULL, NULL};
    gmcp_provider b = {"b", NULL, bad_name, NULL, NULL, NULL, NULL};
    gmcp_provider c = {"c", NULL, bad_schema, NULL, NULL, NULL, NULL};
    const gmcp_provider *one[] = {&a}, *dup[] = {&a, &a}, *bn[] = {&b}, *bs[] = {&c};
    const char *err = NULL;
    CHECK(gmcp_registry_create(p, one, 1, &err) != NULL);
    CHECK(gmcp_registry_create(p, dup, 2, &err) == NULL && strstr(err, "already defined"));
    CHECK(gmcp_registry_create(p, bn, 1, &err) == NULL && strstr(err, "bad name"));
    CHECK(gmcp_registry_create(p, bs, 1, &err) == NULL && strstr(err, "not valid JSON"));
    CHECK(gmcp_tool_name_valid("gemini_generate"));
    CHECK(!gmcp_tool_name_valid(""));
    CHECK(!gmcp_tool_name_valid("x/y"));
}

static void t_validate(apr_pool_t *p)
{
    json_t *schema = json_loads("{\"type\":\"object\",\"properties\":{\"n\":{\"type\":"
                                "\"integer\"},\"m\":{\"type\":\"string\",\"enum\":[\"a\",\"b\"]}},"
                                "\"required\":[\"n\"],\"additionalProperties\":false}",
                                0, NULL);
    json_t *ok = json_loads("{\"n\":3,\"m\":\"a\"}", 0, NULL);
    json_t *missing = json_loads("{}", 0, NULL);
    json_t *wrong = json_loads("{\"n\":\"3\"}", 0, NULL);
    json_t *extra = json_loads("{\"n\":1,\"z\":1}", 0, NULL);
    json_t *badenum = json_loads("{\"n\":1,\"m\":\"c\"}", 0, NULL);
    CHECK(gmcp_validate_arguments(p, schema, ok) == NULL);
    CHECK(strstr(gmcp_validate_arguments(p, schema, missing), "missing required") != NULL);
    CHECK(strstr(gmcp_validate_arguments(p, schema, wrong), "must be of type") != NULL);
    CHECK(strstr(gmcp_validate_arguments(p, schema, extra), "unexpected") != NULL);
    CHECK(strstr(gmcp_validate_arguments(p, schema, badenum), "one of") != NULL);
    json_decref(schema);
    json_decref(ok);
    json_decref(missing);
    json_decref(wrong);
    json_decref(extra);
    json_decref(badenum);
}

static void t_split(apr_pool_t *p)
{
    apr_array_header_t *a = gmcp_sql_split(
        p,
        "-- c;\nCREATE TABLE a (x TEXT DEFAULT 'a;b');\n"
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN RAISE 'x;y'; END; $$ LANGUAGE plpgsql;\n"
        "CREATE TRIGGER t BEFORE UPDATE ON a BEGIN SELECT 1; SELECT 2; END;\n  \n"
        "CREATE TRIGGER u BEFORE DELETE ON a FOR EACH ROW EXECUTE FUNCTION f();\n"
        "CREATE TABLE b (begun TEXT);\n");
    CHECK(a->nelts == 5);
    /* A PostgreSQL trigger has no BEGIN ... END body: it ends at its semicolon. */
    CHECK(a->nelts == 5
          && !strcmp(APR_ARRAY_IDX(a, 3, const char *),
                     "CREATE TRIGGER u BEFORE DELETE ON a FOR EACH ROW EXECUTE FUNCTION f()"));
    CHECK(a->nelts == 5 && strstr(APR_ARRAY_IDX(a, 0, const char *), "'a;b'"));
    CHECK(a->nelts == 5 && strstr(APR_ARRAY_IDX(a, 1, const char *), "LANGUAGE plpgsql"));
    CHECK(a->nelts == 5 && strstr(APR_ARRAY_IDX(a, 2, const char *), "SELECT 2; END"));
}

/* The response buffer of the curl callbacks: grows, stays NUL-terminated, holds its
 * bound exactly and appends nothing past it. */
static void t_buf(apr_pool_t *p)
{
    gmcp_buf b = {NULL, 0, 0};
    int i;
    (void)p;
    for (i = 0; i < 100; i++) CHECK(gmcp_buf_append(&b, "abcd", 4, 400) == APR_SUCCESS);
    CHECK(b.len == 400 && b.buf[400] == '\0' && !memcmp(b.buf + 396, "abcd", 4));
    CHECK(gmcp_buf_append(&b, "x", 1, 400) == APR_ENOSPC && b.len == 400);
    CHECK(gmcp_buf_append(&b, "", 0, 400) == APR_SUCCESS && b.len == 400);
    free(b.buf);
}

static void t_due(apr_pool_t *p)
{
    volatile apr_uint32_t next = 0;
    (void)p;
    CHECK(gmcp_due(&next, 60) == 1); /* due: claimed, moved a minute on */
    CHECK(gmcp_due(&next, 60) == 0); /* not again until then */
    CHECK(next >= (apr_uint32_t)apr_time_sec(apr_time_now()) + 59);
}

static void t_versions(apr_pool_t *p)
{
    (void)p;
    CHECK(gmcp_version_supported("2025-11-25"));
    CHECK(gmcp_version_supported("2025-03-26"));
    CHECK(!gmcp_version_supported("1999-01-01"));
    CHECK(gmcp_log_level_parse("warning") == GMCP_LOG_WARNING);
    CHECK(gmcp_log_level_parse("verbose") == -1);
}

static void t_migrations_match_build(apr_pool_t *p)
{
    apr_array_header_t *lite, *pg;
    const char *err = NULL;
    CHECK(gmcp_migrations_load(p, "sql", "sqlite", &lite, &err) == 0);
    CHECK(gmcp_migrations_load(p, "sql", "pgsql", &pg, &err) == 0);
    /* Both drivers carry the same versions, and the build needs the newest. */
    CHECK(lite->nelts == pg->nelts);
    CHECK(lite->nelts == GMCP_SCHEMA_VERSION);
}

static void t_param_header(apr_pool_t *p)
{
    CHECK_STR(gmcp_param_header_decode(p, "plain value"), "plain value");
    CHECK_STR(gmcp_param_header_decode(p, "=?base64?SGVsbG8=?="), "Hello");
    CHECK(gmcp_param_header_decode(p, "=?base64?SGVsbG8?=") == NULL);     /* padding */
    CHECK(gmcp_param_header_decode(p, "=?base64?SGVs!!!bG8=?=") == NULL); /* alphabet */
    CHECK(gmcp_param_header_decode(p, "=?base64?AA==?=") == NULL);        /* NUL byte */
    CHECK(gmcp_param_header_decode(p, "=?base64?/w==?=") == NULL);        /* not UTF-8 */
    CHECK_STR(gmcp_param_header_decode(p, "=?base64?SGVsbG8="), "=?base64?SGVsbG8=");
}

static void t_state_seal(apr_pool_t *p)
{
    const unsigned char key[] = "0123456789abcdef0123456789abcdef";
    json_t *st = json_pack("{s:s, s:i}", "kind", "k", "round", 2), *back = NULL;
    const char *sealed = gmcp_state_seal(p, key, 32, "tool\nalice", st);
    CHECK(sealed != NULL);
    CHECK(gmcp_state_open(p, key, 32, "tool\nalice", sealed, &back) == APR_SUCCESS);
    CHECK(back && json_equal(st, back));
    json_decref(back);
    /* Altered payload or tag, another tool or caller, another key: refused. */
    CHECK(gmcp_state_open(p, key, 32, "tool\nalice", apr_pstrcat(p, "x", sealed, NULL), &back)
          != 0);
    CHECK(gmcp_state_open(p, key, 32, "tool\nalice", apr_pstrcat(p, sealed, "x", NULL), &back)
          != 0);
    CHECK(gmcp_state_open(p, key, 32, "other\nalice", sealed, &back) != 0);
    CHECK(gmcp_state_open(p, key, 32, "tool\nmallory", sealed, &back) != 0);
    CHECK(gmcp_state_open(p, (const unsigned char *)"another-key-0123456789", 22, "tool\nalice",
                          sealed, &back)
          != 0);
    CHECK(gmcp_state_open(p, key, 32, "tool\nalice", "no-dot-here", &back) == APR_EINVAL && !back);
    json_decref(st);
}

static void t_stateless_routing(apr_pool_t *p)
{
    gmcp_msg m;
    json_t *r;
    m = parse(p,
              "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\","
              "\"params\":{\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":"
              "\"2026-07-28\"}}}");
    CHECK(m.kind == GMCP_MSG_REQUEST);
    CHECK(gmcp_is_stateless_request(&m, NULL, 0));
    CHECK(gmcp_is_stateless_request(&m, NULL, 1)); /* _meta decides */
    gmcp_msg_release(&m);
    m = parse(p, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    CHECK(!gmcp_is_stateless_request(&m, NULL, 0));
    CHECK(!gmcp_is_stateless_request(&m, "2025-11-25", 0));
    CHECK(!gmcp_is_stateless_request(&m, "2026-07-28", 1)); /* a session client */
    CHECK(gmcp_is_stateless_request(&m, "2026-07-28", 0));
    CHECK(gmcp_is_stateless_request(&m, "v999", 0));
    gmcp_msg_release(&m);
    CHECK(gmcp_method_removed("ping") && !gmcp_method_removed("tools/list"));
    r = json_object();
    gmcp_stateless_decorate("tools/list", r);
    CHECK_STR(json_string_value(json_object_get(r, "resultType")), "complete");
    CHECK(json_is_integer(json_object_get(r, "ttlMs")));
    json_decref(r);
    r = json_pack("{s:s}", "resultType", "input_required");
    gmcp_stateless_decorate("tools/call", r);
    CHECK_STR(json_string_value(json_object_get(r, "resultType")), "input_required");
    CHECK(json_object_get(r, "ttlMs") == NULL);
    json_decref(r);
}

static int lock_depth;
static void test_lock(void *b)
{
    (void)b;
    lock_depth++;
}
static void test_unlock(void *b)
{
    (void)b;
    lock_depth--;
}

static void t_breaker(apr_pool_t *p)
{
    gmcp_breaker_state st;
    gmcp_breaker b = {&st, test_lock, test_unlock, NULL, 3, apr_time_from_sec(10)};
    apr_time_t t = apr_time_from_sec(1000);
    apr_interval_time_t wait;
    int probe, probe2;
    (void)p;
    memset(&st, 0, sizeof(st));
    CHECK(gmcp_breaker_allow(&b, t, &probe, &wait) && !probe);
    gmcp_breaker_record(&b, 0, 0, t);
    gmcp_breaker_record(&b, 0, 0, t);
    gmcp_breaker_record(&b, 1, 0, t); /* a success resets the count */
    gmcp_breaker_record(&b, 0, 0, t);
    gmcp_breaker_record(&b, 0, 0, t);
    CHECK(st.state == GMCP_BREAKER_CLOSED);
    gmcp_breaker_record(&b, 0, 0, t); /* third consecutive failure */
    CHECK(st.state == GMCP_BREAKER_OPEN && st.opens == 1);
    CHECK(!gmcp_breaker_allow(&b, t + apr_time_from_sec(4), &probe, &wait));
    CHECK(wait == apr_time_from_sec(6));
    /* After the cooldown exactly one probe goes out. */
    CHECK(gmcp_breaker_allow(&b, t + apr_time_from_sec(10), &probe, &wait) && probe);
    CHECK(!gmcp_breaker_allow(&b, t + apr_time_from_sec(11), &probe2, &wait));
    gmcp_breaker_record(&b, 0, 1, t + apr_time_from_sec(12)); /* probe failed */
    CHECK(st.state == GMCP_BREAKER_OPEN && st.opens == 2);
    CHECK(!gmcp_breaker_allow(&b, t + apr_time_from_sec(13), &probe, &wait));
    CHECK(gmcp_breaker_allow(&b, t + apr_time_from_sec(22), &probe, &wait) && probe);
    gmcp_breaker_record(&b, 1, 1, t + apr_time_from_sec(22)); /* probe succeeded */
    CHECK(st.state == GMCP_BREAKER_CLOSED && st.failures == 0);
    /* A probe that never reports is replaced after another cooldown. */
    st.state = GMCP_BREAKER_HALF_OPEN;
    st.probe_started = t;
    CHECK(!gmcp_breaker_allow(&b, t + apr_time_from_sec(5), &probe, &wait));
    CHECK(gmcp_breaker_allow(&b, t + apr_time_from_sec(10), &probe, &wait) && probe);
    CHECK(lock_depth == 0);
}

UNIT_MAIN("core", {
    RUN(t_breaker);
    RUN(t_param_header);
    RUN(t_state_seal);
    RUN(t_stateless_routing);
    RUN(t_b64url);
    RUN(t_random);
    RUN(t_utf8);
    RUN(t_numbers);
    RUN(t_jsonrpc);
    RUN(t_template);
    RUN(t_registry);
    RUN(t_registry_resource);
    RUN(t_validate);
    RUN(t_split);
    RUN(t_versions);
    RUN(t_due);
    RUN(t_buf);
    RUN(t_migrations_match_build);
})
