/* gmcpctl — administer mod_gemini_mcp's database.
 *
 * Reads the database settings from the httpd configuration (DBDriver/DBDParams) or
 * from flags, and runs the same core code as the module. Quiet on success unless
 * asked (cron-friendly); errors go to stderr with a non-zero exit code:
 *   0 success, 1 operation failed, 2 usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include <apr_file_info.h>
#include <apr_getopt.h>
#include <apr_strings.h>
#include <apr_dbd.h>
#include <apr_time.h>
#include <jansson.h>
#include <sqlite3.h>

#include "gmcp_chat.h"
#include "gmcp_errlog.h"
#include "gmcp_keys.h"
#include "gmcp_db.h"
#include "gmcp_store.h"
#include "gmcp_migrate.h"
#include "httpd_conf.h"
#include "gmcpctl.h"

#ifndef GMCP_SQL_DIR
#define GMCP_SQL_DIR "/usr/local/share/gemini-mcp/sql"
#endif
/* Read when neither --config nor --driver/--params is given and it exists: on Debian
 * the module's configuration is in there once "a2enmod gemini_mcp" has run. */
#ifndef GMCP_DEFAULT_CONFIG
#define GMCP_DEFAULT_CONFIG "/etc/apache2/apache2.conf"
#endif
static int config_is_default;

/* The DBDParams password (pgsql "password=..." or a URI's user:password@): never printed. */
static const char *secret_param;
static apr_pool_t *msg_pool;

static void note_secret(apr_pool_t *p, const char *params)
{
    const char *s, *e;
    secret_param = NULL;
    if (!params) return;
    /* postgresql://user:password@host/db */
    if ((s = strstr(params, "://")) && (e = strchr(s + 3, '@'))) {
        const char *colon = memchr(s + 3, ':', (apr_size_t)(e - s - 3));
        if (colon && e > colon + 1)
            secret_param = apr_pstrmemdup(p, colon + 1, (apr_size_t)(e - colon - 1));
    }
    /* password=secret, password = 'se cr\'et', ?password=secret& */
    for (s = params; (s = strstr(s, "password")) != NULL; s += 8) {
        char *v, *o;
        if (s != params && !strchr(" \t?&", s[-1])) continue;
        for (e = s + 8; *e == ' ' || *e == '\t'; e++)
            ;
        if (*e != '=') continue;
        for (e++; *e == ' ' || *e == '\t'; e++)
            ;
        o = v = apr_palloc(p, strlen(e) + 1);
        if (*e == '\'') {
            for (e++; *e && *e != '\''; e++) {
                if (*e == '\\' && e[1]) e++;
                *o++ = *e;
            }
        }
        else {
            while (*e && *e != ' ' && *e != '\t' && *e != '&') *o++ = *e++;
        }
        *o = '\0';
        if (*v) secret_param = v;
    }
}

/* `msg` as one line: the password "***", line breaks (PostgreSQL's
 * "FATAL: ...\nDETAIL: ...") "; ", other control characters spaces. */
static const char *one_line(apr_pool_t *p, const char *msg)
{
    const char *s;
    char *out, *o;
    if (secret_param && *secret_param) {
        apr_size_t n = strlen(secret_param);
        const char *hit;
        char *red = apr_pstrdup(p, "");
        for (s = msg; (hit = strstr(s, secret_param)) != NULL; s = hit + n)
            red = apr_pstrcat(p, red, apr_pstrmemdup(p, s, (apr_size_t)(hit - s)), "***", NULL);
        msg = apr_pstrcat(p, red, s, NULL);
    }
    out = o = apr_palloc(p, strlen(msg) * 2 + 1);
    for (s = msg; *s;) {
        if (*s == '\n' || *s == '\r') {
            while (o > out && (o[-1] == ' ' || o[-1] == '\t')) o--;
            while (*s == '\n' || *s == '\r' || *s == ' ' || *s == '\t') s++;
            if (*s && o > out) {
                *o++ = ';';
                *o++ = ' ';
            }
            continue;
        }
        *o++ = ((unsigned char)*s < 0x20 || *s == 0x7f) ? ' ' : *s;
        s++;
    }
    while (o > out && (o[-1] == ' ' || o[-1] == '\t')) o--;
    *o = '\0';
    return out;
}

/* Every message gmcpctl prints on stderr goes through here: one line, no secret. */
static void say(const char *line)
{
    apr_pool_t *p;
    apr_pool_create(&p, msg_pool);
    fprintf(stderr, "gmcpctl: %s\n", one_line(p, line));
    apr_pool_destroy(p);
}

static int complain(int code, const char *fmt, const char *a)
{
    char buf[4096];
    size_t n;
    snprintf(buf, sizeof(buf), fmt, a);
    /* Usage errors end with the hint, once. */
    if (code == EXIT_USAGE && !strstr(buf, "(see gmcpctl --help)")
        && (n = strlen(buf)) < sizeof(buf) - 24)
        memcpy(buf + n, " (see gmcpctl --help)", 22);
    say(buf);
    return code;
}

int fail(const char *fmt, const char *a) { return complain(EXIT_FAIL, fmt, a); }
int usage_err(const char *fmt, const char *a) { return complain(EXIT_USAGE, fmt, a); }

const char *opt(ctl *c, int code) { return apr_table_get(c->opts, apr_itoa(c->pool, code)); }

