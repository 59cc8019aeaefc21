/* gmcp_gemini.h — a Gemini API (v1beta) client on gmcp_http and jansson.
 *
 * Retries 429/500/502/503/504 and transport failures with exponential backoff and
 * jitter, honouring RetryInfo and Retry-After, never past the caller's deadline; a
 * caller-supplied check aborts transfers as soon as the MCP request is cancelled.
 * The API key travels only in the x-goog-api-key header and is never logged. */
#ifndef GMCP_GEMINI_H
#define GMCP_GEMINI_H

#include <apr_pools.h>
#include <apr_time.h>
#include <jansson.h>
#include "gmcp_breaker.h"
#include "gmcp_http.h"

#define GMCP_GEMINI_DEFAULT_BASE "https://generativelanguage.googleapis.com"
#define GMCP_GEMINI_DEFAULT_MODEL "gemini-2.5-flash"
#define GMCP_GEMINI_EMBED_MODEL "gemini-embedding-001"
#define GMCP_GEMINI_MAX_RESPONSE (32 * 1024 * 1024)

typedef struct {
    gmcp_http *http;      /* reused by this thread: keeps connections alive */
    const char *base_url; /* no trailing slash */
    const char *api_key;
    apr_interval_time_t connect_timeout;
    apr_interval_time_t timeout; /* per attempt */
    int max_retries;
    apr_time_t deadline;           /* absolute: no attempt or wait goes past it */
    int (*cancelled)(void *baton); /* true: stop now (a predicate) */
    void *baton;
    apr_pool_t *pool;
    gmcp_breaker *breaker; /* optional: fail fast while Gemini is down */
    /* Optional: told once per call (retries included) how it went — final HTTP status
     * (0: no answer), time taken, retries, and the tokens Gemini reported. */
    void (*observe)(void *baton, int http_status, apr_interval_time_t latency, int retries,
                    apr_int64_t prompt_tokens, apr_int64_t output_tokens);
    void *observe_baton;
    /* observed */
    int retries;               /* retries made by the last call */
    apr_int64_t prompt_tokens; /* usageMetadata of the last call (0 when none) */
    apr_int64_t output_tokens;
} gmcp_gemini;

/* Why a call failed, in detail (the status a call returns says what kind of failure). */
typedef struct {
    int http_status;     /* 0 for transport failures */
    const char *status;  /* Google status, e.g. "RESOURCE_EXHAUSTED" */
    const char *message; /* Gemini's own message, or ours */
    int retryable;
    int cancelled; /* the call returned GMCP_ECANCELLED */
} gmcp_gemini_error;

/* One JSON call: method "GET", "POST" or "DELETE", path like "/v1beta/models".
 * APR_SUCCESS with *out (new ref); otherwise *err filled and GMCP_ECANCELLED (the
 * caller cancelled), APR_TIMEUP (the deadline came first) or GMCP_EUPSTREAM (Gemini
 * could not be reached, refused, or answered with something unusable; also while the
 * breaker holds calls back). */
apr_status_t gmcp_gemini_call(gmcp_gemini *g, const char *method, const char *path, json_t *body,
                              json_t **out, gmcp_gemini_error *err);

/* The same POST with an already serialised body (long chat histories are spliced,
 * not rebuilt). */
apr_status_t gmcp_gemini_call_text(gmcp_gemini *g, const char *path, const char *body, json_t **out,
                                   gmcp_gemini_error *err);

/* streamGenerateContent?alt=sse: on_chunk gets each GenerateContentResponse as it
 * arrives: APR_SUCCESS goes on, any other status stops the stream (the call then
 * returns APR_SUCCESS: the consumer had enough). Retries happen only before the first
 * chunk. Returns as gmcp_gemini_call. */
typedef apr_status_t (*gmcp_gemini_chunk_fn)(json_t *chunk, void *baton);
apr_status_t gmcp_gemini_stream(gmcp_gemini *g, const char *path, const char *body,
                                gmcp_gemini_chunk_fn on_chunk, void *baton, gmcp_gemini_error *err);

/* For other request shapes on the same client (the Files upload): the time one attempt
 * may take (the per-attempt timeout, cut to what is left before the deadline; <= 0:
 * none left). */
apr_interval_time_t gmcp_gemini_attempt_time(const gmcp_gemini *g);
/* Sleep `d` in short steps: APR_SUCCESS, or GMCP_ECANCELLED as soon as the call is
 * cancelled. */
apr_status_t gmcp_gemini_wait(gmcp_gemini *g, apr_interval_time_t d);

/* "models/x" for "x"; names already qualified pass through. NULL for unsafe names. */
const char *gmcp_gemini_model_path(apr_pool_t *p, const char *model);

/* Retry delay from an error body's RetryInfo ("23s", "1.5s"), or -1. */
apr_interval_time_t gmcp_gemini_retry_info(const json_t *error_body);

/* The text of the first candidate (concatenated parts), or NULL. */
const char *gmcp_gemini_text(apr_pool_t *p, const json_t *response);

/* Incremental SSE framing (split on blank lines, CRLF or LF); exposed for tests. */
typedef struct {
    char *buf;
    apr_size_t len, cap;
    int failed; /* malformed event seen */
} gmcp_sse_parser;
/* Feed bytes; calls fn for each complete event's JSON (data: lines). APR_SUCCESS; fn's
 * status when it asked to stop; APR_EINVAL (sp->failed) when an event was not valid
 * JSON; APR_ENOMEM. */
apr_status_t gmcp_sse_feed(gmcp_sse_parser *sp, const char *data, apr_size_t len,
                           gmcp_gemini_chunk_fn fn, void *baton);
void gmcp_sse_free(gmcp_sse_parser *sp);

#endif
