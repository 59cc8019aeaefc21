/* mod_gemini_mcp_upload.c — SetHandler gemini-mcp-upload: tus 1.0 resumable uploads.
 *
 * Core (HEAD, PATCH, OPTIONS) with creation, creation-with-upload, creation-defer-length,
 * expiration, checksum (sha256, sha1, md5), termination and concatenation. State is in
 * SQL, bytes in GeminiMCPUploadDir/<id>. A PATCH streams the body to disk brigade by
 * brigade (memory stays flat whatever the size), and the offset recorded in SQL only
 * ever counts bytes that were fsync'ed: a kill at any moment leaves HEAD telling the
 * truth, and the next PATCH cuts away whatever lay past it. One PATCH per upload at a
 * time (a lease row; a second gets 423 Locked). GET reports progress, once or as a
 * stream of server-sent events. */
#include "mod_gemini_mcp.h"
#include "gmcp_uploads.h"
#include "gmcp_wire.h"
#include "gmcp_lease.h"
#include "gmcp_sha256.h"
#include "gmcp_sniff.h"
#include "gmcp_spool.h"
#include "gmcp_util.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_network_io.h>
#include <openssl/evp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define TUS_VERSION    "1.0.0"
#define TUS_EXTENSIONS "creation,creation-with-upload,creation-defer-length,expiration," \
                       "checksum,termination,concatenation"
#define TUS_CHECKSUMS  "sha256,sha1,md5"
#define TUS_EXPOSE     "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, " \
    "Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Defer-Length, " \
    "Upload-Metadata, Upload-Concat, Upload-Expires, WWW-Authenticate, Retry-After"
#define TUS_ALLOW_HEADERS "authorization, content-type, tus-resumable, upload-length, " \
    "upload-offset, upload-metadata, upload-defer-length, upload-concat, upload-checksum, " \
    "x-http-method-override, x-requested-with, x-request-id"
#define LEASE_SECONDS  60
#define COMMIT_BYTES   (8 * 1024 * 1024)      /* record durable progress this often... */
#define COMMIT_EVERY   apr_time_from_sec(10)  /* ...or this often, renewing the lease */
#define ID_BYTES       16
#define PROGRESS_EVERY apr_time_from_msec(500)  /* live byte count for the progress stream */
#define STREAM_POLL    apr_time_from_msec(250)  /* the stream reads the row this often */
#define STREAM_IDLE    apr_time_from_sec(60)    /* ...and ends after this long without news */
#define STREAM_PING    apr_time_from_sec(15)
#define RATE_WINDOW_MS 3000                     /* rate over the last 3 s of samples */
#define STALLED_MS     2000

typedef struct {
    request_rec *r;
    const gmcp_dir_conf *dc;
    const gmcp_srv_conf *sc;
    gmcp_access *acc;
    gmcp_dbh *dbh;          /* every database section (released with the request) */
    const char *dir;
    apr_pool_t *scratch;    /* for what long loops do over and over (see db_scratch) */
} up_req;

apr_off_t gmcp_conf_upload_max(const gmcp_dir_conf *c)
{ return c->upload_max >= 0 ? c->upload_max : (apr_off_t)2 << 30; }
apr_int64_t gmcp_conf_upload_expiry(const gmcp_srv_conf *c)
{ return c->upload_expiry >= 0 ? c->upload_expiry : 24 * 3600; }

/* ---- responses ------------------------------------------------------------------------- */

static int answer(up_req *u, int status, const char *text)
{
    request_rec *r = u->r;
    r->status = status;
    if (status == 460) r->status_line = "460 Checksum Mismatch";   /* tus's own code */
    if (text) {
        ap_set_content_type(r, "text/plain; charset=utf-8");
        ap_set_content_length(r, (apr_off_t)strlen(text) + 1);
        ap_rvputs(r, text, "\n", NULL);
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, GMCP_LOGNO(0140)
                      "gemini_mcp: upload %d: %s", status, text);
    }
    else {
        ap_set_content_length(r, 0);
    }
    return OK;
}

/* The store failed: 503. The core logged the failing statement once (GMCP02xx), or
 * the missing connection (GMCP0110); this adds what the request was doing, at debug. */
static int db_fail(up_req *u, const char *what)
{
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, u->r, GMCP_LOGNO(0141)
                  "gemini_mcp: database error while %s: %s", what,
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
    ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, u->r, GMCP_LOGNO(0146)
                  "gemini_mcp: upload %s: cannot use the spool file %s%s; the offset "
                  "stays at %" APR_INT64_T_FMT, x->id, path,
                  APR_STATUS_IS_EACCES(rv) ? " (is GeminiMCPUploadDir writable by the httpd "
                  "user?)" : "", x->offset);
    apr_table_setn(u->r->err_headers_out, "Retry-After", full ? "60" : "5");
    return answer(u, full ? HTTP_INSUFFICIENT_STORAGE : HTTP_SERVICE_UNAVAILABLE,
                  full ? "the upload spool is full; try again later"
                       : "the upload spool cannot be written; try again later");
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
    if (!u->scratch) apr_pool_create(&u->scratch, u->r->pool);
    else apr_pool_clear(u->scratch);
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

static const char *spool_path(up_req *u, const char *id)
{
    return apr_pstrcat(u->r->pool, u->dir, "/", id, NULL);
}

/* Unfinished uploads expire after their last PATCH, finished ones after they were kept
 * long enough for relays (both GeminiMCPUploadExpiry); gmcpctl cleanup removes them. */
static int expired(const gmcp_upload *x)
{
    return x->expires < gmcp_now_sec();
}

/* The caller's upload, or an answer: 404 (missing or another owner's), 410 (terminated
 * or expired). Returns OK when *x is usable. */
