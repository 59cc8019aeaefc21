/* fuzz_httpd_conf — gmcpctl's reader of httpd configuration (gmcp_httpd_conf_dbd):
 * continuation lines, quoting, ServerRoot, Include/IncludeOptional globs, DBDriver,
 * DBDParams and GeminiMCP* directives. The input is written to httpd.conf in a private
 * directory (on /dev/shm when it exists) once per input.
 *
 * Kept hermetic: inputs that could make Include reach outside that directory (a '/',
 * "..", or ServerRoot together with Include) are skipped, and so are inputs with more
 * than one Include (each may include the file itself: the expansion is exponential
 * in the nesting limit, which is the configuration's author's own problem). */
#include "httpd_conf.h"

#include <strings.h>
#include <unistd.h>

#define FUZZ_SETUP setup
#include "fuzz.h"

static char *dir, *conf;

static void cleanup(void)
{
    unlink(conf);
    rmdir(dir);
}

static void setup(apr_pool_t *root)
{
    /* tmpfs when there is one: rewriting a file on ext4 costs milliseconds per input. */
    dir = apr_pstrdup(root, "/dev/shm/gmcp-fuzz-conf-XXXXXX");
    if (!mkdtemp(dir)) {
        dir = apr_pstrdup(root, "/tmp/gmcp-fuzz-conf-XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    conf = apr_pstrcat(root, dir, "/httpd.conf", NULL);
    atexit(cleanup);
}

/* Over all the bytes: the reader goes on past a NUL in a line. */
static size_t count_ci(const uint8_t *d, size_t size, const char *word)
{
    size_t n = 0, wl = strlen(word), i;
    for (i = 0; i + wl <= size; i++)
        if (!strncasecmp((const char *)d + i, word, wl)) n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *err = NULL;
    gmcp_httpd_dbd out;
    FILE *f;
    size_t includes;
    includes = count_ci(data, size, "include");
    if (includes
        && (memchr(data, '/', size) || count_ci(data, size, "..")
            || count_ci(data, size, "serverroot") || includes > 1))
        return 0;
    p = fuzz_pool();
    if (!(f = fopen(conf, "wb")) || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    if (gmcp_httpd_conf_dbd(p, conf, &out, &err) == 0) {
        FUZZ_ASSERT(out.gmcp);
        FUZZ_ASSERT(!out.params || out.where);
    }
    else
        FUZZ_ASSERT(err);
    apr_pool_destroy(p);
    return 0;
}
