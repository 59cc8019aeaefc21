/* gmcp_metrics.c — shared counters and histograms, Prometheus text. */
#include "gmcp_metrics.h"
#include "gmcp_mcp.h"

#include <string.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <apr_atomic.h>

/* Upper bounds in seconds (Prometheus "le"), then +Inf. */
static const double LE[GMCP_LAT_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,   0.25,   0.5,   1,    5,     30};
/* As label text (APR's %g would print ".01"). */
static const char *const LE_TXT[GMCP_LAT_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "5", "30"};

/* Labels beside the MCP methods: a client's answer to a server request, and the HTTP
 * methods of requests that carry no JSON-RPC message. */
static const char *const OTHER_LABELS[] = {"response", "GET", "POST", "DELETE", "OPTIONS", NULL};

const char *gmcp_metrics_method(const char *method)
{
    const gmcp_method *meth = gmcp_mcp_method(method);
    int i;
    if (meth) return meth->name;
    for (i = 0; method && OTHER_LABELS[i]; i++)
        if (!strcmp(method, OTHER_LABELS[i])) return OTHER_LABELS[i];
    return "other";
}

void gmcp_metrics_init(gmcp_metrics *m, apr_time_t now)
{
    memset(m, 0, sizeof(*m));
    m->started = now;
}

void gmcp_metrics_count(volatile apr_uint64_t *counter) { apr_atomic_inc64(counter); }

static void observe(gmcp_histogram *h, apr_interval_time_t latency)
{
    double s = (double)latency / APR_USEC_PER_SEC;
    int i;
    for (i = 0; i < GMCP_LAT_BUCKETS && s > LE[i]; i++)
        ;
    if (i < GMCP_LAT_BUCKETS) apr_atomic_inc64(&h->bucket[i]);
    apr_atomic_add64(&h->sum_us, (apr_uint64_t)(latency > 0 ? latency : 0));
    apr_atomic_inc64(&h->count);
}

static gmcp_req_series *find_req(gmcp_metrics *m, apr_uint32_t n, const char *method,
                                 const char *tool, int status)
{
    apr_uint32_t i;
    for (i = 0; i < n; i++)
        if (m->req[i].status == status && !strcmp(m->req[i].method, method)
            && !strcmp(m->req[i].tool, tool))
            return &m->req[i];
    return NULL;
}

void gmcp_metrics_request(gmcp_metrics *m, const gmcp_metrics_lock *lk, const char *method,
                          const char *tool, int status, apr_interval_time_t latency,
                          apr_int64_t bytes_in, apr_int64_t bytes_out)
{
    gmcp_req_series *s;
    method = gmcp_metrics_method(method);
    if (!tool) tool = "";
    s = find_req(m, apr_atomic_read32(&m->nreq), method, tool, status);
    if (!s) {
        /* New label set: fill the entry, then publish it by raising nreq. */
        apr_uint32_t n;
        if (lk) lk->lock(lk->baton);
        n = apr_atomic_read32(&m->nreq);
        if (!(s = find_req(m, n, method, tool, status)) && n < GMCP_REQ_SERIES) {
            s = &m->req[n];
            apr_cpystrn(s->method, method, sizeof(s->method));
            apr_cpystrn(s->tool, tool, sizeof(s->tool));
            s->status = status;
            apr_atomic_set32(&m->nreq, n + 1);
        }
        if (lk) lk->unlock(lk->baton);
    }
    if (!s) {
        apr_atomic_inc64(&m->series_overflow);
        return;
    }
    observe(&s->h, latency);
    if (bytes_in > 0) apr_atomic_add64(&m->bytes_in, (apr_uint64_t)bytes_in);
    if (bytes_out > 0) apr_atomic_add64(&m->bytes_out, (apr_uint64_t)bytes_out);
}

static gmcp_gem_series *find_gem(gmcp_metrics *m, apr_uint32_t n, int status)
{
    apr_uint32_t i;
    for (i = 0; i < n; i++)
        if (m->gem[i].status == status) return &m->gem[i];
    return NULL;
}

