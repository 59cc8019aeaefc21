/* Unit tests for gmcp_sqlite_rw: our database is never opened read-only behind our back;
 * another database of the same process keeps SQLite's read-only fallback. Needs root and
 * a filesystem with `chattr +i` (skipped otherwise). */
#include "unit.h"
#include "gmcp_sqlite_rw.h"

#include <stdlib.h>
#include <unistd.h>
#include <limits.h>
#include <sqlite3.h>
#include <apr_tables.h>

static char dir[] = "/tmp/gmcp-unit-rw-XXXXXX";

static int make_db(const char *path)
{
    sqlite3 *d;
    int rc = sqlite3_open(path, &d) == SQLITE_OK
        && sqlite3_exec(d, "CREATE TABLE t (x)", NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(d);
    return rc;
}

/* rc of opening `path` for writing; *ro: whether it came out read-only. */
static int open_rw(const char *path, int *ro)
{
    sqlite3 *d = NULL;
    int rc = sqlite3_open_v2(path, &d, SQLITE_OPEN_READWRITE, NULL);
    *ro = rc == SQLITE_OK ? sqlite3_db_readonly(d, "main") : -1;
    sqlite3_close(d);
    return rc;
}

static int chattr(const char *flag, const char *a, const char *b)
{
    char cmd[PATH_MAX * 2 + 64];
    snprintf(cmd, sizeof(cmd), "chattr %s '%s' '%s' 2>/dev/null", flag, a, b);
    return system(cmd) == 0;
}

static void t_ours_refused_others_fall_back(apr_pool_t *p)
{
    apr_pool_t *conf;
    apr_array_header_t *paths;
    const char *ours, *other;
    char real[PATH_MAX];
    int ro = 0;
    CHECK(mkdtemp(dir) != NULL);
    ours = apr_pstrcat(p, dir, "/ours.db", NULL);
    other = apr_pstrcat(p, dir, "/other.db", NULL);
    CHECK(make_db(ours) && make_db(other));
    apr_pool_create(&conf, p);
    paths = apr_array_make(conf, 1, sizeof(const char *));
    APR_ARRAY_PUSH(paths, const char *) = realpath(ours, real) ? apr_pstrdup(conf, real) : ours;
    CHECK(gmcp_sqlite_rw_only(conf, paths) == APR_SUCCESS);
    CHECK(gmcp_sqlite_rw_only(conf, paths) == APR_SUCCESS); /* idempotent */
    CHECK(sqlite3_vfs_find("gmcp-rw") == sqlite3_vfs_find(NULL));
    if (geteuid() != 0 || !chattr("+i", ours, other)) {
        printf("sqlite_rw: chattr +i unavailable (not root, or the filesystem): skipped\n");
    }
    else {
        CHECK(open_rw(ours, &ro) == SQLITE_READONLY);
        CHECK(open_rw(other, &ro) == SQLITE_OK && ro == 1);
        CHECK(chattr("-i", ours, other));
        CHECK(open_rw(ours, &ro) == SQLITE_OK && ro == 0);
    }
    apr_pool_destroy(conf); /* unregistered with its pool */
    CHECK(sqlite3_vfs_find("gmcp-rw") == NULL);
    CHECK(open_rw(ours, &ro) == SQLITE_OK && ro == 0);
    unlink(ours);
    unlink(other);
    rmdir(dir);
}

UNIT_MAIN("sqlite_rw", { RUN(t_ours_refused_others_fall_back); })
