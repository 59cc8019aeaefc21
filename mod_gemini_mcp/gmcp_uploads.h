/* gmcp_uploads.h — tus 1.0 upload state in SQL, and the protocol's header grammar.
 *
 * Shared by the upload handler and gmcpctl. Every lookup filters by owner: another
 * principal's upload answers exactly like a missing one. The bytes themselves live in
 * the spool directory. upload_offset counts bytes on disk, or (GeminiMCPUploadDurability
 * interval) written and made durable within seconds: the row then also keeps the last
 * durable point, which is where the upload continues should the machine holding the rest
 * restart before syncing it (gmcp_upload_tail_lost). */
#ifndef GMCP_UPLOADS_H
#define GMCP_UPLOADS_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <jansson.h>
#include "gmcp_db.h"
#include "gmcp_lease.h"

#define GMCP_UPLOAD_RECEIVING "receiving"
#define GMCP_UPLOAD_COMPLETE "complete"
#define GMCP_UPLOAD_TERMINATED "terminated"

typedef struct {
    const char *id, *owner, *key_id;
    apr_int64_t length; /* -1: deferred */
    apr_int64_t offset;
    const char *metadata, *filename, *filetype, *concat, *parts, *sha256, *state;
    apr_int64_t created, expires, completed;
    const char *spool; /* the spool's id (gmcp_upload_spool_id), "" when not recorded */
    /* Read-only here (set by the statements below): */
    const char *sha_state;   /* running SHA-256 at `offset` (gmcp_sha256_save), or "" */
    const char *phase;       /* receiving, received, relaying, processing, active, failed */
    apr_int64_t progress;    /* bytes of the phase so far */
    apr_int64_t progress_at; /* when progress was written, ms since the epoch */
    const char *detail;      /* why it failed */
    const char *sniffed;     /* media type found in the first bytes, or "" */
    /* Bytes written but not yet synced: from durable_offset (-1: none, all is durable)
     * to offset, held by machine unsynced_on (gmcp_machine_id) since unsynced_at. */
    apr_int64_t durable_offset;
    const char *durable_state; /* the running SHA-256 at durable_offset */
    const char *unsynced_on;
    apr_int64_t unsynced_at;
    int rewound; /* read back at its durable point: the rest was lost (or may be) */
} gmcp_upload;

/* How long another host trusts a tail it cannot check: its writer syncs it within
 * GMCP_UPLOAD_SYNC_MAX_SECONDS, so a tail older than this was never synced (its
 * process or machine died first) and does not count. */
#define GMCP_UPLOAD_SYNC_MAX_SECONDS 60
#define GMCP_UPLOAD_TAIL_TRUST (2 * GMCP_UPLOAD_SYNC_MAX_SECONDS)

/* Upload phases (the `phase` column), for the progress stream. */
#define GMCP_PHASE_RECEIVING "receiving"
#define GMCP_PHASE_RECEIVED "received"
#define GMCP_PHASE_RELAYING "relaying"
#define GMCP_PHASE_PROCESSING "processing"
#define GMCP_PHASE_ACTIVE "active"
#define GMCP_PHASE_FAILED "failed"

/* The rows. Each returns APR_SUCCESS, or GMCP_EDB when the store failed (gmcp_db logged
 * it); those that look a row up also APR_ENOENT when there is none (for the owner). */
apr_status_t gmcp_upload_create(gmcp_db *db, const gmcp_upload *u);
/* Rows are read as they stand after gmcp_upload_tail_lost(). owner NULL: any owner
 * (gmcpctl). */
apr_status_t gmcp_upload_get(gmcp_db *db, const char *id, const char *owner, gmcp_upload *out);
apr_status_t gmcp_upload_list(gmcp_db *db, const char *owner, apr_array_header_t **out);