static int load(up_req *u, const char *id, gmcp_upload *x, int *done)
{
    int rv;
    *done = 1;
    if (!gmcp_upload_id_ok(id)) return answer(u, HTTP_NOT_FOUND, "no such upload");
    if (db_open(u)) return db_fail(u, "opening the upload store");
    rv = gmcp_upload_get(&u->dbh->db, id, u->acc->principal, x);
    if (rv == GMCP_DB_ERROR) return db_fail(u, "reading an upload");
    if (rv == GMCP_NOT_FOUND) return answer(u, HTTP_NOT_FOUND, "no such upload");
    if (!strcmp(x->state, GMCP_UPLOAD_TERMINATED))
        return answer(u, HTTP_GONE, "this upload was terminated");
    if (expired(x))
        return answer(u, HTTP_GONE, strcmp(x->state, GMCP_UPLOAD_COMPLETE)
                      ? "this upload expired before it was completed; start over"
                      : "this upload expired and was removed from the spool");
    *done = 0;
    return OK;
}

/* ---- the lease ---------------------------------------------------------------------------- */

/* ---- the file ---------------------------------------------------------------------------- */

/* The running SHA-256 at x->offset: as saved with the offset, or (a row from before
 * the state was kept) read back from the spool file in blocks. */
static gmcp_sha256 *resume_hash(up_req *u, const gmcp_upload *x)
{
    gmcp_sha256 *h = gmcp_sha256_make(u->r->pool);
    apr_file_t *f;
    apr_int64_t left = x->offset;
    char *buf;
    if (x->sha_state && gmcp_sha256_load(h, x->sha_state) == 0
        && gmcp_sha256_bytes(h) == x->offset)
        return h;
    h = gmcp_sha256_make(u->r->pool);
    if (!left) return h;
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, u->r, "gemini_mcp: upload %s: no saved hash "
                  "state at offset %" APR_INT64_T_FMT "; reading the spool file", x->id, left);
    if (apr_file_open(&f, spool_path(u, x->id), APR_FOPEN_READ | APR_FOPEN_BINARY, 0,
                      u->r->pool) != APR_SUCCESS)
        return NULL;
    buf = apr_palloc(u->r->pool, 65536);
    while (left > 0) {
        apr_size_t n = left < 65536 ? (apr_size_t)left : 65536;
        if (apr_file_read_full(f, buf, n, &n) != APR_SUCCESS) break;
        gmcp_sha256_update(h, buf, n);
        left -= (apr_int64_t)n;
    }
    apr_file_close(f);
    return left ? NULL : h;
}

static int complete(up_req *u, gmcp_upload *x, apr_int64_t length, const gmcp_sha256 *h)
{
    const char *sha;
    if (gmcp_sha256_bytes(h) != length) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, u->r, GMCP_LOGNO(0142)
                      "gemini_mcp: upload %s: hashed %" APR_INT64_T_FMT " bytes of %"
                      APR_INT64_T_FMT, x->id, gmcp_sha256_bytes(h), length);
        return -1;
    }
    sha = gmcp_sha256_result(u->r->pool, h);
    if (db_open(u) || gmcp_upload_complete(&u->dbh->db, x->id, length, sha, gmcp_now_sec(),
                                           gmcp_now_sec() + gmcp_conf_upload_expiry(u->sc)))
        return -1;
    x->state = GMCP_UPLOAD_COMPLETE;
    x->sha256 = sha;
    return 0;
}

typedef struct {
    apr_int64_t got;        /* bytes of this request written */
    apr_int64_t committed;  /* of those, recorded in SQL */
    int too_big, aborted, io_error;
    int lost;               /* the spool file holds fewer bytes than the recorded offset */
    apr_status_t disk_rv;   /* io_error: the spool file's write or sync error, or 0 */
    const char *sniffed;    /* media type of the first bytes (offset 0 only) */
    int conflict;           /* ...contradicting the declared filetype */
} receipt;

/* Record `offset` (already on disk) with the hash state there, under our lease, which
 * this renews. */
static int record(up_req *u, const gmcp_upload *x, const char *token, apr_int64_t offset,
                  apr_int64_t length, const gmcp_sha256 *state)
{
    int acquired = 0, rv;
    if (db_scratch(u)) return -1;
    rv = gmcp_upload_advance(&u->dbh->db, x->id, token, offset, length,
                             gmcp_now_sec() + gmcp_conf_upload_expiry(u->sc),
                             gmcp_sha256_save(u->dbh->db.pool, state));
    if (rv == GMCP_FOUND) rv = gmcp_upload_lock(&u->dbh->db, x->id, token, LEASE_SECONDS, &acquired);
    gmcp_dbh_close(u->dbh);
    /* Recorded, and the lease renewed: both, or this request no longer writes. */
    return rv == 0 && acquired ? 0 : -1;
}

static int renew(up_req *u, const gmcp_upload *x, const char *token)
{
    int acquired = 0, rv;
    if (db_scratch(u)) return -1;
    rv = gmcp_upload_lock(&u->dbh->db, x->id, token, LEASE_SECONDS, &acquired);
    gmcp_dbh_close(u->dbh);
    return rv == 0 && acquired ? 0 : -1;
}

/* Everything received is written, hashed and on disk: record it. */
static int commit(up_req *u, gmcp_spool_writer *w, const gmcp_upload *x, const char *token,
                  apr_int64_t length, const gmcp_sha256 *h, apr_int64_t *bytes, receipt *rc)
{
    if ((rc->disk_rv = gmcp_spool_finish(w, bytes)) != APR_SUCCESS) return -1;
    return record(u, x, token, x->offset + *bytes, length, h);
}

/* Bytes seen so far, for the progress stream (advisory; failures only logged). */
static void report(up_req *u, const gmcp_upload *x, apr_int64_t bytes)
{
    if (db_scratch(u) == 0) {
        gmcp_upload_set_phase(&u->dbh->db, x->id, GMCP_PHASE_RECEIVING, bytes, NULL);
        gmcp_dbh_close(u->dbh);
    }
}

/* The first bytes of a file against its declared type. */
static void sniff(up_req *u, const gmcp_upload *x, const char *head, apr_size_t n,
                  receipt *rc)
{
    rc->sniffed = gmcp_sniff(u->r->pool, head, n);
    rc->conflict = gmcp_sniff_conflict(x->filetype, rc->sniffed);
}

/* What the syncer made durable, and when it was last recorded. */
typedef struct {
    apr_int64_t bytes;
    gmcp_sha256 *state;
    apr_time_t recorded;
} durability;

/* Record the latest durable point once it is COMMIT_BYTES past the last record, when
 * COMMIT_EVERY passed, or `now` (the client paused); on a slow upload ask for a
 * durable point now and then, and keep the lease either way. */
