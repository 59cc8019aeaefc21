/* gmcp_archive.h — the backend-neutral backup archive of gmcpctl backup/restore/copy.
 *
 * httpd-free and database-free: the archive format, the canonical row encoding, the
 * per-table SHA-256 and the optional AES-256-GCM encryption. The database side (reading
 * a snapshot, loading a target) lives in gmcpctl/backup.c.
 *
 * Plain archive (format_version 1), a JSON-lines stream:
 *   {"gmcp_backup":1}                                   first line: format and version
 *   {"table":"T","columns":[{"name":"c","type":"int"},...]}   a table's header line
 *   [v1,v2,...]                                         its rows, one canonical line each
 *   ...                                                 (further tables, by name)
 *   {"spool":"<upload id>","bytes":N}                   optional (backup --include-uploads):
 *   "<base64>"                                          a spool file's first N bytes, as
 *   ...                                                 standard base64 (with padding) in
 *                                                       JSON strings, 48 KiB a line
 *   ...                                                 (further spool files, by id)
 *   {"manifest":{...}}                                  the manifest (see below)
 *   {"end":{"sha256":"<hex>"}}                          SHA-256 of every byte before it
 * A table's "sha256" in the manifest is SHA-256 over its row lines, each with its '\n'.
 * Spool sections (still format 1: an archive without them is exactly as before; an
 * older gmcpctl refuses one with them as "corrupt (an unknown line)"): the manifest then
 * has "spool":{"files":[{"id","bytes","sha256"}],"skipped":[{"id","upload_offset",
 * "reason",...}]}, "sha256" over the decoded bytes; the reader checks every section's
 * byte count against its header and the list against the manifest, in order.
 *
 * Canonical values: NULL null; "int" a JSON integer; "bool" true/false; "text" a JSON
 * string (escapes: \" \\ \n \r \t \b \f and \u00XX for other control characters, other
 * bytes as they are, so UTF-8 stays UTF-8); "json" the value re-serialised compact with
 * sorted keys, as a JSON string; "timestamp" a string YYYY-MM-DDTHH:MM:SS[.f]Z (UTC).
 *
 * Encrypted archive: the first line is
 *   {"gmcp_backup":1,"encryption":{"alg":"AES-256-GCM","kdf":"HKDF-SHA256",
 *    "salt":"<b64url>","key_fingerprint":"<hex>"}}
 * and the rest is frames: u32 big-endian length L, 12-byte random nonce, L bytes of
 * ciphertext, 16-byte tag; AAD is the u64 big-endian frame number and one byte, 1 on the
 * last frame. The plaintext of the frames is a whole plain archive.
 */
#ifndef GMCP_ARCHIVE_H
#define GMCP_ARCHIVE_H

#include <stdio.h>
#include <apr_errno.h>
#include <apr_pools.h>
#include <jansson.h>

#define GMCP_ARCHIVE_FORMAT 1

enum { GMCP_COL_TEXT = 0, GMCP_COL_INT, GMCP_COL_BOOL, GMCP_COL_JSON, GMCP_COL_TIME };

/* The canonical column type of a declared SQL type (SQLite's declaration or
 * PostgreSQL's information_schema data_type). */
int gmcp_coltype_from_decl(const char *decl);
const char *gmcp_coltype_name(int type);
int gmcp_coltype_parse(const char *name); /* the type, or -1 when unknown (a lookup) */

/* A malloc'd growable byte buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} gmcp_abuf;
void gmcp_abuf_add(gmcp_abuf *b, const void *d, size_t n);
void gmcp_abuf_free(gmcp_abuf *b);

/* Build one canonical row line: begin, one value per column (v NULL for SQL NULL; the
 * engine's text form of the value), end (appends "]\n"). */
void gmcp_canon_begin(gmcp_abuf *b);
void gmcp_canon_value(gmcp_abuf *b, int first, int type, const char *v, size_t len);
void gmcp_canon_end(gmcp_abuf *b);
/* An integer the engine returned as one (the same line as gmcp_canon_value of its
 * decimal text). */
void gmcp_canon_int(gmcp_abuf *b, int first, int type, long long v);

/* Key material from a secret (an --encrypt source's value). */
typedef struct {
    unsigned char key[32];
    char fingerprint[33]; /* hex of HMAC-SHA256(key, label), 16 bytes */
} gmcp_arc_key;
/* Derive with HKDF-SHA256 and `salt` (16 bytes). APR_SUCCESS, or APR_EGENERAL when
 * OpenSSL failed. */
apr_status_t gmcp_arc_key_derive(const char *secret, const unsigned char *salt, gmcp_arc_key *k);
/* A short fingerprint of a secret (e.g. the key pepper): hex, never the secret. */
const char *gmcp_arc_fingerprint(apr_pool_t *p, const char *secret, const char *label);

