/* gmcp_tools_files.c — gemini_upload_file (relay a finished upload into the Gemini Files
 * API) and gemini_file_list / get / delete over the caller's own file records. */
#include "gmcp_files.h"
#include "gmcp_errlog.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_store.h"
#include "gmcp_tools_gemini.h"
#include "gmcp_uploads.h"
#include "gmcp_util.h"

#include <stdio.h>
#include <string.h>
#include <apr_file_info.h>
#include <apr_strings.h>

/* A gemini_files row (the columns of gmcp_file_stmts, gmcp_sql.c) as JSON. */
static json_t *file_json(apr_pool_t *p, const char **r)
{
    apr_int64_t expires = apr_atoi64(r[10]);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:b}", "name", r[0],
                          "upload_id", r[2], "display_name", r[3], "uri", r[4], "mime_type", r[5],
                          "size", (json_int_t)apr_atoi64(r[6]), "sha256", r[7], "state", r[8],
                          "expires", (json_int_t)expires, "expired", expires <= gmcp_now_sec());
    (void)p;
    return o;
}

static apr_int64_t rfc3339_sec(const char *s)
{
    apr_int64_t out;
    int y, mo, d, h, mi, se;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &se) != 6) return 0;
    return gmcp_utc_sec(y, mo, d, h, mi, se, &out) == APR_SUCCESS ? out : 0;
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
    const char *phase; /* last written to the upload's row */
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

/* One gemini_upload_file call, step by step. */
typedef struct {
    gmcp_call *c;
    const gmcp_gemini_conf *conf;
    const char *id, *display_name; /* the arguments */
    gmcp_upload up;
    const char *mime;
    gmcp_gemini *g;
    relay_baton rb;
    json_t *file;     /* the File resource at Gemini (owned) */
    const char *name; /* its name, files/... */
    int resumes;
    json_t *result; /* set by the step that ends the call */
} upload_job;

/* Is the upload in Gemini already (relayed, not expired there)? Then the result says
 * so. Runs in the database section of upload_ready. */
static int already_relayed(upload_job *j, gmcp_db *db)
{
    gmcp_call *c = j->c;
    gmcp_rows rs;
    if (gmcp_db_select(db, "gmcp_file_by_upload", &rs,
                       GMCP_ARGS(j->up.id, c->principal, gmcp_now_str(c->pool)))
            != APR_SUCCESS
        || rs.rows->nelts == 0)
        return 0;
    j->result = result_for(file_json(c->pool, GMCP_ROW(&rs, 0)),
                           apr_psprintf(c->pool, "Already in Gemini as %s (%s)",
                                        GMCP_ROW(&rs, 0)[0], GMCP_ROW(&rs, 0)[4]));
    return 1;
}

/* Each step of a gemini_upload_file call returns APR_SUCCESS to go on; otherwise the call
 * ends with j->result. */

/* Step 1: the caller's upload, complete, not relayed yet: APR_ENOTIMPL without uploads
 * here, GMCP_EDB, APR_EEXIST when it is in Gemini already (the result says as what),
 * APR_ENOENT without such an upload (or a terminated one), APR_EINCOMPLETE before all its
 * bytes came. */
static apr_status_t upload_ready(upload_job *j)
{
    gmcp_call *c = j->c;
    gmcp_db *db;
    apr_status_t rv;
    int relayed;
    if (!j->conf->upload_dir) {
        j->result = gmcp_text_result("uploads are not configured on this server "
                                     "(GeminiMCPUploadDir)",
                                     1);
        return APR_ENOTIMPL;
    }
    if (!(db = db_or_error(c, &j->result))) return GMCP_EDB;
    rv = gmcp_upload_get(db, j->id, c->principal, &j->up);
    relayed = rv == APR_SUCCESS && already_relayed(j, db);
    c->ops->db_close(c);
    if (relayed) return APR_EEXIST;
    if (APR_STATUS_IS_ENOENT(rv)
        || (rv == APR_SUCCESS && strcmp(j->up.state, GMCP_UPLOAD_TERMINATED) == 0)) {
        j->result = gmcp_text_result(apr_psprintf(c->pool, "No upload '%s'", j->id), 1);
        return APR_ENOENT;
    }
    if (rv != APR_SUCCESS) {
        j->result = gmcp_text_result("The upload store is unavailable", 1);
        return rv;
    }
    if (strcmp(j->up.state, GMCP_UPLOAD_COMPLETE) != 0) {
        j->result =
            gmcp_text_result(apr_psprintf(c->pool,
                                          "Upload '%s' is not complete yet (%" APR_INT64_T_FMT
                                          " of %" APR_INT64_T_FMT " bytes)",
                                          j->id, j->up.offset, j->up.length),
                             1);
        return APR_EINCOMPLETE;
    }
    return APR_SUCCESS;
}

/* Step 1b: the upload's bytes are in this server's spool. A node whose GeminiMCPUploadDir
 * is not the spool the upload was made in (not shared) finds no file, and says why
 * instead of "gone": APR_ENOENT then. */