static int catch_up(up_req *u, gmcp_spool_writer *w, const gmcp_upload *x, const char *token,
                    apr_int64_t length, receipt *rc, durability *d, int now)
{
    apr_int64_t bytes;
    apr_time_t t = apr_time_now();
    if (gmcp_spool_durable(w, &bytes, d->state)) d->bytes = bytes;
    if (d->bytes > rc->committed && (now || d->bytes - rc->committed >= COMMIT_BYTES
                                     || t - d->recorded >= COMMIT_EVERY)) {
        if (record(u, x, token, x->offset + d->bytes, length, d->state)) return -1;
        rc->committed = d->bytes;
        d->recorded = t;
    }
    else if (t - d->recorded >= COMMIT_EVERY) {
        if ((rc->disk_rv = gmcp_spool_checkpoint(w)) != APR_SUCCESS || renew(u, x, token))
            return -1;
        d->recorded = t;
    }
    return 0;
}

/* Stream the request body to f at x->offset through w (which writes and hashes into h);
 * at most `room` bytes. With a checksum nothing is committed before the whole body
 * verified. The bandwidth limits (per upload and per caller) pause reading, so TCP
 * slows the sender. */
static void receive(up_req *u, gmcp_spool_writer *w, const gmcp_upload *x,
                    const char *token, apr_int64_t room, EVP_MD_CTX *ck, apr_int64_t length,
                    receipt *rc)
{
    request_rec *r = u->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_time_t last_report = 0, tat = 0;
    durability d = {0, gmcp_sha256_make(r->pool), apr_time_now()};
    apr_int64_t rate = u->dc->upload_rate, key_rate = u->dc->upload_key_rate;
    char *head = x->offset == 0 ? apr_palloc(r->pool, GMCP_SNIFF_BYTES) : NULL;
    apr_size_t head_len = 0;
    int eos = 0, pauses = 0;
    while (!eos) {
        apr_bucket *b;
        apr_int64_t before = rc->got;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_NONBLOCK_READ, 65536);
        if (APR_STATUS_IS_EAGAIN(rv) || (rv == APR_SUCCESS && APR_BRIGADE_EMPTY(bb))) {
            /* Nothing to read this moment: let pending writes and syncs finish and record
             * the durable point before waiting for the client. */
            gmcp_spool_settle(w);
            pauses++;
            if (!ck && !(head && !rc->sniffed)
                && catch_up(u, w, x, token, length, rc, &d, 1)) {
                rc->io_error = 1;
                break;
            }
            rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ, 65536);
        }
        if (rv != APR_SUCCESS) {
            rc->aborted = 1;
            break;
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t len;
            if (APR_BUCKET_IS_EOS(b)) { eos = 1; break; }
            if (APR_BUCKET_IS_METADATA(b)) continue;
            if (apr_bucket_read(b, &data, &len, APR_BLOCK_READ) != APR_SUCCESS) {
                rc->aborted = 1;
                eos = 1;
                break;
            }
            if (rc->got + (apr_int64_t)len > room) {
                rc->too_big = 1;
                eos = 1;
                break;
            }
            if (head && head_len < GMCP_SNIFF_BYTES) {
                apr_size_t take = len < GMCP_SNIFF_BYTES - head_len ? len
                                                                  : GMCP_SNIFF_BYTES - head_len;
                memcpy(head + head_len, data, take);
                head_len += take;
                if (head_len == GMCP_SNIFF_BYTES) {
                    sniff(u, x, head, head_len, rc);
                    if (rc->conflict) { eos = 1; break; }
                }
            }
            if (len && (rc->disk_rv = gmcp_spool_write(w, data, len)) != APR_SUCCESS) {
                rc->io_error = 1;
                eos = 1;
                break;
            }
            if (ck) EVP_DigestUpdate(ck, data, len);
            rc->got += (apr_int64_t)len;
        }
        apr_brigade_cleanup(bb);
        if (head && head_len && head_len < GMCP_SNIFF_BYTES && eos && !rc->sniffed
            && !rc->aborted && !rc->too_big && !rc->io_error)
            sniff(u, x, head, head_len, rc);        /* a body shorter than the sniff window */
        if (rc->conflict) break;
        if (!ck && !eos && !(head && !rc->sniffed)
            && catch_up(u, w, x, token, length, rc, &d, 0)) {
            rc->io_error = 1;
            break;
        }
        if (!eos && apr_time_now() - last_report >= PROGRESS_EVERY) {
            report(u, x, x->offset + rc->got);
            last_report = apr_time_now();
        }
        if (!eos && rc->got > before && (rate > 0 || key_rate > 0)) {
            apr_interval_time_t wait = 0, w2;
            if (rate > 0) wait = gmcp_throttle(&tat, apr_time_now(), rate, rc->got - before);
            if (key_rate > 0 && (w2 = gmcp_access_throttle(u->acc, key_rate, rc->got - before))
                > wait)
                wait = w2;
            if (wait > 0) apr_sleep(wait);
        }
    }
    ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r, "gemini_mcp: upload %s: %" APR_INT64_T_FMT
                  " bytes received, %d pauses caught up with, %" APR_INT64_T_FMT " recorded",
                  x->id, rc->got, pauses, rc->committed);
}

