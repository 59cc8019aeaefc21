/* gmcp_sniff.c — see gmcp_sniff.h. */
#include "gmcp_sniff.h"

#include <apr_lib.h>
#include <apr_strings.h>
#include <magic.h>
#include <string.h>

const char *gmcp_sniff(apr_pool_t *p, const void *data, apr_size_t len)
{
    /* A magic_t is not thread-safe and loading the compiled database maps one file:
     * cheap enough once per upload. */
    magic_t m =
        magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR | MAGIC_NO_CHECK_COMPRESS | MAGIC_NO_CHECK_ELF);
    const char *type, *out = NULL;
    if (!m) return NULL;
    if (magic_load(m, NULL) == 0 && (type = magic_buffer(m, data, len)) != NULL)
        out = apr_pstrdup(p, type);
    magic_close(m);
    return out;
}

/* Lowercase type without parameters, with the common aliases folded. */
static const char *canon(apr_pool_t *p, const char *t)
{
    static const char *const alias[][2] = {
        {"image/jpg", "image/jpeg"},
        {"image/pjpeg", "image/jpeg"},
        {"image/x-png", "image/png"},
        {"image/x-ms-bmp", "image/bmp"},
        {"image/x-bmp", "image/bmp"},
        {"image/x-icon", "image/vnd.microsoft.icon"},
        {"application/x-pdf", "application/pdf"},
    };
    char *c = apr_pstrdup(p, t), *semi = strchr(c, ';'), *e;
    apr_size_t i;
    if (semi) *semi = '\0';
    for (e = c; *e; e++) *e = (char)apr_tolower(*e);
    while (e > c && apr_isspace(e[-1])) *--e = '\0';
    while (apr_isspace(*c)) c++;
    for (i = 0; i < sizeof(alias) / sizeof(alias[0]); i++)
        if (!strcmp(c, alias[i][0])) return alias[i][1];
    return c;
}

static int top_is(const char *t, const char *top)
{
    apr_size_t n = strlen(top);
    return !strncmp(t, top, n) && t[n] == '/';
}

int gmcp_sniff_conflict(const char *declared, const char *sniffed)
{
    apr_pool_t *p;
    const char *d, *s;
    int conflict = 0;
    if (!declared || !*declared || !sniffed || !*sniffed) return 0;
    if (apr_pool_create(&p, NULL) != APR_SUCCESS) return 0;
    d = canon(p, declared);
    s = canon(p, sniffed);
    if (!strcmp(d, "application/octet-stream")) {
        conflict = 0; /* "some bytes" claims nothing; random data can look like MP3 */
    }
    else if (!strcmp(s, "image/svg+xml")) {
        conflict = 0; /* text (XML): declared as anything textual is fine */
    }
    else if (top_is(s, "image") || !strcmp(s, "application/pdf")) {
        conflict = strcmp(d, s) != 0;
    }
    else if (top_is(s, "audio") || top_is(s, "video")) {
        /* MP4/M4A/QuickTime/Ogg hold either: only the top level is checked, and audio
         * against video passes. */
        conflict = !top_is(d, "audio") && !top_is(d, "video");
    }
    apr_pool_destroy(p);
    return conflict;
}