static apr_status_t spool_here(upload_job *j)
{
    gmcp_call *c = j->c;
    const char *path = gmcp_upload_spool_path(c->pool, j->conf->upload_dir, j->up.id);
    apr_finfo_t fi;
    if (apr_stat(&fi, path, APR_FINFO_TYPE, c->pool) == APR_SUCCESS
        || !gmcp_upload_spool_elsewhere(c->pool, j->conf->upload_dir, &j->up))
        return APR_SUCCESS;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0417",
              "upload %s was made in spool %s, but %s here is another spool: every node "
              "needs the same GeminiMCPUploadDir (shared)",
              j->up.id, j->up.spool, j->conf->upload_dir);
    j->result = gmcp_text_result(
        apr_psprintf(c->pool,
                     "This server cannot reach the bytes of upload '%s': its upload spool "
                     "is not the one the upload was made in. Try again (another server may "
                     "serve the call).",
                     j->id),
        1);
    return APR_ENOENT;
}

/* Step 2: the spool file relayed into the Files API, the upload's phase following:
 * APR_ENOTIMPL without a Gemini client (not configured, or no HTTP handle), else the
 * relay's status. */
static apr_status_t relay_upload(upload_job *j)
{
    gmcp_call *c = j->c;
    const gmcp_upload *up = &j->up;
    gmcp_gemini_error err;
    apr_status_t rv;
    if (!(j->g = gmcp_tool_client(c, j->conf, &j->result))) return APR_ENOTIMPL;
    /* The declared type, else what the first bytes showed, else generic. */
    j->mime = *up->filetype ? up->filetype
        : *up->sniffed      ? up->sniffed
                            : "application/octet-stream";
    memset(&j->rb, 0, sizeof(j->rb));
    j->rb.c = c;
    j->rb.upload_id = up->id;
    relay_phase(&j->rb, GMCP_PHASE_RELAYING, 0, NULL);
    rv = gmcp_files_relay(
        j->g, apr_pstrcat(c->pool, j->conf->upload_dir, "/", up->id, NULL), up->length, j->mime,
        j->display_name ? j->display_name : (*up->filename ? up->filename : up->id),
        j->conf->files_chunk, relay_progress, &j->rb, &j->file, &j->resumes, &err);
    if (rv != APR_SUCCESS) {
        relay_phase(&j->rb, GMCP_PHASE_FAILED, 0, err.message);
        j->result = gmcp_tool_error_result(c, &err);
        return rv;
    }
    j->name = apr_pstrdup(c->pool, gmcp_json_str(j->file, "name"));
    return APR_SUCCESS;
}

/* Step 3: Gemini holds the upload's bytes; a file that differs is deleted there
 * (GMCP_EUPSTREAM). */
static apr_status_t sha_checked(upload_job *j)
{
    gmcp_call *c = j->c;
    const char *size = gmcp_json_str(j->file, "sizeBytes");
    const char *sha = gmcp_json_str(j->file, "sha256Hash");
    gmcp_gemini_error err;
    json_t *ignored = NULL;
    if (gmcp_files_sha_matches(c->pool, sha, j->up.sha256)) return APR_SUCCESS;
    gmcp_elog(GMCP_ELOG_MARK, GMCP_ELOG_ERR, 0, "GMCP0415",
              "Files API: %s (relayed "
              "from upload %s, %" APR_INT64_T_FMT " bytes, sizeBytes %s) has SHA-256 %s "
              "at Gemini, the upload %s: deleting it there",
              j->name ? j->name : "(no name)", j->up.id, j->up.length, size ? size : "(none)",
              sha ? sha : "(none)", j->up.sha256);
    gmcp_gemini_call(j->g, "DELETE", apr_pstrcat(c->pool, "/v1beta/", j->name, NULL), NULL,
                     &ignored, &err);
    json_decref(ignored);
    relay_phase(&j->rb, GMCP_PHASE_FAILED, j->up.length,
                "the file Gemini stored does not "
                "match the upload (SHA-256 differs)");
    j->result = gmcp_text_result("The file Gemini stored does not match the upload (SHA-256 "
                                 "differs); it was deleted there. Relay again.",
                                 1);
    return GMCP_EUPSTREAM;
}

/* The result for a relayed and recorded file. */
static json_t *uploaded_result(upload_job *j, const char *uri, apr_int64_t expires)
{
    const gmcp_upload *up = &j->up;
    return result_for(json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:i}", "name", j->name,
                                "upload_id", up->id, "uri", uri ? uri : "", "mime_type", j->mime,
                                "size", (json_int_t)up->length, "sha256", up->sha256, "state",
                                "ACTIVE", "expires", (json_int_t)expires, "resumes", j->resumes),
                      apr_psprintf(j->c->pool,
                                   "Uploaded to Gemini as %s (%s, %" APR_INT64_T_FMT
                                   " bytes, ACTIVE); use it in "
                                   "gemini_generate as files: [{\"uri\": \"%s\"}]",
                                   j->name, j->mime, up->length, uri ? uri : j->name));
}

