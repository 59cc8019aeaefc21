/* uploads.c — gmcpctl uploads list|show|cancel, and cleanup (safe under cron). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <jansson.h>

#include "gmcp_chat.h"
#include "gmcp_keys.h"
#include "gmcp_retention.h"
#include "gmcp_store.h"
#include "gmcp_uploads.h"
#include "gmcp_util.h"
#include "gmcpctl.h"

static const char *conf_or(ctl *c, const char *directive, const char *dflt)
{
    const char *v = c->httpd_gmcp ? apr_table_get(c->httpd_gmcp, directive) : NULL;
    return v ? v : dflt;
}

static const char *upload_dir(ctl *c)
{
    const char *v = opt(c, OPT_UPLOAD_DIR);
    return v ? v : conf_or(c, "GeminiMCPUploadDir", NULL);
}

int cmd_uploads(ctl *c, const char *sub, const char *id)
{
    apr_array_header_t *list;
    gmcp_upload u;
    int rv, i;
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (!strcmp(sub, "list")) {
        json_t *arr = json_array();
        if (id) { json_decref(arr); return usage_err("%s", "uploads list takes no argument"); }
        if (gmcp_upload_list(&c->db, c->owner, &list)) {
            json_decref(arr);
            return fail("cannot read the upload store: %s", gmcp_db_error(&c->db, -1));
        }
        for (i = 0; i < list->nelts; i++) {
            gmcp_upload *x = &APR_ARRAY_IDX(list, i, gmcp_upload);
            if (c->json) json_array_append_new(arr, gmcp_upload_json(x));
            else printf("%-22s %-10s %12" APR_INT64_T_FMT " / %-12" APR_INT64_T_FMT " %-20s %s\n",
                        x->id, x->state, x->offset, x->length, x->owner, x->filename);
        }
        if (c->json) { json_dumpf(arr, stdout, JSON_COMPACT); fputc('\n', stdout); }
        json_decref(arr);
        return 0;
    }
    if (!id) return usage_err("%s", "an upload id is required");
    rv = gmcp_upload_get(&c->db, id, c->owner, &u);
    if (rv == GMCP_NOT_FOUND) return fail("no upload '%s'", id);
    if (rv) return fail("cannot read the upload store: %s", gmcp_db_error(&c->db, -1));
    if (!strcmp(sub, "show")) {
        json_t *o = gmcp_upload_json(&u);
        json_dumpf(o, stdout, c->json ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
        return 0;
    }
    if (!strcmp(sub, "cancel")) {
        const char *dir = upload_dir(c);
        if (gmcp_upload_terminate(&c->db, u.id, u.owner) == GMCP_DB_ERROR
            || gmcp_audit(&c->db, actor(c->pool), "upload.cancel", u.key_id,
                          apr_pstrcat(c->pool, u.id, " owner=", u.owner, NULL)))
            return fail("cannot cancel the upload: %s", gmcp_db_error(&c->db, -1));
        if (dir) apr_file_remove(apr_pstrcat(c->pool, dir, "/", u.id, NULL), c->pool);
        if (c->verbose) printf("cancelled %s\n", u.id);
        return 0;
    }
    return usage_err("unknown command 'uploads %s'", sub);
}

static apr_int64_t count(ctl *c, const char *label, apr_int64_t before)
{
    gmcp_rows rs;
    if (gmcp_db_select(&c->db, label, &rs, GMCP_ARGS(gmcp_i64_str(c->pool, before)))
        || rs.rows->nelts != 1)
        return -1;
    return apr_atoi64(GMCP_ROW(&rs, 0)[0]);
}

/* A retention directive of the configuration (the module checked it the same way). */
static int retention_conf(ctl *c, const char *directive, apr_int64_t dflt, apr_int64_t *out)
{
    const char *v = conf_or(c, directive, NULL), *why;
    *out = dflt;
    if (!v) return 0;
    why = gmcp_duration_parse(c->pool, v, GMCP_RETENTION_MIN, GMCP_RETENTION_MAX, out);
    if (why) return fail("%s", apr_pstrcat(c->pool, directive, ": ", why, NULL));
    return 0;
}