void gmcp_metrics_gemini(gmcp_metrics *m, const gmcp_metrics_lock *lk, int http_status,
                         apr_interval_time_t latency, int retries, apr_int64_t prompt_tokens,
                         apr_int64_t output_tokens)
{
    gmcp_gem_series *s = find_gem(m, apr_atomic_read32(&m->ngem), http_status);
    if (!s) {
        apr_uint32_t n;
        if (lk) lk->lock(lk->baton);
        n = apr_atomic_read32(&m->ngem);
        if (!(s = find_gem(m, n, http_status)) && n < GMCP_GEM_SERIES) {
            s = &m->gem[n];
            s->status = http_status;
            apr_atomic_set32(&m->ngem, n + 1);
        }
        if (lk) lk->unlock(lk->baton);
    }
    if (s)
        observe(&s->h, latency);
    else
        apr_atomic_inc64(&m->series_overflow);
    if (retries > 0) apr_atomic_add64(&m->gemini_retries, (apr_uint64_t)retries);
    if (prompt_tokens > 0) apr_atomic_add64(&m->gemini_tokens_prompt, (apr_uint64_t)prompt_tokens);
    if (output_tokens > 0) apr_atomic_add64(&m->gemini_tokens_output, (apr_uint64_t)output_tokens);
}

#define RD(x) apr_atomic_read64((volatile apr_uint64_t *)&(x))

static void hist(apr_array_header_t *out, apr_pool_t *p, const char *name, const char *labels,
                 const gmcp_histogram *h)
{
    apr_uint64_t cum = 0, count = RD(h->count), b[GMCP_LAT_BUCKETS];
    int i;
    for (i = 0; i < GMCP_LAT_BUCKETS; i++) b[i] = RD(h->bucket[i]);
    for (i = 0; i < GMCP_LAT_BUCKETS; i++) {
        cum += b[i];
        APR_ARRAY_PUSH(out, const char *) = apr_psprintf(
            p, "%s_bucket{%s,le=\"%s\"} %" APR_UINT64_T_FMT "\n", name, labels, LE_TXT[i], cum);
    }
    /* Read apart from the buckets: +Inf is never below the last bucket. */
    if (count < cum) count = cum;
    APR_ARRAY_PUSH(out, const char *) =
        apr_psprintf(p,
                     "%s_bucket{%s,le=\"+Inf\"} %" APR_UINT64_T_FMT "\n%s_sum{%s} %.6f\n"
                     "%s_count{%s} %" APR_UINT64_T_FMT "\n",
                     name, labels, count, name, labels, (double)RD(h->sum_us) / APR_USEC_PER_SEC,
                     name, labels, count);
}

#define LINE(...) (APR_ARRAY_PUSH(out, const char *) = apr_psprintf(p, __VA_ARGS__))

/* Requests by method, tool and status: counts and latency. */
static void render_requests(apr_array_header_t *out, apr_pool_t *p, const gmcp_metrics *m)
{
    apr_uint32_t i, nreq = apr_atomic_read32((volatile apr_uint32_t *)&m->nreq);
    LINE("# HELP gmcp_requests_total MCP HTTP requests by JSON-RPC method, tool and HTTP "
         "status.\n# TYPE gmcp_requests_total counter\n");
    for (i = 0; i < nreq; i++)
        LINE("gmcp_requests_total{method=\"%s\",tool=\"%s\",status=\"%d\"} %" APR_UINT64_T_FMT "\n",
             m->req[i].method, m->req[i].tool, m->req[i].status, RD(m->req[i].h.count));
    LINE("# HELP gmcp_request_duration_seconds Time to serve MCP HTTP requests.\n"
         "# TYPE gmcp_request_duration_seconds histogram\n");
    for (i = 0; i < nreq; i++)
        hist(out, p, "gmcp_request_duration_seconds",
             apr_psprintf(p, "method=\"%s\",tool=\"%s\",status=\"%d\"", m->req[i].method,
                          m->req[i].tool, m->req[i].status),
             &m->req[i].h);
}

