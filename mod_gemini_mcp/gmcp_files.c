/* gmcp_files.c — the resumable relay into the Gemini Files API. */
#include "gmcp_files.h"
#include "gmcp_errlog.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_util.h"

#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <apr_base64.h>
#include <apr_file_io.h>
#include <apr_strings.h>

typedef struct {
    gmcp_gemini *g;
    apr_file_t *f;               /* body source (upload commands), or NULL */
    const char *path;            /* f's path, for the log */
    apr_status_t read_error;     /* reading f failed (logged): the upload is aborted */
    apr_int64_t left;            /* bytes still to send from f */
    gmcp_buf body;               /* response body (small: status or File JSON) */
    const char *upload_url, *status;
    apr_int64_t received;
    int aborted;
} up_xfer;

static size_t on_read(char *ptr, size_t size, size_t n, void *ud)
{
    up_xfer *x = ud;
    apr_size_t want = size * n;
    if (x->g->cancelled && x->g->cancelled(x->g->baton)) { x->aborted = 1; return CURL_READFUNC_ABORT; }
    if ((apr_int64_t)want > x->left) want = (apr_size_t)x->left;
    if (!want) return 0;
    if ((x->read_error = apr_file_read_full(x->f, ptr, want, &want)) != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, x->read_error, "GMCP0304",
                  "cannot read %s while relaying it to the Files API", x->path);
        return CURL_READFUNC_ABORT;
    }
    x->left -= (apr_int64_t)want;
    return want;
}

static size_t on_body(char *ptr, size_t size, size_t n, void *ud)
{
    up_xfer *x = ud;
    size_t len = size * n;
    return gmcp_buf_append(&x->body, ptr, len, 1024 * 1024) ? 0 : len;  /* a File is small */
}

const char *gmcp_files_header_value(apr_pool_t *p, const char *line, size_t len,
                                    const char *name)
{
    size_t nl = strlen(name);
    const char *v, *e;
    if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return NULL;
    v = line + nl + 1;
    e = line + len;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ')) e--;
    return apr_pstrndup(p, v, (apr_size_t)(e - v));
}

static size_t on_head(char *ptr, size_t size, size_t n, void *ud)
{
    up_xfer *x = ud;
    size_t len = size * n;
    const char *v;
    if ((v = gmcp_files_header_value(x->g->pool, ptr, len, "X-Goog-Upload-URL")))
        x->upload_url = v;
    if ((v = gmcp_files_header_value(x->g->pool, ptr, len, "X-Goog-Upload-Status")))
        x->status = v;
    if ((v = gmcp_files_header_value(x->g->pool, ptr, len, "X-Goog-Upload-Size-Received")))
        x->received = apr_atoi64(v);
    return len;
}

static int on_xfer(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    up_xfer *x = ud;
    (void)a; (void)b; (void)c; (void)d;
    if ((x->g->cancelled && x->g->cancelled(x->g->baton)) || apr_time_now() >= x->g->deadline) {
        x->aborted = 1;
        return 1;
    }
    return 0;
}

/* One request of the protocol. `command` "start" sends json_body to the upload
 * endpoint; others go to `url` with `len` bytes of f (from its current position). */
