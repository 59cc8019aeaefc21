/* gmcp_archive.c — backup archive format, canonical rows, hashes, encryption. */
#include "gmcp_archive.h"
#include "gmcp_util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#define FRAME_MAX (1 << 20) /* plaintext bytes per encrypted frame */
#define ROW_BATCH (1 << 20) /* row bytes hashed and written at once */
#define WRITEBACK_STEP (8u << 20)
#define LINE_MAX_BYTES (256u << 20)
#define SPOOL_LINE (48u << 10) /* spool bytes per base64 line (64 KiB of base64) */

/* ---- types ----------------------------------------------------------------------- */
static const char *const TYPE_NAMES[] = {"text", "int", "bool", "json", "timestamp"};

static int has_ci(const char *s, const char *w)
{
    size_t n = strlen(w);
    for (; *s; s++)
        if (!strncasecmp(s, w, n)) return 1;
    return 0;
}

int gmcp_coltype_from_decl(const char *d)
{
    if (!d) return GMCP_COL_TEXT;
    if (has_ci(d, "bool")) return GMCP_COL_BOOL;
    if (has_ci(d, "int") || has_ci(d, "serial")) return GMCP_COL_INT;
    if (has_ci(d, "json")) return GMCP_COL_JSON;
    if (has_ci(d, "timestamp") || has_ci(d, "datetime")) return GMCP_COL_TIME;
    return GMCP_COL_TEXT;
}

const char *gmcp_coltype_name(int t)
{
    return t >= 0 && t <= GMCP_COL_TIME ? TYPE_NAMES[t] : "text";
}

int gmcp_coltype_parse(const char *name)
{
    int i;
    for (i = 0; name && i <= GMCP_COL_TIME; i++)
        if (!strcmp(name, TYPE_NAMES[i])) return i;
    return -1;
}

/* ---- buffers and canonical values -------------------------------------------------- */
/* At least n more bytes of room (and one for the NUL) at b->data + b->len. */
static void abuf_reserve(gmcp_abuf *b, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) abort();
        b->data = grown;
        b->cap = cap;
    }
}

void gmcp_abuf_add(gmcp_abuf *b, const void *d, size_t n)
{
    abuf_reserve(b, n);
    if (n) memcpy(b->data + b->len, d, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void gmcp_abuf_free(gmcp_abuf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

static void add_s(gmcp_abuf *b, const char *s) { gmcp_abuf_add(b, s, strlen(s)); }

/* Bytes a JSON string must escape: 1 where add_json_string writes something else. */
static const unsigned char JSON_ESC[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
};

static char *put_json_chars(char *w, const char *v, size_t len);

/* The run of bytes up to the next one to escape is copied whole: most text has none. */
static void add_json_string(gmcp_abuf *b, const char *v, size_t len)
{
    char *w;
    abuf_reserve(b, 2 + 6 * len);
    w = b->data + b->len;
    *w++ = '"';
    w = put_json_chars(w, v, len);
    *w++ = '"';
    b->len = (size_t)(w - b->data);
    b->data[b->len] = '\0';
}

static int is_int(const char *v, size_t len)
{
    size_t i = 0;
    if (len && (v[0] == '-' || v[0] == '+')) i = 1;
    if (i >= len || len - i > 19) return 0;
    if (v[i] == '0' && len - i > 1) return 0;
    for (; i < len; i++)
        if (!isdigit((unsigned char)v[i])) return 0;
    return 1;
}

void gmcp_canon_begin(gmcp_abuf *b)
{
    b->len = 0;
    gmcp_abuf_add(b, "[", 1);
}

void gmcp_canon_end(gmcp_abuf *b) { gmcp_abuf_add(b, "]\n", 2); }

/* v in decimal at w (at most 20 bytes), two digits at a time; returns the end. */
static char *put_int(char *w, long long v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
                                "31323334353637383940414243444546474849505152535455565758596061"
                                "6263646566676869707172737475767778798081828384858687888990919293"
                                "949596979899";
    char num[24], *e = num + sizeof(num), *d = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    size_t n;
    while (u >= 100) {
        unsigned k = (unsigned)(u % 100) * 2;
        u /= 100;
        *--d = pairs[k + 1];
        *--d = pairs[k];
    }
    if (u >= 10) {
        *--d = pairs[u * 2 + 1];
        *--d = pairs[u * 2];
    }
    else
        *--d = (char)('0' + u);
    if (v < 0) *--d = '-';
    n = (size_t)(e - d);
    memcpy(w, d, n);
    return w + n;
}

/* v as a JSON string's contents at w (room: 6 bytes per input byte); returns the end. */
static char *put_json_chars(char *w, const char *v, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)v;
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && !JSON_ESC[s[run]]) run++;
        memcpy(w, v + i, run - i);
        w += run - i;
        if (run == len) break;
        *w++ = '\\';
        switch (s[run]) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        default:
            memcpy(w, "u00", 3);
            w[3] = hex[s[run] >> 4];
            w[4] = hex[s[run] & 15];
            w += 5;
        }
        i = run + 1;
    }
    return w;
}

/* An engine's integer value: decimal digits without snprintf (a backup formats millions). */
void gmcp_canon_int(gmcp_abuf *b, int first, int type, long long v)
{
    char num[24];
    char *e = put_int(num, v);
    if (type == GMCP_COL_INT) {
        abuf_reserve(b, 1 + (size_t)(e - num));
        if (!first) b->data[b->len++] = ',';
        memcpy(b->data + b->len, num, (size_t)(e - num));
        b->len += (size_t)(e - num);
        b->data[b->len] = '\0';
        return;
    }
    gmcp_canon_value(b, first, type, num, (size_t)(e - num));
}

void gmcp_canon_value(gmcp_abuf *b, int first, int type, const char *v, size_t len)
{
    if (!first) gmcp_abuf_add(b, ",", 1);
    if (!v) {
        add_s(b, "null");
        return;
    }
    switch (type) {
    case GMCP_COL_INT:
        if (is_int(v, len)) {
            if (v[0] == '+') {
                v++;
                len--;
            }
            if (len == 2 && v[0] == '-' && v[1] == '0') {
                add_s(b, "0");
                return;
            }
            gmcp_abuf_add(b, v, len);
            return;
        }
        break; /* not an integer: kept as text */
    case GMCP_COL_BOOL:
        if ((len == 1 && (*v == 't' || *v == '1')) || (len == 4 && !strncasecmp(v, "true", 4))) {
            add_s(b, "true");
            return;
        }
        if ((len == 1 && (*v == 'f' || *v == '0')) || (len == 5 && !strncasecmp(v, "false", 5))) {
            add_s(b, "false");
            return;
        }
        break;
    case GMCP_COL_JSON: {
        json_error_t je;
        json_t *j = json_loadb(v, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (j) {
            char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
            json_decref(j);
            if (s) {
                add_json_string(b, s, strlen(s));
                free(s);
                return;
            }
        }
        break;
    }
    case GMCP_COL_TIME: {
        /* "2026-12-01 19:22:10.526461+00" or "2026-12-01 19:22:10" (UTC) -> ...T...Z */
        char t[64];
        size_t n = len < sizeof(t) - 2 ? len : 0, k;
        if (n >= 19) {
            memcpy(t, v, n);
            t[n] = '\0';
            if (t[10] == ' ') t[10] = 'T';
            for (k = 19; k < n && (t[k] == '.' || isdigit((unsigned char)t[k])); k++)
                ;
            if (!strcmp(t + k, "+00") || !strcmp(t + k, "+00:00") || !strcmp(t + k, "Z")
                || t[k] == '\0') {
                /* drop trailing zeros of the fraction, then the dot */
                while (k > 20 && t[k - 1] == '0' && memchr(t + 19, '.', k - 19)) k--;
                if (k == 20 && t[19] == '.') k = 19;
                t[k++] = 'Z';
                add_json_string(b, t, k);
                return;
            }
        }
        break;
    }
    default: break;
    }
    add_json_string(b, v, len);
}

/* ---- keys ---------------------------------------------------------------------------- */
static void hmac_hex(const unsigned char *key, size_t klen, const char *label, char *out,
                     size_t nbytes)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    size_t i;
    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)label, strlen(label), mac, &mlen);
    for (i = 0; i < nbytes && i < mlen; i++) sprintf(out + 2 * i, "%02x", mac[i]);
    out[2 * i] = '\0';
}

