/* gmcp_tools_gemini.c — gemini_generate, gemini_count_tokens, gemini_embed,
 * gemini_list_models: MCP arguments in, Gemini REST out, plain errors back. */
#include "gmcp_tools_gemini.h"
#include "gmcp_gemini.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_util.h"

#include <string.h>
#include <apr_lib.h>
#include <apr_strings.h>

/* ---- shared plumbing -------------------------------------------------------------------- */

static int call_cancelled(void *baton)
{
    gmcp_call *c = baton;
    return c->ops->cancelled(c);
}

static void call_observed(void *baton, int status, apr_interval_time_t latency, int retries,
                          apr_int64_t prompt_tokens, apr_int64_t output_tokens)
{
    gmcp_call *c = baton;
    if (c->ops->gemini_observed)
        c->ops->gemini_observed(c, status, latency, retries, prompt_tokens, output_tokens);
}

/* A client for this call, or NULL with *result set to the tool error to return. */
gmcp_gemini *gmcp_tool_client(gmcp_call *c, const gmcp_gemini_conf *conf, json_t **result)
{
    gmcp_gemini *g;
    if (!conf->api_key) {
        *result = gmcp_text_result("Gemini is not configured on this server: the "
                                   "administrator must set GeminiMCPGeminiKey (file: or env:)",
                                   1);
        return NULL;
    }
    g = apr_pcalloc(c->pool, sizeof(*g));
    g->http = conf->http();
    if (!g->http) {
        *result = gmcp_text_result("cannot create an HTTP client for Gemini", 1);
        return NULL;
    }
    g->base_url = conf->base_url;
    g->api_key = conf->api_key;
    g->timeout = conf->timeout;
    g->connect_timeout = conf->connect_timeout;
    g->max_retries = conf->max_retries;
    g->deadline = c->deadline;
    g->cancelled = call_cancelled;
    g->baton = c;
    g->pool = c->pool;
    g->breaker = conf->breaker;
    g->observe = call_observed;
    g->observe_baton = c;
    return g;
}

void *gmcp_tool_db(gmcp_call *c, const char *unavailable, json_t **result)
{
    const char *why = NULL;
    void *db = c->ops->db_open(c, &why);
    if (!db) *result = gmcp_text_result(why ? why : unavailable, 1);
    return db;
}

json_t *gmcp_tool_structured(json_t *result, json_t *sc)
{
    json_object_set_new(result, "structuredContent", sc);
    return result;
}

/* A failed call as a tool result the model can read: Gemini's own message. */
json_t *gmcp_tool_error_result(gmcp_call *c, const gmcp_gemini_error *e)
{
    if (e->cancelled) return gmcp_text_result("cancelled", 1);
    if (e->http_status)
        return gmcp_text_result(apr_psprintf(c->pool, "Gemini error %d%s%s: %s", e->http_status,
                                             e->status ? " " : "", e->status ? e->status : "",
                                             e->message),
                                1);
    return gmcp_text_result(apr_psprintf(c->pool, "Gemini call failed: %s", e->message), 1);
}

const char *gmcp_tool_model(gmcp_call *c, json_t *args, const char *fallback, json_t **result)
{
    const char *m = gmcp_json_str(args, "model");
    const char *path = gmcp_gemini_model_path(c->pool, m ? m : fallback);
    if (!path)
        *result =
            gmcp_text_result(apr_psprintf(c->pool, "invalid model name '%s'", m ? m : fallback), 1);
    return path;
}

/* A Files API reference: "files/<id>" becomes its URI; URIs pass through. */
const char *gmcp_tool_file_uri(gmcp_call *c, const gmcp_gemini_conf *conf, const char *ref)
{
    if (!ref || !*ref) return NULL;
    if (!strncmp(ref, "files/", 6))
        return apr_pstrcat(c->pool, conf->base_url, "/v1beta/", ref, NULL);
    return ref;
}