/* Append this request's body (PATCH, or creation-with-upload). Answers the request. */
static int append(up_req *u, gmcp_upload *x, int creating)
{
    request_rec *r = u->r;
    const char *ck_hdr = apr_table_get(r->headers_in, "Upload-Checksum");
    const char *algo = NULL, *token = gmcp_lease_token(r->pool), *path;
    unsigned char *want = NULL, got_md[EVP_MAX_MD_SIZE];
    apr_size_t want_len = 0;
    unsigned int got_len = 0;
    apr_int64_t length = x->length, room;
    EVP_MD_CTX *ck = NULL;
    gmcp_sha256 *h = NULL;
    gmcp_spool_writer *w = NULL;
    apr_file_t *f;
    receipt rc;
    int acquired = 0, failed = 0, mismatch = 0;

    memset(&rc, 0, sizeof(rc));
    if (!token) return answer(u, HTTP_INTERNAL_SERVER_ERROR, "no randomness for a lease");
    if (ck_hdr) {
        int c = gmcp_tus_checksum(r->pool, ck_hdr, &algo, &want, &want_len);
        if (c == -2) return answer(u, HTTP_BAD_REQUEST, "Upload-Checksum: unsupported algorithm "
                                   "(use sha256, sha1 or md5)");
        if (c) return answer(u, HTTP_BAD_REQUEST, "Upload-Checksum: expected '<algorithm> "
                             "<base64 digest>'");
    }
    room = (length >= 0 ? length : gmcp_conf_upload_max(u->dc)) - x->offset;
    if (length < 0 && u->dc->upload_quota >= 0) {
        /* Deferred length: the quota bounds what may still arrive. */
        apr_int64_t used = 0;
        if (db_open(u) || gmcp_upload_spool_used(&u->dbh->db, u->acc->principal, &used))
            return db_fail(u, "reading spool usage");
        gmcp_dbh_close(u->dbh);
        if ((apr_int64_t)u->dc->upload_quota - used < room)
            room = (apr_int64_t)u->dc->upload_quota - used;
        if (room < 0) room = 0;
    }

    /* The lease: one writer per upload, across processes and nodes. */
    if (db_open(u)) return db_fail(u, "opening the upload store");
    if (gmcp_upload_lock(&u->dbh->db, x->id, token, LEASE_SECONDS, &acquired))
        return db_fail(u, "locking an upload");
    if (acquired && !creating) {
        /* The offset this request was checked against was read before the lease: the
         * PATCH that held it may have recorded more since (a client that gave up on it
         * and went on from an older HEAD). Cutting the file back to the stale offset
         * would lose bytes the row counts as durable: only the current offset goes. */
        gmcp_upload now;
        int st = gmcp_upload_get(&u->dbh->db, x->id, u->acc->principal, &now);
        if (st == GMCP_DB_ERROR) {
            gmcp_upload_unlock(&u->dbh->db, x->id, token);
            return db_fail(u, "reading an upload");
        }
        if (st != GMCP_FOUND || now.offset != x->offset || strcmp(now.state, x->state)) {
            gmcp_upload_unlock(&u->dbh->db, x->id, token);
            gmcp_dbh_close(u->dbh);
            apr_table_setn(r->err_headers_out, "Upload-Offset",
                           apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                        st == GMCP_FOUND ? now.offset : x->offset));
            return answer(u, HTTP_CONFLICT, "the upload moved on while this request waited "
                          "for it; HEAD for the current offset");
        }
    }
    gmcp_dbh_close(u->dbh);
    if (!acquired) {
        apr_table_setn(r->err_headers_out, "Retry-After", "1");
        return answer(u, HTTP_LOCKED, "another request is writing to this upload");
    }

    path = spool_path(u, x->id);
    /* Only the first bytes may create the file: later ones continue one that holds at
     * least the recorded offset. A file that is gone or shorter (a restore without the
     * spool, a disk replaced) must not be padded into a "complete" upload. */
    if ((rc.disk_rv = apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_BINARY
                                    | (x->offset ? 0 : APR_FOPEN_CREATE),
                                    APR_FPROT_UREAD | APR_FPROT_UWRITE, r->pool))
        != APR_SUCCESS) {
        if (APR_STATUS_IS_ENOENT(rc.disk_rv)) {
            rc.lost = 1;
            rc.disk_rv = APR_SUCCESS;
        }
        goto unlock;
    }
    {
        apr_finfo_t fi;
        if ((rc.disk_rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f)) != APR_SUCCESS
            || fi.size < (apr_off_t)x->offset) {
            rc.lost = rc.disk_rv == APR_SUCCESS;
            apr_file_close(f);
            goto unlock;
        }
    }
    {
        /* Whatever lies past the durable offset (a write cut short) goes. */
        apr_off_t at = (apr_off_t)x->offset;
        if ((rc.disk_rv = apr_file_trunc(f, at)) != APR_SUCCESS
            || (rc.disk_rv = apr_file_seek(f, APR_SET, &at)) != APR_SUCCESS) {
            apr_file_close(f);
            goto unlock;
        }
    }
    if (!(h = resume_hash(u, x))) {
        rc.disk_rv = APR_EINCOMPLETE;      /* the spool file is shorter than the offset */
        apr_file_close(f);
        goto unlock;
    }
    if (algo) {
        ck = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ck, !strcmp(algo, "sha256") ? EVP_sha256()
                              : !strcmp(algo, "sha1") ? EVP_sha1() : EVP_md5(), NULL);
    }
    if (!(w = gmcp_spool_open(r->pool, f, h))) {
        if (ck) EVP_MD_CTX_free(ck);
        apr_file_close(f);
        failed = 1;
        goto unlock;
    }
    receive(u, w, x, token, room, ck, length, &rc);
    if (ck) {
        EVP_DigestFinal_ex(ck, got_md, &got_len);
        EVP_MD_CTX_free(ck);
        mismatch = !rc.aborted && !rc.too_big
                   && (got_len != want_len || memcmp(got_md, want, got_len) != 0);
    }
    if (rc.io_error) {
        failed = 1;
    }
    else if ((ck && (mismatch || rc.aborted)) || rc.too_big || rc.conflict) {
        /* Discard the whole chunk: the offset stays where it was. */
        apr_off_t at = (apr_off_t)(x->offset + rc.committed);
        gmcp_spool_close(w);
        w = NULL;
        apr_file_trunc(f, at);
    }
    else if (rc.got > rc.committed) {
        apr_int64_t all = 0;
        if (commit(u, w, x, token, length, h, &all, &rc) || all != rc.got) failed = 1;
        else rc.committed = rc.got;
    }
    if (w) gmcp_spool_close(w);
    apr_file_close(f);
    x->offset += rc.committed;