apr_status_t gmcp_arc_key_derive(const char *secret, const unsigned char *salt, gmcp_arc_key *k)
{
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t outlen = sizeof(k->key);
    static const char info[] = "gmcp-backup v1 AES-256-GCM";
    int ok = pc && EVP_PKEY_derive_init(pc) > 0 && EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) > 0
        && EVP_PKEY_CTX_set1_hkdf_salt(pc, salt, 16) > 0
        && EVP_PKEY_CTX_set1_hkdf_key(pc, (const unsigned char *)secret, (int)strlen(secret)) > 0
        && EVP_PKEY_CTX_add1_hkdf_info(pc, (const unsigned char *)info, (int)sizeof(info) - 1) > 0
        && EVP_PKEY_derive(pc, k->key, &outlen) > 0 && outlen == sizeof(k->key);
    EVP_PKEY_CTX_free(pc);
    if (!ok) return APR_EGENERAL;
    hmac_hex(k->key, sizeof(k->key), "gmcp-backup key fingerprint", k->fingerprint, 16);
    return APR_SUCCESS;
}

const char *gmcp_arc_fingerprint(apr_pool_t *p, const char *secret, const char *label)
{
    char out[33];
    hmac_hex((const unsigned char *)secret, strlen(secret), label, out, 16);
    return apr_pstrdup(p, out);
}

/* ---- writing ------------------------------------------------------------------------- */
struct gmcp_arc_out {
    apr_pool_t *pool;
    FILE *fp;
    EVP_MD_CTX *all; /* every plaintext byte, for the end line */
    EVP_MD_CTX *tab; /* the current table's rows */
    json_t *tables, *cur;
    int *types, ncols;    /* the current table's column types, for the values */
    struct arc_writer *w; /* hashes and writes full batches meanwhile (NULL: inline) */
    int inline_only;      /* gmcp_arc_out_inline: do not start that thread (yet) */
    apr_status_t failed;  /* the first failure (it sticks), or APR_SUCCESS */
    /* spool sections */
    json_t *spools, *scur;
    apr_int64_t sbytes, swant;
    unsigned char *sbuf; /* SPOOL_LINE bytes not yet encoded */
    size_t slen;
    /* encryption */
    int enc;
    gmcp_arc_key key;
    unsigned char *frame;
    size_t flen;
    apr_uint64_t fno;
    apr_uint64_t written, synced; /* bytes to fp; of them, handed to writeback */
    /* Written by the caller's thread on every value, and by the writer thread on every
     * line: each group on cache lines of its own (sharing them cost a third of the CPU). */
    char pad0[64];
    gmcp_abuf batch; /* row lines not yet hashed and written: one call per MiB */
    gmcp_abuf vals;  /* or rows as engine values (gmcp_arc_val_*), not yet encoded */
    apr_int64_t rows;
    char pad1[64];
    gmcp_abuf lines; /* the canonical lines of a batch of values */
    char pad2[64];
};

/* Start writeback of what was written so far, every WRITEBACK_STEP bytes: dirty pages
 * do not pile up into one long fsync at the end that stalls the disk for httpd. */
static void writeback_start(gmcp_arc_out *o)
{
#ifdef SYNC_FILE_RANGE_WRITE
    off_t end;
    if (o->written - o->synced < WRITEBACK_STEP || fflush(o->fp)) return;
    end = (off_t)o->written;
    sync_file_range(fileno(o->fp), (off_t)o->synced, end - (off_t)o->synced, SYNC_FILE_RANGE_WRITE);
    o->synced = o->written;
#else
    (void)o;
#endif
}

/* What a stdio call just failed with: errno's status (APR_EGENERAL without one). */
static apr_status_t os_error(void) { return errno ? APR_FROM_OS_ERROR(errno) : APR_EGENERAL; }

/* The archive failed: the first failure is kept, and returned from then on. */
static apr_status_t out_failed(gmcp_arc_out *o, apr_status_t rv)
{
    if (o->failed == APR_SUCCESS) o->failed = rv;
    return o->failed;
}

static apr_status_t raw_write(gmcp_arc_out *o, const void *d, size_t n)
{
    if (o->failed) return o->failed;
    if (o->fp && n && fwrite(d, 1, n, o->fp) != n) return out_failed(o, os_error());
    if (o->fp) {
        o->written += n;
        writeback_start(o);
    }
    return APR_SUCCESS;
}

static int put_be32(unsigned char *b, apr_uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
    return 4;
}

static void make_aad(unsigned char aad[9], apr_uint64_t fno, int last)
{
    int i;
    for (i = 0; i < 8; i++) aad[i] = (unsigned char)(fno >> (56 - 8 * i));
    aad[8] = (unsigned char)(last ? 1 : 0);
}

/* The frame so far, encrypted, out (the last one with `last`). */
static apr_status_t flush_frame(gmcp_arc_out *o, int last)
{
    unsigned char hdr[16], tag[16], aad[9], *ct;
    int n = 0, m = 0, ok;
    EVP_CIPHER_CTX *cx;
    apr_status_t rv;
    if (o->failed) return o->failed;
    put_be32(hdr, (apr_uint32_t)o->flen);
    if (RAND_bytes(hdr + 4, 12) != 1) return out_failed(o, APR_EGENERAL);
    make_aad(aad, o->fno, last);
    ct = malloc(o->flen + 16);
    cx = EVP_CIPHER_CTX_new();
    ok = ct && cx && EVP_EncryptInit_ex(cx, EVP_aes_256_gcm(), NULL, o->key.key, hdr + 4) == 1
        && EVP_EncryptUpdate(cx, NULL, &n, aad, sizeof(aad)) == 1
        && EVP_EncryptUpdate(cx, ct, &n, o->frame, (int)o->flen) == 1
        && EVP_EncryptFinal_ex(cx, ct + n, &m) == 1
        && EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(cx);
    if (!ok)
        rv = out_failed(o, ct ? APR_EGENERAL : APR_ENOMEM);
    else if ((rv = raw_write(o, hdr, 16)) == APR_SUCCESS
             && (rv = raw_write(o, ct, o->flen)) == APR_SUCCESS)
        rv = raw_write(o, tag, 16);
    free(ct);
    if (rv == APR_SUCCESS) {
        o->fno++;
        o->flen = 0;
    }
    return rv;
}

