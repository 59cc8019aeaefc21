/* gmcp_chat.c — chat sessions and messages in SQL; JSON, text and Markdown exports. */
#include "gmcp_chat.h"
#include "gmcp_lease.h"
#include "gmcp_jsonrpc.h"
#include "gmcp_sql.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_atomic.h>
#include <apr_thread_proc.h>

#define SESSION_COLS                                                    \
    "id, owner, title, model, system_instruction, created, last_used, " \
    "message_count, prompt_tokens, output_tokens"

const gmcp_stmt gmcp_chat_stmts[] = {
    {"gmcp_count_chats", "SELECT COUNT(*) FROM chat_sessions WHERE last_used >= %lld"},
    {"gmcp_count_chats_idle", "SELECT COUNT(*) FROM chat_sessions WHERE last_used < %lld"},
    {"gmcp_chat_insert",
     "INSERT INTO chat_sessions (id, owner, title, model, system_instruction, created, "
     "last_used) VALUES (%s, %s, %s, %s, %s, %lld, %lld)"},
    {"gmcp_chat_select",
     "SELECT " SESSION_COLS " FROM chat_sessions WHERE id = %s AND last_used >= %lld"},
    {"gmcp_chat_list_owner",
     "SELECT " SESSION_COLS " FROM chat_sessions WHERE owner = %s AND last_used >= %lld "
     "ORDER BY last_used DESC, id LIMIT %d OFFSET %d"},
    {"gmcp_chat_list_all",
     "SELECT " SESSION_COLS " FROM chat_sessions WHERE last_used >= %lld "
     "ORDER BY last_used DESC, id LIMIT %d OFFSET %d"},
    {"gmcp_chat_msgs",
     "SELECT seq, role, parts, text, prompt_tokens, output_tokens, finish_reason, "
     "model_version, created FROM chat_messages WHERE session_id = %s AND seq > %lld "
     "ORDER BY seq LIMIT %d"},
    {"gmcp_chat_del_msgs", "DELETE FROM chat_messages WHERE session_id = %s"},
    {"gmcp_chat_del", "DELETE FROM chat_sessions WHERE id = %s"},
    {"gmcp_chat_lock",
     "UPDATE chat_sessions SET lock_token = %s, lock_until = %lld "
     "WHERE id = %s AND owner = %s AND (lock_token = '' OR lock_until < %lld)"},
    /* Take a free (or expired) lease and read the session in one round trip. */
    {"gmcp_chat_lock_get",
     "UPDATE chat_sessions SET lock_token = %s, lock_until = %lld "
     "WHERE id = %s AND owner = %s AND last_used >= %lld "
     "AND (lock_token = '' OR lock_until < %lld) RETURNING " SESSION_COLS},
    {"gmcp_chat_unlock",
     "UPDATE chat_sessions SET lock_token = '', lock_until = 0 "
     "WHERE id = %s AND lock_token = %s"},
    {"gmcp_chat_holder",
     "SELECT lock_token FROM chat_sessions WHERE id = %s AND owner = %s AND lock_token <> ''"},
    {"gmcp_chat_steal",
     "UPDATE chat_sessions SET lock_token = %s, lock_until = %lld "
     "WHERE id = %s AND owner = %s AND lock_token = %s"},
    /* Both messages of a turn in one statement (so both or neither), and only while
     * the sender still holds the session's lease: a lost lease inserts nothing. */
    {"gmcp_chat_turn_insert",
     "INSERT INTO chat_messages (session_id, seq, role, parts, text, prompt_tokens, "
     "output_tokens, finish_reason, model_version, created) "
     "SELECT %s, %lld, %s, %s, %s, %lld, %lld, %s, %s, %lld FROM chat_sessions "
     "WHERE id = %s AND lock_token = %s "
     "UNION ALL "
     "SELECT %s, %lld, %s, %s, %s, %lld, %lld, %s, %s, %lld FROM chat_sessions "
     "WHERE id = %s AND lock_token = %s"},
    /* PostgreSQL: the turn and the release in one statement, one round trip. The
     * counts say what happened: 2 messages stored (or none: the lease was lost), and
     * whether the release found the row still ours. */
    {"gmcp_chat_turn_pgsql",
     "WITH ins AS (INSERT INTO chat_messages (session_id, seq, role, parts, text, "
     "prompt_tokens, output_tokens, finish_reason, model_version, created) "
     "SELECT %s, %lld, %s, %s, %s, %lld, %lld, %s, %s, %lld FROM chat_sessions "
     "WHERE id = %s AND lock_token = %s "
     "UNION ALL "
     "SELECT %s, %lld, %s, %s, %s, %lld, %lld, %s, %s, %lld FROM chat_sessions "
     "WHERE id = %s AND lock_token = %s RETURNING 1), "
     "upd AS (UPDATE chat_sessions SET message_count = message_count + 2, "
     "prompt_tokens = prompt_tokens + %lld, output_tokens = output_tokens + %lld, "
     "last_used = %lld, lock_token = '', lock_until = 0 "
     "WHERE id = %s AND lock_token = %s AND EXISTS (SELECT 1 FROM ins) RETURNING 1) "
     "SELECT (SELECT COUNT(*) FROM ins), (SELECT COUNT(*) FROM upd)"},
    {"gmcp_chat_turn_done",
     "UPDATE chat_sessions SET message_count = message_count + 2, "
     "prompt_tokens = prompt_tokens + %lld, output_tokens = output_tokens + %lld, "
     "last_used = %lld, lock_token = '', lock_until = 0 "
     "WHERE id = %s AND lock_token = %s"},
    {"gmcp_chat_sweep_msgs",
     "DELETE FROM chat_messages WHERE session_id IN "
     "(SELECT id FROM chat_sessions WHERE last_used < %lld)"},
    {"gmcp_chat_sweep", "DELETE FROM chat_sessions WHERE last_used < %lld"},
    {NULL, NULL}};

