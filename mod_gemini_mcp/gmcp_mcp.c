/* gmcp_mcp.c — MCP methods: lifecycle, utilities, tools, resources, prompts. */
#include "gmcp_mcp.h"
#include "gmcp_lease.h"
#include "gmcp_stateless.h"
#include "gmcp_tasks.h"
#include "gmcp_util.h"

#include <stddef.h>
#include <string.h>
#include <apr_strings.h>

static const char *const VERSIONS[] = {"2025-11-25", "2025-06-18", "2025-03-26", NULL};

static const char *const LEVELS[] = {"debug",    "info",  "notice",    "warning", "error",
                                     "critical", "alert", "emergency", NULL};

int gmcp_version_supported(const char *v)
{
    int i;
    for (i = 0; v && VERSIONS[i]; i++)
        if (!strcmp(VERSIONS[i], v)) return 1;
    return 0;
}

int gmcp_version_has_priming(const char *v)
{
    /* Revisions are dates: from 2025-11-25 on (the stateless one included). */
    return v && strcmp(v, "2025-11-25") >= 0;
}

const char *gmcp_supported_versions(void) { return "2025-11-25, 2025-06-18, 2025-03-26"; }

const char *gmcp_capability_for(const char *method)
{
    static const char *const NEEDS[][2] = {{"sampling/createMessage", "sampling"},
                                           {"elicitation/create", "elicitation"},
                                           {"roots/list", "roots"},
                                           {NULL, NULL}};
    int i;
    for (i = 0; NEEDS[i][0]; i++)
        if (!strcmp(NEEDS[i][0], method)) return NEEDS[i][1];
    return NULL;
}

int gmcp_log_level_parse(const char *name)
{
    int i;
    for (i = 0; name && LEVELS[i]; i++)
        if (!strcmp(LEVELS[i], name)) return i;
    return -1;
}

const char *gmcp_log_level_name(gmcp_log_level l)
{
    return (l >= GMCP_LOG_DEBUG && l <= GMCP_LOG_EMERGENCY) ? LEVELS[l] : "info";
}

static json_t *progress_token(const json_t *params)
{
    json_t *meta = gmcp_json_obj(params, "_meta");
    json_t *tok = meta ? json_object_get(meta, "progressToken") : NULL;
    return (json_is_string(tok) || json_is_integer(tok)) ? tok : NULL;
}

int gmcp_mcp_wants_stream(const gmcp_server *srv, const gmcp_msg *m)
{
    const gmcp_tool_entry *t;
    const char *name;
    if (m->kind != GMCP_MSG_REQUEST || strcmp(m->method, "tools/call") != 0) return 0;
    if (progress_token(m->params)) return 1;
    name = gmcp_json_str(m->params, "name");
    t = name ? gmcp_registry_tool(srv->registry, name) : NULL;
    return t && (t->def->flags & GMCP_TOOL_STREAMS);
}

/* ---- errors ---------------------------------------------------------------------- */

static json_t *rpc_err(const gmcp_msg *m, int code, const char *msg)
{
    return gmcp_rpc_error(m->id, code, msg, NULL);
}

/* The session store failed: -32603 with HTTP 503, like every other store failure. */
static json_t *internal(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    x->http_status = 503;
    return rpc_err(m, GMCP_INTERNAL_ERROR, "Internal error: the session store is unavailable");
}

static apr_status_t json_decref_void(void *j)
{
    json_decref(j);
    return APR_SUCCESS;
}

/* ---- pagination --------------------------------------------------------------------- */

/* Cursors are opaque to clients: base64url("<list>:<offset>"). APR_SUCCESS, or
 * APR_EINVAL for a cursor that is not one of ours (or no longer in range). */
static apr_status_t page_bounds(gmcp_rpc_ctx *x, const gmcp_msg *m, const char *list, int total,
                                int *from, int *to, const char **next)
{
    json_t *c = m->params ? json_object_get(m->params, "cursor") : NULL;
    *from = 0;
    *next = NULL;
    if (c && !json_is_null(c)) {
        apr_size_t len = 0;
        const char *raw, *prefix = apr_pstrcat(x->pool, list, ":", NULL);
        apr_uint64_t off;
        if (!json_is_string(c)
            || !(raw = (const char *)gmcp_b64url_decode(x->pool, json_string_value(c), &len))
            || strlen(raw) != len || strncmp(raw, prefix, strlen(prefix)) != 0
            || gmcp_parse_u64(raw + strlen(prefix), &off) != APR_SUCCESS
            || off > (apr_uint64_t)total || off == 0)
            return APR_EINVAL;
        *from = (int)off;
    }
    *to = *from + x->srv->page_size;
    if (*to < total) {
        const char *s = apr_psprintf(x->pool, "%s:%d", list, *to);
        *next = gmcp_b64url_encode(x->pool, (const unsigned char *)s, strlen(s));
    }
    else {
        *to = total;
    }
    return APR_SUCCESS;
}

