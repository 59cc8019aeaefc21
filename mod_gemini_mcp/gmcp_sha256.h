/* gmcp_sha256.h — a SHA-256 whose running state can be written down and picked up again.
 *
 * An upload's whole-file hash is kept as its bytes arrive, and must survive a resume in
 * another process (or on another node) after any number of PATCHes. OpenSSL 3's EVP
 * interface cannot export a digest's state, so this uses OpenSSL's SHA256_CTX (the
 * low-level interface, deprecated in 3.0 but still built by default) and writes its
 * fields in a fixed, byte-order-free text form:
 *
 *   "s1:" <8 chaining words, 8 hex digits each> ":" <bytes hashed, decimal> ":" <hex of
 *   the pending partial block>
 */
#ifndef GMCP_SHA256_H
#define GMCP_SHA256_H

#include <apr_errno.h>
#include <apr_pools.h>

typedef struct gmcp_sha256 gmcp_sha256;

gmcp_sha256 *gmcp_sha256_make(apr_pool_t *p);
void gmcp_sha256_update(gmcp_sha256 *s, const void *data, apr_size_t len);
apr_int64_t gmcp_sha256_bytes(const gmcp_sha256 *s);
/* dst becomes a copy of src's state (both made by gmcp_sha256_make). */
void gmcp_sha256_copy(gmcp_sha256 *dst, const gmcp_sha256 *src);
/* The state as text, and back (APR_EINVAL, s unchanged, when the text is not such a
 * state). */
const char *gmcp_sha256_save(apr_pool_t *p, const gmcp_sha256 *s);
apr_status_t gmcp_sha256_load(gmcp_sha256 *s, const char *text);
/* The digest of what was hashed so far, in lowercase hex; s itself stays usable. */
const char *gmcp_sha256_result(apr_pool_t *p, const gmcp_sha256 *s);

#endif
