/* gmcp_uploads.c — tus upload rows and the tus header grammar. */
#include "gmcp_uploads.h"
#include "gmcp_lease.h"
#include "gmcp_errlog.h"
#include "gmcp_sql.h"
#include "gmcp_store.h"
#include "gmcp_util.h"
#include "gmcp_wire.h"

#include <string.h>
#include <apr_base64.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#define UPLOAD_ID_BYTES 16 /* 22 characters of base64url (gmcp_upload_id_ok) */

#define INSERT_COLS                                                  \
    "id, owner, key_id, length, upload_offset, metadata, filename, " \
    "filetype, concat, parts, sha256, state, created, expires, completed, spool"
#define UPLOAD_COLS                                                            \
    INSERT_COLS ", sha_state, phase, progress, progress_at, detail, sniffed, " \
                "durable_offset, durable_state, unsynced_on, unsynced_at"

#define REOPEN                                                               \
    "state = CASE WHEN state = 'complete' THEN 'receiving' ELSE state END, " \
    "sha256 = CASE WHEN state = 'complete' THEN '' ELSE sha256 END, "        \
    "completed = CASE WHEN state = 'complete' THEN 0 ELSE completed END"

const gmcp_stmt gmcp_upload_stmts[] = {
    {"gmcp_upload_insert",
     "INSERT INTO uploads (" INSERT_COLS ") VALUES (%s, %s, %s, %lld, %lld, %s, %s, %s, %s, "
     "%s, %s, %s, %lld, %lld, %lld, %s)"},
    {"gmcp_upload_select", "SELECT " UPLOAD_COLS " FROM uploads WHERE id = %s"},
    {"gmcp_upload_list_owner",
     "SELECT " UPLOAD_COLS " FROM uploads WHERE owner = %s ORDER BY created DESC, id"},
    {"gmcp_upload_list_all", "SELECT " UPLOAD_COLS " FROM uploads ORDER BY created DESC, id"},
    {"gmcp_upload_lock",
     "UPDATE uploads SET lock_token = %s, lock_until = %lld WHERE id = %s "
     "AND (lock_token = '' OR lock_until < %lld OR lock_token = %s)"},
    {"gmcp_upload_holder", "SELECT lock_token FROM uploads WHERE id = %s"},
    {"gmcp_upload_steal",
     "UPDATE uploads SET lock_token = %s, lock_until = %lld WHERE id = %s AND lock_token = %s"},
    {"gmcp_upload_unlock",
     "UPDATE uploads SET lock_token = '', lock_until = 0 WHERE id = %s AND lock_token = %s"},
    /* A PATCH only writes an upload that is receiving, or one read back at its durable
     * point after a crash (gmcp_upload_tail_lost) whose row still says complete. */
    {"gmcp_upload_advance",
     "UPDATE uploads SET upload_offset = %lld, length = %lld, expires = %lld, sha_state = %s, "
     "durable_offset = -1, durable_state = '', unsynced_on = '', unsynced_at = 0, " REOPEN
     " WHERE id = %s AND lock_token = %s"},
    {"gmcp_upload_advance_unsynced",
     "UPDATE uploads SET upload_offset = %lld, length = %lld, expires = %lld, sha_state = %s, "
     "durable_offset = %lld, durable_state = %s, unsynced_on = %s, unsynced_at = %lld, " REOPEN
     " WHERE id = %s AND lock_token = %s"},
    /* Only forward, and only while the row still counts these bytes as its own. */
    {"gmcp_upload_tail_synced",
     "UPDATE uploads SET durable_offset = CASE WHEN upload_offset = %lld THEN -1 ELSE %lld END, "
     "durable_state = CASE WHEN upload_offset = %lld THEN '' ELSE %s END, "
     "unsynced_on = CASE WHEN upload_offset = %lld THEN '' ELSE unsynced_on END "
     "WHERE id = %s AND durable_offset >= 0 AND durable_offset < %lld AND upload_offset >= %lld"},
    {"gmcp_upload_tail_failed",
     "UPDATE uploads SET unsynced_on = '!sync failed', unsynced_at = 0 "
     "WHERE id = %s AND durable_offset >= 0 AND durable_offset < %lld AND upload_offset >= %lld"},
    {"gmcp_upload_complete",
     "UPDATE uploads SET state = 'complete', length = %lld, upload_offset = %lld, "
     "sha256 = %s, completed = %lld, expires = %lld, sha_state = '', phase = 'received', "
     "progress = %lld, progress_at = %lld, detail = '' WHERE id = %s"},
    /* Progress is advisory (for the SSE stream): never the offset a client is told. */
    {"gmcp_upload_progress",
     "UPDATE uploads SET phase = %s, progress = %lld, progress_at = %lld, detail = %s "
     "WHERE id = %s"},
    {"gmcp_upload_sniffed", "UPDATE uploads SET sniffed = %s WHERE id = %s"},
    {"gmcp_upload_terminate",
     "UPDATE uploads SET state = 'terminated' WHERE id = %s AND owner = %s "
     "AND state <> 'terminated'"},
    {"gmcp_upload_expired",
     "SELECT " UPLOAD_COLS " FROM uploads WHERE expires < %lld ORDER BY expires"},
    {"gmcp_upload_delete", "DELETE FROM uploads WHERE id = %s"},
    /* Spool bytes an owner holds or has announced (deferred: what arrived so far). */
    {"gmcp_upload_spool_used",
     "SELECT COALESCE(SUM(CASE WHEN length >= 0 THEN length ELSE upload_offset END), 0) "
     "FROM uploads WHERE owner = %s AND state <> 'terminated' AND expires >= %lld"},
    {NULL, NULL}};