static int request(gmcp_gemini *g, const char *url, const char *command, const char **hdrs,
                   const char *json_body, apr_file_t *f, const char *path, apr_int64_t offset,
                   apr_int64_t len, up_xfer *x, json_t **out, gmcp_gemini_error *err)
{
    struct curl_slist *h = NULL;
    apr_interval_time_t t = gmcp_gemini_attempt_time(g);
    long status = 0;
    CURLcode cc;
    int i;
    memset(err, 0, sizeof(*err));
    memset(x, 0, sizeof(*x));
    x->g = g;
    x->f = f;
    x->path = path;
    x->left = len;
    x->received = -1;
    if (out) *out = NULL;
    if (t <= 0) {
        err->status = "DEADLINE_EXCEEDED";
        err->message = "no time left for the upload to Gemini";
        return -1;
    }
    h = curl_slist_append(h, apr_pstrcat(g->pool, "x-goog-api-key: ", g->api_key, NULL));
    h = curl_slist_append(h, apr_pstrcat(g->pool, "X-Goog-Upload-Command: ", command, NULL));
    h = curl_slist_append(h, "Expect:");
    if (!strcmp(command, "start")) {
        h = curl_slist_append(h, "X-Goog-Upload-Protocol: resumable");
        h = curl_slist_append(h, "Content-Type: application/json");
    }
    else {
        h = curl_slist_append(h, "Content-Type: application/octet-stream");
        h = curl_slist_append(h, apr_psprintf(g->pool, "X-Goog-Upload-Offset: %" APR_INT64_T_FMT,
                                              offset));
    }
    for (i = 0; hdrs && hdrs[i]; i++) h = curl_slist_append(h, hdrs[i]);
    gmcp_gemini_prepare(g, url, h, t, on_body, on_head, on_xfer, x);
    curl_easy_setopt(g->curl, CURLOPT_POST, 1L);
    if (f) {
        curl_easy_setopt(g->curl, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(g->curl, CURLOPT_READDATA, x);
        curl_easy_setopt(g->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    else {
        curl_easy_setopt(g->curl, CURLOPT_POSTFIELDS, json_body ? json_body : "");
    }
    cc = curl_easy_perform(g->curl);
    curl_slist_free_all(h);
    curl_easy_getinfo(g->curl, CURLINFO_RESPONSE_CODE, &status);
    err->http_status = (int)status;
    if (x->aborted && g->cancelled && g->cancelled(g->baton)) {
        err->cancelled = 1;
        err->status = "CANCELLED";
        err->message = "the request was cancelled";
    }
    else if (x->read_error) {
        err->http_status = 0;
        err->status = "INTERNAL";
        err->message = "cannot read the uploaded file from the spool";
    }
    else if (cc != CURLE_OK) {
        err->http_status = 0;
        err->message = apr_psprintf(g->pool, "cannot reach Gemini: %s", x->aborted
                                    ? "no time left" : curl_easy_strerror(cc));
        err->retryable = !x->aborted;
    }
    else if (status < 200 || status >= 300) {
        json_t *j = x->body.len ? json_loadb(x->body.buf, x->body.len, 0, NULL) : NULL;
        json_t *e = json_object_get(j, "error");
        err->status = gmcp_json_str(e, "status") ? apr_pstrdup(g->pool, gmcp_json_str(e, "status"))
                                                  : NULL;
        err->message = gmcp_json_str(e, "message")
            ? apr_pstrdup(g->pool, gmcp_json_str(e, "message"))
            : apr_psprintf(g->pool, "HTTP %ld from Gemini", status);
        err->retryable = status == 429 || status >= 500;
        json_decref(j);
    }
    else {
        if (out && x->body.len) *out = json_loadb(x->body.buf, x->body.len, 0, NULL);
        free(x->body.buf);
        x->body.buf = NULL;
        return 0;
    }
    free(x->body.buf);
    x->body.buf = NULL;
    return -1;
}

/* Wait before a retry, unless that would pass the call's deadline. */
static int wait_a_bit(gmcp_gemini *g, apr_interval_time_t d)
{
    if (apr_time_now() + d >= g->deadline) return -1;
    return gmcp_gemini_wait(g, d);
}

/* The path of a URL, without scheme, host, query (an upload URL carries its upload_id
 * there) or fragment: what a log line may show. */
static const char *url_path(apr_pool_t *p, const char *url)
{
    const char *s = strstr(url, "://");
    s = s ? strchr(s + 3, '/') : url;
    if (!s) return "/";
    return apr_pstrndup(p, s, strcspn(s, "?#"));
}

/* Log a Files API request that failed for good (`tries` attempts). Cancellation is
 * the client's choice, and a spool read failure was logged where it happened. */
static void upstream_failed(gmcp_gemini *g, const char *command, const char *url,
                            const gmcp_gemini_error *err, int tries)
{
    const char *retried = tries > 1 ? apr_psprintf(g->pool, " after %d attempts", tries) : "";
    if (err->cancelled || (err->status && !strcmp(err->status, "INTERNAL"))) return;
    if (err->http_status)
        gmcp_elog(GMCP_ELOG_MARK, err->http_status >= 500 || err->http_status == 429
                  ? GMCP_ELOG_ERR : GMCP_ELOG_WARN, 0, "GMCP0412",
                  "Files API %s POST %s answered HTTP %d%s%s%s: %s", command,
                  url_path(g->pool, url), err->http_status, err->status ? " " : "",
                  err->status ? err->status : "", retried, err->message);
    else
        gmcp_elog(GMCP_ELOG_MARK, err->status && !strcmp(err->status, "DEADLINE_EXCEEDED")
                  ? GMCP_ELOG_WARN : GMCP_ELOG_ERR, 0, "GMCP0411",
                  "Files API %s POST %s failed%s: %s", command, url_path(g->pool, url),
                  retried, err->message);
}

int gmcp_files_relay(gmcp_gemini *g, const char *path, apr_int64_t size, const char *mime,
                     const char *display_name, apr_int64_t chunk,
                     gmcp_files_progress_fn progress, void *baton, json_t **file,
                     int *resumes, gmcp_gemini_error *err)
{
    const char *start_hdrs[3];
    json_t *meta = json_pack("{s:{s:s, s:s, s:s}}", "file", "mimeType", mime, "displayName",
                             display_name, "sizeBytes",
                             apr_psprintf(g->pool, "%" APR_INT64_T_FMT, size));
    const char *url;
    apr_int64_t offset = 0;
    apr_file_t *f;
    json_t *resp = NULL;
    up_xfer x;
    int tries = 0, rv;
    *file = NULL;
    *resumes = 0;
    if (chunk <= 0) chunk = GMCP_FILES_CHUNK;
    start_hdrs[0] = apr_psprintf(g->pool, "X-Goog-Upload-Header-Content-Length: %"
                                 APR_INT64_T_FMT, size);
    start_hdrs[1] = apr_pstrcat(g->pool, "X-Goog-Upload-Header-Content-Type: ", mime, NULL);
    start_hdrs[2] = NULL;
    url = apr_pstrcat(g->pool, g->base_url, "/upload/v1beta/files", NULL);
    for (;;) {
        rv = request(g, url, "start", start_hdrs, gmcp_json_dump(g->pool, meta), NULL, NULL, 0,
                     0, &x, NULL, err);
        if (rv == 0 || !err->retryable || tries++ >= g->max_retries
            || wait_a_bit(g, apr_time_from_msec(500) << tries))
            break;
    }
    json_decref(meta);
    if (rv) {
        upstream_failed(g, "start", url, err, err->retryable ? tries : tries + 1);
        return -1;
    }
    if (!x.upload_url) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413", "Files API start POST %s "
                  "answered HTTP %d without an X-Goog-Upload-URL", url_path(g->pool, url),
                  err->http_status);
        err->message = "Gemini did not give an upload URL";
        return -1;
    }
    url = x.upload_url;
    {
        apr_status_t st = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0,
                                        g->pool);
        if (st != APR_SUCCESS) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, st, "GMCP0302", "cannot open %s to relay "
                      "it to the Files API", path);
            err->message = "cannot read the uploaded file from the spool";
            return -1;
        }
    }
    tries = 0;
    for (;;) {
        apr_int64_t len = size - offset < chunk ? size - offset : chunk;
        int last = offset + len >= size;
        apr_off_t at = (apr_off_t)offset;
        apr_status_t st = apr_file_seek(f, APR_SET, &at);
        if (st != APR_SUCCESS) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, st, "GMCP0306", "cannot seek to %"
                      APR_INT64_T_FMT " in %s to relay it to the Files API", offset, path);
            memset(err, 0, sizeof(*err));
            err->message = "cannot read the uploaded file from the spool";
            break;
        }
        rv = request(g, url, last ? "upload, finalize" : "upload", NULL, NULL, f, path, offset,
                     len, &x, last ? &resp : NULL, err);
        if (rv == 0) {
            offset += len;
            tries = 0;
            if (progress) progress(baton, offset, size, "relaying");
            if (last) break;
            continue;
        }
        if (!err->retryable || tries++ >= g->max_retries
            || wait_a_bit(g, apr_time_from_msec(250) << tries)) {
            upstream_failed(g, last ? "upload, finalize" : "upload", url, err,
                            err->retryable ? tries : tries + 1);
            break;
        }
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_INFO, 0, "GMCP0416", "Files API upload of %"
                  APR_INT64_T_FMT " bytes at offset %" APR_INT64_T_FMT " to %s failed (%s): "
                  "asking how much arrived", len, offset, url_path(g->pool, url), err->message);
        /* Ask how much arrived, and go on from there. */
        if (request(g, url, "query", NULL, NULL, NULL, NULL, 0, 0, &x, NULL, err) != 0) {
            upstream_failed(g, "query", url, err, 1);
            break;
        }
        if (x.received < 0 || x.received > size || (x.status && strcmp(x.status, "active"))) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413", "Files API query POST %s: "
                      "upload status %s, %" APR_INT64_T_FMT " of %" APR_INT64_T_FMT " bytes "
                      "received: cannot resume", url_path(g->pool, url),
                      x.status ? x.status : "(none)", x.received, size);
            if (!err->message) err->message = "Gemini cannot resume the upload";
            break;
        }
        offset = x.received;
        (*resumes)++;
    }
    apr_file_close(f);
    if (!resp) {
        if (!err->message) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413", "Files API finalize POST "
                      "%s answered HTTP %d without a body", url_path(g->pool, url),
                      err->http_status);
            err->message = "Gemini did not finalize the upload";
        }
        return -1;
    }
    {
        json_t *fo = json_object_get(resp, "file");
        const char *name = gmcp_json_str(fo, "name");
        if (!name) {
            json_decref(resp);
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413", "Files API finalize POST "
                      "%s: the answer has no file.name", url_path(g->pool, url));
            err->message = "Gemini's finalize answer has no file";
            return -1;
        }
        if (progress) progress(baton, size, size, "processing");
        if (!strcmp(gmcp_json_str(fo, "state") ? gmcp_json_str(fo, "state") : "", "ACTIVE")) {
            *file = json_incref(fo);
            json_decref(resp);
            return 0;
        }
        name = apr_pstrdup(g->pool, name);
        json_decref(resp);
        return gmcp_files_wait_active(g, name, file, err);
    }
}

