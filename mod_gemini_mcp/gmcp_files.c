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
#include <apr_tables.h>

typedef struct {
    gmcp_gemini *g;
    apr_file_t *f;           /* body source (upload commands), or NULL */
    const char *path;        /* f's path, for the log */
    apr_status_t read_error; /* reading f failed (logged): the upload is aborted */
    apr_int64_t left;        /* bytes still to send from f */
    gmcp_buf body;           /* response body (small: status or File JSON) */
    const char *upload_url, *status;
    apr_int64_t received;
    int aborted;
} up_xfer;

/* One relay: what goes up, where it stands, and what came back. */
typedef struct {
    gmcp_gemini *g;
    const char *path; /* the spooled file */
    apr_int64_t size, chunk;
    const char *mime, *display_name;
    gmcp_files_progress_fn progress;
    void *baton;
    const char *url;    /* the upload endpoint, then the upload URL of `start` */
    apr_file_t *f;      /* open while the bytes go up */
    apr_int64_t offset; /* bytes Gemini has */
    int tries;          /* failed attempts at the current chunk */
    int *resumes;
    json_t *resp; /* finalize's answer */
    up_xfer x;    /* the last request's */
    gmcp_gemini_error *err;
} relay;

/* ---- one request of the protocol -------------------------------------------------------- */

static apr_ssize_t on_read(void *ud, char *buf, apr_size_t want)
{
    up_xfer *x = ud;
    if (x->g->cancelled && x->g->cancelled(x->g->baton)) {
        x->aborted = 1;
        return -1;
    }
    if ((apr_int64_t)want > x->left) want = (apr_size_t)x->left;
    if (!want) return 0;
    if ((x->read_error = apr_file_read_full(x->f, buf, want, &want)) != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, x->read_error, "GMCP0304",
                  "cannot read %s while relaying it to the Files API", x->path);
        return -1;
    }
    x->left -= (apr_int64_t)want;
    return (apr_ssize_t)want;
}

static apr_status_t on_body(void *ud, int status, const char *data, apr_size_t len)
{
    up_xfer *x = ud;
    (void)status;
    return gmcp_buf_append(&x->body, data, len, 1024 * 1024); /* a File is small */
}

const char *gmcp_files_header_value(apr_pool_t *p, const char *line, size_t len, const char *name)
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

static apr_status_t on_head(void *ud, const char *line, apr_size_t len)
{
    up_xfer *x = ud;
    const char *v;
    if ((v = gmcp_files_header_value(x->g->pool, line, len, "X-Goog-Upload-URL")))
        x->upload_url = v;
    if ((v = gmcp_files_header_value(x->g->pool, line, len, "X-Goog-Upload-Status"))) x->status = v;
    if ((v = gmcp_files_header_value(x->g->pool, line, len, "X-Goog-Upload-Size-Received")))
        x->received = apr_atoi64(v);
    return APR_SUCCESS;
}

static apr_status_t on_xfer(void *ud)
{
    up_xfer *x = ud;
    if (x->g->cancelled && x->g->cancelled(x->g->baton)) {
        x->aborted = 1;
        return GMCP_ECANCELLED;
    }
    if (apr_time_now() >= x->g->deadline) {
        x->aborted = 1;
        return APR_TIMEUP;
    }
    return APR_SUCCESS;
}

/* The header lines of a `command` request; `start` also announces the file, the others
 * say at which offset their bytes go. */