/* A listing: its cursor prefix (also part of its page-cache key), the result member,
 * and where its entries and their listing JSON are in the registry. */
struct gmcp_listing {
    const char *cursor;
    const char *key;
    size_t entries; /* offsetof(gmcp_registry, <array>) */
    size_t stride;  /* size of one entry */
    size_t listing; /* offsetof(<entry>, listing) */
};

typedef struct {
    const apr_array_header_t *entries;
    size_t stride, listing_offset;
    int from, to;
    const char *method, *key, *next;
    int stateless;
} page_spec;

static json_t *build_page(void *baton)
{
    const page_spec *ps = baton;
    json_t *arr = json_array(), *res;
    int i;
    for (i = ps->from; i < ps->to; i++) {
        const char *e = ps->entries->elts + (size_t)i * ps->stride;
        json_array_append(arr, *(json_t *const *)(e + ps->listing_offset));
    }
    res = json_pack("{s:o}", ps->key, arr);
    if (ps->next) json_object_set_new(res, "nextCursor", json_string(ps->next));
    if (ps->stateless) gmcp_stateless_decorate(ps->method, res);
    return res;
}

/* A listing page as serialized text, from the per-process page cache; NULL (with
 * *error set) for a bad cursor. */
static const char *list_page_text(gmcp_rpc_ctx *x, const gmcp_msg *m, const gmcp_method *meth,
                                  json_t **error)
{
    const gmcp_listing *l = meth->listing;
    page_spec ps;
    ps.entries = *(const apr_array_header_t *const *)((const char *)x->srv->registry + l->entries);
    ps.stride = l->stride;
    ps.listing_offset = l->listing;
    ps.key = l->key;
    ps.stateless = x->stateless;
    ps.method = meth->name; /* for the stateless decoration */
    if (page_bounds(x, m, l->cursor, ps.entries->nelts, &ps.from, &ps.to, &ps.next)
        != APR_SUCCESS) {
        *error = rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: unknown or stale cursor");
        return NULL;
    }
    return gmcp_registry_page(x->srv->registry,
                              apr_psprintf(x->pool, "%s:%s:%d:%d",
                                           x->stateless ? GMCP_STATELESS_VERSION : "session",
                                           l->cursor, ps.from, x->srv->page_size),
                              build_page, &ps);
}

static json_t *list_page(gmcp_rpc_ctx *x, const gmcp_msg *m, const gmcp_method *meth)
{
    json_t *err = NULL, *res;
    const char *text = list_page_text(x, m, meth, &err);
    if (!text) return err;
    res = json_loads(text, 0, NULL);
    return res ? gmcp_rpc_result(m->id, res) : internal(x, m);
}

/* ---- lifecycle -------------------------------------------------------------------- */

static json_t *do_initialize(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const char *req = gmcp_json_str(m->params, "protocolVersion");
    json_t *caps = gmcp_json_obj(m->params, "capabilities");
    json_t *info = gmcp_json_obj(m->params, "clientInfo");
    gmcp_session s;
    json_t *result;

    if (!req || !caps || !info)
        return rpc_err(m, GMCP_INVALID_PARAMS,
                       "Invalid params: initialize needs "
                       "protocolVersion, capabilities and clientInfo");
    memset(&s, 0, sizeof(s));
    /* Answer with the client's version when we speak it, else our latest. */
    s.protocol_version = gmcp_version_supported(req) ? req : GMCP_LATEST_SESSION_VERSION;
    s.id = gmcp_random_id(x->pool, 24);
    s.owner = x->principal;
    s.client_caps = gmcp_json_dump(x->pool, caps);
    if (!s.id) return internal(x, m);
    if (gmcp_session_create(x->db, &s, gmcp_json_dump(x->pool, info))) return internal(x, m);
    x->new_session_id = s.id;

    result = json_pack("{s:s, s:{s:{s:b}, s:{s:b, s:b}, s:{s:b}, s:{}, s:{}}, s:{s:s, s:s}}",
                       "protocolVersion", s.protocol_version, "capabilities", "tools",
                       "listChanged", 0, "resources", "subscribe", 1, "listChanged", 0, "prompts",
                       "listChanged", 0, "logging", "completions", "serverInfo", "name",
                       x->srv->server_name, "version", x->srv->server_version);
    return gmcp_rpc_result(m->id, result);
}

