/* gmcp_tools_chat.c — gemini_chat_*: conversations that live in SQL, so any child
 * process of any node continues any session and a restart loses nothing. */
#include "gmcp_tools_gemini.h"
#include "gmcp_chat.h"
#include "gmcp_lease.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_store.h"
#include "gmcp_util.h"

#include <string.h>
#include <apr_strings.h>

#define HISTORY_MAX 10000 /* messages sent back to Gemini per turn, at most */
#define LOCK_POLL apr_time_from_msec(50)

static json_t *not_found(gmcp_call *c, const char *id)
{
    return gmcp_text_result(apr_psprintf(c->pool,
                                         "No chat session '%s': it expired, was "
                                         "deleted, or belongs to someone else. Start one "
                                         "with gemini_chat_start.",
                                         id),
                            1);
}

static json_t *db_failed(const char *why)
{
    return gmcp_text_result(why ? why : "the chat store is unavailable", 1);
}

/* Open the store; NULL with *result set. */
static gmcp_db *store(gmcp_call *c, json_t **result)
{
    return gmcp_tool_db(c, "the chat store is unavailable", result);
}

/* ---- start / list / delete ----------------------------------------------------------- */

static json_t *t_chat_start(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL;
    gmcp_chat_session s;
    const char *model = gmcp_tool_model(c, args, conf->default_model, &result);
    gmcp_db *db;
    apr_status_t rv;
    if (!model) return result;
    memset(&s, 0, sizeof(s));
    s.id = apr_pstrcat(c->pool, "chat_", gmcp_random_id(c->pool, 15), NULL);
    s.owner = c->principal;
    s.title = gmcp_json_str(args, "title") ? gmcp_json_str(args, "title") : "";
    s.model = strchr(model, '/') + 1;
    s.system_instruction =
        gmcp_json_str(args, "system_instruction") ? gmcp_json_str(args, "system_instruction") : "";
    if (!(db = store(c, &result))) return result;
    rv = gmcp_chat_create(db, &s);
    c->ops->db_close(c);
    if (rv) return db_failed(NULL);
    return gmcp_tool_structured(
        gmcp_text_result(apr_psprintf(c->pool, "Started chat session %s with %s", s.id, s.model),
                         0),
        json_pack("{s:s, s:s, s:s}", "session_id", s.id, "model", s.model, "title", s.title));
}

static json_t *t_chat_list(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    json_t *result = NULL, *arr;
    apr_array_header_t *list;
    json_int_t offset = json_integer_value(json_object_get(args, "offset"));
    json_int_t limit = json_integer_value(json_object_get(args, "limit"));
    gmcp_db *db;
    apr_status_t rv;
    int i;
    if (limit <= 0 || limit > 200) limit = 50;
    if (offset < 0) offset = 0;
    if (!(db = store(c, &result))) return result;
    /* One more than asked, to know whether there is a next page. */
    rv = gmcp_chat_list(db, c->principal, conf->chat_idle, (int)offset, (int)limit + 1, &list);
    c->ops->db_close(c);
    if (rv) return db_failed(NULL);
    arr = json_array();
    for (i = 0; i < list->nelts && i < limit; i++)
        json_array_append_new(arr,
                              gmcp_chat_session_json(&APR_ARRAY_IDX(list, i, gmcp_chat_session)));
    result = json_pack("{s:o}", "sessions", arr);
    if (list->nelts > limit)
        json_object_set_new(result, "next_offset", json_integer(offset + limit));
    return gmcp_tool_structured(gmcp_text_result(gmcp_json_dump(c->pool, result), 0), result);
}

static json_t *t_chat_delete(gmcp_call *c, json_t *args, void *baton)
{
    const char *id = gmcp_json_str(args, "session_id");
    json_t *result = NULL;
    gmcp_db *db;
    apr_status_t rv;
    (void)baton;
    if (!(db = store(c, &result))) return result;
    rv = gmcp_chat_delete(db, id, c->principal);
    c->ops->db_close(c);
    if (rv == APR_ENOENT) return not_found(c, id);
    if (rv) return db_failed(NULL);
    return gmcp_tool_structured(
        gmcp_text_result(apr_psprintf(c->pool, "Deleted chat session %s", id), 0),
        json_pack("{s:s, s:b}", "session_id", id, "deleted", 1));
}

/* ---- history / export ------------------------------------------------------------------- */

