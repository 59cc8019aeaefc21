/* mod_gemini_mcp_http.c — the Streamable HTTP transport (SetHandler gemini-mcp).
 *
 * POST carries one JSON-RPC message; requests are answered as application/json, or as
 * text/event-stream when the call will notify or ask the client. Every SSE event is
 * stored in SQL before it is written, so a client that lost the stream resumes with
 * GET + Last-Event-ID on any child process. Database handles are taken with
 * ap_dbd_open for short sections only, never across a tool call or a wait. Steps that
 * may answer return OK to go on and DONE once answered (mod_gemini_mcp_respond.h). */
#include "mod_gemini_mcp_http.h"
#include "mod_gemini_mcp_access.h"
#include "mod_gemini_mcp_config.h"
#include "mod_gemini_mcp_db.h"
#include "mod_gemini_mcp_respond.h"
#include "mod_gemini_mcp_tasks.h"
#include "gmcp_chat.h"
#include "gmcp_lease.h"
#include "gmcp_session_cache.h"
#include "gmcp_stateless.h"
#include "gmcp_util.h"
#include "gmcp_wire.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/socket.h>

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <apr_strings.h>
#include <apr_atomic.h>

#define HDR_SESSION "Mcp-Session-Id"
#define HDR_VERSION "MCP-Protocol-Version"
#define CANCEL_CHECK_EVERY apr_time_from_msec(200)
#define STREAM_MAX_TIME apr_time_from_sec(300) /* resumed and listen streams */
/* How often a follower checks that a quiet stream's process still runs, and how long
 * past the tool timeout a stream is kept waiting for when its process cannot be seen. */
#define ORPHAN_CHECK_EVERY apr_time_from_sec(1)
#define ORPHAN_MARGIN_SEC 60
#define HEARTBEAT_EVERY apr_time_from_sec(15)
#define SWEEP_EVERY_SEC 60
#define LOG_NONE 100 /* above every level: no notifications/message */

typedef struct {
    request_rec *r;
    const gmcp_dir_conf *dc;
    const gmcp_srv_conf *sc;
    const gmcp_server *srv;
    gmcp_dbh *dbh;
    gmcp_session session;
    int have_session;
    /* the call being served */
    gmcp_call call;
    const char *request_key; /* JSON text of the request id */
    int sse, detached, cancelled;
    const char *stream_id;
    apr_int64_t seq;
    apr_time_t next_cancel_check;
    int log_min;
    json_t *caps;
    gmcp_access *acc;
} gmcp_req;

/* ---- database sections ---------------------------------------------------------------- */

static int db_get(gmcp_req *x, const char **why) { return gmcp_dbh_open(x->dbh, why); }

static void db_put(gmcp_req *x) { gmcp_dbh_close(x->dbh); }

/* The core logged the failing statement once (GMCP02xx); this adds, for debugging,
 * what the request was doing. */
static void db_complain(gmcp_req *x, const char *what)
{
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, x->r,
                  GMCP_LOGNO(0112) "gemini_mcp: database error while %s: %s", what,
                  x->dbh->dbd ? gmcp_db_error(&x->dbh->db, -1) : "no connection");
}

/* ---- request body -------------------------------------------------------------------- */

static int is_json_content_type(request_rec *r)
{
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    size_t n = strlen("application/json");
    return ct && !strncasecmp(ct, "application/json", n)
        && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Read the whole body, refusing more than `limit` bytes. Returns OK or an HTTP status. */
static int read_body(request_rec *r, apr_off_t limit, char **data, apr_size_t *len)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_bucket_brigade *all = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_off_t total = 0;
    int seen_eos = 0;
    apr_uint64_t declared;

    if (cl && gmcp_parse_u64(cl, &declared) == 0 && declared > (apr_uint64_t)limit)
        return HTTP_REQUEST_ENTITY_TOO_LARGE;
    while (!seen_eos) {
        apr_bucket *b;
        apr_status_t rv =
            ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ, 8192);
        if (rv != APR_SUCCESS) return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
            if (APR_BUCKET_IS_EOS(b)) {
                seen_eos = 1;
                break;
            }
            if (b->length != (apr_size_t)-1) total += (apr_off_t)b->length;
        }
        if (total > limit) return HTTP_REQUEST_ENTITY_TOO_LARGE;
        rv = ap_save_brigade(NULL, &all, &bb, r->pool);
        if (rv != APR_SUCCESS) return HTTP_INTERNAL_SERVER_ERROR;
        apr_brigade_cleanup(bb);
    }
    if (apr_brigade_pflatten(all, data, len, r->pool) != APR_SUCCESS)
        return HTTP_INTERNAL_SERVER_ERROR;
    return OK;
}

/* ---- SSE ---------------------------------------------------------------------------- */

/* Store one message of the current stream, then write it unless detached. */
static int sse_send_text(gmcp_req *x, const char *text)
{
    const char *why;
    apr_int64_t seq = ++x->seq;
    int rv = 0;
    if (x->call.stateless) /* no resumption in 2026-07-28: nothing to store */
        return gmcp_sse_write(x->r, apr_psprintf(x->r->pool, "event: message\ndata: %s\n\n", text));
    if (db_get(x, &why)) return -1;
    if (gmcp_event_append(&x->dbh->db, x->stream_id, x->session.id, seq, text)) {
        db_complain(x, "storing an SSE event");
        rv = -1;
    }
    db_put(x);
    if (!rv && !x->detached)
        gmcp_sse_write(x->r,
                       apr_psprintf(x->r->pool,
                                    "id: %s.%" APR_INT64_T_FMT "\nevent: message\ndata: %s\n\n",
                                    x->stream_id, seq, text));
    return rv;
}