static const char *const *upload_headers(const relay *r, const char *command, apr_int64_t offset)
{
    apr_pool_t *p = r->g->pool;
    apr_array_header_t *h = apr_array_make(p, 8, sizeof(const char *));
    APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(p, "x-goog-api-key: ", r->g->api_key, NULL);
    APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(p, "X-Goog-Upload-Command: ", command, NULL);
    APR_ARRAY_PUSH(h, const char *) = "Expect:";
    if (!strcmp(command, "start")) {
        APR_ARRAY_PUSH(h, const char *) = "X-Goog-Upload-Protocol: resumable";
        APR_ARRAY_PUSH(h, const char *) = "Content-Type: application/json";
        APR_ARRAY_PUSH(h, const char *) = apr_psprintf(p,
                                                       "X-Goog-Upload-Header-Content-"
                                                       "Length: %" APR_INT64_T_FMT,
                                                       r->size);
        APR_ARRAY_PUSH(h, const char *) =
            apr_pstrcat(p, "X-Goog-Upload-Header-Content-Type: ", r->mime, NULL);
    }
    else {
        APR_ARRAY_PUSH(h, const char *) = "Content-Type: application/octet-stream";
        APR_ARRAY_PUSH(h, const char *) =
            apr_psprintf(p, "X-Goog-Upload-Offset: %" APR_INT64_T_FMT, offset);
    }
    APR_ARRAY_PUSH(h, const char *) = NULL;
    return (const char *const *)h->elts;
}

