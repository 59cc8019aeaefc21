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



static void usage(FILE *out)
{
    fputs(
"Usage: gmcpctl [options] <command> [arguments]\n"
"\n"
"Administer the database of mod_gemini_mcp (SQLite or PostgreSQL through APR DBD).\n"
"\n"
"Commands:\n"
"  migrate            apply pending schema migrations (quiet unless -v); refuses to run\n"
"                     when an applied migration's file changed since (drift)\n"
"  migrate status     list migrations: applied, pending, drift (file changed after it\n"
"                     was applied) or missing (applied, no file); exits 1 on drift or\n"
"                     missing, so cron can alert\n"
"  migrate down --to N [--force]\n"
"                     roll back every migration above N (newest first, one transaction,\n"
"                     with their NNNN_*.down.sql); refuses, changing nothing, when a\n"
"                     table it drops or alters holds rows, unless --force\n"
"  sessions list      Gemini chat sessions, most recently used first (--owner O)\n"
"  sessions show ID   one chat session's details\n"
"  sessions export ID the session as --format json|text|markdown (default markdown)\n"
"  sessions delete ID delete a chat session and its messages\n"
"  keys create        make an API key (--name N [--tenant T] [--scopes P,...]\n"
"                     [--rate R/s|m|h] [--burst B] [--token-rate T/s|m|h]\n"
"                     [--token-quota Q/day|month] [--max-inflight K] [--expires DATE]\n"
"                     [--user U]); prints the secret once\n"
"  keys list          every key (never a secret)\n"
"  keys show ID       one key\n"
"  keys revoke ID     refuse the key from now on (every httpd child within 1 s)\n"
"  keys rotate ID     new secret; the old one works for --grace (default 24h)\n"
"  keys update ID     change name, tenant, scopes, limits or expiry (same flags)\n"
"  usage              usage per key and hour (--key ID, --since DATE|-Nh|-Nd)\n"
"  audit              the audit log (--since DATE|-Nh|-Nd)\n"
"  uploads list       tus uploads (--owner O)\n"
"  uploads show ID    one upload\n"
"  uploads cancel ID  terminate an upload and remove its spool file\n"
"  backup             a consistent online backup (--output FILE|DIR, --keep N with a\n"
"                     DIR, --encrypt file:PATH|env:NAME, --include-uploads: the spool\n"
"                     files of live uploads too); quiet on success\n"
"  backup verify ARCHIVE  check an archive offline: format, row counts, table hashes\n"
"  restore ARCHIVE    load an archive (of either driver) into an empty database, in one\n"
"                     transaction, verified before commit (--dry-run, --replace;\n"
"                     --upload-dir D receives the archive's spool files)\n"
"  copy               copy the database to --to-driver D --to-params P (verified;\n"
"                     --include-uploads --upload-dir D: live uploads' spool files to D)\n"
"  cleanup            remove what has expired: uploads (spool files and rows), idle MCP\n"
"                     and chat sessions, Gemini file records, and what is past its\n"
"                     retention (GeminiMCP*Retention: usage rolled up per day, audit,\n"
"                     events) (--dry-run reports only; one run at a time; quiet on success)\n"
"\n"
"Options:\n"
"  -f, --config FILE  httpd configuration to read DBDriver/DBDParams from (without\n"
"                     -f, -d and -p: " GMCP_DEFAULT_CONFIG " if it exists)\n"
"  -d, --driver NAME  database driver: sqlite3 or pgsql (instead of --config)\n"
"  -p, --params STR   driver parameters, as DBDParams (instead of --config)\n"
"  -s, --sql-dir DIR  migrations directory (default " GMCP_SQL_DIR ")\n"
"  -j, --json         machine-readable output\n"
"  -F, --format FMT   export format of 'sessions export': json, text or markdown\n"
"  -o, --owner NAME   only this principal's sessions\n"
"      --upload-dir D  spool directory (default: the configuration's GeminiMCPUploadDir)\n"
"  -k, --pepper SRC   file:PATH or env:NAME of the key-hashing secret (default: the\n"
"                     configuration's GeminiMCPKeyPepper)\n"
"  -v, --verbose      report what was done, and print the core's own log lines\n"
"                     (database, disk and upstream details: gmcpctl: TAG: message) on\n"
"                     stderr; without -v a failure is the one line gmcpctl prints\n"
"  -h, --help         this text\n"
"  -V, --version      print the version\n"
"\n"
"Environment: GMCP_SQL_DIR overrides the default migrations directory.\n"
"Options that belong to some commands (--name, --grace, --since, --format, ...) are\n"
"refused on the others. DATE is YYYY-MM-DD[THH:MM[:SS]Z] (UTC, a real calendar day);\n"
"durations are N with s, m, h or d, at most 100 years.\n"
"Errors are one line on stderr (a database's message included, never its password).\n"
"Exit status: 0 success, 1 the operation failed (or 'migrate status' found drift),\n"
"2 usage error.\n", out);
}

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
        for (e = s + 8; *e == ' ' || *e == '\t'; e++) ;
        if (*e != '=') continue;
        for (e++; *e == ' ' || *e == '\t'; e++) ;
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
    for (s = msg; *s; ) {
        if (*s == '\n' || *s == '\r') {
            while (o > out && (o[-1] == ' ' || o[-1] == '\t')) o--;
            while (*s == '\n' || *s == '\r' || *s == ' ' || *s == '\t') s++;
            if (*s && o > out) { *o++ = ';'; *o++ = ' '; }
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

const char *opt(ctl *c, int code)
{
    return apr_table_get(c->opts, apr_itoa(c->pool, code));
}

/* The core's log (gmcp_errlog.h): printed only with --verbose, so that without it a
 * failure is the one line gmcpctl prints itself. */
static void elog_print(const char *file, int line, gmcp_elog_level level, apr_status_t rv,
                       const char *tag, const char *msg, void *baton)
{
    char buf[4096], err[256];
    (void)file; (void)line; (void)level; (void)baton;
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
            return fail("%s has no DBDriver and DBDParams (give --driver and --params)",
                        c->config);
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
            return fail("cannot open the database: %s", apr_pstrcat(c->pool, c->params, ": ",
                        err ? err : "unknown error", NULL));
        return fail("cannot open the database: %s", err ? err : "unknown error");
    }
    gmcp_db_init(&c->db, drv, handle, apr_hash_make(c->pool), c->pool);
    /* Run next to a busy server: wait for its writers rather than fail. */
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
    if ((rv = open_db(c, 0)) != 0) { json_decref(arr); return rv; }
    if (gmcp_migrations_load(c->pool, c->sql_dir, sql_subdir(c->driver), &migs, &err)
        || gmcp_migrate_inspect(&c->db, migs, &missing, &err)) {
        json_decref(arr);
        return fail("%s", err);
    }
    for (i = 0; i < migs->nelts + missing->nelts; i++) {
        gmcp_migration *m = i < migs->nelts ? &APR_ARRAY_IDX(migs, i, gmcp_migration)
                          : &APR_ARRAY_IDX(missing, i - migs->nelts, gmcp_migration);
        int drifted = m->applied && !m->missing && strcmp(m->applied_checksum, m->checksum);
        const char *state = m->missing ? "missing" : !m->applied ? "pending"
                          : drifted ? "drift" : "applied";
        if (!m->applied) pending++;
        if (drifted || m->missing) drift++;
        if (c->json) {
            json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:b}", "version", m->version,
                                  "name", m->name, "state", state, "checksum", m->checksum,
                                  "down", m->down_sql != NULL);
            if (m->applied) json_object_set_new(o, "applied_at", json_integer(m->applied_at));
            if (drifted)
                json_object_set_new(o, "applied_checksum", json_string(m->applied_checksum));
            json_array_append_new(arr, o);
        }
        else {
            char when[APR_RFC822_DATE_LEN] = "-";
            if (m->applied) apr_rfc822_date(when, apr_time_from_sec(m->applied_at));
            printf("%04d  %-32s %-9s %s%s\n", m->version, m->name, state, when,
                   drifted ? "  (file modified after it was applied)"
                   : m->missing ? "  (applied, but no file in the migrations directory)" : "");
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
        return fail("%s", apr_psprintf(c->pool, "schema drift: %d applied migration(s) no "
                                       "longer match their file (restore the original)", drift));
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
    for (s = to; *s >= '0' && *s <= '9'; s++) ;
    if (!*to || *s || s - to > 6)
        return usage_err("--to '%s' must be a version number (0 or more)", to);
    target = atoi(to);
    if ((rv = open_db(c, 0)) != 0) return rv;
    if (gmcp_migrations_load(c->pool, c->sql_dir, sql_subdir(c->driver), &migs, &err))
        return fail("%s", err);
    if (gmcp_db_schema_version(&c->db, &current, &err))
        return fail("cannot read the schema version: %s", err);
    if (target > current)
        return usage_err("%s", apr_psprintf(c->pool, "--to %d is above the schema's version "
                                            "(%d): nothing to roll back", target, current));
    if (target < current
        && gmcp_migrate_down(&c->db, migs, target, opt(c, OPT_FORCE) != NULL, actor(c->pool),
                             &done, &refused, &audited, &err))
        return fail("%s", err);
    if (c->json) {
        json_t *arr = json_array(), *o;
        for (i = 0; done && i < done->nelts; i++)
            json_array_append_new(arr, json_string(APR_ARRAY_IDX(done, i, const char *)));
        o = json_pack("{s:o, s:i, s:i, s:b}", "rolled_back", arr, "from", current,
                      "version", target, "audited", audited);
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
    int rv;
    if (!id) return usage_err("a session id is required%s", "");
    if ((rv = open_db(c, 0)) != 0) return rv;
    rv = gmcp_chat_get(&c->db, id, c->owner, 0, s);
    if (rv == GMCP_NOT_FOUND) return fail("no chat session '%s'", id);
    if (rv) return fail("cannot read the chat store: %s", gmcp_db_error(&c->db, -1));
    return 0;
}

static int cmd_sessions(ctl *c, const char *sub, const char *id)
{
    gmcp_chat_session s;
    apr_array_header_t *list, *msgs;
    int rv, i;
    if (!strcmp(sub, "list")) {
        json_t *arr = json_array();
        if ((rv = open_db(c, 0)) != 0) { json_decref(arr); return rv; }
        if (gmcp_chat_list(&c->db, c->owner, 0, 0, 100000, &list)) {
            json_decref(arr);
            return fail("cannot read the chat store: %s", gmcp_db_error(&c->db, -1));
        }
        for (i = 0; i < list->nelts; i++) {
            gmcp_chat_session *x = &APR_ARRAY_IDX(list, i, gmcp_chat_session);
            if (c->json) {
                json_t *o = gmcp_chat_session_json(x);
                json_object_set_new(o, "owner", json_string(x->owner));
                json_array_append_new(arr, o);
            }
            else {
                printf("%-26s %-16s %-18s %5" APR_INT64_T_FMT "  %s  %s\n", x->id, x->owner,
                       x->model, x->message_count, iso(c->pool, x->last_used), x->title);
            }
        }
        if (c->json) { json_dumpf(arr, stdout, JSON_COMPACT); fputc('\n', stdout); }
        json_decref(arr);
        return 0;
    }
    if (!strcmp(sub, "show")) {
        json_t *o;
        if ((rv = need_session(c, id, &s)) != 0) return rv;
        o = gmcp_chat_session_json(&s);
        json_object_set_new(o, "owner", json_string(s.owner));
        json_dumpf(o, stdout, c->json ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
        return 0;
    }
    if (!strcmp(sub, "export")) {
        const char *fmt = c->format ? c->format : (c->json ? "json" : "markdown"), *out;
        if ((rv = need_session(c, id, &s)) != 0) return rv;
        if (gmcp_chat_messages(&c->db, s.id, 0, 1000000, &msgs))
            return fail("cannot read the chat store: %s", gmcp_db_error(&c->db, -1));
        if (!(out = gmcp_chat_export(c->pool, &s, msgs, fmt)))
            return usage_err("--format '%s' must be json, text or markdown", fmt);
        fputs(out, stdout);
        return 0;
    }
    if (!strcmp(sub, "delete")) {
        if ((rv = need_session(c, id, &s)) != 0) return rv;
        if (gmcp_chat_delete(&c->db, s.id, NULL) != GMCP_FOUND)
            return fail("cannot delete chat session '%s'", s.id);
        if (gmcp_audit(&c->db, actor(c->pool), "session.delete", "",
                       apr_pstrcat(c->pool, s.id, " owner=", s.owner, NULL)))
            return fail("deleted, but could not write the audit log: %s",
                        gmcp_db_error(&c->db, -1));
        if (c->verbose) printf("deleted %s\n", s.id);
        return 0;
    }
    return usage_err("unknown command 'sessions %s'", sub);
}

/* The commands: operand count after the subcommand (0: none, 1: an id). */
static const struct { const char *cmd, *sub; int id; } CMDS[] = {
    {"migrate", NULL, 0}, {"migrate", "status", 0}, {"migrate", "down", 0},
    {"sessions", "list", 0}, {"sessions", "show", 1}, {"sessions", "export", 1},
    {"sessions", "delete", 1},
    {"keys", "create", 0}, {"keys", "list", 0}, {"keys", "show", 1}, {"keys", "revoke", 1},
    {"keys", "rotate", 1}, {"keys", "update", 1},
    {"usage", NULL, 0}, {"audit", NULL, 0}, {"cleanup", NULL, 0},
    {"backup", NULL, 0}, {"backup", "verify", 1}, {"restore", NULL, 1}, {"copy", NULL, 0},
    {"uploads", "list", 0}, {"uploads", "show", 1}, {"uploads", "cancel", 1},
    {NULL, NULL, 0}
};

/* Options that belong to some commands only ("cmd sub" or "cmd"); the rest
 * (-f -d -p -s -j -k -v) apply everywhere. */
static const struct { int code; const char *name; const char *const cmds[6]; } OPT_USE[] = {
    {'F', "--format", {"sessions export"}},
    {'o', "--owner", {"sessions list", "sessions show", "sessions export", "sessions delete",
                      "uploads list", "uploads show"}},
    {OPT_NAME, "--name", {"keys create", "keys update"}},
    {OPT_TENANT, "--tenant", {"keys create", "keys update"}},
    {OPT_SCOPES, "--scopes", {"keys create", "keys update"}},
    {OPT_RATE, "--rate", {"keys create", "keys update"}},
    {OPT_BURST, "--burst", {"keys create", "keys update"}},
    {OPT_TOKEN_RATE, "--token-rate", {"keys create", "keys update"}},
    {OPT_TOKEN_QUOTA, "--token-quota", {"keys create", "keys update"}},
    {OPT_MAX_INFLIGHT, "--max-inflight", {"keys create", "keys update"}},
    {OPT_EXPIRES, "--expires", {"keys create", "keys update"}},
    {OPT_USER, "--user", {"keys create", "keys update"}},
    {OPT_GRACE, "--grace", {"keys rotate"}},
    {OPT_KEY, "--key", {"usage"}},
    {OPT_SINCE, "--since", {"usage", "audit"}},
    {OPT_UPLOAD_DIR, "--upload-dir", {"uploads cancel", "cleanup", "backup", "restore", "copy"}},
    {OPT_INCLUDE_UPLOADS, "--include-uploads", {"backup", "copy"}},
    {OPT_OUTPUT, "--output", {"backup"}},
    {OPT_KEEP, "--keep", {"backup"}},
    {OPT_ENCRYPT, "--encrypt", {"backup", "backup verify", "restore"}},
    {OPT_REPLACE, "--replace", {"restore", "copy"}},
    {OPT_TO_DRIVER, "--to-driver", {"copy"}},
    {OPT_TO_PARAMS, "--to-params", {"copy"}},
    {OPT_DRY_RUN, "--dry-run", {"restore", "cleanup"}},
    {OPT_TO, "--to", {"migrate down"}},
    {OPT_FORCE, "--force", {"migrate down"}},
    {0, NULL, {NULL}}
};

/* Checks the command line's shape before anything is opened; 0 or EXIT_USAGE. */
static int check_command(ctl *c, const char *cmd, const char *sub, int nargs, int *which)
{
    const char *full, *subs = NULL;
    int i, j, known = 0, bare = 0;
    for (i = 0; CMDS[i].cmd; i++) {
        if (strcmp(CMDS[i].cmd, cmd)) continue;
        known = 1;
        if (!CMDS[i].sub) bare = 1;
        else subs = subs ? apr_pstrcat(c->pool, subs, ", ", CMDS[i].sub, NULL) : CMDS[i].sub;
    }
    if (!known) return usage_err("unknown command '%s'", cmd);
    if (!sub && !bare)
        return usage_err("%s", apr_psprintf(c->pool, "'%s' needs a subcommand: %s", cmd, subs));
    for (i = 0; CMDS[i].cmd; i++)
        if (!strcmp(CMDS[i].cmd, cmd) && (sub ? CMDS[i].sub && !strcmp(CMDS[i].sub, sub)
                                              : !CMDS[i].sub))
            break;
    if (!CMDS[i].cmd) {
        if (!subs) return usage_err("%s", apr_psprintf(c->pool, "'%s' takes no argument, "
                                                       "not '%s'", cmd, sub));
        return usage_err("%s", apr_psprintf(c->pool, "unknown command '%s %s'; %s takes: %s",
                                            cmd, sub, cmd, subs));
    }
    full = sub ? apr_pstrcat(c->pool, cmd, " ", sub, NULL) : cmd;
    if (CMDS[i].id && nargs - (sub ? 2 : 1) < 1)
        return usage_err("%s", apr_psprintf(c->pool, "'%s' needs an ID", full));
    if (nargs - (sub ? 2 : 1) > CMDS[i].id)
        return usage_err("%s", apr_psprintf(c->pool, CMDS[i].id ? "too many arguments for '%s'"
                                            : "'%s' takes no argument", full));
    for (j = 0; OPT_USE[j].name; j++) {
        int k, given = OPT_USE[j].code == 'F' ? c->format != NULL
                     : OPT_USE[j].code == 'o' ? c->owner != NULL
                     : opt(c, OPT_USE[j].code) != NULL;
        if (!given) continue;
        for (k = 0; k < 6 && OPT_USE[j].cmds[k]; k++)
            if (!strcmp(OPT_USE[j].cmds[k], full)) break;
        if (k == 6 || !OPT_USE[j].cmds[k])
            return usage_err("%s", apr_psprintf(c->pool, "%s does not apply to '%s'",
                                                OPT_USE[j].name, full));
    }
    if (c->format && strcmp(c->format, "json") && strcmp(c->format, "text")
        && strcmp(c->format, "markdown"))
        return usage_err("--format '%s' must be json, text or markdown", c->format);
    *which = i;
    return 0;
}

int main(int argc, const char *const *argv)
{
    static const apr_getopt_option_t opts[] = {
        {"config", 'f', 1, "httpd configuration file"},
        {"driver", 'd', 1, "database driver"},
        {"params", 'p', 1, "database parameters"},
        {"sql-dir", 's', 1, "migrations directory"},
        {"json", 'j', 0, "JSON output"},
        {"format", 'F', 1, "export format"},
        {"owner", 'o', 1, "owner"},
        {"pepper", 'k', 1, "key pepper source"},
        {"name", OPT_NAME, 1, "key name"},
        {"tenant", OPT_TENANT, 1, "tenant"},
        {"scopes", OPT_SCOPES, 1, "scopes"},
        {"rate", OPT_RATE, 1, "request rate"},
        {"burst", OPT_BURST, 1, "burst"},
        {"token-rate", OPT_TOKEN_RATE, 1, "token rate"},
        {"token-quota", OPT_TOKEN_QUOTA, 1, "token quota"},
        {"max-inflight", OPT_MAX_INFLIGHT, 1, "in-flight cap"},
        {"expires", OPT_EXPIRES, 1, "expiry"},
        {"user", OPT_USER, 1, "apache user"},
        {"grace", OPT_GRACE, 1, "rotation grace"},
        {"key", OPT_KEY, 1, "key id"},
        {"since", OPT_SINCE, 1, "since"},
        {"upload-dir", OPT_UPLOAD_DIR, 1, "spool directory"},
        {"dry-run", OPT_DRY_RUN, 0, "report only"},
        {"output", OPT_OUTPUT, 1, "backup file or directory"},
        {"keep", OPT_KEEP, 1, "backups to keep"},
        {"encrypt", OPT_ENCRYPT, 1, "archive key source"},
        {"replace", OPT_REPLACE, 0, "overwrite a non-empty target"},
        {"include-uploads", OPT_INCLUDE_UPLOADS, 0, "spool files of live uploads"},
        {"to-driver", OPT_TO_DRIVER, 1, "copy target driver"},
        {"to-params", OPT_TO_PARAMS, 1, "copy target parameters"},
        {"to", OPT_TO, 1, "target schema version"},
        {"force", OPT_FORCE, 0, "drop data"},
        {"verbose", 'v', 0, "verbose"},
        {"help", 'h', 0, "help"},
        {"version", 'V', 0, "version"},
        {NULL, 0, 0, NULL}
    };
    apr_getopt_t *g;
    ctl c;
    int optch, rv, which = 0, nargs;
    const char *optarg, *cmd, *sub, *id;

    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS) return EXIT_FAIL;
    atexit(apr_terminate);
    memset(&c, 0, sizeof(c));
    apr_pool_create(&c.pool, NULL);
    msg_pool = c.pool;
    gmcp_elog_set(elog_print, elog_enabled, &c);
    c.opts = apr_table_make(c.pool, 8);
    c.sql_dir = getenv("GMCP_SQL_DIR") ? getenv("GMCP_SQL_DIR") : GMCP_SQL_DIR;
    apr_getopt_init(&g, c.pool, argc, argv);
    g->interleave = 1;
    g->errfn = NULL;
    while ((rv = apr_getopt_long(g, opts, &optch, &optarg)) == APR_SUCCESS) {
        switch (optch) {
        case 'f': c.config = optarg; break;
        case 'd': c.driver = optarg; break;
        case 'p': c.params = optarg; break;
        case 's': c.sql_dir = optarg; break;
        case 'j': c.json = 1; break;
        case 'F': c.format = optarg; break;
        case 'o': c.owner = optarg; break;
        case 'k': c.pepper = optarg; break;
        case 'v': c.verbose = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("gmcpctl %s (schema version %d)\n", GMCP_VERSION, GMCP_SCHEMA_VERSION);
                  return 0;
        default:
            if (optch >= OPT_NAME)
                apr_table_set(c.opts, apr_itoa(c.pool, optch), optarg ? optarg : "1");
            break;
        }
    }
    if (rv != APR_EOF) {
        const char *what = g->ind > 0 && g->ind <= argc ? g->argv[g->ind - 1] : "?";
        if (rv == APR_BADARG)
            return usage_err("option '%s' needs a value", what);
        return usage_err("unknown option '%s'", what);
    }
    /* With interleaving, apr_getopt moves the operands to the end of its own argv. */
    nargs = argc - g->ind;
    cmd = nargs > 0 ? g->argv[g->ind] : NULL;
    sub = nargs > 1 ? g->argv[g->ind + 1] : NULL;
    if (!cmd) {
        usage(stderr);
        return EXIT_USAGE;
    }
    /* "migrate" alone is a command; so are "usage", "audit" and "cleanup". */
    /* "restore ARCHIVE": the operand follows the command directly. */
    if ((rv = check_command(&c, cmd, strcmp(cmd, "restore") ? sub : NULL, nargs, &which)) != 0)
        return rv;
    if (!CMDS[which].sub) sub = NULL;
    id = CMDS[which].id && nargs > 2 ? g->argv[g->ind + 2] : NULL;
    if (!strcmp(cmd, "restore")) id = nargs > 1 ? g->argv[g->ind + 1] : NULL;
    if (!c.config && !c.driver && !c.params) {
        apr_finfo_t fi;
        if (apr_stat(&fi, GMCP_DEFAULT_CONFIG, APR_FINFO_TYPE, c.pool) == APR_SUCCESS) {
            c.config = GMCP_DEFAULT_CONFIG;
            config_is_default = 1;
        }
    }
    /* gmcpctl uses each connection from one thread: no per-call connection mutex (it
     * was 7 % of a backup's CPU). Must come before SQLite initialises. */
    sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    if (apr_dbd_init(c.pool) != APR_SUCCESS) return fail("%s", "cannot initialise APR DBD");
    if (!strcmp(cmd, "migrate")) rv = !sub ? cmd_migrate(&c) : !strcmp(sub, "down")
                                      ? cmd_migrate_down(&c) : cmd_migrate_status(&c);
    else if (!strcmp(cmd, "sessions")) rv = cmd_sessions(&c, sub, id);
    else if (!strcmp(cmd, "keys")) rv = cmd_keys(&c, sub, id);
    else if (!strcmp(cmd, "usage")) rv = cmd_usage(&c);
    else if (!strcmp(cmd, "uploads")) rv = cmd_uploads(&c, sub, id);
    else if (!strcmp(cmd, "cleanup")) rv = cmd_cleanup(&c);
    else if (!strcmp(cmd, "backup")) rv = sub ? cmd_backup_verify(&c, id) : cmd_backup(&c);
    else if (!strcmp(cmd, "restore")) rv = cmd_restore(&c, id);
    else if (!strcmp(cmd, "copy")) rv = cmd_copy(&c);
    else rv = cmd_audit(&c);
    /* The drivers register no cleanup of their own: close before the pool goes. */
    if (c.db.handle) apr_dbd_close(c.db.driver, c.db.handle);
    return rv;
}
