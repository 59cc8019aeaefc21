/* mod_gemini_mcp_upload.c — SetHandler gemini-mcp-upload: tus 1.0 resumable uploads.
 *
 * Core (HEAD, PATCH, OPTIONS) with creation, creation-with-upload, creation-defer-length,
 * expiration, checksum (sha256, sha1, md5), termination and concatenation. State is in
 * SQL, bytes in GeminiMCPUploadDir/<id>. A PATCH streams the body to disk brigade by
 * brigade (memory stays flat whatever the size), and the offset recorded in SQL only
 * ever counts bytes that were fsync'ed (synced mode) or written and synced within
 * seconds, with the durable point kept beside it (interval mode): a kill at any moment
 * leaves HEAD telling the truth, and the next PATCH cuts away whatever lay past it.
 * One PATCH per upload at a time (a lease row; a second gets 423 Locked). GET reports
 * progress, once or as a stream of server-sent events.
 *
 * This file is the httpd side: headers, answers, the request body, the database
 * sections. What needs no request (the body's pieces, the concatenation, the progress
 * reports, the lease check) is in gmcp_upload_*.c and gmcp_uploads.c. Each method runs
 * as numbered steps; a step either answers the request (DONE, as every answer of the
 * glue: mod_gemini_mcp_respond.h) or returns OK and the next step goes on. */
#include "mod_gemini_mcp_upload.h"
#include "mod_gemini_mcp_access.h"
#include "mod_gemini_mcp_config.h"
#include "mod_gemini_mcp_db.h"
#include "mod_gemini_mcp_respond.h"
#include "mod_gemini_mcp_tailsync.h"
#include "gmcp_uploads.h"
#include "gmcp_upload_body.h"
#include "gmcp_upload_concat.h"
#include "gmcp_upload_progress.h"
#include "gmcp_wire.h"
#include "gmcp_lease.h"
#include "gmcp_sha256.h"
#include "gmcp_spool.h"
#include "gmcp_util.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_network_io.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define TUS_VERSION "1.0.0"
#define TUS_EXTENSIONS                                                \
    "creation,creation-with-upload,creation-defer-length,expiration," \
    "checksum,termination,concatenation"
#define TUS_CHECKSUMS "sha256,sha1,md5"
#define TUS_EXPOSE                                                                \
    "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, "         \
    "Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Defer-Length, " \
    "Upload-Metadata, Upload-Concat, Upload-Expires, WWW-Authenticate, Retry-After"
#define TUS_ALLOW_HEADERS                                                                   \
    "authorization, content-type, tus-resumable, upload-length, "                           \
    "upload-offset, upload-metadata, upload-defer-length, upload-concat, upload-checksum, " \
    "x-http-method-override, x-requested-with, x-request-id"
#define LEASE_SECONDS 60
#define COMMIT_BYTES (8 * 1024 * 1024)         /* record durable progress this often... */
#define COMMIT_EVERY apr_time_from_sec(10)     /* ...or this often, renewing the lease */
#define PROGRESS_EVERY apr_time_from_msec(500) /* live byte count for the progress stream */
#define STREAM_POLL apr_time_from_msec(250)    /* the stream reads the row this often */
#define STREAM_IDLE apr_time_from_sec(60)      /* ...and ends after this long without news */
#define STREAM_PING apr_time_from_sec(15)

typedef struct {
    request_rec *r;
    const gmcp_dir_conf *dc;
    const gmcp_srv_conf *sc;
    gmcp_access *acc;
    gmcp_dbh *dbh; /* every database section (released with the request) */
    const char *dir;
    apr_pool_t *scratch; /* for what long loops do over and over (see db_scratch) */
} up_req;

/* ---- responses ------------------------------------------------------------------------- */

static int answer(up_req *u, int status, const char *text)
{
    request_rec *r = u->r;
    r->status = status;
    if (status == 460) r->status_line = "460 Checksum Mismatch"; /* tus's own code */
    if (text) {
        ap_set_content_type(r, "text/plain; charset=utf-8");
        ap_set_content_length(r, (apr_off_t)strlen(text) + 1);
        ap_rvputs(r, text, "\n", NULL);
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, GMCP_LOGNO(0140) "gemini_mcp: upload %d: %s",
                      status, text);
    }
    else {
        ap_set_content_length(r, 0);
    }
    return DONE;
}

/* The store failed: 503. The core logged the failing statement once (GMCP02xx), or
 * the missing connection (GMCP0110); this adds what the request was doing, at debug. */
static int db_fail(up_req *u, const char *what)
{
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, u->r,
                  GMCP_LOGNO(0141) "gemini_mcp: database error while %s: %s", what,
                  u->dbh->dbd ? gmcp_db_error(&u->dbh->db, -1) : "no connection");
    gmcp_dbh_close(u->dbh);
    apr_table_setn(u->r->err_headers_out, "Retry-After", "5");
    return answer(u, HTTP_SERVICE_UNAVAILABLE, "the upload store is unavailable");
}

/* The spool file could not take the bytes: the offset stays at what is durable (the
 * next PATCH cuts what lies past it). A full disk is 507, anything else 503; both
 * are retried by tus clients. */
static int disk_fail(up_req *u, const gmcp_upload *x, const char *path, apr_status_t rv)
{
    int full = APR_STATUS_IS_ENOSPC(rv) || rv == APR_FROM_OS_ERROR(EDQUOT);
    ap_log_rerror(
        APLOG_MARK, APLOG_ERR, rv, u->r,
        GMCP_LOGNO(0146) "gemini_mcp: upload %s: cannot use the spool file %s%s; the offset "
                         "stays at %" APR_INT64_T_FMT,
        x->id, path,
        APR_STATUS_IS_EACCES(rv) ? " (is GeminiMCPUploadDir writable by the httpd "
                                   "user?)"
                                 : "",
        x->offset);
    apr_table_setn(u->r->err_headers_out, "Retry-After", full ? "60" : "5");
    return answer(u, full ? HTTP_INSUFFICIENT_STORAGE : HTTP_SERVICE_UNAVAILABLE,
                  full ? "the upload spool is full; try again later"
                       : "the upload spool cannot be written; try again later");
}

/* 503 for an upload of another spool, with what the admin must fix. DONE. */
static int refuse_elsewhere(up_req *u, const gmcp_upload *x)
{
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, u->r,
                  GMCP_LOGNO(0148) "gemini_mcp: upload %s was made in spool %s, but %s here is "
                                   "another spool: every node needs the same GeminiMCPUploadDir "
                                   "(shared); this node leaves the upload alone",
                  x->id, x->spool, u->dir);
    apr_table_setn(u->r->err_headers_out, "Retry-After", "1");
    return answer(u, HTTP_SERVICE_UNAVAILABLE,
                  "this server cannot reach the upload's bytes (its upload spool is not the "
                  "one the upload was made in); try again");
}

