/* gmcp_sqlite_rw.c — a VFS that is SQLite's default one, minus the read-only fallback. */
#include "gmcp_sqlite_rw.h"

#include <string.h>
#include <sqlite3.h>
#include <apr_strings.h>

#define RW_VFS_NAME "gmcp-rw"

static sqlite3_vfs rw_vfs;
static const apr_array_header_t *guarded; /* our database files; read-only once set */

/* Is `name` (SQLite passes full paths) one of our databases, or its WAL? */
static int is_ours(const char *name)
{
    int i;
    if (!name || !guarded) return 0;
    for (i = 0; i < guarded->nelts; i++) {
        const char *g = APR_ARRAY_IDX(guarded, i, const char *);
        size_t n = strlen(g);
        if (!strncmp(name, g, n) && (!name[n] || !strcmp(name + n, "-wal"))) return 1;
    }
    return 0;
}

static int rw_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                   int *out_flags)
{
    sqlite3_vfs *base = vfs->pAppData;
    int got = 0;
    int rc = base->xOpen(base, name, file, flags, &got);
    if (out_flags) *out_flags = got;
    if (rc != SQLITE_OK) return rc;
    /* The database or its WAL asked for read-write and fell back to read-only. */
    if ((flags & SQLITE_OPEN_READWRITE) && (got & SQLITE_OPEN_READONLY)
        && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)) && is_ours(name)) {
        if (file->pMethods) file->pMethods->xClose(file);
        file->pMethods = NULL;
        return SQLITE_READONLY;
    }
    return SQLITE_OK;
}

static apr_status_t unregister(void *data)
{
    sqlite3_vfs_unregister(data);
    rw_vfs.xOpen = NULL;
    guarded = NULL;
    return APR_SUCCESS;
}

apr_status_t gmcp_sqlite_rw_only(apr_pool_t *p, const apr_array_header_t *paths)
{
    sqlite3_vfs *base;
    guarded = paths;
    if (rw_vfs.xOpen) return APR_SUCCESS;
    base = sqlite3_vfs_find(NULL);
    if (!base) return APR_EGENERAL;
    rw_vfs = *base;
    rw_vfs.zName = RW_VFS_NAME;
    rw_vfs.pAppData = base;
    rw_vfs.pNext = NULL;
    rw_vfs.xOpen = rw_open;
    if (sqlite3_vfs_register(&rw_vfs, 1) != SQLITE_OK) {
        rw_vfs.xOpen = NULL;
        return APR_EGENERAL;
    }
    apr_pool_cleanup_register(p, &rw_vfs, unregister, apr_pool_cleanup_null);
    return APR_SUCCESS;
}
