/* mod_gemini_mcp_fixtures.c — TEST-ONLY module: the MCP conformance suite's fixtures.
 *
 * Registers exactly the tool, resource and prompt set that
 * @modelcontextprotocol/conformance expects, through the same provider interface any
 * module uses. Built by apxs.mk, never installed by default; load it only in tests. */
#include <httpd.h>
#include <http_config.h>
#include <ap_provider.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <apr_time.h>
#include <stdlib.h>
#include <string.h>

#include "gmcp_provider.h"

/* 1x1 PNG and an empty 8 kHz mono WAV. */
#define PNG_B64 \
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
#define WAV_B64 "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA="

#define EMPTY_SCHEMA "{\"type\":\"object\",\"properties\":{}}"

static json_t *text_item(const char *text)
{
    return json_pack("{s:s, s:s}", "type", "text", "text", text);
}

static json_t *content(json_t *items) { return json_pack("{s:o}", "content", items); }

static json_t *t_simple_text(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return content(json_pack("[o]", text_item("This is a simple text response for testing.")));
}

static json_t *t_image(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return content(
        json_pack("[{s:s, s:s, s:s}]", "type", "image", "data", PNG_B64, "mimeType", "image/png"));
}

static json_t *t_audio(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return content(
        json_pack("[{s:s, s:s, s:s}]", "type", "audio", "data", WAV_B64, "mimeType", "audio/wav"));
}

static json_t *t_embedded(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return content(json_pack("[{s:s, s:{s:s, s:s, s:s}}]", "type", "resource", "resource", "uri",
                             "test://embedded-resource", "mimeType", "text/plain", "text",
                             "This is an embedded resource content."));
}

static json_t *t_mixed(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return content(json_pack("[o, {s:s, s:s, s:s}, {s:s, s:{s:s, s:s, s:s}}]",
                             text_item("Multiple content types test:"), "type", "image", "data",
                             PNG_B64, "mimeType", "image/png", "type", "resource", "resource",
                             "uri", "test://mixed-content-resource", "mimeType", "application/json",
                             "text", "{\"test\":\"data\",\"value\":123}"));
}

static json_t *t_logging(gmcp_call *c, json_t *a, void *b)
{
    static const char *const msgs[] = {"Tool execution started", "Tool processing data",
                                       "Tool execution completed"};
    int i;
    (void)a;
    (void)b;
    for (i = 0; i < 3; i++) {
        if (i) apr_sleep(apr_time_from_msec(50));
        gmcp_log(c, GMCP_LOG_INFO, "test_tool_with_logging", json_string(msgs[i]));
    }
    return content(json_pack("[o]", text_item("Tool with logging executed successfully")));
}

static json_t *t_progress(gmcp_call *c, json_t *a, void *b)
{
    int i;
    (void)a;
    (void)b;
    for (i = 0; i <= 2; i++) {
        if (i) apr_sleep(apr_time_from_msec(50));
        gmcp_progress(c, i * 50.0, 100.0, apr_psprintf(c->pool, "Completed step %d of 3", i + 1));
    }
    return content(json_pack("[o]", text_item("Tool with progress executed successfully")));
}

static json_t *t_error(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return gmcp_text_result("This tool intentionally returns an error for testing", 1);
}

/* Ask the client (a blocking request with a session, an input request on the
 * stateless revision) and turn its answer into a tool result. */
static json_t *ask_result(gmcp_call *c, const char *method, json_t *params, const char *prefix)
{
    json_t *res = NULL, *out;
    const char *text;
    char *dump = NULL;
    switch (gmcp_input(c, "input", method, params, &res)) {
    case GMCP_INPUT_OK: break;
    case GMCP_INPUT_NEEDED: return gmcp_input_required(c, NULL);
    case GMCP_INPUT_UNSUPPORTED:
        return gmcp_text_result(
            apr_psprintf(c->pool,
                         "%s failed: the client did not declare "
                         "the '%s' capability",
                         method,
                         !strcmp(method, "sampling/createMessage") ? "sampling" : "elicitation"),
            1);
    default:
        return gmcp_text_result(apr_psprintf(c->pool, "%s failed: %s", method, c->error_message),
                                1);
    }
    /* Sampling answers carry content.text; elicitation answers action + content. */
    text = json_string_value(json_object_get(json_object_get(res, "content"), "text"));
    if (!text) text = dump = json_dumps(res, JSON_COMPACT);
    out = content(
        json_pack("[o]", text_item(apr_pstrcat(c->pool, prefix, text ? text : "{}", NULL))));
    free(dump);
    json_decref(res);
    return out;
}

static json_t *t_sampling(gmcp_call *c, json_t *a, void *b)
{
    const char *prompt = json_string_value(json_object_get(a, "prompt"));
    (void)b;
    return ask_result(c, "sampling/createMessage",
                      json_pack("{s:[{s:s, s:{s:s, s:s}}], s:i}", "messages", "role", "user",
                                "content", "type", "text", "text", prompt ? prompt : "",
                                "maxTokens", 100),
                      "LLM response: ");
}