/* Upload-Offset on the answer (also on an error's). */
static void tell_offset(up_req *u, apr_int64_t offset)
{
    apr_table_setn(u->r->err_headers_out, "Upload-Offset",
                   apr_psprintf(u->r->pool, "%" APR_INT64_T_FMT, offset));
}

static int db_open(up_req *u)
{
    const char *why;
    return gmcp_dbh_open(u->dbh, &why);
}

/* The store for a step repeated through a long request (progress every 0.5 s, durable
 * points, the progress stream's polls): its results and arguments go to a scratch pool
 * emptied each time, so the request's memory does not grow with its duration. */
static int db_scratch(up_req *u)
{
    if (!u->scratch)
        apr_pool_create(&u->scratch, u->r->pool);
    else
        apr_pool_clear(u->scratch);
    if (db_open(u)) return -1;
    u->dbh->db.pool = u->scratch;
    return 0;
}

static const char *http_date(apr_pool_t *p, apr_int64_t sec)
{
    char *buf = apr_palloc(p, APR_RFC822_DATE_LEN);
    apr_rfc822_date(buf, apr_time_from_sec(sec));
    return buf;
}

static apr_int64_t expiry_from_now(up_req *u)
{
    return gmcp_now_sec() + gmcp_conf_upload_expiry(u->sc);
}

/* The caller's upload into *x (OK, the store still open), or an answer: 404 (missing
 * or another owner's), 410 (terminated or expired). */
static int load(up_req *u, const char *id, gmcp_upload *x)
{
    apr_status_t rv;
    if (!gmcp_upload_id_ok(id)) return answer(u, HTTP_NOT_FOUND, "no such upload");
    if (db_open(u)) return db_fail(u, "opening the upload store");
    rv = gmcp_upload_get(&u->dbh->db, id, u->acc->principal, x);
    if (APR_STATUS_IS_ENOENT(rv)) return answer(u, HTTP_NOT_FOUND, "no such upload");
    if (rv != APR_SUCCESS) return db_fail(u, "reading an upload");
    if (!strcmp(x->state, GMCP_UPLOAD_TERMINATED))
        return answer(u, HTTP_GONE, "this upload was terminated");
    if (gmcp_upload_is_expired(x, gmcp_now_sec()))
        return answer(u, HTTP_GONE,
                      strcmp(x->state, GMCP_UPLOAD_COMPLETE)
                          ? "this upload expired before it was completed; start over"
                          : "this upload expired and was removed from the spool");
    return OK;
}

/* Mark x complete (phase "received") with the hash of its `length` bytes; the store is
 * left open. */
static int complete(up_req *u, gmcp_upload *x, apr_int64_t length, const gmcp_sha256 *h)
{
    const char *sha;
    if (gmcp_sha256_bytes(h) != length) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, u->r,
                      GMCP_LOGNO(0142) "gemini_mcp: upload %s: hashed %" APR_INT64_T_FMT
                                       " bytes of %" APR_INT64_T_FMT,
                      x->id, gmcp_sha256_bytes(h), length);
        return -1;
    }
    sha = gmcp_sha256_result(u->r->pool, h);
    if (db_open(u)
        || gmcp_upload_complete(&u->dbh->db, x->id, length, sha, gmcp_now_sec(),
                                expiry_from_now(u)))
        return -1;
    x->state = GMCP_UPLOAD_COMPLETE;
    x->sha256 = sha;
    return 0;
}

/* ---- appending a body --------------------------------------------------------------------- */

/* What the syncer made durable, and when it was last recorded. Before this request's
 * first durable point, the upload's own (base): its offset, or in interval mode a
 * point below it when the last PATCH's tail is not yet synced. */
typedef struct {
    apr_int64_t bytes;
    gmcp_sha256 *state;
    apr_time_t recorded;
    apr_int64_t base;
    const char *base_state;
} durability;

/* GeminiMCPUploadDurability as this request applies it. */
typedef struct {
    int interval;
    gmcp_spool_policy policy;
    apr_interval_time_t within;     /* interval: the tail is synced this soon after */
    apr_interval_time_t checkpoint; /* a slow upload's partial buffer is passed on this often */
} durability_mode;

/* One request's body appended to an upload (PATCH, or creation-with-upload), from its
 * checks to its answer. In the request pool: once the lease is taken, the pool's
 * cleanup gives it back should a path not reach append's one exit. */
typedef struct {
    up_req *u;
    gmcp_upload x; /* the upload as checked; its offset follows the body */
    int creating;
    const char *token; /* the lease's */
    int leased;
    const char *algo; /* Upload-Checksum: the algorithm and digest, or NULL */
    unsigned char *want;
    apr_size_t want_len;
    apr_int64_t room; /* bytes this body may add */
    const char *path; /* the spool file */
    apr_file_t *f;
    gmcp_sha256 *h;        /* the running SHA-256 of the whole upload */
    gmcp_upload_body body; /* the body's pieces through the spool writer */
    gmcp_receipt rc;
    durability d;
    durability_mode mode;
    int failed; /* the store failed recording the bytes */
} appending;

/* Record `offset` with the hash state there, under our lease, which this renews: every
 * byte below it on disk (durable < 0), or on disk up to `durable` (whose hash state is
 * durable_state) and only written past it. */
static int record(appending *a, apr_int64_t offset, const gmcp_sha256 *state, apr_int64_t durable,
                  const char *durable_state)
{
    up_req *u = a->u;
    const char *saved;
    apr_status_t rv;
    if (db_scratch(u)) return -1;
    saved = gmcp_sha256_save(u->dbh->db.pool, state);
    rv = durable < 0
        ? gmcp_upload_advance(&u->dbh->db, a->x.id, a->token, offset, a->x.length,
                              expiry_from_now(u), saved)
        : gmcp_upload_advance_unsynced(&u->dbh->db, a->x.id, a->token, offset, a->x.length,
                                       expiry_from_now(u), saved, durable, durable_state);
    if (rv == APR_SUCCESS) rv = gmcp_upload_lock(&u->dbh->db, a->x.id, a->token, LEASE_SECONDS);
    gmcp_dbh_close(u->dbh);
    /* Recorded, and the lease renewed: both, or this request no longer writes. */
    return rv == APR_SUCCESS ? 0 : -1;
}

static int renew(appending *a)
{
    up_req *u = a->u;
    apr_status_t rv;
    if (db_scratch(u)) return -1;
    rv = gmcp_upload_lock(&u->dbh->db, a->x.id, a->token, LEASE_SECONDS);
    gmcp_dbh_close(u->dbh);
    return rv == APR_SUCCESS ? 0 : -1;
}

