/* gmcp_http.h — the one HTTP client transport of the core (the Gemini client and the
 * Files relay), after mod_md's md_http.h: a request, callbacks for what comes back,
 * and an implementation table. gmcp_curl.c is the libcurl implementation and the only
 * file that sees libcurl; a test may install another with gmcp_http_use.
 *
 * Every request goes out without signals, over http or https only, with no redirects
 * followed and "User-Agent: mod_gemini_mcp". A handle is reused by one thread, request
 * after request, so connections stay alive. */
#ifndef GMCP_HTTP_H
#define GMCP_HTTP_H

#include <apr_errno.h>
#include <apr_pools.h>
#include <apr_time.h>

typedef struct gmcp_http gmcp_http; /* one thread's reusable client */

/* A piece of the response body; `status` is the response's HTTP status. APR_SUCCESS
 * goes on; any other status aborts the transfer. */
typedef apr_status_t (*gmcp_http_body_fn)(void *baton, int status, const char *data,
                                          apr_size_t len);
/* One raw response header line: not NUL-terminated, with its CRLF. APR_SUCCESS goes on;
 * any other status aborts. */
typedef apr_status_t (*gmcp_http_header_fn)(void *baton, const char *line, apr_size_t len);
/* Called often while the transfer runs, data flowing or not. APR_SUCCESS goes on; any
 * other status aborts. */
typedef apr_status_t (*gmcp_http_progress_fn)(void *baton);
/* Up to `len` bytes of the request body into `buf`: the count, 0 at its end, or -1 to
 * abort the transfer. */
typedef apr_ssize_t (*gmcp_http_read_fn)(void *baton, char *buf, apr_size_t len);

typedef struct {
    const char *method; /* "GET", "POST" or "DELETE" */
    const char *url;
    const char *const *headers; /* "Name: value" lines, NULL-terminated; "Name:"
                                      * suppresses a header the transport would add */
    const char *body;           /* a NUL-terminated body (not for GET), or NULL: "" */
    gmcp_http_read_fn read;     /* or a body of body_len bytes read through this */
    apr_int64_t body_len;
    apr_interval_time_t connect_timeout;
    apr_interval_time_t timeout; /* the whole transfer */
    gmcp_http_body_fn on_body;   /* the callbacks are optional */
    gmcp_http_header_fn on_header;
    gmcp_http_progress_fn on_progress;
    void *baton; /* for every callback */
} gmcp_http_request;

typedef struct {
    int status;        /* HTTP status of the response; 0 when none came */
    const char *error; /* the transport's words for a failure, else NULL */
} gmcp_http_response;

/* The implementation table: perform as gmcp_http_perform. */
typedef struct {
    gmcp_http *(*for_thread)(void);
    apr_status_t (*perform)(gmcp_http *h, const gmcp_http_request *req, gmcp_http_response *res);
} gmcp_http_impl;

/* Install `impl` as the transport (NULL: libcurl, the default). Before any request. */
void gmcp_http_use(const gmcp_http_impl *impl);

/* The calling thread's handle, made on first use; NULL when none can be made. */
gmcp_http *gmcp_http_for_thread(void);

/* One request on `h`: APR_SUCCESS when a response arrived in full (whatever its HTTP
 * status), APR_TIMEUP when the timeout passed, GMCP_EUPSTREAM for anything else (no
 * connection, a broken transfer, an abort by a callback). *res is filled whatever the
 * outcome. */
apr_status_t gmcp_http_perform(gmcp_http *h, const gmcp_http_request *req, gmcp_http_response *res);

/* libcurl's process set-up: gmcp_http_init once per process before any thread exists
 * (post_config), gmcp_http_child_init in each child before its threads make handles;
 * a handle is released when its thread ends. */
apr_status_t gmcp_http_init(void);
apr_status_t gmcp_http_child_init(apr_pool_t *p);

#endif
