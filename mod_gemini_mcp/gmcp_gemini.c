/* gmcp_gemini.c — Gemini REST calls with retries, backoff and cancellation. */
#include "gmcp_gemini.h"
#include "gmcp_errlog.h"
#include "gmcp_util.h"
#include "gmcp_jsonrpc.h"

#include <stdlib.h>
#include <string.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <openssl/rand.h>

#define BACKOFF_BASE apr_time_from_msec(500)
#define BACKOFF_CAP apr_time_from_sec(10)

/* ---- SSE framing ----------------------------------------------------------------------- */

void gmcp_sse_free(gmcp_sse_parser *sp)
{
    free(sp->buf);
    sp->buf = NULL;
    sp->len = sp->cap = 0;
}

/* One event: concatenate its data: lines and hand the JSON over. APR_SUCCESS (also for
 * an event without data), fn's status, APR_EINVAL (sp->failed) for JSON that does not
 * parse, APR_ENOMEM. */
static apr_status_t sse_event(gmcp_sse_parser *sp, const char *ev, apr_size_t len,
                              gmcp_gemini_chunk_fn fn, void *baton)
{
    char *data = malloc(len + 1);
    apr_size_t dl = 0;
    const char *p = ev, *end = ev + len;
    json_t *j;
    apr_status_t rv = APR_SUCCESS;
    if (!data) return APR_ENOMEM;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        apr_size_t ll = (apr_size_t)(le - p);
        if (ll && p[ll - 1] == '\r') ll--;
        if (ll >= 5 && !memcmp(p, "data:", 5)) {
            const char *v = p + 5;
            apr_size_t vl = ll - 5;
            if (vl && *v == ' ') {
                v++;
                vl--;
            }
            if (dl) data[dl++] = '\n';
            memcpy(data + dl, v, vl);
            dl += vl;
        }
        p = nl ? nl + 1 : end;
    }
    if (!dl) goto leave; /* comments, keep-alives */
    data[dl] = '\0';
    if (!(j = json_loadb(data, dl, 0, NULL))) {
        sp->failed = 1;
        rv = APR_EINVAL;
        goto leave;
    }
    rv = fn(j, baton);
    json_decref(j);
leave:
    free(data);
    return rv;
}

apr_status_t gmcp_sse_feed(gmcp_sse_parser *sp, const char *data, apr_size_t len,
                           gmcp_gemini_chunk_fn fn, void *baton)
{
    apr_size_t start = 0, i;
    apr_status_t rv;
    if (sp->len + len + 1 > sp->cap) {
        apr_size_t cap = (sp->len + len + 1) * 2;
        char *nb = realloc(sp->buf, cap);
        if (!nb) return APR_ENOMEM;
        sp->buf = nb;
        sp->cap = cap;
    }
    memcpy(sp->buf + sp->len, data, len);
    sp->len += len;
    /* An event ends at a blank line: "\n\n", "\r\n\r\n" or "\r\r". */
    for (i = 0; i < sp->len; i++) {
        apr_size_t sep = 0;
        if (sp->buf[i] == '\n' && i + 1 < sp->len && sp->buf[i + 1] == '\n')
            sep = 2;
        else if (sp->buf[i] == '\r' && i + 3 < sp->len && !memcmp(sp->buf + i, "\r\n\r\n", 4))
            sep = 4;
        else if (sp->buf[i] == '\r' && i + 1 < sp->len && sp->buf[i + 1] == '\r')
            sep = 2;
        if (!sep) continue;
        if ((rv = sse_event(sp, sp->buf + start, i - start, fn, baton)) != APR_SUCCESS) return rv;
        i += sep - 1;
        start = i + 1;
    }
    memmove(sp->buf, sp->buf + start, sp->len - start);
    sp->len -= start;
    return APR_SUCCESS;
}

/* ---- helpers --------------------------------------------------------------------------- */

const char *gmcp_gemini_model_path(apr_pool_t *p, const char *model)
{
    const char *s;
    if (!model || !*model || strlen(model) > 200) return NULL;
    for (s = model; *s; s++)
        if (!(apr_isalnum(*s) || *s == '-' || *s == '.' || *s == '_' || *s == '/')) return NULL;
    if (strstr(model, "..")) return NULL;
    if (!strncmp(model, "models/", 7) || !strncmp(model, "tunedModels/", 12)) return model;
    if (strchr(model, '/')) return NULL;
    return apr_pstrcat(p, "models/", model, NULL);
}