static const char *I(apr_pool_t *p, apr_int64_t v) { return gmcp_i64_str(p, v); }

static void fill(const char **r, gmcp_upload *u)
{
    u->id = r[0];
    u->owner = r[1];
    u->key_id = r[2];
    u->length = apr_atoi64(r[3]);
    u->offset = apr_atoi64(r[4]);
    u->metadata = r[5];
    u->filename = r[6];
    u->filetype = r[7];
    u->concat = r[8];
    u->parts = r[9];
    u->sha256 = r[10];
    u->state = r[11];
    u->created = apr_atoi64(r[12]);
    u->expires = apr_atoi64(r[13]);
    u->completed = apr_atoi64(r[14]);
    u->spool = r[15];
    u->sha_state = r[16];
    u->phase = r[17];
    u->progress = apr_atoi64(r[18]);
    u->progress_at = apr_atoi64(r[19]);
    u->detail = r[20];
    u->sniffed = r[21];
    u->durable_offset = apr_atoi64(r[22]);
    u->durable_state = r[23];
    u->unsynced_on = r[24];
    u->unsynced_at = apr_atoi64(r[25]);
    u->rewound = 0;
}

void gmcp_upload_tail_lost(gmcp_upload *x, gmcp_machine_state holder, apr_int64_t now)
{
    if (x->durable_offset < 0 || x->durable_offset >= x->offset
        || !strcmp(x->state, GMCP_UPLOAD_TERMINATED))
        return;
    if (holder == GMCP_MACHINE_SAME) return;
    if (holder == GMCP_MACHINE_OTHER && x->unsynced_at > 0
        && now - x->unsynced_at <= GMCP_UPLOAD_TAIL_TRUST)
        return;
    x->offset = x->durable_offset;
    x->sha_state = x->durable_state;
    x->durable_offset = -1;
    x->rewound = 1;
    if (!strcmp(x->state, GMCP_UPLOAD_COMPLETE)) {
        x->state = GMCP_UPLOAD_RECEIVING;
        x->sha256 = "";
        x->completed = 0;
        x->phase = GMCP_PHASE_RECEIVING;
    }
}

/* A row as read, after the rule for a tail whose machine may have lost it. */
static void fill_checked(apr_pool_t *p, const char **r, gmcp_upload *u)
{
    fill(r, u);
    if (u->durable_offset >= 0)
        gmcp_upload_tail_lost(u, gmcp_machine_check(p, u->unsynced_on), gmcp_now_sec());
}

apr_status_t gmcp_upload_create(gmcp_db *db, const gmcp_upload *u)
{
    apr_pool_t *p = db->pool;
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_insert", &n,
                        GMCP_ARGS(u->id, u->owner, u->key_id, I(p, u->length), I(p, u->offset),
                                  u->metadata, u->filename, u->filetype, u->concat, u->parts,
                                  u->sha256, u->state, I(p, u->created), I(p, u->expires),
                                  I(p, u->completed), u->spool ? u->spool : ""));
}