static json_t *do_set_level(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const char *level = gmcp_json_str(m->params, "level");
    if (gmcp_log_level_parse(level) < 0)
        return rpc_err(m, GMCP_INVALID_PARAMS,
                       "Invalid params: level must be one of debug, "
                       "info, notice, warning, error, critical, alert, emergency");
    if (gmcp_session_set_level(x->db, x->session->id, level)) return internal(x, m);
    x->session->log_level = apr_pstrdup(x->pool, level);
    return gmcp_rpc_result(m->id, json_object());
}

static json_t *do_ping(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    (void)x;
    return gmcp_rpc_result(m->id, json_object());
}

static json_t *do_discover(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    json_t *r = gmcp_discover_result(x->srv->server_name, x->srv->server_version);
    if (x->srv->tasks)
        json_object_set_new(json_object_get(r, "capabilities"), "extensions",
                            json_pack("{s:{}}", GMCP_TASKS_EXTENSION));
    return gmcp_rpc_result(m->id, r);
}

/* ---- tasks (io.modelcontextprotocol/tasks) ----------------------------------------- */

/* Does this request declare the extension (in its own _meta: 2026-07-28 only)? */
static int declares_tasks(const gmcp_rpc_ctx *x)
{
    json_t *ext = x->stateless && x->call->client_caps
        ? json_object_get(x->call->client_caps, "extensions")
        : NULL;
    return json_is_object(json_object_get(ext, GMCP_TASKS_EXTENSION));
}

static json_t *missing_tasks(const gmcp_msg *m)
{
    return gmcp_rpc_error(
        m->id, GMCP_MISSING_CAPABILITY, "Missing required client capability: " GMCP_TASKS_EXTENSION,
        json_pack("{s:{s:{s:{}}}}", "requiredCapabilities", "extensions", GMCP_TASKS_EXTENSION));
}

enum { TASK_GET, TASK_UPDATE, TASK_CANCEL };

/* tasks/get, tasks/update and tasks/cancel: the capability first, then the task, which
 * only its owner sees (another's is as unknown as a made-up id). */
static json_t *task_method(gmcp_rpc_ctx *x, const gmcp_msg *m, int op)
{
    const char *id = gmcp_json_str(m->params, "taskId"), *why = NULL;
    apr_int64_t now = apr_time_as_msec(apr_time_now());
    gmcp_db *db;
    gmcp_task t;
    apr_status_t rv;
    json_t *out = NULL;
    if (!x->srv->tasks)
        return rpc_err(m, GMCP_METHOD_NOT_FOUND,
                       apr_psprintf(x->pool, "Method not found: %s (tasks are off)", m->method));
    if (!declares_tasks(x)) return missing_tasks(m);
    if (!id) return rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: taskId is required");
    if (!(db = x->call->ops->db_open(x->call, &why))) {
        x->http_status = 503;
        return rpc_err(m, GMCP_INTERNAL_ERROR, "Internal error: the task store is unavailable");
    }
    rv = op == TASK_UPDATE
        ? gmcp_task_answer(db, id, x->principal, gmcp_json_obj(m->params, "inputResponses"), now)
        : op == TASK_CANCEL ? gmcp_task_cancel(db, id, x->principal, now)
                            : gmcp_task_get(db, id, x->principal, &t);
    /* Past its TTL a task is not served, though cleanup has not removed it yet. */
    if (rv == APR_SUCCESS && op == TASK_GET && t.expires < gmcp_now_sec()) rv = APR_ENOENT;
    /* A task whose process is gone is failed now, not at the next sweep. */
    if (rv == APR_SUCCESS && op == TASK_GET && !gmcp_task_terminal(t.status)
        && (t.lease_until < gmcp_now_sec() || gmcp_lease_holder_dead(t.holder))) {
        int n = 0;
        if (gmcp_task_reap(db, gmcp_now_sec(), gmcp_lease_holder_dead, 0, &n) == APR_SUCCESS && n)
            rv = gmcp_task_get(db, id, x->principal, &t);
    }
    if (rv == APR_SUCCESS && op == TASK_GET)
        out = gmcp_task_json(x->pool, &t, 1, x->srv->tasks->poll_ms);
    x->call->ops->db_close(x->call);
    if (rv == APR_ENOENT)
        return rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: no such task (unknown or expired)");
    if (rv != APR_SUCCESS) {
        x->http_status = 503;
        return rpc_err(m, GMCP_INTERNAL_ERROR, "Internal error: the task store is unavailable");
    }
    return gmcp_rpc_result(m->id, out ? out : json_object());
}

