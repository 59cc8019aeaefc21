/* gmcp_metrics.h — counters and latency histograms in one shared-memory block, summed
 * over every child process by construction, rendered as Prometheus text.
 *
 * Label values are bounded: methods come from a fixed list ("other" otherwise) and
 * tools only from the registry (the caller passes NULL for unknown names), so a client
 * cannot grow the series without limit. Updates are lock-free (APR atomics); only
 * adding a new series takes the caller's lock, so requests do not queue on a mutex. */
#ifndef GMCP_METRICS_H
#define GMCP_METRICS_H

#include <apr_pools.h>
#include <apr_time.h>

#define GMCP_LAT_BUCKETS 12
#define GMCP_REQ_SERIES 512
#define GMCP_GEM_SERIES 32

typedef struct {
    /* bucket[i]: observations in (LE[i-1], LE[i]] — made cumulative when rendered */
    volatile apr_uint64_t count, sum_us, bucket[GMCP_LAT_BUCKETS];
} gmcp_histogram;

typedef struct {
    char method[40];
    char tool[72];
    int status;
    gmcp_histogram h;
} gmcp_req_series;

typedef struct {
    int status; /* HTTP status from Gemini, 0 = transport failure */
    gmcp_histogram h;
} gmcp_gem_series;

/* Reasons a request is refused before it runs. */
enum {
    GMCP_REJ_RATE,
    GMCP_REJ_TOKENS,
    GMCP_REJ_INFLIGHT,
    GMCP_REJ_FULL,
    GMCP_REJ_QUOTA,
    GMCP_REJ_N
};
/* Authentication outcomes that refuse a request. */
enum {
    GMCP_AUTH_MISSING,
    GMCP_AUTH_INVALID,
    GMCP_AUTH_EXPIRED,
    GMCP_AUTH_REVOKED,
    GMCP_AUTH_FORBIDDEN,
    GMCP_AUTH_N
};

typedef struct {
    apr_time_t started;
    volatile apr_uint32_t nreq, ngem; /* published after the series is filled in */
    gmcp_req_series req[GMCP_REQ_SERIES];
    gmcp_gem_series gem[GMCP_GEM_SERIES];
    volatile apr_uint64_t series_overflow;
    volatile apr_uint64_t gemini_retries, gemini_tokens_prompt, gemini_tokens_output;
    volatile apr_uint64_t rejected[GMCP_REJ_N];
    volatile apr_uint64_t auth_failures[GMCP_AUTH_N];
    volatile apr_uint64_t bytes_in, bytes_out;
} gmcp_metrics;

/* The lock that guards adding a series (NULL: single-threaded use). */
typedef struct {
    void (*lock)(void *baton);
    void (*unlock)(void *baton);
    void *baton;
} gmcp_metrics_lock;

/* The label for a method: itself when it is an MCP method we know, else "other". */
const char *gmcp_metrics_method(const char *method);

void gmcp_metrics_init(gmcp_metrics *m, apr_time_t now);
/* tool NULL: not a tool call (or an unknown tool: "unknown"). Locked by the caller. */
void gmcp_metrics_request(gmcp_metrics *m, const gmcp_metrics_lock *lk, const char *method,
                          const char *tool, int status, apr_interval_time_t latency,
                          apr_int64_t bytes_in, apr_int64_t bytes_out);
void gmcp_metrics_gemini(gmcp_metrics *m, const gmcp_metrics_lock *lk, int http_status,
                         apr_interval_time_t latency, int retries, apr_int64_t prompt_tokens,
                         apr_int64_t output_tokens);
/* Count one rejection / authentication failure. */
void gmcp_metrics_count(volatile apr_uint64_t *counter);

/* Gauges the renderer does not keep itself (read at scrape time). */
typedef struct {
    apr_int64_t mcp_sessions, chat_sessions; /* -1: unknown (database down) */
    int breaker_state;
    apr_uint64_t breaker_opens;
    apr_uint64_t limiter_evictions, limiter_full;
    const char *node;    /* the node label on every series (letters, digits, . _ : -), or NULL */
    const char *version; /* the module's, on gmcp_node_info */
} gmcp_metrics_gauges;

/* Prometheus text exposition (format 0.0.4) of the live block (read atomically); with
 * g->node, every sample carries node="..." and gmcp_node_info names the node. */
const char *gmcp_metrics_render(apr_pool_t *p, const gmcp_metrics *snap,
                                const gmcp_metrics_gauges *g, apr_time_t now);

#endif