static int sse_send(gmcp_req *x, json_t *msg /* stolen */)
{
    const char *text = gmcp_json_dump(x->r->pool, msg);
    json_decref(msg);
    return sse_send_text(x, text);
}

/* ---- the call's operations ------------------------------------------------------------ */

/* Has the client closed the connection? Peeks at the socket without consuming
 * anything, so a closed stream is noticed without writing to it. */
static int client_gone(conn_rec *c)
{
    apr_socket_t *sock = ap_get_conn_socket(c);
    apr_os_sock_t fd;
    char b;
    ssize_t n;
    if (c->aborted) return 1;
    if (!sock || apr_os_sock_get(&fd, sock) != APR_SUCCESS) return 0;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static int op_cancelled(gmcp_call *c)
{
    gmcp_req *x = c->transport;
    apr_time_t now = apr_time_now();
    const char *why;
    int cancelled = 0;
    if (x->cancelled) return 1;
    /* 2026-07-28: closing the response stream cancels the request. */
    if (c->stateless) {
        if (now >= x->next_cancel_check) {
            x->next_cancel_check = now + CANCEL_CHECK_EVERY;
            x->cancelled = client_gone(x->r->connection);
        }
        return x->cancelled;
    }
    if (now < x->next_cancel_check) return 0;
    x->next_cancel_check = now + CANCEL_CHECK_EVERY;
    if (db_get(x, &why)) return 0;
    if (gmcp_cancel_check(&x->dbh->db, x->session.id, x->request_key, &cancelled) == 0 && cancelled)
        x->cancelled = 1;
    db_put(x);
    return x->cancelled;
}

static apr_status_t op_progress(gmcp_call *c, double progress, double total, const char *message)
{
    gmcp_req *x = c->transport;
    json_t *params;
    if (!c->progress_token || !x->sse) return APR_SUCCESS;
    params = json_pack("{s:O, s:f}", "progressToken", c->progress_token, "progress", progress);
    if (total > 0) json_object_set_new(params, "total", json_real(total));
    if (message) json_object_set_new(params, "message", json_string(message));
    return sse_send(x, gmcp_rpc_notification("notifications/progress", params)) ? APR_ECONNABORTED
                                                                                : APR_SUCCESS;
}

static apr_status_t op_log(gmcp_call *c, gmcp_log_level level, const char *logger, json_t *data)
{
    gmcp_req *x = c->transport;
    json_t *params;
    if (!x->sse || (int)level < x->log_min) {
        json_decref(data);
        return APR_SUCCESS;
    }
    params = json_pack("{s:s, s:o}", "level", gmcp_log_level_name(level), "data",
                       data ? data : json_null());
    if (logger) json_object_set_new(params, "logger", json_string(logger));
    return sse_send(x, gmcp_rpc_notification("notifications/message", params)) ? APR_ECONNABORTED
                                                                               : APR_SUCCESS;
}

/* Why this call cannot send a request to the client, or NULL. */
static const char *ask_refused(gmcp_call *c, const char *method)
{
    gmcp_req *x = c->transport;
    const char *cap = gmcp_capability_for(method);
    if (c->stateless)
        return "protocol revision " GMCP_STATELESS_VERSION " has no server-to-client "
               "requests (the tool must use input requests)";
    if (!x->sse) return "this request has no stream to send a request to the client";
    if (cap && !json_object_get(x->caps, cap))
        return apr_psprintf(x->r->pool, "the client did not declare the '%s' capability", cap);
    return NULL;
}

/* The answer arrives as a separate POST, possibly in another process: wait for it in
 * SQL, polling quickly at first, then every 100 ms. The last lookup's result, with
 * *resp once answered. */
static int await_answer(gmcp_call *c, const char *key, apr_time_t deadline, const char **resp)
{
    gmcp_req *x = c->transport;
    apr_interval_time_t wait = apr_time_from_msec(5);
    const char *why;
    apr_status_t rv;
    for (;;) {
        apr_sleep(wait);
        if (wait < apr_time_from_msec(100)) wait *= 2;
        if (db_get(x, &why)) continue;
        rv = gmcp_pending_get(&x->dbh->db, x->session.id, key, resp);
        if (rv != APR_SUCCESS || *resp || apr_time_now() > deadline || op_cancelled(c)) {
            gmcp_pending_delete(&x->dbh->db, x->session.id, key);
            db_put(x);
            return rv;
        }
        db_put(x);
    }
}

/* The client's answer: APR_SUCCESS with its result, or GMCP_EUPSTREAM with its error. */
static apr_status_t read_answer(gmcp_req *x, const char *resp, json_t **result, const char **errmsg)
{
    json_t *j = json_loads(resp, 0, NULL);
    json_t *res = j ? json_object_get(j, "result") : NULL;
    if (res) {
        *result = json_incref(res);
        json_decref(j);
        return APR_SUCCESS;
    }
    *errmsg = apr_psprintf(x->r->pool, "the client answered with an error: %s",
                           j ? (gmcp_json_str(gmcp_json_obj(j, "error"), "message")
                                    ? gmcp_json_str(gmcp_json_obj(j, "error"), "message")
                                    : "unknown")
                             : "unreadable");
    json_decref(j);
    return GMCP_EUPSTREAM;
}

static apr_status_t op_ask(gmcp_call *c, const char *method, json_t *params, json_t **result,
                           const char **errmsg)
{
    gmcp_req *x = c->transport;
    const char *refused = ask_refused(c, method), *id, *key, *why, *resp = NULL;
    apr_time_t deadline = apr_time_now() + gmcp_conf_client_timeout(x->dc);
    apr_status_t rv;

    *result = NULL;
    if (refused) {
        json_decref(params);
        *errmsg = refused;
        return APR_ENOTIMPL;
    }
    id = apr_pstrcat(x->r->pool, "gmcp-", gmcp_random_id(x->r->pool, 12), NULL);
    /* The id is base64url, so its JSON text needs no escaping. */
    key = apr_psprintf(x->r->pool, "\"%s\"", id);
    if (db_get(x, &why)) {
        json_decref(params);
        *errmsg = why;
        return GMCP_EDB;
    }
    rv = gmcp_pending_create(&x->dbh->db, x->session.id, key);
    db_put(x);
    if (rv) {
        json_decref(params);
        *errmsg = "the session store is unavailable";
        return GMCP_EDB;
    }
    if (sse_send(x, gmcp_rpc_request(json_string(id), method, params))) {
        *errmsg = "could not send the request to the client";
        return APR_ECONNABORTED;
    }
    rv = await_answer(c, key, deadline, &resp);
    if (resp) return read_answer(x, resp, result, errmsg);
    *errmsg = x->cancelled ? "the request was cancelled"
        : rv == GMCP_EDB   ? "the session store is unavailable"
                           : "timed out waiting for the client's answer";
    return x->cancelled ? GMCP_ECANCELLED : rv == GMCP_EDB ? GMCP_EDB : APR_TIMEUP;
}

static apr_status_t op_detach(gmcp_call *c)
{
    gmcp_req *x = c->transport;
    apr_bucket_brigade *bb;
    /* Without resumption (stateless) the result simply stays on this stream. */
    if (!x->sse || x->detached || c->stateless) return APR_SUCCESS;
    x->detached = 1;
    bb = apr_brigade_create(x->r->pool, x->r->connection->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(x->r->connection->bucket_alloc));
    return ap_pass_brigade(x->r->output_filters, bb);
}

static int op_input(gmcp_call *c, const char *key, const char *method, json_t *params,
                    json_t **response)
{
    gmcp_req *x = c->transport;
    const char *cap = gmcp_capability_for(method), *err = NULL;
    if (c->stateless) return gmcp_mrtr_input(c, key, method, params, response);
    *response = NULL;
    if (cap && !json_object_get(x->caps, cap)) {
        json_decref(params);
        return GMCP_INPUT_UNSUPPORTED;
    }
    if (op_ask(c, method, params, response, &err)) {
        c->error_message = err;
        return GMCP_INPUT_FAILED;
    }
    return GMCP_INPUT_OK;
}

static json_t *op_input_required(gmcp_call *c, json_t *state)
{
    gmcp_req *x = c->transport;
    if (!c->stateless) {
        /* With a session, gmcp_input() never answers NEEDED: nothing to return. */
        json_decref(state);
        return gmcp_text_result(
            "input_required is only available on protocol revision " GMCP_STATELESS_VERSION, 1);
    }
    return gmcp_mrtr_result(
        c, state, x->srv->state_key, x->srv->state_key_len,
        apr_pstrcat(x->r->pool, c->name ? c->name : "", "\n", c->principal, NULL));
}

static void *op_db_open(gmcp_call *c, const char **why)
{
    gmcp_req *x = c->transport;
    return db_get(x, why) ? NULL : &x->dbh->db;
}

static void op_db_close(gmcp_call *c) { db_put(c->transport); }

static void op_gemini_observed(gmcp_call *c, int status, apr_interval_time_t latency, int retries,
                               apr_int64_t prompt, apr_int64_t output)
{
    gmcp_req *x = c->transport;
    gmcp_access_gemini_observed(x->r, status, latency, retries, prompt, output);
}

static json_t *op_usage_report(gmcp_call *c, const char **why)
{
    gmcp_req *x = c->transport;
    return gmcp_access_usage_report(x->r, why);
}

static const gmcp_call_ops CALL_OPS = {
    op_progress,       op_log,     op_ask,      op_cancelled,       op_detach,      op_input,
    op_input_required, op_db_open, op_db_close, op_gemini_observed, op_usage_report};

/* ---- POST ---------------------------------------------------------------------------- */

/* This process's copy of recently loaded sessions (gmcp_session_cache.h). */
static gmcp_session_cache *g_sessions;

void gmcp_mcp_child_init(apr_pool_t *pchild) { g_sessions = gmcp_session_cache_create(pchild); }

/* The session from this process's cache, else from the database (then cached). */
static int find_session(gmcp_req *x, const char *sid, apr_int64_t idle, json_t *id)
{
    const char *why;
    apr_time_t read_began;
    int rv;
    if (gmcp_session_cache_get(g_sessions, sid, x->call.principal, idle, GMCP_SESSION_TOUCH_EVERY,
                               x->r->pool, &x->session))
        return OK;
    if (db_get(x, &why)) return gmcp_send_unavailable(x->r, id, why);
    read_began = apr_time_now();
    rv = gmcp_session_load(&x->dbh->db, sid, x->call.principal, idle, &x->session);
    if (rv == GMCP_EDB) {
        db_complain(x, "loading a session");
        return gmcp_send_unavailable(x->r, id, "the session store is unavailable");
    }
    if (rv == APR_ENOENT) {
        gmcp_session_cache_drop(g_sessions, sid); /* a copy being refreshed, say */
        return gmcp_reject(x->r, HTTP_NOT_FOUND, id, GMCP_SERVER_ERROR,
                           "Session not found: it expired or was terminated; initialize again");
    }
    gmcp_session_cache_put(g_sessions, &x->session, read_began);
    return OK;
}

/* After a change of the session row committed: forget this process's copy, and answer
 * only once no process of any node can still serve one read before the change. */
static void session_changed(gmcp_req *x)
{
    gmcp_session_cache_drop(g_sessions, x->session.id);
    apr_sleep(GMCP_SESSION_CACHE_TTL);
}

static int load_session(gmcp_req *x, json_t *id)
{
    const char *sid = apr_table_get(x->r->headers_in, HDR_SESSION);
    int st;
    if (!sid)
        return gmcp_reject(x->r, HTTP_BAD_REQUEST, id, GMCP_SERVER_ERROR,
                           "Bad Request: Mcp-Session-Id header is required");
    if ((st = find_session(x, sid, gmcp_conf_session_idle(x->sc), id)) != OK) return st;
    x->have_session = 1;
    x->call.session_id = x->session.id;
    x->caps = json_loads(x->session.client_caps, 0, NULL);
    if (!x->caps) x->caps = json_object();
    x->call.client_caps = x->caps;
    x->log_min = *x->session.log_level ? gmcp_log_level_parse(x->session.log_level) : GMCP_LOG_INFO;
    return OK;
}

static apr_status_t json_release(void *j)
{
    json_decref(j);
    return APR_SUCCESS;
}

static int check_version_header(gmcp_req *x, json_t *id)
{
    const char *v = apr_table_get(x->r->headers_in, HDR_VERSION);
    /* Any version we speak is accepted: clients (and the conformance suite) send an
     * older supported one on some raw requests. */
    if (v && !gmcp_version_supported(v))
        return gmcp_reject(x->r, HTTP_BAD_REQUEST, id, GMCP_SERVER_ERROR,
                           apr_psprintf(x->r->pool,
                                        "Bad Request: unsupported "
                                        "MCP-Protocol-Version '%s' (supported: %s)",
                                        v, gmcp_supported_versions()));
    return OK;
}

/* What the core's dispatch needs of this request. */
static void rpc_ctx_init(gmcp_req *x, gmcp_rpc_ctx *rc)
{
    memset(rc, 0, sizeof(*rc));
    rc->pool = x->r->pool;
    rc->srv = x->srv;
    rc->db = &x->dbh->db;
    rc->session = x->have_session ? &x->session : NULL;
    rc->principal = x->call.principal;
    rc->call = &x->call;
    rc->stateless = x->call.stateless;
}

/* Answer on a stream. A stateless one stores nothing; any other gets its row, and a
 * priming event (an id to resume from and the reconnection delay) where the
 * negotiated revision defines it. OK, or DONE when answered (503). */
static int open_stream(gmcp_req *x, const gmcp_msg *m)
{
    request_rec *r = x->r;
    const char *why;
    if (x->call.stateless) {
        x->sse = 1;
        gmcp_sse_headers(r);
        return OK;
    }
    x->stream_id = gmcp_random_id(r->pool, 16);
    if (db_get(x, &why)) return gmcp_send_unavailable(r, m->id, why);
    if (!x->stream_id
        || gmcp_stream_create(&x->dbh->db, x->stream_id, x->session.id, x->request_key,
                              gmcp_lease_token(r->pool))) {
        db_complain(x, "creating an SSE stream");
        return gmcp_send_unavailable(r, m->id, "the session store is unavailable");
    }
    db_put(x);
    x->sse = 1;
    gmcp_sse_headers(r);
    if (gmcp_version_has_priming(x->session.protocol_version))
        gmcp_sse_write(r,
                       apr_psprintf(r->pool, "id: %s.0\nretry: %d\ndata: \n\n", x->stream_id,
                                    gmcp_conf_sse_retry(x->dc)));
    return OK;
}

/* The answer of a request served without a stream, as application/json. */
static int send_json_answer(gmcp_req *x, const gmcp_msg *m, const gmcp_rpc_ctx *rc,
                            const char *resp)
{
    request_rec *r = x->r;
    if (rc->new_session_id) apr_table_setn(r->headers_out, HDR_SESSION, rc->new_session_id);
    if (!resp)
        return gmcp_send_json(
            r, HTTP_OK, gmcp_rpc_error(m->id, GMCP_REQUEST_CANCELLED, "Request cancelled", NULL));
    if (rc->http_status == HTTP_SERVICE_UNAVAILABLE)
        apr_table_setn(r->err_headers_out, "Retry-After", "5");
    return gmcp_send_json_text(r, rc->http_status ? rc->http_status : HTTP_OK, resp);
}

static int serve_request(gmcp_req *x, gmcp_msg *m)
{
    request_rec *r = x->r;
    gmcp_rpc_ctx rc;
    const char *resp, *why;
    const gmcp_method *meth = gmcp_mcp_method(m->method);
    int st, stream = gmcp_mcp_wants_stream(x->srv, m) && gmcp_http_accepts(r, "text/event-stream");

    rpc_ctx_init(x, &rc);
    x->request_key = gmcp_id_key(r->pool, m->id);
    /* A request answered sooner than this is never looked up for a cancellation: one
     * that races so quick an answer may lose (the specification allows the response),
     * and the hot path stays free of SQL. */
    x->next_cancel_check = apr_time_now() + CANCEL_CHECK_EVERY;
    if (stream) {
        if ((st = open_stream(x, m)) != OK) return st;
    }
    else if (!x->call.stateless && meth && (meth->flags & GMCP_METHOD_STORES)) {
        if (db_get(x, &why)) return gmcp_send_unavailable(r, m->id, why);
    }
    else {
        /* Tool calls may take long: no database handle is held across them; listings
         * and stateless requests need none. */
        db_put(x);
    }

    resp = gmcp_mcp_request_text(&rc, m);
    if (!stream) {
        db_put(x);
        if (meth && (meth->flags & GMCP_METHOD_CHANGES_SESSION) && x->have_session)
            session_changed(x);
        return send_json_answer(x, m, &rc, resp);
    }
    if (resp) sse_send_text(x, resp);
    if (!x->call.stateless && db_get(x, &why) == 0) {
        if (gmcp_stream_finish(&x->dbh->db, x->stream_id)) db_complain(x, "closing an SSE stream");
        db_put(x);
    }
    return DONE;
}

static const char *header_in(void *r, const char *name)
{
    return apr_table_get(((request_rec *)r)->headers_in, name);
}

/* subscriptions/listen: acknowledge, then hold the stream open until the client
 * closes it (or a time limit; the client then listens again). Listings here never
 * change at run time, so no list-changed notification is honoured or sent. */
static int serve_listen(gmcp_req *x, gmcp_msg *m)
{
    request_rec *r = x->r;
    apr_time_t start = apr_time_now(), last_write = start;
    /* The subscription id is the listen request's id, as text. */
    const char *sub =
        json_is_string(m->id) ? json_string_value(m->id) : gmcp_id_key(r->pool, m->id);
    json_t *ack = gmcp_rpc_notification(
        "notifications/subscriptions/acknowledged",
        json_pack("{s:{s:s}, s:{}}", "_meta", GMCP_META_SUBSCRIPTION, sub, "notifications"));
    x->sse = 1;
    gmcp_sse_headers(r);
    sse_send(x, ack);
    while (!client_gone(r->connection) && apr_time_now() - start < STREAM_MAX_TIME) {
        apr_sleep(apr_time_from_msec(250));
        if (apr_time_now() - last_write > HEARTBEAT_EVERY) {
            if (gmcp_sse_write(r, ": keep-alive\n\n")) break;
            last_write = apr_time_now();
        }
    }
    return DONE;
}

/* A request on the 2026-07-28 revision: no session, everything in the request. */
static int handle_stateless(gmcp_req *x, gmcp_msg *m)
{
    request_rec *r = x->r;
    json_t *meta, *err;
    const char *level;
    int status = HTTP_BAD_REQUEST;

    if (m->kind == GMCP_MSG_NOTIFICATION) return gmcp_send_accepted(r);
    if (m->kind == GMCP_MSG_RESPONSE)
        return gmcp_reject(r, HTTP_BAD_REQUEST, NULL, GMCP_INVALID_REQUEST,
                           "Invalid Request: "
                           "protocol revision " GMCP_STATELESS_VERSION " has no server "
                           "requests to answer");
    err = gmcp_stateless_check(r->pool, x->srv->registry, m, header_in, r, &status);
    if (err) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, GMCP_LOGNO(0114) "gemini_mcp: %d: %s", status,
                      gmcp_json_str(json_object_get(err, "error"), "message"));
        return gmcp_send_json(r, status, err);
    }
    meta = gmcp_json_obj(m->params, "_meta");
    x->call.stateless = 1;
    x->caps = json_incref(gmcp_json_obj(meta, GMCP_META_CAPS));
    x->call.client_caps = x->caps;
    /* Logging only when this request asked for it. */
    level = gmcp_json_str(meta, GMCP_META_LOGLEVEL);
    x->log_min = level && gmcp_log_level_parse(level) >= 0 ? gmcp_log_level_parse(level) : LOG_NONE;
    if (!strcmp(m->method, "subscriptions/listen")) return serve_listen(x, m);
    return serve_request(x, m);
}

