/* mod_gemini_mcp_tailsync.c — see mod_gemini_mcp_tailsync.h.
 *
 * The waiting tails are a fixed array under one mutex, each entry holding copies of
 * its strings (entries outlive the request that queued them; a string too long for
 * its field is a tail the PATCH syncs itself). The thread copies the due entries out
 * under the mutex and syncs them outside it, so a PATCH queueing a tail never waits for
 * a disk. */
#include "mod_gemini_mcp_tailsync.h"
#include "mod_gemini_mcp_child_thread.h"
#include "mod_gemini_mcp_config.h"
#include "mod_gemini_mcp_db.h"
#include "gmcp_uploads.h"

#include <http_log.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <string.h>

#define TAILSYNC_MAX 64

typedef struct {
    server_rec *s; /* NULL: a free entry */
    char id[64];
    char path[1024];
    char state[512]; /* the hash state, as gmcp_sha256_save writes it */
    apr_int64_t offset;
    apr_time_t due;
} tail;

static gmcp_child_thread g_syncer; /* its mutex guards g_tails */
static tail g_tails[TAILSYNC_MAX];

/* (locked) Put a tail in the entry of the same upload or the first free one. */
static int put(server_rec *s, const char *id, const char *path, apr_int64_t offset,
               const char *state, apr_time_t due)
{
    tail *t = NULL;
    int i;
    if (strlen(id) >= sizeof(t->id) || strlen(path) >= sizeof(t->path)
        || strlen(state) >= sizeof(t->state))
        return -1;
    for (i = 0; i < TAILSYNC_MAX; i++) {
        if (g_tails[i].s && !strcmp(g_tails[i].id, id)) {
            t = &g_tails[i];
            break;
        }
        if (!g_tails[i].s && !t) t = &g_tails[i];
    }
    if (!t) return -1;
    if (t->s && t->due < due) due = t->due; /* the older tail's time holds */
    t->s = s;
    apr_cpystrn(t->id, id, sizeof(t->id));
    apr_cpystrn(t->path, path, sizeof(t->path));
    apr_cpystrn(t->state, state, sizeof(t->state));
    t->offset = offset;
    t->due = due;
    apr_thread_cond_signal(g_syncer.cv);
    return 0;
}

int gmcp_tailsync_later(server_rec *s, const char *id, const char *path, apr_int64_t offset,
                        const char *state, apr_interval_time_t within)
{
    int rc;
    if (!g_syncer.mu) return -1;
    apr_thread_mutex_lock(g_syncer.mu);
    rc = g_syncer.stop ? -1 : put(s, id, path, offset, state, apr_time_now() + within);
    apr_thread_mutex_unlock(g_syncer.mu);
    return rc;
}

/* Sync one tail and record what came of it. */
static void sync_tail(const tail *t)
{
    apr_pool_t *p;
    apr_file_t *f;
    ap_dbd_t *dbd;
    gmcp_db db;
    const char *err;
    apr_status_t rv;
    if (apr_pool_create(&p, NULL) != APR_SUCCESS) return;
    rv = apr_file_open(&f, t->path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (APR_STATUS_IS_ENOENT(rv)) {
        /* Removed meanwhile (terminated, expired, a part concatenated): nothing to keep. */
        apr_pool_destroy(p);
        return;
    }
    if (rv == APR_SUCCESS) {
        rv = apr_file_datasync(f);
        apr_file_close(f);
    }
    if (rv != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, t->s,
                     GMCP_LOGNO(0170) "gemini_mcp: upload %s: could not sync its spool file %s "
                                      "up to %" APR_INT64_T_FMT
                                      ": the upload goes on from its last durable point",
                     t->id, t->path, t->offset);
    if (!(dbd = gmcp_db_open_server(t->s, p, &db, &err))
        || (rv == APR_SUCCESS ? gmcp_upload_tail_synced(&db, t->id, t->offset, t->state)
                              : gmcp_upload_tail_failed(&db, t->id, t->offset))
            != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, t->s,
                     GMCP_LOGNO(0171) "gemini_mcp: upload %s: could not record its tail's sync "
                                      "(%s); it still counts while this machine runs",
                     t->id, dbd ? "the statement failed" : err);
    gmcp_db_close_server(t->s, dbd);
    apr_pool_destroy(p);
}

/* (locked) Take the tails due by `now` (all of them when stopping) into `out`. */
static int take_due(tail *out, apr_time_t now, apr_time_t *next)
{
    int i, n = 0;
    *next = 0;
    for (i = 0; i < TAILSYNC_MAX; i++) {
        tail *t = &g_tails[i];
        if (!t->s) continue;
        if (g_syncer.stop || t->due <= now) {
            out[n++] = *t;
            t->s = NULL;
        }
        else if (!*next || t->due < *next) {
            *next = t->due;
        }
    }
    return n;
}

static void *APR_THREAD_FUNC syncer(apr_thread_t *th, void *data)
{
    static tail due[TAILSYNC_MAX]; /* this thread's only */
    (void)th;
    (void)data;
    apr_thread_mutex_lock(g_syncer.mu);
    for (;;) {
        apr_time_t next;
        int i, n = take_due(due, apr_time_now(), &next);
        if (n) {
            apr_thread_mutex_unlock(g_syncer.mu);
            for (i = 0; i < n; i++) sync_tail(&due[i]);
            apr_thread_mutex_lock(g_syncer.mu);
            continue;
        }
        if (g_syncer.stop) break;
        if (next)
            apr_thread_cond_timedwait(g_syncer.cv, g_syncer.mu, next - apr_time_now());
        else
            apr_thread_cond_wait(g_syncer.cv, g_syncer.mu);
    }
    apr_thread_mutex_unlock(g_syncer.mu);
    return NULL;
}

void gmcp_tailsync_child_init(apr_pool_t *pchild, server_rec *s)
{
    /* Its end (the child's) syncs what still waits. */
    if (gmcp_child_thread_start(&g_syncer, pchild, syncer) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     GMCP_LOGNO(0172) "gemini_mcp: cannot start the thread that syncs upload "
                                      "tails: interval-mode PATCHes sync before answering");
}