json_t *gmcp_tool_user_parts(gmcp_call *c, const gmcp_gemini_conf *conf, const char *text,
                             json_t *files, json_t **result)
{
    json_t *parts = json_pack("[{s:s}]", "text", text), *f;
    size_t i;
    json_array_foreach(files, i, f)
    {
        const char *uri = gmcp_tool_file_uri(c, conf, gmcp_json_str(f, "uri"));
        const char *mime = gmcp_json_str(f, "mime_type");
        json_t *fd;
        if (!uri) {
            json_decref(parts);
            *result = gmcp_text_result("every file reference needs a uri (a Gemini file URI "
                                       "or a name like files/abc123)",
                                       1);
            return NULL;
        }
        fd = json_pack("{s:s}", "fileUri", uri);
        if (mime) json_object_set_new(fd, "mimeType", json_string(mime));
        json_array_append_new(parts, json_pack("{s:o}", "fileData", fd));
    }
    return parts;
}

/* contents from "contents" (Gemini shape, passed through) or "prompt" + files. */
static json_t *contents_arg(gmcp_call *c, const gmcp_gemini_conf *conf, json_t *args,
                            json_t **result)
{
    json_t *contents = json_object_get(args, "contents");
    const char *prompt = gmcp_json_str(args, "prompt");
    json_t *files = json_object_get(args, "files"), *parts;
    if (json_is_array(contents) && json_array_size(contents) > 0) {
        if (prompt) {
            *result = gmcp_text_result("give either prompt or contents, not both", 1);
            return NULL;
        }
        return json_incref(contents);
    }
    if (!prompt || !*prompt) {
        *result = gmcp_text_result("a non-empty prompt (or contents) is required", 1);
        return NULL;
    }
    if (!(parts = gmcp_tool_user_parts(c, conf, prompt, files, result))) return NULL;
    return json_pack("[{s:s, s:o}]", "role", "user", "parts", parts);
}

/* ---- gemini_generate -------------------------------------------------------------------- */

json_t *gmcp_tool_generation_config(json_t *args)
{
    static const char *const map[][2] = {{"temperature", "temperature"},
                                         {"top_p", "topP"},
                                         {"top_k", "topK"},
                                         {"max_output_tokens", "maxOutputTokens"},
                                         {"stop_sequences", "stopSequences"},
                                         {"candidate_count", "candidateCount"},
                                         {"response_mime_type", "responseMimeType"},
                                         {"response_schema", "responseSchema"},
                                         {NULL, NULL}};
    json_t *gc = json_object();
    int i;
    for (i = 0; map[i][0]; i++) {
        json_t *v = json_object_get(args, map[i][0]);
        if (v) json_object_set(gc, map[i][1], v);
    }
    if (json_object_size(gc) == 0) {
        json_decref(gc);
        return NULL;
    }
    return gc;
}

static json_t *usage_of(const json_t *resp)
{
    json_t *u = json_object_get(resp, "usageMetadata");
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens",
                     json_integer_value(json_object_get(u, "promptTokenCount")), "output_tokens",
                     json_integer_value(json_object_get(u, "candidatesTokenCount")), "total_tokens",
                     json_integer_value(json_object_get(u, "totalTokenCount")));
}