static void fill_session(const char **row, gmcp_chat_session *s)
{
    s->id = row[0];
    s->owner = row[1];
    s->title = row[2] ? row[2] : "";
    s->model = row[3];
    s->system_instruction = row[4] ? row[4] : "";
    s->created = apr_atoi64(row[5]);
    s->last_used = apr_atoi64(row[6]);
    s->message_count = apr_atoi64(row[7]);
    s->prompt_tokens = apr_atoi64(row[8]);
    s->output_tokens = apr_atoi64(row[9]);
}

apr_status_t gmcp_chat_create(gmcp_db *db, const gmcp_chat_session *s)
{
    const char *now = gmcp_now_str(db->pool);
    return gmcp_db_exec(
        db, "gmcp_chat_insert", NULL,
        GMCP_ARGS(s->id, s->owner, s->title, s->model, s->system_instruction, now, now));
}

static const char *since(gmcp_db *db, apr_int64_t idle_timeout)
{
    return gmcp_i64_str(db->pool, idle_timeout > 0 ? gmcp_now_sec() - idle_timeout : 0);
}

apr_status_t gmcp_chat_get(gmcp_db *db, const char *id, const char *owner, apr_int64_t idle_timeout,
                           gmcp_chat_session *out)
{
    gmcp_rows rs;
    apr_status_t rv =
        gmcp_db_select(db, "gmcp_chat_select", &rs, GMCP_ARGS(id, since(db, idle_timeout)));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    fill_session(GMCP_ROW(&rs, 0), out);
    if (owner && strcmp(owner, out->owner) != 0) return APR_ENOENT;
    return APR_SUCCESS;
}

apr_status_t gmcp_chat_list(gmcp_db *db, const char *owner, apr_int64_t idle_timeout, int offset,
                            int limit, apr_array_header_t **out)
{
    gmcp_rows rs;
    const char *lim = apr_itoa(db->pool, limit), *off = apr_itoa(db->pool, offset);
    int i;
    apr_status_t rv = owner ? gmcp_db_select(db, "gmcp_chat_list_owner", &rs,
                                             GMCP_ARGS(owner, since(db, idle_timeout), lim, off))
                            : gmcp_db_select(db, "gmcp_chat_list_all", &rs,
                                             GMCP_ARGS(since(db, idle_timeout), lim, off));
    if (rv != APR_SUCCESS) return rv;
    *out = apr_array_make(db->pool, rs.rows->nelts + 1, sizeof(gmcp_chat_session));
    for (i = 0; i < rs.rows->nelts; i++) fill_session(GMCP_ROW(&rs, i), apr_array_push(*out));
    return APR_SUCCESS;
}

apr_status_t gmcp_chat_messages(gmcp_db *db, const char *id, apr_int64_t after_seq, int limit,
                                apr_array_header_t **out)
{
    gmcp_rows rs;
    int i;
    apr_status_t rv =
        gmcp_db_select(db, "gmcp_chat_msgs", &rs,
                       GMCP_ARGS(id, gmcp_i64_str(db->pool, after_seq), apr_itoa(db->pool, limit)));
    if (rv != APR_SUCCESS) return rv;
    *out = apr_array_make(db->pool, rs.rows->nelts + 1, sizeof(gmcp_chat_message));
    for (i = 0; i < rs.rows->nelts; i++) {
        const char **row = GMCP_ROW(&rs, i);
        gmcp_chat_message *m = apr_array_push(*out);
        m->seq = apr_atoi64(row[0]);
        m->role = row[1];
        m->parts = row[2];
        m->text = row[3] ? row[3] : "";
        m->prompt_tokens = apr_atoi64(row[4]);
        m->output_tokens = apr_atoi64(row[5]);
        m->finish_reason = row[6] ? row[6] : "";
        m->model_version = row[7] ? row[7] : "";
        m->created = apr_atoi64(row[8]);
    }
    return APR_SUCCESS;
}