/* A big JSON body of small values takes some 30 times its size in jansson's nodes,
 * malloc'ed on the request's thread. glibc keeps what is freed in that thread's arena,
 * so after a run of big bodies every worker thread's arena stays at its peak (16
 * threads x 1 MiB bodies: ~500 MB per child, measured) though nothing leaks. After
 * such a request the heap is given back: one thread trims at a time, and whoever
 * finds it busy leaves the work owed, so the last request of a burst is trimmed too. */
#define TRIM_AFTER_BODY (256 * 1024)
static volatile apr_uint32_t trimming, trim_owed;

static apr_status_t trim_heap(void *unused)
{
    (void)unused;
#ifdef __GLIBC__
    apr_atomic_set32(&trim_owed, 1);
    while (apr_atomic_cas32(&trimming, 1, 0) == 0) {
        while (apr_atomic_xchg32(&trim_owed, 0)) malloc_trim(0);
        apr_atomic_set32(&trimming, 0);
        if (!apr_atomic_read32(&trim_owed)) break; /* else owed meanwhile: again */
    }
#endif
    return APR_SUCCESS;
}

/* Accept, Content-Type, then the body (up to GeminiMCPMaxBodySize) as one JSON-RPC
 * message. OK with *m and the body's *len, or DONE when answered. */