int gmcp_files_wait_active(gmcp_gemini *g, const char *name, json_t **file,
                           gmcp_gemini_error *err)
{
    apr_interval_time_t every = apr_time_from_msec(100);
    for (;;) {
        json_t *f = NULL;
        const char *state;
        if (gmcp_gemini_call(g, "GET", apr_pstrcat(g->pool, "/v1beta/", name, NULL), NULL, &f,
                             err))
            return -1;
        state = gmcp_json_str(f, "state");
        state = state ? apr_pstrdup(g->pool, state) : NULL;   /* outlives f */
        if (state && !strcmp(state, "ACTIVE")) {
            *file = f;
            return 0;
        }
        if (state && !strcmp(state, "FAILED")) {
            const char *m = gmcp_json_str(json_object_get(f, "error"), "message");
            err->message = apr_psprintf(g->pool, "Gemini could not process the file: %s",
                                        m ? m : "state FAILED");
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0414", "Files API: %s is FAILED: %s",
                      name, m ? m : "(no message)");
            json_decref(f);
            return -1;
        }
        json_decref(f);
        if (wait_a_bit(g, every)) {
            if (!(g->cancelled && g->cancelled(g->baton)))
                gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_WARN, 0, "GMCP0414", "Files API: %s was "
                          "still %s when the call's time ran out", name,
                          state ? state : "(no state)");
            err->message = "the file was still PROCESSING when the time ran out";
            return -1;
        }
        if (every < apr_time_from_sec(2)) every *= 2;
    }
}

int gmcp_files_sha_matches(apr_pool_t *p, const char *b64, const char *hex)
{
    char *raw;
    int n;
    if (!b64 || !hex) return 0;
    raw = apr_palloc(p, (apr_size_t)apr_base64_decode_len(b64) + 1);
    n = apr_base64_decode(raw, b64);
    if (n == 64) return strncasecmp(raw, hex, 64) == 0;
    if (n == 32) return strncasecmp(gmcp_hex(p, (unsigned char *)raw, 32), hex, 64) == 0;
    return 0;
}