static json_t *t_elicitation(gmcp_call *c, json_t *a, void *b)
{
    const char *message = json_string_value(json_object_get(a, "message"));
    (void)b;
    return ask_result(c, "elicitation/create",
                      json_pack("{s:s, s:{s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}}, s:[s, s]}}",
                                "message", message ? message : "Please provide your details",
                                "requestedSchema", "type", "object", "properties", "username",
                                "type", "string", "description", "Your username", "email", "type",
                                "string", "description", "Your email address", "required",
                                "username", "email"),
                      "User response: ");
}

static json_t *t_sep1034(gmcp_call *c, json_t *a, void *b)
{
    json_error_t je;
    json_t *schema = json_loads(
        "{\"type\":\"object\",\"properties\":{"
        "\"name\":{\"type\":\"string\",\"description\":\"User name\",\"default\":\"John Doe\"},"
        "\"age\":{\"type\":\"integer\",\"description\":\"User age\",\"default\":30},"
        "\"score\":{\"type\":\"number\",\"description\":\"User score\",\"default\":95.5},"
        "\"status\":{\"type\":\"string\",\"description\":\"User status\","
        "\"enum\":[\"active\",\"inactive\",\"pending\"],\"default\":\"active\"},"
        "\"verified\":{\"type\":\"boolean\",\"description\":\"Verification status\","
        "\"default\":true}},\"required\":[]}",
        0, &je);
    (void)a;
    (void)b;
    return ask_result(c, "elicitation/create",
                      json_pack("{s:s, s:o}", "message",
                                "Please review and update the form fields with defaults",
                                "requestedSchema", schema),
                      "Elicitation completed: ");
}

static json_t *t_sep1330(gmcp_call *c, json_t *a, void *b)
{
    json_error_t je;
    json_t *schema = json_loads(
        "{\"type\":\"object\",\"properties\":{"
        "\"untitledSingle\":{\"type\":\"string\",\"description\":\"Choose an option\","
        "\"enum\":[\"option1\",\"option2\",\"option3\"]},"
        "\"titledSingle\":{\"type\":\"string\",\"description\":\"Choose a titled option\","
        "\"oneOf\":[{\"const\":\"value1\",\"title\":\"First Option\"},"
        "{\"const\":\"value2\",\"title\":\"Second Option\"},"
        "{\"const\":\"value3\",\"title\":\"Third Option\"}]},"
        "\"legacyEnum\":{\"type\":\"string\",\"description\":\"Choose a legacy option\","
        "\"enum\":[\"opt1\",\"opt2\",\"opt3\"],"
        "\"enumNames\":[\"Option One\",\"Option Two\",\"Option Three\"]},"
        "\"untitledMulti\":{\"type\":\"array\",\"description\":\"Choose multiple options\","
        "\"items\":{\"type\":\"string\",\"enum\":[\"option1\",\"option2\",\"option3\"]}},"
        "\"titledMulti\":{\"type\":\"array\",\"description\":\"Choose multiple titled options\","
        "\"items\":{\"anyOf\":[{\"const\":\"value1\",\"title\":\"First Choice\"},"
        "{\"const\":\"value2\",\"title\":\"Second Choice\"},"
        "{\"const\":\"value3\",\"title\":\"Third Choice\"}]}}},\"required\":[]}",
        0, &je);
    (void)a;
    (void)b;
    return ask_result(
        c, "elicitation/create",
        json_pack("{s:s, s:o}", "message", "Please select options", "requestedSchema", schema),
        "Elicitation completed: ");
}

static json_t *t_schema_2020_12(gmcp_call *c, json_t *a, void *b)
{
    const char *name = json_string_value(json_object_get(a, "name"));
    (void)b;
    return content(
        json_pack("[o]",
                  text_item(apr_psprintf(c->pool, "JSON Schema 2020-12 tool called with name=%s",
                                         name ? name : ""))));
}

static json_t *t_reconnection(gmcp_call *c, json_t *a, void *b)
{
    (void)a;
    (void)b;
    /* Close the response stream before the result exists: the client reconnects with
     * GET + Last-Event-ID and receives the result from the event store. */
    gmcp_detach(c);
    apr_sleep(apr_time_from_msec(100));
    return content(json_pack("[o]", text_item("Reconnection test completed successfully")));
}

/* ---- 2026-07-28 fixtures: capabilities and multi-round-trip requests (MRTR) ---------- */

static json_t *elicit(const char *message, const char *prop, const char *type)
{
    return json_pack("{s:s, s:{s:s, s:{s:{s:s}}, s:[s]}}", "message", message, "requestedSchema",
                     "type", "object", "properties", prop, "type", type, "required", prop);
}

