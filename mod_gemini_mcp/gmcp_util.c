/* gmcp_util.c — randomness, encodings and parsing helpers for the core. */
#include "gmcp_util.h"
#include "gmcp_errlog.h"

#include <string.h>
#include <apr_atomic.h>
#include <apr_strings.h>
#include <apr_file_io.h>
#include <stdlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const char *gmcp_b64url_encode(apr_pool_t *p, const unsigned char *d, apr_size_t len)
{
    char *out = apr_palloc(p, (len + 2) / 3 * 4 + 1), *o = out;
    apr_size_t i = 0;
    for (; i + 2 < len; i += 3) {
        *o++ = B64URL[d[i] >> 2];
        *o++ = B64URL[((d[i] & 3) << 4) | (d[i + 1] >> 4)];
        *o++ = B64URL[((d[i + 1] & 15) << 2) | (d[i + 2] >> 6)];
        *o++ = B64URL[d[i + 2] & 63];
    }
    if (i < len) {
        *o++ = B64URL[d[i] >> 2];
        if (i + 1 < len) {
            *o++ = B64URL[((d[i] & 3) << 4) | (d[i + 1] >> 4)];
            *o++ = B64URL[(d[i + 1] & 15) << 2];
        }
        else {
            *o++ = B64URL[(d[i] & 3) << 4];
        }
    }
    *o = '\0';
    return out;
}

static int b64url_val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

unsigned char *gmcp_b64url_decode(apr_pool_t *p, const char *s, apr_size_t *len)
{
    apr_size_t n = strlen(s), i, o = 0;
    unsigned char *out;
    unsigned int acc = 0;
    int bits = 0;
    if (n % 4 == 1) return NULL;
    out = apr_palloc(p, n * 3 / 4 + 1);
    for (i = 0; i < n; i++) {
        int v = b64url_val(s[i]);
        if (v < 0) return NULL;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    /* Leftover bits must be zero for a canonical encoding. */
    if (bits && (acc & ((1u << bits) - 1))) return NULL;
    out[o] = 0;
    *len = o;
    return out;
}

const char *gmcp_random_id(apr_pool_t *p, apr_size_t nbytes)
{
    unsigned char buf[64];
    if (nbytes > sizeof(buf) || RAND_bytes(buf, (int)nbytes) != 1) return NULL;
    return gmcp_b64url_encode(p, buf, nbytes);
}

const char *gmcp_hex(apr_pool_t *p, const unsigned char *d, apr_size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *out = apr_palloc(p, len * 2 + 1);
    apr_size_t i;
    for (i = 0; i < len; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[len * 2] = '\0';
    return out;
}

const char *gmcp_sha256_hex(apr_pool_t *p, const void *data, apr_size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) return NULL;
    return gmcp_hex(p, md, mdlen);
}

const char *gmcp_i64_str(apr_pool_t *p, apr_int64_t v)
{
    return apr_psprintf(p, "%" APR_INT64_T_FMT, v);
}

apr_int64_t gmcp_now_sec(void) { return (apr_int64_t)apr_time_sec(apr_time_now()); }

const char *gmcp_now_str(apr_pool_t *p) { return gmcp_i64_str(p, gmcp_now_sec()); }

apr_status_t gmcp_utc_sec(int y, int mo, int d, int h, int mi, int se, apr_int64_t *out)
{
    apr_time_exp_t t;
    apr_time_t at;
    memset(&t, 0, sizeof(t));
    t.tm_year = y - 1900;
    t.tm_mon = mo - 1;
    t.tm_mday = d;
    t.tm_hour = h;
    t.tm_min = mi;
    t.tm_sec = se;
    if (apr_time_exp_gmt_get(&at, &t) != APR_SUCCESS) return APR_EBADDATE;
    *out = apr_time_sec(at);
    return APR_SUCCESS;
}

apr_status_t gmcp_parse_u64(const char *s, apr_uint64_t *out)
{
    apr_uint64_t v = 0;
    if (!s || !*s) return APR_EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return APR_EINVAL;
        if (v > (APR_UINT64_MAX - (apr_uint64_t)(*s - '0')) / 10) return APR_EINVAL;
        v = v * 10 + (apr_uint64_t)(*s - '0');
    }
    *out = v;
    return APR_SUCCESS;
}

