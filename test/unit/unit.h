/* unit.h — a tiny test runner for the httpd-free core. Prints the plain
 * "N passed, N failed" closing line. */
#ifndef GMCP_UNIT_H
#define GMCP_UNIT_H

#include <stdio.h>
#include <string.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_file_io.h>
#include <apr_strings.h>

static int unit_passed, unit_failed;
static const char *unit_current;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (cond)                                                                              \
            unit_passed++;                                                                     \
        else {                                                                                 \
            unit_failed++;                                                                     \
            fprintf(stderr, "FAIL %s (%s:%d): %s\n", unit_current, __FILE__, __LINE__, #cond); \
        }                                                                                      \
    } while (0)

#define CHECK_STR(a, b)                                                                          \
    do {                                                                                         \
        const char *a_ = (a), *b_ = (b);                                                         \
        if (a_ && b_ && !strcmp(a_, b_))                                                         \
            unit_passed++;                                                                       \
        else {                                                                                   \
            unit_failed++;                                                                       \
            fprintf(stderr, "FAIL %s (%s:%d): '%s' != '%s'\n", unit_current, __FILE__, __LINE__, \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                     \
        }                                                                                        \
    } while (0)

/* Remove a test's SQLite database (with its WAL files) and its directory. */
static inline void unit_remove_db(apr_pool_t *p, const char *dir, const char *name)
{
    static const char *const suffix[] = {"", "-wal", "-shm", NULL};
    int i;
    for (i = 0; suffix[i]; i++) apr_file_remove(apr_pstrcat(p, dir, "/", name, suffix[i], NULL), p);
    apr_dir_remove(dir, p);
}

#define RUN(fn)             \
    do {                    \
        unit_current = #fn; \
        fn(pool);           \
    } while (0)

#define UNIT_MAIN(name, body)                                                 \
    int main(int argc, const char *const *argv)                               \
    {                                                                         \
        apr_pool_t *pool;                                                     \
        apr_app_initialize(&argc, &argv, NULL);                               \
        apr_pool_create(&pool, NULL);                                         \
        body apr_pool_destroy(pool);                                          \
        apr_terminate();                                                      \
        printf("%s: %d passed, %d failed\n", name, unit_passed, unit_failed); \
        return unit_failed ? 1 : 0;                                           \
    }

#endif