static json_t *do_tasks_get(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    return task_method(x, m, TASK_GET);
}
static json_t *do_tasks_update(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    return task_method(x, m, TASK_UPDATE);
}
static json_t *do_tasks_cancel(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    return task_method(x, m, TASK_CANCEL);
}

/* tools/call as a task: the input rounds that come first, then the task made and
 * started. */
static json_t *call_as_task(gmcp_rpc_ctx *x, const gmcp_msg *m, const gmcp_tool_entry *t,
                            json_t *args)
{
    json_t *r;
    if (t->def->prepare && (r = t->def->prepare(x->call, args, t->provider->baton)) != NULL)
        return gmcp_rpc_result(m->id, r);
    x->call->error_code = 0;
    x->call->error_message = NULL;
    if ((r = x->srv->tasks->start(x->call, t, m->params)) != NULL) return gmcp_rpc_result(m->id, r);
    if (x->call->error_code == GMCP_INTERNAL_ERROR) x->http_status = 503;
    return gmcp_rpc_error(m->id, x->call->error_code ? x->call->error_code : GMCP_INTERNAL_ERROR,
                          x->call->error_message ? x->call->error_message : "Internal error", NULL);
}

/* ---- tools ------------------------------------------------------------------------- */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int type_fits(const char *want, const json_t *v)
{
    if (!strcmp(want, "number")) return json_is_number(v);
    /* A whole real counts, within long long range (the cast is undefined outside). */
    if (!strcmp(want, "integer"))
        return json_is_integer(v)
            || (json_is_real(v) && json_real_value(v) >= -9223372036854775808.0
                && json_real_value(v) < 9223372036854775808.0
                && json_real_value(v) == (double)(long long)json_real_value(v));
    return !strcmp(want, json_type_name(v));
}

static int schema_type_fits(const json_t *type, const json_t *v)
{
    size_t i;
    json_t *t;
    if (json_is_string(type)) return type_fits(json_string_value(type), v);
    if (json_is_array(type)) {
        json_array_foreach(type, i,
                           t) if (json_is_string(t) && type_fits(json_string_value(t), v)) return 1;
        return 0;
    }
    return 1;
}

const char *gmcp_validate_arguments(apr_pool_t *p, const json_t *schema, const json_t *args)
{
    json_t *req = json_object_get(schema, "required");
    json_t *props = json_object_get(schema, "properties");
    json_t *addl = json_object_get(schema, "additionalProperties");
    json_t *v;
    const char *k;
    size_t i;
    json_array_foreach(req, i, v)
    {
        if (json_is_string(v) && !json_object_get(args, json_string_value(v)))
            return apr_psprintf(p, "Invalid arguments: missing required property '%s'",
                                json_string_value(v));
    }
    json_object_foreach((json_t *)args, k, v)
    {
        json_t *ps = props ? json_object_get(props, k) : NULL;
        if (!ps) {
            if (json_is_false(addl))
                return apr_psprintf(p, "Invalid arguments: unexpected property '%s'", k);
            continue;
        }
        if (json_object_get(ps, "type") && !schema_type_fits(json_object_get(ps, "type"), v))
            return apr_psprintf(p,
                                "Invalid arguments: property '%s' must be of type %s, "
                                "not %s",
                                k, gmcp_json_dump(p, json_object_get(ps, "type")),
                                json_type_name(v));
        if (json_is_array(json_object_get(ps, "enum"))) {
            json_t *e;
            int ok = 0;
            json_array_foreach(json_object_get(ps, "enum"), i, e) if (json_equal(e, v)) ok = 1;
            if (!ok)
                return apr_psprintf(p, "Invalid arguments: property '%s' must be one of %s", k,
                                    gmcp_json_dump(p, json_object_get(ps, "enum")));
        }
    }
    return NULL;
}