/* The PATCH lease: one writer at a time per upload. APR_SUCCESS when it is ours (the
 * holder renews it by locking again with its token), APR_EBUSY when another request
 * holds it (or there is no such row), GMCP_EDB. The token comes from gmcp_lease_token();
 * a lease whose holder died on this host is taken over at once. */
apr_status_t gmcp_upload_lock(gmcp_db *db, const char *id, const char *token, apr_int64_t seconds);
apr_status_t gmcp_upload_unlock(gmcp_db *db, const char *id, const char *token);
/* Who holds the lease ("" when nobody: APR_SUCCESS; APR_ENOENT without the row), and
 * taking it over from a holder known to be dead, only while it still holds it:
 * APR_SUCCESS when taken, APR_EBUSY when old_token no longer holds it. */
apr_status_t gmcp_upload_holder(gmcp_db *db, const char *id, const char **token);
apr_status_t gmcp_upload_steal(gmcp_db *db, const char *id, const char *old_token,
                               const char *token, apr_int64_t seconds);
/* The lease for a request that checked the upload (`checked`: its offset and state)
 * before asking: the row is read again under the lease, and one that moved on meanwhile
 * (the PATCH that held it recorded more since) gives the lease back at once. checked
 * NULL: a row just created, nothing to compare. The caller answers each outcome
 * differently (423, 409, 503 with what failed), hence an outcome rather than a status. */
typedef enum {
    GMCP_LEASE_TAKEN = 0,       /* ours, on the row as checked */
    GMCP_LEASE_HELD = 1,        /* another request holds it */
    GMCP_LEASE_MOVED = 2,       /* the upload moved on: given back; *offset is its own */
    GMCP_LEASE_LOCK_FAILED = 3, /* the store failed taking it */
    GMCP_LEASE_READ_FAILED = 4  /* ...or reading the row again (given back) */
} gmcp_upload_lease_result;
gmcp_upload_lease_result gmcp_upload_lease(gmcp_db *db, const char *id, const char *owner,
                                           const gmcp_upload *checked, const char *token,
                                           apr_int64_t seconds, apr_int64_t *offset);
/* Record bytes now on disk (only while `token` holds the lease) with the running
 * SHA-256 at that offset; a deferred length may be set (-1 keeps it); expires slides.
 * APR_ENOENT when the lease was lost. */
apr_status_t gmcp_upload_advance(gmcp_db *db, const char *id, const char *token, apr_int64_t offset,
                                 apr_int64_t length, apr_int64_t expires, const char *sha_state);
/* Record bytes written but not all synced yet, while `token` holds the lease: the
 * offset told to the client with its hash state, and the durable point below it with
 * its own, held by this machine now. */
apr_status_t gmcp_upload_advance_unsynced(gmcp_db *db, const char *id, const char *token,
                                          apr_int64_t offset, apr_int64_t length,
                                          apr_int64_t expires, const char *sha_state,
                                          apr_int64_t durable, const char *durable_state);
/* The tail up to `offset` is on disk now (a background sync, holding no lease): the
 * durable point moves there, unless the upload moved elsewhere meanwhile. And the
 * other outcome: its sync failed, so the tail no longer counts anywhere. */
apr_status_t gmcp_upload_tail_synced(gmcp_db *db, const char *id, apr_int64_t offset,
                                     const char *sha_state);
apr_status_t gmcp_upload_tail_failed(gmcp_db *db, const char *id, apr_int64_t offset);
/* Does x's unsynced tail still count, as seen from machine `me` at `now`? Not when
 * that machine restarted since (its page cache is gone), when its sync failed, nor, on
 * another host, once it is older than GMCP_UPLOAD_TAIL_TRUST. When it does not, x is
 * read back at its durable point (offset, hash state; a complete upload receives again)
 * and `rewound` set: the client resends the rest, and the file ends byte-identical. */
void gmcp_upload_tail_lost(gmcp_upload *x, gmcp_machine_state holder, apr_int64_t now);
/* Complete (phase "received"): the spool file is kept (for relays) until `expires`. */
apr_status_t gmcp_upload_complete(gmcp_db *db, const char *id, apr_int64_t length,
                                  const char *sha256, apr_int64_t now, apr_int64_t expires);