static json_t *sample(const char *text, int max_tokens)
{
    return json_pack("{s:[{s:s, s:{s:s, s:s}}], s:i}", "messages", "role", "user", "content",
                     "type", "text", "text", text, "maxTokens", max_tokens);
}

/* content.<field> of an elicitation answer, or "unknown". */
static const char *answer_text(json_t *answer, const char *field)
{
    const char *v = json_string_value(json_object_get(json_object_get(answer, "content"), field));
    return v ? v : "unknown";
}

static const char *state_kind(gmcp_call *c)
{
    return c->state ? json_string_value(json_object_get(c->state, "kind")) : NULL;
}

static json_t *t_missing_capability(gmcp_call *c, json_t *a, void *b)
{
    (void)a;
    (void)b;
    if (!c->client_caps || !json_object_get(c->client_caps, "sampling")) {
        c->error_code = -32021;
        c->error_message = "Missing required client capability: sampling";
        c->error_data = json_pack("{s:{s:{}}}", "requiredCapabilities", "sampling");
        return NULL;
    }
    return gmcp_text_result("Success", 0);
}

static json_t *t_irr_elicitation(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL;
    gmcp_input_result rv = gmcp_input(c, "user_name", "elicitation/create",
                                      elicit("What is your name?", "name", "string"), &ans);
    json_t *out;
    (void)a;
    (void)b;
    if (rv == GMCP_INPUT_NEEDED) return gmcp_input_required(c, NULL);
    if (rv != GMCP_INPUT_OK) return gmcp_text_result("elicitation is not available", 1);
    out = gmcp_text_result(apr_psprintf(c->pool, "Hello, %s!", answer_text(ans, "name")), 0);
    json_decref(ans);
    return out;
}

static json_t *t_irr_sampling(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL, *out;
    gmcp_input_result rv = gmcp_input(c, "capital_question", "sampling/createMessage",
                                      sample("What is the capital of France?", 100), &ans);
    const char *t;
    (void)a;
    (void)b;
    if (rv == GMCP_INPUT_NEEDED) return gmcp_input_required(c, NULL);
    if (rv != GMCP_INPUT_OK) return gmcp_text_result("sampling is not available", 1);
    t = json_string_value(json_object_get(json_object_get(ans, "content"), "text"));
    out = gmcp_text_result(apr_psprintf(c->pool, "Sampled: %s", t ? t : ""), 0);
    json_decref(ans);
    return out;
}

static json_t *t_irr_roots(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL, *out;
    gmcp_input_result rv = gmcp_input(c, "client_roots", "roots/list", json_object(), &ans);
    (void)a;
    (void)b;
    if (rv == GMCP_INPUT_NEEDED) return gmcp_input_required(c, NULL);
    if (rv != GMCP_INPUT_OK) return gmcp_text_result("roots are not available", 1);
    out = gmcp_text_result(
        apr_psprintf(c->pool, "Roots: %d", (int)json_array_size(json_object_get(ans, "roots"))), 0);
    json_decref(ans);
    return out;
}

static json_t *confirm_request(void) { return elicit("Please confirm", "ok", "boolean"); }

static json_t *t_irr_request_state(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL;
    const char *kind = state_kind(c);
    gmcp_input_result rv;
    (void)a;
    (void)b;
    rv = gmcp_input(c, "confirm", "elicitation/create", confirm_request(), &ans);
    if (rv == GMCP_INPUT_OK && kind && !strcmp(kind, "request-state")) {
        json_decref(ans);
        return gmcp_text_result("state-ok: requestState validated", 0);
    }
    json_decref(ans);
    if (rv == GMCP_INPUT_OK) /* answered, but the state did not come back: ask again */
        gmcp_input(c, "confirm_again", "elicitation/create", confirm_request(), &ans);
    return gmcp_input_required(c, json_pack("{s:s}", "kind", "request-state"));
}

static json_t *t_irr_multiple(gmcp_call *c, json_t *a, void *b)
{
    json_t *name = NULL, *greet = NULL, *roots = NULL, *out;
    int needed = 0;
    (void)a;
    (void)b;
    needed += gmcp_input(c, "user_name", "elicitation/create",
                         elicit("What is your name?", "name", "string"), &name)
        == GMCP_INPUT_NEEDED;
    needed += gmcp_input(c, "greeting", "sampling/createMessage", sample("Generate a greeting", 50),
                         &greet)
        == GMCP_INPUT_NEEDED;
    needed +=
        gmcp_input(c, "client_roots", "roots/list", json_object(), &roots) == GMCP_INPUT_NEEDED;
    if (needed || !state_kind(c)) {
        json_decref(name);
        json_decref(greet);
        json_decref(roots);
        return gmcp_input_required(c, json_pack("{s:s}", "kind", "multiple-inputs"));
    }
    out = gmcp_text_result(
        apr_psprintf(c->pool, "All inputs received: name=%s", answer_text(name, "name")), 0);
    json_decref(name);
    json_decref(greet);
    json_decref(roots);
    return out;
}

