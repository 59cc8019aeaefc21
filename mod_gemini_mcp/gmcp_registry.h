/* gmcp_registry.h — the merged view of all providers a location serves. */
#ifndef GMCP_REGISTRY_H
#define GMCP_REGISTRY_H

#include <apr_pools.h>
#include <apr_hash.h>
#include <apr_tables.h>
#include <jansson.h>
#include "gmcp_provider.h"

typedef struct {
    const gmcp_provider *provider;
    const gmcp_tool *def;
    json_t *listing; /* the tools/list entry, built once */
} gmcp_tool_entry;

typedef struct {
    const gmcp_provider *provider;
    const gmcp_resource *def;
    json_t *listing;
} gmcp_resource_entry;

typedef struct {
    const gmcp_provider *provider;
    const gmcp_resource_template *def;
    json_t *listing;
} gmcp_template_entry;

typedef struct {
    const gmcp_provider *provider;
    const gmcp_prompt *def;
    json_t *listing;
} gmcp_prompt_entry;

typedef struct {
    apr_pool_t *pool;
    void *page_lock;               /* apr_thread_mutex_t: guards pages and pool */
    apr_hash_t *pages;             /* "list:from:size" -> serialized result text */
    apr_array_header_t *providers; /* const gmcp_provider * */
    apr_array_header_t *tools;     /* gmcp_tool_entry */
    apr_array_header_t *resources; /* gmcp_resource_entry */
    apr_array_header_t *templates; /* gmcp_template_entry */
    apr_array_header_t *prompts;   /* gmcp_prompt_entry */
} gmcp_registry;

/* Build a registry. Tool names must be 1-64 chars of [A-Za-z0-9_.-] and unique,
 * schemas must parse: otherwise NULL and *why says which definition is wrong.
 * The listings are released with the pool. */
gmcp_registry *gmcp_registry_create(apr_pool_t *p, const gmcp_provider *const *providers, int n,
                                    const char **why);

/* The serialized result of one listing page, built once per process and kept (the
 * registry never changes after start-up). `build` makes the JSON on a miss. */
const char *gmcp_registry_page(const gmcp_registry *r, const char *key,
                               json_t *(*build)(void *baton), void *baton);

const gmcp_tool_entry *gmcp_registry_tool(const gmcp_registry *r, const char *name);
const gmcp_prompt_entry *gmcp_registry_prompt(const gmcp_registry *r, const char *name);

/* Resolve a resource URI to its reader: exact resources first, then templates.
 * APR_SUCCESS with *vars the template variables (new ref, an object); APR_ENOENT when
 * no resource or template has the URI. */
apr_status_t gmcp_registry_resource(const gmcp_registry *r, const char *uri,
                                    const gmcp_provider **prov, gmcp_read_fn *read, json_t **vars);

/* RFC 6570 level-1 match of `uri` against `tmpl` (a predicate: 1 or 0); fills vars
 * (object) on a match. */
int gmcp_uri_template_match(const char *tmpl, const char *uri, json_t *vars);

/* Is `name` a valid MCP tool name (1-64 of [A-Za-z0-9_.-])? */
int gmcp_tool_name_valid(const char *name);

#endif
