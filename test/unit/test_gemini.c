/* test_gemini.c — what the Gemini client's calls return (gmcp_gemini.h, gmcp_files.h), on a
 * transport of our own (gmcp_http_use): the status says what kind of failure, the
 * gmcp_gemini_error the details. */
#include "unit.h"
#include "gmcp_files.h"
#include "gmcp_gemini.h"
#include "gmcp_util.h"

/* The next answer of the fake transport. */
typedef struct {
    apr_status_t rv; /* what the transfer comes to */
    int status;      /* its HTTP status */
    const char *body;
    int calls;
} fake_answer;

static fake_answer F;
static int cancel_now;

static gmcp_http *fake_for_thread(void) { return (gmcp_http *)&F; }

static apr_status_t fake_perform(gmcp_http *h, const gmcp_http_request *req,
                                 gmcp_http_response *res)
{
    (void)h;
    F.calls++;
    res->status = F.rv == APR_SUCCESS ? F.status : 0;
    res->error = F.rv == APR_SUCCESS ? NULL : "fake transport failure";
    if (F.rv == APR_SUCCESS && F.body && req->on_body
        && req->on_body(req->baton, F.status, F.body, strlen(F.body)) != APR_SUCCESS)
        return GMCP_EUPSTREAM; /* aborted by the callback, as libcurl says */
    return F.rv;
}

static const gmcp_http_impl FAKE = {fake_for_thread, fake_perform};

static int is_cancelled(void *baton)
{
    (void)baton;
    return cancel_now;
}

static void answer_with(apr_status_t rv, int status, const char *body)
{
    F.rv = rv;
    F.status = status;
    F.body = body;
    F.calls = 0;
}

static gmcp_gemini *client(apr_pool_t *p)
{
    gmcp_gemini *g = apr_pcalloc(p, sizeof(*g));
    g->http = gmcp_http_for_thread();
    g->base_url = "http://gemini.invalid";
    g->api_key = "key";
    g->connect_timeout = apr_time_from_sec(1);
    g->timeout = apr_time_from_sec(5);
    g->deadline = apr_time_now() + apr_time_from_sec(30);
    g->cancelled = is_cancelled;
    g->pool = p;
    cancel_now = 0;
    return g;
}

static void t_call(apr_pool_t *p)
{
    gmcp_gemini *g = client(p);
    gmcp_gemini_error err;
    json_t *out = NULL;
    answer_with(APR_SUCCESS, 200, "{\"models\":[]}");
    CHECK(gmcp_gemini_call(g, "GET", "/v1beta/models", NULL, &out, &err) == APR_SUCCESS
          && json_is_array(json_object_get(out, "models")));
    json_decref(out);
    /* Gemini refused: its words, not retried. */
    answer_with(APR_SUCCESS, 400,
                "{\"error\":{\"code\":400,\"status\":\"INVALID_ARGUMENT\","
                "\"message\":\"bad\"}}");
    CHECK(gmcp_gemini_call(g, "GET", "/v1beta/models", NULL, &out, &err) == GMCP_EUPSTREAM && !out
          && err.http_status == 400 && !strcmp(err.message, "bad") && !err.retryable
          && F.calls == 1);
    /* A 2xx that is not JSON, and a transport failure. */
    answer_with(APR_SUCCESS, 200, "not json");
    CHECK(gmcp_gemini_call(g, "GET", "/v1beta/models", NULL, &out, &err) == GMCP_EUPSTREAM && !out
          && err.http_status == 200);
    answer_with(GMCP_EUPSTREAM, 0, NULL);
    CHECK(gmcp_gemini_call(g, "GET", "/v1beta/models", NULL, &out, &err) == GMCP_EUPSTREAM
          && err.http_status == 0 && strstr(err.message, "fake transport failure") && err.retryable
          && F.calls == 1); /* max_retries 0 */
    /* Out of time: the transport's timeout, and no time left at all. */
    answer_with(APR_TIMEUP, 0, NULL);
    CHECK(gmcp_gemini_call(g, "GET", "/v1beta/models", NULL, &out, &err) == APR_TIMEUP
          && strstr(err.message, "did not answer in time"));
    answer_with(APR_SUCCESS, 200, "{}");
    g->deadline = apr_time_now() - 1;
    CHECK(gmcp_gemini_call(g, "GET", "/v1beta/models", NULL, &out, &err) == APR_TIMEUP
          && F.calls == 0 && !strcmp(err.status, "DEADLINE_EXCEEDED"));
    /* Cancelled while the answer came. */
    g = client(p);
    cancel_now = 1;
    CHECK(gmcp_gemini_call(g, "GET", "/v1beta/models", NULL, &out, &err) == GMCP_ECANCELLED
          && err.cancelled && !out);
    CHECK(gmcp_gemini_wait(g, apr_time_from_msec(10)) == GMCP_ECANCELLED);
    cancel_now = 0;
    CHECK(gmcp_gemini_wait(g, apr_time_from_msec(10)) == APR_SUCCESS);
}