/* Interval mode: everything received is written and hashed; what the syncer did not
 * reach yet is recorded as not yet durable and left to the child's tail syncer (or,
 * when that cannot take it, synced here). */
static int commit_written(appending *a, apr_int64_t *bytes)
{
    durability *d = &a->d;
    apr_int64_t b, end, durable;
    const char *dstate;
    if ((a->rc.disk_rv = gmcp_spool_finish_written(a->body.w, bytes)) != APR_SUCCESS) return -1;
    if (gmcp_spool_durable(a->body.w, &b, d->state)) d->bytes = b;
    end = a->x.offset + *bytes;
    if (d->bytes == *bytes && d->bytes > 0) return record(a, end, a->h, -1, NULL);
    durable = d->bytes > 0 ? a->x.offset + d->bytes : d->base;
    dstate = d->bytes > 0 ? gmcp_sha256_save(a->u->r->pool, d->state) : d->base_state;
    if (record(a, end, a->h, durable, dstate)) return -1;
    if (gmcp_tailsync_later(a->u->r->server, a->x.id, a->path, end,
                            gmcp_sha256_save(a->u->r->pool, a->h), a->mode.within)
        == 0)
        return 0;
    if ((a->rc.disk_rv = apr_file_datasync(a->f)) != APR_SUCCESS) return -1;
    return record(a, end, a->h, -1, NULL);
}

/* Everything received is written, hashed and on disk (synced mode) or written and
 * hashed (interval): record it. */
static int commit(appending *a, apr_int64_t *bytes)
{
    if (a->mode.interval) return commit_written(a, bytes);
    if ((a->rc.disk_rv = gmcp_spool_finish(a->body.w, bytes)) != APR_SUCCESS) return -1;
    return record(a, a->x.offset + *bytes, a->h, -1, NULL);
}

/* Bytes seen so far, for the progress stream (advisory; failures only logged). */
static void report(appending *a, apr_int64_t bytes)
{
    up_req *u = a->u;
    if (db_scratch(u) == 0) {
        gmcp_upload_set_phase(&u->dbh->db, a->x.id, GMCP_PHASE_RECEIVING, bytes, NULL);
        gmcp_dbh_close(u->dbh);
    }
}

/* Record the latest durable point once it is COMMIT_BYTES past the last record, when
 * COMMIT_EVERY passed, or `now` (the client paused); on a slow upload ask for a
 * durable point now and then, and keep the lease either way. */
static int catch_up(appending *a, int now)
{
    durability *d = &a->d;
    gmcp_receipt *rc = &a->rc;
    apr_int64_t bytes;
    apr_time_t t = apr_time_now();
    if (gmcp_spool_durable(a->body.w, &bytes, d->state)) d->bytes = bytes;
    if (d->bytes > rc->committed
        && (now || d->bytes - rc->committed >= COMMIT_BYTES || t - d->recorded >= COMMIT_EVERY)) {
        if (record(a, a->x.offset + d->bytes, d->state, -1, NULL)) return -1;
        rc->committed = d->bytes;
        d->recorded = t;
    }
    else if (t - d->recorded >= a->mode.checkpoint) {
        if ((rc->disk_rv = gmcp_spool_checkpoint(a->body.w)) != APR_SUCCESS || renew(a)) return -1;
        d->recorded = t;
    }
    return 0;
}

/* The next part of the body into bb. With nothing to read this moment, let pending
 * writes and syncs finish and record the durable point before waiting for the client.
 * -1 ends the body (the client went away, or recording failed). */
static int read_body(appending *a, apr_bucket_brigade *bb, int *pauses)
{
    request_rec *r = a->u->r;
    apr_status_t rv =
        ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_NONBLOCK_READ, 65536);
    if (APR_STATUS_IS_EAGAIN(rv) || (rv == APR_SUCCESS && APR_BRIGADE_EMPTY(bb))) {
        /* Synced: the disk catches up while the client pauses. Interval: a pause is no
         * reason to sync (the policy's time is). */
        if (!a->mode.interval) gmcp_spool_settle(a->body.w);
        (*pauses)++;
        if (gmcp_body_may_record(&a->body) && catch_up(a, 1)) {
            a->rc.io_error = 1;
            return -1;
        }
        rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ, 65536);
    }
    if (rv != APR_SUCCESS) {
        a->rc.aborted = 1;
        return -1;
    }
    return 0;
}

/* The brigade's bytes to the body; 1 when the body ends here (its EOS, or a stop). */
static int take_brigade(appending *a, apr_bucket_brigade *bb)
{
    apr_bucket *b;
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t len;
        if (APR_BUCKET_IS_EOS(b)) return 1;
        if (APR_BUCKET_IS_METADATA(b)) continue;
        if (apr_bucket_read(b, &data, &len, APR_BLOCK_READ) != APR_SUCCESS) {
            a->rc.aborted = 1;
            return 1;
        }
        if (gmcp_body_take(&a->body, data, len) != APR_SUCCESS) return 1;
    }
    return 0;
}

/* When the progress stream was last told, and the per-upload limiter's state. */
typedef struct {
    apr_time_t last_report, tat;
} pacing;

/* Between two reads (`bytes` came in the last one): the durable point recorded when
 * due, the live byte count for the progress stream, and the bandwidth limits (per
 * upload and per caller), which pause reading so TCP slows the sender. -1 ends the
 * body. */
static int between_reads(appending *a, apr_int64_t bytes, pacing *pc)
{
    up_req *u = a->u;
    apr_int64_t rate = u->dc->upload_rate, key_rate = u->dc->upload_key_rate;
    apr_interval_time_t wait = 0, w2;
    if (gmcp_body_may_record(&a->body) && catch_up(a, 0)) {
        a->rc.io_error = 1;
        return -1;
    }
    if (apr_time_now() - pc->last_report >= PROGRESS_EVERY) {
        report(a, a->x.offset + a->rc.got);
        pc->last_report = apr_time_now();
    }
    if (bytes > 0 && (rate > 0 || key_rate > 0)) {
        if (rate > 0) wait = gmcp_throttle(&pc->tat, apr_time_now(), rate, bytes);
        if (key_rate > 0 && (w2 = gmcp_access_throttle(u->acc, key_rate, bytes)) > wait) wait = w2;
        if (wait > 0) apr_sleep(wait);
    }
    return 0;
}

/* Stream the request body into the spool file at the offset (at most the room); with a
 * checksum nothing is recorded before the whole body verified. */
