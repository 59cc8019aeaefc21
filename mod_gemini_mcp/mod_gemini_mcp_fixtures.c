/* mod_gemini_mcp_fixtures.c — TEST-ONLY module: the MCP conformance suite's fixtures.
 *
 * Registers exactly the tool, resource and prompt set that
 * @modelcontextprotocol/conformance expects, through the same provider interface any
 * module uses. Built by apxs.mk, never installed by default; load it only in tests. */
#include <httpd.h>
#include <http_config.h>
#include <ap_provider.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <stdlib.h>
#include <string.h>

#include "gmcp_provider.h"

/* 1x1 PNG and an empty 8 kHz mono WAV. */
#define PNG_B64 "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
#define WAV_B64 "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA="

#define EMPTY_SCHEMA "{\"type\":\"object\",\"properties\":{}}"

static json_t *text_item(const char *text)
{
    return json_pack("{s:s, s:s}", "type", "text", "text", text);
}

static json_t *content(json_t *items)
{
    return json_pack("{s:o}", "content", items);
}

static json_t *t_simple_text(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return content(json_pack("[o]", text_item("This is a simple text response for testing.")));
}

static json_t *t_image(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return content(json_pack("[{s:s, s:s, s:s}]", "type", "image", "data", PNG_B64,
                             "mimeType", "image/png"));
}

static json_t *t_audio(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return content(json_pack("[{s:s, s:s, s:s}]", "type", "audio", "data", WAV_B64,
                             "mimeType", "audio/wav"));
}

static json_t *t_embedded(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return content(json_pack("[{s:s, s:{s:s, s:s, s:s}}]", "type", "resource", "resource",
                             "uri", "test://embedded-resource", "mimeType", "text/plain",
                             "text", "This is an embedded resource content."));
}

static json_t *t_mixed(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return content(json_pack("[o, {s:s, s:s, s:s}, {s:s, s:{s:s, s:s, s:s}}]",
                             text_item("Multiple content types test:"),
                             "type", "image", "data", PNG_B64, "mimeType", "image/png",
                             "type", "resource", "resource",
                             "uri", "test://mixed-content-resource",
                             "mimeType", "application/json",
                             "text", "{\"test\":\"data\",\"value\":123}"));
}

static json_t *t_logging(gmcp_call *c, json_t *a, void *b)
{
    static const char *const msgs[] = {
        "Tool execution started", "Tool processing data", "Tool execution completed"
    };
    int i;
    (void)a; (void)b;
    for (i = 0; i < 3; i++) {
        if (i) apr_sleep(apr_time_from_msec(50));
        gmcp_log(c, GMCP_LOG_INFO, "test_tool_with_logging", json_string(msgs[i]));
    }
    return content(json_pack("[o]", text_item("Tool with logging executed successfully")));
}

static json_t *t_progress(gmcp_call *c, json_t *a, void *b)
{
    int i;
    (void)a; (void)b;
    for (i = 0; i <= 2; i++) {
        if (i) apr_sleep(apr_time_from_msec(50));
        gmcp_progress(c, i * 50.0, 100.0, apr_psprintf(c->pool, "Completed step %d of 3", i + 1));
    }
    return content(json_pack("[o]", text_item("Tool with progress executed successfully")));
}

static json_t *t_error(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return gmcp_text_result("This tool intentionally returns an error for testing", 1);
}

/* Send a client request and turn its answer (or failure) into a tool result. */
static json_t *ask_result(gmcp_call *c, const char *method, json_t *params,
                          const char *prefix)
{
    json_t *res = NULL, *out;
    const char *err = NULL;
    const char *text;
    char *dump = NULL;
    if (gmcp_ask(c, method, params, &res, &err) != 0)
        return gmcp_text_result(apr_psprintf(c->pool, "%s failed: %s", method, err), 1);
    /* Sampling answers carry content.text; elicitation answers action + content. */
    text = json_string_value(json_object_get(json_object_get(res, "content"), "text"));
    if (!text) text = dump = json_dumps(res, JSON_COMPACT);
    out = content(json_pack("[o]", text_item(apr_pstrcat(c->pool, prefix, text ? text : "{}",
                                                         NULL))));
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
                                "requestedSchema", "type", "object", "properties",
                                "username", "type", "string", "description", "Your username",
                                "email", "type", "string", "description", "Your email address",
                                "required", "username", "email"),
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
        "\"default\":true}},\"required\":[]}", 0, &je);
    (void)a; (void)b;
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
        "{\"const\":\"value3\",\"title\":\"Third Choice\"}]}}},\"required\":[]}", 0, &je);
    (void)a; (void)b;
    return ask_result(c, "elicitation/create",
                      json_pack("{s:s, s:o}", "message", "Please select options",
                                "requestedSchema", schema),
                      "Elicitation completed: ");
}

