/* httpd_conf.c — a small reader for the parts of httpd.conf gmcpctl needs. */
#include "httpd_conf.h"

#include <ctype.h>
#include <glob.h>
#include <string.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#define MAX_DEPTH 16

/* As httpd: a directive given twice in the main server's configuration takes its last
 * value (an Include read later overrides a default read earlier). Inside <VirtualHost>
 * a value belongs to that host: it is used only when the main server has none (the
 * first such). */
typedef struct {
    apr_pool_t *p;
    const char *server_root;
    gmcp_httpd_dbd *out;
    gmcp_httpd_dbd vhost; /* what <VirtualHost> sections set */
    int in_vhost;         /* depth of <VirtualHost> at the line being read */
    const char *err;
} reader;

/* `*field = v` for the main server (last wins); in a <VirtualHost>, the first. */
static void take(reader *rd, const char **main_field, const char **vhost_field, const char *v)
{
    const char **f = rd->in_vhost ? vhost_field : main_field;
    if (!rd->in_vhost || !*f) *f = apr_pstrdup(rd->p, v);
}

static int read_file(reader *rd, const char *path, int optional, int depth);

/* Strip one pair of surrounding quotes, honouring backslash escapes inside them. */
static const char *unquote(apr_pool_t *p, const char *s)
{
    size_t n = strlen(s);
    const char *in, *end;
    char *out, *d;
    if (n < 2 || (s[0] != '"' && s[0] != '\'') || s[n - 1] != s[0]) return s;
    out = d = apr_palloc(p, n);
    for (in = s + 1, end = s + n - 1; in < end; in++) {
        if (*in == '\\' && in + 1 < end) in++;
        *d++ = *in;
    }
    *d = '\0';
    return out;
}

static const char *resolve(reader *rd, const char *path)
{
    if (path[0] == '/' || !rd->server_root) return path;
    return apr_pstrcat(rd->p, rd->server_root, "/", path, NULL);
}

/* A file, or (as httpd does) every file of a directory, recursively, in name
 * order; glob() already sorts its matches. */
static int include_path(reader *rd, const char *path, int optional, int depth)
{
    apr_finfo_t fi;
    glob_t g;
    size_t i;
    int rv;
    if (apr_stat(&fi, path, APR_FINFO_TYPE, rd->p) != APR_SUCCESS || fi.filetype != APR_DIR)
        return read_file(rd, path, optional, depth);
    if (depth > MAX_DEPTH) {
        rd->err = apr_psprintf(rd->p, "%s: Include nested too deeply", path);
        return -1;
    }
    rv = glob(apr_pstrcat(rd->p, path, "/*", NULL), 0, NULL, &g);
    if (rv != 0 && rv != GLOB_NOMATCH) {
        globfree(&g);
        rd->err = apr_psprintf(rd->p, "Include %s: cannot list the directory", path);
        return -1;
    }
    for (i = 0; rv == 0 && i < g.gl_pathc; i++) {
        if (include_path(rd, g.gl_pathv[i], optional, depth + 1)) {
            globfree(&g);
            return -1;
        }
    }
    globfree(&g);
    return 0;
}

static int do_include(reader *rd, const char *arg, int optional, int depth)
{
    glob_t g;
    size_t i;
    const char *pattern = resolve(rd, unquote(rd->p, arg));
    int rv = glob(pattern, 0, NULL, &g);
    if (rv == GLOB_NOMATCH) {
        globfree(&g);
        if (optional || strpbrk(pattern, "*?[")) return 0;
        rd->err = apr_psprintf(rd->p, "Include %s: no such file", pattern);
        return -1;
    }
    if (rv != 0) {
        rd->err = apr_psprintf(rd->p, "Include %s: cannot expand", pattern);
        return -1;
    }
    for (i = 0; i < g.gl_pathc; i++) {
        if (include_path(rd, g.gl_pathv[i], optional, depth + 1)) {
            globfree(&g);
            return -1;
        }
    }
    globfree(&g);
    return 0;
}