/* Plaintext bytes of the archive. */
static apr_status_t out_write(gmcp_arc_out *o, const void *d, size_t n)
{
    const unsigned char *s = d;
    apr_status_t rv;
    if (o->failed) return o->failed;
    EVP_DigestUpdate(o->all, d, n);
    if (!o->enc) return raw_write(o, d, n);
    while (n) {
        size_t k = FRAME_MAX - o->flen < n ? FRAME_MAX - o->flen : n;
        memcpy(o->frame + o->flen, s, k);
        o->flen += k;
        s += k;
        n -= k;
        if (o->flen == FRAME_MAX && (rv = flush_frame(o, 0)) != APR_SUCCESS) return rv;
    }
    return APR_SUCCESS;
}

/* A JSON line (APR_ENOMEM when it cannot be serialised: not a failure of the file). */
static apr_status_t out_json_line(gmcp_arc_out *o, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    apr_status_t rv;
    if (!s) return APR_ENOMEM;
    if ((rv = out_write(o, s, strlen(s))) == APR_SUCCESS) rv = out_write(o, "\n", 1);
    free(s);
    return rv;
}

static void writer_stop(gmcp_arc_out *o);

static void out_cleanup(void *data)
{
    gmcp_arc_out *o = data;
    writer_stop(o);
    EVP_MD_CTX_free(o->all);
    EVP_MD_CTX_free(o->tab);
    if (o->tables) json_decref(o->tables);
    if (o->spools) json_decref(o->spools);
    if (o->scur) json_decref(o->scur);
    if (o->cur) json_decref(o->cur);
    free(o->frame);
    free(o->sbuf);
    gmcp_abuf_free(&o->batch);
    gmcp_abuf_free(&o->vals);
    gmcp_abuf_free(&o->lines);
    free(o->types);
}

static apr_status_t out_cleanup_apr(void *data)
{
    out_cleanup(data);
    return APR_SUCCESS;
}

gmcp_arc_out *gmcp_arc_out_open(apr_pool_t *p, FILE *fp, const char *secret)
{
    gmcp_arc_out *o = apr_pcalloc(p, sizeof(*o));
    json_t *first = json_pack("{s:i}", "gmcp_backup", GMCP_ARCHIVE_FORMAT);
    o->pool = p;
    o->fp = fp;
    o->all = EVP_MD_CTX_new();
    o->tab = EVP_MD_CTX_new();
    o->tables = json_array();
    o->spools = json_array();
    apr_pool_cleanup_register(p, o, out_cleanup_apr, apr_pool_cleanup_null);
    EVP_DigestInit_ex(o->all, EVP_sha256(), NULL);
    if (secret) {
        unsigned char salt[16];
        if (RAND_bytes(salt, 16) != 1
            || gmcp_arc_key_derive(secret, salt, &o->key) != APR_SUCCESS) {
            o->failed = APR_EGENERAL;
        }
        else {
            json_t *hdr =
                json_pack("{s:i, s:{s:s, s:s, s:s, s:s}}", "gmcp_backup", GMCP_ARCHIVE_FORMAT,
                          "encryption", "alg", "AES-256-GCM", "kdf", "HKDF-SHA256", "salt",
                          gmcp_b64url_encode(p, salt, 16), "key_fingerprint", o->key.fingerprint);
            char *s = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
            raw_write(o, s, strlen(s));
            raw_write(o, "\n", 1);
            free(s);
            json_decref(hdr);
            o->enc = 1;
            o->frame = malloc(FRAME_MAX);
        }
    }
    out_json_line(o, first);
    json_decref(first);
    return o;
}

/* The writer thread: while the caller encodes the next batch of rows, it hashes (table
 * and whole archive) and writes the previous one, so a backup uses both halves of the
 * work at once. Between a hand-over and the next writer_drain() only the writer touches
 * the hashes, the file and the encryption state; every other entry point drains first.
 * The thread lives in an unmanaged pool of its own and ends by returning; the archive's
 * pool cleanup stops and joins it. */
/* Batches waiting for the writer thread: while it hashes and writes one, the reading
 * thread may hand over WRITER_QUEUE - 1 more (both threads run at about the same speed:
 * one slot alone made each wait for the other at every jitter). */
#define WRITER_QUEUE 3
typedef struct arc_writer {
    apr_pool_t *pool;
    apr_thread_t *thread;
    apr_thread_mutex_t *mu;
    apr_thread_cond_t *cv;
    gmcp_abuf work[WRITER_QUEUE]; /* the batches handed over, from head on */
    int values[WRITER_QUEUE];     /* work[i] holds values (1) or lines (0) */
    int head, count, stop;
} arc_writer;

static void rows_put(gmcp_arc_out *o, const gmcp_abuf *b)
{
    EVP_DigestUpdate(o->tab, b->data, b->len);
    out_write(o, b->data, b->len);
}

/* Values (tag N null, I int64, F double, T size_t length + bytes; R ends a row) into
 * canonical lines: the same lines gmcp_canon_* make of the engine's text. A text
 * column's text is written straight into room reserved once per value; the others go
 * through gmcp_canon_int / gmcp_canon_value. */
static void vals_encode(gmcp_arc_out *o, const gmcp_abuf *v, gmcp_abuf *out)
{
    const char *p = v->data, *e = v->data + v->len;
    int col = 0;
    out->len = 0;
    while (p < e) {
        char tag = *p++, num[32], *w;
        int type = col < o->ncols ? o->types[col] : GMCP_COL_TEXT;
        long long i;
        double d;
        size_t n;
        if (tag == 'R') {
            gmcp_abuf_add(out, col ? "]\n" : "[]\n", col ? 2 : 3);
            col = 0;
            continue;
        }
        switch (tag) {
        case 'I':
            memcpy(&i, p, sizeof(i));
            p += sizeof(i);
            if (!col) gmcp_abuf_add(out, "[", 1);
            gmcp_canon_int(out, !col, type, i);
            break;
        case 'F':
            memcpy(&d, p, sizeof(d));
            p += sizeof(d);
            snprintf(num, sizeof(num), "%.17g", d);
            if (!col) gmcp_abuf_add(out, "[", 1);
            gmcp_canon_value(out, !col, type, num, strlen(num));
            break;
        case 'T':
            memcpy(&n, p, sizeof(n));
            p += sizeof(n);
            if (type != GMCP_COL_TEXT) {
                if (!col) gmcp_abuf_add(out, "[", 1);
                gmcp_canon_value(out, !col, type, p, n);
                p += n;
                break;
            }
            abuf_reserve(out, 3 + 6 * n);
            w = out->data + out->len;
            *w++ = col ? ',' : '[';
            *w++ = '"';
            w = put_json_chars(w, p, n);
            *w++ = '"';
            out->len = (size_t)(w - out->data);
            p += n;
            break;
        default:
            if (!col) gmcp_abuf_add(out, "[", 1);
            gmcp_canon_value(out, !col, type, NULL, 0);
        }
        col++;
    }
    if (out->data) out->data[out->len] = '\0';
}