/* Calls to Gemini by final status, their errors, retries and tokens. */
static void render_gemini(apr_array_header_t *out, apr_pool_t *p, const gmcp_metrics *m)
{
    apr_uint32_t i, ngem = apr_atomic_read32((volatile apr_uint32_t *)&m->ngem);
    apr_uint64_t errors = 0;
    LINE("# HELP gmcp_gemini_calls_total Calls to the Gemini API by final HTTP status "
         "(0: no answer).\n# TYPE gmcp_gemini_calls_total counter\n");
    for (i = 0; i < ngem; i++)
        LINE("gmcp_gemini_calls_total{status=\"%d\"} %" APR_UINT64_T_FMT "\n", m->gem[i].status,
             RD(m->gem[i].h.count));
    LINE("# HELP gmcp_gemini_call_duration_seconds Gemini API calls, retries included.\n"
         "# TYPE gmcp_gemini_call_duration_seconds histogram\n");
    for (i = 0; i < ngem; i++)
        hist(out, p, "gmcp_gemini_call_duration_seconds",
             apr_psprintf(p, "status=\"%d\"", m->gem[i].status), &m->gem[i].h);
    for (i = 0; i < ngem; i++)
        if (m->gem[i].status < 200 || m->gem[i].status >= 300) errors += RD(m->gem[i].h.count);
    LINE("# HELP gmcp_gemini_errors_total Gemini API calls that failed.\n"
         "# TYPE gmcp_gemini_errors_total counter\ngmcp_gemini_errors_total %" APR_UINT64_T_FMT
         "\n",
         errors);
    LINE("# HELP gmcp_gemini_retries_total Retries of Gemini API calls.\n"
         "# TYPE gmcp_gemini_retries_total counter\ngmcp_gemini_retries_total %" APR_UINT64_T_FMT
         "\n",
         RD(m->gemini_retries));
    LINE("# HELP gmcp_gemini_tokens_total Tokens reported by Gemini.\n"
         "# TYPE gmcp_gemini_tokens_total counter\n"
         "gmcp_gemini_tokens_total{kind=\"prompt\"} %" APR_UINT64_T_FMT "\n"
         "gmcp_gemini_tokens_total{kind=\"output\"} %" APR_UINT64_T_FMT "\n",
         RD(m->gemini_tokens_prompt), RD(m->gemini_tokens_output));
}

/* Requests refused by a limit or by authentication, and the bytes served. */
static void render_refusals(apr_array_header_t *out, apr_pool_t *p, const gmcp_metrics *m)
{
    static const char *const REJ[GMCP_REJ_N] = {"rate", "tokens", "inflight", "slots", "quota"};
    static const char *const AUTH[GMCP_AUTH_N] = {"missing", "invalid", "expired", "revoked",
                                                  "forbidden"};
    int k;
    LINE("# HELP gmcp_ratelimit_rejections_total Requests refused by a limit.\n"
         "# TYPE gmcp_ratelimit_rejections_total counter\n");
    for (k = 0; k < GMCP_REJ_N; k++)
        LINE("gmcp_ratelimit_rejections_total{reason=\"%s\"} %" APR_UINT64_T_FMT "\n", REJ[k],
             RD(m->rejected[k]));
    LINE("# HELP gmcp_auth_failures_total Requests refused by authentication or scope.\n"
         "# TYPE gmcp_auth_failures_total counter\n");
    for (k = 0; k < GMCP_AUTH_N; k++)
        LINE("gmcp_auth_failures_total{reason=\"%s\"} %" APR_UINT64_T_FMT "\n", AUTH[k],
             RD(m->auth_failures[k]));
    LINE("# HELP gmcp_bytes_total Bytes of MCP request and response bodies.\n"
         "# TYPE gmcp_bytes_total counter\ngmcp_bytes_total{direction=\"in\"} %" APR_UINT64_T_FMT
         "\ngmcp_bytes_total{direction=\"out\"} %" APR_UINT64_T_FMT "\n",
         RD(m->bytes_in), RD(m->bytes_out));
}