/* Gemini refused the request: its status and message; 429 and 5xx may pass. */
static void refused(gmcp_gemini *g, const up_xfer *x, int status, gmcp_gemini_error *err)
{
    json_t *j = x->body.len ? json_loadb(x->body.buf, x->body.len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    err->status =
        gmcp_json_str(e, "status") ? apr_pstrdup(g->pool, gmcp_json_str(e, "status")) : NULL;
    err->message = gmcp_json_str(e, "message")
        ? apr_pstrdup(g->pool, gmcp_json_str(e, "message"))
        : apr_psprintf(g->pool, "HTTP %d from Gemini", status);
    err->retryable = status == 429 || status >= 500;
    json_decref(j);
}

/* What a request came to (rv: gmcp_http_perform's): APR_SUCCESS with *out (the JSON
 * answer, when one is wanted); otherwise r->err filled and GMCP_ECANCELLED, the spool
 * file's read error, APR_TIMEUP or GMCP_EUPSTREAM. */
static apr_status_t request_outcome(relay *r, apr_status_t rv, const gmcp_http_response *res,
                                    json_t **out)
{
    gmcp_gemini *g = r->g;
    gmcp_gemini_error *err = r->err;
    up_xfer *x = &r->x;
    err->http_status = res->status;
    if (x->aborted && g->cancelled && g->cancelled(g->baton)) {
        err->cancelled = 1;
        err->status = "CANCELLED";
        err->message = "the request was cancelled";
        return GMCP_ECANCELLED;
    }
    if (x->read_error) {
        err->http_status = 0;
        err->status = "INTERNAL";
        err->message = "cannot read the uploaded file from the spool";
        return x->read_error;
    }
    if (rv != APR_SUCCESS) {
        err->http_status = 0;
        err->message = apr_psprintf(g->pool, "cannot reach Gemini: %s",
                                    x->aborted ? "no time left" : res->error);
        err->retryable = !x->aborted;
        return x->aborted || APR_STATUS_IS_TIMEUP(rv) ? APR_TIMEUP : GMCP_EUPSTREAM;
    }
    if (res->status < 200 || res->status >= 300) {
        refused(g, x, res->status, err);
        return GMCP_EUPSTREAM;
    }
    if (out && x->body.len) *out = json_loadb(x->body.buf, x->body.len, 0, NULL);
    return APR_SUCCESS;
}

/* One request of the protocol to r->url: `command` "start" sends json_body, the others
 * `len` bytes of f (from its current position; none without f). As request_outcome. */
static apr_status_t request(relay *r, const char *command, const char *json_body, apr_file_t *f,
                            apr_int64_t offset, apr_int64_t len, json_t **out)
{
    gmcp_gemini *g = r->g;
    up_xfer *x = &r->x;
    apr_interval_time_t t = gmcp_gemini_attempt_time(g);
    gmcp_http_request req;
    gmcp_http_response res;
    apr_status_t rv;
    memset(r->err, 0, sizeof(*r->err));
    memset(x, 0, sizeof(*x));
    x->g = g;
    x->f = f;
    x->path = r->path;
    x->left = len;
    x->received = -1;
    if (out) *out = NULL;
    if (t <= 0) {
        r->err->status = "DEADLINE_EXCEEDED";
        r->err->message = "no time left for the upload to Gemini";
        return APR_TIMEUP;
    }
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = r->url;
    req.headers = upload_headers(r, command, offset);
    req.body = json_body;
    req.read = f ? on_read : NULL;
    req.body_len = len;
    req.connect_timeout = g->connect_timeout;
    req.timeout = t;
    req.on_body = on_body;
    req.on_header = on_head;
    req.on_progress = on_xfer;
    req.baton = x;
    rv = request_outcome(r, gmcp_http_perform(g->http, &req, &res), &res, out);
    free(x->body.buf);
    x->body.buf = NULL;
    return rv;
}

/* Wait before a retry: APR_SUCCESS; APR_TIMEUP (at once) when that would pass the call's
 * deadline; GMCP_ECANCELLED. */
static apr_status_t wait_a_bit(gmcp_gemini *g, apr_interval_time_t d)
{
    if (apr_time_now() + d >= g->deadline) return APR_TIMEUP;
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
        gmcp_elog(GMCP_ELOG_MARK,
                  err->http_status >= 500 || err->http_status == 429 ? GMCP_ELOG_ERR
                                                                     : GMCP_ELOG_WARN,
                  0, "GMCP0412", "Files API %s POST %s answered HTTP %d%s%s%s: %s", command,
                  url_path(g->pool, url), err->http_status, err->status ? " " : "",
                  err->status ? err->status : "", retried, err->message);
    else
        gmcp_elog(GMCP_ELOG_MARK,
                  err->status && !strcmp(err->status, "DEADLINE_EXCEEDED") ? GMCP_ELOG_WARN
                                                                           : GMCP_ELOG_ERR,
                  0, "GMCP0411", "Files API %s POST %s failed%s: %s", command,
                  url_path(g->pool, url), retried, err->message);
}

/* ---- the relay, step by step ---------------------------------------------------------- */

/* Step 1: the metadata in, the upload URL out; retried with backoff. A failure is the
 * last request's (a wait cut short keeps it). */
static apr_status_t relay_start(relay *r)
{
    json_t *meta = json_pack("{s:{s:s, s:s, s:s}}", "file", "mimeType", r->mime, "displayName",
                             r->display_name, "sizeBytes",
                             apr_psprintf(r->g->pool, "%" APR_INT64_T_FMT, r->size));
    const char *body = gmcp_json_dump(r->g->pool, meta);
    apr_status_t rv;
    int tries = 0;
    json_decref(meta);
    for (;;) {
        rv = request(r, "start", body, NULL, 0, 0, NULL);
        if (rv == APR_SUCCESS || !r->err->retryable || tries++ >= r->g->max_retries
            || wait_a_bit(r->g, apr_time_from_msec(500) << tries) != APR_SUCCESS)
            break;
    }
    if (rv != APR_SUCCESS) {
        upstream_failed(r->g, "start", r->url, r->err, r->err->retryable ? tries : tries + 1);
        return rv;
    }
    if (!r->x.upload_url) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413",
                  "Files API start POST %s "
                  "answered HTTP %d without an X-Goog-Upload-URL",
                  url_path(r->g->pool, r->url), r->err->http_status);
        r->err->message = "Gemini did not give an upload URL";
        return GMCP_EUPSTREAM;
    }
    r->url = r->x.upload_url;
    return APR_SUCCESS;
}

/* The spool file at r->offset: APR_SUCCESS, or the seek's error (logged). */
static apr_status_t seek_offset(relay *r)
{
    apr_off_t at = (apr_off_t)r->offset;
    apr_status_t rv = apr_file_seek(r->f, APR_SET, &at);
    if (rv == APR_SUCCESS) return APR_SUCCESS;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0306",
              "cannot seek to %" APR_INT64_T_FMT " in %s to relay it to the Files API", r->offset,
              r->path);
    memset(r->err, 0, sizeof(*r->err));
    r->err->message = "cannot read the uploaded file from the spool";
    return rv;
}

/* After a failed upload of `len` bytes: ask how much arrived, and go on from there.
 * APR_SUCCESS to go on; the query's failure, or GMCP_EUPSTREAM when the upload cannot
 * resume. */