/* One batch hashed and written: lines as they are, values encoded first. */
static void batch_put(gmcp_arc_out *o, const gmcp_abuf *b, int values)
{
    if (!values) {
        rows_put(o, b);
        return;
    }
    vals_encode(o, b, &o->lines);
    rows_put(o, &o->lines);
}

static void *APR_THREAD_FUNC writer_main(apr_thread_t *t, void *data)
{
    gmcp_arc_out *o = data;
    arc_writer *w = o->w;
    (void)t;
    apr_thread_mutex_lock(w->mu);
    for (;;) {
        int i;
        while (!w->count && !w->stop) apr_thread_cond_wait(w->cv, w->mu);
        if (!w->count) break;
        i = w->head;
        apr_thread_mutex_unlock(w->mu);
        batch_put(o, &w->work[i], w->values[i]); /* the reader never touches work[head] */
        w->work[i].len = 0;
        apr_thread_mutex_lock(w->mu);
        w->head = (w->head + 1) % WRITER_QUEUE;
        w->count--;
        apr_thread_cond_broadcast(w->cv);
    }
    apr_thread_mutex_unlock(w->mu);
    return NULL;
}

static arc_writer *writer_start(gmcp_arc_out *o)
{
    arc_writer *w;
    apr_pool_t *wp;
    if (apr_pool_create_unmanaged_ex(&wp, NULL, NULL) != APR_SUCCESS) return NULL;
    w = apr_pcalloc(wp, sizeof(*w));
    w->pool = wp;
    o->w = w;
    if (apr_thread_mutex_create(&w->mu, APR_THREAD_MUTEX_DEFAULT, wp) != APR_SUCCESS
        || apr_thread_cond_create(&w->cv, wp) != APR_SUCCESS
        || apr_thread_create(&w->thread, NULL, writer_main, o, wp) != APR_SUCCESS) {
        apr_pool_destroy(wp);
        o->w = NULL;
    }
    return o->w;
}

/* Wait until the writer has put everything it was handed. */
static void writer_drain(gmcp_arc_out *o)
{
    if (!o->w) return;
    apr_thread_mutex_lock(o->w->mu);
    while (o->w->count) apr_thread_cond_wait(o->w->cv, o->w->mu);
    apr_thread_mutex_unlock(o->w->mu);
}

static void writer_stop(gmcp_arc_out *o)
{
    apr_status_t st;
    int i;
    if (!o->w) return;
    apr_thread_mutex_lock(o->w->mu);
    o->w->stop = 1;
    apr_thread_cond_broadcast(o->w->cv);
    apr_thread_mutex_unlock(o->w->mu);
    apr_thread_join(&st, o->w->thread);
    for (i = 0; i < WRITER_QUEUE; i++) gmcp_abuf_free(&o->w->work[i]);
    apr_pool_destroy(o->w->pool);
    o->w = NULL;
}

/* A full batch (o->batch or o->vals) to the writer, inline when there is none; the
 * caller goes on with the next (in an empty buffer the writer is done with). The
 * archive's failure so far, or APR_SUCCESS. */
static apr_status_t hand_over(gmcp_arc_out *o, gmcp_abuf *b, int values)
{
    gmcp_abuf tmp;
    apr_status_t failed;
    arc_writer *w;
    int tail;
    if (!o->w && (o->inline_only || !writer_start(o))) {
        batch_put(o, b, values);
        b->len = 0;
        return o->failed;
    }
    w = o->w;
    apr_thread_mutex_lock(w->mu);
    while (w->count == WRITER_QUEUE) apr_thread_cond_wait(w->cv, w->mu);
    failed = o->failed;
    tail = (w->head + w->count) % WRITER_QUEUE;
    tmp = w->work[tail];
    w->work[tail] = *b;
    w->values[tail] = values;
    *b = tmp;
    b->len = 0;
    w->count++;
    apr_thread_cond_broadcast(w->cv);
    apr_thread_mutex_unlock(w->mu);
    return failed;
}

/* Everything batched so far hashed and written, by the caller's thread. */
static void rows_flush(gmcp_arc_out *o)
{
    writer_drain(o);
    if (o->batch.len) batch_put(o, &o->batch, 0);
    if (o->vals.len) batch_put(o, &o->vals, 1);
    o->batch.len = o->vals.len = 0;
}

apr_status_t gmcp_arc_row(gmcp_arc_out *o, const char *line, size_t len)
{
    o->rows++;
    gmcp_abuf_add(&o->batch, line, len);
    return o->batch.len >= ROW_BATCH ? hand_over(o, &o->batch, 0) : APR_SUCCESS;
}

/* One tagged value: a single bounds check and plain stores (called per column). */
static inline void vals_put(gmcp_arc_out *o, char tag, const void *a, size_t an, const void *d,
                            size_t n)
{
    gmcp_abuf *v = &o->vals;
    if (v->len + 1 + an + n + 1 > v->cap) {
        gmcp_abuf_add(v, &tag, 1);
        if (an) gmcp_abuf_add(v, a, an);
        if (n) gmcp_abuf_add(v, d, n);
        return;
    }
    v->data[v->len++] = tag;
    if (an) memcpy(v->data + v->len, a, an);
    v->len += an;
    if (n) memcpy(v->data + v->len, d, n);
    v->len += n;
}

void gmcp_arc_val_null(gmcp_arc_out *o) { vals_put(o, 'N', NULL, 0, NULL, 0); }

void gmcp_arc_val_int(gmcp_arc_out *o, long long v) { vals_put(o, 'I', &v, sizeof(v), NULL, 0); }

void gmcp_arc_val_double(gmcp_arc_out *o, double v) { vals_put(o, 'F', &v, sizeof(v), NULL, 0); }

void gmcp_arc_val_text(gmcp_arc_out *o, const char *v, size_t len)
{
    vals_put(o, 'T', &len, sizeof(len), v, len);
}

apr_status_t gmcp_arc_val_row_end(gmcp_arc_out *o)
{
    o->rows++;
    vals_put(o, 'R', NULL, 0, NULL, 0);
    return o->vals.len >= ROW_BATCH ? hand_over(o, &o->vals, 1) : APR_SUCCESS;
}

/* The column types of a table header's [{"name","type"}]. */
static void set_types(gmcp_arc_out *o, json_t *columns)
{
    size_t i, n = json_array_size(columns);
    o->types = realloc(o->types, (n ? n : 1) * sizeof(int));
    if (!o->types) abort();
    o->ncols = (int)n;
    for (i = 0; i < n; i++) {
        int t = gmcp_coltype_parse(
            json_string_value(json_object_get(json_array_get(columns, i), "type")) ?: "");
        o->types[i] = t < 0 ? GMCP_COL_TEXT : t;
    }
}

