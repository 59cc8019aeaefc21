/* gmcp_upload_concat.h — tus concatenation without httpd: which finished partial uploads
 * make a final one, and their bytes copied in order into its spool file. */
#ifndef GMCP_UPLOAD_CONCAT_H
#define GMCP_UPLOAD_CONCAT_H

#include "gmcp_sha256.h"
#include "gmcp_uploads.h"

/* What planning and copying came to. The caller answers each differently (400, 413, 415,
 * 503/507, 503), hence an outcome rather than a status. */
typedef enum {
    GMCP_FINAL_OK = 0,
    GMCP_FINAL_BAD_PART = 1, /* a URL that is not a finished partial upload of the owner's */
    GMCP_FINAL_NO_PARTS = 2, /* "final;" without any */
    GMCP_FINAL_TOO_BIG = 3,  /* more than the maximum size together */
    GMCP_FINAL_CONFLICT = 4, /* the first bytes contradict the declared filetype */
    GMCP_FINAL_DISK = 5,     /* a spool file could not be read or written */
    GMCP_FINAL_DB = 6        /* the store failed (gmcp_db logged it) */
} gmcp_final_result;

typedef struct {
    apr_array_header_t *parts; /* gmcp_upload, in the order listed */
    const char *ids;           /* their ids, space-separated (the final row's parts) */
    apr_int64_t total;         /* their bytes together */
    const char *bad_url;       /* GMCP_FINAL_BAD_PART: the first such URL, as sent */
} gmcp_concat_plan;

/* The parts of Upload-Concat "final;<urls>" (header), each read as the owner's: a
 * missing upload, another owner's, one not partial or not complete is a bad part; at
 * most max bytes together. GMCP_FINAL_OK, _BAD_PART, _NO_PARTS, _TOO_BIG or _DB. */
gmcp_final_result gmcp_concat_plan_make(gmcp_db *db, apr_pool_t *p, const char *owner,
                                        const char *header, apr_int64_t max, gmcp_concat_plan *out);

typedef struct {
    const char *sniffed; /* media type of the first bytes */
    const char *path;    /* GMCP_FINAL_DISK: the file that failed, */
    apr_status_t rv;     /* ...and how */
} gmcp_concat_copy;

/* The parts' spool files (in dir) copied in order into a new file at out_path, hashed
 * into h (fresh), its first bytes sniffed against filetype, synced. GMCP_FINAL_OK,
 * GMCP_FINAL_CONFLICT (the new file removed) or GMCP_FINAL_DISK. */
gmcp_final_result gmcp_concat_copy_parts(apr_pool_t *p, const char *dir,
                                         const gmcp_concat_plan *plan, const char *filetype,
                                         const char *out_path, gmcp_sha256 *h,
                                         gmcp_concat_copy *res);

#endif