static json_t *t_schema_2020_12(gmcp_call *c, json_t *a, void *b)
{
    const char *name = json_string_value(json_object_get(a, "name"));
    (void)b;
    return content(json_pack("[o]", text_item(apr_psprintf(
        c->pool, "JSON Schema 2020-12 tool called with name=%s", name ? name : ""))));
}

static json_t *t_reconnection(gmcp_call *c, json_t *a, void *b)
{
    (void)a; (void)b;
    /* Close the response stream before the result exists: the client reconnects with
     * GET + Last-Event-ID and receives the result from the event store. */
    gmcp_detach(c);
    apr_sleep(apr_time_from_msec(100));
    return content(json_pack("[o]", text_item("Reconnection test completed successfully")));
}

static const gmcp_tool TOOLS[] = {
    {"test_simple_text", NULL, "Tests simple text content response", EMPTY_SCHEMA, NULL, NULL,
     0, t_simple_text},
    {"test_image_content", NULL, "Tests image content response", EMPTY_SCHEMA, NULL, NULL, 0,
     t_image},
    {"test_audio_content", NULL, "Tests audio content response", EMPTY_SCHEMA, NULL, NULL, 0,
     t_audio},
    {"test_embedded_resource", NULL, "Tests embedded resource content response", EMPTY_SCHEMA,
     NULL, NULL, 0, t_embedded},
    {"test_multiple_content_types", NULL, "Tests response with multiple content types "
     "(text, image, resource)", EMPTY_SCHEMA, NULL, NULL, 0, t_mixed},
    {"test_tool_with_logging", NULL, "Tests tool that emits log messages during execution",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_logging},
    {"test_tool_with_progress", NULL, "Tests tool that reports progress notifications",
     EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_progress},
    {"test_error_handling", NULL, "Tests error response handling", EMPTY_SCHEMA, NULL, NULL, 0,
     t_error},
    {"test_sampling", NULL, "Tests server-initiated sampling (LLM completion request)",
     "{\"type\":\"object\",\"properties\":{\"prompt\":{\"type\":\"string\","
     "\"description\":\"The prompt to send to the LLM\"}},\"required\":[\"prompt\"]}",
     NULL, NULL, GMCP_TOOL_STREAMS, t_sampling},
    {"test_elicitation", NULL, "Tests server-initiated elicitation (user input request)",
     "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\","
     "\"description\":\"The message to show the user\"}},\"required\":[\"message\"]}",
     NULL, NULL, GMCP_TOOL_STREAMS, t_elicitation},
    {"test_elicitation_sep1034_defaults", NULL, "Tests elicitation with default values for "
     "all primitive types (SEP-1034)", EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_sep1034},
    {"test_elicitation_sep1330_enums", NULL, "Tests elicitation with enum schema "
     "improvements (SEP-1330)", EMPTY_SCHEMA, NULL, NULL, GMCP_TOOL_STREAMS, t_sep1330},
    {"json_schema_2020_12_tool", NULL, "Tool with JSON Schema 2020-12 features",
     "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
     "\"$defs\":{\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":"
     "\"string\"},\"city\":{\"type\":\"string\"}}}},\"properties\":{\"name\":{\"type\":"
     "\"string\"},\"address\":{\"$ref\":\"#/$defs/address\"}},\"additionalProperties\":false}",
     NULL, NULL, 0, t_schema_2020_12},
    {"test_reconnection", NULL, "Tests SSE stream disconnection and client reconnection "
     "(SEP-1699): closes the stream before the result", EMPTY_SCHEMA, NULL, NULL,
     GMCP_TOOL_STREAMS, t_reconnection},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL}
};

static json_t *contents1(const char *uri, const char *mime, const char *key, const char *val)
{
    return json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType", mime,
                     key, val);
}