/* Writing. fp NULL: nothing written, only counts and hashes (restore's re-check). The
 * writing functions return APR_SUCCESS, or the first failure of the archive so far: the
 * write's OS error (errno is set too: callers may say strerror(errno)), APR_EGENERAL when
 * OpenSSL failed; a failure sticks, every later call returns it again. */
typedef struct gmcp_arc_out gmcp_arc_out;
gmcp_arc_out *gmcp_arc_out_open(apr_pool_t *p, FILE *fp, const char *secret);
/* on: encode, hash and write on the caller's thread only, no writer thread takes a
 * second core; off (the default): the writer thread may start at the next full batch.
 * May be switched off between any two rows. */
void gmcp_arc_out_inline(gmcp_arc_out *o, int on);
apr_status_t gmcp_arc_table_begin(gmcp_arc_out *o, const char *name, json_t *columns);
apr_status_t gmcp_arc_row(gmcp_arc_out *o, const char *line, size_t len); /* with '\n' */
/* Or a row as the engine's values, in column order, ended by gmcp_arc_val_row_end: the
 * same line is made from them on a writer thread, while the caller reads the next rows.
 * A table's rows come one way or the other. */
void gmcp_arc_val_null(gmcp_arc_out *o);
void gmcp_arc_val_int(gmcp_arc_out *o, long long v);
void gmcp_arc_val_double(gmcp_arc_out *o, double v);
void gmcp_arc_val_text(gmcp_arc_out *o, const char *v, size_t len);
apr_status_t gmcp_arc_val_row_end(gmcp_arc_out *o);
apr_status_t gmcp_arc_table_end(gmcp_arc_out *o);
/* The tables so far: [{"name","columns","rows","sha256"}] (borrowed). */
json_t *gmcp_arc_tables(gmcp_arc_out *o);
/* A spool section (after the tables): begin with the byte count that follows, the
 * bytes (any pieces), end (APR_EINVAL, errno EINVAL, when the count differs). */
apr_status_t gmcp_arc_spool_begin(gmcp_arc_out *o, const char *id, apr_int64_t bytes);
apr_status_t gmcp_arc_spool_data(gmcp_arc_out *o, const void *d, size_t n);
apr_status_t gmcp_arc_spool_end(gmcp_arc_out *o);
/* The spool sections so far: [{"id","bytes","sha256"}] (borrowed). */
json_t *gmcp_arc_spools(gmcp_arc_out *o);
/* Write the manifest (given fields plus "tables" and "format_version"; "spool.files"
 * when there were spool sections or the manifest has a "spool" object), the end line,
 * and flush. Steals `manifest`. */
apr_status_t gmcp_arc_finish(gmcp_arc_out *o, json_t *manifest);
void gmcp_arc_out_close(gmcp_arc_out *o);

/* Reading and verifying. Callbacks may be NULL; APR_SUCCESS goes on, any other status
 * stops the read and is what it returns. */
typedef struct {
    apr_status_t (*table)(void *baton, const char *name, json_t *columns);
    apr_status_t (*row)(void *baton, const char *line, size_t len); /* without '\n' */
} gmcp_arc_cb;
/* A spool section: its header, its decoded bytes in pieces, its end with the SHA-256
 * (hex) of what was read (checked against the manifest only at the archive's end). */
typedef struct {
    apr_status_t (*begin)(void *baton, const char *id, apr_int64_t bytes);
    apr_status_t (*data)(void *baton, const unsigned char *d, size_t n);
    apr_status_t (*end)(void *baton, const char *id, const char *sha256);
} gmcp_arc_spool_cb;
/* Read the whole archive, checking the format, every table's row count and hash, every
 * spool section's size and hash, the manifest and the end hash. `secret` is the
 * --encrypt source's value for an encrypted archive (NULL otherwise). APR_SUCCESS with
 * *manifest the manifest (caller decrefs). A failure of the archive itself sets *why
 * (one line): APR_EINVAL when it is not a readable archive of this format, is truncated
 * or tampered with, or needs another key; the OS error when it cannot be opened or read.
 * A callback's status stops the read as it is, *why left as it was. */
apr_status_t gmcp_arc_read(apr_pool_t *p, const char *path, const char *secret,
                           const gmcp_arc_cb *cb, void *baton, json_t **manifest, const char **why);
/* The same, with spool section callbacks (scb may be NULL). */
apr_status_t gmcp_arc_read_ex(apr_pool_t *p, const char *path, const char *secret,
                              const gmcp_arc_cb *cb, const gmcp_arc_spool_cb *scb, void *baton,
                              json_t **manifest, const char **why);
/* Whether the archive at path is encrypted: APR_SUCCESS with *encrypted 1 or 0, or the
 * error opening it. */
apr_status_t gmcp_arc_is_encrypted(const char *path, int *encrypted);

#endif