static int read_message(gmcp_req *x, gmcp_msg *m, apr_size_t *len)
{
    request_rec *r = x->r;
    char *body = NULL;
    int st;

    *len = 0;
    if (!gmcp_http_accepts(r, "application/json") || !gmcp_http_accepts(r, "text/event-stream"))
        return gmcp_reject(r, HTTP_NOT_ACCEPTABLE, NULL, GMCP_SERVER_ERROR,
                           "Not Acceptable: "
                           "Accept must list application/json and text/event-stream");
    if (!is_json_content_type(r))
        return gmcp_reject(r, HTTP_UNSUPPORTED_MEDIA_TYPE, NULL, GMCP_SERVER_ERROR,
                           "Unsupported Media Type: Content-Type must be application/json");
    st = read_body(r, gmcp_conf_max_body(x->dc), &body, len);
    if (st != OK) {
        r->connection->keepalive = AP_CONN_CLOSE;
        if (st == HTTP_REQUEST_ENTITY_TOO_LARGE)
            return gmcp_reject(r, st, NULL, GMCP_INVALID_REQUEST,
                               apr_psprintf(r->pool,
                                            "Request body too large: the limit is %" APR_OFF_T_FMT
                                            " bytes",
                                            gmcp_conf_max_body(x->dc)));
        return gmcp_reject(r, st, NULL, GMCP_PARSE_ERROR, "Could not read the request body");
    }
    /* Registered first, so it runs after the JSON tree below is freed. */
    if (*len >= TRIM_AFTER_BODY)
        apr_pool_cleanup_register(r->pool, NULL, trim_heap, apr_pool_cleanup_null);
    gmcp_msg_parse(r->pool, body, *len, m);
    apr_pool_cleanup_register(r->pool, m->root, json_release, apr_pool_cleanup_null);
    if (m->kind == GMCP_MSG_INVALID || m->kind == GMCP_MSG_BATCH)
        return gmcp_reject(r, HTTP_BAD_REQUEST, m->id, m->error_code, m->error_msg);
    return OK;
}