apr_status_t gmcp_upload_get(gmcp_db *db, const char *id, const char *owner, gmcp_upload *out)
{
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select(db, "gmcp_upload_select", &rs, GMCP_ARGS(id));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    fill_checked(db->pool, GMCP_ROW(&rs, 0), out);
    if (owner && strcmp(owner, out->owner) != 0) return APR_ENOENT;
    return APR_SUCCESS;
}

apr_status_t gmcp_upload_list(gmcp_db *db, const char *owner, apr_array_header_t **out)
{
    gmcp_rows rs;
    int i;
    apr_status_t rv = owner ? gmcp_db_select(db, "gmcp_upload_list_owner", &rs, GMCP_ARGS(owner))
                            : gmcp_db_select(db, "gmcp_upload_list_all", &rs, 0, NULL);
    if (rv != APR_SUCCESS) return rv;
    *out = apr_array_make(db->pool, rs.rows->nelts + 1, sizeof(gmcp_upload));
    for (i = 0; i < rs.rows->nelts; i++)
        fill_checked(db->pool, GMCP_ROW(&rs, i), apr_array_push(*out));
    return APR_SUCCESS;
}

apr_status_t gmcp_upload_lock(gmcp_db *db, const char *id, const char *token, apr_int64_t seconds)
{
    apr_int64_t now = gmcp_now_sec();
    const char *holder = NULL;
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_upload_lock", &n,
                     GMCP_ARGS(token, I(db->pool, now + seconds), id, I(db->pool, now), token));
    if (rv != APR_SUCCESS) return rv;
    if (n == 1) return APR_SUCCESS;
    /* Held: by a PATCH whose process died on this host (httpd killed mid-PATCH), the
     * lease is taken over at once instead of after its expiry, as a chat's is. */
    rv = gmcp_upload_holder(db, id, &holder);
    if (rv == APR_SUCCESS && gmcp_lease_holder_dead(holder))
        return gmcp_upload_steal(db, id, holder, token, seconds);
    /* A live holder, or no row to hold: not ours. */
    return rv == APR_SUCCESS || APR_STATUS_IS_ENOENT(rv) ? APR_EBUSY : rv;
}

apr_status_t gmcp_upload_holder(gmcp_db *db, const char *id, const char **token)
{
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select(db, "gmcp_upload_holder", &rs, GMCP_ARGS(id));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    *token = GMCP_ROW(&rs, 0)[0];
    return APR_SUCCESS;
}

apr_status_t gmcp_upload_steal(gmcp_db *db, const char *id, const char *old_token,
                               const char *token, apr_int64_t seconds)
{
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_upload_steal", &n,
                     GMCP_ARGS(token, I(db->pool, gmcp_now_sec() + seconds), id, old_token));
    if (rv != APR_SUCCESS) return rv;
    return n == 1 ? APR_SUCCESS : APR_EBUSY;
}

apr_status_t gmcp_upload_unlock(gmcp_db *db, const char *id, const char *token)
{
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_unlock", &n, GMCP_ARGS(id, token));
}

gmcp_upload_lease_result gmcp_upload_lease(gmcp_db *db, const char *id, const char *owner,
                                           const gmcp_upload *checked, const char *token,
                                           apr_int64_t seconds, apr_int64_t *offset)
{
    gmcp_upload now;
    apr_status_t rv = gmcp_upload_lock(db, id, token, seconds);
    if (APR_STATUS_IS_EBUSY(rv)) return GMCP_LEASE_HELD;
    if (rv != APR_SUCCESS) return GMCP_LEASE_LOCK_FAILED;
    if (!checked) return GMCP_LEASE_TAKEN;
    /* The offset the request was checked against was read before the lease: cutting the
     * file back to a stale one would lose bytes the row counts as durable. */
    rv = gmcp_upload_get(db, id, owner, &now);
    if (rv == APR_SUCCESS && now.offset == checked->offset && !strcmp(now.state, checked->state))
        return GMCP_LEASE_TAKEN;
    gmcp_upload_unlock(db, id, token);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_ENOENT(rv)) return GMCP_LEASE_READ_FAILED;
    *offset = rv == APR_SUCCESS ? now.offset : checked->offset;
    return GMCP_LEASE_MOVED;
}