static json_t *t_chat_history(gmcp_call *c, json_t *args, void *baton)
{
    const gmcp_gemini_conf *conf = baton;
    const char *id = gmcp_json_str(args, "session_id");
    json_int_t after = json_integer_value(json_object_get(args, "after_seq"));
    json_int_t limit = json_integer_value(json_object_get(args, "limit"));
    json_t *result = NULL, *arr;
    apr_array_header_t *msgs;
    gmcp_chat_session s;
    gmcp_db *db;
    apr_status_t rv;
    int i;
    if (limit <= 0 || limit > 200) limit = 50;
    if (!(db = store(c, &result))) return result;
    rv = gmcp_chat_get(db, id, c->principal, conf->chat_idle, &s);
    if (rv == APR_SUCCESS) rv = gmcp_chat_messages(db, id, after, (int)limit + 1, &msgs);
    c->ops->db_close(c);
    if (rv == APR_ENOENT) return not_found(c, id);
    if (rv) return db_failed(NULL);
    arr = json_array();
    for (i = 0; i < msgs->nelts && i < limit; i++) {
        const gmcp_chat_message *m = &APR_ARRAY_IDX(msgs, i, gmcp_chat_message);
        json_array_append_new(arr,
                              json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)m->seq, "role",
                                        m->role, "text", m->text));
    }
    result = json_pack("{s:s, s:o}", "session_id", id, "messages", arr);
    if (msgs->nelts > limit)
        json_object_set_new(result, "next_after_seq",
                            json_integer(APR_ARRAY_IDX(msgs, limit - 1, gmcp_chat_message).seq));
    return gmcp_tool_structured(gmcp_text_result(gmcp_json_dump(c->pool, result), 0), result);
}

/* The whole session for exports and transcripts: APR_SUCCESS; otherwise *result is the
 * tool error: APR_ENOENT (no such session of the caller's), GMCP_EDB. */
static apr_status_t load_all(gmcp_call *c, const gmcp_gemini_conf *conf, const char *id,
                             gmcp_chat_session *s, apr_array_header_t **msgs, json_t **result)
{
    gmcp_db *db = store(c, result);
    apr_status_t rv;
    if (!db) return GMCP_EDB;
    rv = gmcp_chat_get(db, id, c->principal, conf->chat_idle, s);
    if (rv == APR_SUCCESS) rv = gmcp_chat_messages(db, id, 0, HISTORY_MAX, msgs);
    c->ops->db_close(c);
    if (rv == APR_ENOENT)
        *result = not_found(c, id);
    else if (rv)
        *result = db_failed(NULL);
    return rv;
}

static json_t *t_chat_export(gmcp_call *c, json_t *args, void *baton)
{
    const char *id = gmcp_json_str(args, "session_id");
    const char *format = gmcp_json_str(args, "format") ? gmcp_json_str(args, "format") : "markdown";
    gmcp_chat_session s;
    apr_array_header_t *msgs;
    json_t *result = NULL;
    const char *text;
    if (load_all(c, baton, id, &s, &msgs, &result) != APR_SUCCESS) return result;
    text = gmcp_chat_export(c->pool, &s, msgs, format);
    if (!text) return gmcp_text_result("format must be json, text or markdown", 1);
    return gmcp_tool_structured(
        gmcp_text_result(text, 0),
        json_pack("{s:s, s:s, s:s}", "session_id", id, "format", format, "export", text));
}

static json_t *r_transcript(gmcp_call *c, const char *uri, json_t *vars, void *baton)
{
    const char *id = json_string_value(json_object_get(vars, "session_id"));
    gmcp_chat_session s;
    apr_array_header_t *msgs;
    json_t *result = NULL;
    if (load_all(c, baton, id, &s, &msgs, &result) != APR_SUCCESS) {
        json_decref(result);
        return NULL; /* not found (or unusable store): resource not found */
    }
    return json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType", "text/markdown",
                     "text", gmcp_chat_export(c->pool, &s, msgs, "markdown"));
}

/* ---- send ------------------------------------------------------------------------------- */

static void release(gmcp_call *c, const char *id, const char *token)
{
    const char *why;
    gmcp_db *db = c->ops->db_open(c, &why);
    if (!db || gmcp_chat_unlock(db, id, token) != APR_SUCCESS)
        gmcp_chat_release_later(id, token); /* the database is away: retried */
    if (db) c->ops->db_close(c);
}

/* Wait for the session's send lease (sends are serialised, none lost or reordered),
 * then read the session and its history in the same database section. APR_SUCCESS when
 * the lease is ours; otherwise *result is the tool error: APR_ENOENT (no such session of
 * the caller's), GMCP_EDB, APR_EBUSY (still held when the call's time or its caller ran
 * out). */