apr_status_t gmcp_arc_table_begin(gmcp_arc_out *o, const char *name, json_t *columns)
{
    json_t *h;
    apr_status_t rv;
    rows_flush(o);
    set_types(o, columns);
    h = json_pack("{s:s, s:O}", "table", name, "columns", columns);
    rv = out_json_line(o, h);
    json_decref(h);
    o->cur = json_pack("{s:s, s:O}", "name", name, "columns", columns);
    o->rows = 0;
    EVP_DigestInit_ex(o->tab, EVP_sha256(), NULL);
    return rv;
}

static const char *digest_hex(apr_pool_t *p, EVP_MD_CTX *c)
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(c, md, &n);
    return gmcp_hex(p, md, n);
}

apr_status_t gmcp_arc_table_end(gmcp_arc_out *o)
{
    rows_flush(o);
    json_object_set_new(o->cur, "rows", json_integer(o->rows));
    json_object_set_new(o->cur, "sha256", json_string(digest_hex(o->pool, o->tab)));
    json_array_append_new(o->tables, o->cur);
    o->cur = NULL;
    return o->failed;
}

json_t *gmcp_arc_tables(gmcp_arc_out *o) { return o->tables; }

void gmcp_arc_out_inline(gmcp_arc_out *o, int on) { o->inline_only = on; }

/* ---- spool sections ------------------------------------------------------------------- */
apr_status_t gmcp_arc_spool_begin(gmcp_arc_out *o, const char *id, apr_int64_t bytes)
{
    json_t *h;
    apr_status_t rv;
    rows_flush(o);
    h = json_pack("{s:s, s:I}", "spool", id, "bytes", (json_int_t)bytes);
    rv = out_json_line(o, h);
    json_decref(h);
    if (!o->sbuf && !(o->sbuf = malloc(SPOOL_LINE))) abort();
    o->scur = json_pack("{s:s, s:I}", "id", id, "bytes", (json_int_t)bytes);
    o->sbytes = 0;
    o->swant = bytes;
    o->slen = 0;
    EVP_DigestInit_ex(o->tab, EVP_sha256(), NULL);
    return rv;
}

static apr_status_t spool_line(gmcp_arc_out *o)
{
    /* "<base64>"\n: 4 output characters per 3 bytes, and EVP_EncodeBlock's NUL */
    unsigned char *line = malloc(4 * ((o->slen + 2) / 3) + 4);
    apr_status_t rv;
    int n;
    if (!line) abort();
    line[0] = '"';
    n = EVP_EncodeBlock(line + 1, o->sbuf, (int)o->slen);
    line[1 + n] = '"';
    line[2 + n] = '\n';
    rv = out_write(o, line, (size_t)n + 3);
    free(line);
    o->slen = 0;
    return rv;
}

apr_status_t gmcp_arc_spool_data(gmcp_arc_out *o, const void *d, size_t n)
{
    const unsigned char *s = d;
    apr_status_t rv;
    EVP_DigestUpdate(o->tab, d, n);
    o->sbytes += (apr_int64_t)n;
    while (n) {
        size_t k = SPOOL_LINE - o->slen < n ? SPOOL_LINE - o->slen : n;
        memcpy(o->sbuf + o->slen, s, k);
        o->slen += k;
        s += k;
        n -= k;
        if (o->slen == SPOOL_LINE && (rv = spool_line(o)) != APR_SUCCESS) return rv;
    }
    return o->failed;
}

apr_status_t gmcp_arc_spool_end(gmcp_arc_out *o)
{
    apr_status_t rv;
    if (o->slen && (rv = spool_line(o)) != APR_SUCCESS) return rv;
    if (o->sbytes != o->swant) {
        json_decref(o->scur);
        o->scur = NULL;
        errno = EINVAL;
        return APR_EINVAL;
    }
    json_object_set_new(o->scur, "sha256", json_string(digest_hex(o->pool, o->tab)));
    json_array_append_new(o->spools, o->scur);
    o->scur = NULL;
    return o->failed;
}

json_t *gmcp_arc_spools(gmcp_arc_out *o) { return o->spools; }

apr_status_t gmcp_arc_finish(gmcp_arc_out *o, json_t *manifest)
{
    json_t *m = json_pack("{s:o}", "manifest", manifest), *end;
    apr_status_t rv;
    rows_flush(o);
    json_object_set_new(manifest, "format_version", json_integer(GMCP_ARCHIVE_FORMAT));
    json_object_set(manifest, "tables", o->tables);
    if (json_array_size(o->spools) || json_is_object(json_object_get(manifest, "spool"))) {
        if (!json_is_object(json_object_get(manifest, "spool")))
            json_object_set_new(manifest, "spool", json_object());
        json_object_set(json_object_get(manifest, "spool"), "files", o->spools);
    }
    rv = out_json_line(o, m);
    json_decref(m);
    end = json_pack("{s:{s:s}}", "end", "sha256", digest_hex(o->pool, o->all));
    if (rv == APR_SUCCESS) rv = out_json_line(o, end);
    json_decref(end);
    if (rv == APR_SUCCESS && o->enc) rv = flush_frame(o, 1);
    if (rv == APR_SUCCESS && o->fp && fflush(o->fp)) rv = out_failed(o, os_error());
    return rv != APR_SUCCESS ? rv : o->failed;
}

void gmcp_arc_out_close(gmcp_arc_out *o) { apr_pool_cleanup_run(o->pool, o, out_cleanup_apr); }

/* ---- reading ------------------------------------------------------------------------- */
typedef struct {
    FILE *fp;
    int enc, last_seen;
    gmcp_arc_key key;
    apr_uint64_t fno;
    unsigned char *buf; /* plaintext not yet consumed */
    size_t pos, len, cap;
    const char *why; /* what the last failure was */
} reader;

/* The next encrypted frame's plaintext into r->buf: APR_SUCCESS; APR_EOF when the file
 * ends where a frame would start; APR_EINVAL (r->why) for a frame cut short, too large,
 * one that does not authenticate, or one after the last. */
static apr_status_t read_frame(reader *r)
{
    unsigned char hdr[16], tag[16], aad[9];
    apr_uint32_t n;
    unsigned char *ct;
    EVP_CIPHER_CTX *cx;
    int out = 0, fin = 0, ok, last;
    apr_status_t rv = APR_SUCCESS;
    size_t got = fread(hdr, 1, 16, r->fp);
    if (got == 0 && feof(r->fp)) return APR_EOF;
    if (got != 16) {
        r->why = "truncated (incomplete encrypted frame)";
        return APR_EINVAL;
    }
    n = ((apr_uint32_t)hdr[0] << 24) | ((apr_uint32_t)hdr[1] << 16) | ((apr_uint32_t)hdr[2] << 8)
        | hdr[3];
    if (n > FRAME_MAX) {
        r->why = "corrupt (encrypted frame too large)";
        return APR_EINVAL;
    }
    ct = malloc(n + 1);
    if (!ct || fread(ct, 1, n, r->fp) != n || fread(tag, 1, 16, r->fp) != 16) {
        r->why = "truncated (incomplete encrypted frame)";
        rv = APR_EINVAL;
        goto leave;
    }
    if (r->cap < n + 1) {
        r->buf = realloc(r->buf, n + 1);
        r->cap = n + 1;
    }
    r->pos = r->len = 0;
    for (last = 0; last <= 1; last++) {
        make_aad(aad, r->fno, last);
        cx = EVP_CIPHER_CTX_new();
        ok = EVP_DecryptInit_ex(cx, EVP_aes_256_gcm(), NULL, r->key.key, hdr + 4) == 1
            && EVP_DecryptUpdate(cx, NULL, &out, aad, sizeof(aad)) == 1
            && EVP_DecryptUpdate(cx, r->buf, &out, ct, (int)n) == 1
            && EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1
            && EVP_DecryptFinal_ex(cx, r->buf + out, &fin) == 1;
        EVP_CIPHER_CTX_free(cx);
        if (ok) break;
    }
    if (last > 1) {
        r->why = "tampered (an encrypted frame does not authenticate)";
        rv = APR_EINVAL;
    }
    else if (r->last_seen) {
        r->why = "tampered (data after the last encrypted frame)";
        rv = APR_EINVAL;
    }
    else {
        r->last_seen = last;
        r->fno++;
        r->len = (size_t)out + (size_t)fin;
    }
leave:
    free(ct);
    return rv;
}