/* The message's notes for the log and metrics, then its scopes and limits (OK or
 * DONE when refused). */
static int admit_message(gmcp_req *x, const gmcp_msg *m, apr_size_t len)
{
    request_rec *r = x->r;
    const char *tool = NULL;
    const gmcp_tool_entry *te = NULL;
    int st, spends = 0;

    /* For LogFormat: %{gmcp-method}n and %{gmcp-tool}n */
    apr_table_setn(r->notes, "gmcp-method", m->method ? m->method : "response");
    x->acc->bytes_in = (apr_int64_t)len;
    if (m->method && !strcmp(m->method, "tools/call") && gmcp_json_str(m->params, "name")) {
        tool = gmcp_json_str(m->params, "name");
        apr_table_setn(r->notes, "gmcp-tool", tool);
        te = gmcp_registry_tool(x->srv->registry, tool);
        spends = te && (te->def->flags & GMCP_TOOL_SPENDS_TOKENS);
    }
    /* Metrics label only names that exist; the scope check sees known tools (an
     * unknown one gets the ordinary "unknown tool" error). */
    if ((st = gmcp_access_admit(r, x->acc, m->method ? m->method : "response", te ? tool : NULL,
                                spends, m->id))
        != OK)
        return st;
    if (tool && !te) x->acc->tool = "unknown";
    return OK;
}