static apr_status_t relay_resume(relay *r, apr_int64_t len)
{
    apr_status_t rv;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_INFO, 0, "GMCP0416",
              "Files API upload of %" APR_INT64_T_FMT " bytes at offset %" APR_INT64_T_FMT
              " to %s failed (%s): "
              "asking how much arrived",
              len, r->offset, url_path(r->g->pool, r->url), r->err->message);
    if ((rv = request(r, "query", NULL, NULL, 0, 0, NULL)) != APR_SUCCESS) {
        upstream_failed(r->g, "query", r->url, r->err, 1);
        return rv;
    }
    if (r->x.received < 0 || r->x.received > r->size
        || (r->x.status && strcmp(r->x.status, "active"))) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413",
                  "Files API query POST %s: "
                  "upload status %s, %" APR_INT64_T_FMT " of %" APR_INT64_T_FMT " bytes "
                  "received: cannot resume",
                  url_path(r->g->pool, r->url), r->x.status ? r->x.status : "(none)", r->x.received,
                  r->size);
        if (!r->err->message) r->err->message = "Gemini cannot resume the upload";
        return GMCP_EUPSTREAM;
    }
    r->offset = r->x.received;
    (*r->resumes)++;
    return APR_SUCCESS;
}

/* The chunk at r->offset, the last one with finalize (its answer in r->resp):
 * APR_INCOMPLETE to go on with the next, APR_SUCCESS when finalized, else the failure.
 * A transient failure is retried from what arrived. */
static apr_status_t relay_chunk(relay *r)
{
    apr_int64_t len = r->size - r->offset < r->chunk ? r->size - r->offset : r->chunk;
    int last = r->offset + len >= r->size;
    const char *command = last ? "upload, finalize" : "upload";
    apr_status_t rv;
    if ((rv = seek_offset(r)) != APR_SUCCESS) return rv;
    rv = request(r, command, NULL, r->f, r->offset, len, last ? &r->resp : NULL);
    if (rv == APR_SUCCESS) {
        r->offset += len;
        r->tries = 0;
        if (r->progress) r->progress(r->baton, r->offset, r->size, "relaying");
        return last ? APR_SUCCESS : APR_INCOMPLETE;
    }
    if (!r->err->retryable || r->tries++ >= r->g->max_retries
        || wait_a_bit(r->g, apr_time_from_msec(250) << r->tries) != APR_SUCCESS) {
        upstream_failed(r->g, command, r->url, r->err, r->err->retryable ? r->tries : r->tries + 1);
        return rv;
    }
    rv = relay_resume(r, len);
    return rv == APR_SUCCESS ? APR_INCOMPLETE : rv;
}

/* Step 2: the file's bytes, chunk by chunk, until Gemini answers finalize. */
static apr_status_t relay_send(relay *r)
{
    apr_status_t rv =
        apr_file_open(&r->f, r->path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, r->g->pool);
    if (rv != APR_SUCCESS) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0302",
                  "cannot open %s to relay "
                  "it to the Files API",
                  r->path);
        r->err->message = "cannot read the uploaded file from the spool";
        return rv;
    }
    do {
        rv = relay_chunk(r);
    } while (rv == APR_INCOMPLETE);
    apr_file_close(r->f);
    r->f = NULL;
    if (!r->resp) {
        if (!r->err->message) {
            gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413",
                      "Files API finalize POST "
                      "%s answered HTTP %d without a body",
                      url_path(r->g->pool, r->url), r->err->http_status);
            r->err->message = "Gemini did not finalize the upload";
        }
        if (rv == APR_SUCCESS) rv = GMCP_EUPSTREAM;
    }
    return rv;
}