apr_status_t gmcp_chat_delete(gmcp_db *db, const char *id, const char *owner)
{
    gmcp_chat_session s;
    apr_dbd_transaction_t *t = NULL;
    apr_status_t rv = gmcp_chat_get(db, id, owner, 0, &s), end;
    if (rv != APR_SUCCESS) return rv;
    if ((rv = gmcp_db_begin(db, &t)) != APR_SUCCESS) goto leave;
    if ((rv = gmcp_db_exec(db, "gmcp_chat_del_msgs", NULL, GMCP_ARGS(id))) != APR_SUCCESS)
        goto leave;
    rv = gmcp_db_exec(db, "gmcp_chat_del", NULL, GMCP_ARGS(id));
leave:
    end = gmcp_db_end(db, t, rv != APR_SUCCESS);
    return rv != APR_SUCCESS ? rv : end;
}

/* Held: by a sender whose process died on this host (killed mid-send), the lease is
 * taken over at once instead of after its expiry. Only that very holder's. */
static apr_status_t take_from_dead_holder(gmcp_db *db, const char *id, const char *owner,
                                          const char *token, const char *until)
{
    int n = 0;
    gmcp_rows rs;
    apr_status_t rv;
    if ((rv = gmcp_db_select(db, "gmcp_chat_holder", &rs, GMCP_ARGS(id, owner))) != APR_SUCCESS)
        return rv;
    if (rs.rows->nelts != 1 || !gmcp_lease_holder_dead(GMCP_ROW(&rs, 0)[0])) return APR_EBUSY;
    rv = gmcp_db_exec(db, "gmcp_chat_steal", &n,
                      GMCP_ARGS(token, until, id, owner, GMCP_ROW(&rs, 0)[0]));
    if (rv != APR_SUCCESS) return rv;
    return n == 1 ? APR_SUCCESS : APR_EBUSY;
}

apr_status_t gmcp_chat_lock(gmcp_db *db, const char *id, const char *owner, const char *token,
                            apr_int64_t lease_seconds)
{
    int n = 0;
    apr_int64_t now = gmcp_now_sec();
    const char *until = gmcp_i64_str(db->pool, now + lease_seconds);
    apr_status_t rv = gmcp_db_exec(db, "gmcp_chat_lock", &n,
                                   GMCP_ARGS(token, until, id, owner, gmcp_i64_str(db->pool, now)));
    if (rv != APR_SUCCESS) return rv;
    if (n == 1) return APR_SUCCESS;
    return take_from_dead_holder(db, id, owner, token, until);
}

apr_status_t gmcp_chat_lock_get(gmcp_db *db, const char *id, const char *owner,
                                apr_int64_t idle_timeout, const char *token,
                                apr_int64_t lease_seconds, gmcp_chat_session *out)
{
    apr_int64_t now = gmcp_now_sec();
    const char *until = gmcp_i64_str(db->pool, now + lease_seconds);
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select(
        db, "gmcp_chat_lock_get", &rs,
        GMCP_ARGS(token, until, id, owner, since(db, idle_timeout), gmcp_i64_str(db->pool, now)));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts == 1) {
        fill_session(GMCP_ROW(&rs, 0), out);
        return APR_SUCCESS;
    }
    /* Not taken: no such session of the owner's, or held (perhaps by a dead holder). */
    if ((rv = gmcp_chat_get(db, id, owner, idle_timeout, out)) != APR_SUCCESS) return rv;
    return take_from_dead_holder(db, id, owner, token, until);
}

apr_status_t gmcp_chat_unlock(gmcp_db *db, const char *id, const char *token)
{
    return gmcp_db_exec(db, "gmcp_chat_unlock", NULL, GMCP_ARGS(id, token));
}

/* Releases the database refused (it was away when the send ended): kept per process
 * and retried, so that a chat is not locked until its lease expires (the tool timeout
 * and more) by a sender that is alive but could not say it was done. A full table
 * drops the newest: that lease then expires as before. */
#define PENDING_MAX 64
static struct {
    char id[80];
    char token[240];
} pending[PENDING_MAX];
static volatile apr_uint32_t pending_lock, pending_count;

