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
#include "gmcp_lease.h"
#include "gmcp_store.h"
#include "gmcp_tasks.h"
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

int cmd_uploads_list(ctl *c)
{
    apr_array_header_t *list;
    json_t *arr;
    int rv, i;
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_upload_list(&c->db, c->owner, &list))
        return fail("cannot read the upload store: %s", gmcp_db_error(&c->db, -1));
    arr = json_array();
    for (i = 0; i < list->nelts; i++) {
        gmcp_upload *x = &APR_ARRAY_IDX(list, i, gmcp_upload);
        if (c->json)
            json_array_append_new(arr, gmcp_upload_json(x));
        else
            printf("%-22s %-10s %12" APR_INT64_T_FMT " / %-12" APR_INT64_T_FMT " %-20s %s\n", x->id,
                   x->state, x->offset, x->length, x->owner, x->filename);
    }
    if (c->json) {
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    json_decref(arr);
    return 0;
}

static int need_upload(ctl *c, const char *id, gmcp_upload *u)
{
    apr_status_t rv;
    int code;
    if ((code = open_db(c, 0)) != 0) return code;
    if (!id) return usage_err("%s", "an upload id is required");
    rv = gmcp_upload_get(&c->db, id, c->owner, u);
    if (APR_STATUS_IS_ENOENT(rv)) return fail("no upload '%s'", id);
    if (rv != APR_SUCCESS)
        return fail("cannot read the upload store: %s", gmcp_db_error(&c->db, -1));
    return 0;
}