static apr_interval_time_t parse_duration(const char *s)
{
    char *end;
    double v;
    if (!s) return -1;
    v = strtod(s, &end);
    if (end == s || !(v >= 0) || (*end && strcmp(end, "s") != 0)) return -1; /* also NaN */
    if (v > 86400) v = 86400; /* past any deadline anyway; the cast must stay defined */
    return (apr_interval_time_t)(v * APR_USEC_PER_SEC);
}

apr_interval_time_t gmcp_gemini_retry_info(const json_t *body)
{
    json_t *details = json_object_get(json_object_get(body, "error"), "details"), *d;
    size_t i;
    json_array_foreach(details, i, d)
    {
        const char *type = gmcp_json_str(d, "@type");
        if (type && strstr(type, "google.rpc.RetryInfo"))
            return parse_duration(gmcp_json_str(d, "retryDelay"));
    }
    return -1;
}

const char *gmcp_gemini_text(apr_pool_t *p, const json_t *resp)
{
    json_t *parts = json_object_get(
               json_object_get(json_array_get(json_object_get(resp, "candidates"), 0), "content"),
               "parts"),
           *part;
    const char *text = NULL;
    size_t i;
    json_array_foreach(parts, i, part)
    {
        const char *t = gmcp_json_str(part, "text");
        if (t && !json_is_true(json_object_get(part, "thought")))
            text = text ? apr_pstrcat(p, text, t, NULL) : apr_pstrdup(p, t);
    }
    return text;
}

/* ---- one transfer ---------------------------------------------------------------------- */

typedef struct {
    gmcp_gemini *g;
    gmcp_buf body;
    int too_big, aborted, stream, chunks, stop;
    gmcp_sse_parser sp;
    gmcp_gemini_chunk_fn fn;
    void *baton;
    apr_interval_time_t retry_after;
} xfer;

static int stopped(gmcp_gemini *g)
{
    return (g->cancelled && g->cancelled(g->baton)) || apr_time_now() >= g->deadline;
}

/* Why a transfer stops early: the caller cancelled, or the deadline came. */
static apr_status_t stop_status(gmcp_gemini *g)
{
    return g->cancelled && g->cancelled(g->baton) ? GMCP_ECANCELLED : APR_TIMEUP;
}

/* Token counts from a response's usageMetadata (cumulative in a stream's chunks). */
static void note_usage(gmcp_gemini *g, const json_t *resp)
{
    json_t *u = json_object_get(resp, "usageMetadata");
    if (!json_is_object(u)) return;
    g->prompt_tokens = json_integer_value(json_object_get(u, "promptTokenCount"));
    g->output_tokens = json_integer_value(json_object_get(u, "candidatesTokenCount"))
        + json_integer_value(json_object_get(u, "thoughtsTokenCount"));
}

static apr_status_t chunk_counter(json_t *chunk, void *baton)
{
    xfer *x = baton;
    apr_status_t rv;
    x->chunks++;
    note_usage(x->g, chunk);
    if ((rv = x->fn(chunk, x->baton)) != APR_SUCCESS) x->stop = 1;
    return rv;
}

static apr_status_t on_body(void *ud, int status, const char *data, apr_size_t len)
{
    xfer *x = ud;
    apr_status_t rv;
    if (stopped(x->g)) {
        x->aborted = 1;
        return stop_status(x->g);
    }
    if (x->stream && status == 200) return gmcp_sse_feed(&x->sp, data, len, chunk_counter, x);
    rv = gmcp_buf_append(&x->body, data, len, GMCP_GEMINI_MAX_RESPONSE);
    if (APR_STATUS_IS_ENOSPC(rv)) x->too_big = 1;
    return rv;
}

static apr_status_t on_header(void *ud, const char *line, apr_size_t len)
{
    xfer *x = ud;
    if (len > 12 && !strncasecmp(line, "Retry-After:", 12)) {
        char tmp[32];
        size_t l = len - 12 < sizeof(tmp) - 1 ? len - 12 : sizeof(tmp) - 1;
        memcpy(tmp, line + 12, l);
        tmp[l] = '\0';
        if (atoi(tmp) > 0) x->retry_after = apr_time_from_sec(atoi(tmp));
    }
    return APR_SUCCESS;
}