unlock:
    if (db_open(u) == 0) {
        if (rc.sniffed && !rc.conflict) gmcp_upload_set_sniffed(&u->dbh->db, x->id, rc.sniffed);
        if (!failed && rc.committed)
            gmcp_upload_set_phase(&u->dbh->db, x->id, GMCP_PHASE_RECEIVING, x->offset, NULL);
        gmcp_upload_unlock(&u->dbh->db, x->id, token);
        gmcp_dbh_close(u->dbh);
    }
    if (rc.lost) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, GMCP_LOGNO(0147)
                      "gemini_mcp: upload %s: its spool file %s is missing or holds fewer "
                      "than the %" APR_INT64_T_FMT " bytes recorded; refusing to continue it",
                      x->id, path, x->offset);
        return answer(u, HTTP_GONE, "the bytes received so far are gone from the server's "
                      "spool; start the upload over");
    }
    if (rc.disk_rv) return disk_fail(u, x, path, rc.disk_rv);
    if (failed) return db_fail(u, "storing upload bytes");
    if (rc.too_big)
        return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, length >= 0
                      ? "the body goes past Upload-Length"
                      : "the upload exceeds Tus-Max-Size or your spool quota");
    if (rc.conflict)
        return answer(u, HTTP_UNSUPPORTED_MEDIA_TYPE, apr_psprintf(r->pool, "the content is "
                      "%s but Upload-Metadata's filetype says %s; the chunk was discarded",
                      rc.sniffed, x->filetype));
    if (mismatch)
        return answer(u, 460, apr_psprintf(r->pool, "Checksum Mismatch: the %s of this "
                                           "request's body differs; the chunk was discarded",
                                           algo));
    if (length >= 0 && x->offset == length && complete(u, x, length, h))
        return db_fail(u, "completing an upload");
    apr_table_setn(r->err_headers_out, "Upload-Offset",
                   apr_psprintf(r->pool, "%" APR_INT64_T_FMT, x->offset));
    if (strcmp(x->state, GMCP_UPLOAD_COMPLETE) != 0)
        apr_table_setn(r->err_headers_out, "Upload-Expires",
                       http_date(r->pool, gmcp_now_sec() + gmcp_conf_upload_expiry(u->sc)));
    if (creating) return OK;
    return answer(u, HTTP_NO_CONTENT, NULL);
}

/* ---- methods ------------------------------------------------------------------------------ */

static int do_patch(up_req *u, const char *id)
{
    request_rec *r = u->r;
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    const char *len_hdr = apr_table_get(r->headers_in, "Upload-Length");
    apr_int64_t off, len;
    gmcp_upload x;
    int done, st = load(u, id, &x, &done);
    gmcp_dbh_close(u->dbh);
    if (done) return st;
    if (!strncmp(x.concat, "final", 5))
        return answer(u, HTTP_FORBIDDEN, "a final (concatenated) upload takes no PATCH");
    if (!ct || strcasecmp(ct, "application/offset+octet-stream") != 0)
        return answer(u, HTTP_UNSUPPORTED_MEDIA_TYPE,
                      "Content-Type must be application/offset+octet-stream");
    if (gmcp_tus_offset_parse(apr_table_get(r->headers_in, "Upload-Offset"), &off))
        return answer(u, HTTP_BAD_REQUEST, "Upload-Offset is missing or not a whole number");
    if (off != x.offset) {
        apr_table_setn(r->err_headers_out, "Upload-Offset",
                       apr_psprintf(r->pool, "%" APR_INT64_T_FMT, x.offset));
        return answer(u, HTTP_CONFLICT, apr_psprintf(r->pool, "Upload-Offset %" APR_INT64_T_FMT
                      " is not this upload's offset (%" APR_INT64_T_FMT ")", off, x.offset));
    }
    if (len_hdr) {
        if (gmcp_tus_offset_parse(len_hdr, &len)) return answer(u, HTTP_BAD_REQUEST,
                                                    "Upload-Length is not a whole number");
        if (x.length >= 0 && len != x.length)
            return answer(u, HTTP_BAD_REQUEST, "Upload-Length cannot change once set");
        if (len > (apr_int64_t)gmcp_conf_upload_max(u->dc) || len < x.offset)
            return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, "Upload-Length exceeds Tus-Max-Size");
        x.length = len;
    }
    if (!strcmp(x.state, GMCP_UPLOAD_COMPLETE)) {
        /* Nothing more can go in, and nothing is done again (hash, phase). */
        const char *cl = apr_table_get(r->headers_in, "Content-Length");
        if (apr_table_get(r->headers_in, "Transfer-Encoding") || (cl && strcmp(cl, "0") != 0))
            return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, "this upload is already complete");
        apr_table_setn(r->err_headers_out, "Upload-Offset",
                       apr_psprintf(r->pool, "%" APR_INT64_T_FMT, x.offset));
        return answer(u, HTTP_NO_CONTENT, NULL);
    }
    return append(u, &x, 0);
}

static int do_head(up_req *u, const char *id)
{
    request_rec *r = u->r;
    gmcp_upload x;
    int done, st = load(u, id, &x, &done);
    gmcp_dbh_close(u->dbh);
    if (done) return st;
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
    return OK;
}

static int do_delete(up_req *u, const char *id)
{
    gmcp_upload x;
    int done, st = load(u, id, &x, &done), rv;
    if (done) return st;
    rv = gmcp_upload_terminate(&u->dbh->db, x.id, u->acc->principal);
    gmcp_dbh_close(u->dbh);
    if (rv == GMCP_DB_ERROR) return db_fail(u, "terminating an upload");
    apr_file_remove(spool_path(u, x.id), u->r->pool);
    return answer(u, HTTP_NO_CONTENT, NULL);
}

/* ---- progress ---------------------------------------------------------------------------- */

typedef struct {
    apr_int64_t bytes[16], at[16];   /* samples of this phase (ring), ms */
    int n, first;
    char phase[16];
} rate_window;

static const char *phase_of(const gmcp_upload *x)
{
    if (!strcmp(x->state, GMCP_UPLOAD_TERMINATED)) return "terminated";
    if (expired(x)) return "expired";
    return x->phase;
}

static int phase_final(const char *phase)
{
    return !strcmp(phase, GMCP_PHASE_ACTIVE) || !strcmp(phase, GMCP_PHASE_FAILED)
           || !strcmp(phase, "terminated") || !strcmp(phase, "expired");
}

/* One progress report: phase, bytes of the phase, total, rate (bytes/s over the last
 * few seconds of samples) and ETA (seconds; null while unknown). */