static json_t *t_irr_multi_round(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL, *out;
    json_int_t round = c->state ? json_integer_value(json_object_get(c->state, "round")) : 0;
    (void)a;
    (void)b;
    if (round == 1
        && gmcp_input(c, "step1", "elicitation/create",
                      elicit("Step 1: What is your name?", "name", "string"), &ans)
            == GMCP_INPUT_OK) {
        const char *name = apr_pstrdup(c->pool, answer_text(ans, "name"));
        json_decref(ans);
        json_decref(c->pending_inputs);
        c->pending_inputs = NULL;
        gmcp_input(c, "step2", "elicitation/create",
                   elicit("Step 2: What is your favorite color?", "color", "string"), &ans);
        return gmcp_input_required(c, json_pack("{s:i, s:s}", "round", 2, "name", name));
    }
    if (round == 2
        && gmcp_input(c, "step2", "elicitation/create",
                      elicit("Step 2: What is your favorite color?", "color", "string"), &ans)
            == GMCP_INPUT_OK) {
        out = gmcp_text_result(apr_psprintf(c->pool, "Multi-round complete: %s likes %s",
                                            json_string_value(json_object_get(c->state, "name")),
                                            answer_text(ans, "color")),
                               0);
        json_decref(ans);
        return out;
    }
    json_decref(c->pending_inputs);
    c->pending_inputs = NULL;
    gmcp_input(c, "step1", "elicitation/create",
               elicit("Step 1: What is your name?", "name", "string"), &ans);
    return gmcp_input_required(c, json_pack("{s:i}", "round", 1));
}

static json_t *t_irr_tampered(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL;
    const char *kind = state_kind(c);
    gmcp_input_result rv = gmcp_input(c, "confirm", "elicitation/create", confirm_request(), &ans);
    (void)a;
    (void)b;
    json_decref(ans);
    /* A tampered state never gets here: the server rejects it before the call. */
    if (rv == GMCP_INPUT_OK && kind && !strcmp(kind, "tamper-test"))
        return gmcp_text_result("integrity-ok: state verified", 0);
    return gmcp_input_required(c, json_pack("{s:s}", "kind", "tamper-test"));
}

static json_t *t_irr_capabilities(gmcp_call *c, json_t *a, void *b)
{
    json_t *e = NULL, *sres = NULL;
    gmcp_input_result er = gmcp_input(c, "elicit_input", "elicitation/create",
                                      elicit("Elicitation input", "value", "string"), &e);
    gmcp_input_result sr = gmcp_input(c, "sample_input", "sampling/createMessage",
                                      sample("Sample request", 50), &sres);
    (void)a;
    (void)b;
    json_decref(e);
    json_decref(sres);
    if (er == GMCP_INPUT_NEEDED || sr == GMCP_INPUT_NEEDED)
        return gmcp_input_required(c, json_pack("{s:s}", "kind", "capabilities-test"));
    if (er == GMCP_INPUT_OK || sr == GMCP_INPUT_OK)
        return gmcp_text_result(apr_psprintf(c->pool, "capabilities-ok: received%s%s",
                                             er == GMCP_INPUT_OK ? " elicit_input" : "",
                                             sr == GMCP_INPUT_OK ? " sample_input" : ""),
                                0);
    return gmcp_text_result("No supported capabilities declared", 0);
}

static json_t *t_streaming(gmcp_call *c, json_t *a, void *b)
{
    (void)a;
    (void)b;
    gmcp_progress(c, 50, 100, "halfway");
    return gmcp_text_result("Streaming complete", 0);
}

static json_t *t_logging_tool(gmcp_call *c, json_t *a, void *b)
{
    (void)a;
    (void)b;
    gmcp_log(c, GMCP_LOG_INFO, "test_logging_tool",
             json_string("Diagnostic trace logging activated"));
    return gmcp_text_result("Logging evaluated", 0);
}

static json_t *t_header_param(gmcp_call *c, json_t *a, void *b)
{
    const char *region = json_string_value(json_object_get(a, "region"));
    (void)b;
    return gmcp_text_result(apr_psprintf(c->pool, "region=%s", region ? region : ""), 0);
}

/* ---- the tasks extension's fixtures (conformance 0.2.0-alpha.12, tasks-*) ---------- */

static json_t *t_greet(gmcp_call *c, json_t *a, void *b)
{
    const char *name = json_string_value(json_object_get(a, "name"));
    (void)b;
    return gmcp_text_result(apr_psprintf(c->pool, "Hello, %s!", name ? name : "World"), 0);
}

/* Sleep `seconds` (reporting progress each second), stopping as soon as it is
 * cancelled. */
