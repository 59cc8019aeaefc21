/* gmcpctl.h — what the command files of gmcpctl share. */
#ifndef GMCPCTL_H
#define GMCPCTL_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_file_io.h>
#include "gmcp_db.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Long-only options (codes above any character). */
enum {
    OPT_NAME = 256,
    OPT_TENANT,
    OPT_SCOPES,
    OPT_RATE,
    OPT_BURST,
    OPT_TOKEN_RATE,
    OPT_TOKEN_QUOTA,
    OPT_MAX_INFLIGHT,
    OPT_EXPIRES,
    OPT_USER,
    OPT_SUBJECT,
    OPT_GRACE,
    OPT_KEY,
    OPT_SINCE,
    OPT_UPLOAD_DIR,
    OPT_DRY_RUN,
    /* migrate down */
    OPT_TO,
    OPT_FORCE,
    /* backup, restore, copy */
    OPT_OUTPUT,
    OPT_KEEP,
    OPT_ENCRYPT,
    OPT_INCLUDE_UPLOADS,
    OPT_REPLACE,
    OPT_TO_DRIVER,
    OPT_TO_PARAMS
};

typedef struct {
    apr_pool_t *pool;
    const char *config;
    const char *driver;
    const char *params;
    const char *sql_dir;
    const char *pepper; /* GeminiMCPKeyPepper source */
    int verbose;
    int json;
    const char *format;
    const char *owner;
    apr_table_t *opts;       /* long-only options by apr_itoa(code) */
    apr_table_t *httpd_gmcp; /* GeminiMCP* directives of --config, when read */
    gmcp_db db;
} ctl;

/* A message on stderr ("gmcpctl: " + fmt with one %s), returning the exit code:
 * EXIT_FAIL for failures, EXIT_USAGE for wrong use. */
int fail(const char *fmt, const char *a);
int usage_err(const char *fmt, const char *a);
/* A long-only option's value (OPT_*), NULL when not given. */
const char *opt(ctl *c, int code);
int open_db(ctl *c, int may_create);
const char *iso(apr_pool_t *p, apr_int64_t sec);
/* Who runs gmcpctl, for the audit log ("gmcpctl:<login>"). */
const char *actor(apr_pool_t *p);

/* The PostgreSQL advisory lock key of the job lock: any 64-bit number no other
 * application on the database uses; this one spells nothing. It must differ from the
 * migrations' lock (GMCP_MIGRATE_LOCK_KEY "727071", gmcp_migrate.h): a job and a migration
 * each take their own. */
#define GMCPCTL_JOB_LOCK_KEY "727170001"

/* The job lock (joblock.c): 0 when taken; otherwise the exit code, with one line said
 * (another job holds it, or it cannot be taken). */
typedef struct {
    ctl *c;
    int held;
    apr_file_t *f;
} gmcpctl_joblock;
int joblock_take(ctl *c, gmcpctl_joblock *l);
void joblock_release(gmcpctl_joblock *l);

/* The commands: each is one entry of the command table (gmcpctl.c), which has checked
 * the command line's shape before the call; `id` (or `path`) is the command's operand.
 * 0, or the exit code with one line said. */
/* access.c */
int cmd_keys_create(ctl *c);
int cmd_keys_list(ctl *c);
int cmd_keys_show(ctl *c, const char *id);
int cmd_keys_revoke(ctl *c, const char *id);
int cmd_keys_rotate(ctl *c, const char *id);
int cmd_keys_update(ctl *c, const char *id);
int cmd_usage(ctl *c);
int cmd_audit(ctl *c);
/* uploads.c */
int cmd_uploads_list(ctl *c);
int cmd_uploads_show(ctl *c, const char *id);
int cmd_uploads_cancel(ctl *c, const char *id);
int cmd_cleanup(ctl *c);
/* backup.c */
int cmd_backup(ctl *c);
int cmd_backup_verify(ctl *c, const char *path);
int cmd_restore(ctl *c, const char *path);
int cmd_copy(ctl *c);

#endif