/* A GenerateContentResponse as a tool result, or a plain explanation of why not. */
static json_t *generate_result(gmcp_call *c, const char *model, const json_t *resp,
                               const char *text)
{
    json_t *cand = json_array_get(json_object_get(resp, "candidates"), 0), *sc, *r;
    const char *block = gmcp_json_str(gmcp_json_obj(resp, "promptFeedback"), "blockReason");
    const char *finish = gmcp_json_str(cand, "finishReason");
    if (block)
        return gmcp_text_result(apr_psprintf(c->pool,
                                             "Gemini refused the prompt (blocked: "
                                             "%s). Rephrase it and try again.",
                                             block),
                                1);
    if (!cand) return gmcp_text_result("Gemini returned no answer (no candidates)", 1);
    if (!text) {
        return gmcp_text_result(apr_psprintf(c->pool,
                                             "Gemini returned no text (finish "
                                             "reason: %s)%s",
                                             finish ? finish : "unknown",
                                             finish && !strcmp(finish, "SAFETY")
                                                 ? ": the answer was withheld by safety filters"
                                                 : ""),
                                1);
    }
    sc = json_pack("{s:s, s:s, s:o}", "text", text, "model", model, "usage", usage_of(resp));
    if (finish) json_object_set_new(sc, "finish_reason", json_string(finish));
    if (gmcp_json_str(resp, "modelVersion"))
        json_object_set_new(sc, "model_version", json_string(gmcp_json_str(resp, "modelVersion")));
    r = gmcp_text_result(text, 0);
    json_object_set_new(r, "structuredContent", sc);
    return r;
}

typedef struct {
    gmcp_call *c;
    const char *text;
    json_t *last; /* last chunk (usage and finish reason are cumulative) */
    json_t *error;
    int n;
} stream_state;

static apr_status_t on_chunk(json_t *chunk, void *baton)
{
    stream_state *s = baton;
    const char *t;
    if (json_object_get(chunk, "error")) {
        s->error = json_incref(chunk);
        return GMCP_EUPSTREAM;
    }
    t = gmcp_gemini_text(s->c->pool, chunk);
    if (t) s->text = s->text ? apr_pstrcat(s->c->pool, s->text, t, NULL) : t;
    json_decref(s->last);
    s->last = json_incref(chunk);
    s->n++;
    /* Forward at once: progress grows with the text, the message is the text so far. */
    gmcp_progress(s->c, s->text ? (double)strlen(s->text) : (double)s->n, 0, s->text);
    return APR_SUCCESS;
}

json_t *gmcp_tool_run_generate(gmcp_call *c, gmcp_gemini *g, const char *model, const char *req,
                               json_t **final, const char **text)
{
    gmcp_gemini_error err;
    json_t *result, *resp = NULL;
    *final = NULL;
    *text = NULL;
    if (c->progress_token) {
        stream_state s;
        apr_status_t rv;
        memset(&s, 0, sizeof(s));
        s.c = c;
        rv = gmcp_gemini_stream(
            g, apr_pstrcat(c->pool, "/v1beta/", model, ":streamGenerateContent?alt=sse", NULL), req,
            on_chunk, &s, &err);
        /* An error event ends the stream from our side (on_chunk stops it), which the
         * client counts as the consumer having had enough: look for it first. */
        if (s.error) {
            json_t *e = json_object_get(s.error, "error");
            json_decref(s.last);
            result = gmcp_text_result(
                apr_psprintf(c->pool, "Gemini error in the stream: %s",
                             gmcp_json_str(e, "message") ? gmcp_json_str(e, "message") : "unknown"),
                1);
            json_decref(s.error);
            return result;
        }
        if (rv != APR_SUCCESS) {
            json_decref(s.last);
            return gmcp_tool_error_result(c, &err);
        }
        /* The last chunk carries the finish reason and cumulative usage. */
        resp = s.last;
        *text = s.text;
    }
    else {
        if (gmcp_gemini_call_text(g,
                                  apr_pstrcat(c->pool, "/v1beta/", model, ":generateContent", NULL),
                                  req, &resp, &err)
            != APR_SUCCESS)
            return gmcp_tool_error_result(c, &err);
        *text = gmcp_gemini_text(c->pool, resp);
    }
    result = generate_result(c, strchr(model, '/') + 1, resp, *text);
    if (json_is_true(json_object_get(result, "isError"))) {
        json_decref(resp);
        *text = NULL;
    }
    else {
        *final = resp;
    }
    return result;
}