static json_t *t_slow_compute(gmcp_call *c, json_t *a, void *b)
{
    double secs = json_number_value(json_object_get(a, "seconds"));
    secs = secs > 0 ? (secs < 86400 ? secs : 86400) : 0;
    const char *label = json_string_value(json_object_get(a, "label"));
    apr_time_t end = apr_time_now() + apr_time_from_msec((apr_int64_t)(secs * 1000));
    int step = 0;
    (void)b;
    while (apr_time_now() < end) {
        if (gmcp_cancelled(c)) return gmcp_text_result("cancelled", 1);
        apr_sleep(apr_time_from_msec(100));
        if (++step % 10 == 0) gmcp_progress(c, step / 10, secs, NULL);
    }
    return gmcp_text_result(
        apr_psprintf(c->pool, "Computed %s in %g s", label ? label : "result", secs), 0);
}

/* A task that ends completed with a tool error (isError) after a second. */
static json_t *t_failing_job(gmcp_call *c, json_t *a, void *b)
{
    (void)a;
    (void)b;
    apr_sleep(apr_time_from_sec(1));
    (void)gmcp_cancelled(c);
    return gmcp_text_result("The job failed: the input was rejected", 1);
}

/* A task that ends failed with a JSON-RPC error. */
static json_t *t_protocol_error_job(gmcp_call *c, json_t *a, void *b)
{
    (void)a;
    (void)b;
    c->error_code = -32603;
    c->error_message = "Internal error: the job could not run";
    return NULL;
}

static json_t *confirm_schema(const char *message)
{
    return json_pack("{s:s, s:s, s:{s:s, s:{s:{s:s}}}}", "mode", "form", "message", message,
                     "requestedSchema", "type", "object", "properties", "confirm", "type",
                     "boolean");
}

static int accepted(json_t *ans)
{
    return ans && !strcmp(json_string_value(json_object_get(ans, "action")) ?: "", "accept");
}

static json_t *t_confirm_delete(gmcp_call *c, json_t *a, void *b)
{
    const char *file = json_string_value(json_object_get(a, "filename"));
    json_t *ans = NULL, *out;
    gmcp_input_result rv;
    (void)b;
    file = file ? file : "the file";
    rv = gmcp_input(c, "confirm", "elicitation/create",
                    confirm_schema(apr_psprintf(c->pool, "Delete %s?", file)), &ans);
    if (rv == GMCP_INPUT_NEEDED) return gmcp_input_required(c, NULL);
    if (rv != GMCP_INPUT_OK) return gmcp_text_result("no confirmation", 1);
    out =
        gmcp_text_result(apr_psprintf(c->pool, accepted(ans) ? "Deleted %s" : "Kept %s", file), 0);
    json_decref(ans);
    return out;
}

/* Two input requests outstanding at once: each asked from its own thread, so both
 * are in the task's inputRequests together. */
typedef struct {
    gmcp_call *c;
    const char *key, *message; /* made before the threads: pools are not shared */
    json_t *ans;
    int rv;
} ask_job;

static void *APR_THREAD_FUNC ask_thread(apr_thread_t *th, void *d)
{
    ask_job *j = d;
    (void)th;
    j->rv = gmcp_input(j->c, j->key, "elicitation/create", confirm_schema(j->message), &j->ans);
    return NULL; /* not apr_thread_exit(): see gmcp_child_thread_start */
}

static json_t *t_multi_input(gmcp_call *c, json_t *a, void *b)
{
    ask_job jobs[2] = {{c, "first", "Confirm the first?", NULL, GMCP_INPUT_FAILED},
                       {c, "second", "Confirm the second?", NULL, GMCP_INPUT_FAILED}};
    apr_thread_t *th[2] = {NULL, NULL};
    apr_status_t st;
    apr_pool_t *p;
    int i, ok = 1;
    (void)a;
    (void)b;
    if (!c->stateless) { /* a session's client is asked one question at a time */
        for (i = 0; i < 2; i++) ask_thread(NULL, &jobs[i]);
        for (i = 0; i < 2; i++) {
            ok = ok && jobs[i].rv == GMCP_INPUT_OK;
            json_decref(jobs[i].ans);
        }
        return ok ? gmcp_text_result("Both answers received", 0)
                  : gmcp_text_result("no answers", 1);
    }
    if (apr_pool_create(&p, NULL) != APR_SUCCESS) return gmcp_text_result("cannot ask", 1);
    for (i = 0; i < 2; i++)
        if (apr_thread_create(&th[i], NULL, ask_thread, &jobs[i], p) != APR_SUCCESS) th[i] = NULL;
    for (i = 0; i < 2; i++) {
        if (th[i]) apr_thread_join(&st, th[i]);
        ok = ok && th[i] && jobs[i].rv == GMCP_INPUT_OK;
        json_decref(jobs[i].ans);
    }
    apr_pool_destroy(p);
    return ok ? gmcp_text_result("Both answers received", 0) : gmcp_text_result("no answers", 1);
}