static void pending_enter(void)
{
    while (apr_atomic_cas32(&pending_lock, 1, 0) != 0) apr_thread_yield();
}

static void pending_leave(void) { apr_atomic_set32(&pending_lock, 0); }

void gmcp_chat_release_later(const char *id, const char *token)
{
    int i;
    if (strlen(id) >= sizeof(pending[0].id) || strlen(token) >= sizeof(pending[0].token)) return;
    pending_enter();
    for (i = 0; i < PENDING_MAX; i++) {
        if (!pending[i].id[0]) {
            apr_cpystrn(pending[i].id, id, sizeof(pending[i].id));
            apr_cpystrn(pending[i].token, token, sizeof(pending[i].token));
            apr_atomic_inc32(&pending_count);
            break;
        }
    }
    pending_leave();
}

int gmcp_chat_releases_pending(void) { return apr_atomic_read32(&pending_count) > 0; }

void gmcp_chat_release_pending(gmcp_db *db)
{
    int i;
    for (i = 0; i < PENDING_MAX && gmcp_chat_releases_pending(); i++) {
        char id[sizeof(pending[0].id)] = "", token[sizeof(pending[0].token)] = "";
        pending_enter();
        if (pending[i].id[0]) {
            memcpy(id, pending[i].id, sizeof(id));
            memcpy(token, pending[i].token, sizeof(token));
        }
        pending_leave();
        if (!id[0] || gmcp_chat_unlock(db, id, token) != APR_SUCCESS) continue;
        pending_enter();
        if (!strcmp(pending[i].id, id) && !strcmp(pending[i].token, token)) {
            pending[i].id[0] = '\0';
            apr_atomic_dec32(&pending_count);
        }
        pending_leave();
    }
}

/* gmcp_chat_append_turn on PostgreSQL: args are the 24 of the insert and the 5 of the
 * release, as for the two statements. */
static apr_status_t turn_pgsql(gmcp_db *db, const gmcp_chat_session *s, const char *token,
                               const char **args)
{
    gmcp_rows rs;
    const char **row;
    apr_status_t rv = gmcp_db_select(db, "gmcp_chat_turn_pgsql", &rs, 29, args);
    if (rv != APR_SUCCESS) return rv;
    row = rs.rows->nelts == 1 ? GMCP_ROW(&rs, 0) : NULL;
    if (!row || apr_atoi64(row[0]) != 2) return APR_ENOENT; /* the lease was lost */
    if (apr_atoi64(row[1]) != 1) gmcp_chat_release_later(s->id, token);
    return APR_SUCCESS;
}

apr_status_t gmcp_chat_append_turn(gmcp_db *db, const gmcp_chat_session *s, const char *token,
                                   const gmcp_chat_message *user, const gmcp_chat_message *model)
{
    apr_pool_t *p = db->pool;
    const gmcp_chat_message *m[2] = {user, model};
    const char *args[29];
    int i, n = 0;
    apr_status_t rv;
    for (i = 0; i < 2; i++) {
        const char **a = args + i * 12;
        a[0] = s->id;
        a[1] = gmcp_i64_str(p, m[i]->seq);
        a[2] = m[i]->role;
        a[3] = m[i]->parts;
        a[4] = m[i]->text;
        a[5] = gmcp_i64_str(p, m[i]->prompt_tokens);
        a[6] = gmcp_i64_str(p, m[i]->output_tokens);
        a[7] = m[i]->finish_reason ? m[i]->finish_reason : "";
        a[8] = m[i]->model_version ? m[i]->model_version : "";
        a[9] = gmcp_i64_str(p, m[i]->created);
        a[10] = s->id;
        a[11] = token;
    }
    args[24] = gmcp_i64_str(p, model->prompt_tokens);
    args[25] = gmcp_i64_str(p, model->output_tokens);
    args[26] = gmcp_now_str(p);
    args[27] = s->id;
    args[28] = token;
    if (db->pgsql) return turn_pgsql(db, s, token, args);
    if ((rv = gmcp_db_exec(db, "gmcp_chat_turn_insert", &n, 24, args)) != APR_SUCCESS) return rv;
    if (n != 2) return APR_ENOENT; /* the lease was lost: nothing stored */
    /* Release the lease with the counters. If this fails, the turn is stored (and
     * answered): only the session's counters lag, and the release is retried. */
    if (gmcp_db_exec(db, "gmcp_chat_turn_done", NULL, 5, args + 24) != APR_SUCCESS)
        gmcp_chat_release_later(s->id, token);
    return APR_SUCCESS;
}