static json_t *progress_json(const gmcp_upload *x, rate_window *w, apr_int64_t now_ms)
{
    const char *phase = phase_of(x);
    apr_int64_t bytes = x->progress, at = x->progress_at;
    double rate = 0;
    json_t *o;
    int i, last;
    if (!strcmp(phase, GMCP_PHASE_RECEIVING) && x->offset > bytes) bytes = x->offset;
    if (!strcmp(phase, GMCP_PHASE_RECEIVED) || !strcmp(phase, GMCP_PHASE_PROCESSING)
        || !strcmp(phase, GMCP_PHASE_ACTIVE))
        bytes = x->length;
    if (strcmp(w->phase, phase) != 0) {
        w->n = w->first = 0;
        apr_cpystrn(w->phase, phase, sizeof(w->phase));
    }
    last = (w->first + w->n - 1) % 16;
    if (at > 0 && (!w->n || w->bytes[last] != bytes || w->at[last] != at)) {   /* 0: none yet */
        if (w->n == 16) { w->first = (w->first + 1) % 16; w->n--; }
        last = (w->first + w->n) % 16;
        w->bytes[last] = bytes;
        w->at[last] = at;
        w->n++;
    }
    while (w->n > 2 && w->at[last] - w->at[w->first] > RATE_WINDOW_MS) {
        w->first = (w->first + 1) % 16;
        w->n--;
    }
    i = w->first;
    if (w->n >= 2 && w->at[last] > w->at[i] && now_ms - w->at[last] < STALLED_MS)
        rate = (double)(w->bytes[last] - w->bytes[i]) * 1000.0 / (double)(w->at[last] - w->at[i]);
    if (rate < 1) rate = 0;
    o = json_pack("{s:s, s:s, s:I, s:I, s:I}", "upload_id", x->id, "phase", phase,
                  "bytes", (json_int_t)bytes, "offset", (json_int_t)x->offset,
                  "rate", (json_int_t)(rate + 0.5));
    json_object_set_new(o, "length", x->length >= 0 ? json_integer(x->length) : json_null());
    json_object_set_new(o, "eta", rate > 0 && x->length >= 0 && !phase_final(phase)
                        ? json_real((double)(apr_int64_t)((double)(x->length - bytes) / rate
                                                          * 10 + 0.5) / 10)
                        : json_null());
    if (*x->detail) json_object_set_new(o, !strcmp(phase, GMCP_PHASE_ACTIVE) ? "file" : "detail",
                                        json_string(x->detail));
    if (*x->sniffed) json_object_set_new(o, "sniffed_type", json_string(x->sniffed));
    return o;
}

/* GET on an upload: its progress now (JSON), or with Accept: text/event-stream a stream
 * of "progress" events until it is active, failed, terminated or expired (or nothing
 * changed for a minute; the client may reconnect). */
static int do_get(up_req *u, const char *id)
{
    request_rec *r = u->r;
    gmcp_upload x;
    rate_window w;
    apr_time_t last_news, last_write;
    apr_pool_t *it, *rows[2];
    char *last_text = NULL;
    int done, cur = 0, st = load(u, id, &x, &done);
    apr_int64_t seq = 0;
    gmcp_dbh_close(u->dbh);
    if (done) return st;
    memset(&w, 0, sizeof(w));
    if (!gmcp_http_accepts(r, "text/event-stream")
        || gmcp_http_accepts(r, "application/json"))
        return gmcp_send_json(r, HTTP_OK,
                              progress_json(&x, &w, apr_time_as_msec(apr_time_now())));
    gmcp_sse_headers(r);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    last_news = last_write = apr_time_now();
    /* A stream may last hours: each poll's row lives in one of two pools (the current
     * one and the next), everything else in one emptied every round. */
    apr_pool_create(&it, r->pool);
    apr_pool_create(&rows[0], r->pool);
    apr_pool_create(&rows[1], r->pool);
    for (;;) {
        json_t *ev = progress_json(&x, &w, apr_time_as_msec(apr_time_now()));
        char *text = json_dumps(ev, JSON_COMPACT);
        const char *phase = apr_pstrdup(it, json_string_value(json_object_get(ev, "phase")));
        gmcp_upload next;
        json_decref(ev);
        if (!text) break;
        if (!last_text || strcmp(text, last_text) != 0) {
            int bad = gmcp_sse_write(r, apr_psprintf(it, "id: %" APR_INT64_T_FMT
                                                     "\nevent: progress\ndata: %s\n\n",
                                                     ++seq, text));
            free(last_text);
            last_text = text;
            last_news = last_write = apr_time_now();
            if (bad) break;
        }
        else {
            free(text);
        }
        if (phase_final(phase) || apr_time_now() - last_news > STREAM_IDLE) break;
        if (apr_time_now() - last_write > STREAM_PING) {
            if (gmcp_sse_write(r, ": keep-alive\n\n")) break;
            last_write = apr_time_now();
        }
        apr_pool_clear(it);
        apr_sleep(STREAM_POLL);
        if (r->connection->aborted) break;
        apr_pool_clear(rows[cur ^ 1]);
        if (db_open(u)) break;
        u->dbh->db.pool = rows[cur ^ 1];
        st = gmcp_upload_get(&u->dbh->db, id, u->acc->principal, &next);
        gmcp_dbh_close(u->dbh);
        if (st != GMCP_FOUND) break;
        x = next;
        cur ^= 1;
    }
    free(last_text);
    return OK;
}