/* An input round (MRTR) in the request first, then the task, which greets by name. */
static json_t *t_task_after_input(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL;
    gmcp_input_result rv = gmcp_input(c, "user_name", "elicitation/create",
                                      elicit("What is your name?", "name", "string"), &ans);
    (void)a;
    (void)b;
    if (rv == GMCP_INPUT_NEEDED) return gmcp_input_required(c, NULL);
    json_decref(ans);
    return rv == GMCP_INPUT_OK ? NULL : gmcp_text_result("elicitation is not available", 1);
}

static json_t *t_task_with_input(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL, *out;
    gmcp_input_result rv = gmcp_input(c, "user_name", "elicitation/create",
                                      elicit("What is your name?", "name", "string"), &ans);
    (void)a;
    (void)b;
    if (rv == GMCP_INPUT_NEEDED) return gmcp_input_required(c, NULL);
    if (rv != GMCP_INPUT_OK) return gmcp_text_result("no name was given", 1);
    out = gmcp_text_result(apr_psprintf(c->pool, "Hello, %s!", answer_text(ans, "name")), 0);
    json_decref(ans);
    return out;
}

static const gmcp_tool TOOLS[] = {
    {"test_simple_text", NULL, "Tests simple text content response", EMPTY_SCHEMA, NULL, NULL, 0,
     t_simple_text, NULL},
    {"test_image_content", NULL, "Tests image content response", EMPTY_SCHEMA, NULL, NULL, 0,
     t_image, NULL},
    {"test_audio_content", NULL, "Tests audio content response", EMPTY_SCHEMA, NULL, NULL, 0,
     t_audio, NULL},
    {"test_embedded_resource", NULL, "Tests embedded resource content response", EMPTY_SCHEMA, NULL,
     NULL, 0, t_embedded, NULL},
    {"test_multiple_content_types", NULL,
     "Tests response with multiple content types "
     "(text, image, resource)",
     EMPTY_SCHEMA, NULL, NULL, 0, t_mixed, NULL},
    {"test_tool_with_logging", NULL, "Tests tool that emits log messages during execution",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_logging, NULL},
    {"test_tool_with_progress", NULL, "Tests tool that reports progress notifications",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_progress, NULL},
    {"test_error_handling", NULL, "Tests error response handling", EMPTY_SCHEMA, NULL, NULL, 0,
     t_error, NULL},
    {"test_sampling", NULL, "Tests server-initiated sampling (LLM completion request)",
     "{\"type\":\"object\",\"properties\":{\"prompt\":{\"type\":\"string\","
     "\"description\":\"The prompt to send to the LLM\"}},\"required\":[\"prompt\"]}",
     NULL, NULL, GMCP_TOOL_STREAMS, t_sampling, NULL},
    {"test_elicitation", NULL, "Tests server-initiated elicitation (user input request)",
     "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\","
     "\"description\":\"The message to show the user\"}},\"required\":[\"message\"]}",
     NULL, NULL, GMCP_TOOL_STREAMS, t_elicitation, NULL},
    {"test_elicitation_sep1034_defaults", NULL,
     "Tests elicitation with default values for "
     "all primitive types (SEP-1034)",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_sep1034, NULL},
    {"test_elicitation_sep1330_enums", NULL,
     "Tests elicitation with enum schema "
     "improvements (SEP-1330)",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_sep1330, NULL},
    {"json_schema_2020_12_tool", NULL, "Tool with JSON Schema 2020-12 features",
     "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
     "\"$defs\":{\"address\":{\"$anchor\":\"addressDef\",\"type\":\"object\","
     "\"properties\":{\"street\":{\"type\":\"string\"},\"city\":{\"type\":\"string\"}}}},"
     "\"properties\":{\"name\":{\"type\":\"string\"},\"address\":{\"$ref\":"
     "\"#/$defs/address\"},\"contactMethod\":{\"type\":\"string\",\"enum\":[\"phone\","
     "\"email\"]},\"phone\":{\"type\":\"string\"},\"email\":{\"type\":\"string\"}},"
     "\"allOf\":[{\"anyOf\":[{\"required\":[\"phone\"]},{\"required\":[\"email\"]}]}],"
     "\"if\":{\"properties\":{\"contactMethod\":{\"const\":\"phone\"}},"
     "\"required\":[\"contactMethod\"]},\"then\":{\"required\":[\"phone\"]},"
     "\"else\":{\"required\":[\"email\"]},\"additionalProperties\":false}",
     NULL, NULL, 0, t_schema_2020_12, NULL},
    {"test_reconnection", NULL,
     "Tests SSE stream disconnection and client reconnection "
     "(SEP-1699): closes the stream before the result",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_reconnection, NULL},
    /* 2026-07-28 */
    {"test_missing_capability", NULL,
     "Test tool requiring the client's sampling "
     "capability (-32021 without it)",
     EMPTY_SCHEMA, NULL, NULL, 0, t_missing_capability, NULL},
    {"test_input_required_result_elicitation", NULL,
     "MRTR: returns InputRequiredResult "
     "with an elicitation request",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_elicitation, NULL},
    {"test_input_required_result_sampling", NULL,
     "MRTR: returns InputRequiredResult with "
     "a sampling request",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_sampling, NULL},
    {"test_input_required_result_list_roots", NULL,
     "MRTR: returns InputRequiredResult "
     "with a roots/list request",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_roots, NULL},
    {"test_input_required_result_request_state", NULL,
     "MRTR: returns InputRequiredResult "
     "with requestState",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_request_state, NULL},
    {"test_input_required_result_multiple_inputs", NULL,
     "MRTR: returns InputRequiredResult "
     "with multiple input requests",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_multiple, NULL},
    {"test_input_required_result_multi_round", NULL,
     "MRTR: multi-round "
     "InputRequiredResult workflow",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_multi_round, NULL},
    {"test_input_required_result_tampered_state", NULL,
     "MRTR: HMAC-sealed requestState "
     "integrity test",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_tampered, NULL},
    {"test_input_required_result_capabilities", NULL,
     "MRTR: only requests input the "
     "client declared capabilities for",
     EMPTY_SCHEMA, NULL, NULL, 0, t_irr_capabilities, NULL},
    {"test_streaming_elicitation", NULL, "Diagnostic tool answering on a response stream",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_streaming, NULL},
    {"test_logging_tool", NULL,
     "Diagnostic tool that logs only when the request asked "
     "for a log level",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_logging_tool, NULL},
    {"test_header_param", NULL,
     "Tool whose 'region' argument travels in the "
     "Mcp-Param-Region header (SEP-2243)",
     "{\"type\":\"object\",\"properties\":{\"region\":{\"type\":\"string\","
     "\"x-mcp-header\":\"Region\"}},\"required\":[\"region\"]}",
     NULL, NULL, 0, t_header_param, NULL},
    {"greet", NULL, "Greets by name (never a task)",
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}}}", NULL, NULL, 0,
     t_greet, NULL},
    {"slow_compute", NULL, "Takes `seconds` (a task when the client takes tasks)",
     "{\"type\":\"object\",\"properties\":{\"seconds\":{\"type\":\"number\"},"
     "\"label\":{\"type\":\"string\"}}}",
     NULL, NULL, GMCP_TOOL_TASK, t_slow_compute, NULL},
    {"failing_job", NULL, "Runs only as a task, and ends with a tool error", EMPTY_SCHEMA, NULL,
     NULL, GMCP_TOOL_TASK_REQUIRED, t_failing_job, NULL},
    {"protocol_error_job", NULL, "A task that ends failed (a JSON-RPC error)", EMPTY_SCHEMA, NULL,
     NULL, GMCP_TOOL_TASK, t_protocol_error_job, NULL},
    {"confirm_delete", NULL, "Asks to confirm, then deletes (nothing)",
     "{\"type\":\"object\",\"properties\":{\"filename\":{\"type\":\"string\"}}}", NULL, NULL,
     GMCP_TOOL_TASK, t_confirm_delete, NULL},
    {"multi_input", NULL, "Asks two questions at once (only as a task)", EMPTY_SCHEMA, NULL, NULL,
     GMCP_TOOL_TASK_REQUIRED, t_multi_input, NULL},
    {"test_tool_with_task", NULL, "Asks a name first (input_required), then greets in a task",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_TASK, t_task_with_input, t_task_after_input},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL}};