/* The core's log (gmcp_errlog.h): printed only with --verbose, so that without it a
 * failure is the one line gmcpctl prints itself. */
static void elog_print(const char *file, int line, gmcp_elog_level level, apr_status_t rv,
                       const char *tag, const char *msg, void *baton)
{
    char buf[4096], err[256];
    (void)file;
    (void)line;
    (void)level;
    (void)baton;
    if (rv != APR_SUCCESS)
        snprintf(buf, sizeof(buf), "%s: %s: %s", tag && *tag ? tag : "core", msg,
                 apr_strerror(rv, err, sizeof(err)));
    else
        snprintf(buf, sizeof(buf), "%s: %s", tag && *tag ? tag : "core", msg);
    say(buf);
}

static int elog_enabled(gmcp_elog_level level, void *baton)
{
    (void)level;
    return ((ctl *)baton)->verbose;
}

int open_db(ctl *c, int may_create)
{
    const apr_dbd_driver_t *drv = NULL;
    apr_dbd_t *handle = NULL;
    const char *err = NULL;
    apr_status_t rv;

    if (c->config) {
        gmcp_httpd_dbd conf;
        if (gmcp_httpd_conf_dbd(c->pool, c->config, &conf, &err)) return fail("%s", err);
        if (!c->driver) c->driver = conf.driver;
        if (!c->params) c->params = conf.params;
        if (!c->pepper) c->pepper = conf.key_pepper;
        c->httpd_gmcp = conf.gmcp;
        if ((!c->driver || !c->params) && config_is_default)
            return usage_err("no database: give --config FILE, or --driver and --params "
                             "(%s has no DBDriver and DBDParams: a2enmod gemini_mcp?)",
                             c->config);
        if (!c->driver || !c->params)
            return fail("%s has no DBDriver and DBDParams (give --driver and --params)", c->config);
    }
    if (!c->driver || !c->params)
        return usage_err("no database: give --config FILE, or --driver and --params%s", "");
    note_secret(c->pool, c->params);
    if (strcmp(c->driver, "sqlite3") != 0 && strcmp(c->driver, "pgsql") != 0)
        return fail("unsupported driver '%s' (use sqlite3 or pgsql)", c->driver);
    if (!strcmp(c->driver, "sqlite3") && !may_create) {
        apr_finfo_t fi;
        /* Opening a mistyped path would silently create an empty database. */
        if (apr_stat(&fi, c->params, APR_FINFO_TYPE, c->pool) != APR_SUCCESS)
            return fail("database file %s does not exist (run 'gmcpctl migrate' to create it)",
                        c->params);
    }
    if ((rv = apr_dbd_get_driver(c->pool, c->driver, &drv)) != APR_SUCCESS)
        return fail("cannot load the APR DBD driver '%s' (is libaprutil1-dbd-* installed?)",
                    c->driver);
    if ((rv = apr_dbd_open_ex(drv, c->pool, c->params, &handle, &err)) != APR_SUCCESS) {
        if (!strcmp(c->driver, "sqlite3"))
            return fail("cannot open the database: %s",
                        apr_pstrcat(c->pool, c->params, ": ", err ? err : "unknown error", NULL));
        return fail("cannot open the database: %s", err ? err : "unknown error");
    }
    gmcp_db_init(&c->db, drv, handle, apr_hash_make(c->pool), c->pool);
    /* Run next to a busy server: wait for its writers rather than fail (backup.c's native
     * calls on this connection too). Not a repeat of the core's: gmcp_db_ready sets it for
     * the module, and gmcpctl never calls that (it refuses a schema behind, which migrate
     * must open). */
    if (!c->db.pgsql) gmcp_db_exec_raw(&c->db, "PRAGMA busy_timeout=5000", NULL);
    return 0;
}

/* Migrations live in sql/sqlite/ and sql/pgsql/. */
static const char *sql_subdir(const char *driver)
{
    return !strcmp(driver, "sqlite3") ? "sqlite" : driver;
}

static int cmd_migrate(ctl *c)
{
    apr_array_header_t *migs;
    const char *err = NULL;
    int applied = 0, rv, i;
    if ((rv = open_db(c, 1)) != 0) return rv;
    if (gmcp_migrations_load(c->pool, c->sql_dir, sql_subdir(c->driver), &migs, &err))
        return fail("%s", err);
    if (gmcp_migrate_apply(&c->db, migs, &applied, &err)) return fail("%s", err);
    if (c->json) {
        json_t *arr = json_array();
        for (i = migs->nelts - applied; i < migs->nelts; i++)
            json_array_append_new(arr, json_string(APR_ARRAY_IDX(migs, i, gmcp_migration).name));
        json_t *o = json_pack("{s:o, s:i}", "applied", arr, "version", migs->nelts);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    }
    else if (c->verbose) {
        for (i = migs->nelts - applied; i < migs->nelts; i++)
            printf("applied %s\n", APR_ARRAY_IDX(migs, i, gmcp_migration).name);
        printf("schema is at version %d\n", migs->nelts);
    }
    return 0;
}

/* migrate status: per migration applied / pending / drift / missing. Drift (a file that
 * changed after it was applied) and missing (applied, no file) exit 1, after the list. */