static json_t *do_tools_call(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const char *name = gmcp_json_str(m->params, "name");
    json_t *args = m->params ? json_object_get(m->params, "arguments") : NULL;
    const gmcp_tool_entry *t;
    json_t *result, *owned_args = NULL;
    const char *invalid;

    if (!name) return rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: tools/call needs a name");
    if (!(t = gmcp_registry_tool(x->srv->registry, name)))
        return rpc_err(m, GMCP_INVALID_PARAMS, apr_psprintf(x->pool, "Unknown tool: %s", name));
    if (args && !json_is_object(args) && !json_is_null(args))
        return rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: arguments must be an object");
    if (!args || json_is_null(args)) args = owned_args = json_object();

    /* Input that does not fit the schema is a tool error the model can correct. */
    invalid = gmcp_validate_arguments(x->pool, json_object_get(t->listing, "inputSchema"), args);
    if (invalid) {
        json_decref(owned_args);
        return gmcp_rpc_result(m->id, gmcp_text_result(invalid, 1));
    }
    if (x->srv->tasks && (t->def->flags & (GMCP_TOOL_TASK | GMCP_TOOL_TASK_REQUIRED))
        && declares_tasks(x)) {
        result = call_as_task(x, m, t, args);
        json_decref(owned_args);
        return result;
    }
    /* Only as a task on 2026-07-28 (even with tasks off here); on a session at once. */
    if (x->stateless && (t->def->flags & GMCP_TOOL_TASK_REQUIRED)) {
        json_decref(owned_args);
        return missing_tasks(m);
    }
    x->call->progress_token = progress_token(m->params);
    x->call->error_code = 0;
    result = t->def->call(x->call, args, t->provider->baton);
    json_decref(owned_args);
    if (x->call->ops->cancelled(x->call)) {
        json_decref(result);
        return NULL;
    }
    if (!result) {
        json_t *data = x->call->error_data;
        x->call->error_data = NULL;
        return gmcp_rpc_error(
            m->id, x->call->error_code ? x->call->error_code : GMCP_INTERNAL_ERROR,
            x->call->error_message ? x->call->error_message : "Internal error", data);
    }
    return gmcp_rpc_result(m->id, result);
}

/* ---- resources ---------------------------------------------------------------------- */

static json_t *do_resources_read(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const char *uri = gmcp_json_str(m->params, "uri");
    const gmcp_provider *prov;
    gmcp_read_fn read;
    json_t *vars = NULL, *res;
    if (!uri) return rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: resources/read needs a uri");
    if (gmcp_registry_resource(x->srv->registry, uri, &prov, &read, &vars) == APR_SUCCESS) {
        x->call->error_code = 0;
        res = read(x->call, uri, vars, prov->baton);
        json_decref(vars);
        if (res) return gmcp_rpc_result(m->id, res);
        if (x->call->error_code) return rpc_err(m, x->call->error_code, x->call->error_message);
    }
    /* 2026-07-28 (SEP-2164) reports an unknown resource as invalid params. */
    return gmcp_rpc_error(m->id, x->stateless ? GMCP_INVALID_PARAMS : GMCP_RESOURCE_NOT_FOUND,
                          "Resource not found", json_pack("{s:s}", "uri", uri));
}

static json_t *subscription(gmcp_rpc_ctx *x, const gmcp_msg *m, int add)
{
    const char *uri = gmcp_json_str(m->params, "uri");
    apr_status_t rv;
    if (!uri) return rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: a uri is required");
    rv = add ? gmcp_subscription_add(x->db, x->session->id, uri)
             : gmcp_subscription_remove(x->db, x->session->id, uri);
    return rv ? internal(x, m) : gmcp_rpc_result(m->id, json_object());
}

static json_t *do_subscribe(gmcp_rpc_ctx *x, const gmcp_msg *m) { return subscription(x, m, 1); }

static json_t *do_unsubscribe(gmcp_rpc_ctx *x, const gmcp_msg *m) { return subscription(x, m, 0); }

/* ---- prompts ---------------------------------------------------------------------- */

static json_t *do_prompts_get(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const char *name = gmcp_json_str(m->params, "name");
    json_t *args = m->params ? json_object_get(m->params, "arguments") : NULL;
    json_t *decl, *a, *res, *owned = NULL;
    const gmcp_prompt_entry *pe;
    size_t i;
    if (!name || !(pe = gmcp_registry_prompt(x->srv->registry, name)))
        return rpc_err(m, GMCP_INVALID_PARAMS,
                       apr_psprintf(x->pool, "Unknown prompt: %s", name ? name : "(none)"));
    if (args && !json_is_object(args))
        return rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: arguments must be an object");
    if (!args) args = owned = json_object();
    decl = json_object_get(pe->listing, "arguments");
    json_array_foreach(decl, i, a)
    {
        const char *an = gmcp_json_str(a, "name");
        if (an && json_is_true(json_object_get(a, "required"))
            && !json_is_string(json_object_get(args, an))) {
            json_decref(owned);
            return rpc_err(m, GMCP_INVALID_PARAMS,
                           apr_psprintf(x->pool,
                                        "Invalid params: prompt '%s' needs the "
                                        "argument '%s'",
                                        name, an));
        }
    }
    x->call->error_code = 0;
    res = pe->def->get(x->call, args, pe->provider->baton);
    json_decref(owned);
    if (!res)
        return rpc_err(m, x->call->error_code ? x->call->error_code : GMCP_INTERNAL_ERROR,
                       x->call->error_message ? x->call->error_message : "Internal error");
    return gmcp_rpc_result(m->id, res);
}