apr_status_t gmcp_upload_advance(gmcp_db *db, const char *id, const char *token, apr_int64_t offset,
                                 apr_int64_t length, apr_int64_t expires, const char *sha_state)
{
    int n = 0;
    apr_status_t rv = gmcp_db_exec(db, "gmcp_upload_advance", &n,
                                   GMCP_ARGS(I(db->pool, offset), I(db->pool, length),
                                             I(db->pool, expires), sha_state, id, token));
    if (rv != APR_SUCCESS) return rv;
    return n == 1 ? APR_SUCCESS : APR_ENOENT;
}

apr_status_t gmcp_upload_advance_unsynced(gmcp_db *db, const char *id, const char *token,
                                          apr_int64_t offset, apr_int64_t length,
                                          apr_int64_t expires, const char *sha_state,
                                          apr_int64_t durable, const char *durable_state)
{
    apr_pool_t *p = db->pool;
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_upload_advance_unsynced", &n,
                     GMCP_ARGS(I(p, offset), I(p, length), I(p, expires), sha_state, I(p, durable),
                               durable_state, gmcp_machine_id(p), gmcp_now_str(p), id, token));
    if (rv != APR_SUCCESS) return rv;
    return n == 1 ? APR_SUCCESS : APR_ENOENT;
}

apr_status_t gmcp_upload_tail_synced(gmcp_db *db, const char *id, apr_int64_t offset,
                                     const char *sha_state)
{
    const char *o = I(db->pool, offset);
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_tail_synced", &n,
                        GMCP_ARGS(o, o, o, sha_state, o, id, o, o));
}

apr_status_t gmcp_upload_tail_failed(gmcp_db *db, const char *id, apr_int64_t offset)
{
    const char *o = I(db->pool, offset);
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_tail_failed", &n, GMCP_ARGS(id, o, o));
}

apr_status_t gmcp_upload_complete(gmcp_db *db, const char *id, apr_int64_t length,
                                  const char *sha256, apr_int64_t now, apr_int64_t expires)
{
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_complete", &n,
                        GMCP_ARGS(I(db->pool, length), I(db->pool, length), sha256,
                                  I(db->pool, now), I(db->pool, expires), I(db->pool, length),
                                  I(db->pool, apr_time_as_msec(apr_time_now())), id));
}

apr_status_t gmcp_upload_set_phase(gmcp_db *db, const char *id, const char *phase,
                                   apr_int64_t progress, const char *detail)
{
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_progress", &n,
                        GMCP_ARGS(phase, I(db->pool, progress),
                                  I(db->pool, apr_time_as_msec(apr_time_now())),
                                  detail ? detail : "", id));
}

apr_status_t gmcp_upload_set_sniffed(gmcp_db *db, const char *id, const char *mime)
{
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_sniffed", &n, GMCP_ARGS(mime, id));
}

apr_status_t gmcp_upload_terminate(gmcp_db *db, const char *id, const char *owner)
{
    int n = 0;
    apr_status_t rv = gmcp_db_exec(db, "gmcp_upload_terminate", &n, GMCP_ARGS(id, owner));
    if (rv != APR_SUCCESS) return rv;
    return n == 1 ? APR_SUCCESS : APR_ENOENT;
}

apr_status_t gmcp_upload_expired(gmcp_db *db, apr_int64_t now, apr_array_header_t **out)
{
    gmcp_rows rs;
    int i;
    apr_status_t rv = gmcp_db_select(db, "gmcp_upload_expired", &rs, GMCP_ARGS(I(db->pool, now)));
    if (rv != APR_SUCCESS) return rv;
    *out = apr_array_make(db->pool, rs.rows->nelts + 1, sizeof(gmcp_upload));
    for (i = 0; i < rs.rows->nelts; i++)
        fill_checked(db->pool, GMCP_ROW(&rs, i), apr_array_push(*out));
    return APR_SUCCESS;
}

apr_status_t gmcp_upload_spool_used(gmcp_db *db, const char *owner, apr_int64_t *bytes)
{
    gmcp_rows rs;
    apr_status_t rv =
        gmcp_db_select(db, "gmcp_upload_spool_used", &rs, GMCP_ARGS(owner, gmcp_now_str(db->pool)));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) {
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0210",
                  "statement "
                  "gmcp_upload_spool_used returned %d rows, not 1",
                  rs.rows->nelts);
        return GMCP_EDB;
    }
    *bytes = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
    return APR_SUCCESS;
}