static apr_status_t acquire(gmcp_call *c, const gmcp_gemini_conf *conf, const char *id,
                            const char *token, gmcp_chat_session *s, apr_array_header_t **msgs,
                            json_t **result)
{
    apr_int64_t lease = apr_time_sec(c->deadline - apr_time_now()) + 30;
    for (;;) {
        gmcp_db *db = store(c, result);
        apr_status_t rv;
        int got;
        if (!db) return GMCP_EDB;
        if (gmcp_chat_releases_pending()) gmcp_chat_release_pending(db);
        rv = gmcp_chat_lock_get(db, id, c->principal, conf->chat_idle, token, lease, s);
        got = rv == APR_SUCCESS;
        /* History from SQL on every send: any process continues any session. */
        if (got) rv = gmcp_chat_messages(db, id, 0, HISTORY_MAX, msgs);
        c->ops->db_close(c);
        if (rv == APR_ENOENT) {
            *result = not_found(c, id);
            return rv;
        }
        if (rv != APR_SUCCESS && rv != APR_EBUSY) {
            if (got) release(c, id, token);
            *result = db_failed(NULL);
            return rv;
        }
        if (got) return APR_SUCCESS;
        if (apr_time_now() + LOCK_POLL >= c->deadline || c->ops->cancelled(c)) {
            *result = gmcp_text_result("another message to this chat session is still being "
                                       "answered; try again",
                                       1);
            return APR_EBUSY;
        }
        apr_sleep(LOCK_POLL);
    }
}

/* {"contents":[<history>,<new turn>], <rest>}: the stored parts are JSON we wrote
 * ourselves, so the history is spliced in as text rather than parsed and rebuilt. */
static const char *request_text(apr_pool_t *p, const apr_array_header_t *msgs, json_t *turn,
                                json_t *rest)
{
    struct iovec *v = apr_palloc(p, sizeof(*v) * (size_t)(msgs->nelts * 5 + 6));
    const char *rest_text = gmcp_json_dump(p, rest);
    apr_size_t n = 0;
    int i;
#define PIECE(s)                     \
    do {                             \
        v[n].iov_base = (void *)(s); \
        v[n].iov_len = strlen(s);    \
        n++;                         \
    } while (0)
    PIECE("{\"contents\":[");
    for (i = 0; i < msgs->nelts; i++) {
        const gmcp_chat_message *m = &APR_ARRAY_IDX(msgs, i, gmcp_chat_message);
        PIECE("{\"role\":\"");
        PIECE(strcmp(m->role, "model") ? "user" : "model");
        PIECE("\",\"parts\":");
        PIECE(m->parts);
        PIECE("},");
    }
    PIECE(gmcp_json_dump(p, turn));
    PIECE("]");
    /* rest_text is "{...}" or "{}": merge its members after contents. */
    if (strlen(rest_text) > 2) {
        PIECE(",");
        PIECE(apr_pstrndup(p, rest_text + 1, strlen(rest_text) - 2));
    }
    PIECE("}");
#undef PIECE
    return apr_pstrcatv(p, v, n, NULL);
}

/* One gemini_chat_send call, step by step. */
typedef struct {
    gmcp_call *c;
    const gmcp_gemini_conf *conf;
    json_t *args;
    const char *id, *message; /* the arguments */
    const char *token;        /* our send lease's token */
    gmcp_gemini *g;
    gmcp_chat_session s;
    apr_array_header_t *msgs; /* the history, oldest first */
    int leased;               /* we hold the send lease */
    json_t *parts;            /* the user's turn (owned) */
    json_t *final;            /* Gemini's last response (owned) */
    const char *text;         /* the whole answer */
    json_t *result;           /* the tool result */
} chat_turn;

/* Each step of a gemini_chat_send call returns APR_SUCCESS to go on; otherwise t->result
 * is the tool error. */

/* Step 1: a Gemini client (APR_ENOTIMPL: not configured, or no HTTP handle), a lease token
 * (APR_ENOTENOUGHENTROPY) and a message (APR_EINVAL). */
