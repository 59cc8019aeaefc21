/* gmcp_upload_body.h — one request's bytes into an upload, without httpd.
 *
 * A PATCH (or a creation-with-upload) continues the spool file at the durable offset
 * with the running SHA-256 there, then hands its body over piece by piece: each piece is
 * held against the room left, the first bytes of a file (offset 0) are sniffed against
 * its declared filetype, and every byte goes to the spool writer and to the request's
 * own checksum (Upload-Checksum). When the body ended, its receipt says what became of
 * the bytes: recorded, discarded (the offset stays where it was), or lost to an error. */
#ifndef GMCP_UPLOAD_BODY_H
#define GMCP_UPLOAD_BODY_H

#include <apr_file_io.h>
#include "gmcp_sha256.h"
#include "gmcp_spool.h"
#include "gmcp_uploads.h"

/* The spool file continued at `offset`: opened for writing (created only when
 * `may_create`: an upload made before its spool file was created with it, at offset 0;
 * otherwise the bytes continue a file that holds at least the recorded offset), cut back
 * to the offset (whatever lies past it is a write cut short) and positioned there.
 * APR_SUCCESS with *f. Otherwise an error, with *lost 1 when the file is gone or holds
 * fewer bytes than the offset (a restore without the spool, a disk replaced, a node that
 * does not share the spool: never to be padded into a "complete" upload); the file is
 * closed. */
apr_status_t gmcp_upload_spool_continue(apr_pool_t *p, const char *path, apr_int64_t offset,
                                        int may_create, apr_file_t **f, int *lost);

/* The running SHA-256 at x->offset: as saved with the offset, or (a row from before the
 * state was kept; *reread 1) read back from the spool file at path. NULL when the file
 * holds fewer bytes. */
gmcp_sha256 *gmcp_upload_resume_hash(apr_pool_t *p, const char *path, const gmcp_upload *x,
                                     int *reread);

/* The bytes a request may still add at `offset`: up to the length, or with the length
 * deferred (< 0) up to max and, with a spool quota (>= 0), what the owner's `used`
 * bytes leave of it. */
apr_int64_t gmcp_upload_room(apr_int64_t length, apr_int64_t offset, apr_int64_t max,
                             apr_int64_t quota, apr_int64_t used);

/* What one request did to an upload. */
typedef struct {
    apr_int64_t got;       /* bytes of this request written */
    apr_int64_t committed; /* of those, recorded in SQL */
    int too_big, aborted, io_error;
    int lost;             /* the spool file holds fewer bytes than the recorded offset */
    apr_status_t disk_rv; /* the spool file's open, write or sync error, or 0 */
    const char *sniffed;  /* media type of the first bytes (offset 0 only) */
    int conflict;         /* ...contradicting the declared filetype */
    int mismatch;         /* the body differs from its Upload-Checksum */
} gmcp_receipt;

struct evp_md_ctx_st;

typedef struct {
    apr_pool_t *pool;
    gmcp_spool_writer *w;
    gmcp_receipt *rc;
    apr_int64_t room;         /* at most this many bytes may come */
    const char *filetype;     /* as declared in Upload-Metadata, or "" */
    const char *algo;         /* Upload-Checksum's algorithm, or NULL */
    struct evp_md_ctx_st *ck; /* ...its digest of the body so far */
    char *head;               /* the first bytes (offset 0 only), until sniffed */
    apr_size_t head_len;
} gmcp_upload_body;

/* Start a body at x's offset that writes through w into the receipt rc (which may
 * already hold what came before); the digest of `algo` (sha256, sha1, md5, or NULL for
 * none) is freed with p or by gmcp_body_verify. */
void gmcp_body_start(gmcp_upload_body *b, apr_pool_t *p, const gmcp_upload *x, apr_int64_t room,
                     const char *algo, gmcp_spool_writer *w, gmcp_receipt *rc);
/* One piece of the body: APR_SUCCESS; otherwise the body stops here, and the receipt says
 * why: APR_EINVAL when it is too big (rc->too_big) or its first bytes contradict the
 * filetype (rc->conflict), or the spool writer's error (rc->io_error, rc->disk_rv). */
apr_status_t gmcp_body_take(gmcp_upload_body *b, const char *data, apr_size_t len);
/* The body ended (its EOS): a body shorter than the sniff window is sniffed now. */
void gmcp_body_ended(gmcp_upload_body *b);
/* May durable points be recorded before the body ended? Not with a checksum (nothing
 * counts before the whole body verified), nor while the first bytes wait to be sniffed. */
int gmcp_body_may_record(const gmcp_upload_body *b);
/* The checksum against the digest the request promised (rc->mismatch). */
void gmcp_body_verify(gmcp_upload_body *b, const unsigned char *want, apr_size_t want_len);

/* What becomes of the bytes written, once the body ended and was verified (an outcome
 * the caller acts on, not a status). */
typedef enum {
    GMCP_BODY_KEEP = 0,    /* nothing more to record */
    GMCP_BODY_COMMIT = 1,  /* bytes past the last durable point: finish and record */
    GMCP_BODY_DISCARD = 2, /* the whole chunk goes: too big, wrong type or checksum */
    GMCP_BODY_FAILED = 3   /* the spool file or the store failed */
} gmcp_body_fate;
gmcp_body_fate gmcp_body_outcome(const gmcp_upload_body *b);

#endif