/* The provider that completes for `ref`, or NULL with *error set. */
static const gmcp_provider *completion_provider(gmcp_rpc_ctx *x, const gmcp_msg *m, json_t *ref,
                                                const char *type, json_t **error)
{
    const gmcp_provider *prov = NULL;
    if (!strcmp(type, "ref/prompt")) {
        const char *pn = gmcp_json_str(ref, "name");
        const gmcp_prompt_entry *pe = pn ? gmcp_registry_prompt(x->srv->registry, pn) : NULL;
        if (!pe)
            *error = rpc_err(m, GMCP_INVALID_PARAMS,
                             apr_psprintf(x->pool, "Unknown prompt: %s", pn ? pn : "(none)"));
        return pe ? pe->provider : NULL;
    }
    if (!strcmp(type, "ref/resource")) {
        const char *uri = gmcp_json_str(ref, "uri");
        int k;
        for (k = 0; uri && k < x->srv->registry->templates->nelts; k++) {
            const gmcp_template_entry *te =
                &APR_ARRAY_IDX(x->srv->registry->templates, k, gmcp_template_entry);
            if (!strcmp(te->def->uri_template, uri)) prov = te->provider;
        }
        if (!prov)
            *error = rpc_err(m, GMCP_INVALID_PARAMS, "Invalid params: unknown resource template");
        return prov;
    }
    *error = rpc_err(m, GMCP_INVALID_PARAMS,
                     "Invalid params: ref.type must be ref/prompt "
                     "or ref/resource");
    return NULL;
}

/* The first 100 of `values` (stolen; anything but an array counts as none). */
static json_t *completion_result(const gmcp_msg *m, json_t *values)
{
    json_t *trimmed;
    size_t total, i;
    if (!json_is_array(values)) {
        json_decref(values);
        values = json_array();
    }
    total = json_array_size(values);
    trimmed = json_array();
    for (i = 0; i < total && i < 100; i++) json_array_append(trimmed, json_array_get(values, i));
    json_decref(values);
    return gmcp_rpc_result(m->id,
                           json_pack("{s:{s:o, s:I, s:b}}", "completion", "values", trimmed,
                                     "total", (json_int_t)total, "hasMore", total > 100));
}

static json_t *do_complete(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    json_t *ref = gmcp_json_obj(m->params, "ref");
    json_t *arg = gmcp_json_obj(m->params, "argument");
    json_t *ctx = gmcp_json_obj(m->params, "context");
    const char *type = gmcp_json_str(ref, "type");
    const char *an = gmcp_json_str(arg, "name"), *av = gmcp_json_str(arg, "value");
    const gmcp_provider *prov;
    json_t *error = NULL, *values = NULL;

    if (!type || !an || !av)
        return rpc_err(m, GMCP_INVALID_PARAMS,
                       "Invalid params: completion/complete needs "
                       "ref.type, argument.name and argument.value");
    if (!(prov = completion_provider(x, m, ref, type, &error))) return error;
    if (prov->complete)
        values = prov->complete(x->call, ref, an, av,
                                ctx ? json_object_get(ctx, "arguments") : NULL, prov->baton);
    return completion_result(m, values);
}

/* ---- notifications ------------------------------------------------------------------ */

/* APR_SUCCESS; APR_EINVAL without a usable requestId; the store's failure. */
static apr_status_t note_cancelled(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    json_t *rid = m->params ? json_object_get(m->params, "requestId") : NULL;
    if (!rid || !(json_is_string(rid) || json_is_integer(rid))) return APR_EINVAL;
    return gmcp_cancel_record(x->db, x->session->id, gmcp_id_key(x->pool, rid));
}

/* ---- the method table ---------------------------------------------------------------- */

static const gmcp_listing TOOLS_LIST = {"tools", "tools", offsetof(gmcp_registry, tools),
                                        sizeof(gmcp_tool_entry),
                                        offsetof(gmcp_tool_entry, listing)};
static const gmcp_listing RESOURCES_LIST = {
    "resources", "resources", offsetof(gmcp_registry, resources), sizeof(gmcp_resource_entry),
    offsetof(gmcp_resource_entry, listing)};
static const gmcp_listing TEMPLATES_LIST = {
    "templates", "resourceTemplates", offsetof(gmcp_registry, templates),
    sizeof(gmcp_template_entry), offsetof(gmcp_template_entry, listing)};
static const gmcp_listing PROMPTS_LIST = {"prompts", "prompts", offsetof(gmcp_registry, prompts),
                                          sizeof(gmcp_prompt_entry),
                                          offsetof(gmcp_prompt_entry, listing)};

/* Listings change only with the configuration (ttlMs 60 s); contents may change at any
 * time (0). */
