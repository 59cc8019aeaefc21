/* gmcp_scopes.c — OAuth scopes onto tool patterns (gmcp_scopes.h). */
#include "gmcp_scopes.h"
#include "gmcp_keys.h"

#include <apr_strings.h>
#include <string.h>

apr_array_header_t *gmcp_scopes_default(apr_pool_t *p)
{
    static const gmcp_scope_def D[] = {
        {"gemini", "*"},
        {"gemini:generate",
         "gemini_generate gemini_count_tokens gemini_embed gemini_list_models gemini_usage"},
        {"gemini:chat", "gemini_chat_*"},
        {"gemini:files", "gemini_upload_file gemini_file_*"}};
    apr_array_header_t *a = apr_array_make(p, 4, sizeof(gmcp_scope_def));
    size_t i;
    for (i = 0; i < sizeof(D) / sizeof(D[0]); i++) APR_ARRAY_PUSH(a, gmcp_scope_def) = D[i];
    return a;
}

int gmcp_scope_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0, i;
    if (!n || n > 128) return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '"'
            || s[i] == '\\')
            return 0;
    return 1;
}

int gmcp_scope_covers(const char *granted, const char *scope)
{
    size_t n = strlen(granted);
    return !strcmp(granted, scope) || (n && !strncmp(granted, scope, n) && scope[n] == ':');
}

/* Does any of the space-separated granted scopes cover `scope`? */
static int any_covers(apr_pool_t *p, const char *granted, const char *scope)
{
    char *list = apr_pstrdup(p, granted), *last = NULL, *g;
    for (g = apr_strtok(list, " ", &last); g; g = apr_strtok(NULL, " ", &last))
        if (gmcp_scope_covers(g, scope)) return 1;
    return 0;
}

const char *gmcp_scopes_tools(apr_pool_t *p, const apr_array_header_t *defs, const char *granted)
{
    const char *out = "";
    int i;
    for (i = 0; granted && i < defs->nelts; i++) {
        const gmcp_scope_def *d = &APR_ARRAY_IDX(defs, i, gmcp_scope_def);
        if (*d->tools && any_covers(p, granted, d->name))
            out = apr_pstrcat(p, out, *out ? " " : "", d->tools, NULL);
    }
    return out;
}

static int depth(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == ':';
    return n;
}

const char *gmcp_scopes_needed(apr_pool_t *p, const apr_array_header_t *defs, const char *tool)
{
    const char *best = NULL;
    int i;
    for (i = 0; i < defs->nelts; i++) {
        const gmcp_scope_def *d = &APR_ARRAY_IDX(defs, i, gmcp_scope_def);
        if (*d->tools && gmcp_scope_allows(p, d->tools, tool)
            && (!best || depth(d->name) > depth(best)))
            best = d->name;
    }
    return best;
}

const char *gmcp_scopes_roots(apr_pool_t *p, const apr_array_header_t *defs)
{
    const char *out = "";
    int i, j;
    for (i = 0; i < defs->nelts; i++) {
        const char *name = APR_ARRAY_IDX(defs, i, gmcp_scope_def).name;
        for (j = 0; j < defs->nelts; j++)
            if (j != i && gmcp_scope_covers(APR_ARRAY_IDX(defs, j, gmcp_scope_def).name, name)
                && strcmp(APR_ARRAY_IDX(defs, j, gmcp_scope_def).name, name))
                break;
        if (j == defs->nelts) out = apr_pstrcat(p, out, *out ? " " : "", name, NULL);
    }
    return out;
}