static json_t *r_text(gmcp_call *c, const char *uri, json_t *v, void *b)
{
    (void)c; (void)v; (void)b;
    return contents1(uri, "text/plain", "text", "This is the content of the static text resource.");
}

static json_t *r_binary(gmcp_call *c, const char *uri, json_t *v, void *b)
{
    (void)c; (void)v; (void)b;
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
    {NULL, NULL, NULL, NULL, NULL, NULL}
};

static const gmcp_resource_template TEMPLATES[] = {
    {"test://template/{id}/data", "Resource Template", NULL,
     "A resource template with parameter substitution", "application/json", r_template},
    {NULL, NULL, NULL, NULL, NULL, NULL}
};

static json_t *msg_text(const char *role, const char *text)
{
    return json_pack("{s:s, s:{s:s, s:s}}", "role", role, "content", "type", "text",
                     "text", text);
}

static json_t *p_simple(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return json_pack("{s:[o]}", "messages", msg_text("user", "This is a simple prompt for testing."));
}

static json_t *p_args(gmcp_call *c, json_t *a, void *b)
{
    (void)b;
    return json_pack("{s:[o]}", "messages", msg_text("user", apr_psprintf(
        c->pool, "Prompt with arguments: arg1='%s', arg2='%s'",
        json_string_value(json_object_get(a, "arg1")),
        json_string_value(json_object_get(a, "arg2")))));
}

static json_t *p_embedded(gmcp_call *c, json_t *a, void *b)
{
    const char *uri = json_string_value(json_object_get(a, "resourceUri"));
    (void)c; (void)b;
    return json_pack("{s:[{s:s, s:{s:s, s:{s:s, s:s, s:s}}}, o]}", "messages",
                     "role", "user", "content", "type", "resource", "resource",
                     "uri", uri, "mimeType", "text/plain",
                     "text", "Embedded resource content for testing.",
                     msg_text("user", "Please process the embedded resource above."));
}

static json_t *p_image(gmcp_call *c, json_t *a, void *b)
{
    (void)c; (void)a; (void)b;
    return json_pack("{s:[{s:s, s:{s:s, s:s, s:s}}, o]}", "messages",
                     "role", "user", "content", "type", "image", "data", PNG_B64,
                     "mimeType", "image/png",
                     msg_text("user", "Please analyze the image above."));
}

static const gmcp_prompt PROMPTS[] = {
    {"test_simple_prompt", NULL, "A simple prompt without arguments", NULL, p_simple},
    {"test_prompt_with_arguments", NULL, "A prompt with required arguments",
     "[{\"name\":\"arg1\",\"description\":\"First test argument\",\"required\":true},"
     "{\"name\":\"arg2\",\"description\":\"Second test argument\",\"required\":true}]", p_args},
    {"test_prompt_with_embedded_resource", NULL, "A prompt that includes an embedded resource",
     "[{\"name\":\"resourceUri\",\"description\":\"URI of the resource to embed\","
     "\"required\":true}]", p_embedded},
    {"test_prompt_with_image", NULL, "A prompt that includes image content", NULL, p_image},
    {NULL, NULL, NULL, NULL, NULL}
};

/* Completions for test_prompt_with_arguments: prefix matches from a fixed list. */
static json_t *complete(gmcp_call *c, json_t *ref, const char *arg, const char *value,
                        json_t *ctx, void *b)
{
    static const char *const WORDS[] = { "test", "testValue1", "testValue2", "example", NULL };
    json_t *out = json_array();
    int i;
    (void)c; (void)ref; (void)arg; (void)ctx; (void)b;
    for (i = 0; WORDS[i]; i++)
        if (!strncmp(WORDS[i], value, strlen(value)))
            json_array_append_new(out, json_string(WORDS[i]));
    return out;
}

static const gmcp_provider FIXTURES = {
    "fixtures", NULL, TOOLS, RESOURCES, TEMPLATES, PROMPTS, complete
};

static void register_hooks(apr_pool_t *p)
{
    ap_register_provider(p, GMCP_PROVIDER_GROUP, "fixtures", GMCP_PROVIDER_VERSION, &FIXTURES);
}

AP_DECLARE_MODULE(gemini_mcp_fixtures) = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks, AP_MODULE_FLAG_NONE
};