apr_status_t gmcp_upload_delete(gmcp_db *db, const char *id)
{
    int n = 0;
    return gmcp_db_exec(db, "gmcp_upload_delete", &n, GMCP_ARGS(id));
}

json_t *gmcp_upload_json(const gmcp_upload *u)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:I, s:I}", "upload_id", u->id, "owner",
                  u->owner, "state", u->state, "offset", (json_int_t)u->offset, "length",
                  (json_int_t)u->length, "filename", u->filename, "filetype", u->filetype, "concat",
                  u->concat, "created", (json_int_t)u->created, "expires", (json_int_t)u->expires);
    if (*u->sha256) json_object_set_new(o, "sha256", json_string(u->sha256));
    if (u->phase) json_object_set_new(o, "phase", json_string(u->phase));
    if (u->sniffed && *u->sniffed) json_object_set_new(o, "sniffed_type", json_string(u->sniffed));
    if (u->detail && *u->detail) json_object_set_new(o, "detail", json_string(u->detail));
    return o;
}

const char *gmcp_upload_spool_path(apr_pool_t *p, const char *dir, const char *id)
{
    return apr_pstrcat(p, dir, "/", id, NULL);
}

/* Read the id; APR_ENOENT when there is no file yet. */
static apr_status_t read_spool_id(apr_pool_t *p, const char *path, const char **id)
{
    char buf[64];
    apr_size_t n = sizeof(buf) - 1;
    apr_file_t *f;
    apr_status_t rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, p);
    if (rv != APR_SUCCESS) return rv;
    rv = apr_file_read(f, buf, &n);
    apr_file_close(f);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EOF(rv)) return rv;
    buf[rv == APR_SUCCESS ? n : 0] = '\0';
    if (!gmcp_upload_id_ok(buf)) return APR_EINVAL;
    *id = apr_pstrdup(p, buf);
    return APR_SUCCESS;
}

apr_status_t gmcp_upload_spool_id(apr_pool_t *p, const char *dir, const char **id)
{
    const char *path = apr_pstrcat(p, dir, "/" GMCP_SPOOL_ID_FILE, NULL), *tmp, *fresh;
    apr_file_t *f;
    apr_size_t n;
    apr_status_t rv = read_spool_id(p, path, id);
    if (!APR_STATUS_IS_ENOENT(rv)) return rv;
    /* The first use of this directory: a complete file appears under its name at once
     * (link fails when another process or node was first, and then its id counts). */
    if (!(fresh = gmcp_upload_new_id(p))) return APR_ENOTENOUGHENTROPY;
    tmp = apr_pstrcat(p, path, ".", fresh, NULL);
    rv = apr_file_open(&f, tmp, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_EXCL,
                       APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_GREAD | APR_FPROT_WREAD, p);
    if (rv != APR_SUCCESS) return rv;
    n = strlen(fresh);
    rv = apr_file_write_full(f, fresh, n, NULL);
    if (rv == APR_SUCCESS) rv = apr_file_sync(f);
    apr_file_close(f);
    if (rv == APR_SUCCESS) rv = apr_file_link(tmp, path);
    apr_file_remove(tmp, p);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) return rv;
    return read_spool_id(p, path, id);
}

int gmcp_upload_spool_elsewhere(apr_pool_t *p, const char *dir, const gmcp_upload *x)
{
    const char *here = NULL;
    if (!x->spool || !*x->spool) return 0; /* made before spools were recorded */
    return gmcp_upload_spool_id(p, dir, &here) != APR_SUCCESS || strcmp(here, x->spool) != 0;
}

const char *gmcp_upload_new_id(apr_pool_t *p)
{
    const char *id;
    do {
        id = gmcp_random_id(p, UPLOAD_ID_BYTES);
    } while (id && id[0] == '-');
    return id;
}