apr_status_t gmcp_parse_size(const char *s, apr_uint64_t *out)
{
    char buf[32];
    apr_size_t n;
    apr_uint64_t mul = 1, v;
    if (!s || !(n = strlen(s)) || n >= sizeof(buf)) return APR_EINVAL;
    memcpy(buf, s, n + 1);
    switch (buf[n - 1]) {
    case 'k':
    case 'K': mul = 1024; break;
    case 'm':
    case 'M': mul = 1024 * 1024; break;
    case 'g':
    case 'G': mul = 1024 * 1024 * 1024; break;
    default: break;
    }
    if (mul != 1) buf[n - 1] = '\0';
    if (gmcp_parse_u64(buf, &v) != APR_SUCCESS || v > APR_UINT64_MAX / mul) return APR_EINVAL;
    *out = v * mul;
    return APR_SUCCESS;
}

int gmcp_utf8_valid(const char *str, apr_size_t len)
{
    const unsigned char *s = (const unsigned char *)str, *e = s + len;
    while (s < e) {
        unsigned char c = *s;
        apr_size_t n;
        unsigned int cp;
        if (c < 0x80) {
            s++;
            continue;
        }
        else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        }
        else
            return 0;
        if ((apr_size_t)(e - s) <= n) return 0;
        for (apr_size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF
            || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        s += n + 1;
    }
    return 1;
}

int gmcp_due(volatile apr_uint32_t *next_due, apr_uint32_t every)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(apr_time_now());
    apr_uint32_t due = apr_atomic_read32(next_due);
    return now >= due && apr_atomic_cas32(next_due, now + every, due) == due;
}

int gmcp_str_eq_ct(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return 0;
    return CRYPTO_memcmp(a, b, la) == 0;
}

/* A secret from "file:PATH" or "env:NAME", without trailing newlines; NULL when
 * missing or unreadable. Only ever logged by its source, never by value. */
const char *gmcp_read_secret(apr_pool_t *p, const char *src)
{
    const char *val = NULL;
    apr_size_t n;
    if (!strncmp(src, "env:", 4)) { val = getenv(src + 4); }
    else {
        char *buf = NULL;
        apr_file_t *f;
        apr_finfo_t fi;
        apr_status_t rv;
        /* The path is logged, never the content. A missing file is the caller's to
         * report (it may be optional): only debug here. */
        if ((rv = apr_file_open(&f, src + 5, APR_FOPEN_READ, 0, p)) != APR_SUCCESS) {
            gmcp_elog(GMCP_ELOG_MARK, APR_STATUS_IS_ENOENT(rv) ? GMCP_ELOG_DEBUG : GMCP_ELOG_ERR,
                      rv, "GMCP0302", "cannot open the secret file %s", src + 5);
        }
        else {
            if ((rv = apr_file_info_get(&fi, APR_FINFO_SIZE | APR_FINFO_TYPE, f)) != APR_SUCCESS)
                gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0303",
                          "cannot stat the "
                          "secret file %s",
                          src + 5);
            else if (fi.filetype != APR_REG)
                gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0305",
                          "the secret file %s "
                          "is not a regular file",
                          src + 5);
            else if (fi.size >= 4096)
                gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0305",
                          "the secret file %s "
                          "is %" APR_OFF_T_FMT " bytes: secrets are read only up to 4 KiB",
                          src + 5, fi.size);
            else {
                buf = apr_pcalloc(p, (apr_size_t)fi.size + 1);
                if ((rv = apr_file_read_full(f, buf, (apr_size_t)fi.size, NULL)) != APR_SUCCESS) {
                    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, rv, "GMCP0304",
                              "cannot read "
                              "the secret file %s",
                              src + 5);
                    buf = NULL;
                }
            }
            apr_file_close(f);
        }
        val = buf;
    }
    if (!val) return NULL;
    n = strlen(val);
    while (n && (val[n - 1] == '\n' || val[n - 1] == '\r')) n--;
    return n ? apr_pstrndup(p, val, n) : NULL;
}

apr_status_t gmcp_buf_append(gmcp_buf *b, const void *data, apr_size_t n, apr_size_t max)
{
    if (b->len + n > max) return APR_ENOSPC;
    if (b->len + n + 1 > b->cap) {
        apr_size_t cap = (b->len + n + 1) * 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) return APR_ENOMEM;
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return APR_SUCCESS;
}