/* Concatenate finished partial uploads (same owner) into a new, complete upload. */
static int create_final(up_req *u, gmcp_upload *x, const char *list)
{
    request_rec *r = u->r;
    apr_array_header_t *urls = gmcp_tus_concat_parse(r->pool, list);
    apr_array_header_t *parts = apr_array_make(r->pool, 8, sizeof(gmcp_upload));
    apr_int64_t total = 0;
    apr_file_t *out;
    char *buf = apr_palloc(r->pool, 65536);
    gmcp_sha256 *h = gmcp_sha256_make(r->pool);
    const char *sniffed = NULL;
    apr_status_t fs;
    int i, rv;

    if (db_open(u)) return db_fail(u, "opening the upload store");
    for (i = 0; urls && i < urls->nelts; i++) {
        const gmcp_concat_part *part = &APR_ARRAY_IDX(urls, i, gmcp_concat_part);
        const char *url = part->url;
        gmcp_upload *pt = apr_array_push(parts);
        rv = part->id ? gmcp_upload_get(&u->dbh->db, part->id, u->acc->principal, pt)
                      : GMCP_NOT_FOUND;
        if (rv == GMCP_DB_ERROR) return db_fail(u, "reading partial uploads");
        if (rv == GMCP_NOT_FOUND || strcmp(pt->concat, "partial") != 0
            || strcmp(pt->state, GMCP_UPLOAD_COMPLETE) != 0) {
            gmcp_dbh_close(u->dbh);
            return answer(u, HTTP_BAD_REQUEST, apr_psprintf(r->pool, "Upload-Concat: %s is not "
                          "a finished partial upload of yours", url));
        }
        total += pt->length;
        x->parts = *x->parts ? apr_pstrcat(r->pool, x->parts, " ", pt->id, NULL) : pt->id;
    }
    gmcp_dbh_close(u->dbh);
    if (!parts->nelts) return answer(u, HTTP_BAD_REQUEST, "Upload-Concat: final needs a list "
                                     "of partial uploads");
    if (total > (apr_int64_t)gmcp_conf_upload_max(u->dc))
        return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, "the concatenation exceeds Tus-Max-Size");
    x->length = total;
    if ((fs = apr_file_open(&out, spool_path(u, x->id), APR_FOPEN_WRITE | APR_FOPEN_CREATE
                            | APR_FOPEN_TRUNCATE | APR_FOPEN_BINARY,
                            APR_FPROT_UREAD | APR_FPROT_UWRITE, r->pool)) != APR_SUCCESS)
        return disk_fail(u, x, spool_path(u, x->id), fs);
    for (i = 0; i < parts->nelts; i++) {
        const char *part = spool_path(u, APR_ARRAY_IDX(parts, i, gmcp_upload).id);
        apr_file_t *in;
        apr_status_t st;
        apr_size_t n;
        if ((fs = apr_file_open(&in, part, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, r->pool))
            != APR_SUCCESS) {
            apr_file_close(out);
            return disk_fail(u, x, part, fs);
        }
        do {
            n = 65536;
            st = apr_file_read_full(in, buf, n, &n);
            if (n && !sniffed && gmcp_sha256_bytes(h) == 0) {
                sniffed = gmcp_sniff(r->pool, buf, n < GMCP_SNIFF_BYTES ? n : GMCP_SNIFF_BYTES);
                if (gmcp_sniff_conflict(x->filetype, sniffed)) {
                    apr_file_close(in);
                    apr_file_close(out);
                    apr_file_remove(spool_path(u, x->id), r->pool);
                    return answer(u, HTTP_UNSUPPORTED_MEDIA_TYPE, apr_psprintf(r->pool,
                                  "the content is %s but Upload-Metadata's filetype says %s",
                                  sniffed, x->filetype));
                }
            }
            if (n && (fs = apr_file_write_full(out, buf, n, NULL)) != APR_SUCCESS) {
                apr_file_close(in);
                apr_file_close(out);
                return disk_fail(u, x, spool_path(u, x->id), fs);
            }
            gmcp_sha256_update(h, buf, n);
        } while (st == APR_SUCCESS);
        apr_file_close(in);
        if (st != APR_EOF) {
            apr_file_close(out);
            return disk_fail(u, x, part, st);
        }
    }
    if ((fs = apr_file_datasync(out)) != APR_SUCCESS) {
        apr_file_close(out);
        return disk_fail(u, x, spool_path(u, x->id), fs);
    }
    apr_file_close(out);
    x->offset = total;
    if (db_open(u) || gmcp_upload_create(&u->dbh->db, x)
        || (sniffed && gmcp_upload_set_sniffed(&u->dbh->db, x->id, sniffed)))
        return db_fail(u, "creating an upload");
    gmcp_dbh_close(u->dbh);
    if (complete(u, x, total, h)) return db_fail(u, "completing an upload");
    gmcp_dbh_close(u->dbh);
    return OK;
}