static void receive(appending *a)
{
    request_rec *r = a->u->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    pacing pc = {0, 0};
    int eos = 0, pauses = 0;
    a->d.bytes = 0;
    a->d.state = gmcp_sha256_make(r->pool);
    a->d.recorded = apr_time_now();
    while (!eos) {
        apr_int64_t before = a->rc.got;
        if (read_body(a, bb, &pauses)) break;
        eos = take_brigade(a, bb);
        apr_brigade_cleanup(bb);
        if (eos) gmcp_body_ended(&a->body);
        if (a->rc.conflict) break;
        if (!eos && between_reads(a, a->rc.got - before, &pc)) break;
    }
    ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r,
                  "gemini_mcp: upload %s: %" APR_INT64_T_FMT
                  " bytes received, %d pauses caught up with, %" APR_INT64_T_FMT " recorded",
                  a->x.id, a->rc.got, pauses, a->rc.committed);
}

static void mode_of(durability_mode *m, const gmcp_dir_conf *dc)
{
    apr_int64_t lag, secs;
    m->interval = gmcp_conf_upload_interval(dc, &lag, &secs);
    m->policy = m->interval ? gmcp_spool_interval(lag, apr_time_from_sec(secs)) : GMCP_SPOOL_SYNCED;
    m->within = m->interval ? apr_time_from_sec(secs) : 0;
    m->checkpoint = m->interval && m->within < COMMIT_EVERY ? m->within : COMMIT_EVERY;
}

/* 1. What the request asks: its checksum (400 when malformed), and the room left for
 * its body (with the length deferred, also what the caller's spool quota leaves). */
static int append_prepare(appending *a, up_req *u, const gmcp_upload *x, int creating)
{
    request_rec *r = u->r;
    const char *ck_hdr = apr_table_get(r->headers_in, "Upload-Checksum");
    apr_int64_t used = 0;
    a->u = u;
    a->x = *x;
    a->creating = creating;
    if (!(a->token = gmcp_lease_token(r->pool)))
        return answer(u, HTTP_INTERNAL_SERVER_ERROR, "no randomness for a lease");
    if (ck_hdr) {
        apr_status_t rv = gmcp_tus_checksum(r->pool, ck_hdr, &a->algo, &a->want, &a->want_len);
        if (APR_STATUS_IS_ENOTIMPL(rv))
            return answer(u, HTTP_BAD_REQUEST,
                          "Upload-Checksum: unsupported algorithm "
                          "(use sha256, sha1 or md5)");
        if (rv != APR_SUCCESS)
            return answer(u, HTTP_BAD_REQUEST,
                          "Upload-Checksum: expected "
                          "'<algorithm> <base64 digest>'");
    }
    if (x->length < 0 && u->dc->upload_quota >= 0) {
        if (db_open(u) || gmcp_upload_spool_used(&u->dbh->db, u->acc->principal, &used))
            return db_fail(u, "reading spool usage");
        gmcp_dbh_close(u->dbh);
    }
    a->room = gmcp_upload_room(x->length, x->offset, gmcp_conf_upload_max(u->dc),
                               u->dc->upload_quota, used);
    mode_of(&a->mode, u->dc);
    a->path = gmcp_upload_spool_path(r->pool, u->dir, x->id);
    return OK;
}

/* 5. The writer stopped and the spool file closed (before anyone else may write to it),
 * then the lease given back with what this request learnt: the sniffed type, the
 * progress. A pre-cleanup of the request pool from when the lease is taken: append runs
 * it at its one exit, and should a path ever miss that, the request's end does. */
static apr_status_t give_back(void *data)
{
    appending *a = data;
    up_req *u = a->u;
    if (!a->leased) return APR_SUCCESS;
    a->leased = 0;
    if (a->body.w) gmcp_spool_close(a->body.w);
    a->body.w = NULL;
    if (a->f) apr_file_close(a->f);
    a->f = NULL;
    if (db_open(u) == 0) {
        if (a->rc.sniffed && !a->rc.conflict)
            gmcp_upload_set_sniffed(&u->dbh->db, a->x.id, a->rc.sniffed);
        if (!a->failed && a->rc.committed)
            gmcp_upload_set_phase(&u->dbh->db, a->x.id, GMCP_PHASE_RECEIVING, a->x.offset, NULL);
        gmcp_upload_unlock(&u->dbh->db, a->x.id, a->token);
        gmcp_dbh_close(u->dbh);
    }
    return APR_SUCCESS;
}

/* 2. The lease: one writer per upload, across processes and nodes; 423 while another
 * request holds it, 409 when the upload moved on since it was checked. */
static int append_lease(appending *a)
{
    up_req *u = a->u;
    apr_int64_t offset = a->x.offset;
    gmcp_upload_lease_result lease;
    if (db_open(u)) return db_fail(u, "opening the upload store");
    lease = gmcp_upload_lease(&u->dbh->db, a->x.id, u->acc->principal, a->creating ? NULL : &a->x,
                              a->token, LEASE_SECONDS, &offset);
    if (lease == GMCP_LEASE_LOCK_FAILED) return db_fail(u, "locking an upload");
    if (lease == GMCP_LEASE_READ_FAILED) return db_fail(u, "reading an upload");
    gmcp_dbh_close(u->dbh);
    if (lease == GMCP_LEASE_MOVED) {
        tell_offset(u, offset);
        return answer(u, HTTP_CONFLICT,
                      "the upload moved on while this request waited "
                      "for it; HEAD for the current offset");
    }
    if (lease == GMCP_LEASE_HELD) {
        apr_table_setn(u->r->err_headers_out, "Retry-After", "1");
        return answer(u, HTTP_LOCKED, "another request is writing to this upload");
    }
    a->leased = 1;
    apr_pool_pre_cleanup_register(u->r->pool, a, give_back);
    return OK;
}

/* 3. The spool file continued at the durable offset, the hash resumed there, the writer
 * and the body started. -1 with what failed in the receipt (or a->failed). */
static int append_open(appending *a)
{
    request_rec *r = a->u->r;
    gmcp_spool_writer *w;
    int reread = 0;
    apr_status_t rv =
        gmcp_upload_spool_continue(r->pool, a->path, a->x.offset, !*a->x.spool, &a->f, &a->rc.lost);
    if (rv != APR_SUCCESS) {
        if (!a->rc.lost) a->rc.disk_rv = rv;
        return -1;
    }
    a->h = gmcp_upload_resume_hash(r->pool, a->path, &a->x, &reread);
    if (reread)
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      "gemini_mcp: upload %s: no saved hash "
                      "state at offset %" APR_INT64_T_FMT "; reading the spool file",
                      a->x.id, a->x.offset);
    if (!a->h) {
        a->rc.disk_rv = APR_EINCOMPLETE; /* the spool file is shorter than the offset */
        return -1;
    }
    /* The durable point before this request adds one: the row's own. */
    a->d.base = a->x.durable_offset >= 0 ? a->x.durable_offset : a->x.offset;
    a->d.base_state =
        a->x.durable_offset >= 0 ? a->x.durable_state : gmcp_sha256_save(r->pool, a->h);
    if (gmcp_spool_open(&w, r->pool, a->f, a->h, a->mode.policy) != APR_SUCCESS) {
        a->failed = 1;
        return -1;
    }
    gmcp_body_start(&a->body, r->pool, &a->x, a->room, a->algo, w, &a->rc);
    return 0;
}

