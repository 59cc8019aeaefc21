/* gmcp_tools_files.c — gemini_upload_file (relay a finished upload into the Gemini Files
 * API) and gemini_file_list / get / delete over the caller's own file records. */
#include "gmcp_files.h"
#include "gmcp_errlog.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_sql.h"
#include "gmcp_store.h"
#include "gmcp_tools_gemini.h"
#include "gmcp_uploads.h"
#include "gmcp_util.h"

#include <stdio.h>
#include <string.h>
#include <apr_strings.h>

#define FILE_COLS "name, owner, upload_id, display_name, uri, mime_type, size, sha256, state, " \
    "created, expires"

const gmcp_stmt gmcp_file_stmts[] = {
    {"gmcp_file_insert",
     "INSERT INTO gemini_files (" FILE_COLS ") VALUES (%s, %s, %s, %s, %s, %s, %lld, %s, %s, "
     "%lld, %lld)"},
    {"gmcp_file_select", "SELECT " FILE_COLS " FROM gemini_files WHERE name = %s AND owner = %s"},
    {"gmcp_file_by_upload",
     "SELECT " FILE_COLS " FROM gemini_files WHERE upload_id = %s AND owner = %s "
     "AND expires > %lld ORDER BY created DESC"},
    {"gmcp_file_list", "SELECT " FILE_COLS " FROM gemini_files WHERE owner = %s "
     "ORDER BY created DESC"},
    {"gmcp_file_delete", "DELETE FROM gemini_files WHERE name = %s AND owner = %s"},
    {"gmcp_file_expired_count", "SELECT COUNT(*) FROM gemini_files WHERE expires < %lld"},
    {"gmcp_file_expired_delete", "DELETE FROM gemini_files WHERE expires < %lld"},
    {NULL, NULL}
};

static json_t *file_json(apr_pool_t *p, const char **r)
{
    apr_int64_t expires = apr_atoi64(r[10]);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:b}",
                          "name", r[0], "upload_id", r[2], "display_name", r[3], "uri", r[4],
                          "mime_type", r[5], "size", (json_int_t)apr_atoi64(r[6]),
                          "sha256", r[7], "state", r[8], "expires", (json_int_t)expires,
                          "expired", expires <= gmcp_now_sec());
    (void)p;
    return o;
}

static apr_int64_t rfc3339_sec(const char *s)
{
    apr_time_exp_t t;
    apr_time_t out;
    int y, mo, d, h, mi, se;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &se) != 6) return 0;
    memset(&t, 0, sizeof(t));
    t.tm_year = y - 1900; t.tm_mon = mo - 1; t.tm_mday = d;
    t.tm_hour = h; t.tm_min = mi; t.tm_sec = se;
    return apr_time_exp_gmt_get(&out, &t) == APR_SUCCESS ? apr_time_sec(out) : 0;
}

static gmcp_db *db_or_error(gmcp_call *c, json_t **result)
{
    return gmcp_tool_db(c, "the file store is unavailable", result);
}

static json_t *result_for(json_t *file, const char *text)
{
    return gmcp_tool_structured(gmcp_text_result(text, 0), file);
}

typedef struct {
    gmcp_call *c;
    const char *upload_id;
    const char *phase;      /* last written to the upload's row */
    apr_time_t written;
} relay_baton;

/* The upload's phase for its progress stream (advisory: a failure to write is no
 * reason to stop a relay). */
static void relay_phase(relay_baton *b, const char *phase, apr_int64_t done, const char *detail)
{
    const char *why;
    gmcp_db *db = b->c->ops->db_open(b->c, &why);
    if (db) {
        gmcp_upload_set_phase(db, b->upload_id, phase, done, detail);
        b->c->ops->db_close(b->c);
    }
    b->phase = phase;
    b->written = apr_time_now();
}

static void relay_progress(void *baton, apr_int64_t done, apr_int64_t total, const char *phase)
{
    relay_baton *b = baton;
    gmcp_progress(b->c, (double)done, (double)total, phase);
    if (!b->phase || strcmp(b->phase, phase) != 0
        || apr_time_now() - b->written >= apr_time_from_msec(500))
        relay_phase(b, phase, done, NULL);
}