/* The next line (without '\n') into *line: APR_SUCCESS (a final line without '\n' with
 * *complete = 0), APR_EOF at the end, else the failure with r->why. */
static apr_status_t read_line(reader *r, gmcp_abuf *line, int *complete)
{
    line->len = 0;
    *complete = 0;
    for (;;) {
        if (r->pos < r->len) {
            unsigned char *nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
            size_t k = nl ? (size_t)(nl - (r->buf + r->pos)) : r->len - r->pos;
            gmcp_abuf_add(line, r->buf + r->pos, k);
            r->pos += k;
            if (line->len > LINE_MAX_BYTES) {
                r->why = "corrupt (a line is too long)";
                return APR_EINVAL;
            }
            if (nl) {
                r->pos++;
                *complete = 1;
                return APR_SUCCESS;
            }
        }
        if (r->enc) {
            apr_status_t rv = read_frame(r);
            if (APR_STATUS_IS_EOF(rv)) {
                if (!r->last_seen) {
                    r->why = "truncated (the last encrypted frame is missing)";
                    return APR_EINVAL;
                }
                return line->len ? APR_SUCCESS : APR_EOF;
            }
            if (rv != APR_SUCCESS) return rv;
        }
        else {
            if (!r->buf) {
                r->cap = 65536;
                r->buf = malloc(r->cap);
            }
            r->pos = 0;
            r->len = fread(r->buf, 1, r->cap, r->fp);
            if (r->len == 0) {
                if (ferror(r->fp)) {
                    r->why = "cannot read the archive";
                    return os_error();
                }
                return line->len ? APR_SUCCESS : APR_EOF;
            }
        }
    }
}

apr_status_t gmcp_arc_is_encrypted(const char *path, int *encrypted)
{
    char buf[256];
    FILE *fp = fopen(path, "rb");
    size_t n;
    *encrypted = 0;
    if (!fp) return os_error();
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    *encrypted = strstr(buf, "\"encryption\"") && strncmp(buf, "{\"gmcp_backup\"", 14) == 0;
    return APR_SUCCESS;
}

/* The archive is not what it should be: APR_EINVAL, *why the message. */
static apr_status_t fail_(const char **why, const char *msg)
{
    *why = msg;
    return APR_EINVAL;
}

apr_status_t gmcp_arc_read(apr_pool_t *p, const char *path, const char *secret,
                           const gmcp_arc_cb *cb, void *baton, json_t **manifest, const char **why)
{
    return gmcp_arc_read_ex(p, path, secret, cb, NULL, baton, manifest, why);
}

/* gmcp_arc_read_ex's state: where the read is and what it has seen so far. Its steps
 * return APR_SUCCESS to go on; a failure of the archive with *why set, or a callback's
 * status as it is. */
typedef struct {
    apr_pool_t *p;
    reader r;
    gmcp_abuf line;       /* the current line, without its '\n' */
    EVP_MD_CTX *all;      /* every line before the end line */
    EVP_MD_CTX *tab, *sp; /* the open table's rows, the open spool section's bytes */
    json_t *seen, *sseen; /* the tables, spool sections read (as in the manifest) */
    json_t *cur, *scur;   /* the open table, the open spool section (NULL: none) */
    json_t *man;
    apr_int64_t rows;          /* of the open table */
    apr_int64_t sbytes, swant; /* of the open spool section: decoded so far, announced */
    unsigned char *dec;        /* a spool line's decoded bytes */
    size_t dcap;
    int done;             /* the end line was read */
    const char *end_hash; /* its SHA-256 */
    const gmcp_arc_cb *cb;
    const gmcp_arc_spool_cb *scb;
    void *baton;
    const char **why;
} arc_read;

static void hash_line(EVP_MD_CTX *c, const gmcp_abuf *line)
{
    EVP_DigestUpdate(c, line->data, line->len);
    EVP_DigestUpdate(c, "\n", 1);
}

/* The first line of a part of the archive (`what`: the message when there is none). */
static apr_status_t first_line(arc_read *s, const char *what)
{
    int complete;
    apr_status_t rv = read_line(&s->r, &s->line, &complete);
    if (APR_STATUS_IS_EOF(rv) || (rv == APR_SUCCESS && !complete)) return fail_(s->why, what);
    if (rv != APR_SUCCESS) *s->why = s->r.why;
    return rv;
}

/* An encrypted archive (`e` its header's "encryption"): the key from `secret` (its
 * fingerprint must match), then the frames from just after the header line, and the
 * plain archive's first line inside them. */
static apr_status_t start_decryption(arc_read *s, json_t *e, const char *secret)
{
    reader *r = &s->r;
    const char *salt_s = json_string_value(json_object_get(e, "salt"));
    const char *fp = json_string_value(json_object_get(e, "key_fingerprint"));
    unsigned char *salt;
    apr_size_t slen = 0;
    json_error_t je;
    json_t *j;
    apr_status_t rv;

    if (!secret)
        return fail_(s->why,
                     "the archive is encrypted: give --encrypt file:PATH|env:NAME with "
                     "its key");
    salt = salt_s ? gmcp_b64url_decode(s->p, salt_s, &slen) : NULL;
    if (!salt || slen != 16 || !fp || gmcp_arc_key_derive(secret, salt, &r->key) != APR_SUCCESS)
        return fail_(s->why, "corrupt (bad encryption header)");
    if (strcmp(fp, r->key.fingerprint))
        return fail_(s->why,
                     "wrong key: the archive was encrypted with another key "
                     "(fingerprint differs)");
    r->enc = 1;
    r->pos = r->len = 0; /* the rest is frames; the plain archive starts inside */
    /* The buffered bytes after the header line are frame bytes: rewind to them. */
    if (fseek(r->fp, (long)(s->line.len + 1), SEEK_SET)) {
        rv = os_error();
        *s->why = "cannot read the archive";
        return rv;
    }
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
    if ((rv = first_line(s, "truncated")) != APR_SUCCESS) return rv;
    j = json_loadb(s->line.data, s->line.len, 0, &je);
    if (!j || json_integer_value(json_object_get(j, "gmcp_backup")) != GMCP_ARCHIVE_FORMAT) {
        if (j) json_decref(j);
        return fail_(s->why, "corrupt (bad first line inside the encryption)");
    }
    json_decref(j);
    return APR_SUCCESS;
}