static json_t *contents1(const char *uri, const char *mime, const char *key, const char *val)
{
    return json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType", mime, key, val);
}

static json_t *r_text(gmcp_call *c, const char *uri, json_t *v, void *b)
{
    (void)c;
    (void)v;
    (void)b;
    return contents1(uri, "text/plain", "text", "This is the content of the static text resource.");
}

static json_t *r_binary(gmcp_call *c, const char *uri, json_t *v, void *b)
{
    (void)c;
    (void)v;
    (void)b;
    return contents1(uri, "image/png", "blob", PNG_B64);
}

static json_t *r_template(gmcp_call *c, const char *uri, json_t *v, void *b)
{
    const char *id = json_string_value(json_object_get(v, "id"));
    json_t *data = json_pack("{s:s, s:b, s:s}", "id", id, "templateTest", 1, "data",
                             apr_psprintf(c->pool, "Data for ID: %s", id));
    char *text = json_dumps(data, JSON_COMPACT);
    json_t *res = contents1(uri, "application/json", "text", text);
    (void)b;
    free(text);
    json_decref(data);
    return res;
}

static const gmcp_resource RESOURCES[] = {
    {"test://static-text", "Static Text Resource", NULL, "A static text resource for testing",
     "text/plain", r_text},
    {"test://static-binary", "Static Binary Resource", NULL,
     "A static binary resource (image) for testing", "image/png", r_binary},
    {NULL, NULL, NULL, NULL, NULL, NULL}};