static const gmcp_method METHODS[] = {
    /* name, flags, listing, request, notify, target, ttl_ms */
    {"initialize", GMCP_METHOD_BEFORE_SESSION | GMCP_METHOD_SESSION_ONLY | GMCP_METHOD_STORES, NULL,
     do_initialize, NULL, NULL, 0},
    {"ping", GMCP_METHOD_SESSION_ONLY, NULL, do_ping, NULL, NULL, 0},
    {"tools/list", GMCP_METHOD_CACHEABLE, &TOOLS_LIST, NULL, NULL, NULL, 60000},
    {"tools/call", GMCP_METHOD_MRTR, NULL, do_tools_call, NULL, "name", 0},
    {"resources/list", GMCP_METHOD_CACHEABLE, &RESOURCES_LIST, NULL, NULL, NULL, 60000},
    {"resources/templates/list", GMCP_METHOD_CACHEABLE, &TEMPLATES_LIST, NULL, NULL, NULL, 60000},
    {"resources/read", GMCP_METHOD_MRTR | GMCP_METHOD_CACHEABLE, NULL, do_resources_read, NULL,
     "uri", 0},
    {"resources/subscribe", GMCP_METHOD_SESSION_ONLY | GMCP_METHOD_STORES, NULL, do_subscribe, NULL,
     NULL, 0},
    {"resources/unsubscribe", GMCP_METHOD_SESSION_ONLY | GMCP_METHOD_STORES, NULL, do_unsubscribe,
     NULL, NULL, 0},
    {"prompts/list", GMCP_METHOD_CACHEABLE, &PROMPTS_LIST, NULL, NULL, NULL, 60000},
    {"prompts/get", GMCP_METHOD_MRTR, NULL, do_prompts_get, NULL, "name", 0},
    {"logging/setLevel",
     GMCP_METHOD_SESSION_ONLY | GMCP_METHOD_STORES | GMCP_METHOD_CHANGES_SESSION, NULL,
     do_set_level, NULL, NULL, 0},
    {"completion/complete", 0, NULL, do_complete, NULL, NULL, 0},
    {"server/discover", GMCP_METHOD_STATELESS_ONLY | GMCP_METHOD_CACHEABLE, NULL, do_discover, NULL,
     NULL, 60000},
    {"subscriptions/listen", GMCP_METHOD_STATELESS_ONLY, NULL, NULL, NULL, NULL, 0},
    {"tasks/get", GMCP_METHOD_STATELESS_ONLY, NULL, do_tasks_get, NULL, "taskId", 0},
    {"tasks/update", GMCP_METHOD_STATELESS_ONLY, NULL, do_tasks_update, NULL, "taskId", 0},
    {"tasks/cancel", GMCP_METHOD_STATELESS_ONLY, NULL, do_tasks_cancel, NULL, "taskId", 0},
    {"notifications/initialized", GMCP_METHOD_NOTIFICATION, NULL, NULL, NULL, NULL, 0},
    {"notifications/cancelled", GMCP_METHOD_NOTIFICATION, NULL, NULL, note_cancelled, NULL, 0},
    {"notifications/progress", GMCP_METHOD_NOTIFICATION, NULL, NULL, NULL, NULL, 0},
    {"notifications/roots/list_changed", GMCP_METHOD_NOTIFICATION, NULL, NULL, NULL, NULL, 0},
    {NULL, 0, NULL, NULL, NULL, NULL, 0}};

const gmcp_method *gmcp_mcp_method(const char *name)
{
    const gmcp_method *meth;
    for (meth = METHODS; name && meth->name; meth++)
        if (!strcmp(meth->name, name)) return meth;
    return NULL;
}

/* ---- dispatch ---------------------------------------------------------------------- */

/* Does this revision serve `meth` as a request here? */
static int serves(const gmcp_method *meth, int stateless)
{
    if (!meth || (meth->flags & GMCP_METHOD_NOTIFICATION) || (!meth->listing && !meth->request))
        return 0;
    return !(meth->flags & (stateless ? GMCP_METHOD_SESSION_ONLY : GMCP_METHOD_STATELESS_ONLY));
}

static json_t *dispatch(gmcp_rpc_ctx *x, const gmcp_msg *m, const gmcp_method *meth)
{
    if (meth && (meth->flags & GMCP_METHOD_BEFORE_SESSION)) return meth->request(x, m);
    if (!x->session && !x->stateless) return internal(x, m);
    if (!serves(meth, x->stateless))
        return rpc_err(m, GMCP_METHOD_NOT_FOUND,
                       apr_psprintf(x->pool, "Method not found: %s", m->method));
    return meth->listing ? list_page(x, m, meth) : meth->request(x, m);
}