/* Step 1: the first line, outside any encryption: a gmcpctl archive of this format (a
 * key given for a plain one is harmless: ignored). The whole-archive hash starts with
 * the plain archive's first line. */
static apr_status_t read_first_line(arc_read *s, const char *path, const char *secret)
{
    json_error_t je;
    json_t *j;
    apr_status_t rv;

    if (!(s->r.fp = fopen(path, "rb"))) {
        rv = os_error();
        *s->why = apr_psprintf(s->p, "cannot open %s: %s", path, strerror(errno));
        return rv;
    }
    if ((rv = first_line(s, "truncated (empty archive)")) != APR_SUCCESS) return rv;
    if (!(j = json_loadb(s->line.data, s->line.len, 0, &je)) || !json_is_object(j)
        || !json_is_integer(json_object_get(j, "gmcp_backup"))) {
        if (j) json_decref(j);
        return fail_(s->why, "not a gmcpctl backup archive");
    }
    if (json_integer_value(json_object_get(j, "gmcp_backup")) != GMCP_ARCHIVE_FORMAT) {
        apr_int64_t v = (apr_int64_t)json_integer_value(json_object_get(j, "gmcp_backup"));
        *s->why = apr_psprintf(s->p,
                               "unknown format version %" APR_INT64_T_FMT " (this "
                               "gmcpctl reads version %d)",
                               v, GMCP_ARCHIVE_FORMAT);
        rv = APR_EINVAL;
    }
    else if (json_object_get(j, "encryption"))
        rv = start_decryption(s, json_object_get(j, "encryption"), secret);
    json_decref(j);
    if (rv != APR_SUCCESS) return rv;
    EVP_DigestInit_ex(s->all, EVP_sha256(), NULL);
    hash_line(s->all, &s->line);
    return APR_SUCCESS;
}

/* A row line of the open table. */
static apr_status_t read_row(arc_read *s)
{
    if (!s->cur) return fail_(s->why, "corrupt (a row before any table header)");
    s->rows++;
    hash_line(s->tab, &s->line);
    hash_line(s->all, &s->line);
    if (s->cb && s->cb->row) return s->cb->row(s->baton, s->line.data, s->line.len);
    return APR_SUCCESS;
}

/* A piece of the open spool section: "<standard base64>". */
static apr_status_t read_spool_data(arc_read *s)
{
    const gmcp_abuf *line = &s->line;
    size_t n = line->len - 2, pad = 0;
    int got_n;
    if (!s->scur) return fail_(s->why, "corrupt (spool data outside a spool section)");
    if (line->len < 2 || line->data[line->len - 1] != '"' || n % 4 || !n)
        return fail_(s->why, "corrupt (a bad spool data line)");
    if (s->dcap < n / 4 * 3 + 1) {
        s->dcap = n / 4 * 3 + 1;
        s->dec = realloc(s->dec, s->dcap);
        if (!s->dec) abort();
    }
    got_n = EVP_DecodeBlock(s->dec, (const unsigned char *)line->data + 1, (int)n);
    if (line->data[n] == '=') pad++;
    if (line->data[n - 1] == '=') pad++;
    if (got_n < 0 || (size_t)got_n < pad) return fail_(s->why, "corrupt (a bad spool data line)");
    got_n -= (int)pad;
    s->sbytes += got_n;
    if (s->sbytes > s->swant)
        return fail_(s->why,
                     apr_psprintf(s->p,
                                  "tampered: spool file %s is longer than its "
                                  "header says",
                                  json_string_value(json_object_get(s->scur, "id"))));
    EVP_DigestUpdate(s->sp, s->dec, (size_t)got_n);
    hash_line(s->all, line);
    if (s->scb && s->scb->data) return s->scb->data(s->baton, s->dec, (size_t)got_n);
    return APR_SUCCESS;
}

/* Any header line closes the open table: its row count and hash as read. */
static void close_table(arc_read *s)
{
    if (!s->cur) return;
    json_object_set_new(s->cur, "rows", json_integer(s->rows));
    json_object_set_new(s->cur, "sha256", json_string(digest_hex(s->p, s->tab)));
    json_array_append_new(s->seen, s->cur);
    s->cur = NULL;
}

/* ... and the open spool section, which must have had all its bytes. */
static apr_status_t close_spool(arc_read *s)
{
    const char *id, *h;
    if (!s->scur) return APR_SUCCESS;
    id = json_string_value(json_object_get(s->scur, "id"));
    if (s->sbytes != s->swant)
        return fail_(s->why,
                     apr_psprintf(s->p,
                                  "tampered: spool file %s has %" APR_INT64_T_FMT
                                  " of its %" APR_INT64_T_FMT " bytes",
                                  id, s->sbytes, s->swant));
    h = digest_hex(s->p, s->sp);
    json_object_set_new(s->scur, "sha256", json_string(h));
    json_array_append_new(s->sseen, s->scur);
    s->scur = NULL;
    if (s->scb && s->scb->end) return s->scb->end(s->baton, id, h);
    return APR_SUCCESS;
}

/* {"spool":"<id>","bytes":N} */
static apr_status_t open_spool(arc_read *s, json_t *j)
{
    const char *id = json_string_value(json_object_get(j, "spool"));
    json_t *nb = json_object_get(j, "bytes");
    if (!id || !*id || !json_is_integer(nb) || json_integer_value(nb) < 0)
        return fail_(s->why, "corrupt (bad spool header)");
    s->swant = json_integer_value(nb);
    s->sbytes = 0;
    s->scur = json_pack("{s:s, s:I}", "id", id, "bytes", (json_int_t)s->swant);
    EVP_DigestInit_ex(s->sp, EVP_sha256(), NULL);
    hash_line(s->all, &s->line);
    if (s->scb && s->scb->begin) return s->scb->begin(s->baton, id, s->swant);
    return APR_SUCCESS;
}

/* {"table":"T","columns":[...]} */
static apr_status_t open_table(arc_read *s, json_t *j)
{
    const char *name = json_string_value(json_object_get(j, "table"));
    json_t *cols = json_object_get(j, "columns");
    if (!name || !json_is_array(cols)) return fail_(s->why, "corrupt (bad table header)");
    s->cur = json_pack("{s:s, s:O}", "name", name, "columns", cols);
    s->rows = 0;
    EVP_DigestInit_ex(s->tab, EVP_sha256(), NULL);
    hash_line(s->all, &s->line);
    if (s->cb && s->cb->table) return s->cb->table(s->baton, name, cols);
    return APR_SUCCESS;
}

/* A header line after the open table or spool section closed: it opens the next one,
 * or it is the manifest or the end line. */
static apr_status_t take_header(arc_read *s, json_t *j)
{
    if (json_object_get(j, "spool")) return open_spool(s, j);
    if (json_object_get(j, "table")) return open_table(s, j);
    if (json_object_get(j, "manifest")) {
        if (s->man) return fail_(s->why, "corrupt (two manifests)");
        s->man = json_incref(json_object_get(j, "manifest"));
        hash_line(s->all, &s->line);
        return APR_SUCCESS;
    }
    if (json_object_get(j, "end")) {
        s->end_hash = apr_pstrdup(
            s->p, json_string_value(json_object_get(json_object_get(j, "end"), "sha256")) ?: "");
        s->done = 1;
        return APR_SUCCESS;
    }
    return fail_(s->why, "corrupt (an unknown line)");
}