/* Aborts waits with no data flowing once the call is cancelled or out of time. */
static apr_status_t on_progress(void *ud)
{
    xfer *x = ud;
    if (stopped(x->g)) {
        x->aborted = 1;
        return stop_status(x->g);
    }
    return APR_SUCCESS;
}

static void fail(gmcp_gemini *g, gmcp_gemini_error *err, int http, const char *status,
                 const char *message, int retryable)
{
    err->http_status = http;
    err->status = status ? apr_pstrdup(g->pool, status) : NULL;
    err->message = apr_pstrdup(g->pool, message);
    err->retryable = retryable;
}

apr_interval_time_t gmcp_gemini_attempt_time(const gmcp_gemini *g)
{
    apr_interval_time_t left = g->deadline - apr_time_now();
    return g->timeout < left ? g->timeout : left;
}

/* The transfer failed (rv, from gmcp_http_perform): a stream cut after data arrived
 * cannot be replayed. APR_TIMEUP when time ran out, else GMCP_EUPSTREAM. */
static apr_status_t unreachable(gmcp_gemini *g, const xfer *x, apr_status_t rv,
                                const gmcp_http_response *res, gmcp_gemini_error *err)
{
    int late = x->aborted || APR_STATUS_IS_TIMEUP(rv);
    const char *why = late ? "Gemini did not answer in time" : res->error;
    fail(g, err, 0, NULL, apr_psprintf(g->pool, "cannot reach Gemini: %s", why),
         !x->chunks && !x->aborted);
    if (x->aborted) err->status = "DEADLINE_EXCEEDED";
    return late ? APR_TIMEUP : GMCP_EUPSTREAM;
}

/* Gemini refused: its own status and message (from its answer j, borrowed), and its
 * RetryInfo delay. GMCP_EUPSTREAM. */
static apr_status_t refused(gmcp_gemini *g, xfer *x, int status, const json_t *j,
                            gmcp_gemini_error *err)
{
    json_t *e = j ? json_object_get(j, "error") : NULL;
    const char *msg = gmcp_json_str(e, "message");
    apr_interval_time_t ri = j ? gmcp_gemini_retry_info(j) : -1;
    fail(g, err, status, gmcp_json_str(e, "status"),
         msg ? msg : apr_psprintf(g->pool, "HTTP %d from Gemini", status),
         status == 429 || status == 500 || status == 502 || status == 503 || status == 504);
    if (ri >= 0) x->retry_after = ri;
    return GMCP_EUPSTREAM;
}

/* A whole response in the buffer: the JSON answer (APR_SUCCESS), or what Gemini refused
 * or could not say (GMCP_EUPSTREAM). */
static apr_status_t answer(gmcp_gemini *g, xfer *x, int status, json_t **out,
                           gmcp_gemini_error *err)
{
    json_t *j = x->body.len ? json_loadb(x->body.buf, x->body.len, 0, NULL) : NULL;
    apr_status_t rv = APR_SUCCESS;
    if (status < 200 || status >= 300) { rv = refused(g, x, status, j, err); }
    else if (!out) {
        /* A stream request (it has no *out): only a 200 carries the event stream, and
         * another 2xx went to the buffer instead. */
        fail(g, err, status, NULL,
             apr_psprintf(g->pool,
                          "Gemini answered a stream request "
                          "with HTTP %d",
                          status),
             0);
        rv = GMCP_EUPSTREAM;
    }
    else if (!j) {
        fail(g, err, status, NULL, "Gemini answered with malformed JSON", 0);
        rv = GMCP_EUPSTREAM;
    }
    else {
        *out = j; /* the caller's now */
        j = NULL;
    }
    json_decref(j);
    return rv;
}

/* What one attempt came to (rv: gmcp_http_perform's): APR_SUCCESS, or as
 * gmcp_gemini_call with *err filled. */
