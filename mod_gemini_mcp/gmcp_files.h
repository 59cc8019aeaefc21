/* gmcp_files.h — relay a local file into the Gemini Files API.
 *
 * Google's resumable protocol, as the official SDKs speak it: `start` (metadata) gives
 * an upload URL; the bytes follow in 8 MiB `upload` requests, the last one with
 * `finalize`, which answers with the File resource. After a transient failure the
 * relay asks the upload URL how much arrived (`query`) and continues from there, with
 * backoff, never past the call's deadline. Then it polls files.get until the file is
 * ACTIVE. The file is read from disk chunk by chunk: memory does not grow with size. */
#ifndef GMCP_FILES_H
#define GMCP_FILES_H

#include "gmcp_gemini.h"

#define GMCP_FILES_CHUNK (8 * 1024 * 1024)

typedef void (*gmcp_files_progress_fn)(void *baton, apr_int64_t done, apr_int64_t total,
                                       const char *phase);

/* Relay `path` (size bytes). APR_SUCCESS with *file the File resource (new ref), already
 * ACTIVE; otherwise *err filled and a status as gmcp_gemini_call's (GMCP_ECANCELLED,
 * APR_TIMEUP, GMCP_EUPSTREAM), or the error reading the spool file (logged). `chunk` 0
 * means GMCP_FILES_CHUNK. *resumes counts the query-and-continue recoveries made. */
apr_status_t gmcp_files_relay(gmcp_gemini *g, const char *path, apr_int64_t size, const char *mime,
                              const char *display_name, apr_int64_t chunk,
                              gmcp_files_progress_fn progress, void *baton, json_t **file,
                              int *resumes, gmcp_gemini_error *err);

/* files.get until state is ACTIVE (APR_SUCCESS, *file a new ref), polling with a growing
 * interval until the deadline (then APR_TIMEUP); FAILED is GMCP_EUPSTREAM; a failed
 * files.get as gmcp_gemini_call. *err says why. */
apr_status_t gmcp_files_wait_active(gmcp_gemini *g, const char *name, json_t **file,
                                    gmcp_gemini_error *err);

/* Does Gemini's sha256Hash (base64 of either the raw 32 bytes or the 64 hex digits) name
 * the same bytes as our lowercase hex digest? */
int gmcp_files_sha_matches(apr_pool_t *p, const char *gemini_b64, const char *hex);

/* The value of header `name` (case-insensitive) in one raw response header line of
 * `len` bytes (as gmcp_http hands it over: not NUL-terminated, with its CRLF), without
 * surrounding blanks; NULL when the line is another header. How the relay reads
 * X-Goog-Upload-URL, -Status and -Size-Received. */
const char *gmcp_files_header_value(apr_pool_t *p, const char *line, size_t len, const char *name);

#endif