/* A JSON object line: it closes what is open, then is taken as its key says. */
static apr_status_t read_header_line(arc_read *s)
{
    json_error_t je;
    json_t *j;
    apr_status_t rv;
    if (!(j = json_loadb(s->line.data, s->line.len, 0, &je)) || !json_is_object(j)) {
        if (j) json_decref(j);
        return fail_(s->why, "corrupt (a line is not JSON)");
    }
    close_table(s);
    if ((rv = close_spool(s)) == APR_SUCCESS) rv = take_header(s, j);
    json_decref(j);
    return rv;
}

/* Step 2: every further line, by its first byte, up to the end of the archive. */
static apr_status_t read_body(arc_read *s)
{
    apr_status_t rv = APR_SUCCESS, got = APR_SUCCESS;
    int complete;
    while (rv == APR_SUCCESS && (got = read_line(&s->r, &s->line, &complete)) == APR_SUCCESS) {
        if (s->done)
            rv = fail_(s->why, "corrupt (data after the end line)");
        else if (!complete)
            rv = fail_(s->why, "truncated (the last line is incomplete)");
        else if (s->line.len && s->line.data[0] == '[')
            rv = read_row(s);
        else if (s->line.len && s->line.data[0] == '"')
            rv = read_spool_data(s);
        else
            rv = read_header_line(s);
    }
    if (rv == APR_SUCCESS && !APR_STATUS_IS_EOF(got)) {
        *s->why = s->r.why;
        rv = got;
    }
    return rv;
}

/* The manifest's tables are the ones read: names, columns, row counts and hashes. */
static apr_status_t check_manifest_tables(arc_read *s)
{
    json_t *mt = json_object_get(s->man, "tables");
    size_t i;
    if (json_integer_value(json_object_get(s->man, "format_version")) != GMCP_ARCHIVE_FORMAT)
        return fail_(s->why, "unknown format version in the manifest");
    if (!json_is_array(mt) || json_array_size(mt) != json_array_size(s->seen))
        return fail_(s->why, "tampered: the manifest's tables differ from the archive's");
    for (i = 0; i < json_array_size(mt); i++) {
        json_t *a = json_array_get(mt, i), *b = json_array_get(s->seen, i);
        const char *name = json_string_value(json_object_get(b, "name"));
        if (!json_equal(json_object_get(a, "name"), json_object_get(b, "name"))
            || !json_equal(json_object_get(a, "columns"), json_object_get(b, "columns")))
            return fail_(s->why,
                         apr_psprintf(s->p,
                                      "tampered: table %s's name or columns "
                                      "differ from the manifest",
                                      name));
        if (!json_equal(json_object_get(a, "rows"), json_object_get(b, "rows")))
            return fail_(
                s->why,
                apr_psprintf(s->p,
                             "tampered: row count mismatch on table %s "
                             "(manifest %" APR_INT64_T_FMT ", archive %" APR_INT64_T_FMT ")",
                             name, (apr_int64_t)json_integer_value(json_object_get(a, "rows")),
                             (apr_int64_t)json_integer_value(json_object_get(b, "rows"))));
        if (!json_equal(json_object_get(a, "sha256"), json_object_get(b, "sha256")))
            return fail_(s->why, apr_psprintf(s->p, "tampered: hash mismatch on table %s", name));
    }
    return APR_SUCCESS;
}

/* The manifest's spool.files are the sections read: ids, sizes and hashes, in order. */
static apr_status_t check_manifest_spools(arc_read *s)
{
    json_t *ms = json_object_get(json_object_get(s->man, "spool"), "files");
    size_t k;
    if (ms && !json_is_array(ms))
        return fail_(s->why, "corrupt manifest (spool.files is not a list)");
    if (json_array_size(ms) != json_array_size(s->sseen))
        return fail_(s->why,
                     apr_psprintf(s->p,
                                  "tampered: the manifest lists %d spool "
                                  "file(s), the archive holds %d",
                                  (int)json_array_size(ms), (int)json_array_size(s->sseen)));
    for (k = 0; k < json_array_size(s->sseen); k++) {
        json_t *a = json_array_get(ms, k), *b = json_array_get(s->sseen, k);
        if (!json_equal(json_object_get(a, "id"), json_object_get(b, "id"))
            || !json_equal(json_object_get(a, "bytes"), json_object_get(b, "bytes"))
            || !json_equal(json_object_get(a, "sha256"), json_object_get(b, "sha256")))
            return fail_(s->why,
                         apr_psprintf(s->p,
                                      "tampered: hash or size mismatch on "
                                      "spool file %s",
                                      json_string_value(json_object_get(b, "id"))));
    }
    return APR_SUCCESS;
}

/* Step 3: a manifest and an end line, the hash of everything before the end line, and
 * the manifest's tables and spool files exactly those read. */
static apr_status_t read_check_end(arc_read *s)
{
    apr_status_t rv;
    if (!s->done || !s->man)
        return fail_(s->why, "truncated (no manifest and end line: an incomplete backup)");
    if (strcmp(s->end_hash, digest_hex(s->p, s->all)))
        return fail_(s->why, "tampered: the archive's SHA-256 does not match its end line");
    if ((rv = check_manifest_tables(s)) != APR_SUCCESS) return rv;
    return check_manifest_spools(s);
}

static void read_cleanup(arc_read *s)
{
    if (s->cur) json_decref(s->cur);
    if (s->scur) json_decref(s->scur);
    if (s->man) json_decref(s->man);
    json_decref(s->seen);
    json_decref(s->sseen);
    EVP_MD_CTX_free(s->sp);
    free(s->dec);
    EVP_MD_CTX_free(s->all);
    EVP_MD_CTX_free(s->tab);
    gmcp_abuf_free(&s->line);
    free(s->r.buf);
    if (s->r.fp) fclose(s->r.fp);
}

apr_status_t gmcp_arc_read_ex(apr_pool_t *p, const char *path, const char *secret,
                              const gmcp_arc_cb *cb, const gmcp_arc_spool_cb *scb, void *baton,
                              json_t **manifest, const char **why)
{
    arc_read s;
    apr_status_t rv;

    memset(&s, 0, sizeof(s));
    s.p = p;
    s.all = EVP_MD_CTX_new();
    s.tab = EVP_MD_CTX_new();
    s.sp = EVP_MD_CTX_new();
    s.seen = json_array();
    s.sseen = json_array();
    s.cb = cb;
    s.scb = scb;
    s.baton = baton;
    s.why = why;
    *manifest = NULL;
    if ((rv = read_first_line(&s, path, secret)) == APR_SUCCESS
        && (rv = read_body(&s)) == APR_SUCCESS)
        rv = read_check_end(&s);
    if (rv == APR_SUCCESS) {
        *manifest = s.man;
        s.man = NULL;
    }
    read_cleanup(&s);
    return rv;
}