static json_t *t_upload_file(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    const char *id = gmcp_json_str(args, "upload_id");
    const char *dname = gmcp_json_str(args, "display_name");
    json_t *result = NULL, *file = NULL;
    gmcp_gemini *g;
    gmcp_gemini_error err;
    gmcp_upload up;
    gmcp_rows rs;
    gmcp_db *db;
    relay_baton rb;
    const char *mime, *name;
    int rv, resumes = 0;

    if (!conf->upload_dir)
        return gmcp_text_result("uploads are not configured on this server "
                                "(GeminiMCPUploadDir)", 1);
    if (!(db = db_or_error(c, &result))) return result;
    rv = gmcp_upload_get(db, id, c->principal, &up);
    if (rv == GMCP_FOUND
        && gmcp_db_select(db, "gmcp_file_by_upload", &rs,
                          GMCP_ARGS(up.id, c->principal, gmcp_now_str(c->pool))) == 0
        && rs.rows->nelts > 0) {
        /* Already relayed and not expired at Gemini: the same file again. */
        json_t *f = file_json(c->pool, GMCP_ROW(&rs, 0));
        c->ops->db_close(c);
        return result_for(f, apr_psprintf(c->pool, "Already in Gemini as %s (%s)",
                                             GMCP_ROW(&rs, 0)[0], GMCP_ROW(&rs, 0)[4]));
    }
    c->ops->db_close(c);
    if (rv == GMCP_DB_ERROR) return gmcp_text_result("The upload store is unavailable", 1);
    if (rv == GMCP_NOT_FOUND || strcmp(up.state, GMCP_UPLOAD_TERMINATED) == 0)
        return gmcp_text_result(apr_psprintf(c->pool, "No upload '%s'", id), 1);
    if (strcmp(up.state, GMCP_UPLOAD_COMPLETE) != 0)
        return gmcp_text_result(apr_psprintf(c->pool, "Upload '%s' is not complete yet (%"
                                             APR_INT64_T_FMT " of %" APR_INT64_T_FMT " bytes)",
                                             id, up.offset, up.length), 1);
    if (!(g = gmcp_tool_client(c, conf, &result))) return result;
    /* The declared type, else what the first bytes showed, else generic. */
    mime = *up.filetype ? up.filetype : *up.sniffed ? up.sniffed : "application/octet-stream";
    memset(&rb, 0, sizeof(rb));
    rb.c = c;
    rb.upload_id = up.id;
    relay_phase(&rb, GMCP_PHASE_RELAYING, 0, NULL);
    if (gmcp_files_relay(g, apr_pstrcat(c->pool, conf->upload_dir, "/", up.id, NULL),
                         up.length, mime, dname ? dname : (*up.filename ? up.filename : up.id),
                         conf->files_chunk, relay_progress, &rb, &file, &resumes, &err)) {
        relay_phase(&rb, GMCP_PHASE_FAILED, 0, err.message);
        return gmcp_tool_error_result(c, &err);
    }
    name = apr_pstrdup(c->pool, gmcp_json_str(file, "name"));
    if (!gmcp_files_sha_matches(c->pool, gmcp_json_str(file, "sha256Hash"), up.sha256)) {
        gmcp_gemini_error e2;
        json_t *ignored = NULL;
        gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0415", "Files API: %s (relayed "
                  "from upload %s, %" APR_INT64_T_FMT " bytes, sizeBytes %s) has SHA-256 %s "
                  "at Gemini, the upload %s: deleting it there", name ? name : "(no name)",
                  up.id, up.length, gmcp_json_str(file, "sizeBytes")
                  ? gmcp_json_str(file, "sizeBytes") : "(none)",
                  gmcp_json_str(file, "sha256Hash") ? gmcp_json_str(file, "sha256Hash")
                  : "(none)", up.sha256);
        gmcp_gemini_call(g, "DELETE", apr_pstrcat(c->pool, "/v1beta/", name, NULL), NULL,
                         &ignored, &e2);
        json_decref(ignored);
        json_decref(file);
        relay_phase(&rb, GMCP_PHASE_FAILED, up.length, "the file Gemini stored does not match "
                    "the upload (SHA-256 differs)");
        return gmcp_text_result(apr_psprintf(c->pool, "The file Gemini stored does not match "
                                "the upload (SHA-256 differs); it was deleted there. Relay "
                                "again."), 1);
    }
    if (!(db = db_or_error(c, &result))) { json_decref(file); return result; }
    {
        const char *uri = gmcp_json_str(file, "uri");
        apr_int64_t exp = rfc3339_sec(gmcp_json_str(file, "expirationTime"));
        int n = 0;
        if (!exp) exp = gmcp_now_sec() + 48 * 3600;
        if (gmcp_db_exec(db, "gmcp_file_insert", &n, GMCP_ARGS(name, c->principal, up.id,
                         gmcp_json_str(file, "displayName") ? gmcp_json_str(file, "displayName")
                                                            : "",
                         uri ? uri : "", mime, gmcp_i64_str(c->pool, up.length), up.sha256,
                         "ACTIVE", gmcp_now_str(c->pool), gmcp_i64_str(c->pool, exp)))) {
            c->ops->db_close(c);
            json_decref(file);
            return gmcp_text_result("Relayed, but the file record could not be stored", 1);
        }
        gmcp_upload_set_phase(db, up.id, GMCP_PHASE_ACTIVE, up.length, name);
        c->ops->db_close(c);
        result = result_for(json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:i}",
                            "name", name, "upload_id", up.id, "uri", uri ? uri : "",
                            "mime_type", mime, "size", (json_int_t)up.length,
                            "sha256", up.sha256, "state", "ACTIVE", "expires", (json_int_t)exp,
                            "resumes", resumes),
                            apr_psprintf(c->pool, "Uploaded to Gemini as %s (%s, %" APR_INT64_T_FMT
                                         " bytes, ACTIVE); use it in gemini_generate as "
                                         "files: [{\"uri\": \"%s\"}]", name, mime, up.length,
                                         uri ? uri : name));
    }
    json_decref(file);
    return result;
}