/* The gauges read at scrape time, the dropped series and the uptime. */
static void render_gauges(apr_array_header_t *out, apr_pool_t *p, const gmcp_metrics *m,
                          const gmcp_metrics_gauges *g, apr_time_t now)
{
    if (g->mcp_sessions >= 0)
        LINE("# HELP gmcp_active_sessions MCP sessions that have not expired.\n"
             "# TYPE gmcp_active_sessions gauge\ngmcp_active_sessions %" APR_INT64_T_FMT "\n",
             g->mcp_sessions);
    if (g->chat_sessions >= 0)
        LINE("# HELP gmcp_active_chat_sessions Chat sessions that have not expired.\n"
             "# TYPE gmcp_active_chat_sessions gauge\ngmcp_active_chat_sessions %" APR_INT64_T_FMT
             "\n",
             g->chat_sessions);
    LINE("# HELP gmcp_breaker_state Gemini circuit breaker: 0 closed, 1 open, 2 half-open.\n"
         "# TYPE gmcp_breaker_state gauge\ngmcp_breaker_state %d\n"
         "# HELP gmcp_breaker_opens_total Times the breaker opened.\n"
         "# TYPE gmcp_breaker_opens_total counter\ngmcp_breaker_opens_total %" APR_UINT64_T_FMT
         "\n",
         g->breaker_state, g->breaker_opens);
    LINE("# HELP gmcp_limiter_evictions_total Idle keys dropped from the shared limiter "
         "table to make room.\n# TYPE gmcp_limiter_evictions_total counter\n"
         "gmcp_limiter_evictions_total %" APR_UINT64_T_FMT "\n",
         g->limiter_evictions);
    LINE("# HELP gmcp_metric_series_dropped_total Observations whose label set did not fit "
         "the series table.\n# TYPE gmcp_metric_series_dropped_total counter\n"
         "gmcp_metric_series_dropped_total %" APR_UINT64_T_FMT "\n",
         RD(m->series_overflow));
    LINE("# HELP gmcp_uptime_seconds Seconds since this httpd generation started.\n"
         "# TYPE gmcp_uptime_seconds gauge\ngmcp_uptime_seconds %.0f\n",
         (double)(now - m->started) / APR_USEC_PER_SEC);
}

/* Every sample line of `text` with node="..." as its first label. */
static const char *with_node_label(apr_pool_t *p, const char *text, const char *node)
{
    apr_array_header_t *out = apr_array_make(p, 512, sizeof(const char *));
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n'), *name_end;
        apr_size_t len = end ? (apr_size_t)(end - line + 1) : strlen(line);
        if (*line == '#' || *line == '\n') { LINE("%.*s", (int)len, line); }
        else {
            name_end = line + strcspn(line, "{ ");
            if (*name_end == '{')
                LINE("%.*snode=\"%s\",%.*s", (int)(name_end + 1 - line), line, node,
                     (int)(len - (apr_size_t)(name_end + 1 - line)), name_end + 1);
            else
                LINE("%.*s{node=\"%s\"}%.*s", (int)(name_end - line), line, node,
                     (int)(len - (apr_size_t)(name_end - line)), name_end);
        }
        line += len;
    }
    return apr_array_pstrcat(p, out, 0);
}

const char *gmcp_metrics_render(apr_pool_t *p, const gmcp_metrics *m, const gmcp_metrics_gauges *g,
                                apr_time_t now)
{
    apr_array_header_t *out = apr_array_make(p, 256, sizeof(const char *));
    const char *text;
    if (g->node)
        LINE("# HELP gmcp_node_info The node these series are from, and its version.\n"
             "# TYPE gmcp_node_info gauge\ngmcp_node_info{version=\"%s\"} 1\n",
             g->version ? g->version : "");
    render_requests(out, p, m);
    render_gemini(out, p, m);
    render_refusals(out, p, m);
    render_gauges(out, p, m, g, now);
    text = apr_array_pstrcat(p, out, 0);
    return g->node ? with_node_label(p, text, g->node) : text;
}
