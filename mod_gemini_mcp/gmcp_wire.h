/* gmcp_wire.h — small grammars of request headers and URLs, without httpd.
 *
 * Pure functions on outside bytes (tus upload headers, upload ids in URLs, the SSE
 * Last-Event-ID), kept out of the glue so they can be unit-tested and fuzzed. */
#ifndef GMCP_WIRE_H
#define GMCP_WIRE_H

#include <apr_errno.h>
#include <apr_pools.h>
#include <apr_tables.h>

/* Upload-Offset / Upload-Length: strict non-negative decimal (no sign, no spaces, no
 * leading zeros but "0"), at most 2^62. APR_SUCCESS with *out, APR_EINVAL otherwise
 * (also for NULL). */
apr_status_t gmcp_tus_offset_parse(const char *s, apr_int64_t *out);

/* Upload ids are ours: exactly 22 base64url characters. */
int gmcp_upload_id_ok(const char *id);

/* The last segment of a URL or path (trailing slashes ignored; "" when none). */
const char *gmcp_url_last_segment(apr_pool_t *p, const char *url);

/* What an Upload-Concat header asks for. */
typedef enum {
    GMCP_CONCAT_INVALID = -1, /* anything else: a 400 */
    GMCP_CONCAT_NONE = 0,     /* no header: a plain upload */
    GMCP_CONCAT_PARTIAL = 1,  /* "partial" */
    GMCP_CONCAT_FINAL = 2     /* "final;<urls>" */
} gmcp_concat_kind;
gmcp_concat_kind gmcp_tus_concat_kind(const char *header);

/* One entry of a final upload's list: the URL as sent, and the upload id in its last
 * segment, or NULL when that segment is not an upload id (gmcp_upload_id_ok). */
typedef struct {
    const char *url;
    const char *id;
} gmcp_concat_part;

/* The URL list of "final;<urls>" (space-separated; runs of spaces count as one), as an
 * array of gmcp_concat_part in order (possibly empty). NULL when the header is not of
 * the final form. */
apr_array_header_t *gmcp_tus_concat_parse(apr_pool_t *p, const char *header);

/* Last-Event-ID "<stream id>.<sequence>": split at the last '.', the sequence a strict
 * non-negative decimal (gmcp_parse_u64). APR_SUCCESS with *stream_id (may be "") and
 * *seq, APR_EINVAL when malformed (also for NULL). */
apr_status_t gmcp_last_event_id_parse(apr_pool_t *p, const char *value, const char **stream_id,
                                      apr_uint64_t *seq);

#endif