static int chunks;

static apr_status_t take_one(json_t *chunk, void *baton)
{
    (void)chunk;
    (void)baton;
    return ++chunks == 1 ? APR_EOF : APR_SUCCESS; /* enough after the first */
}

static apr_status_t take_all(json_t *chunk, void *baton)
{
    (void)chunk;
    (void)baton;
    chunks++;
    return APR_SUCCESS;
}

static void t_stream(apr_pool_t *p)
{
    gmcp_gemini *g = client(p);
    gmcp_gemini_error err;
    gmcp_sse_parser sp;
    const char *two = "data: {\"a\":1}\n\ndata: {\"a\":2}\n\n";
    answer_with(APR_SUCCESS, 200, two);
    chunks = 0;
    CHECK(gmcp_gemini_stream(g, "/s", "{}", take_all, NULL, &err) == APR_SUCCESS && chunks == 2);
    /* The consumer had enough: the call still succeeded. */
    chunks = 0;
    CHECK(gmcp_gemini_stream(g, "/s", "{}", take_one, NULL, &err) == APR_SUCCESS && chunks == 1);
    answer_with(APR_SUCCESS, 200, "data: {nope\n\n");
    CHECK(gmcp_gemini_stream(g, "/s", "{}", take_all, NULL, &err) == GMCP_EUPSTREAM);
    answer_with(APR_SUCCESS, 200, ": keep-alive\n\n");
    CHECK(gmcp_gemini_stream(g, "/s", "{}", take_all, NULL, &err) == GMCP_EUPSTREAM
          && strstr(err.message, "without any data"));
    /* The framing itself: the consumer's status, and JSON that does not parse. */
    memset(&sp, 0, sizeof(sp));
    chunks = 0;
    CHECK(gmcp_sse_feed(&sp, two, strlen(two), take_one, NULL) == APR_EOF && chunks == 1);
    gmcp_sse_free(&sp);
    memset(&sp, 0, sizeof(sp));
    CHECK(gmcp_sse_feed(&sp, "data: {x}\n\n", 11, take_all, NULL) == APR_EINVAL && sp.failed);
    gmcp_sse_free(&sp);
}

static void t_wait_active(apr_pool_t *p)
{
    gmcp_gemini *g = client(p);
    gmcp_gemini_error err;
    json_t *file = NULL;
    answer_with(APR_SUCCESS, 200, "{\"name\":\"files/a\",\"state\":\"ACTIVE\"}");
    CHECK(gmcp_files_wait_active(g, "files/a", &file, &err) == APR_SUCCESS && file);
    json_decref(file);
    file = NULL;
    answer_with(APR_SUCCESS, 200, "{\"name\":\"files/a\",\"state\":\"FAILED\"}");
    CHECK(gmcp_files_wait_active(g, "files/a", &file, &err) == GMCP_EUPSTREAM && !file
          && strstr(err.message, "could not process"));
    answer_with(APR_SUCCESS, 404, "{\"error\":{\"code\":404,\"message\":\"gone\"}}");
    CHECK(gmcp_files_wait_active(g, "files/a", &file, &err) == GMCP_EUPSTREAM
          && err.http_status == 404);
    /* Still processing when the deadline comes. */
    answer_with(APR_SUCCESS, 200, "{\"name\":\"files/a\",\"state\":\"PROCESSING\"}");
    g->deadline = apr_time_now() + apr_time_from_msec(300);
    CHECK(gmcp_files_wait_active(g, "files/a", &file, &err) == APR_TIMEUP && !file
          && strstr(err.message, "still PROCESSING"));
}

UNIT_MAIN("gemini", {
    gmcp_http_use(&FAKE);
    RUN(t_call);
    RUN(t_stream);
    RUN(t_wait_active);
})