int cmd_uploads_show(ctl *c, const char *id)
{
    gmcp_upload u;
    json_t *o;
    int rv;
    if ((rv = need_upload(c, id, &u)) != 0) return rv;
    o = gmcp_upload_json(&u);
    json_dumpf(o, stdout, c->json ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
    return 0;
}

int cmd_uploads_cancel(ctl *c, const char *id)
{
    gmcp_upload u;
    const char *dir;
    int rv;
    if ((rv = need_upload(c, id, &u)) != 0) return rv;
    dir = upload_dir(c);
    if (gmcp_upload_terminate(&c->db, u.id, u.owner) == GMCP_EDB
        || gmcp_audit(&c->db, actor(c->pool), "upload.cancel", u.key_id,
                      apr_pstrcat(c->pool, u.id, " owner=", u.owner, NULL)))
        return fail("cannot cancel the upload: %s", gmcp_db_error(&c->db, -1));
    if (dir) apr_file_remove(apr_pstrcat(c->pool, dir, "/", u.id, NULL), c->pool);
    if (c->verbose) printf("cancelled %s\n", u.id);
    return 0;
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
    if (gmcp_duration_parse(c->pool, v, GMCP_RETENTION_MIN, GMCP_RETENTION_MAX, out, &why)
        != APR_SUCCESS)
        return fail("%s", apr_pstrcat(c->pool, directive, ": ", why, NULL));
    return 0;
}

static json_t *epoch_or_null(ctl *c, apr_int64_t t)
{
    return t ? json_string(iso(c->pool, t)) : json_null();
}

/* One cleanup run: the settings it follows, what it counts and removes. */
typedef struct {
    int dry; /* --dry-run: count only */
    apr_int64_t now;
    /* The server's own expiry settings, so both agree on what has expired. */
    apr_int64_t sess_idle, event_retention, chat_idle;
    const char *dir;     /* the spool directory, NULL: unknown */
    gmcp_retention keep; /* how long usage and the audit log are kept */
    gmcp_retention_run run;
    apr_int64_t n_sessions, n_chats, n_files, n_events, n_tasks, spool_bytes;
    int n_orphans;           /* tasks whose worker is gone: failed */
    apr_array_header_t *ups; /* the expired uploads */
    int failed;              /* an upload could not be removed */
} cleanup_job;

/* The configuration's expiry and retention settings: 0, or EXIT_FAIL said. */
static int cleanup_settings(ctl *c, cleanup_job *j)
{
    const char *why;
    int rv;
    j->sess_idle = apr_atoi64(conf_or(c, "GeminiMCPSessionIdleTimeout", "86400"));
    j->event_retention = apr_atoi64(conf_or(c, "GeminiMCPEventRetention", "3600"));
    j->chat_idle = apr_atoi64(conf_or(c, "GeminiMCPChatIdleTimeout", "259200"));
    /* How long usage and the audit log are kept (gmcp_retention.h). */
    if ((rv = retention_conf(c, "GeminiMCPUsageRetention", GMCP_DEFAULT_USAGE_RETENTION,
                             &j->keep.usage))
            != 0
        || (rv = retention_conf(c, "GeminiMCPUsageDailyRetention",
                                GMCP_DEFAULT_USAGE_DAILY_RETENTION, &j->keep.usage_daily))
            != 0
        || (rv = retention_conf(c, "GeminiMCPAuditRetention", GMCP_DEFAULT_AUDIT_RETENTION,
                                &j->keep.audit))
            != 0)
        return rv;
    if (gmcp_retention_check(&j->keep, &why) != APR_SUCCESS) return fail("%s", why);
    j->dir = upload_dir(c);
    return 0;
}

/* The stored SSE events gmcp_store_sweep removes: too old, or of idle sessions; -1 when
 * they cannot be counted. */
static apr_int64_t count_events(ctl *c, const cleanup_job *j)
{
    gmcp_rows rs;
    if (gmcp_db_select_raw(
            &c->db,
            apr_psprintf(c->pool,
                         "SELECT COUNT(*) FROM mcp_events "
                         "WHERE created < %" APR_INT64_T_FMT " OR session_id IN (SELECT "
                         "id FROM mcp_sessions WHERE last_seen < %" APR_INT64_T_FMT ")",
                         j->now - j->event_retention, j->now - j->sess_idle),
            &rs)
            == APR_SUCCESS
        && rs.rows->nelts == 1)
        return apr_atoi64(GMCP_ROW(&rs, 0)[0]);
    return -1;
}

/* What has expired, and (--dry-run) what retention would remove: 0, or EXIT_FAIL said. */
static int cleanup_count(ctl *c, cleanup_job *j)
{
    j->n_sessions = count(c, "gmcp_count_sessions_idle", j->now - j->sess_idle);
    j->n_chats = count(c, "gmcp_count_chats_idle", j->now - j->chat_idle);
    j->n_files = count(c, "gmcp_file_expired_count", j->now);
    j->n_events = count_events(c, j);
    j->n_tasks = gmcp_task_expired_count(&c->db, j->now);
    gmcp_retention_cutoffs(&j->keep, j->now, &j->run);
    if (j->n_sessions < 0 || j->n_chats < 0 || j->n_files < 0 || j->n_events < 0 || j->n_tasks < 0
        || (j->dry && gmcp_task_reap(&c->db, j->now, gmcp_lease_holder_dead, 1, &j->n_orphans))
        || gmcp_upload_expired(&c->db, j->now, &j->ups)
        || (j->dry && gmcp_retention_count(&c->db, &j->run)))
        return fail("cannot read the database: %s", gmcp_db_error(&c->db, -1));
    return 0;
}

/* The expired uploads' spool bytes counted and (not with --dry-run) their files and rows
 * removed; j->failed when one could not be. */
static void cleanup_uploads(ctl *c, cleanup_job *j)
{
    int i;
    for (i = 0; i < j->ups->nelts; i++) {
        gmcp_upload *u = &APR_ARRAY_IDX(j->ups, i, gmcp_upload);
        apr_finfo_t fi;
        const char *path = j->dir ? apr_pstrcat(c->pool, j->dir, "/", u->id, NULL) : NULL;
        if (path && apr_stat(&fi, path, APR_FINFO_SIZE, c->pool) == APR_SUCCESS)
            j->spool_bytes += fi.size;
        if (j->dry) continue;
        /* The file first: a row without a file is harmless, the reverse leaks disk. */
        if (path) {
            apr_status_t st = apr_file_remove(path, c->pool);
            if (st != APR_SUCCESS && !APR_STATUS_IS_ENOENT(st)) {
                fprintf(stderr, "gmcpctl: cannot remove %s\n", path);
                j->failed = 1;
                continue;
            }
        }
        if (gmcp_upload_delete(&c->db, u->id)) j->failed = 1;
    }
}

/* The rest removed: idle sessions, expired file records, what is past its retention,
 * and the run's audit row: 0, or EXIT_FAIL said. */
static int cleanup_sweep(ctl *c, cleanup_job *j)
{
    if (gmcp_store_sweep(&c->db, j->sess_idle, j->event_retention)
        || gmcp_chat_sweep(&c->db, j->chat_idle)
        || gmcp_db_exec(&c->db, "gmcp_file_expired_delete", NULL,
                        GMCP_ARGS(gmcp_i64_str(c->pool, j->now)))
        || gmcp_task_reap(&c->db, j->now, gmcp_lease_holder_dead, 0, &j->n_orphans)
        || gmcp_task_sweep(&c->db, j->now, &(int){0}))
        return fail("cleanup failed: %s", gmcp_db_error(&c->db, -1));
    /* Usage roll-up, usage and audit deletes, and their retention.delete audit row:
     * one transaction. */
    if (gmcp_retention_apply(&c->db, actor(c->pool), &j->run))
        return fail("retention failed (nothing of it was changed): %s", gmcp_db_error(&c->db, -1));
    if (j->ups->nelts || j->n_sessions || j->n_chats || j->n_files || j->n_tasks || j->n_orphans)
        gmcp_audit(&c->db, actor(c->pool), "cleanup", "",
                   apr_psprintf(c->pool,
                                "uploads=%d spool_bytes=%" APR_INT64_T_FMT
                                " mcp_sessions=%" APR_INT64_T_FMT " chat_sessions=%" APR_INT64_T_FMT
                                " files=%" APR_INT64_T_FMT " tasks=%" APR_INT64_T_FMT
                                " orphaned_tasks=%d",
                                j->ups->nelts, j->spool_bytes, j->n_sessions, j->n_chats,
                                j->n_files, j->n_tasks, j->n_orphans));
    return 0;
}

static void cleanup_print_json(ctl *c, const cleanup_job *j)
{
    json_t *out =
        json_pack("{s:b, s:i, s:I, s:I, s:I, s:I, s:I, s:i, s:b}", "dry_run", j->dry, "uploads",
                  j->ups->nelts, "spool_bytes", (json_int_t)j->spool_bytes, "mcp_sessions",
                  (json_int_t)j->n_sessions, "chat_sessions", (json_int_t)j->n_chats, "files",
                  (json_int_t)j->n_files, "tasks", (json_int_t)j->n_tasks, "orphaned_tasks",
                  j->n_orphans, "upload_dir_known", j->dir != NULL);
    json_object_set_new(
        out, "retention",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "mcp_events", (json_int_t)j->n_events,
                  "usage_hourly", (json_int_t)j->run.usage_hourly, "usage_days",
                  (json_int_t)j->run.usage_days, "usage_daily", (json_int_t)j->run.usage_daily,
                  "audit_log", (json_int_t)j->run.audit, "usage_before",
                  epoch_or_null(c, j->run.usage_before), "usage_daily_before",
                  epoch_or_null(c, j->run.usage_daily_before), "audit_before",
                  epoch_or_null(c, j->run.audit_before)));
    json_dumpf(out, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(out);
}

static void cleanup_print_text(const cleanup_job *j)
{
    const char *did = j->dry ? "would remove " : "removed ";
    printf("%s%d upload(s) (%" APR_INT64_T_FMT " spool bytes), %" APR_INT64_T_FMT
           " MCP session(s), %" APR_INT64_T_FMT " chat session(s), %" APR_INT64_T_FMT
           " file record(s), %" APR_INT64_T_FMT " task(s); %s%d task(s) whose worker is gone\n",
           did, j->ups->nelts, j->spool_bytes, j->n_sessions, j->n_chats, j->n_files, j->n_tasks,
           j->dry ? "would fail " : "failed ", j->n_orphans);
    printf("%s%" APR_INT64_T_FMT " MCP event(s), %" APR_INT64_T_FMT " hourly usage row(s)"
           " (rolled into %" APR_INT64_T_FMT " daily row(s)), %" APR_INT64_T_FMT
           " daily usage row(s), %" APR_INT64_T_FMT " audit row(s)\n",
           did, j->n_events, j->run.usage_hourly, j->run.usage_days, j->run.usage_daily,
           j->run.audit);
}

/* The run's report (--json, or text with -v or --dry-run), the warnings after it: 0, or
 * EXIT_FAIL when an upload could not be removed. */
static int cleanup_report(ctl *c, const cleanup_job *j)
{
    if (c->json)
        cleanup_print_json(c, j);
    else if (c->verbose || j->dry)
        cleanup_print_text(j);
    if (!j->dir && j->ups->nelts)
        fprintf(stderr,
                "gmcpctl: GeminiMCPUploadDir is unknown (give --config or "
                "--upload-dir): spool files were not %s\n",
                j->dry ? "counted" : "removed");
    return j->failed ? fail("some expired uploads could not be removed%s", "") : 0;
}

/* 1. the database and the settings, 2. the job lock, 3. what has expired counted,
 * 4. removed (not with --dry-run), 5. the lock released, 6. the report. */
int cmd_cleanup(ctl *c)
{
    cleanup_job j;
    gmcpctl_joblock lock;
    int rv;

    memset(&j, 0, sizeof(j));
    j.now = gmcp_now_sec();
    j.dry = opt(c, OPT_DRY_RUN) != NULL;
    if ((rv = open_db(c, 0)) != 0) return rv; /* also reads --config */
    if ((rv = cleanup_settings(c, &j)) != 0) return rv;
    if ((rv = joblock_take(c, &lock)) != 0) return rv;
    if ((rv = cleanup_count(c, &j)) == 0) {
        cleanup_uploads(c, &j);
        if (!j.dry) rv = cleanup_sweep(c, &j);
    }
    joblock_release(&lock);
    if (!rv) rv = cleanup_report(c, &j);
    return rv;
}