/* Step 3: the File of finalize's answer, once Gemini has processed it (ACTIVE). */
static apr_status_t relay_activate(relay *r, json_t **file)
{
    json_t *fo = json_object_get(r->resp, "file");
    const char *name = gmcp_json_str(fo, "name");
    const char *state = gmcp_json_str(fo, "state");
    if (!name) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0413",
                  "Files API finalize POST "
                  "%s: the answer has no file.name",
                  url_path(r->g->pool, r->url));
        r->err->message = "Gemini's finalize answer has no file";
        return GMCP_EUPSTREAM;
    }
    if (r->progress) r->progress(r->baton, r->size, r->size, "processing");
    if (state && !strcmp(state, "ACTIVE")) {
        *file = json_incref(fo);
        return APR_SUCCESS;
    }
    return gmcp_files_wait_active(r->g, apr_pstrdup(r->g->pool, name), file, r->err);
}

apr_status_t gmcp_files_relay(gmcp_gemini *g, const char *path, apr_int64_t size, const char *mime,
                              const char *display_name, apr_int64_t chunk,
                              gmcp_files_progress_fn progress, void *baton, json_t **file,
                              int *resumes, gmcp_gemini_error *err)
{
    relay r;
    apr_status_t rv;
    *file = NULL;
    *resumes = 0;
    memset(&r, 0, sizeof(r));
    r.g = g;
    r.path = path;
    r.size = size;
    r.chunk = chunk > 0 ? chunk : GMCP_FILES_CHUNK;
    r.mime = mime;
    r.display_name = display_name;
    r.progress = progress;
    r.baton = baton;
    r.url = apr_pstrcat(g->pool, g->base_url, "/upload/v1beta/files", NULL);
    r.resumes = resumes;
    r.err = err;

    /* 1. start: the metadata in, the upload URL out */
    rv = relay_start(&r);
    /* 2. the bytes, chunk by chunk, resuming after transient failures, then finalize */
    if (rv == APR_SUCCESS) rv = relay_send(&r);
    /* 3. the File, once ACTIVE */
    if (rv == APR_SUCCESS) rv = relay_activate(&r, file);
    json_decref(r.resp);
    return rv;
}

/* One files.get of wait_active: APR_INCOMPLETE while the file is not ACTIVE yet (*state
 * says what it is), APR_SUCCESS with *file when it is; FAILED or a failed call as
 * gmcp_files_wait_active. */
static apr_status_t poll_file(gmcp_gemini *g, const char *name, json_t **file, const char **state,
                              gmcp_gemini_error *err)
{
    json_t *f = NULL;
    apr_status_t rv =
        gmcp_gemini_call(g, "GET", apr_pstrcat(g->pool, "/v1beta/", name, NULL), NULL, &f, err);
    if (rv != APR_SUCCESS) goto leave;
    *state = gmcp_json_str(f, "state");
    *state = *state ? apr_pstrdup(g->pool, *state) : NULL; /* outlives f */
    if (*state && !strcmp(*state, "ACTIVE")) {
        *file = f;
        f = NULL;
    }
    else if (*state && !strcmp(*state, "FAILED")) {
        const char *m = gmcp_json_str(json_object_get(f, "error"), "message");
        err->message =
            apr_psprintf(g->pool, "Gemini could not process the file: %s", m ? m : "state FAILED");
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0414", "Files API: %s is FAILED: %s", name,
                  m ? m : "(no message)");
        rv = GMCP_EUPSTREAM;
    }
    else {
        rv = APR_INCOMPLETE;
    }
leave:
    json_decref(f);
    return rv;
}

apr_status_t gmcp_files_wait_active(gmcp_gemini *g, const char *name, json_t **file,
                                    gmcp_gemini_error *err)
{
    apr_interval_time_t every = apr_time_from_msec(100);
    apr_status_t rv;
    const char *state = NULL;
    while ((rv = poll_file(g, name, file, &state, err)) == APR_INCOMPLETE) {
        if ((rv = wait_a_bit(g, every)) != APR_SUCCESS) {
            if (rv != GMCP_ECANCELLED)
                gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_WARN, 0, "GMCP0414",
                          "Files API: %s was "
                          "still %s when the call's time ran out",
                          name, state ? state : "(no state)");
            else
                err->cancelled = 1;
            err->message = "the file was still PROCESSING when the time ran out";
            return rv;
        }
        if (every < apr_time_from_sec(2)) every *= 2;
    }
    return rv;
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