apr_status_t gmcp_upload_fill_new(gmcp_upload *x, apr_table_t *md, const char *meta,
                                  const char *concat, const char *owner, const char *key_id,
                                  apr_int64_t now, apr_int64_t expiry, const char **why)
{
    const char *fname = apr_table_get(md, "filename"), *ftype = apr_table_get(md, "filetype");
    if (fname && !gmcp_tus_filename_ok(fname)) {
        *why = "Upload-Metadata: filename must be a plain file name (no path, no control "
               "characters, at most 255 bytes)";
        return APR_EINVAL;
    }
    x->filetype = ftype ? ftype : "";
    if (strlen(x->filetype) > 255 || strpbrk(x->filetype, "\r\n,;\"")) {
        *why = "Upload-Metadata: filetype is not a media type";
        return APR_EINVAL;
    }
    x->owner = owner;
    x->key_id = key_id ? key_id : "";
    x->metadata = meta ? meta : "";
    x->filename = fname ? fname : "";
    x->concat = concat ? concat : "";
    x->parts = "";
    x->sha256 = "";
    x->spool = "";
    x->state = GMCP_UPLOAD_RECEIVING;
    x->durable_offset = -1; /* nothing written yet: nothing lags */
    x->durable_state = "";
    x->unsynced_on = "";
    x->unsynced_at = 0;
    x->created = now;
    x->expires = now + expiry;
    return APR_SUCCESS;
}

/* ---- header grammar ------------------------------------------------------------------ */

/* Strict standard base64 (with padding); decoded length in *len, NULL on bad input. */
static char *b64_decode(apr_pool_t *p, const char *s, apr_size_t *len)
{
    apr_size_t n = strlen(s), i;
    char *out;
    int got;
    if (n % 4) return NULL;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+'
              || c == '/' || (c == '=' && i >= n - 2)))
            return NULL;
        if (c == '=' && i == n - 2 && s[n - 1] != '=') return NULL;
    }
    out = apr_palloc(p, (apr_size_t)apr_base64_decode_len(s) + 1);
    got = apr_base64_decode(out, s);
    if (got < 0) return NULL;
    out[got] = '\0';
    *len = (apr_size_t)got;
    return out;
}

apr_status_t gmcp_tus_metadata(apr_pool_t *p, const char *header, apr_table_t **out,
                               const char **why)
{
    char *copy = apr_pstrdup(p, header ? header : ""), *pair, *last = NULL;
    *out = apr_table_make(p, 4);
    for (pair = apr_strtok(copy, ",", &last); pair; pair = apr_strtok(NULL, ",", &last)) {
        char *sp = strchr(pair, ' '), *key = pair, *val = (char *)"";
        const char *k;
        apr_size_t len = 0;
        if (sp) {
            *sp = '\0';
            if (!(val = b64_decode(p, sp + 1, &len)) || memchr(val, '\0', len)) {
                *why = apr_psprintf(p,
                                    "Upload-Metadata: the value of '%s' is not valid "
                                    "base64 text",
                                    key);
                return APR_EINVAL;
            }
        }
        if (!*key || strlen(key) > 128) {
            *why = "Upload-Metadata: empty or overlong key";
            return APR_EINVAL;
        }
        for (k = key; *k; k++)
            if (*k <= ' ' || *k > '~') {
                *why = "Upload-Metadata: keys must be printable ASCII";
                return APR_EINVAL;
            }
        if (apr_table_get(*out, key)) {
            *why = apr_psprintf(p, "Upload-Metadata: key '%s' appears twice", key);
            return APR_EINVAL;
        }
        apr_table_setn(*out, key, val);
    }
    return APR_SUCCESS;
}

int gmcp_tus_filename_ok(const char *name)
{
    const unsigned char *c;
    apr_size_t n = strlen(name);
    if (n == 0 || n > 255 || !gmcp_utf8_valid(name, n)) return 0;
    if (!strcmp(name, ".") || !strcmp(name, "..")) return 0;
    for (c = (const unsigned char *)name; *c; c++)
        if (*c < 0x20 || *c == 0x7f || *c == '/' || *c == '\\') return 0;
    return strstr(name, "..") == NULL;
}

apr_status_t gmcp_tus_checksum(apr_pool_t *p, const char *header, const char **algo,
                               unsigned char **digest, apr_size_t *len)
{
    const char *sp = strchr(header, ' ');
    apr_size_t want;
    if (!sp || sp == header) return APR_EINVAL;
    *algo = apr_pstrndup(p, header, (apr_size_t)(sp - header));
    if (!strcmp(*algo, "sha256"))
        want = 32;
    else if (!strcmp(*algo, "sha1"))
        want = 20;
    else if (!strcmp(*algo, "md5"))
        want = 16;
    else
        return APR_ENOTIMPL;
    if (!(*digest = (unsigned char *)b64_decode(p, sp + 1, len)) || *len != want) return APR_EINVAL;
    return APR_SUCCESS;
}