static json_t *epoch_or_null(ctl *c, apr_int64_t t)
{
    return t ? json_string(iso(c->pool, t)) : json_null();
}

int cmd_cleanup(ctl *c)
{
    apr_int64_t now = gmcp_now_sec(), sess_idle, retention, chat_idle;
    const char *dir;
    int dry = opt(c, OPT_DRY_RUN) != NULL, rv, i, failed = 0;
    apr_int64_t n_sessions, n_chats, n_files, n_events = 0, spool_bytes = 0;
    apr_array_header_t *ups;
    gmcpctl_joblock lock;
    gmcp_retention keep;
    gmcp_retention_run run;
    json_t *out;
    const char *why;

    if ((rv = open_db(c, 0)) != 0) return rv;      /* also reads --config */
    /* The server's own expiry settings, so both agree on what has expired. */
    sess_idle = apr_atoi64(conf_or(c, "GeminiMCPSessionIdleTimeout", "86400"));
    retention = apr_atoi64(conf_or(c, "GeminiMCPEventRetention", "3600"));
    chat_idle = apr_atoi64(conf_or(c, "GeminiMCPChatIdleTimeout", "259200"));
    /* How long usage and the audit log are kept (gmcp_retention.h). */
    if ((rv = retention_conf(c, "GeminiMCPUsageRetention", GMCP_DEFAULT_USAGE_RETENTION,
                             &keep.usage)) != 0
        || (rv = retention_conf(c, "GeminiMCPUsageDailyRetention",
                                GMCP_DEFAULT_USAGE_DAILY_RETENTION, &keep.usage_daily)) != 0
        || (rv = retention_conf(c, "GeminiMCPAuditRetention", GMCP_DEFAULT_AUDIT_RETENTION,
                                &keep.audit)) != 0)
        return rv;
    if ((why = gmcp_retention_check(&keep)) != NULL) return fail("%s", why);
    dir = upload_dir(c);
    if ((rv = joblock_take(c, &lock)) != 0) return rv;
    n_sessions = count(c, "gmcp_count_sessions_idle", now - sess_idle);
    n_chats = count(c, "gmcp_count_chats_idle", now - chat_idle);
    n_files = count(c, "gmcp_file_expired_count", now);
    {
        /* the stored SSE events gmcp_store_sweep removes: too old, or of idle sessions */
        gmcp_rows rs;
        if (gmcp_db_select_raw(&c->db, apr_psprintf(c->pool, "SELECT COUNT(*) FROM mcp_events "
                               "WHERE created < %" APR_INT64_T_FMT " OR session_id IN (SELECT "
                               "id FROM mcp_sessions WHERE last_seen < %" APR_INT64_T_FMT ")",
                               now - retention, now - sess_idle), &rs) == 0
            && rs.rows->nelts == 1)
            n_events = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
        else
            n_events = -1;
    }
    gmcp_retention_cutoffs(&keep, now, &run);
    if (n_sessions < 0 || n_chats < 0 || n_files < 0 || n_events < 0
        || gmcp_upload_expired(&c->db, now, &ups)
        || (dry && gmcp_retention_count(&c->db, &run))) {
        rv = fail("cannot read the database: %s", gmcp_db_error(&c->db, -1));
        joblock_release(&lock);
        return rv;
    }
    for (i = 0; i < ups->nelts; i++) {
        gmcp_upload *u = &APR_ARRAY_IDX(ups, i, gmcp_upload);
        apr_finfo_t fi;
        const char *path = dir ? apr_pstrcat(c->pool, dir, "/", u->id, NULL) : NULL;
        if (path && apr_stat(&fi, path, APR_FINFO_SIZE, c->pool) == APR_SUCCESS)
            spool_bytes += fi.size;
        if (dry) continue;
        /* The file first: a row without a file is harmless, the reverse leaks disk. */
        if (path) {
            apr_status_t st = apr_file_remove(path, c->pool);
            if (st != APR_SUCCESS && !APR_STATUS_IS_ENOENT(st)) {
                fprintf(stderr, "gmcpctl: cannot remove %s\n", path);
                failed = 1;
                continue;
            }
        }
        if (gmcp_upload_delete(&c->db, u->id)) failed = 1;
    }
    if (!dry) {
        if (gmcp_store_sweep(&c->db, sess_idle, retention)
            || gmcp_chat_sweep(&c->db, chat_idle)
            || gmcp_db_exec(&c->db, "gmcp_file_expired_delete", NULL,
                            GMCP_ARGS(gmcp_i64_str(c->pool, now)))) {
            rv = fail("cleanup failed: %s", gmcp_db_error(&c->db, -1));
            joblock_release(&lock);
            return rv;
        }
        /* Usage roll-up, usage and audit deletes, and their retention.delete audit row:
         * one transaction. */
        if (gmcp_retention_apply(&c->db, actor(c->pool), &run)) {
            rv = fail("retention failed (nothing of it was changed): %s",
                      gmcp_db_error(&c->db, -1));
            joblock_release(&lock);
            return rv;
        }
        if (ups->nelts || n_sessions || n_chats || n_files)
            gmcp_audit(&c->db, actor(c->pool), "cleanup", "", apr_psprintf(c->pool,
                       "uploads=%d spool_bytes=%" APR_INT64_T_FMT " mcp_sessions=%"
                       APR_INT64_T_FMT " chat_sessions=%" APR_INT64_T_FMT " files=%"
                       APR_INT64_T_FMT, ups->nelts, spool_bytes, n_sessions, n_chats,
                       n_files));
    }
    joblock_release(&lock);
    out = json_pack("{s:b, s:i, s:I, s:I, s:I, s:I, s:b}", "dry_run", dry,
                    "uploads", ups->nelts, "spool_bytes", (json_int_t)spool_bytes,
                    "mcp_sessions", (json_int_t)n_sessions, "chat_sessions", (json_int_t)n_chats,
                    "files", (json_int_t)n_files, "upload_dir_known", dir != NULL);
    json_object_set_new(out, "retention", json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}",
        "mcp_events", (json_int_t)n_events, "usage_hourly", (json_int_t)run.usage_hourly,
        "usage_days", (json_int_t)run.usage_days, "usage_daily", (json_int_t)run.usage_daily,
        "audit_log", (json_int_t)run.audit,
        "usage_before", epoch_or_null(c, run.usage_before),
        "usage_daily_before", epoch_or_null(c, run.usage_daily_before),
        "audit_before", epoch_or_null(c, run.audit_before)));
    if (c->json) {
        json_dumpf(out, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    else if (c->verbose || dry) {
        printf("%s%d upload(s) (%" APR_INT64_T_FMT " spool bytes), %" APR_INT64_T_FMT
               " MCP session(s), %" APR_INT64_T_FMT " chat session(s), %" APR_INT64_T_FMT
               " file record(s)\n", dry ? "would remove " : "removed ", ups->nelts,
               spool_bytes, n_sessions, n_chats, n_files);
        printf("%s%" APR_INT64_T_FMT " MCP event(s), %" APR_INT64_T_FMT " hourly usage row(s)"
               " (rolled into %" APR_INT64_T_FMT " daily row(s)), %" APR_INT64_T_FMT
               " daily usage row(s), %" APR_INT64_T_FMT " audit row(s)\n",
               dry ? "would remove " : "removed ", n_events, run.usage_hourly, run.usage_days,
               run.usage_daily, run.audit);
    }
    json_decref(out);
    if (!dir && ups->nelts)
        fprintf(stderr, "gmcpctl: GeminiMCPUploadDir is unknown (give --config or "
                "--upload-dir): spool files were not %s\n", dry ? "counted" : "removed");
    return failed ? fail("some expired uploads could not be removed%s", "") : 0;
}