static int handle_line(reader *rd, const char *file, int lineno, char *line, int depth)
{
    char *dir = line, *arg;
    while (isspace((unsigned char)*dir)) dir++;
    if (!strncasecmp(dir, "<VirtualHost", 12)) rd->in_vhost++;
    if (!strncasecmp(dir, "</VirtualHost", 13) && rd->in_vhost) rd->in_vhost--;
    if (!*dir || *dir == '#' || *dir == '<') return 0;
    arg = dir;
    while (*arg && !isspace((unsigned char)*arg)) arg++;
    if (*arg) *arg++ = '\0';
    while (isspace((unsigned char)*arg)) arg++;
    { /* trim trailing space */
        char *e = arg + strlen(arg);
        while (e > arg && isspace((unsigned char)e[-1])) *--e = '\0';
    }
    if (!strcasecmp(dir, "ServerRoot") && !rd->in_vhost) {
        rd->server_root = apr_pstrdup(rd->p, unquote(rd->p, arg));
    }
    else if (!strcasecmp(dir, "Include") || !strcasecmp(dir, "IncludeOptional")) {
        return do_include(rd, arg, !strcasecmp(dir, "IncludeOptional"), depth);
    }
    else if (!strcasecmp(dir, "DBDriver")) {
        take(rd, &rd->out->driver, &rd->vhost.driver, unquote(rd->p, arg));
    }
    else if (!strcasecmp(dir, "DBDParams")) {
        const char **where = rd->in_vhost ? &rd->vhost.where : &rd->out->where;
        if (!rd->in_vhost || !*where) *where = apr_psprintf(rd->p, "%s:%d", file, lineno);
        take(rd, &rd->out->params, &rd->vhost.params, unquote(rd->p, arg));
    }
    if (!strncasecmp(dir, "GeminiMCP", 9)) {
        apr_table_t *t = rd->in_vhost ? rd->vhost.gmcp : rd->out->gmcp;
        if (!rd->in_vhost || !apr_table_get(t, dir)) apr_table_set(t, dir, unquote(rd->p, arg));
    }
    if (!strcasecmp(dir, "GeminiMCPKeyPepper"))
        take(rd, &rd->out->key_pepper, &rd->vhost.key_pepper, unquote(rd->p, arg));
    return 0;
}

/* The main server's values, then what only a <VirtualHost> set. */
static int merge_vhost(void *data, const char *key, const char *value)
{
    apr_table_t *main = data;
    if (!apr_table_get(main, key)) apr_table_set(main, key, value);
    return 1;
}

static int read_file(reader *rd, const char *path, int optional, int depth)
{
    apr_file_t *f;
    char buf[8192];
    char *logical = NULL;
    int lineno = 0, start_line = 0;
    if (depth > MAX_DEPTH) {
        rd->err = apr_psprintf(rd->p, "%s: Include nested too deeply", path);
        return -1;
    }
    if (apr_file_open(&f, path, APR_FOPEN_READ, 0, rd->p) != APR_SUCCESS) {
        if (optional) return 0;
        rd->err = apr_psprintf(rd->p, "cannot read httpd configuration %s", path);
        return -1;
    }
    while (apr_file_gets(buf, sizeof(buf), f) == APR_SUCCESS) {
        size_t n = strlen(buf);
        lineno++;
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
        if (!logical) start_line = lineno;
        /* A trailing backslash continues the directive on the next line. */
        if (n && buf[n - 1] == '\\') {
            buf[n - 1] = ' ';
            logical = logical ? apr_pstrcat(rd->p, logical, buf, NULL) : apr_pstrdup(rd->p, buf);
            continue;
        }
        logical = logical ? apr_pstrcat(rd->p, logical, buf, NULL) : apr_pstrdup(rd->p, buf);
        if (handle_line(rd, path, start_line, logical, depth)) {
            apr_file_close(f);
            return -1;
        }
        logical = NULL;
    }
    apr_file_close(f);
    return 0;
}

int gmcp_httpd_conf_dbd(apr_pool_t *p, const char *path, gmcp_httpd_dbd *out, const char **err)
{
    reader rd;
    memset(out, 0, sizeof(*out));
    out->gmcp = apr_table_make(p, 8);
    memset(&rd, 0, sizeof(rd));
    rd.p = p;
    rd.out = out;
    /* Relative Include paths resolve against ServerRoot, which defaults to the
     * directory of the main file when not set before them. */
    {
        const char *slash = strrchr(path, '/');
        rd.server_root = slash ? apr_pstrndup(p, path, (apr_size_t)(slash - path)) : ".";
    }
    rd.vhost.gmcp = apr_table_make(p, 8);
    if (read_file(&rd, path, 0, 0)) {
        *err = rd.err;
        return -1;
    }
    if (!out->driver) out->driver = rd.vhost.driver;
    if (!out->params) {
        out->params = rd.vhost.params;
        out->where = rd.vhost.where;
    }
    if (!out->key_pepper) out->key_pepper = rd.vhost.key_pepper;
    apr_table_do(merge_vhost, out->gmcp, rd.vhost.gmcp, NULL);
    return 0;
}
