/* gmcp_sha256.c — see gmcp_sha256.h. */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_CTX: the only SHA-256 whose state we can save */
#include "gmcp_sha256.h"
#include "gmcp_util.h"

#include <openssl/sha.h>
#include <apr_strings.h>
#include <stdio.h>
#include <string.h>

struct gmcp_sha256 {
    SHA256_CTX ctx;
};

gmcp_sha256 *gmcp_sha256_make(apr_pool_t *p)
{
    gmcp_sha256 *s = apr_pcalloc(p, sizeof(*s));
    SHA256_Init(&s->ctx);
    return s;
}

void gmcp_sha256_update(gmcp_sha256 *s, const void *data, apr_size_t len)
{
    if (len) SHA256_Update(&s->ctx, data, len);
}

void gmcp_sha256_copy(gmcp_sha256 *dst, const gmcp_sha256 *src) { dst->ctx = src->ctx; }

apr_int64_t gmcp_sha256_bytes(const gmcp_sha256 *s)
{
    apr_uint64_t bits = ((apr_uint64_t)s->ctx.Nh << 32) | s->ctx.Nl;
    return (apr_int64_t)(bits / 8);
}

const char *gmcp_sha256_save(apr_pool_t *p, const gmcp_sha256 *s)
{
    char words[8 * 8 + 1];
    int i;
    for (i = 0; i < 8; i++) apr_snprintf(words + 8 * i, 9, "%08x", (unsigned int)s->ctx.h[i]);
    return apr_psprintf(p, "s1:%s:%" APR_INT64_T_FMT ":%s", words, gmcp_sha256_bytes(s),
                        gmcp_hex(p, (const unsigned char *)s->ctx.data, s->ctx.num));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

apr_status_t gmcp_sha256_load(gmcp_sha256 *s, const char *text)
{
    SHA256_CTX c;
    const char *w, *pend;
    const char *end;
    apr_uint64_t bytes;
    apr_size_t n, i;
    int j;
    if (!text || strncmp(text, "s1:", 3) != 0) return APR_EINVAL;
    w = text + 3;
    memset(&c, 0, sizeof(c));
    SHA256_Init(&c);
    for (i = 0; i < 8; i++) {
        apr_uint32_t v = 0;
        for (j = 0; j < 8; j++) {
            int d = hexval(w[8 * i + (apr_size_t)j]);
            if (d < 0) return APR_EINVAL;
            v = (v << 4) | (apr_uint32_t)d;
        }
        c.h[i] = v;
    }
    if (w[64] != ':') return APR_EINVAL;
    bytes = 0;
    for (end = w + 65; *end >= '0' && *end <= '9' && end - (w + 65) < 19; end++)
        bytes = bytes * 10 + (apr_uint64_t)(*end - '0');
    if (end == w + 65 || *end != ':' || bytes >= ((apr_uint64_t)1 << 61)) return APR_EINVAL;
    pend = end + 1;
    n = strlen(pend);
    if (n % 2 || n / 2 >= SHA256_CBLOCK || n / 2 != bytes % SHA256_CBLOCK) return APR_EINVAL;
    for (i = 0; i < n / 2; i++) {
        int hi = hexval(pend[2 * i]), lo = hexval(pend[2 * i + 1]);
        if (hi < 0 || lo < 0) return APR_EINVAL;
        ((unsigned char *)c.data)[i] = (unsigned char)(hi << 4 | lo);
    }
    c.num = (unsigned int)(n / 2);
    c.Nl = (SHA_LONG)((bytes * 8) & 0xffffffffu);
    c.Nh = (SHA_LONG)((bytes * 8) >> 32);
    c.md_len = SHA256_DIGEST_LENGTH;
    s->ctx = c;
    return APR_SUCCESS;
}

const char *gmcp_sha256_result(apr_pool_t *p, const gmcp_sha256 *s)
{
    SHA256_CTX c = s->ctx;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_Final(md, &c);
    return gmcp_hex(p, md, sizeof(md));
}