/* 4. The body received and checked against its Upload-Checksum, then recorded, or
 * discarded whole (the offset stays where it was). */
static void append_body(appending *a)
{
    apr_int64_t all = 0;
    receive(a);
    gmcp_body_verify(&a->body, a->want, a->want_len);
    switch (gmcp_body_outcome(&a->body)) {
    case GMCP_BODY_FAILED: a->failed = 1; break;
    case GMCP_BODY_DISCARD:
        gmcp_spool_close(a->body.w);
        a->body.w = NULL;
        apr_file_trunc(a->f, (apr_off_t)(a->x.offset + a->rc.committed));
        break;
    case GMCP_BODY_COMMIT:
        if (commit(a, &all) || all != a->rc.got)
            a->failed = 1;
        else
            a->rc.committed = a->rc.got;
        break;
    case GMCP_BODY_KEEP: break;
    }
    a->x.offset += a->rc.committed;
}

/* 6. The answer: the first thing that went wrong, else the offset now (the upload
 * completed when it reached its length). A creation's success is the caller's to
 * answer (OK). */
static int append_answer(appending *a)
{
    up_req *u = a->u;
    request_rec *r = u->r;
    gmcp_upload *x = &a->x;
    if (a->rc.lost && gmcp_upload_spool_elsewhere(u->r->pool, u->dir, x))
        return refuse_elsewhere(u, x);
    if (a->rc.lost) {
        ap_log_rerror(
            APLOG_MARK, APLOG_ERR, 0, r,
            GMCP_LOGNO(0147) "gemini_mcp: upload %s: its spool file %s is missing or holds fewer "
                             "than the %" APR_INT64_T_FMT
                             " bytes recorded; refusing to continue it",
            x->id, a->path, x->offset);
        return answer(u, HTTP_GONE,
                      "the bytes received so far are gone from the server's "
                      "spool; start the upload over");
    }
    if (a->rc.disk_rv) return disk_fail(u, x, a->path, a->rc.disk_rv);
    if (a->failed) return db_fail(u, "storing upload bytes");
    if (a->rc.too_big)
        return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE,
                      x->length >= 0 ? "the body goes past Upload-Length"
                                     : "the upload exceeds Tus-Max-Size or your spool quota");
    if (a->rc.conflict)
        return answer(
            u, HTTP_UNSUPPORTED_MEDIA_TYPE,
            apr_psprintf(r->pool,
                         "the content is "
                         "%s but Upload-Metadata's filetype says %s; the chunk was discarded",
                         a->rc.sniffed, x->filetype));
    if (a->rc.mismatch)
        return answer(u, 460,
                      apr_psprintf(r->pool,
                                   "Checksum Mismatch: the %s of this "
                                   "request's body differs; the chunk was discarded",
                                   a->algo));
    if (x->length >= 0 && x->offset == x->length && complete(u, x, x->length, a->h))
        return db_fail(u, "completing an upload");
    gmcp_dbh_close(u->dbh);
    tell_offset(u, x->offset);
    if (strcmp(x->state, GMCP_UPLOAD_COMPLETE) != 0)
        apr_table_setn(r->err_headers_out, "Upload-Expires",
                       http_date(r->pool, expiry_from_now(u)));
    return a->creating ? OK : answer(u, HTTP_NO_CONTENT, NULL);
}

/* Append this request's body (PATCH, or creation-with-upload) to x. Answers the
 * request, except a creation's success (OK). */
static int append(up_req *u, const gmcp_upload *x, int creating)
{
    appending *a = apr_pcalloc(u->r->pool, sizeof(*a));
    int st;
    /* 1. the request's checksum and the room left for its body */
    if ((st = append_prepare(a, u, x, creating)) != OK) return st;
    /* 2. the lease, on the upload as it was checked; from here on one exit */
    if ((st = append_lease(a)) != OK) return st;
    /* 3. the spool file at the offset, 4. the body, recorded or discarded */
    if (append_open(a) == 0) append_body(a);
    /* 5. the writer and the file closed, the lease given back */
    apr_pool_cleanup_run(u->r->pool, a, give_back);
    /* 6. the answer */
    return append_answer(a);
}

/* ---- methods ------------------------------------------------------------------------------ */

static int do_patch(up_req *u, const char *id)
{
    request_rec *r = u->r;
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    const char *len_hdr = apr_table_get(r->headers_in, "Upload-Length");
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_int64_t off, len;
    gmcp_upload x;
    int st = load(u, id, &x);
    gmcp_dbh_close(u->dbh);
    if (st != OK) return st;
    if (!strncmp(x.concat, "final", 5))
        return answer(u, HTTP_FORBIDDEN, "a final (concatenated) upload takes no PATCH");
    if (!ct || strcasecmp(ct, "application/offset+octet-stream") != 0)
        return answer(u, HTTP_UNSUPPORTED_MEDIA_TYPE,
                      "Content-Type must be application/offset+octet-stream");
    if (gmcp_tus_offset_parse(apr_table_get(r->headers_in, "Upload-Offset"), &off))
        return answer(u, HTTP_BAD_REQUEST, "Upload-Offset is missing or not a whole number");
    if (off != x.offset) {
        tell_offset(u, x.offset);
        return answer(u, HTTP_CONFLICT,
                      apr_psprintf(r->pool,
                                   "Upload-Offset %" APR_INT64_T_FMT
                                   " is not this upload's offset (%" APR_INT64_T_FMT ")",
                                   off, x.offset));
    }
    if (len_hdr) {
        if (gmcp_tus_offset_parse(len_hdr, &len))
            return answer(u, HTTP_BAD_REQUEST, "Upload-Length is not a whole number");
        if (x.length >= 0 && len != x.length)
            return answer(u, HTTP_BAD_REQUEST, "Upload-Length cannot change once set");
        if (len > (apr_int64_t)gmcp_conf_upload_max(u->dc) || len < x.offset)
            return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, "Upload-Length exceeds Tus-Max-Size");
        x.length = len;
    }
    if (strcmp(x.state, GMCP_UPLOAD_COMPLETE) != 0) return append(u, &x, 0);
    /* Complete: nothing more can go in, and nothing is done again (hash, phase). */
    if (apr_table_get(r->headers_in, "Transfer-Encoding") || (cl && strcmp(cl, "0") != 0))
        return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, "this upload is already complete");
    tell_offset(u, x.offset);
    return answer(u, HTTP_NO_CONTENT, NULL);
}