const char *gmcp_mcp_request_text(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const gmcp_method *meth = gmcp_mcp_method(m->method);
    json_t *resp = NULL;
    const char *text = NULL;
    /* Listings skip jansson on the hot path: the cached page is spliced in. */
    if (meth && meth->listing && (x->session || x->stateless))
        text = list_page_text(x, m, meth, &resp);
    if (text)
        return apr_pstrcat(x->pool, "{\"jsonrpc\":\"2.0\",\"id\":", gmcp_id_key(x->pool, m->id),
                           ",\"result\":", text, "}", NULL);
    if (!resp) resp = gmcp_mcp_request(x, m);
    if (!resp) return NULL;
    text = gmcp_json_dump(x->pool, resp);
    json_decref(resp);
    return text;
}

/* MRTR inputs of a stateless tools/call, prompts/get or resources/read retry:
 * inputResponses must be an object; requestState must verify against this server's
 * key, the target's name and the caller. NULL when fine, else the error. */
static json_t *mrtr_prepare(gmcp_rpc_ctx *x, const gmcp_msg *m, const gmcp_method *meth)
{
    json_t *ir = m->params ? json_object_get(m->params, "inputResponses") : NULL;
    json_t *rs = m->params ? json_object_get(m->params, "requestState") : NULL;
    const char *name = gmcp_json_str(m->params, meth->target);
    x->call->name = name;
    x->call->input_responses = NULL;
    x->call->state = NULL;
    if (ir && !json_is_object(ir))
        return rpc_err(m, GMCP_INVALID_PARAMS,
                       "Invalid params: inputResponses must be an "
                       "object keyed by the input request names");
    x->call->input_responses = ir;
    if (rs) {
        json_t *state = NULL;
        if (!json_is_string(rs)
            || gmcp_state_open(x->pool, x->srv->state_key, x->srv->state_key_len,
                               apr_pstrcat(x->pool, name ? name : "", "\n", x->principal, NULL),
                               json_string_value(rs), &state)
                != APR_SUCCESS)
            return rpc_err(m, GMCP_INVALID_PARAMS,
                           "Invalid params: requestState failed its "
                           "integrity check; start the request again without it");
        /* Kept for the call; released with the request pool. */
        apr_pool_cleanup_register(x->pool, state, json_decref_void, apr_pool_cleanup_null);
        x->call->state = state;
    }
    return NULL;
}

/* The HTTP status 2026-07-28 gives an error answer. */
static void stateless_status(gmcp_rpc_ctx *x, int code)
{
    if (code == GMCP_METHOD_NOT_FOUND)
        x->http_status = 404;
    else if (code == GMCP_MISSING_CAPABILITY || code == GMCP_HEADER_MISMATCH
             || code == GMCP_UNSUPPORTED_VERSION)
        x->http_status = 400;
}

/* A request on the 2026-07-28 revision: removed methods answer 404, MRTR inputs are
 * checked first, results are decorated. */
static json_t *stateless_request(gmcp_rpc_ctx *x, const gmcp_msg *m, const gmcp_method *meth)
{
    json_t *resp, *err;
    if (meth && (meth->flags & GMCP_METHOD_SESSION_ONLY)) {
        x->http_status = 404;
        return rpc_err(
            m, GMCP_METHOD_NOT_FOUND,
            apr_psprintf(x->pool,
                         "Method not found: "
                         "%s does not exist in protocol revision " GMCP_STATELESS_VERSION,
                         m->method));
    }
    if (meth && (meth->flags & GMCP_METHOD_MRTR) && (err = mrtr_prepare(x, m, meth)) != NULL) {
        x->http_status = 400;
        return err;
    }
    if (!(resp = dispatch(x, m, meth))) return NULL;
    err = json_object_get(resp, "error");
    if (err)
        stateless_status(x, (int)json_integer_value(json_object_get(err, "code")));
    else
        gmcp_stateless_decorate(m->method, json_object_get(resp, "result"));
    return resp;
}

json_t *gmcp_mcp_request(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const gmcp_method *meth = gmcp_mcp_method(m->method);
    return x->stateless ? stateless_request(x, m, meth) : dispatch(x, m, meth);
}

apr_status_t gmcp_mcp_notification(gmcp_rpc_ctx *x, const gmcp_msg *m)
{
    const gmcp_method *meth = gmcp_mcp_method(m->method);
    /* initialized, progress, roots/list_changed and unknown notifications need no
     * action; notifications are never answered. */
    if (meth && (meth->flags & GMCP_METHOD_NOTIFICATION) && meth->notify) return meth->notify(x, m);
    return APR_SUCCESS;
}