static int take_notification(gmcp_req *x, gmcp_msg *m)
{
    request_rec *r = x->r;
    gmcp_rpc_ctx rc;
    const char *why;
    const gmcp_method *meth = gmcp_mcp_method(m->method);
    rpc_ctx_init(x, &rc);
    if (meth && meth->notify && db_get(x, &why)) return gmcp_send_unavailable(r, NULL, why);
    if (gmcp_mcp_notification(&rc, m))
        return gmcp_reject(r, HTTP_BAD_REQUEST, NULL, GMCP_INVALID_PARAMS,
                           apr_psprintf(r->pool, "Invalid params for %s", m->method));
    return gmcp_send_accepted(r);
}

/* The client's answer to a request of ours (sampling, elicitation), for the call
 * waiting on it (op_ask), which may run in another process. */
static int take_response(gmcp_req *x, gmcp_msg *m)
{
    request_rec *r = x->r;
    const char *why;
    int rv;
    if (db_get(x, &why)) return gmcp_send_unavailable(r, NULL, why);
    rv = gmcp_pending_answer(&x->dbh->db, x->session.id, gmcp_id_key(r->pool, m->id),
                             gmcp_json_dump(r->pool, m->root));
    if (rv == GMCP_EDB) {
        db_complain(x, "storing a client response");
        return gmcp_send_unavailable(r, NULL, "the session store is unavailable");
    }
    if (rv == APR_ENOENT)
        return gmcp_reject(r, HTTP_BAD_REQUEST, NULL, GMCP_INVALID_REQUEST,
                           "Invalid Request: no server request is waiting for that id");
    return gmcp_send_accepted(r);
}

static int handle_post(gmcp_req *x)
{
    request_rec *r = x->r;
    gmcp_msg m;
    apr_size_t len;
    int st;

    if ((st = read_message(x, &m, &len)) != OK) return st;
    if ((st = admit_message(x, &m, len)) != OK) return st;
    if (gmcp_is_stateless_request(&m, apr_table_get(r->headers_in, HDR_VERSION),
                                  apr_table_get(r->headers_in, HDR_SESSION) != NULL))
        return handle_stateless(x, &m);
    if (m.kind == GMCP_MSG_REQUEST && !strcmp(m.method, "initialize")) return serve_request(x, &m);
    if ((st = check_version_header(x, m.id)) != OK) return st;
    if ((st = load_session(x, m.id)) != OK) return st;
    if (m.kind == GMCP_MSG_NOTIFICATION) return take_notification(x, &m);
    if (m.kind == GMCP_MSG_RESPONSE) return take_response(x, &m);
    return serve_request(x, &m);
}

/* ---- GET: resume a stream from its Last-Event-ID ---------------------------------------- */

/* GET's checks: a session, and a Last-Event-ID naming one of its streams. OK with
 * the stream and the last event the client has, or DONE when answered. */