static int do_head(up_req *u, const char *id)
{
    request_rec *r = u->r;
    gmcp_upload x;
    int st = load(u, id, &x);
    gmcp_dbh_close(u->dbh);
    if (st != OK) return st;
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (strncmp(x.concat, "final", 5) != 0 || !strcmp(x.state, GMCP_UPLOAD_COMPLETE))
        apr_table_setn(r->headers_out, "Upload-Offset",
                       apr_psprintf(r->pool, "%" APR_INT64_T_FMT, x.offset));
    if (x.length >= 0)
        apr_table_setn(r->headers_out, "Upload-Length",
                       apr_psprintf(r->pool, "%" APR_INT64_T_FMT, x.length));
    else
        apr_table_setn(r->headers_out, "Upload-Defer-Length", "1");
    if (*x.metadata) apr_table_setn(r->headers_out, "Upload-Metadata", x.metadata);
    if (*x.concat) apr_table_setn(r->headers_out, "Upload-Concat", x.concat);
    if (strcmp(x.state, GMCP_UPLOAD_COMPLETE) != 0)
        apr_table_setn(r->headers_out, "Upload-Expires", http_date(r->pool, x.expires));
    r->status = HTTP_OK;
    ap_set_content_length(r, 0);
    return DONE;
}

static int do_delete(up_req *u, const char *id)
{
    gmcp_upload x;
    int st = load(u, id, &x);
    const char *path;
    apr_finfo_t fi;
    apr_status_t rv;
    if (st != OK) return st;
    path = gmcp_upload_spool_path(u->r->pool, u->dir, x.id);
    if (apr_stat(&fi, path, APR_FINFO_TYPE, u->r->pool) != APR_SUCCESS
        && gmcp_upload_spool_elsewhere(u->r->pool, u->dir, &x)) {
        gmcp_dbh_close(u->dbh);
        return refuse_elsewhere(u, &x);
    }
    rv = gmcp_upload_terminate(&u->dbh->db, x.id, u->acc->principal);
    gmcp_dbh_close(u->dbh);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_ENOENT(rv)) return db_fail(u, "terminating an upload");
    apr_file_remove(path, u->r->pool);
    return answer(u, HTTP_NO_CONTENT, NULL);
}

/* ---- progress ---------------------------------------------------------------------------- */

/* The upload's row again for the next report, into whichever of the two pools does not
 * hold the current one (a stream may last hours). 0, or -1 to end the stream. */
static int poll_row(up_req *u, const char *id, apr_pool_t *rows[2], int *cur, gmcp_upload *x)
{
    gmcp_upload next;
    apr_status_t rv;
    apr_pool_clear(rows[*cur ^ 1]);
    if (db_open(u)) return -1;
    u->dbh->db.pool = rows[*cur ^ 1];
    rv = gmcp_upload_get(&u->dbh->db, id, u->acc->principal, &next);
    gmcp_dbh_close(u->dbh);
    if (rv != APR_SUCCESS) return -1;
    *x = next;
    *cur ^= 1;
    return 0;
}

/* "progress" events, each sent when the report changed, until the upload is active,
 * failed, terminated or expired (or nothing changed for a minute; the client may
 * reconnect). Everything but the rows lives in a pool emptied every round. */
static int progress_stream(up_req *u, const char *id, gmcp_upload *x, gmcp_rate_window *w)
{
    request_rec *r = u->r;
    apr_time_t last_news, last_write;
    apr_pool_t *it, *rows[2];
    char *last_text = NULL;
    int cur = 0;
    apr_int64_t seq = 0;
    gmcp_sse_headers(r);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    last_news = last_write = apr_time_now();
    apr_pool_create(&it, r->pool);
    apr_pool_create(&rows[0], r->pool);
    apr_pool_create(&rows[1], r->pool);
    for (;;) {
        json_t *ev = gmcp_upload_progress_json(x, w, apr_time_as_msec(apr_time_now()));
        char *text = json_dumps(ev, JSON_COMPACT);
        const char *phase = apr_pstrdup(it, json_string_value(json_object_get(ev, "phase")));
        json_decref(ev);
        if (!text) break;
        if (!last_text || strcmp(text, last_text) != 0) {
            int bad = gmcp_sse_write(
                r,
                apr_psprintf(it, "id: %" APR_INT64_T_FMT "\nevent: progress\ndata: %s\n\n", ++seq,
                             text));
            free(last_text);
            last_text = text;
            last_news = last_write = apr_time_now();
            if (bad) break;
        }
        else {
            free(text);
        }
        if (gmcp_upload_phase_final(phase) || apr_time_now() - last_news > STREAM_IDLE) break;
        if (apr_time_now() - last_write > STREAM_PING) {
            if (gmcp_sse_write(r, ": keep-alive\n\n")) break;
            last_write = apr_time_now();
        }
        apr_pool_clear(it);
        apr_sleep(STREAM_POLL);
        if (r->connection->aborted || poll_row(u, id, rows, &cur, x)) break;
    }
    free(last_text);
    return DONE;
}

/* GET on an upload: its progress now (JSON), or with Accept: text/event-stream a stream
 * of "progress" events. */
static int do_get(up_req *u, const char *id)
{
    request_rec *r = u->r;
    gmcp_upload x;
    gmcp_rate_window w;
    int st = load(u, id, &x);
    gmcp_dbh_close(u->dbh);
    if (st != OK) return st;
    memset(&w, 0, sizeof(w));
    if (!gmcp_http_accepts(r, "text/event-stream") || gmcp_http_accepts(r, "application/json"))
        return gmcp_send_json(r, HTTP_OK,
                              gmcp_upload_progress_json(&x, &w, apr_time_as_msec(apr_time_now())));
    return progress_stream(u, id, &x, &w);
}

/* ---- creation ----------------------------------------------------------------------------- */

