/* joblock.c — one gmcpctl job at a time per database (cleanup, backup, restore, copy).
 *
 * PostgreSQL: a session advisory lock (GMCPCTL_JOB_LOCK_KEY, gmcpctl.h); SQLite: an flock
 * on "<database file>.cleanup-lock". Both go away with the process, so a killed job never
 * blocks the next one. */
#include "gmcpctl.h"

#include <string.h>
#include <apr_strings.h>

int joblock_take(ctl *c, gmcpctl_joblock *l)
{
    memset(l, 0, sizeof(*l));
    l->c = c;
    if (c->db.pgsql) {
        gmcp_rows rs;
        if (gmcp_db_select_raw(&c->db, "SELECT pg_try_advisory_lock(" GMCPCTL_JOB_LOCK_KEY ")", &rs)
            || rs.rows->nelts != 1)
            return fail("cannot take the gmcpctl job lock%s", "");
        if (GMCP_ROW(&rs, 0)[0][0] != 't')
            return fail("another gmcpctl job (cleanup, backup or restore) is running on this "
                        "database (lock held)%s",
                        "");
        l->held = 1;
        return 0;
    }
    if (apr_file_open(&l->f, apr_pstrcat(c->pool, c->params, ".cleanup-lock", NULL),
                      APR_FOPEN_WRITE | APR_FOPEN_CREATE, APR_FPROT_UREAD | APR_FPROT_UWRITE,
                      c->pool)
        != APR_SUCCESS)
        return fail("cannot take the gmcpctl job lock%s", "");
    if (apr_file_lock(l->f, APR_FLOCK_EXCLUSIVE | APR_FLOCK_NONBLOCK) != APR_SUCCESS) {
        apr_file_close(l->f);
        l->f = NULL;
        return fail("another gmcpctl job (cleanup, backup or restore) is running on this "
                    "database (lock held)%s",
                    "");
    }
    l->held = 1;
    return 0;
}

void joblock_release(gmcpctl_joblock *l)
{
    if (!l->held) return;
    if (l->c->db.pgsql) {
        gmcp_rows rs;
        gmcp_db_select_raw(&l->c->db, "SELECT pg_advisory_unlock(" GMCPCTL_JOB_LOCK_KEY ")", &rs);
    }
    if (l->f) apr_file_close(l->f);
    l->held = 0;
}