static json_t *t_generate(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL, *contents, *req, *gc, *final = NULL;
    gmcp_gemini *g = gmcp_tool_client(c, conf, &result);
    const char *model, *sys, *text;
    if (!g) return result;
    if (!(model = gmcp_tool_model(c, args, conf->default_model, &result))) return result;
    if (!(contents = contents_arg(c, conf, args, &result))) return result;
    req = json_pack("{s:o}", "contents", contents);
    if ((sys = gmcp_json_str(args, "system_instruction")))
        json_object_set_new(req, "systemInstruction",
                            json_pack("{s:[{s:s}]}", "parts", "text", sys));
    if ((gc = gmcp_tool_generation_config(args))) json_object_set_new(req, "generationConfig", gc);
    if (json_object_get(args, "safety_settings"))
        json_object_set(req, "safetySettings", json_object_get(args, "safety_settings"));
    result = gmcp_tool_run_generate(c, g, model, gmcp_json_dump(c->pool, req), &final, &text);
    json_decref(req);
    json_decref(final);
    return result;
}

/* ---- gemini_count_tokens ------------------------------------------------------------------ */

static json_t *t_count_tokens(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL, *contents, *req, *resp = NULL;
    gmcp_gemini *g = gmcp_tool_client(c, conf, &result);
    const char *model;
    gmcp_gemini_error err;
    json_int_t n;
    if (!g) return result;
    if (!(model = gmcp_tool_model(c, args, conf->default_model, &result))) return result;
    if (json_is_array(json_object_get(args, "contents")))
        contents = json_incref(json_object_get(args, "contents"));
    else if (gmcp_json_str(args, "text"))
        contents = json_pack("[{s:s, s:[{s:s}]}]", "role", "user", "parts", "text",
                             gmcp_json_str(args, "text"));
    else
        return gmcp_text_result("text (or contents) is required", 1);
    req = json_pack("{s:o}", "contents", contents);
    if (gmcp_gemini_call(g, "POST", apr_pstrcat(c->pool, "/v1beta/", model, ":countTokens", NULL),
                         req, &resp, &err)
        != APR_SUCCESS) {
        json_decref(req);
        return gmcp_tool_error_result(c, &err);
    }
    json_decref(req);
    n = json_integer_value(json_object_get(resp, "totalTokens"));
    json_decref(resp);
    result =
        gmcp_text_result(apr_psprintf(c->pool, "%" APR_INT64_T_FMT " tokens", (apr_int64_t)n), 0);
    json_object_set_new(
        result, "structuredContent",
        json_pack("{s:I, s:s}", "total_tokens", n, "model", strchr(model, '/') + 1));
    return result;
}

/* ---- gemini_embed ------------------------------------------------------------------------- */

static json_t *t_embed(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL, *texts = json_object_get(args, "texts"), *reqs, *req, *resp = NULL;
    json_t *t, *vectors, *e;
    gmcp_gemini *g = gmcp_tool_client(c, conf, &result);
    const char *model, *task = gmcp_json_str(args, "task_type");
    json_t *dims = json_object_get(args, "output_dimensionality");
    gmcp_gemini_error err;
    size_t i;
    if (!g) return result;
    if (!(model = gmcp_tool_model(c, args, GMCP_GEMINI_EMBED_MODEL, &result))) return result;
    if (!json_is_array(texts) || json_array_size(texts) == 0 || json_array_size(texts) > 100)
        return gmcp_text_result("texts must hold 1 to 100 strings", 1);
    reqs = json_array();
    json_array_foreach(texts, i, t)
    {
        json_t *one = json_pack("{s:s, s:{s:s, s:[{s:O}]}}", "model", model, "content", "role",
                                "user", "parts", "text", t);
        if (task) json_object_set_new(one, "taskType", json_string(task));
        if (dims) json_object_set(one, "outputDimensionality", dims);
        json_array_append_new(reqs, one);
    }
    req = json_pack("{s:o}", "requests", reqs);
    if (gmcp_gemini_call(g, "POST",
                         apr_pstrcat(c->pool, "/v1beta/", model, ":batchEmbedContents", NULL), req,
                         &resp, &err)
        != APR_SUCCESS) {
        json_decref(req);
        return gmcp_tool_error_result(c, &err);
    }
    json_decref(req);
    vectors = json_array();
    json_array_foreach(json_object_get(resp, "embeddings"), i, e)
        json_array_append(vectors, json_object_get(e, "values"));
    json_decref(resp);
    result = gmcp_text_result(gmcp_json_dump(c->pool, vectors), 0);
    json_object_set_new(result, "structuredContent",
                        json_pack("{s:s, s:I, s:o}", "model", strchr(model, '/') + 1, "dimensions",
                                  (json_int_t)json_array_size(json_array_get(vectors, 0)),
                                  "embeddings", vectors));
    return result;
}

