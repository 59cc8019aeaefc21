/* gmcp_util.h — small helpers of the httpd-free core: randomness, encodings, time.
 * Depends on APR and OpenSSL only. */
#ifndef GMCP_UTIL_H
#define GMCP_UTIL_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_errno.h>

/* How the core fails: every fallible function returns an apr_status_t — APR_SUCCESS;
 * APR_ENOENT for "no such row or thing"; APR_EINVAL for input that does not parse or is
 * out of range; APR_EEXIST for a duplicate; APR_EBUSY when someone else holds it;
 * APR_TIMEUP for a deadline; OS codes from files and sockets as they came — plus these
 * of its own. A reason in words, where there is one, comes in a `const char **why`. */
#define GMCP_EDB (APR_OS_START_USERERR + 1) /* the database failed (gmcp_db logged it) */
/* the database's schema is not one this build can use: older than it needs, newer than
 * its migrations know, or an applied migration differs from its file (gmcp_migrate.h) */
#define GMCP_ESCHEMA (APR_OS_START_USERERR + 2)
/* an upstream HTTP service (the Gemini API) failed: could not be reached, refused the
 * call, or answered with something unusable; its HTTP status and words, where there are
 * any, are in the gmcp_gemini_error the call filled */
#define GMCP_EUPSTREAM (APR_OS_START_USERERR + 3)
/* the caller gave up: the MCP request was cancelled, or its client went away, while a
 * call on its behalf was under way */
#define GMCP_ECANCELLED (APR_OS_START_USERERR + 4)

/* A random identifier: `nbytes` bytes from OpenSSL's CSPRNG, base64url without
 * padding (visible ASCII only, safe in headers, URLs and SQL text). NULL when the
 * CSPRNG fails. */
const char *gmcp_random_id(apr_pool_t *p, apr_size_t nbytes);

/* base64url (RFC 4648 §5) without padding, and back. Decoding rejects anything
 * outside the alphabet; returns NULL on bad input. */
const char *gmcp_b64url_encode(apr_pool_t *p, const unsigned char *data, apr_size_t len);
unsigned char *gmcp_b64url_decode(apr_pool_t *p, const char *s, apr_size_t *len);

/* Lowercase hex of bytes, and the lowercase hex SHA-256 of a buffer. */
const char *gmcp_hex(apr_pool_t *p, const unsigned char *data, apr_size_t len);
const char *gmcp_sha256_hex(apr_pool_t *p, const void *data, apr_size_t len);

/* Seconds since the epoch, and as a decimal string for SQL parameters. */
apr_int64_t gmcp_now_sec(void);
const char *gmcp_now_str(apr_pool_t *p);
const char *gmcp_i64_str(apr_pool_t *p, apr_int64_t v);
/* A UTC calendar time (year, month 1-12, day, hour, minute, second; not validated) as
 * seconds since the epoch: APR_SUCCESS, or APR_EBADDATE when APR cannot represent it. */
apr_status_t gmcp_utc_sec(int y, int mo, int d, int h, int mi, int se, apr_int64_t *out);

/* Strictly parse a non-negative decimal integer (no sign, no spaces, no overflow):
 * APR_SUCCESS with *out, APR_EINVAL otherwise (also for NULL). */
apr_status_t gmcp_parse_u64(const char *s, apr_uint64_t *out);

/* Parse a size with an optional K/M/G suffix (binary multiples): APR_SUCCESS with *out,
 * APR_EINVAL otherwise. */
apr_status_t gmcp_parse_size(const char *s, apr_uint64_t *out);

/* Is the buffer valid UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF)? */
int gmcp_utf8_valid(const char *s, apr_size_t len);

/* A periodic job shared by a process's threads: returns 1 to exactly one caller once
 * the time (seconds) in *next_due has come, moving it `every` seconds on; else 0. */
int gmcp_due(volatile apr_uint32_t *next_due, apr_uint32_t every);

/* A malloc'd byte buffer that grows as a response arrives (libcurl write callbacks),
 * kept NUL-terminated; the owner frees buf. */
typedef struct {
    char *buf;
    apr_size_t len, cap;
} gmcp_buf;
/* Append n bytes: APR_SUCCESS; APR_ENOSPC when the buffer would pass `max` bytes,
 * APR_ENOMEM when memory ran out (nothing appended either way). */
apr_status_t gmcp_buf_append(gmcp_buf *b, const void *data, apr_size_t n, apr_size_t max);

/* Constant-time comparison of two NUL-terminated strings. */
int gmcp_str_eq_ct(const char *a, const char *b);

/* A secret from "file:PATH" or "env:NAME", without trailing newlines; NULL when
 * missing or unreadable. Callers log only the source, never the value. */
const char *gmcp_read_secret(apr_pool_t *p, const char *src);

#endif
