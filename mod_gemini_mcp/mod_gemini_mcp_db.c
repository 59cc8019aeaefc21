/* mod_gemini_mcp_db.c — every database section of a request, through one holder.
 *
 * mod_dbd's ap_dbd_open() hands out a pooled connection that only ap_dbd_close() gives
 * back; a return path that forgets the close keeps it for good, and after DBDMax such
 * requests every request that needs the database waits forever. So no glue code calls
 * ap_dbd_open itself: it makes a gmcp_dbh from the request pool, whose cleanup gives
 * back a connection still held when the request ends, whatever path it took. Sections
 * stay short (never across an upstream call or a wait): close as soon as done. */
#include "mod_gemini_mcp_db.h"

#include <apr_optional.h>

static APR_OPTIONAL_FN_TYPE(ap_dbd_open) * dbd_open_fn;
static APR_OPTIONAL_FN_TYPE(ap_dbd_close) * dbd_close_fn;

static apr_time_t last_db_complaint;
static int last_db_behind = -1;

static apr_status_t dbh_release(void *data)
{
    gmcp_dbh_close(data);
    return APR_SUCCESS;
}

gmcp_dbh *gmcp_dbh_make(request_rec *r)
{
    gmcp_dbh *h = apr_pcalloc(r->pool, sizeof(*h));
    h->r = r;
    apr_pool_cleanup_register(r->pool, h, dbh_release, apr_pool_cleanup_null);
    return h;
}

static void find_mod_dbd(void)
{
    if (!dbd_open_fn) {
        dbd_open_fn = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
        dbd_close_fn = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    }
}

ap_dbd_t *gmcp_db_open_server(server_rec *s, apr_pool_t *p, gmcp_db *db, const char **err)
{
    int behind = 0;
    ap_dbd_t *dbd;
    *err = NULL;
    find_mod_dbd();
    if (!dbd_open_fn || !(dbd = dbd_open_fn(p, s))) return NULL;
    gmcp_db_init(db, dbd->driver, dbd->handle, dbd->prepared, p);
    if (gmcp_db_ready(db, err, &behind) != APR_SUCCESS) {
        if (!*err) *err = "the database is unavailable";
        dbd_close_fn(s, dbd);
        return NULL;
    }
    return dbd;
}

void gmcp_db_close_server(server_rec *s, ap_dbd_t *dbd)
{
    if (dbd) dbd_close_fn(s, dbd);
}

int gmcp_dbh_open_raw(gmcp_dbh *h)
{
    request_rec *r = h->r;
    if (h->dbd) return 0;
    find_mod_dbd();
    if (!dbd_open_fn || !(h->dbd = dbd_open_fn(r->pool, r->server))) {
        ap_log_rerror(
            APLOG_MARK, APLOG_ERR, 0, r,
            GMCP_LOGNO(0110) "gemini_mcp: no database connection (is mod_dbd loaded and "
                             "DBDriver/DBDParams set for this server, and is the database up?)");
        return -1;
    }
    gmcp_db_init(&h->db, h->dbd->driver, h->dbd->handle, h->dbd->prepared, r->pool);
    return 0;
}

int gmcp_dbh_open(gmcp_dbh *h, const char **why)
{
    const char *err = NULL;
    int behind = 0;
    if (h->dbd) return 0;
    *why = "the database is unavailable";
    if (gmcp_dbh_open_raw(h)) return -1;
    if (gmcp_db_ready(&h->db, &err, &behind)) {
        apr_time_t now = apr_time_now();
        /* Say it clearly, but not on every request of a busy server (a change of
         * reason is always reported). */
        if (now - last_db_complaint > apr_time_from_sec(10) || behind != last_db_behind) {
            last_db_complaint = now;
            last_db_behind = behind;
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, h->r,
                          GMCP_LOGNO(0111) "gemini_mcp: refusing to serve: %s", err);
        }
        if (behind) *why = "the database schema is older than this server needs";
        gmcp_dbh_close(h);
        return -1;
    }
    return 0;
}

void gmcp_dbh_close(gmcp_dbh *h)
{
    if (h->dbd) {
        dbd_close_fn(h->r->server, h->dbd);
        h->dbd = NULL;
    }
}
