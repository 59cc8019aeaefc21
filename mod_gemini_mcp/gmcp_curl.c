/* gmcp_curl.c — gmcp_http on libcurl (mod_md's md_curl.c), and the switch between
 * implementations. The only file of the tree that includes <curl/curl.h>. */
#include "gmcp_http.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <string.h>
#include <apr_thread_proc.h>
#include <curl/curl.h>

#define USER_AGENT "mod_gemini_mcp"

struct gmcp_http {
    CURL *curl; /* reset for each request; keeps its connections */
};

/* What libcurl's callbacks get: the handle (for the status) and the request. */
typedef struct {
    CURL *curl;
    const gmcp_http_request *req;
} transfer;

static apr_threadkey_t *thread_key; /* each worker thread's handle */
static int initialised;

/* ---- libcurl's callbacks --------------------------------------------------------------- */

static size_t on_write(char *ptr, size_t size, size_t n, void *ud)
{
    transfer *t = ud;
    size_t len = size * n;
    long status = 0;
    if (!t->req->on_body) return len;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    return t->req->on_body(t->req->baton, (int)status, ptr, len) != APR_SUCCESS ? 0 : len;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *ud)
{
    transfer *t = ud;
    size_t len = size * n;
    if (!t->req->on_header) return len;
    return t->req->on_header(t->req->baton, ptr, len) != APR_SUCCESS ? 0 : len;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    transfer *t = ud;
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    return t->req->on_progress && t->req->on_progress(t->req->baton) != APR_SUCCESS ? 1 : 0;
}

static size_t on_read(char *ptr, size_t size, size_t n, void *ud)
{
    transfer *t = ud;
    apr_ssize_t got = t->req->read(t->req->baton, ptr, size * n);
    return got < 0 ? CURL_READFUNC_ABORT : (size_t)got;
}

/* ---- one request ----------------------------------------------------------------------- */

/* The lines as libcurl's list: APR_SUCCESS, or APR_ENOMEM (and no list) when a line
 * could not be added. */
static apr_status_t header_list(const char *const *lines, struct curl_slist **list)
{
    int i;
    *list = NULL;
    for (i = 0; lines && lines[i]; i++) {
        struct curl_slist *more = curl_slist_append(*list, lines[i]);
        if (!more) {
            curl_slist_free_all(*list);
            *list = NULL;
            return APR_ENOMEM;
        }
        *list = more;
    }
    return APR_SUCCESS;
}

/* The limits and callbacks of every request. */
static void set_transfer(transfer *t, struct curl_slist *headers)
{
    CURL *curl = t->curl;
    curl_easy_setopt(curl, CURLOPT_URL, t->req->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)apr_time_as_msec(t->req->connect_timeout));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)apr_time_as_msec(t->req->timeout));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, t);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, USER_AGENT);
}

/* The method and the request body: a GET has none. */
static void set_method(transfer *t)
{
    const gmcp_http_request *req = t->req;
    if (!strcmp(req->method, "GET")) return;
    if (!strcmp(req->method, "POST"))
        curl_easy_setopt(t->curl, CURLOPT_POST, 1L);
    else
        curl_easy_setopt(t->curl, CURLOPT_CUSTOMREQUEST, req->method);
    if (req->read) {
        curl_easy_setopt(t->curl, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(t->curl, CURLOPT_READDATA, t);
        curl_easy_setopt(t->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    else {
        curl_easy_setopt(t->curl, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    }
}

static apr_status_t curl_perform(gmcp_http *h, const gmcp_http_request *req,
                                 gmcp_http_response *res)
{
    transfer t;
    struct curl_slist *headers;
    CURLcode cc = CURLE_OUT_OF_MEMORY;
    long status = 0;

    t.curl = h->curl;
    t.req = req;
    curl_easy_reset(h->curl);
    if (header_list(req->headers, &headers) == APR_SUCCESS) {
        set_transfer(&t, headers);
        set_method(&t);
        cc = curl_easy_perform(h->curl);
        curl_slist_free_all(headers);
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    }
    res->status = (int)status;
    res->error = cc == CURLE_OK ? NULL : curl_easy_strerror(cc);
    return cc == CURLE_OK                ? APR_SUCCESS
        : cc == CURLE_OPERATION_TIMEDOUT ? APR_TIMEUP
                                         : GMCP_EUPSTREAM;
}

/* ---- one handle per thread ------------------------------------------------------------- */

static void release_handle(void *data)
{
    gmcp_http *h = data;
    curl_easy_cleanup(h->curl);
    free(h);
}

static gmcp_http *curl_for_thread(void)
{
    void *data = NULL;
    gmcp_http *h;
    if (!thread_key) return NULL;
    apr_threadkey_private_get(&data, thread_key);
    if (data) return data;
    /* Made in the thread that uses it, never inherited across fork. */
    h = malloc(sizeof(*h));
    if (h && !(h->curl = curl_easy_init())) {
        free(h);
        h = NULL;
    }
    if (h) apr_threadkey_private_set(h, thread_key);
    return h;
}

apr_status_t gmcp_http_init(void)
{
    /* Once per process, before any thread exists. */
    if (!initialised) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return APR_EGENERAL;
        initialised = 1;
    }
    return APR_SUCCESS;
}

apr_status_t gmcp_http_child_init(apr_pool_t *p)
{
    apr_status_t rv = apr_threadkey_private_create(&thread_key, release_handle, p);
    if (rv != APR_SUCCESS) thread_key = NULL; /* no handles then, rather than a bad key */
    return rv;
}

/* ---- the implementation in use --------------------------------------------------------- */

static const gmcp_http_impl curl_impl = {curl_for_thread, curl_perform};
static const gmcp_http_impl *impl = &curl_impl;

void gmcp_http_use(const gmcp_http_impl *i) { impl = i ? i : &curl_impl; }

gmcp_http *gmcp_http_for_thread(void) { return impl->for_thread(); }

apr_status_t gmcp_http_perform(gmcp_http *h, const gmcp_http_request *req, gmcp_http_response *res)
{
    return impl->perform(h, req, res);
}