static int resumable_stream(gmcp_req *x, const char **stream_id, apr_uint64_t *seq)
{
    request_rec *r = x->r;
    const char *last = apr_table_get(r->headers_in, "Last-Event-ID"), *why;
    gmcp_stream sm;
    int st;

    if (!gmcp_http_accepts(r, "text/event-stream"))
        return gmcp_reject(r, HTTP_NOT_ACCEPTABLE, NULL, GMCP_SERVER_ERROR,
                           "Not Acceptable: Accept must list text/event-stream");
    if ((st = check_version_header(x, NULL)) != OK) return st;
    if ((st = load_session(x, NULL)) != OK) return st;
    if (!last) {
        /* No standalone stream: an idle SSE stream per session would hold an httpd
         * worker thread for nothing; everything we send relates to a request. */
        apr_table_setn(r->headers_out, "Allow", "POST, DELETE");
        return gmcp_reject(r, HTTP_METHOD_NOT_ALLOWED, NULL, GMCP_SERVER_ERROR,
                           "Method Not Allowed: this server has no standalone SSE stream; "
                           "GET only resumes a stream with Last-Event-ID");
    }
    if (gmcp_last_event_id_parse(r->pool, last, stream_id, seq))
        return gmcp_reject(r, HTTP_BAD_REQUEST, NULL, GMCP_SERVER_ERROR,
                           "Bad Request: malformed Last-Event-ID");
    if (db_get(x, &why)) return gmcp_send_unavailable(r, NULL, why);
    st = gmcp_stream_get(&x->dbh->db, *stream_id, &sm);
    if (st == GMCP_EDB) return gmcp_send_unavailable(r, NULL, "the session store is unavailable");
    if (st == APR_ENOENT || strcmp(sm.session_id, x->session.id) != 0)
        return gmcp_reject(r, HTTP_BAD_REQUEST, NULL, GMCP_SERVER_ERROR,
                           "Bad Request: Last-Event-ID names no stream of this session");
    return OK;
}

/* A stream that will never be answered: its process died on this host (killed
 * mid-call), or it is older than any call may run. Given up once, by whichever
 * follower sees it first: the request's error becomes its last event. */
static void give_up_if_orphaned(gmcp_req *x, const char *stream_id, const gmcp_stream *sm)
{
    apr_int64_t limit = apr_time_sec(gmcp_conf_tool_timeout(x->sc)) + ORPHAN_MARGIN_SEC;
    json_t *id, *err;
    const char *why, *text;
    if (!(*sm->holder && gmcp_lease_holder_dead(sm->holder))
        && gmcp_now_sec() - sm->created < limit)
        return;
    id = json_loads(sm->request_key, JSON_DECODE_ANY, NULL);
    err = gmcp_rpc_error(id, GMCP_INTERNAL_ERROR,
                         "The server process answering this request stopped before it "
                         "answered; send the request again",
                         NULL);
    text = gmcp_json_dump(x->r->pool, err);
    json_decref(err);
    json_decref(id);
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, x->r,
                  GMCP_LOGNO(0116) "gemini_mcp: stream %s: its answering process (%s) is gone; "
                                   "ending it with an error for request %s",
                  stream_id, *sm->holder ? sm->holder : "unknown", sm->request_key);
    if (db_get(x, &why)) return;
    if (gmcp_stream_give_up(&x->dbh->db, stream_id, sm->session_id, text))
        db_complain(x, "ending an orphaned SSE stream");
    db_put(x);
}

/* Replay what is stored after `seq`, then follow the stream until its response was
 * sent (or the client left, or STREAM_MAX_TIME since `start`). */
static void follow_stream(gmcp_req *x, const char *stream_id, apr_uint64_t seq, apr_time_t start)
{
    request_rec *r = x->r;
    apr_time_t last_write = start, last_check = 0;
    apr_interval_time_t wait = apr_time_from_msec(10);
    const char *why;
    for (;;) {
        gmcp_rows rs;
        gmcp_stream sm;
        int i;
        if (db_get(x, &why)) break;
        if (gmcp_stream_get(&x->dbh->db, stream_id, &sm) != APR_SUCCESS
            || gmcp_events_after(&x->dbh->db, stream_id, (apr_int64_t)seq, &rs)) {
            db_put(x);
            break;
        }
        db_put(x);
        for (i = 0; i < rs.rows->nelts; i++) {
            const char **row = GMCP_ROW(&rs, i);
            if (gmcp_sse_write(r,
                               apr_psprintf(r->pool, "id: %s.%s\nevent: message\ndata: %s\n\n",
                                            stream_id, row[0], row[1])))
                return;
            seq = (apr_uint64_t)apr_atoi64(row[0]);
            last_write = apr_time_now();
            wait = apr_time_from_msec(10);
        }
        if (sm.done && rs.rows->nelts == 0) break;
        if (!sm.done && rs.rows->nelts == 0 && apr_time_now() - last_check > ORPHAN_CHECK_EVERY) {
            last_check = apr_time_now();
            give_up_if_orphaned(x, stream_id, &sm);
        }
        if (apr_time_now() - start > STREAM_MAX_TIME) break;
        if (apr_time_now() - last_write > HEARTBEAT_EVERY) {
            if (gmcp_sse_write(r, ": keep-alive\n\n")) return;
            last_write = apr_time_now();
        }
        apr_sleep(wait);
        if (wait < apr_time_from_msec(250)) wait *= 2;
    }
}

static int handle_get(gmcp_req *x)
{
    request_rec *r = x->r;
    apr_time_t start = apr_time_now();
    const char *stream_id = NULL;
    apr_uint64_t seq = 0;
    int st = resumable_stream(x, &stream_id, &seq);

    if (st != OK) return st;
    db_put(x);
    gmcp_sse_headers(r);
    if (gmcp_version_has_priming(x->session.protocol_version))
        gmcp_sse_write(r, apr_psprintf(r->pool, "retry: %d\n\n", gmcp_conf_sse_retry(x->dc)));
    follow_stream(x, stream_id, seq, start);
    return DONE;
}