/* ---- gemini_list_models ------------------------------------------------------------------- */

static json_t *t_list_models(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL, *resp = NULL, *models, *m;
    gmcp_gemini *g = gmcp_tool_client(c, conf, &result);
    json_int_t size = json_integer_value(json_object_get(args, "page_size"));
    const char *token = gmcp_json_str(args, "page_token"), *path, *s;
    gmcp_gemini_error err;
    size_t i;
    if (!g) return result;
    if (token)
        for (s = token; *s; s++)
            if (!(apr_isalnum(*s) || *s == '-' || *s == '_' || *s == '='))
                return gmcp_text_result("invalid page_token", 1);
    path = apr_psprintf(c->pool, "/v1beta/models?pageSize=%d%s%s",
                        size > 0 && size <= 1000 ? (int)size : 50, token ? "&pageToken=" : "",
                        token ? token : "");
    if (gmcp_gemini_call(g, "GET", path, NULL, &resp, &err) != APR_SUCCESS)
        return gmcp_tool_error_result(c, &err);
    models = json_array();
    json_array_foreach(json_object_get(resp, "models"), i, m)
    {
        json_t *o = json_pack(
            "{s:s?, s:s?, s:s?, s:I, s:I, s:O?}", "name", gmcp_json_str(m, "name"), "display_name",
            gmcp_json_str(m, "displayName"), "description", gmcp_json_str(m, "description"),
            "input_token_limit", json_integer_value(json_object_get(m, "inputTokenLimit")),
            "output_token_limit", json_integer_value(json_object_get(m, "outputTokenLimit")),
            "methods", json_object_get(m, "supportedGenerationMethods"));
        json_array_append_new(models, o);
    }
    result = json_pack("{s:o}", "models", models);
    if (gmcp_json_str(resp, "nextPageToken"))
        json_object_set_new(result, "next_page_token",
                            json_string(gmcp_json_str(resp, "nextPageToken")));
    json_decref(resp);
    {
        json_t *r = gmcp_text_result(gmcp_json_dump(c->pool, result), 0);
        json_object_set_new(r, "structuredContent", result);
        return r;
    }
}

/* ---- definitions ---------------------------------------------------------------------------- */

#define USAGE_SCHEMA                                                    \
    "{\"type\":\"object\",\"properties\":{\"prompt_tokens\":{\"type\":" \
    "\"integer\"},\"output_tokens\":{\"type\":\"integer\"},\"total_tokens\":{\"type\":\"integer\"}}}"

/* gemini_usage: what the transport knows about the caller's key, as a tool result. */
static json_t *t_usage(gmcp_call *c, json_t *args, void *baton)
{
    const char *why = "usage is not available on this transport";
    json_t *rep = c->ops->usage_report ? c->ops->usage_report(c, &why) : NULL;
    (void)args;
    (void)baton;
    if (!rep) return gmcp_text_result(apr_psprintf(c->pool, "Usage unavailable: %s", why), 1);
    return gmcp_tool_structured(gmcp_text_result(gmcp_json_dump(c->pool, rep), 0), rep);
}

