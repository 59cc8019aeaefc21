/* gmcp_registry.c — merge provider tables into listings, validated once. */
#include "gmcp_registry.h"

#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

int gmcp_tool_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0, i;
    if (n < 1 || n > 64) return 0;
    for (i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
              || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static apr_status_t json_cleanup(void *j)
{
    json_decref((json_t *)j);
    return APR_SUCCESS;
}

static json_t *pool_json(apr_pool_t *p, json_t *j)
{
    if (j) apr_pool_cleanup_register(p, j, json_cleanup, apr_pool_cleanup_null);
    return j;
}

/* Parse an embedded JSON text; NULL text gives NULL without error. APR_SUCCESS, or
 * APR_EINVAL with *why. */
static apr_status_t parse_def(apr_pool_t *p, const char *text, const char *what, const char *name,
                              json_t **out, const char **why)
{
    json_error_t je;
    *out = NULL;
    if (!text) return APR_SUCCESS;
    *out = json_loads(text, 0, &je);
    if (!*out) {
        *why = apr_psprintf(p, "%s of '%s' is not valid JSON: %s", what, name, je.text);
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

static void set_opt(json_t *o, const char *key, const char *val)
{
    if (val) json_object_set_new(o, key, json_string(val));
}

/* Each add_* takes a provider's definitions of one kind: APR_SUCCESS, APR_EEXIST for a
 * name defined already, APR_EINVAL for a definition that is incomplete or does not parse;
 * *why says which. */
static apr_status_t add_tools(apr_pool_t *p, gmcp_registry *r, const gmcp_provider *prov,
                              const char **why)
{
    const gmcp_tool *t;
    json_t *schema = NULL, *out_schema = NULL, *ann = NULL;
    apr_status_t rv = APR_SUCCESS;
    for (t = prov->tools; t && t->name; t++) {
        gmcp_tool_entry *e;
        json_t *l;
        if (!gmcp_tool_name_valid(t->name)) {
            *why = apr_psprintf(p,
                                "provider '%s': tool name '%s' is not 1-64 characters "
                                "of [A-Za-z0-9_.-]",
                                prov->name, t->name);
            rv = APR_EINVAL;
            goto leave;
        }
        if (gmcp_registry_tool(r, t->name)) {
            *why =
                apr_psprintf(p, "provider '%s': tool '%s' is already defined", prov->name, t->name);
            rv = APR_EEXIST;
            goto leave;
        }
        if (!t->input_schema || !t->description || !t->call) {
            *why = apr_psprintf(p,
                                "provider '%s': tool '%s' needs a description, an input "
                                "schema and a function",
                                prov->name, t->name);
            rv = APR_EINVAL;
            goto leave;
        }
        if ((rv = parse_def(p, t->input_schema, "input schema", t->name, &schema, why))
            || (rv = parse_def(p, t->output_schema, "output schema", t->name, &out_schema, why))
            || (rv = parse_def(p, t->annotations, "annotations", t->name, &ann, why)))
            goto leave;
        l = json_pack("{s:s, s:s, s:o}", "name", t->name, "description", t->description,
                      "inputSchema", schema);
        set_opt(l, "title", t->title);
        if (out_schema) json_object_set_new(l, "outputSchema", out_schema);
        if (ann) json_object_set_new(l, "annotations", ann);
        schema = out_schema = ann = NULL; /* the listing has them */
        e = apr_array_push(r->tools);
        e->provider = prov;
        e->def = t;
        e->listing = pool_json(p, l);
    }
leave:
    json_decref(schema);
    json_decref(out_schema);
    json_decref(ann);
    return rv;
}

static json_t *resource_listing(const char *key, const char *uri, const char *name,
                                const char *title, const char *desc, const char *mime)
{
    json_t *l = json_pack("{s:s, s:s}", key, uri, "name", name);
    set_opt(l, "title", title);
    set_opt(l, "description", desc);
    set_opt(l, "mimeType", mime);
    return l;
}

static apr_status_t add_resources(apr_pool_t *p, gmcp_registry *r, const gmcp_provider *prov,
                                  const char **why)
{
    const gmcp_resource *res;
    for (res = prov->resources; res && res->uri; res++) {
        gmcp_resource_entry *e = apr_array_push(r->resources);
        if (!res->name || !res->read) {
            *why = apr_psprintf(p, "provider '%s': resource '%s' needs a name and a reader",
                                prov->name, res->uri);
            return APR_EINVAL;
        }
        e->provider = prov;
        e->def = res;
        e->listing = pool_json(p,
                               resource_listing("uri", res->uri, res->name, res->title,
                                                res->description, res->mime_type));
    }
    return APR_SUCCESS;
}

static apr_status_t add_templates(apr_pool_t *p, gmcp_registry *r, const gmcp_provider *prov,
                                  const char **why)
{
    const gmcp_resource_template *tpl;
    for (tpl = prov->templates; tpl && tpl->uri_template; tpl++) {
        gmcp_template_entry *e = apr_array_push(r->templates);
        if (!tpl->name || !tpl->read) {
            *why = apr_psprintf(p, "provider '%s': template '%s' needs a name and a reader",
                                prov->name, tpl->uri_template);
            return APR_EINVAL;
        }
        e->provider = prov;
        e->def = tpl;
        e->listing = pool_json(p,
                               resource_listing("uriTemplate", tpl->uri_template, tpl->name,
                                                tpl->title, tpl->description, tpl->mime_type));
    }
    return APR_SUCCESS;
}

static apr_status_t add_prompts(apr_pool_t *p, gmcp_registry *r, const gmcp_provider *prov,
                                const char **why)
{
    const gmcp_prompt *pr;
    for (pr = prov->prompts; pr && pr->name; pr++) {
        gmcp_prompt_entry *e;
        json_t *args, *l;
        apr_status_t rv;
        if (!pr->get || !pr->description) {
            *why = apr_psprintf(p,
                                "provider '%s': prompt '%s' needs a description and "
                                "a function",
                                prov->name, pr->name);
            return APR_EINVAL;
        }
        if (gmcp_registry_prompt(r, pr->name)) {
            *why = apr_psprintf(p, "provider '%s': prompt '%s' is already defined", prov->name,
                                pr->name);
            return APR_EEXIST;
        }
        if ((rv = parse_def(p, pr->arguments, "arguments", pr->name, &args, why)) != APR_SUCCESS)
            return rv;
        l = json_pack("{s:s, s:s}", "name", pr->name, "description", pr->description);
        set_opt(l, "title", pr->title);
        if (args) json_object_set_new(l, "arguments", args);
        e = apr_array_push(r->prompts);
        e->provider = prov;
        e->def = pr;
        e->listing = pool_json(p, l);
    }
    return APR_SUCCESS;
}

gmcp_registry *gmcp_registry_create(apr_pool_t *p, const gmcp_provider *const *providers, int n,
                                    const char **why)
{
    gmcp_registry *r = apr_pcalloc(p, sizeof(*r));
    apr_thread_mutex_t *lock = NULL;
    int i;
    if (apr_thread_mutex_create(&lock, APR_THREAD_MUTEX_DEFAULT, p) != APR_SUCCESS) {
        *why = "cannot create a mutex";
        return NULL;
    }
    r->pool = p;
    r->page_lock = lock;
    r->pages = apr_hash_make(p);
    r->providers = apr_array_make(p, n ? n : 1, sizeof(const gmcp_provider *));
    r->tools = apr_array_make(p, 16, sizeof(gmcp_tool_entry));
    r->resources = apr_array_make(p, 8, sizeof(gmcp_resource_entry));
    r->templates = apr_array_make(p, 4, sizeof(gmcp_template_entry));
    r->prompts = apr_array_make(p, 8, sizeof(gmcp_prompt_entry));
    /* Provider by provider, in order (listings keep it); a tool or prompt name that
     * is defined twice is an error. */
    for (i = 0; i < n; i++) {
        const gmcp_provider *prov = providers[i];
        APR_ARRAY_PUSH(r->providers, const gmcp_provider *) = prov;
        if (add_tools(p, r, prov, why) != APR_SUCCESS
            || add_resources(p, r, prov, why) != APR_SUCCESS
            || add_templates(p, r, prov, why) != APR_SUCCESS
            || add_prompts(p, r, prov, why) != APR_SUCCESS)
            return NULL;
    }
    return r;
}

const gmcp_tool_entry *gmcp_registry_tool(const gmcp_registry *r, const char *name)
{
    int i;
    for (i = 0; i < r->tools->nelts; i++) {
        const gmcp_tool_entry *e = &APR_ARRAY_IDX(r->tools, i, gmcp_tool_entry);
        if (!strcmp(e->def->name, name)) return e;
    }
    return NULL;
}

const gmcp_prompt_entry *gmcp_registry_prompt(const gmcp_registry *r, const char *name)
{
    int i;
    for (i = 0; i < r->prompts->nelts; i++) {
        const gmcp_prompt_entry *e = &APR_ARRAY_IDX(r->prompts, i, gmcp_prompt_entry);
        if (!strcmp(e->def->name, name)) return e;
    }
    return NULL;
}

int gmcp_uri_template_match(const char *tmpl, const char *uri, json_t *vars)
{
    while (*tmpl) {
        if (*tmpl == '{') {
            const char *end = strchr(tmpl, '}'), *stop;
            char name[64];
            size_t nlen;
            if (!end || (nlen = (size_t)(end - tmpl - 1)) == 0 || nlen >= sizeof(name)) return 0;
            memcpy(name, tmpl + 1, nlen);
            name[nlen] = '\0';
            tmpl = end + 1;
            /* A variable runs up to the template's next literal character, never
             * across '/', and is never empty. */
            stop = uri;
            while (*stop && *stop != '/' && (!*tmpl || *stop != *tmpl)) stop++;
            if (stop == uri) return 0;
            json_object_set_new(vars, name, json_stringn(uri, (size_t)(stop - uri)));
            uri = stop;
        }
        else {
            if (*tmpl != *uri) return 0;
            tmpl++;
            uri++;
        }
    }
    return *uri == '\0';
}

apr_status_t gmcp_registry_resource(const gmcp_registry *r, const char *uri,
                                    const gmcp_provider **prov, gmcp_read_fn *read, json_t **vars)
{
    int i;
    for (i = 0; i < r->resources->nelts; i++) {
        const gmcp_resource_entry *e = &APR_ARRAY_IDX(r->resources, i, gmcp_resource_entry);
        if (!strcmp(e->def->uri, uri)) {
            *prov = e->provider;
            *read = e->def->read;
            *vars = json_object();
            return APR_SUCCESS;
        }
    }
    for (i = 0; i < r->templates->nelts; i++) {
        const gmcp_template_entry *e = &APR_ARRAY_IDX(r->templates, i, gmcp_template_entry);
        json_t *v = json_object();
        if (gmcp_uri_template_match(e->def->uri_template, uri, v)) {
            *prov = e->provider;
            *read = e->def->read;
            *vars = v;
            return APR_SUCCESS;
        }
        json_decref(v);
    }
    return APR_ENOENT;
}

const char *gmcp_registry_page(const gmcp_registry *r, const char *key,
                               json_t *(*build)(void *baton), void *baton)
{
    const char *text;
    apr_thread_mutex_lock(r->page_lock);
    text = apr_hash_get(r->pages, key, APR_HASH_KEY_STRING);
    if (!text) {
        /* Pages are few (lists x cursors x configured page sizes): memory is bounded. */
        json_t *j = build(baton);
        char *s = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (s) {
            text = apr_pstrdup(r->pool, s);
            free(s);
            apr_hash_set(r->pages, apr_pstrdup(r->pool, key), APR_HASH_KEY_STRING, text);
        }
    }
    apr_thread_mutex_unlock(r->page_lock);
    return text;
}