/* ---- DELETE ------------------------------------------------------------------------- */

static int handle_delete(gmcp_req *x)
{
    const char *why;
    int st = load_session(x, NULL), rv;
    if (st != OK) return st;
    if (db_get(x, &why)) return gmcp_send_unavailable(x->r, NULL, why);
    rv = gmcp_session_delete(&x->dbh->db, x->session.id);
    if (rv == GMCP_EDB) {
        db_complain(x, "terminating a session");
        return gmcp_send_unavailable(x->r, NULL, "the session store is unavailable");
    }
    db_put(x);
    session_changed(x);
    x->r->status = HTTP_NO_CONTENT;
    return DONE;
}

/* ---- housekeeping --------------------------------------------------------------------- */

static volatile apr_uint32_t next_sweep;

/* Expire idle sessions and old events, at most once a minute per process (more often
 * when sessions expire sooner than that). */
static void maybe_sweep(gmcp_req *x)
{
    apr_int64_t idle = gmcp_conf_session_idle(x->sc);
    apr_uint32_t every = idle < SWEEP_EVERY_SEC ? (apr_uint32_t)idle : SWEEP_EVERY_SEC;
    const char *why;
    if (!gmcp_due(&next_sweep, every)) return;
    if (db_get(x, &why)) return;
    if (gmcp_store_sweep(&x->dbh->db, gmcp_conf_session_idle(x->sc),
                         gmcp_conf_event_retention(x->sc))
        || gmcp_chat_sweep(&x->dbh->db, gmcp_conf_chat_idle(x->sc)))
        db_complain(x, "expiring idle sessions");
    db_put(x);
}

/* ---- entry ---------------------------------------------------------------------------- */

static gmcp_req *req_make(request_rec *r)
{
    gmcp_req *x = apr_pcalloc(r->pool, sizeof(*x));
    x->r = r;
    x->dc = gmcp_config_dir(r);
    x->sc = gmcp_config_srv(r->server);
    x->srv = gmcp_server_for(r->pool, x->dc, gmcp_tasks_runner());
    x->call.pool = r->pool;
    x->call.ops = &CALL_OPS;
    x->call.transport = x;
    x->call.deadline = apr_time_now() + gmcp_conf_tool_timeout(x->sc);
    x->log_min = GMCP_LOG_INFO;
    x->dbh = gmcp_dbh_make(r);
    return x;
}

/* What the method asks for, once the caller is known. */
static int serve_method(gmcp_req *x)
{
    request_rec *r = x->r;
    int st;
    if ((r->method_number == M_GET || r->method_number == M_DELETE)
        && !apr_table_get(r->headers_in, HDR_SESSION) && apr_table_get(r->headers_in, HDR_VERSION)
        && !gmcp_version_is_legacy(apr_table_get(r->headers_in, HDR_VERSION))) {
        /* 2026-07-28 has no GET stream and no session to delete. */
        apr_table_setn(r->headers_out, "Allow", "POST");
        return gmcp_reject(r, HTTP_METHOD_NOT_ALLOWED, NULL, GMCP_SERVER_ERROR,
                           "Method Not Allowed: protocol revision " GMCP_STATELESS_VERSION
                           " uses POST only");
    }
    if (r->method_number == M_POST) return handle_post(x);
    if ((r->method_number == M_GET && !r->header_only) || r->method_number == M_DELETE) {
        if ((st = gmcp_access_admit(r, x->acc, r->method, NULL, 0, NULL)) != OK) return st;
        return r->method_number == M_GET ? handle_get(x) : handle_delete(x);
    }
    apr_table_setn(r->headers_out, "Allow", "GET, POST, DELETE, OPTIONS");
    return gmcp_reject(r, HTTP_METHOD_NOT_ALLOWED, NULL, GMCP_SERVER_ERROR,
                       "Method Not Allowed: use POST, GET or DELETE");
}

/* Give back what the request holds outside its pool, then the housekeeping. */
static void req_finish(gmcp_req *x)
{
    if (x->caps) json_decref(x->caps);
    x->caps = NULL;
    if (x->call.pending_inputs) json_decref(x->call.pending_inputs);
    x->call.pending_inputs = NULL;
    if (x->call.error_data) json_decref(x->call.error_data);
    x->call.error_data = NULL;
    db_put(x);
    maybe_sweep(x);
}

int gmcp_mcp_handler(request_rec *r)
{
    gmcp_req *x;
    int st;
    if (!r->handler || strcmp(r->handler, "gemini-mcp") != 0) return DECLINED;
    x = req_make(r);
    if (!gmcp_access_host_ok(r, x->dc))
        return gmcp_reject(r, HTTP_FORBIDDEN, NULL, GMCP_SERVER_ERROR,
                           "Forbidden: Host header does not name this server");
    if (!gmcp_access_origin_ok(r, x->dc))
        return gmcp_reject(r, HTTP_FORBIDDEN, NULL, GMCP_SERVER_ERROR,
                           "Forbidden: Origin is not allowed");
    gmcp_access_cors(r);
    if (r->method_number == M_OPTIONS) return gmcp_access_preflight(r);
    /* Who is calling decides who owns what this request creates or reads. */
    if ((st = gmcp_access_identify(r, x->dc, &x->acc)) != OK) return st;
    x->call.principal = x->acc->principal;
    st = serve_method(x);
    req_finish(x);
    return st;
}