static const gmcp_resource_template TEMPLATES[] = {
    {"test://template/{id}/data", "Resource Template", NULL,
     "A resource template with parameter substitution", "application/json", r_template},
    {NULL, NULL, NULL, NULL, NULL, NULL}};

static json_t *msg_text(const char *role, const char *text)
{
    return json_pack("{s:s, s:{s:s, s:s}}", "role", role, "content", "type", "text", "text", text);
}

static json_t *p_simple(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return json_pack("{s:[o]}", "messages",
                     msg_text("user", "This is a simple prompt for testing."));
}

static json_t *p_args(gmcp_call *c, json_t *a, void *b)
{
    (void)b;
    return json_pack("{s:[o]}", "messages",
                     msg_text("user",
                              apr_psprintf(c->pool, "Prompt with arguments: arg1='%s', arg2='%s'",
                                           json_string_value(json_object_get(a, "arg1")),
                                           json_string_value(json_object_get(a, "arg2")))));
}

static json_t *p_embedded(gmcp_call *c, json_t *a, void *b)
{
    const char *uri = json_string_value(json_object_get(a, "resourceUri"));
    (void)c;
    (void)b;
    return json_pack("{s:[{s:s, s:{s:s, s:{s:s, s:s, s:s}}}, o]}", "messages", "role", "user",
                     "content", "type", "resource", "resource", "uri", uri, "mimeType",
                     "text/plain", "text", "Embedded resource content for testing.",
                     msg_text("user", "Please process the embedded resource above."));
}

static json_t *p_image(gmcp_call *c, json_t *a, void *b)
{
    (void)c;
    (void)a;
    (void)b;
    return json_pack("{s:[{s:s, s:{s:s, s:s, s:s}}, o]}", "messages", "role", "user", "content",
                     "type", "image", "data", PNG_B64, "mimeType", "image/png",
                     msg_text("user", "Please analyze the image above."));
}

static json_t *p_irr(gmcp_call *c, json_t *a, void *b)
{
    json_t *ans = NULL, *out;
    gmcp_input_result rv =
        gmcp_input(c, "user_context", "elicitation/create",
                   elicit("What context should the prompt use?", "context", "string"), &ans);
    (void)a;
    (void)b;
    if (rv == GMCP_INPUT_NEEDED) return gmcp_input_required(c, NULL);
    if (rv != GMCP_INPUT_OK) {
        c->error_code = -32602;
        c->error_message = "this prompt needs elicitation";
        return NULL;
    }
    out = json_pack(
        "{s:[o]}", "messages",
        msg_text("user",
                 apr_psprintf(c->pool, "Prompt with context: %s", answer_text(ans, "context"))));
    json_decref(ans);
    return out;
}

static const gmcp_prompt PROMPTS[] = {
    {"test_simple_prompt", NULL, "A simple prompt without arguments", NULL, p_simple},
    {"test_prompt_with_arguments", NULL, "A prompt with required arguments",
     "[{\"name\":\"arg1\",\"description\":\"First test argument\",\"required\":true},"
     "{\"name\":\"arg2\",\"description\":\"Second test argument\",\"required\":true}]",
     p_args},
    {"test_prompt_with_embedded_resource", NULL, "A prompt that includes an embedded resource",
     "[{\"name\":\"resourceUri\",\"description\":\"URI of the resource to embed\","
     "\"required\":true}]",
     p_embedded},
    {"test_prompt_with_image", NULL, "A prompt that includes image content", NULL, p_image},
    {"test_input_required_result_prompt", NULL,
     "MRTR: prompt that requires elicitation "
     "input",
     NULL, p_irr},
    {NULL, NULL, NULL, NULL, NULL}};

/* Completions for test_prompt_with_arguments: prefix matches from a fixed list. */
static json_t *complete(gmcp_call *c, json_t *ref, const char *arg, const char *value, json_t *ctx,
                        void *b)
{
    static const char *const WORDS[] = {"test", "testValue1", "testValue2", "example", NULL};
    json_t *out = json_array();
    int i;
    (void)c;
    (void)ref;
    (void)arg;
    (void)ctx;
    (void)b;
    for (i = 0; WORDS[i]; i++)
        if (!strncmp(WORDS[i], value, strlen(value)))
            json_array_append_new(out, json_string(WORDS[i]));
    return out;
}

static const gmcp_provider FIXTURES = {"fixtures", NULL,    TOOLS,   RESOURCES,
                                       TEMPLATES,  PROMPTS, complete};

static void register_hooks(apr_pool_t *p)
{
    ap_register_provider(p, GMCP_PROVIDER_GROUP, "fixtures", GMCP_PROVIDER_VERSION, &FIXTURES);
}

AP_DECLARE_MODULE(gemini_mcp_fixtures) = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks, AP_MODULE_FLAG_NONE};