static const gmcp_tool TOOLS[] = {
    {"gemini_generate", "Generate with Gemini",
     "Generate text with a Google Gemini model from a prompt (or full Gemini contents), "
     "optionally with a system instruction, generation settings, JSON output, safety "
     "settings and references to uploaded files. With a progress token the answer streams "
     "as progress notifications carrying the text so far; the result always holds the whole "
     "text and the token usage.",
     "{\"type\":\"object\",\"properties\":{"
     "\"prompt\":{\"type\":\"string\",\"description\":\"The user's message\"},"
     "\"contents\":{\"type\":\"array\",\"description\":\"Gemini contents (role + parts), "
     "instead of prompt\",\"items\":{\"type\":\"object\"}},"
     "\"model\":{\"type\":\"string\",\"description\":\"Model name, e.g. gemini-2.5-flash\"},"
     "\"system_instruction\":{\"type\":\"string\"},"
     "\"temperature\":{\"type\":\"number\",\"minimum\":0,\"maximum\":2},"
     "\"top_p\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1},"
     "\"top_k\":{\"type\":\"integer\",\"minimum\":1},"
     "\"max_output_tokens\":{\"type\":\"integer\",\"minimum\":1},"
     "\"stop_sequences\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":5},"
     "\"candidate_count\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":8},"
     "\"response_mime_type\":{\"type\":\"string\",\"enum\":[\"text/plain\","
     "\"application/json\",\"text/x.enum\"]},"
     "\"response_schema\":{\"type\":\"object\",\"description\":\"OpenAPI-subset schema for "
     "JSON output (types in upper case)\"},"
     "\"safety_settings\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
     "{\"category\":{\"type\":\"string\"},\"threshold\":{\"type\":\"string\"}}}},"
     "\"files\":{\"type\":\"array\",\"description\":\"Gemini Files API references\","
     "\"items\":{\"type\":\"object\",\"properties\":{\"uri\":{\"type\":\"string\"},"
     "\"mime_type\":{\"type\":\"string\"}},\"required\":[\"uri\"]}}},"
     "\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"},\"model\":{\"type\":"
     "\"string\"},\"finish_reason\":{\"type\":\"string\"},\"model_version\":{\"type\":"
     "\"string\"},\"usage\":" USAGE_SCHEMA "},\"required\":[\"text\",\"model\",\"usage\"]}",
     "{\"readOnlyHint\":true,\"openWorldHint\":true}", GMCP_TOOL_SPENDS_TOKENS, t_generate, NULL},
    {"gemini_count_tokens", "Count Gemini tokens",
     "Count how many tokens a text (or Gemini contents) takes for a model.",
     "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"},"
     "\"contents\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}},"
     "\"model\":{\"type\":\"string\"}},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"total_tokens\":{\"type\":\"integer\"},"
     "\"model\":{\"type\":\"string\"}},\"required\":[\"total_tokens\"]}",
     "{\"readOnlyHint\":true,\"openWorldHint\":true}", 0, t_count_tokens, NULL},
    {"gemini_embed", "Embed with Gemini",
     "Compute embedding vectors for one or more texts (default model " GMCP_GEMINI_EMBED_MODEL ").",
     "{\"type\":\"object\",\"properties\":{\"texts\":{\"type\":\"array\",\"items\":{\"type\":"
     "\"string\"},\"minItems\":1,\"maxItems\":100},\"model\":{\"type\":\"string\"},"
     "\"task_type\":{\"type\":\"string\",\"enum\":[\"RETRIEVAL_QUERY\",\"RETRIEVAL_DOCUMENT\","
     "\"SEMANTIC_SIMILARITY\",\"CLASSIFICATION\",\"CLUSTERING\",\"QUESTION_ANSWERING\","
     "\"FACT_VERIFICATION\",\"CODE_RETRIEVAL_QUERY\"]},\"output_dimensionality\":{\"type\":"
     "\"integer\",\"minimum\":1}},\"required\":[\"texts\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\"},\"dimensions\":"
     "{\"type\":\"integer\"},\"embeddings\":{\"type\":\"array\",\"items\":{\"type\":\"array\","
     "\"items\":{\"type\":\"number\"}}}},\"required\":[\"embeddings\"]}",
     "{\"readOnlyHint\":true,\"openWorldHint\":true}", GMCP_TOOL_SPENDS_TOKENS, t_embed, NULL},
    {"gemini_list_models", "List Gemini models",
     "List the Gemini models this server's API key can use, with their token limits and "
     "supported methods.",
     "{\"type\":\"object\",\"properties\":{\"page_size\":{\"type\":\"integer\",\"minimum\":1,"
     "\"maximum\":1000},\"page_token\":{\"type\":\"string\"}},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"models\":{\"type\":\"array\",\"items\":{\"type\":"
     "\"object\"}},\"next_page_token\":{\"type\":\"string\"}},\"required\":[\"models\"]}",
     "{\"readOnlyHint\":true,\"openWorldHint\":true}", 0, t_list_models, NULL},
    {"gemini_usage", "Your usage and limits",
     "Your own usage of this server (requests, errors, Gemini tokens, bytes: this hour, "
     "today and this month), your limits (request rate, burst, token rate, in-flight cap) "
     "and what remains of your token quota.",
     "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"key_id\":{\"type\":\"string\"},"
     "\"limits\":{\"type\":\"object\"},\"usage\":{\"type\":\"object\"},\"quota\":"
     "{\"type\":\"object\"}},\"required\":[\"key_id\",\"limits\",\"usage\"]}",
     "{\"readOnlyHint\":true,\"openWorldHint\":false}", 0, t_usage, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL}};