/* Concatenate finished partial uploads (same owner) into x, a new, complete upload. */
static int create_final(up_req *u, gmcp_upload *x, const char *list)
{
    request_rec *r = u->r;
    gmcp_sha256 *h = gmcp_sha256_make(r->pool);
    gmcp_concat_plan plan;
    gmcp_concat_copy copied;
    gmcp_final_result fate;
    /* 1. the parts: each a finished partial upload of the caller's */
    if (db_open(u)) return db_fail(u, "opening the upload store");
    fate = gmcp_concat_plan_make(&u->dbh->db, r->pool, u->acc->principal, list,
                                 (apr_int64_t)gmcp_conf_upload_max(u->dc), &plan);
    if (fate == GMCP_FINAL_DB) return db_fail(u, "reading partial uploads");
    gmcp_dbh_close(u->dbh);
    if (fate == GMCP_FINAL_BAD_PART)
        return answer(u, HTTP_BAD_REQUEST,
                      apr_psprintf(r->pool,
                                   "Upload-Concat: %s is not "
                                   "a finished partial upload of yours",
                                   plan.bad_url));
    if (fate == GMCP_FINAL_NO_PARTS)
        return answer(u, HTTP_BAD_REQUEST,
                      "Upload-Concat: final needs a list of partial "
                      "uploads");
    if (fate == GMCP_FINAL_TOO_BIG)
        return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, "the concatenation exceeds Tus-Max-Size");
    /* 2. their bytes, in order, into the new spool file */
    x->length = plan.total;
    x->parts = plan.ids;
    fate = gmcp_concat_copy_parts(r->pool, u->dir, &plan, x->filetype,
                                  gmcp_upload_spool_path(r->pool, u->dir, x->id), h, &copied);
    if (fate == GMCP_FINAL_DISK) return disk_fail(u, x, copied.path, copied.rv);
    if (fate == GMCP_FINAL_CONFLICT)
        return answer(u, HTTP_UNSUPPORTED_MEDIA_TYPE,
                      apr_psprintf(r->pool,
                                   "the content is "
                                   "%s but Upload-Metadata's filetype says %s",
                                   copied.sniffed, x->filetype));
    /* 3. the row, complete */
    x->offset = plan.total;
    if (db_open(u) || gmcp_upload_create(&u->dbh->db, x)
        || (copied.sniffed && gmcp_upload_set_sniffed(&u->dbh->db, x->id, copied.sniffed)))
        return db_fail(u, "creating an upload");
    gmcp_dbh_close(u->dbh);
    if (complete(u, x, plan.total, h)) return db_fail(u, "completing an upload");
    gmcp_dbh_close(u->dbh);
    return OK;
}

/* A creation request's headers. */
typedef struct {
    const char *len_hdr, *defer, *meta, *concat, *ct;
    int is_final;
    apr_table_t *md; /* Upload-Metadata, decoded */
} creation;

/* 1. The lengths and the concatenation asked for, and Upload-Metadata. */
static int creation_headers(up_req *u, creation *c, gmcp_upload *x)
{
    request_rec *r = u->r;
    const char *err = NULL;
    gmcp_concat_kind kind;
    c->len_hdr = apr_table_get(r->headers_in, "Upload-Length");
    c->defer = apr_table_get(r->headers_in, "Upload-Defer-Length");
    c->meta = apr_table_get(r->headers_in, "Upload-Metadata");
    c->concat = apr_table_get(r->headers_in, "Upload-Concat");
    c->ct = apr_table_get(r->headers_in, "Content-Type");
    kind = gmcp_tus_concat_kind(c->concat);
    c->is_final = kind == GMCP_CONCAT_FINAL;
    memset(x, 0, sizeof(*x));
    x->length = -1;
    if (kind == GMCP_CONCAT_INVALID)
        return answer(u, HTTP_BAD_REQUEST, "Upload-Concat must be 'partial' or 'final;<urls>'");
    if (c->is_final && c->len_hdr)
        return answer(u, HTTP_BAD_REQUEST, "a final upload takes no Upload-Length");
    if (!c->is_final && (c->len_hdr != NULL) == (c->defer != NULL))
        return answer(u, HTTP_BAD_REQUEST,
                      "give exactly one of Upload-Length and "
                      "Upload-Defer-Length");
    if (!c->is_final && c->defer && strcmp(c->defer, "1") != 0)
        return answer(u, HTTP_BAD_REQUEST, "Upload-Defer-Length must be 1");
    if (!c->is_final && c->len_hdr && gmcp_tus_offset_parse(c->len_hdr, &x->length))
        return answer(u, HTTP_BAD_REQUEST, "Upload-Length is not a whole number");
    if (!c->is_final && x->length > (apr_int64_t)gmcp_conf_upload_max(u->dc))
        return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE,
                      apr_psprintf(r->pool,
                                   "Upload-Length exceeds Tus-Max-Size (%" APR_OFF_T_FMT ")",
                                   gmcp_conf_upload_max(u->dc)));
    if (gmcp_tus_metadata(r->pool, c->meta, &c->md, &err)) return answer(u, HTTP_BAD_REQUEST, err);
    return OK;
}

/* 2. Room in the caller's spool quota for what the upload announces (a final one takes
 * the room its parts already hold). */
static int creation_quota(up_req *u, const creation *c, const gmcp_upload *x)
{
    apr_int64_t used = 0;
    if (c->is_final || u->dc->upload_quota < 0) return OK;
    if (db_open(u) || gmcp_upload_spool_used(&u->dbh->db, u->acc->principal, &used))
        return db_fail(u, "reading spool usage");
    gmcp_dbh_close(u->dbh);
    if (used + (x->length > 0 ? x->length : 0) > (apr_int64_t)u->dc->upload_quota)
        return answer(
            u, HTTP_REQUEST_ENTITY_TOO_LARGE,
            apr_psprintf(u->r->pool,
                         "your uploads would take more than your spool quota (%" APR_OFF_T_FMT
                         " bytes; %" APR_INT64_T_FMT " in use): finish, relay or terminate "
                         "some first",
                         u->dc->upload_quota, used));
    return OK;
}

/* 3. The new row's fields (its file name and type checked) and id, and its Location. */
static int creation_row(up_req *u, const creation *c, gmcp_upload *x)
{
    request_rec *r = u->r;
    const char *err = NULL, *base = r->uri;
    apr_size_t n = strlen(base);
    apr_status_t rv;
    if (gmcp_upload_fill_new(x, c->md, c->meta, c->concat, u->acc->principal, u->acc->key_id,
                             gmcp_now_sec(), gmcp_conf_upload_expiry(u->sc), &err))
        return answer(u, HTTP_BAD_REQUEST, err);
    if (!(x->id = gmcp_upload_new_id(r->pool)))
        return answer(u, HTTP_INTERNAL_SERVER_ERROR, "no randomness for an upload id");
    if ((rv = gmcp_upload_spool_id(r->pool, u->dir, &x->spool)) != APR_SUCCESS)
        return disk_fail(u, x, apr_pstrcat(r->pool, u->dir, "/" GMCP_SPOOL_ID_FILE, NULL), rv);
    while (n > 1 && base[n - 1] == '/') n--;
    base = apr_pstrndup(r->pool, base, n);
    apr_table_setn(r->err_headers_out, "Location",
                   ap_construct_url(r->pool, apr_pstrcat(r->pool, base, "/", x->id, NULL), r));
    return OK;
}

