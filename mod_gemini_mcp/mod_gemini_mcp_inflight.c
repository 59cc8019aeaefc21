/* mod_gemini_mcp_inflight.c — see mod_gemini_mcp_inflight.h.
 *
 * Each slot a request of this child holds is on one list; a request's pool cleanup
 * takes it off and deletes its row, so no return path can keep a slot. The renewing
 * thread copies the list under the mutex and renews outside it: a slot given back in
 * between is simply not found (an UPDATE never brings a row back). */
#include "mod_gemini_mcp_inflight.h"
#include "mod_gemini_mcp_child_thread.h"
#include "mod_gemini_mcp_db.h"
#include "gmcp_lease.h"
#include "gmcp_shared_limits.h"
#include "gmcp_util.h"

#include <http_log.h>
#include <apr_optional.h>
#include <apr_strings.h>

/* How long a slot stays held without renewal, and how often its holder renews it. */
#define INFLIGHT_TTL 30
#define RENEW_EVERY apr_time_from_sec(10)
#define USERDATA "gmcp-inflight"

typedef struct held {
    struct held *prev, *next;
    const char *key_id, *holder;
    int slot;
} held;

static gmcp_child_thread g_renewer; /* its mutex guards g_list */
static held g_list = {&g_list, &g_list, NULL, NULL, 0};
static server_rec *g_server;

static apr_status_t give_back(void *data)
{
    held *h = data;
    apr_pool_t *p;
    ap_dbd_t *dbd;
    gmcp_db db;
    const char *err;
    apr_thread_mutex_lock(g_renewer.mu);
    h->prev->next = h->next;
    h->next->prev = h->prev;
    apr_thread_mutex_unlock(g_renewer.mu);
    if (apr_pool_create(&p, NULL) != APR_SUCCESS) return APR_SUCCESS;
    if (!(dbd = gmcp_db_open_server(g_server, p, &db, &err))
        || gmcp_inflight_release(&db, h->key_id, h->slot, h->holder))
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, g_server,
                     GMCP_LOGNO(0160) "gemini_mcp: could not give back an in-flight slot of key "
                                      "%s: it frees itself within %d s",
                     h->key_id, INFLIGHT_TTL);
    gmcp_db_close_server(g_server, dbd);
    apr_pool_destroy(p);
    return APR_SUCCESS;
}

int gmcp_inflight_enter(request_rec *r, const char *key_id, apr_int64_t max)
{
    gmcp_dbh *dh = gmcp_dbh_make(r);
    const char *holder = gmcp_lease_token(r->pool), *why;
    apr_int64_t now = gmcp_now_sec();
    held *h;
    int slot = 0;
    apr_status_t rv;
    if (!g_renewer.mu || !holder || gmcp_dbh_open(dh, &why)) return -1;
    rv = gmcp_inflight_acquire(&dh->db, key_id, max, holder, now, now + INFLIGHT_TTL, &slot);
    gmcp_dbh_close(dh);
    if (rv == APR_EBUSY) return 1;
    if (rv != APR_SUCCESS) return -1;
    h = apr_pcalloc(r->pool, sizeof(*h));
    h->key_id = key_id;
    h->holder = holder;
    h->slot = slot;
    apr_thread_mutex_lock(g_renewer.mu);
    h->next = g_list.next;
    h->prev = &g_list;
    g_list.next->prev = h;
    g_list.next = h;
    apr_thread_mutex_unlock(g_renewer.mu);
    apr_pool_cleanup_register(r->pool, h, give_back, apr_pool_cleanup_null);
    apr_pool_userdata_setn(h, USERDATA, NULL, r->pool);
    return 0;
}

void gmcp_inflight_leave(request_rec *r)
{
    void *h = NULL;
    apr_pool_userdata_get(&h, USERDATA, r->pool);
    if (!h) return;
    apr_pool_userdata_setn(NULL, USERDATA, NULL, r->pool);
    apr_pool_cleanup_run(r->pool, h, give_back);
}

/* Renew every slot in `slots` (copies of the list's entries). */
static void renew_all(apr_pool_t *p, const apr_array_header_t *slots)
{
    gmcp_db db;
    const char *err;
    ap_dbd_t *dbd = gmcp_db_open_server(g_server, p, &db, &err);
    apr_int64_t until = gmcp_now_sec() + INFLIGHT_TTL;
    int i;
    if (!dbd) return; /* retried at the next round; the slots expire if it lasts */
    for (i = 0; i < slots->nelts; i++) {
        const held *h = &APR_ARRAY_IDX(slots, i, held);
        if (gmcp_inflight_renew(&db, h->key_id, h->slot, h->holder, until) == APR_ENOENT)
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, g_server,
                         GMCP_LOGNO(0161) "gemini_mcp: in-flight slot %d of key %s was given "
                                          "back or taken over after it expired",
                         h->slot, h->key_id);
    }
    gmcp_db_close_server(g_server, dbd);
}

static void *APR_THREAD_FUNC renewer(apr_thread_t *t, void *data)
{
    (void)t;
    (void)data;
    apr_thread_mutex_lock(g_renewer.mu);
    while (!g_renewer.stop) {
        apr_pool_t *p;
        apr_array_header_t *slots;
        held *h;
        apr_thread_cond_timedwait(g_renewer.cv, g_renewer.mu, RENEW_EVERY);
        if (g_renewer.stop || g_list.next == &g_list) continue;
        if (apr_pool_create(&p, NULL) != APR_SUCCESS) continue;
        slots = apr_array_make(p, 8, sizeof(held));
        for (h = g_list.next; h != &g_list; h = h->next) {
            held *c = apr_array_push(slots);
            c->key_id = apr_pstrdup(p, h->key_id);
            c->holder = apr_pstrdup(p, h->holder);
            c->slot = h->slot;
        }
        apr_thread_mutex_unlock(g_renewer.mu);
        renew_all(p, slots);
        apr_pool_destroy(p);
        apr_thread_mutex_lock(g_renewer.mu);
    }
    apr_thread_mutex_unlock(g_renewer.mu);
    return NULL; /* not apr_thread_exit(): see gmcp_child_thread_start */
}

void gmcp_inflight_child_init(apr_pool_t *pchild, server_rec *s)
{
    g_server = s;
    if (gmcp_child_thread_start(&g_renewer, pchild, renewer) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     GMCP_LOGNO(0162) "gemini_mcp: cannot start the thread that renews in-flight "
                                      "slots: requests of keys with max_inflight get 503");
}