static json_t *t_file_list(gmcp_call *c, json_t *args, void *baton)
{
    json_t *result = NULL, *arr = json_array();
    gmcp_rows rs;
    gmcp_db *db;
    int i;
    (void)args; (void)baton;
    if (!(db = db_or_error(c, &result))) { json_decref(arr); return result; }
    if (gmcp_db_select(db, "gmcp_file_list", &rs, GMCP_ARGS(c->principal))) {
        c->ops->db_close(c);
        json_decref(arr);
        return gmcp_text_result("The file store is unavailable", 1);
    }
    c->ops->db_close(c);
    for (i = 0; i < rs.rows->nelts; i++)
        json_array_append_new(arr, file_json(c->pool, GMCP_ROW(&rs, i)));
    return result_for(json_pack("{s:o}", "files", arr),
                      apr_psprintf(c->pool, "%d file(s)", rs.rows->nelts));
}

/* The caller's record for `name` ("files/x"), or NULL with *result set. */
static const char **own_file(gmcp_call *c, const char *name, json_t **result)
{
    gmcp_rows rs;
    gmcp_db *db;
    if (!name || strncmp(name, "files/", 6) != 0) {
        *result = gmcp_text_result("name must look like files/abc123", 1);
        return NULL;
    }
    if (!(db = db_or_error(c, result))) return NULL;
    if (gmcp_db_select(db, "gmcp_file_select", &rs, GMCP_ARGS(name, c->principal))) {
        c->ops->db_close(c);
        *result = gmcp_text_result("The file store is unavailable", 1);
        return NULL;
    }
    c->ops->db_close(c);
    if (rs.rows->nelts != 1) {
        *result = gmcp_text_result(apr_psprintf(c->pool, "No file '%s'", name), 1);
        return NULL;
    }
    return GMCP_ROW(&rs, 0);
}