static int do_post(up_req *u)
{
    request_rec *r = u->r;
    const char *len_hdr = apr_table_get(r->headers_in, "Upload-Length");
    const char *defer = apr_table_get(r->headers_in, "Upload-Defer-Length");
    const char *meta = apr_table_get(r->headers_in, "Upload-Metadata");
    const char *concat = apr_table_get(r->headers_in, "Upload-Concat");
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    const char *err = NULL, *fname, *base;
    apr_table_t *md;
    gmcp_upload x;
    apr_int64_t now = gmcp_now_sec();
    int kind = gmcp_tus_concat_kind(concat), is_final = kind == GMCP_CONCAT_FINAL, st;

    memset(&x, 0, sizeof(x));
    x.length = -1;
    if (kind == GMCP_CONCAT_INVALID)
        return answer(u, HTTP_BAD_REQUEST, "Upload-Concat must be 'partial' or 'final;<urls>'");
    if (!is_final) {
        if ((len_hdr != NULL) == (defer != NULL))
            return answer(u, HTTP_BAD_REQUEST, "give exactly one of Upload-Length and "
                          "Upload-Defer-Length");
        if (defer && strcmp(defer, "1") != 0)
            return answer(u, HTTP_BAD_REQUEST, "Upload-Defer-Length must be 1");
        if (len_hdr && gmcp_tus_offset_parse(len_hdr, &x.length))
            return answer(u, HTTP_BAD_REQUEST, "Upload-Length is not a whole number");
        if (x.length > (apr_int64_t)gmcp_conf_upload_max(u->dc))
            return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, apr_psprintf(r->pool,
                          "Upload-Length exceeds Tus-Max-Size (%" APR_OFF_T_FMT ")",
                          gmcp_conf_upload_max(u->dc)));
    }
    else if (len_hdr) {
        return answer(u, HTTP_BAD_REQUEST, "a final upload takes no Upload-Length");
    }
    if (gmcp_tus_metadata(r->pool, meta, &md, &err)) return answer(u, HTTP_BAD_REQUEST, err);
    if (!is_final && u->dc->upload_quota >= 0) {
        apr_int64_t used = 0;
        if (db_open(u) || gmcp_upload_spool_used(&u->dbh->db, u->acc->principal, &used))
            return db_fail(u, "reading spool usage");
        gmcp_dbh_close(u->dbh);
        if (used + (x.length > 0 ? x.length : 0) > (apr_int64_t)u->dc->upload_quota)
            return answer(u, HTTP_REQUEST_ENTITY_TOO_LARGE, apr_psprintf(r->pool,
                          "your uploads would take more than your spool quota (%" APR_OFF_T_FMT
                          " bytes; %" APR_INT64_T_FMT " in use): finish, relay or terminate "
                          "some first", u->dc->upload_quota, used));
    }
    fname = apr_table_get(md, "filename");
    if (fname && !gmcp_tus_filename_ok(fname))
        return answer(u, HTTP_BAD_REQUEST, "Upload-Metadata: filename must be a plain file "
                      "name (no path, no control characters, at most 255 bytes)");
    x.filetype = apr_table_get(md, "filetype") ? apr_table_get(md, "filetype") : "";
    if (strlen(x.filetype) > 255 || strpbrk(x.filetype, "\r\n,;\"") )
        return answer(u, HTTP_BAD_REQUEST, "Upload-Metadata: filetype is not a media type");
    do {    /* never a leading '-': the id is also a command-line argument (gmcpctl) */
        x.id = gmcp_random_id(r->pool, ID_BYTES);
    } while (x.id && x.id[0] == '-');
    if (!x.id) return answer(u, HTTP_INTERNAL_SERVER_ERROR, "no randomness for an upload id");
    x.owner = u->acc->principal;
    x.key_id = u->acc->key_id ? u->acc->key_id : "";
    x.metadata = meta ? meta : "";
    x.filename = fname ? fname : "";
    x.concat = concat ? concat : "";
    x.parts = "";
    x.sha256 = "";
    x.state = GMCP_UPLOAD_RECEIVING;
    x.created = now;
    x.expires = now + gmcp_conf_upload_expiry(u->sc);

    base = r->uri;
    {
        apr_size_t n = strlen(base);
        while (n > 1 && base[n - 1] == '/') n--;
        base = apr_pstrndup(r->pool, base, n);
    }
    apr_table_setn(r->err_headers_out, "Location",
                   ap_construct_url(r->pool, apr_pstrcat(r->pool, base, "/", x.id, NULL), r));
    if (is_final) {
        if ((st = create_final(u, &x, concat)) != OK || r->status >= 400) return st;
        return answer(u, HTTP_CREATED, NULL);
    }
    if (db_open(u) || gmcp_upload_create(&u->dbh->db, &x)) return db_fail(u, "creating an upload");
    gmcp_dbh_close(u->dbh);
    apr_table_setn(r->err_headers_out, "Upload-Expires", http_date(r->pool, x.expires));
    if (x.length == 0) {
        apr_file_t *f;
        apr_status_t rv = apr_file_open(&f, spool_path(u, x.id), APR_FOPEN_WRITE
                                        | APR_FOPEN_CREATE | APR_FOPEN_BINARY,
                                        APR_FPROT_UREAD | APR_FPROT_UWRITE, r->pool);
        if (rv != APR_SUCCESS) return disk_fail(u, &x, spool_path(u, x.id), rv);
        apr_file_close(f);
        if (complete(u, &x, 0, gmcp_sha256_make(r->pool))) return db_fail(u, "completing an upload");
        gmcp_dbh_close(u->dbh);
    }
    else if (ct && !strcasecmp(ct, "application/offset+octet-stream")) {
        /* creation-with-upload: the body carries the first bytes. */
        if ((st = append(u, &x, 1)) != OK || r->status >= 400) return st;
    }
    return answer(u, HTTP_CREATED, NULL);
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
        && (!strcmp(override, "PATCH") || !strcmp(override, "DELETE")
            || !strcmp(override, "HEAD")))
        method = override;

    if (!gmcp_request_origin_ok(r, u->dc)) return answer(u, HTTP_FORBIDDEN,
                                                       "Origin or Host is not allowed");
    gmcp_access_cors(r);
    if (apr_table_get(r->headers_in, "Origin"))
        apr_table_setn(r->err_headers_out, "Access-Control-Expose-Headers", TUS_EXPOSE);
    if (!strcmp(method, "OPTIONS")) return do_options(u);   /* no auth, no Tus-Resumable */

    tusv = apr_table_get(r->headers_in, "Tus-Resumable");
    if (!tusv || strcmp(tusv, TUS_VERSION) != 0) {
        apr_table_setn(r->err_headers_out, "Tus-Version", TUS_VERSION);
        return answer(u, HTTP_PRECONDITION_FAILED, "Tus-Resumable: 1.0.0 is required");
    }
    if (!u->dir) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, GMCP_LOGNO(0144)
                      "gemini_mcp: SetHandler gemini-mcp-upload needs GeminiMCPUploadDir");
        return answer(u, HTTP_SERVICE_UNAVAILABLE, "uploads are not configured on this server");
    }
    if ((st = gmcp_access_identify(r, u->dc, &u->acc)) != OK) return OK;
    if ((st = gmcp_access_admit(r, u->acc, "upload", NULL, 0, NULL)) != OK) return OK;

    id = gmcp_url_last_segment(r->pool, r->uri);
    if (!strcmp(method, "POST") && !gmcp_upload_id_ok(id)) return do_post(u);
    if (!strcmp(method, "PATCH")) return do_patch(u, id);
    if (!strcmp(method, "HEAD") || (r->method_number == M_GET && r->header_only))
        return do_head(u, id);
    if (r->method_number == M_GET) return do_get(u, id);
    if (!strcmp(method, "DELETE")) return do_delete(u, id);
    apr_table_setn(r->err_headers_out, "Allow", "POST, GET, HEAD, PATCH, DELETE, OPTIONS");
    return answer(u, HTTP_METHOD_NOT_ALLOWED, "use POST to create, PATCH to append, HEAD for "
                  "the offset, GET for progress, DELETE to terminate");
}