static apr_status_t outcome(gmcp_gemini *g, xfer *x, apr_status_t rv, const gmcp_http_response *res,
                            json_t **out, gmcp_gemini_error *err)
{
    if (x->aborted && g->cancelled && g->cancelled(g->baton)) {
        err->cancelled = 1;
        fail(g, err, 0, "CANCELLED", "the request was cancelled", 0);
        return GMCP_ECANCELLED;
    }
    if (x->stop) return APR_SUCCESS; /* the consumer had enough */
    if (x->too_big) {
        fail(g, err, res->status, NULL, "Gemini's response exceeded the size limit", 0);
        return GMCP_EUPSTREAM;
    }
    if (x->sp.failed) {
        fail(g, err, res->status, NULL, "Gemini's stream carried malformed JSON", 0);
        return GMCP_EUPSTREAM;
    }
    if (rv != APR_SUCCESS) return unreachable(g, x, rv, res, err);
    if (res->status == 200 && x->stream) {
        if (x->chunks) return APR_SUCCESS;
        fail(g, err, 200, NULL, "Gemini's stream ended without any data", 1);
        return GMCP_EUPSTREAM;
    }
    return answer(g, x, res->status, out, err);
}

/* One attempt: GET, POST (body, default "{}") or DELETE (with a "{}" body). */
static apr_status_t perform(gmcp_gemini *g, const char *method, const char *path, const char *body,
                            xfer *x, json_t **out, gmcp_gemini_error *err)
{
    const char *headers[4];
    gmcp_http_request req;
    gmcp_http_response res;
    apr_status_t rv;
    apr_interval_time_t t = gmcp_gemini_attempt_time(g);

    memset(err, 0, sizeof(*err));
    if (t <= 0) {
        fail(g, err, 0, "DEADLINE_EXCEEDED", "no time left for the Gemini call", 0);
        return APR_TIMEUP;
    }
    headers[0] = apr_pstrcat(g->pool, "x-goog-api-key: ", g->api_key, NULL);
    headers[1] = "Content-Type: application/json";
    headers[2] = "Expect:";
    headers[3] = NULL;
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    if (!strcmp(method, "POST")) {
        req.method = "POST";
        req.body = body ? body : "{}";
    }
    else if (!strcmp(method, "DELETE")) {
        req.method = "DELETE";
        req.body = "{}";
    }
    req.url = apr_pstrcat(g->pool, g->base_url, path, NULL);
    req.headers = headers;
    req.connect_timeout = g->connect_timeout;
    req.timeout = t;
    req.on_body = on_body;
    req.on_header = on_header;
    req.on_progress = on_progress;
    req.baton = x;
    rv = gmcp_http_perform(g->http, &req, &res);
    return outcome(g, x, rv, &res, out, err);
}

static apr_interval_time_t backoff(int attempt)
{
    apr_interval_time_t d = BACKOFF_BASE << (attempt < 6 ? attempt : 6);
    unsigned int r = 0;
    if (d > BACKOFF_CAP) d = BACKOFF_CAP;
    /* Jitter: between half and the whole delay, so clients do not retry in step. */
    RAND_bytes((unsigned char *)&r, sizeof(r));
    return d / 2 + (apr_interval_time_t)(r % (unsigned int)(d / 2 + 1));
}

apr_status_t gmcp_gemini_wait(gmcp_gemini *g, apr_interval_time_t d)
{
    apr_time_t until = apr_time_now() + d;
    while (apr_time_now() < until) {
        apr_interval_time_t left = until - apr_time_now();
        apr_sleep(left < apr_time_from_msec(100) ? left : apr_time_from_msec(100));
        if (g->cancelled && g->cancelled(g->baton)) return GMCP_ECANCELLED;
    }
    return APR_SUCCESS;
}

/* A call that failed in the end, once: an outage (no answer, 5xx, paused by the
 * breaker) is an error, a quota refusal (429) a warning; anything else Gemini refused
 * (a 4xx for what the caller asked) only informs. The path names no secret (the key
 * goes in a header). */
static void log_failure(gmcp_gemini *g, const char *method, const char *path,
                        const gmcp_gemini_error *err)
{
    gmcp_elog_level level = err->http_status == 429         ? GMCP_ELOG_WARN
        : err->http_status >= 400 && err->http_status < 500 ? GMCP_ELOG_INFO
                                                            : GMCP_ELOG_ERR;
    (void)g;
    gmcp_elog(GMCP_ELOG_MARK, level, APR_SUCCESS, "GMCP0401",
              "Gemini call %s %s failed: HTTP %d%s%s: %s", method, path, err->http_status,
              err->status ? " " : "", err->status ? err->status : "",
              err->message ? err->message : "");
}