static apr_status_t send_checked(chat_turn *t)
{
    if (!(t->g = gmcp_tool_client(t->c, t->conf, &t->result))) return APR_ENOTIMPL;
    if (!t->token) {
        t->result = gmcp_text_result("no randomness for a send lease", 1);
        return APR_ENOTENOUGHENTROPY;
    }
    if (!t->message || !*t->message) {
        t->result = gmcp_text_result("message must not be empty", 1);
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

/* Step 2: the session's send lease, and its history (as acquire). */
static apr_status_t send_leased(chat_turn *t)
{
    apr_status_t rv = acquire(t->c, t->conf, t->id, t->token, &t->s, &t->msgs, &t->result);
    t->leased = rv == APR_SUCCESS;
    return rv;
}

/* Step 3: the user's turn: the message and its file references (APR_EINVAL for a bad
 * reference). */
static apr_status_t user_turn(chat_turn *t)
{
    t->parts = gmcp_tool_user_parts(t->c, t->conf, t->message, json_object_get(t->args, "files"),
                                    &t->result);
    return t->parts ? APR_SUCCESS : APR_EINVAL;
}

/* Step 4: Gemini's answer to the history and the new turn (GMCP_EUPSTREAM when there is
 * none to store). No database handle is held while Gemini answers. */
static apr_status_t gemini_answered(chat_turn *t)
{
    gmcp_call *c = t->c;
    json_t *rest = json_object(), *gc, *turn;
    /* The rest of the request (system instruction, settings) as JSON... */
    if (*t->s.system_instruction)
        json_object_set_new(rest, "systemInstruction",
                            json_pack("{s:[{s:s}]}", "parts", "text", t->s.system_instruction));
    if ((gc = gmcp_tool_generation_config(t->args)))
        json_object_set_new(rest, "generationConfig", gc);
    turn = json_pack("{s:s, s:O}", "role", "user", "parts", t->parts);
    t->result =
        gmcp_tool_run_generate(c, t->g, apr_pstrcat(c->pool, "models/", t->s.model, NULL),
                               request_text(c->pool, t->msgs, turn, rest), &t->final, &t->text);
    json_decref(turn);
    json_decref(rest);
    return t->final ? APR_SUCCESS : GMCP_EUPSTREAM;
}

/* The turn's two messages: the user's and Gemini's answer, with its usage. */
static void turn_messages(chat_turn *t, gmcp_chat_message *um, gmcp_chat_message *mm)
{
    apr_pool_t *p = t->c->pool;
    json_t *u = json_object_get(t->final, "usageMetadata");
    json_t *mp = json_pack("[{s:s}]", "text", t->text);
    memset(um, 0, sizeof(*um));
    memset(mm, 0, sizeof(*mm));
    um->seq =
        t->msgs->nelts ? APR_ARRAY_IDX(t->msgs, t->msgs->nelts - 1, gmcp_chat_message).seq + 1 : 1;
    um->role = "user";
    um->parts = gmcp_json_dump(p, t->parts);
    um->text = t->message;
    um->created = apr_time_sec(apr_time_now());
    mm->seq = um->seq + 1;
    mm->role = "model";
    mm->parts = gmcp_json_dump(p, mp);
    json_decref(mp);
    mm->text = t->text;
    mm->prompt_tokens = json_integer_value(json_object_get(u, "promptTokenCount"));
    mm->output_tokens = json_integer_value(json_object_get(u, "candidatesTokenCount"));
    mm->finish_reason =
        gmcp_json_str(json_array_get(json_object_get(t->final, "candidates"), 0), "finishReason");
    mm->model_version = gmcp_json_str(t->final, "modelVersion");
    mm->created = um->created;
}

/* Step 5: both messages of the turn in one statement, by the lease holder only
 * (APR_ENOENT when the session went meanwhile, GMCP_EDB). */
static apr_status_t turn_stored(chat_turn *t)
{
    gmcp_chat_message um, mm;
    json_t *err = NULL;
    gmcp_db *db;
    apr_status_t rv;
    turn_messages(t, &um, &mm);
    if (!(db = store(t->c, &err))) {
        json_decref(t->result);
        t->result = err;
        return GMCP_EDB;
    }
    rv = gmcp_chat_append_turn(db, &t->s, t->token, &um, &mm);
    t->c->ops->db_close(t->c);
    if (rv) {
        json_decref(t->result);
        t->result = rv == APR_ENOENT
            ? gmcp_text_result("the chat session was deleted or expired while Gemini was "
                               "answering; the answer was not stored",
                               1)
            : db_failed(NULL);
    }
    return rv;
}

static json_t *t_chat_send(gmcp_call *c, json_t *args, void *baton)
{
    chat_turn t;
    json_t *sc;
    memset(&t, 0, sizeof(t));
    t.c = c;
    t.conf = baton;
    t.args = args;
    t.id = gmcp_json_str(args, "session_id");
    t.message = gmcp_json_str(args, "message");
    t.token = gmcp_lease_token(c->pool);
    /* 1. a Gemini client, a lease token and a message; 2. the session's send lease and
     * its history; 3. the user's turn; 4. Gemini's answer to history and turn;
     * 5. both messages stored (which ends the lease); 6. the answer, with the session
     * and its message count. A failed step sets t.result; the lease is then given back. */
    if (send_checked(&t) == APR_SUCCESS && send_leased(&t) == APR_SUCCESS
        && user_turn(&t) == APR_SUCCESS && gemini_answered(&t) == APR_SUCCESS
        && turn_stored(&t) == APR_SUCCESS) {
        sc = json_object_get(t.result, "structuredContent");
        json_object_set_new(sc, "session_id", json_string(t.id));
        json_object_set_new(sc, "message_count", json_integer(t.s.message_count + 2));
    }
    else if (t.leased) {
        release(c, t.id, t.token);
    }
    json_decref(t.parts);
    json_decref(t.final);
    return t.result;
}

/* ---- definitions ---------------------------------------------------------------------- */

#define SID_PROP "\"session_id\":{\"type\":\"string\",\"description\":\"From gemini_chat_start\"}"

const gmcp_tool gmcp_chat_tools[] = {
    {"gemini_chat_start", "Start a Gemini chat",
     "Start a persistent chat session with a Gemini model (optional system instruction and "
     "title). Returns the session id for gemini_chat_send. Sessions live in the server's "
     "database and expire after a period without use.",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\"},"
     "\"system_instruction\":{\"type\":\"string\"},\"title\":{\"type\":\"string\","
     "\"maxLength\":200}},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"session_id\":{\"type\":\"string\"},\"model\":"
     "{\"type\":\"string\"},\"title\":{\"type\":\"string\"}},\"required\":[\"session_id\"]}",
     NULL, 0, t_chat_start, NULL},
    {"gemini_chat_send", "Send to a Gemini chat",
     "Send a message in a chat session; Gemini answers with the whole conversation as "
     "context. Returns the reply and its token usage. With a progress token the reply "
     "streams as progress notifications.",
     "{\"type\":\"object\",\"properties\":{" SID_PROP ",\"message\":{\"type\":\"string\"},"
     "\"files\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"uri\":"
     "{\"type\":\"string\"},\"mime_type\":{\"type\":\"string\"}},\"required\":[\"uri\"]}},"
     "\"temperature\":{\"type\":\"number\",\"minimum\":0,\"maximum\":2},"
     "\"max_output_tokens\":{\"type\":\"integer\",\"minimum\":1}},"
     "\"required\":[\"session_id\",\"message\"],\"additionalProperties\":false}",
     NULL, "{\"openWorldHint\":true}", GMCP_TOOL_SPENDS_TOKENS, t_chat_send, NULL},
    {"gemini_chat_history", "Read a Gemini chat",
     "The messages of a chat session, oldest first, a page at a time.",
     "{\"type\":\"object\",\"properties\":{" SID_PROP ",\"after_seq\":{\"type\":\"integer\","
     "\"minimum\":0},\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":200}},"
     "\"required\":[\"session_id\"],\"additionalProperties\":false}",
     NULL, "{\"readOnlyHint\":true}", 0, t_chat_history, NULL},
    {"gemini_chat_list", "List Gemini chats", "Your chat sessions, most recently used first.",
     "{\"type\":\"object\",\"properties\":{\"offset\":{\"type\":\"integer\",\"minimum\":0},"
     "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":200}},"
     "\"additionalProperties\":false}",
     NULL, "{\"readOnlyHint\":true}", 0, t_chat_list, NULL},
    {"gemini_chat_export", "Export a Gemini chat",
     "A chat session as JSON, plain text or Markdown.",
     "{\"type\":\"object\",\"properties\":{" SID_PROP ",\"format\":{\"type\":\"string\","
     "\"enum\":[\"json\",\"text\",\"markdown\"]}},\"required\":[\"session_id\"],"
     "\"additionalProperties\":false}",
     NULL, "{\"readOnlyHint\":true}", 0, t_chat_export, NULL},
    {"gemini_chat_delete", "Delete a Gemini chat", "Delete a chat session and its messages.",
     "{\"type\":\"object\",\"properties\":{" SID_PROP "},\"required\":[\"session_id\"],"
     "\"additionalProperties\":false}",
     NULL, "{\"destructiveHint\":true}", 0, t_chat_delete, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL}};

const gmcp_resource_template gmcp_chat_templates[] = {
    {"gemini://chat/{session_id}/transcript", "Chat transcript", NULL,
     "A chat session's transcript (Markdown)", "text/markdown", r_transcript},
    {NULL, NULL, NULL, NULL, NULL, NULL}};