/* Progress for the stream: the phase, its bytes so far (now), and why it failed. */
apr_status_t gmcp_upload_set_phase(gmcp_db *db, const char *id, const char *phase,
                                   apr_int64_t progress, const char *detail);
apr_status_t gmcp_upload_set_sniffed(gmcp_db *db, const char *id, const char *mime);
/* APR_ENOENT when the owner has no such upload, or it is terminated already. */
apr_status_t gmcp_upload_terminate(gmcp_db *db, const char *id, const char *owner);
/* Rows whose expiry passed before `now` (unfinished, terminated, or complete and kept
 * long enough), and removal. */
apr_status_t gmcp_upload_expired(gmcp_db *db, apr_int64_t now, apr_array_header_t **out);
apr_status_t gmcp_upload_delete(gmcp_db *db, const char *id);
/* Spool bytes an owner's live uploads hold or announced (for the per-owner quota). */
apr_status_t gmcp_upload_spool_used(gmcp_db *db, const char *owner, apr_int64_t *bytes);
json_t *gmcp_upload_json(const gmcp_upload *u);

/* An upload's bytes: <spool dir>/<id>. */
const char *gmcp_upload_spool_path(apr_pool_t *p, const char *dir, const char *id);
/* The id of a spool directory, from its GMCP_SPOOL_ID_FILE (made on first use): every
 * node sharing the directory reads the same one. APR_SUCCESS, APR_EINVAL when the file
 * holds no id, or the file system's error. */
#define GMCP_SPOOL_ID_FILE ".spool-id"
apr_status_t gmcp_upload_spool_id(apr_pool_t *p, const char *dir, const char **id);
/* 1 when upload x was made in another spool than `dir` (a node that does not share the
 * directory): its bytes are not there to touch. 0 for uploads that recorded no spool. */
int gmcp_upload_spool_elsewhere(apr_pool_t *p, const char *dir, const gmcp_upload *x);
/* A fresh upload id: never with a leading '-' (the id is also a command-line argument
 * of gmcpctl); NULL without randomness. */
const char *gmcp_upload_new_id(apr_pool_t *p);
/* The fields of a new upload (state receiving, not yet its id or length) from the
 * creation request: Upload-Metadata as sent (meta) and parsed (md), Upload-Concat, the
 * caller, and when it expires (now + expiry). APR_SUCCESS, or APR_EINVAL with *why (the
 * 400's text) when the filename or filetype in the metadata is not acceptable. */
apr_status_t gmcp_upload_fill_new(gmcp_upload *x, apr_table_t *md, const char *meta,
                                  const char *concat, const char *owner, const char *key_id,
                                  apr_int64_t now, apr_int64_t expiry, const char **why);

/* Upload-Metadata: "key b64,key b64,key". Keys: 1-128 printable ASCII without space
 * or comma, unique; values valid standard base64. APR_SUCCESS with *out mapping key ->
 * decoded value (a NUL-free string, or "" for a bare key); APR_EINVAL with *why
 * otherwise. */
apr_status_t gmcp_tus_metadata(apr_pool_t *p, const char *header, apr_table_t **out,
                               const char **why);
/* A safe file name for Gemini and listings: no path separators, no "..", no control
 * characters, 1-255 bytes of valid UTF-8. */
int gmcp_tus_filename_ok(const char *name);
/* Upload-Checksum: "<algo> <base64>"; algo one of sha256, sha1, md5. APR_SUCCESS with
 * *algo and the raw digest; APR_EINVAL when malformed, APR_ENOTIMPL for another
 * algorithm. */
apr_status_t gmcp_tus_checksum(apr_pool_t *p, const char *header, const char **algo,
                               unsigned char **digest, apr_size_t *len);

#endif
