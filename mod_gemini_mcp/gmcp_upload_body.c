/* gmcp_upload_body.c — one request's bytes into an upload: the spool file continued, the
 * pieces held against the room, sniffed, written and checksummed, and what became of
 * them. */
#include "gmcp_upload_body.h"
#include "gmcp_sniff.h"

#include <string.h>
#include <openssl/evp.h>

#define HASH_BLOCK 65536

apr_status_t gmcp_upload_spool_continue(apr_pool_t *p, const char *path, apr_int64_t offset,
                                        int may_create, apr_file_t **f, int *lost)
{
    apr_off_t at = (apr_off_t)offset;
    apr_finfo_t fi;
    apr_status_t rv;
    *f = NULL;
    *lost = 0;
    rv = apr_file_open(f, path,
                       APR_FOPEN_WRITE | APR_FOPEN_BINARY
                           | (may_create && !offset ? APR_FOPEN_CREATE : 0),
                       APR_FPROT_UREAD | APR_FPROT_UWRITE, p);
    if (rv != APR_SUCCESS) {
        *f = NULL;
        *lost = APR_STATUS_IS_ENOENT(rv);
        return rv;
    }
    if ((rv = apr_file_info_get(&fi, APR_FINFO_SIZE, *f)) == APR_SUCCESS && fi.size < at) {
        *lost = 1;
        rv = APR_EINCOMPLETE;
    }
    if (rv == APR_SUCCESS && (rv = apr_file_trunc(*f, at)) == APR_SUCCESS)
        rv = apr_file_seek(*f, APR_SET, &at);
    if (rv != APR_SUCCESS) {
        apr_file_close(*f);
        *f = NULL;
    }
    return rv;
}

gmcp_sha256 *gmcp_upload_resume_hash(apr_pool_t *p, const char *path, const gmcp_upload *x,
                                     int *reread)
{
    gmcp_sha256 *h = gmcp_sha256_make(p);
    apr_file_t *f;
    apr_int64_t left = x->offset;
    char *buf;
    *reread = 0;
    if (x->sha_state && gmcp_sha256_load(h, x->sha_state) == 0 && gmcp_sha256_bytes(h) == x->offset)
        return h;
    h = gmcp_sha256_make(p);
    if (!left) return h;
    *reread = 1;
    if (apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p) != APR_SUCCESS)
        return NULL;
    buf = apr_palloc(p, HASH_BLOCK);
    while (left > 0) {
        apr_size_t n = left < HASH_BLOCK ? (apr_size_t)left : HASH_BLOCK;
        if (apr_file_read_full(f, buf, n, &n) != APR_SUCCESS) break;
        gmcp_sha256_update(h, buf, n);
        left -= (apr_int64_t)n;
    }
    apr_file_close(f);
    return left ? NULL : h;
}

apr_int64_t gmcp_upload_room(apr_int64_t length, apr_int64_t offset, apr_int64_t max,
                             apr_int64_t quota, apr_int64_t used)
{
    apr_int64_t room = (length >= 0 ? length : max) - offset;
    if (length < 0 && quota >= 0) {
        /* Deferred length: the quota bounds what may still arrive. */
        if (quota - used < room) room = quota - used;
        if (room < 0) room = 0;
    }
    return room;
}

static apr_status_t free_digest(void *ck)
{
    EVP_MD_CTX_free(ck);
    return APR_SUCCESS;
}

void gmcp_body_start(gmcp_upload_body *b, apr_pool_t *p, const gmcp_upload *x, apr_int64_t room,
                     const char *algo, gmcp_spool_writer *w, gmcp_receipt *rc)
{
    memset(b, 0, sizeof(*b));
    b->pool = p;
    b->w = w;
    b->rc = rc;
    b->room = room;
    b->filetype = x->filetype ? x->filetype : "";
    b->head = x->offset == 0 ? apr_palloc(p, GMCP_SNIFF_BYTES) : NULL;
    if ((b->algo = algo)) {
        b->ck = EVP_MD_CTX_new();
        apr_pool_cleanup_register(p, b->ck, free_digest, apr_pool_cleanup_null);
        EVP_DigestInit_ex(b->ck,
                          !strcmp(algo, "sha256")     ? EVP_sha256()
                              : !strcmp(algo, "sha1") ? EVP_sha1()
                                                      : EVP_md5(),
                          NULL);
    }
}

static void sniff(gmcp_upload_body *b)
{
    b->rc->sniffed = gmcp_sniff(b->pool, b->head, b->head_len);
    b->rc->conflict = gmcp_sniff_conflict(b->filetype, b->rc->sniffed);
}

/* The first bytes kept for sniffing, sniffed once the window is full; 1 on a conflict. */
static int keep_head(gmcp_upload_body *b, const char *data, apr_size_t len)
{
    apr_size_t take = len < GMCP_SNIFF_BYTES - b->head_len ? len : GMCP_SNIFF_BYTES - b->head_len;
    memcpy(b->head + b->head_len, data, take);
    b->head_len += take;
    if (b->head_len == GMCP_SNIFF_BYTES) sniff(b);
    return b->rc->conflict;
}

apr_status_t gmcp_body_take(gmcp_upload_body *b, const char *data, apr_size_t len)
{
    gmcp_receipt *rc = b->rc;
    if (rc->got + (apr_int64_t)len > b->room) {
        rc->too_big = 1;
        return APR_EINVAL;
    }
    if (b->head && b->head_len < GMCP_SNIFF_BYTES && keep_head(b, data, len)) return APR_EINVAL;
    if (len && (rc->disk_rv = gmcp_spool_write(b->w, data, len)) != APR_SUCCESS) {
        rc->io_error = 1;
        return rc->disk_rv;
    }
    if (b->ck) EVP_DigestUpdate(b->ck, data, len);
    rc->got += (apr_int64_t)len;
    return APR_SUCCESS;
}

void gmcp_body_ended(gmcp_upload_body *b)
{
    const gmcp_receipt *rc = b->rc;
    if (b->head && b->head_len && b->head_len < GMCP_SNIFF_BYTES && !rc->sniffed && !rc->aborted
        && !rc->too_big && !rc->io_error)
        sniff(b);
}

int gmcp_body_may_record(const gmcp_upload_body *b)
{
    return !b->algo && !(b->head && !b->rc->sniffed);
}

void gmcp_body_verify(gmcp_upload_body *b, const unsigned char *want, apr_size_t want_len)
{
    unsigned char got[EVP_MAX_MD_SIZE];
    unsigned int got_len = 0;
    gmcp_receipt *rc = b->rc;
    if (!b->ck) return;
    EVP_DigestFinal_ex(b->ck, got, &got_len);
    apr_pool_cleanup_run(b->pool, b->ck, free_digest);
    b->ck = NULL;
    rc->mismatch =
        !rc->aborted && !rc->too_big && (got_len != want_len || memcmp(got, want, got_len) != 0);
}

gmcp_body_fate gmcp_body_outcome(const gmcp_upload_body *b)
{
    const gmcp_receipt *rc = b->rc;
    if (rc->io_error) return GMCP_BODY_FAILED;
    if ((b->algo && (rc->mismatch || rc->aborted)) || rc->too_big || rc->conflict)
        return GMCP_BODY_DISCARD;
    if (rc->got > rc->committed) return GMCP_BODY_COMMIT;
    return GMCP_BODY_KEEP;
}