/* Step 4: the file recorded for its owner, the upload's phase active (GMCP_EDB when the
 * record cannot be stored). */
static apr_status_t record_file(upload_job *j)
{
    gmcp_call *c = j->c;
    const gmcp_upload *up = &j->up;
    const char *uri, *dname;
    apr_int64_t exp;
    gmcp_db *db;
    int n = 0;
    if (!(db = db_or_error(c, &j->result))) return GMCP_EDB;
    uri = gmcp_json_str(j->file, "uri");
    dname = gmcp_json_str(j->file, "displayName");
    exp = rfc3339_sec(gmcp_json_str(j->file, "expirationTime"));
    if (!exp) exp = gmcp_now_sec() + 48 * 3600;
    if (gmcp_db_exec(db, "gmcp_file_insert", &n,
                     GMCP_ARGS(j->name, c->principal, up->id, dname ? dname : "", uri ? uri : "",
                               j->mime, gmcp_i64_str(c->pool, up->length), up->sha256, "ACTIVE",
                               gmcp_now_str(c->pool), gmcp_i64_str(c->pool, exp)))) {
        c->ops->db_close(c);
        j->result = gmcp_text_result("Relayed, but the file record could not be stored", 1);
        return GMCP_EDB;
    }
    gmcp_upload_set_phase(db, up->id, GMCP_PHASE_ACTIVE, up->length, j->name);
    c->ops->db_close(c);
    j->result = uploaded_result(j, uri, exp);
    return APR_SUCCESS;
}

static json_t *t_upload_file(gmcp_call *c, json_t *args, void *baton)
{
    upload_job j;
    memset(&j, 0, sizeof(j));
    j.c = c;
    j.conf = baton;
    j.id = gmcp_json_str(args, "upload_id");
    j.display_name = gmcp_json_str(args, "display_name");
    /* 1. the caller's upload, complete (or the file it became already), its bytes in
     *    this server's spool;
     * 2. its bytes relayed into the Files API, the file ACTIVE there;
     * 3. the file's SHA-256 at Gemini checked against the upload's;
     * 4. the file recorded for its owner.
     * The step that ends the call sets j.result. */
    if (upload_ready(&j) == APR_SUCCESS && spool_here(&j) == APR_SUCCESS
        && relay_upload(&j) == APR_SUCCESS && sha_checked(&j) == APR_SUCCESS)
        record_file(&j);
    json_decref(j.file);
    return j.result;
}

static json_t *t_file_list(gmcp_call *c, json_t *args, void *baton)
{
    json_t *result = NULL, *arr = json_array();
    gmcp_rows rs;
    gmcp_db *db;
    int i;
    (void)args;
    (void)baton;
    if (!(db = db_or_error(c, &result))) {
        json_decref(arr);
        return result;
    }
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
        return result_for(o,
                          apr_psprintf(c->pool,
                                       "%s expired at Gemini (files live 48 "
                                       "hours); relay upload %s again with gemini_upload_file",
                                       row[0], row[2]));
    }
    if (!(g = gmcp_tool_client(c, conf, &result))) {
        json_decref(o);
        return result;
    }
    if (gmcp_gemini_call(g, "GET", apr_pstrcat(c->pool, "/v1beta/", row[0], NULL), NULL, &live,
                         &err)
        != APR_SUCCESS) {
        json_decref(o);
        return gmcp_tool_error_result(c, &err);
    }
    if (gmcp_json_str(live, "state"))
        json_object_set_new(o, "state", json_string(gmcp_json_str(live, "state")));
    json_decref(live);
    return result_for(
        o, apr_psprintf(c->pool, "%s: %s", row[0], json_string_value(json_object_get(o, "state"))));
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
            != APR_SUCCESS
        && err.http_status != 403 && err.http_status != 404) /* already gone: fine */
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
     NULL, "{\"openWorldHint\":true}", 0, t_upload_file, NULL},
    {"gemini_file_list", "List your Gemini files",
     "Files you relayed to Gemini, newest first, with their expiry (48 h at Gemini).",
     "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}", NULL,
     "{\"readOnlyHint\":true}", 0, t_file_list, NULL},
    {"gemini_file_get", "Get a Gemini file",
     "One of your files: size, type, SHA-256, URI, and its current state at Gemini.",
     "{\"type\":\"object\",\"properties\":{" NAME_PROP "},\"required\":[\"name\"],"
     "\"additionalProperties\":false}",
     NULL, "{\"readOnlyHint\":true,\"openWorldHint\":true}", 0, t_file_get, NULL},
    {"gemini_file_delete", "Delete a Gemini file",
     "Delete one of your files at Gemini and forget it here.",
     "{\"type\":\"object\",\"properties\":{" NAME_PROP "},\"required\":[\"name\"],"
     "\"additionalProperties\":false}",
     NULL, "{\"destructiveHint\":true,\"openWorldHint\":true}", 0, t_file_delete, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL}};