static int cmd_migrate_status(ctl *c)
{
    apr_array_header_t *migs, *missing;
    const char *err = NULL;
    json_t *arr = json_array();
    int rv, i, pending = 0, drift = 0;
    if ((rv = open_db(c, 0)) != 0) {
        json_decref(arr);
        return rv;
    }
    if (gmcp_migrations_load(c->pool, c->sql_dir, sql_subdir(c->driver), &migs, &err)
        || gmcp_migrate_inspect(&c->db, migs, &missing, &err)) {
        json_decref(arr);
        return fail("%s", err);
    }
    for (i = 0; i < migs->nelts + missing->nelts; i++) {
        gmcp_migration *m = i < migs->nelts
            ? &APR_ARRAY_IDX(migs, i, gmcp_migration)
            : &APR_ARRAY_IDX(missing, i - migs->nelts, gmcp_migration);
        int drifted = m->applied && !m->missing && strcmp(m->applied_checksum, m->checksum);
        const char *state = m->missing ? "missing"
            : !m->applied              ? "pending"
            : drifted                  ? "drift"
                                       : "applied";
        if (!m->applied) pending++;
        if (drifted || m->missing) drift++;
        if (c->json) {
            json_t *o =
                json_pack("{s:i, s:s, s:s, s:s, s:b}", "version", m->version, "name", m->name,
                          "state", state, "checksum", m->checksum, "down", m->down_sql != NULL);
            if (m->applied) json_object_set_new(o, "applied_at", json_integer(m->applied_at));
            if (drifted)
                json_object_set_new(o, "applied_checksum", json_string(m->applied_checksum));
            json_array_append_new(arr, o);
        }
        else {
            char when[APR_RFC822_DATE_LEN] = "-";
            if (m->applied) apr_rfc822_date(when, apr_time_from_sec(m->applied_at));
            printf("%04d  %-32s %-9s %s%s\n", m->version, m->name, state, when,
                   drifted          ? "  (file modified after it was applied)"
                       : m->missing ? "  (applied, but no file in the migrations directory)"
                                    : "");
        }
    }
    if (c->json) {
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    else if (pending) {
        printf("%d migration(s) pending: run 'gmcpctl migrate'\n", pending);
    }
    json_decref(arr);
    if (drift) {
        fflush(stdout);
        return fail("%s",
                    apr_psprintf(c->pool,
                                 "schema drift: %d applied migration(s) no "
                                 "longer match their file (restore the original)",
                                 drift));
    }
    return 0;
}

/* migrate down --to N [--force] */
static int cmd_migrate_down(ctl *c)
{
    apr_array_header_t *migs, *done = NULL;
    const char *err = NULL, *to = opt(c, OPT_TO), *s;
    int rv, i, target, current = 0, refused = 0, audited = 0;
    if (!to) return usage_err("'migrate down' needs --to N, the version to end at%s", "");
    for (s = to; *s >= '0' && *s <= '9'; s++)
        ;
    if (!*to || *s || s - to > 6)
        return usage_err("--to '%s' must be a version number (0 or more)", to);
    target = atoi(to);
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_migrations_load(c->pool, c->sql_dir, sql_subdir(c->driver), &migs, &err))
        return fail("%s", err);
    if (gmcp_db_schema_version(&c->db, &current, &err))
        return fail("cannot read the schema version: %s", err);
    if (target > current)
        return usage_err("%s",
                         apr_psprintf(c->pool,
                                      "--to %d is above the schema's version "
                                      "(%d): nothing to roll back",
                                      target, current));
    if (target < current
        && gmcp_migrate_down(&c->db, migs, target, opt(c, OPT_FORCE) != NULL, actor(c->pool), &done,
                             &refused, &audited, &err))
        return fail("%s", err);
    if (c->json) {
        json_t *arr = json_array(), *o;
        for (i = 0; done && i < done->nelts; i++)
            json_array_append_new(arr, json_string(APR_ARRAY_IDX(done, i, const char *)));
        o = json_pack("{s:o, s:i, s:i, s:b}", "rolled_back", arr, "from", current, "version",
                      target, "audited", audited);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    }
    else if (c->verbose) {
        if (target == current)
            printf("schema is already at version %d: nothing to roll back\n", current);
        for (i = 0; done && i < done->nelts; i++)
            printf("rolled back %s\n", APR_ARRAY_IDX(done, i, const char *));
        if (done && done->nelts && !audited)
            printf("not audited: the rollback dropped the audit log itself\n");
        if (target < current) printf("schema is at version %d\n", target);
    }
    return 0;
}

const char *iso(apr_pool_t *p, apr_int64_t sec)
{
    char buf[APR_RFC822_DATE_LEN];
    apr_rfc822_date(buf, apr_time_from_sec(sec));
    return apr_pstrdup(p, buf);
}

static int need_session(ctl *c, const char *id, gmcp_chat_session *s)
{
    apr_status_t st;
    int rv;
    if (!id) return usage_err("a session id is required%s", "");
    if ((rv = open_db(c, 0)) != 0) return rv;
    st = gmcp_chat_get(&c->db, id, c->owner, 0, s);
    if (st == APR_ENOENT) return fail("no chat session '%s'", id);
    if (st != APR_SUCCESS) return fail("cannot read the chat store: %s", gmcp_db_error(&c->db, -1));
    return 0;
}