static apr_status_t run(gmcp_gemini *g, const char *method, const char *path, const char *text,
                        json_t **out, gmcp_gemini_chunk_fn fn, void *baton, gmcp_gemini_error *err)
{
    apr_status_t rv;
    int attempt, probe = 0;
    apr_interval_time_t wait = 0;
    apr_time_t started = apr_time_now();
    g->retries = 0;
    g->prompt_tokens = g->output_tokens = 0;
    if (out) *out = NULL;
    memset(err, 0, sizeof(*err));
    if (g->breaker && !gmcp_breaker_allow(g->breaker, apr_time_now(), &probe, &wait)) {
        fail(g, err, 0, "UNAVAILABLE",
             apr_psprintf(
                 g->pool,
                 "Gemini is failing: calls are "
                 "paused after %u consecutive failures (circuit breaker open); the next attempt "
                 "goes out in %.0fs",
                 g->breaker->threshold, (double)wait / APR_USEC_PER_SEC + 0.5),
             0);
        return GMCP_EUPSTREAM;
    }
    for (attempt = 0;; attempt++) {
        xfer x;
        apr_interval_time_t delay;
        memset(&x, 0, sizeof(x));
        x.g = g;
        x.stream = fn != NULL;
        x.fn = fn;
        x.baton = baton;
        x.retry_after = -1;
        rv = perform(g, method, path, text, &x, out, err);
        free(x.body.buf);
        gmcp_sse_free(&x.sp);
        if (rv == APR_SUCCESS || !err->retryable || x.chunks || attempt >= g->max_retries) break;
        delay = x.retry_after >= 0 ? x.retry_after : backoff(attempt);
        if (apr_time_now() + delay >= g->deadline) {
            err->message = apr_psprintf(g->pool,
                                        "%s (not retried: waiting %.1fs would pass "
                                        "the request's deadline)",
                                        err->message, (double)delay / APR_USEC_PER_SEC);
            break;
        }
        if ((rv = gmcp_gemini_wait(g, delay)) != APR_SUCCESS) {
            fail(g, err, 0, "CANCELLED", "the request was cancelled", 0);
            err->cancelled = 1;
            break;
        }
        g->retries++;
    }
    /* Gemini answering at all (a 4xx too) is health; only outages count against it. */
    if (g->breaker && rv != GMCP_ECANCELLED)
        gmcp_breaker_record(g->breaker, rv == APR_SUCCESS || !err->retryable, probe,
                            apr_time_now());
    if (rv != APR_SUCCESS && g->retries && err->retryable)
        err->message = apr_psprintf(g->pool, "%s (after %d retr%s)", err->message, g->retries,
                                    g->retries == 1 ? "y" : "ies");
    if (rv != APR_SUCCESS && rv != GMCP_ECANCELLED) log_failure(g, method, path, err);
    if (rv == APR_SUCCESS && out && *out) note_usage(g, *out);
    if (g->observe)
        g->observe(g->observe_baton, rv == APR_SUCCESS ? 200 : err->http_status,
                   apr_time_now() - started, g->retries, g->prompt_tokens, g->output_tokens);
    return rv;
}

apr_status_t gmcp_gemini_call(gmcp_gemini *g, const char *method, const char *path, json_t *body,
                              json_t **out, gmcp_gemini_error *err)
{
    return run(g, method, path, body ? gmcp_json_dump(g->pool, body) : NULL, out, NULL, NULL, err);
}

apr_status_t gmcp_gemini_call_text(gmcp_gemini *g, const char *path, const char *body, json_t **out,
                                   gmcp_gemini_error *err)
{
    return run(g, "POST", path, body, out, NULL, NULL, err);
}

apr_status_t gmcp_gemini_stream(gmcp_gemini *g, const char *path, const char *body,
                                gmcp_gemini_chunk_fn on_chunk, void *baton, gmcp_gemini_error *err)
{
    return run(g, "POST", path, body, NULL, on_chunk, baton, err);
}