apr_status_t gmcp_chat_sweep(gmcp_db *db, apr_int64_t idle_timeout)
{
    const char *before = gmcp_i64_str(db->pool, gmcp_now_sec() - idle_timeout);
    apr_status_t rv = gmcp_db_exec(db, "gmcp_chat_sweep_msgs", NULL, GMCP_ARGS(before));
    if (rv != APR_SUCCESS) return rv;
    return gmcp_db_exec(db, "gmcp_chat_sweep", NULL, GMCP_ARGS(before));
}

/* ---- exports ------------------------------------------------------------------------- */

static const char *iso8601(apr_pool_t *p, apr_int64_t sec)
{
    apr_time_exp_t t;
    char buf[32];
    apr_size_t n;
    apr_time_exp_gmt(&t, apr_time_from_sec(sec));
    apr_strftime(buf, &n, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &t);
    return apr_pstrdup(p, buf);
}

json_t *gmcp_chat_session_json(const gmcp_chat_session *s)
{
    apr_pool_t *p;
    json_t *j;
    apr_pool_create(&p, NULL);
    j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:{s:I, s:I}}", "session_id", s->id, "title",
                  s->title, "model", s->model, "system_instruction", s->system_instruction,
                  "created", iso8601(p, s->created), "last_used", iso8601(p, s->last_used),
                  "message_count", (json_int_t)s->message_count, "usage", "prompt_tokens",
                  (json_int_t)s->prompt_tokens, "output_tokens", (json_int_t)s->output_tokens);
    apr_pool_destroy(p);
    return j;
}

static json_t *message_json(apr_pool_t *p, const gmcp_chat_message *m)
{
    json_t *parts = json_loads(m->parts, 0, NULL);
    json_t *j = json_pack("{s:I, s:s, s:s, s:o, s:s}", "seq", (json_int_t)m->seq, "role", m->role,
                          "text", m->text, "parts", parts ? parts : json_array(), "created",
                          iso8601(p, m->created));
    if (!strcmp(m->role, "model")) {
        json_object_set_new(j, "usage",
                            json_pack("{s:I, s:I}", "prompt_tokens", (json_int_t)m->prompt_tokens,
                                      "output_tokens", (json_int_t)m->output_tokens));
        if (*m->finish_reason)
            json_object_set_new(j, "finish_reason", json_string(m->finish_reason));
        if (*m->model_version)
            json_object_set_new(j, "model_version", json_string(m->model_version));
    }
    return j;
}

const char *gmcp_chat_export(apr_pool_t *p, const gmcp_chat_session *s,
                             const apr_array_header_t *msgs, const char *format)
{
    int i;
    if (!strcmp(format, "json")) {
        json_t *arr = json_array(), *doc;
        char *text;
        const char *out;
        for (i = 0; i < msgs->nelts; i++)
            json_array_append_new(arr, message_json(p, &APR_ARRAY_IDX(msgs, i, gmcp_chat_message)));
        doc = json_pack("{s:o, s:o}", "session", gmcp_chat_session_json(s), "messages", arr);
        text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        out = apr_pstrcat(p, text, "\n", NULL);
        free(text);
        json_decref(doc);
        return out;
    }
    if (!strcmp(format, "text")) {
        const char *out = apr_psprintf(
            p, "Chat: %s\nModel: %s\nCreated: %s\n%s%s%s\n", *s->title ? s->title : s->id, s->model,
            iso8601(p, s->created), *s->system_instruction ? "System: " : "", s->system_instruction,
            *s->system_instruction ? "\n" : "");
        for (i = 0; i < msgs->nelts; i++) {
            const gmcp_chat_message *m = &APR_ARRAY_IDX(msgs, i, gmcp_chat_message);
            out = apr_psprintf(p, "%s[%s] %s:\n%s\n\n", out, iso8601(p, m->created),
                               strcmp(m->role, "model") ? "User" : "Gemini", m->text);
        }
        return out;
    }
    if (!strcmp(format, "markdown")) {
        const char *out =
            apr_psprintf(p, "# %s\n\n*Model `%s`, started %s*\n\n", *s->title ? s->title : s->id,
                         s->model, iso8601(p, s->created));
        if (*s->system_instruction)
            out = apr_psprintf(p, "%s> **System:** %s\n\n", out, s->system_instruction);
        for (i = 0; i < msgs->nelts; i++) {
            const gmcp_chat_message *m = &APR_ARRAY_IDX(msgs, i, gmcp_chat_message);
            out = apr_psprintf(p, "%s### %s\n\n%s\n\n", out,
                               strcmp(m->role, "model") ? "User" : "Gemini", m->text);
        }
        return out;
    }
    return NULL;
}