/* 4. The spool file (empty: a PATCH only ever continues a file that is there, so a node
 * that does not share the spool cannot start a second copy), the row, then its bytes:
 * none yet, none at all (a zero length is complete at once), or the first ones in this
 * body (creation-with-upload). */
static int create_upload(up_req *u, const creation *c, gmcp_upload *x)
{
    request_rec *r = u->r;
    const char *path = gmcp_upload_spool_path(r->pool, u->dir, x->id);
    apr_file_t *f;
    apr_status_t rv = apr_file_open(
        &f, path, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_EXCL | APR_FOPEN_BINARY,
        APR_FPROT_UREAD | APR_FPROT_UWRITE, r->pool);
    if (rv != APR_SUCCESS) return disk_fail(u, x, path, rv);
    apr_file_close(f);
    if (db_open(u) || gmcp_upload_create(&u->dbh->db, x)) {
        apr_file_remove(path, r->pool);
        return db_fail(u, "creating an upload");
    }
    gmcp_dbh_close(u->dbh);
    apr_table_setn(r->err_headers_out, "Upload-Expires", http_date(r->pool, x->expires));
    if (x->length == 0) {
        if (complete(u, x, 0, gmcp_sha256_make(r->pool))) return db_fail(u, "completing an upload");
        gmcp_dbh_close(u->dbh);
        return OK;
    }
    if (c->ct && !strcasecmp(c->ct, "application/offset+octet-stream")) return append(u, x, 1);
    return OK;
}

static int do_post(up_req *u)
{
    creation c;
    gmcp_upload x;
    int st;
    /* 1. the lengths, the concatenation and the metadata asked for */
    if ((st = creation_headers(u, &c, &x)) != OK) return st;
    /* 2. room in the caller's spool quota */
    if ((st = creation_quota(u, &c, &x)) != OK) return st;
    /* 3. the new row: file name, type, id, Location */
    if ((st = creation_row(u, &c, &x)) != OK) return st;
    /* 4. its bytes: concatenated from finished parts, or (some of them) still to come */
    st = c.is_final ? create_final(u, &x, c.concat) : create_upload(u, &c, &x);
    return st != OK ? st : answer(u, HTTP_CREATED, NULL);
}

static int do_options(up_req *u)
{
    request_rec *r = u->r;
    apr_table_setn(r->err_headers_out, "Tus-Version", TUS_VERSION);
    apr_table_setn(r->err_headers_out, "Tus-Extension", TUS_EXTENSIONS);
    apr_table_setn(r->err_headers_out, "Tus-Checksum-Algorithm", TUS_CHECKSUMS);
    apr_table_setn(r->err_headers_out, "Tus-Max-Size",
                   apr_psprintf(r->pool, "%" APR_OFF_T_FMT, gmcp_conf_upload_max(u->dc)));
    if (apr_table_get(r->headers_in, "Origin")
        && apr_table_get(r->headers_in, "Access-Control-Request-Method")) {
        apr_table_setn(r->err_headers_out, "Access-Control-Allow-Methods",
                       "POST, HEAD, PATCH, DELETE, OPTIONS");
        apr_table_setn(r->err_headers_out, "Access-Control-Allow-Headers", TUS_ALLOW_HEADERS);
        apr_table_setn(r->err_headers_out, "Access-Control-Max-Age", "86400");
    }
    return answer(u, HTTP_NO_CONTENT, NULL);
}

int gmcp_upload_handler(request_rec *r)
{
    up_req *u;
    const char *override, *tusv, *id, *method;
    int st;
    if (!r->handler || strcmp(r->handler, "gemini-mcp-upload") != 0) return DECLINED;
    u = apr_pcalloc(r->pool, sizeof(*u));
    u->r = r;
    u->dbh = gmcp_dbh_make(r);
    u->dc = ap_get_module_config(r->per_dir_config, &gemini_mcp_module);
    u->sc = ap_get_module_config(r->server->module_config, &gemini_mcp_module);
    u->dir = u->sc->upload_dir;
    apr_table_setn(r->err_headers_out, "Tus-Resumable", TUS_VERSION);

    /* Clients that cannot send PATCH/DELETE tunnel them through POST. */
    method = r->method;
    override = apr_table_get(r->headers_in, "X-HTTP-Method-Override");
    if (override && r->method_number == M_POST
        && (!strcmp(override, "PATCH") || !strcmp(override, "DELETE") || !strcmp(override, "HEAD")))
        method = override;

    if (!gmcp_request_origin_ok(r, u->dc))
        return answer(u, HTTP_FORBIDDEN, "Origin or Host is not allowed");
    gmcp_access_cors(r);
    if (apr_table_get(r->headers_in, "Origin"))
        apr_table_setn(r->err_headers_out, "Access-Control-Expose-Headers", TUS_EXPOSE);
    if (!strcmp(method, "OPTIONS")) return do_options(u); /* no auth, no Tus-Resumable */

    tusv = apr_table_get(r->headers_in, "Tus-Resumable");
    if (!tusv || strcmp(tusv, TUS_VERSION) != 0) {
        apr_table_setn(r->err_headers_out, "Tus-Version", TUS_VERSION);
        return answer(u, HTTP_PRECONDITION_FAILED, "Tus-Resumable: 1.0.0 is required");
    }
    if (!u->dir) {
        ap_log_rerror(
            APLOG_MARK, APLOG_ERR, 0, r,
            GMCP_LOGNO(0144) "gemini_mcp: SetHandler gemini-mcp-upload needs GeminiMCPUploadDir");
        return answer(u, HTTP_SERVICE_UNAVAILABLE, "uploads are not configured on this server");
    }
    if ((st = gmcp_access_identify(r, u->dc, &u->acc)) != OK) return st;
    if ((st = gmcp_access_admit(r, u->acc, "upload", NULL, 0, NULL)) != OK) return st;

    id = gmcp_url_last_segment(r->pool, r->uri);
    if (!strcmp(method, "POST") && !gmcp_upload_id_ok(id)) return do_post(u);
    if (!strcmp(method, "PATCH")) return do_patch(u, id);
    if (!strcmp(method, "HEAD") || (r->method_number == M_GET && r->header_only))
        return do_head(u, id);
    if (r->method_number == M_GET) return do_get(u, id);
    if (!strcmp(method, "DELETE")) return do_delete(u, id);
    apr_table_setn(r->err_headers_out, "Allow", "POST, GET, HEAD, PATCH, DELETE, OPTIONS");
    return answer(u, HTTP_METHOD_NOT_ALLOWED,
                  "use POST to create, PATCH to append, HEAD for "
                  "the offset, GET for progress, DELETE to terminate");
}