static int cmd_sessions_list(ctl *c)
{
    apr_array_header_t *list;
    json_t *arr;
    int rv, i;
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_chat_list(&c->db, c->owner, 0, 0, 100000, &list))
        return fail("cannot read the chat store: %s", gmcp_db_error(&c->db, -1));
    arr = json_array();
    for (i = 0; i < list->nelts; i++) {
        gmcp_chat_session *x = &APR_ARRAY_IDX(list, i, gmcp_chat_session);
        if (c->json) {
            json_t *o = gmcp_chat_session_json(x);
            json_object_set_new(o, "owner", json_string(x->owner));
            json_array_append_new(arr, o);
        }
        else {
            printf("%-26s %-16s %-18s %5" APR_INT64_T_FMT "  %s  %s\n", x->id, x->owner, x->model,
                   x->message_count, iso(c->pool, x->last_used), x->title);
        }
    }
    if (c->json) {
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    json_decref(arr);
    return 0;
}

static int cmd_sessions_show(ctl *c, const char *id)
{
    gmcp_chat_session s;
    json_t *o;
    int rv;
    if ((rv = need_session(c, id, &s)) != 0) return rv;
    o = gmcp_chat_session_json(&s);
    json_object_set_new(o, "owner", json_string(s.owner));
    json_dumpf(o, stdout, c->json ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
    return 0;
}

static int cmd_sessions_export(ctl *c, const char *id)
{
    const char *fmt = c->format ? c->format : (c->json ? "json" : "markdown"), *out;
    gmcp_chat_session s;
    apr_array_header_t *msgs;
    int rv;
    if ((rv = need_session(c, id, &s)) != 0) return rv;
    if (gmcp_chat_messages(&c->db, s.id, 0, 1000000, &msgs))
        return fail("cannot read the chat store: %s", gmcp_db_error(&c->db, -1));
    if (!(out = gmcp_chat_export(c->pool, &s, msgs, fmt)))
        return usage_err("--format '%s' must be json, text or markdown", fmt);
    fputs(out, stdout);
    return 0;
}

static int cmd_sessions_delete(ctl *c, const char *id)
{
    gmcp_chat_session s;
    int rv;
    if ((rv = need_session(c, id, &s)) != 0) return rv;
    if (gmcp_chat_delete(&c->db, s.id, NULL) != APR_SUCCESS)
        return fail("cannot delete chat session '%s'", s.id);
    if (gmcp_audit(&c->db, actor(c->pool), "session.delete", "",
                   apr_pstrcat(c->pool, s.id, " owner=", s.owner, NULL)))
        return fail("deleted, but could not write the audit log: %s", gmcp_db_error(&c->db, -1));
    if (c->verbose) printf("deleted %s\n", s.id);
    return 0;
}

/* ---- the command table: dispatch, the command line's checks and the usage text ------- */

/* The most command-specific options a command accepts, and the 0 that ends them. */
#define MAX_CMD_OPTS 12
/* What keys create and keys update take. */
#define KEY_OPTS                                                                            \
    OPT_NAME, OPT_TENANT, OPT_SCOPES, OPT_RATE, OPT_BURST, OPT_TOKEN_RATE, OPT_TOKEN_QUOTA, \
        OPT_MAX_INFLIGHT, OPT_EXPIRES, OPT_USER, OPT_SUBJECT

/* One command: a name, a subcommand or none, and at most one operand. */
typedef struct {
    const char *name;     /* "keys" */
    const char *sub;      /* "create"; NULL: the command alone ("usage") */
    const char *operand;  /* the operand it needs, as the usage names it ("ID");
                                 * NULL: none */
    const char *synopsis; /* what the usage shows after it ("--to N"), or NULL */
    int (*run)(ctl *c);   /* without an operand */
    int (*run_on)(ctl *c, const char *operand); /* with one */
    int opts[MAX_CMD_OPTS]; /* the command-specific options it accepts, 0-ended */
    const char *help;       /* its description in the usage, lines split by '\n' */
} gmcpctl_cmd;

static const gmcpctl_cmd COMMANDS[] = {
    {.name = "migrate",
     .run = cmd_migrate,
     .help = "apply pending schema migrations (quiet unless -v); refuses to run\n"
             "when an applied migration's file changed since (drift)"},
    {.name = "migrate",
     .sub = "status",
     .run = cmd_migrate_status,
     .help = "list migrations: applied, pending, drift (file changed after it\n"
             "was applied) or missing (applied, no file); exits 1 on drift or\n"
             "missing, so cron can alert"},
    {.name = "migrate",
     .sub = "down",
     .synopsis = "--to N [--force]",
     .run = cmd_migrate_down,
     .opts = {OPT_TO, OPT_FORCE},
     .help = "roll back every migration above N (newest first, one transaction,\n"
             "with their NNNN_*.down.sql); refuses, changing nothing, when a\n"
             "table it drops or alters holds rows, unless --force"},
    {.name = "sessions",
     .sub = "list",
     .run = cmd_sessions_list,
     .opts = {'o'},
     .help = "Gemini chat sessions, most recently used first (--owner O)"},
    {.name = "sessions",
     .sub = "show",
     .operand = "ID",
     .run_on = cmd_sessions_show,
     .opts = {'o'},
     .help = "one chat session's details"},
    {.name = "sessions",
     .sub = "export",
     .operand = "ID",
     .run_on = cmd_sessions_export,
     .opts = {'F', 'o'},
     .help = "the session as --format json|text|markdown (default markdown)"},
    {.name = "sessions",
     .sub = "delete",
     .operand = "ID",
     .run_on = cmd_sessions_delete,
     .opts = {'o'},
     .help = "delete a chat session and its messages"},
    {.name = "keys",
     .sub = "create",
     .run = cmd_keys_create,
     .opts = {KEY_OPTS},
     .help = "make an API key (--name N [--tenant T] [--scopes P,...]\n"
             "[--rate R/s|m|h] [--burst B] [--token-rate T/s|m|h]\n"
             "[--token-quota Q/day|month] [--max-inflight K] [--expires DATE]\n"
             "[--user U | --subject S]); prints the secret once; --subject\n"
             "gives an OAuth token's subject these limits"},
    {.name = "keys", .sub = "list", .run = cmd_keys_list, .help = "every key (never a secret)"},
    {.name = "keys", .sub = "show", .operand = "ID", .run_on = cmd_keys_show, .help = "one key"},
    {.name = "keys",
     .sub = "revoke",
     .operand = "ID",
     .run_on = cmd_keys_revoke,
     .help = "refuse the key from now on (every httpd child within 1 s)"},
    {.name = "keys",
     .sub = "rotate",
     .operand = "ID",
     .run_on = cmd_keys_rotate,
     .opts = {OPT_GRACE},
     .help = "new secret; the old one works for --grace (default 24h)"},
    {.name = "keys",
     .sub = "update",
     .operand = "ID",
     .run_on = cmd_keys_update,
     .opts = {KEY_OPTS},
     .help = "change name, tenant, scopes, limits or expiry (same flags)"},
    {.name = "usage",
     .run = cmd_usage,
     .opts = {OPT_KEY, OPT_SINCE},
     .help = "usage per key and hour (--key ID, --since DATE|-Nh|-Nd)"},
    {.name = "audit",
     .run = cmd_audit,
     .opts = {OPT_SINCE},
     .help = "the audit log (--since DATE|-Nh|-Nd)"},
    {.name = "uploads",
     .sub = "list",
     .run = cmd_uploads_list,
     .opts = {'o'},
     .help = "tus uploads (--owner O)"},
    {.name = "uploads",
     .sub = "show",
     .operand = "ID",
     .run_on = cmd_uploads_show,
     .opts = {'o'},
     .help = "one upload"},
    {.name = "uploads",
     .sub = "cancel",
     .operand = "ID",
     .run_on = cmd_uploads_cancel,
     .opts = {OPT_UPLOAD_DIR},
     .help = "terminate an upload and remove its spool file"},
    {.name = "backup",
     .run = cmd_backup,
     .opts = {OPT_UPLOAD_DIR, OPT_INCLUDE_UPLOADS, OPT_OUTPUT, OPT_KEEP, OPT_ENCRYPT},
     .help = "a consistent online backup (--output FILE|DIR, --keep N with a\n"
             "DIR, --encrypt file:PATH|env:NAME, --include-uploads: the spool\n"
             "files of live uploads too); quiet on success"},
    {.name = "backup",
     .sub = "verify",
     .operand = "ARCHIVE",
     .run_on = cmd_backup_verify,
     .opts = {OPT_ENCRYPT},
     .help = "check an archive offline: format, row counts, table hashes"},
    /* An operand of the command alone: "restore" has no subcommands. */
    {.name = "restore",
     .operand = "ARCHIVE",
     .run_on = cmd_restore,
     .opts = {OPT_UPLOAD_DIR, OPT_ENCRYPT, OPT_REPLACE, OPT_DRY_RUN},
     .help = "load an archive (of either driver) into an empty database, in one\n"
             "transaction, verified before commit (--dry-run, --replace;\n"
             "--upload-dir D receives the archive's spool files)"},
    {.name = "copy",
     .run = cmd_copy,
     .opts = {OPT_UPLOAD_DIR, OPT_INCLUDE_UPLOADS, OPT_REPLACE, OPT_TO_DRIVER, OPT_TO_PARAMS},
     .help = "copy the database to --to-driver D --to-params P (verified;\n"
             "--include-uploads --upload-dir D: live uploads' spool files to D)"},
    {.name = "cleanup",
     .run = cmd_cleanup,
     .opts = {OPT_UPLOAD_DIR, OPT_DRY_RUN},
     .help = "remove what has expired: uploads (spool files and rows), idle MCP\n"
             "and chat sessions, Gemini file records, and what is past its\n"
             "retention (GeminiMCP*Retention: usage rolled up per day, audit,\n"
             "events) (--dry-run reports only; one run at a time; quiet on success)"},
};
#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

/* One option. Those not `everywhere` apply to the commands that list them only; they
 * are checked in this table's order (the first one given that does not apply is said). */
typedef struct {
    const char *name; /* the long name, without "--" */
    int code;         /* the short option's character, or OPT_* */
    const char *arg;  /* its value, as the usage names it ("FILE"); NULL: none */
    int everywhere;   /* applies to every command */
    const char *help; /* its text in the usage's Options section, lines split
                                 * by '\n'; NULL: the commands' texts describe it */
} gmcpctl_opt;

static const gmcpctl_opt OPTIONS[] = {
    {"config", 'f', "FILE", 1,
     "httpd configuration to read DBDriver/DBDParams from (without\n"
     "-f, -d and -p: " GMCP_DEFAULT_CONFIG " if it exists)"},
    {"driver", 'd', "NAME", 1, "database driver: sqlite3 or pgsql (instead of --config)"},
    {"params", 'p', "STR", 1, "driver parameters, as DBDParams (instead of --config)"},
    {"sql-dir", 's', "DIR", 1, "migrations directory (default " GMCP_SQL_DIR ")"},
    {"json", 'j', NULL, 1, "machine-readable output"},
    {"format", 'F', "FMT", 0, "export format of 'sessions export': json, text or markdown"},
    {"owner", 'o', "NAME", 0, "only this principal's sessions"},
    {"name", OPT_NAME, "N", 0, NULL},
    {"tenant", OPT_TENANT, "T", 0, NULL},
    {"scopes", OPT_SCOPES, "P,...", 0, NULL},
    {"rate", OPT_RATE, "R/s|m|h", 0, NULL},
    {"burst", OPT_BURST, "B", 0, NULL},
    {"token-rate", OPT_TOKEN_RATE, "T/s|m|h", 0, NULL},
    {"token-quota", OPT_TOKEN_QUOTA, "Q/day|month", 0, NULL},
    {"max-inflight", OPT_MAX_INFLIGHT, "K", 0, NULL},
    {"expires", OPT_EXPIRES, "DATE", 0, NULL},
    {"user", OPT_USER, "U", 0, NULL},
    {"subject", OPT_SUBJECT, "S", 0, NULL},
    {"grace", OPT_GRACE, "DURATION", 0, NULL},
    {"key", OPT_KEY, "ID", 0, NULL},
    {"since", OPT_SINCE, "DATE", 0, NULL},
    {"upload-dir", OPT_UPLOAD_DIR, "D", 0,
     "spool directory (default: the configuration's GeminiMCPUploadDir)"},
    {"include-uploads", OPT_INCLUDE_UPLOADS, NULL, 0, NULL},
    {"output", OPT_OUTPUT, "FILE|DIR", 0, NULL},
    {"keep", OPT_KEEP, "N", 0, NULL},
    {"encrypt", OPT_ENCRYPT, "SRC", 0, NULL},
    {"replace", OPT_REPLACE, NULL, 0, NULL},
    {"to-driver", OPT_TO_DRIVER, "D", 0, NULL},
    {"to-params", OPT_TO_PARAMS, "P", 0, NULL},
    {"dry-run", OPT_DRY_RUN, NULL, 0, NULL},
    {"to", OPT_TO, "N", 0, NULL},
    {"force", OPT_FORCE, NULL, 0, NULL},
    {"pepper", 'k', "SRC", 1,
     "file:PATH or env:NAME of the key-hashing secret (default: the\n"
     "configuration's GeminiMCPKeyPepper)"},
    {"verbose", 'v', NULL, 1,
     "report what was done, and print the core's own log lines\n"
     "(database, disk and upstream details: gmcpctl: TAG: message) on\n"
     "stderr; without -v a failure is the one line gmcpctl prints"},
    {"help", 'h', NULL, 1, "this text"},
    {"version", 'V', NULL, 1, "print the version"},
};
#define N_OPTIONS (sizeof(OPTIONS) / sizeof(OPTIONS[0]))

/* ---- the usage text ------------------------------------------------------------------ */

#define HELP_COL 21   /* where the descriptions start */
#define HELP_WIDTH 90 /* the text's widest line */

static const char USAGE_HEAD[] =
    "Usage: gmcpctl [options] <command> [arguments]\n"
    "\n"
    "Administer the database of mod_gemini_mcp (SQLite or PostgreSQL through APR DBD).\n"
    "\n"
    "Commands:\n";

static const char USAGE_TAIL[] =
    "\n"
    "Environment: GMCP_SQL_DIR overrides the default migrations directory.\n"
    "Options that belong to some commands (--name, --grace, --since, --format, ...) are\n"
    "refused on the others. DATE is YYYY-MM-DD[THH:MM[:SS]Z] (UTC, a real calendar day);\n"
    "durations are N with s, m, h or d, at most 100 years.\n"
    "Errors are one line on stderr (a database's message included, never its password).\n"
    "Exit status: 0 success, 1 the operation failed (or 'migrate status' found drift),\n"
    "2 usage error.\n";

/* "  term  description": the description in its column when the term leaves `gap`
 * spaces before it, else beside the term (two spaces) when that fits the width, else
 * on the next line; its further lines in the column. */
static void usage_entry(FILE *out, const char *term, const char *help, int gap)
{
    int tlen = (int)strlen(term), n = (int)strcspn(help, "\n");
    if (2 + tlen + gap <= HELP_COL)
        fprintf(out, "  %-*s%.*s\n", HELP_COL - 2, term, n, help);
    else if (2 + tlen + 2 + n <= HELP_WIDTH)
        fprintf(out, "  %s  %.*s\n", term, n, help);
    else
        fprintf(out, "  %s\n%*s%.*s\n", term, HELP_COL, "", n, help);
    for (help += n; *help == '\n'; help += n) {
        help++;
        n = (int)strcspn(help, "\n");
        fprintf(out, "%*s%.*s\n", HELP_COL, "", n, help);
    }
}

/* The usage text, from the command and option tables. */
static void usage(FILE *out)
{
    char term[128];
    apr_size_t i;
    fputs(USAGE_HEAD, out);
    for (i = 0; i < N_COMMANDS; i++) {
        const gmcpctl_cmd *e = &COMMANDS[i];
        snprintf(term, sizeof(term), "%s%s%s%s%s%s%s", e->name, e->sub ? " " : "",
                 e->sub ? e->sub : "", e->operand ? " " : "", e->operand ? e->operand : "",
                 e->synopsis ? " " : "", e->synopsis ? e->synopsis : "");
        usage_entry(out, term, e->help, 1);
    }
    fputs("\nOptions:\n", out);
    for (i = 0; i < N_OPTIONS; i++) {
        const gmcpctl_opt *o = &OPTIONS[i];
        if (!o->help) continue;
        if (o->code < OPT_NAME)
            snprintf(term, sizeof(term), "-%c, --%s%s%s", o->code, o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        else
            snprintf(term, sizeof(term), "    --%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        usage_entry(out, term, o->help, 2);
    }
    fputs(USAGE_TAIL, out);
}

/* ---- the command line ---------------------------------------------------------------- */

/* parse_options' answer to --help and --version: done, exit 0. */
#define ANSWERED (-1)

/* The words after the options, and the command they name. */
typedef struct {
    const char *const *words;
    int n;
    const gmcpctl_cmd *cmd;
    const char *operand;
} cmdline;

/* apr_getopt's table, from OPTIONS. */
static const apr_getopt_option_t *getopt_table(apr_pool_t *p)
{
    apr_getopt_option_t *t = apr_pcalloc(p, (N_OPTIONS + 1) * sizeof(*t));
    apr_size_t i;
    for (i = 0; i < N_OPTIONS; i++) {
        t[i].name = OPTIONS[i].name;
        t[i].optch = OPTIONS[i].code;
        t[i].has_arg = OPTIONS[i].arg != NULL;
        t[i].description = OPTIONS[i].help ? OPTIONS[i].help : "";
    }
    return t;
}

/* One option into `c`: 0, or ANSWERED (--help, --version). */
static int take_option(ctl *c, int code, const char *arg)
{
    switch (code) {
    case 'f': c->config = arg; break;
    case 'd': c->driver = arg; break;
    case 'p': c->params = arg; break;
    case 's': c->sql_dir = arg; break;
    case 'j': c->json = 1; break;
    case 'F': c->format = arg; break;
    case 'o': c->owner = arg; break;
    case 'k': c->pepper = arg; break;
    case 'v': c->verbose = 1; break;
    case 'h': usage(stdout); return ANSWERED;
    case 'V':
        printf("gmcpctl %s (schema version %d)\n", GMCP_VERSION, GMCP_SCHEMA_VERSION);
        return ANSWERED;
    default:
        if (code >= OPT_NAME) apr_table_set(c->opts, apr_itoa(c->pool, code), arg ? arg : "1");
        break;
    }
    return 0;
}

/* The options into `c` and the remaining words into `cl`: 0, ANSWERED or EXIT_USAGE. */
static int parse_options(ctl *c, int argc, const char *const *argv, cmdline *cl)
{
    const apr_getopt_option_t *table = getopt_table(c->pool);
    apr_getopt_t *g;
    const char *arg;
    int code, rv = 0;
    apr_status_t st = APR_EOF;

    memset(cl, 0, sizeof(*cl));
    apr_getopt_init(&g, c->pool, argc, argv);
    g->interleave = 1;
    g->errfn = NULL;
    while (!rv && (st = apr_getopt_long(g, table, &code, &arg)) == APR_SUCCESS)
        rv = take_option(c, code, arg);
    if (!rv && st != APR_EOF) {
        const char *what = g->ind > 0 && g->ind <= argc ? g->argv[g->ind - 1] : "?";
        rv = st == APR_BADARG ? usage_err("option '%s' needs a value", what)
                              : usage_err("unknown option '%s'", what);
    }
    /* With interleaving, apr_getopt moves the operands to the end of its own argv. */
    cl->words = g->argv + g->ind;
    cl->n = argc - g->ind;
    return rv;
}

/* The entry of `name` with `sub` (NULL: the command alone), or NULL. */
static const gmcpctl_cmd *command_entry(const char *name, const char *sub)
{
    apr_size_t i;
    for (i = 0; i < N_COMMANDS; i++)
        if (!strcmp(COMMANDS[i].name, name)
            && (sub ? COMMANDS[i].sub && !strcmp(COMMANDS[i].sub, sub) : !COMMANDS[i].sub))
            return &COMMANDS[i];
    return NULL;
}

/* The subcommands of `name`, ", "-separated; NULL when it has none. */
static const char *subcommands(apr_pool_t *p, const char *name)
{
    const char *subs = NULL;
    apr_size_t i;
    for (i = 0; i < N_COMMANDS; i++)
        if (!strcmp(COMMANDS[i].name, name) && COMMANDS[i].sub)
            subs = subs ? apr_pstrcat(p, subs, ", ", COMMANDS[i].sub, NULL) : COMMANDS[i].sub;
    return subs;
}

static int option_given(ctl *c, int code)
{
    return code == 'F' ? c->format != NULL : code == 'o' ? c->owner != NULL : opt(c, code) != NULL;
}

static int accepts(const gmcpctl_cmd *e, int code)
{
    int i;
    for (i = 0; i < MAX_CMD_OPTS && e->opts[i]; i++)
        if (e->opts[i] == code) return 1;
    return 0;
}

/* The options given fit the command `e` (called `full`): 0 or EXIT_USAGE. */
static int check_options(ctl *c, const gmcpctl_cmd *e, const char *full)
{
    apr_size_t i;
    for (i = 0; i < N_OPTIONS; i++) {
        const gmcpctl_opt *o = &OPTIONS[i];
        if (!o->everywhere && option_given(c, o->code) && !accepts(e, o->code))
            return usage_err("%s",
                             apr_psprintf(c->pool, "--%s does not apply to '%s'", o->name, full));
    }
    if (c->format && strcmp(c->format, "json") && strcmp(c->format, "text")
        && strcmp(c->format, "markdown"))
        return usage_err("--format '%s' must be json, text or markdown", c->format);
    return 0;
}

/* The command the words name, its operand and options checked before anything is
 * opened: 0 or EXIT_USAGE (no words: the usage text on stderr). */
static int find_command(ctl *c, cmdline *cl)
{
    const char *name = cl->n > 0 ? cl->words[0] : NULL, *sub, *subs, *full;
    const gmcpctl_cmd *alone, *e;
    int operands;

    if (!name) {
        usage(stderr);
        return EXIT_USAGE;
    }
    alone = command_entry(name, NULL);
    subs = subcommands(c->pool, name);
    if (!alone && !subs) return usage_err("unknown command '%s'", name);
    /* The word after a command that alone takes an operand ("restore ARCHIVE") is it. */
    sub = cl->n > 1 && !(alone && alone->operand) ? cl->words[1] : NULL;
    if (!sub && !alone)
        return usage_err("%s", apr_psprintf(c->pool, "'%s' needs a subcommand: %s", name, subs));
    if (!(e = sub ? command_entry(name, sub) : alone)) {
        if (!subs)
            return usage_err("%s",
                             apr_psprintf(c->pool,
                                          "'%s' takes no argument, "
                                          "not '%s'",
                                          name, sub));
        return usage_err(
            "%s",
            apr_psprintf(c->pool, "unknown command '%s %s'; %s takes: %s", name, sub, name, subs));
    }
    full = sub ? apr_pstrcat(c->pool, name, " ", sub, NULL) : name;
    operands = cl->n - (sub ? 2 : 1);
    if (e->operand && operands < 1)
        return usage_err("%s", apr_psprintf(c->pool, "'%s' needs an ID", full));
    if (operands > (e->operand ? 1 : 0))
        return usage_err(
            "%s",
            apr_psprintf(c->pool,
                         e->operand ? "too many arguments for '%s'" : "'%s' takes no argument",
                         full));
    cl->cmd = e;
    cl->operand = e->operand ? cl->words[sub ? 2 : 1] : NULL;
    return check_options(c, e, full);
}

/* ---- main ---------------------------------------------------------------------------- */

static void init_ctl(ctl *c)
{
    memset(c, 0, sizeof(*c));
    apr_pool_create(&c->pool, NULL);
    msg_pool = c->pool;
    gmcp_elog_set(elog_print, elog_enabled, c);
    c->opts = apr_table_make(c->pool, 8);
    c->sql_dir = getenv("GMCP_SQL_DIR") ? getenv("GMCP_SQL_DIR") : GMCP_SQL_DIR;
}

/* The configuration to read when no flag names the database, and the drivers: 0 or
 * EXIT_FAIL. */
static int prepare_database(ctl *c)
{
    if (!c->config && !c->driver && !c->params) {
        apr_finfo_t fi;
        if (apr_stat(&fi, GMCP_DEFAULT_CONFIG, APR_FINFO_TYPE, c->pool) == APR_SUCCESS) {
            c->config = GMCP_DEFAULT_CONFIG;
            config_is_default = 1;
        }
    }
    /* gmcpctl uses each connection from one thread: no per-call connection mutex (it
     * was 7 % of a backup's CPU). Must come before SQLite initialises. */
    sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    if (apr_dbd_init(c->pool) != APR_SUCCESS) return fail("%s", "cannot initialise APR DBD");
    return 0;
}

static int run_command(ctl *c, const cmdline *cl)
{
    return cl->cmd->run_on ? cl->cmd->run_on(c, cl->operand) : cl->cmd->run(c);
}

/* 1. the options, 2. the command they leave, checked, 3. the database's whereabouts and
 * drivers, 4. the command run, 5. its connection closed. */
int main(int argc, const char *const *argv)
{
    ctl c;
    cmdline cl;
    int rv;

    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS) return EXIT_FAIL;
    atexit(apr_terminate);
    init_ctl(&c);
    rv = parse_options(&c, argc, argv, &cl);
    if (!rv) rv = find_command(&c, &cl);
    if (!rv) rv = prepare_database(&c);
    if (!rv) rv = run_command(&c, &cl);
    /* The drivers register no cleanup of their own: close before the pool goes. */
    if (c.db.handle) apr_dbd_close(c.db.driver, c.db.handle);
    return rv == ANSWERED ? 0 : rv;
}