static json_t *t_file_get(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL, *live = NULL, *o;
    const char **row = own_file(c, gmcp_json_str(args, "name"), &result);
    gmcp_gemini *g;
    gmcp_gemini_error err;
    if (!row) return result;
    o = file_json(c->pool, row);
    if (json_is_true(json_object_get(o, "expired"))) {
        return result_for(o, apr_psprintf(c->pool, "%s expired at Gemini (files live 48 "
                          "hours); relay upload %s again with gemini_upload_file", row[0],
                          row[2]));
    }
    if (!(g = gmcp_tool_client(c, conf, &result))) { json_decref(o); return result; }
    if (gmcp_gemini_call(g, "GET", apr_pstrcat(c->pool, "/v1beta/", row[0], NULL), NULL, &live,
                         &err)) {
        json_decref(o);
        return gmcp_tool_error_result(c, &err);
    }
    if (gmcp_json_str(live, "state"))
        json_object_set_new(o, "state", json_string(gmcp_json_str(live, "state")));
    json_decref(live);
    return result_for(o, apr_psprintf(c->pool, "%s: %s", row[0],
                                         json_string_value(json_object_get(o, "state"))));
}

static json_t *t_file_delete(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL, *ignored = NULL;
    const char **row = own_file(c, gmcp_json_str(args, "name"), &result);
    gmcp_gemini *g;
    gmcp_gemini_error err;
    gmcp_db *db;
    int n = 0;
    if (!row) return result;
    if (!(g = gmcp_tool_client(c, conf, &result))) return result;
    if (gmcp_gemini_call(g, "DELETE", apr_pstrcat(c->pool, "/v1beta/", row[0], NULL), NULL,
                         &ignored, &err)
        && err.http_status != 403 && err.http_status != 404)     /* already gone: fine */
        return gmcp_tool_error_result(c, &err);
    json_decref(ignored);
    if (!(db = db_or_error(c, &result))) return result;
    gmcp_db_exec(db, "gmcp_file_delete", &n, GMCP_ARGS(row[0], c->principal));
    c->ops->db_close(c);
    return result_for(json_pack("{s:s, s:b}", "name", row[0], "deleted", 1),
                      apr_psprintf(c->pool, "Deleted %s", row[0]));
}

#define NAME_PROP "\"name\":{\"type\":\"string\",\"description\":\"files/...\"}"

const gmcp_tool gmcp_file_tools[] = {
    {"gemini_upload_file", "Send an upload to Gemini",
     "Relay a finished upload (made at this server's tus endpoint) into the Gemini Files "
     "API with Google's resumable protocol, wait until the file is ACTIVE and check its "
     "SHA-256. Returns the file's name and URI for gemini_generate / gemini_chat_send "
     "(files: [{uri}]). With a progress token, progress follows the bytes sent.",
     "{\"type\":\"object\",\"properties\":{\"upload_id\":{\"type\":\"string\"},"
     "\"display_name\":{\"type\":\"string\",\"maxLength\":512}},"
     "\"required\":[\"upload_id\"],\"additionalProperties\":false}",
     NULL, "{\"openWorldHint\":true}", 0, t_upload_file},
    {"gemini_file_list", "List your Gemini files",
     "Files you relayed to Gemini, newest first, with their expiry (48 h at Gemini).",
     "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
     NULL, "{\"readOnlyHint\":true}", 0, t_file_list},
    {"gemini_file_get", "Get a Gemini file",
     "One of your files: size, type, SHA-256, URI, and its current state at Gemini.",
     "{\"type\":\"object\",\"properties\":{" NAME_PROP "},\"required\":[\"name\"],"
     "\"additionalProperties\":false}",
     NULL, "{\"readOnlyHint\":true,\"openWorldHint\":true}", 0, t_file_get},
    {"gemini_file_delete", "Delete a Gemini file",
     "Delete one of your files at Gemini and forget it here.",
     "{\"type\":\"object\",\"properties\":{" NAME_PROP "},\"required\":[\"name\"],"
     "\"additionalProperties\":false}",
     NULL, "{\"destructiveHint\":true,\"openWorldHint\":true}", 0, t_file_delete},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL}
};