static json_t *r_model(gmcp_call *c, const char *uri, json_t *vars, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    const char *model =
        gmcp_gemini_model_path(c->pool, json_string_value(json_object_get(vars, "model")));
    json_t *result = NULL, *resp = NULL, *out;
    gmcp_gemini *g = model ? gmcp_tool_client(c, conf, &result) : NULL;
    gmcp_gemini_error err;
    json_decref(result);
    if (!g
        || gmcp_gemini_call(g, "GET", apr_pstrcat(c->pool, "/v1beta/", model, NULL), NULL, &resp,
                            &err)
            != APR_SUCCESS)
        return NULL; /* unknown model (or Gemini unreachable): not found */
    out = json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType", "application/json",
                    "text", gmcp_json_dump(c->pool, resp));
    json_decref(resp);
    return out;
}

static const gmcp_resource_template TEMPLATES[] = {
    {"gemini://models/{model}", "Gemini model", NULL,
     "A Gemini model's details: limits, supported methods, defaults", "application/json", r_model},
    {NULL, NULL, NULL, NULL, NULL, NULL}};

const gmcp_provider *gmcp_gemini_provider(apr_pool_t *p, const gmcp_gemini_conf *conf)
{
    gmcp_provider *prov = apr_pcalloc(p, sizeof(*prov));
    gmcp_tool *all;
    int n = 0, m = 0, k = 0, i;
    while (TOOLS[n].name) n++;
    while (gmcp_chat_tools[m].name) m++;
    while (gmcp_file_tools[k].name) k++;
    /* generate, count, embed, list, usage, the chat tools, the file tools; one NULL
     * entry ends it. */
    all = apr_pcalloc(p, sizeof(*all) * (size_t)(n + m + k + 1));
    for (i = 0; i < n; i++) all[i] = TOOLS[i];
    for (i = 0; i < m; i++) all[n + i] = gmcp_chat_tools[i];
    for (i = 0; i < k; i++) all[n + m + i] = gmcp_file_tools[i];
    prov->name = "gemini";
    prov->baton = (void *)conf;
    prov->tools = all;
    {
        gmcp_resource_template *t = apr_pcalloc(p, sizeof(*t) * 3);
        t[0] = gmcp_chat_templates[0];
        t[1] = TEMPLATES[0];
        prov->templates = t;
    }
    return prov;
}
