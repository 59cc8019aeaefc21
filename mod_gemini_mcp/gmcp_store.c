/* gmcp_store.c — SQL for MCP sessions, event streams, pending requests. */
#include "gmcp_store.h"
#include "gmcp_sql.h"
#include "gmcp_util.h"

#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>

const gmcp_stmt gmcp_store_stmts[] = {
    {"gmcp_session_insert",
     "INSERT INTO mcp_sessions (id, owner, protocol_version, client_info, client_caps, "
     "log_level, created, last_seen) VALUES (%s, %s, %s, %s, %s, '', %lld, %lld)"},
    {"gmcp_session_select",
     "SELECT owner, protocol_version, client_caps, log_level, last_seen FROM mcp_sessions "
     "WHERE id = %s AND last_seen >= %lld"},
    {"gmcp_session_touch", "UPDATE mcp_sessions SET last_seen = %lld WHERE id = %s"},
    {"gmcp_session_level", "UPDATE mcp_sessions SET log_level = %s WHERE id = %s"},
    {"gmcp_session_delete", "DELETE FROM mcp_sessions WHERE id = %s"},
    {"gmcp_session_del_events", "DELETE FROM mcp_events WHERE session_id = %s"},
    {"gmcp_session_del_streams", "DELETE FROM mcp_streams WHERE session_id = %s"},
    {"gmcp_session_del_pending", "DELETE FROM mcp_pending WHERE session_id = %s"},
    {"gmcp_session_del_cancels", "DELETE FROM mcp_cancels WHERE session_id = %s"},
    {"gmcp_session_del_subs", "DELETE FROM mcp_subscriptions WHERE session_id = %s"},
    {"gmcp_stream_insert",
     "INSERT INTO mcp_streams (id, session_id, request_id, done, created, holder) "
     "VALUES (%s, %s, %s, 0, %lld, %s)"},
    {"gmcp_stream_done", "UPDATE mcp_streams SET done = 1 WHERE id = %s"},
    {"gmcp_stream_give_up", "UPDATE mcp_streams SET done = 1 WHERE id = %s AND done = 0"},
    {"gmcp_stream_select",
     "SELECT session_id, done, holder, created, request_id FROM mcp_streams WHERE id = %s"},
    {"gmcp_event_last",
     "SELECT seq, message FROM mcp_events WHERE stream_id = %s ORDER BY seq DESC LIMIT 1"},
    {"gmcp_event_insert",
     "INSERT INTO mcp_events (stream_id, seq, session_id, message, created) "
     "VALUES (%s, %lld, %s, %s, %lld)"},
    {"gmcp_events_after",
     "SELECT seq, message FROM mcp_events WHERE stream_id = %s AND seq > %lld "
     "ORDER BY seq"},
    {"gmcp_pending_insert",
     "INSERT INTO mcp_pending (session_id, request_id, created, answered, response) "
     "VALUES (%s, %s, %lld, 0, '')"},
    {"gmcp_pending_answer",
     "UPDATE mcp_pending SET answered = 1, response = %s "
     "WHERE session_id = %s AND request_id = %s AND answered = 0"},
    {"gmcp_pending_select",
     "SELECT answered, response FROM mcp_pending WHERE session_id = %s AND request_id = %s"},
    {"gmcp_pending_delete", "DELETE FROM mcp_pending WHERE session_id = %s AND request_id = %s"},
    {"gmcp_cancel_insert",
     "INSERT INTO mcp_cancels (session_id, request_id, created) VALUES (%s, %s, %lld)"},
    {"gmcp_cancel_select", "SELECT 1 FROM mcp_cancels WHERE session_id = %s AND request_id = %s"},
    {"gmcp_sub_insert",
     "INSERT INTO mcp_subscriptions (session_id, uri, created) VALUES (%s, %s, %lld)"},
    {"gmcp_sub_delete", "DELETE FROM mcp_subscriptions WHERE session_id = %s AND uri = %s"},
    {"gmcp_sub_exists", "SELECT 1 FROM mcp_subscriptions WHERE session_id = %s AND uri = %s"},
    /* Sweeps: children first, so nothing dangles if one statement fails. */
    {"gmcp_sweep_events",
     "DELETE FROM mcp_events WHERE created < %lld OR session_id IN "
     "(SELECT id FROM mcp_sessions WHERE last_seen < %lld)"},
    {"gmcp_sweep_streams",
     "DELETE FROM mcp_streams WHERE created < %lld OR session_id IN "
     "(SELECT id FROM mcp_sessions WHERE last_seen < %lld)"},
    {"gmcp_sweep_pending",
     "DELETE FROM mcp_pending WHERE created < %lld OR session_id IN "
     "(SELECT id FROM mcp_sessions WHERE last_seen < %lld)"},
    {"gmcp_sweep_cancels",
     "DELETE FROM mcp_cancels WHERE created < %lld OR session_id IN "
     "(SELECT id FROM mcp_sessions WHERE last_seen < %lld)"},
    {"gmcp_sweep_subs",
     "DELETE FROM mcp_subscriptions WHERE session_id IN "
     "(SELECT id FROM mcp_sessions WHERE last_seen < %lld)"},
    {"gmcp_sweep_sessions", "DELETE FROM mcp_sessions WHERE last_seen < %lld"},
    {"gmcp_count_sessions", "SELECT COUNT(*) FROM mcp_sessions WHERE last_seen >= %lld"},
    {"gmcp_count_sessions_idle", "SELECT COUNT(*) FROM mcp_sessions WHERE last_seen < %lld"},
    {NULL, NULL}};

/* Integer parameters are written %lld: apr_dbd_pgsql declares each parameter's type
 * from its format (%s is varchar, which PostgreSQL will not compare with bigint);
 * values are still passed as decimal text. */

apr_status_t gmcp_session_create(gmcp_db *db, const gmcp_session *s, const char *client_info)
{
    const char *now = gmcp_now_str(db->pool);
    return gmcp_db_exec(
        db, "gmcp_session_insert", NULL,
        GMCP_ARGS(s->id, s->owner, s->protocol_version, client_info, s->client_caps, now, now));
}

apr_status_t gmcp_session_load(gmcp_db *db, const char *id, const char *owner,
                               apr_int64_t idle_timeout, gmcp_session *out)
{
    gmcp_rows rs;
    const char **row;
    apr_int64_t now = gmcp_now_sec();
    apr_status_t rv = gmcp_db_select(db, "gmcp_session_select", &rs,
                                     GMCP_ARGS(id, gmcp_i64_str(db->pool, now - idle_timeout)));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    row = GMCP_ROW(&rs, 0);
    /* Another principal's session answers exactly like a missing one. */
    if (owner && strcmp(owner, row[0]) != 0) return APR_ENOENT;
    out->id = apr_pstrdup(db->pool, id);
    out->owner = row[0];
    out->protocol_version = row[1];
    out->client_caps = row[2] ? row[2] : "{}";
    out->log_level = row[3] ? row[3] : "";
    out->last_seen = apr_atoi64(row[4]);
    if (now - out->last_seen >= GMCP_SESSION_TOUCH_EVERY) {
        rv = gmcp_db_exec(db, "gmcp_session_touch", NULL,
                          GMCP_ARGS(gmcp_i64_str(db->pool, now), id));
        if (rv != APR_SUCCESS) return rv;
        out->last_seen = now;
    }
    return APR_SUCCESS;
}

apr_status_t gmcp_session_set_level(gmcp_db *db, const char *id, const char *level)
{
    return gmcp_db_exec(db, "gmcp_session_level", NULL, GMCP_ARGS(level, id));
}

apr_status_t gmcp_session_delete(gmcp_db *db, const char *id)
{
    static const char *const labels[] = {"gmcp_session_del_events",
                                         "gmcp_session_del_streams",
                                         "gmcp_session_del_pending",
                                         "gmcp_session_del_cancels",
                                         "gmcp_session_del_subs",
                                         "gmcp_session_delete",
                                         NULL};
    apr_dbd_transaction_t *t = NULL;
    apr_status_t rv, end;
    int i, n = 0;
    if ((rv = gmcp_db_begin(db, &t)) != APR_SUCCESS) goto leave;
    for (i = 0; labels[i]; i++)
        if ((rv = gmcp_db_exec(db, labels[i], &n, GMCP_ARGS(id))) != APR_SUCCESS) goto leave;
    /* n: the rows of the last statement, the session's own */
leave:
    end = gmcp_db_end(db, t, rv != APR_SUCCESS);
    if (rv == APR_SUCCESS) rv = end;
    return rv == APR_SUCCESS && !n ? APR_ENOENT : rv;
}

apr_status_t gmcp_stream_create(gmcp_db *db, const char *stream_id, const char *session_id,
                                const char *request_key, const char *holder)
{
    return gmcp_db_exec(db, "gmcp_stream_insert", NULL,
                        GMCP_ARGS(stream_id, session_id, request_key, gmcp_now_str(db->pool),
                                  holder ? holder : ""));
}

apr_status_t gmcp_stream_finish(gmcp_db *db, const char *stream_id)
{
    return gmcp_db_exec(db, "gmcp_stream_done", NULL, GMCP_ARGS(stream_id));
}

apr_status_t gmcp_stream_get(gmcp_db *db, const char *stream_id, gmcp_stream *out)
{
    gmcp_rows rs;
    const char **row;
    apr_status_t rv = gmcp_db_select(db, "gmcp_stream_select", &rs, GMCP_ARGS(stream_id));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    row = GMCP_ROW(&rs, 0);
    out->session_id = row[0];
    out->done = atoi(row[1]);
    out->holder = row[2];
    out->created = apr_atoi64(row[3]);
    out->request_key = row[4];
    return APR_SUCCESS;
}

/* 1 when `message` is the response to the request (not a notification or a request of
 * the server's own). */
static int is_response(const char *message)
{
    json_t *m = json_loads(message, 0, NULL);
    int yes = m && json_object_get(m, "id") && !json_object_get(m, "method")
        && (json_object_get(m, "result") || json_object_get(m, "error"));
    json_decref(m);
    return yes;
}

apr_status_t gmcp_stream_give_up(gmcp_db *db, const char *stream_id, const char *session_id,
                                 const char *error_message)
{
    apr_dbd_transaction_t *t = NULL;
    apr_status_t rv, end;
    gmcp_rows rs;
    apr_int64_t seq = 0;
    int n = 0;
    if ((rv = gmcp_db_begin(db, &t)) != APR_SUCCESS) return rv;
    /* Whoever marks it done first adds the error; the others find it done. */
    if ((rv = gmcp_db_exec(db, "gmcp_stream_give_up", &n, GMCP_ARGS(stream_id))) != APR_SUCCESS
        || !n)
        goto leave;
    if ((rv = gmcp_db_select(db, "gmcp_event_last", &rs, GMCP_ARGS(stream_id))) != APR_SUCCESS)
        goto leave;
    if (rs.rows->nelts == 1) {
        seq = apr_atoi64(GMCP_ROW(&rs, 0)[0]);
        if (is_response(GMCP_ROW(&rs, 0)[1])) goto leave; /* answered; only not marked */
    }
    rv = gmcp_event_append(db, stream_id, session_id, seq + 1, error_message);
leave:
    end = gmcp_db_end(db, t, rv != APR_SUCCESS);
    return rv == APR_SUCCESS ? end : rv;
}

apr_status_t gmcp_event_append(gmcp_db *db, const char *stream_id, const char *session_id,
                               apr_int64_t seq, const char *message)
{
    return gmcp_db_exec(db, "gmcp_event_insert", NULL,
                        GMCP_ARGS(stream_id, gmcp_i64_str(db->pool, seq), session_id, message,
                                  gmcp_now_str(db->pool)));
}

apr_status_t gmcp_events_after(gmcp_db *db, const char *stream_id, apr_int64_t seq, gmcp_rows *out)
{
    return gmcp_db_select(db, "gmcp_events_after", out,
                          GMCP_ARGS(stream_id, gmcp_i64_str(db->pool, seq)));
}

apr_status_t gmcp_pending_create(gmcp_db *db, const char *session_id, const char *request_key)
{
    return gmcp_db_exec(db, "gmcp_pending_insert", NULL,
                        GMCP_ARGS(session_id, request_key, gmcp_now_str(db->pool)));
}

apr_status_t gmcp_pending_answer(gmcp_db *db, const char *session_id, const char *request_key,
                                 const char *response)
{
    int n = 0;
    apr_status_t rv =
        gmcp_db_exec(db, "gmcp_pending_answer", &n, GMCP_ARGS(response, session_id, request_key));
    if (rv != APR_SUCCESS) return rv;
    return n ? APR_SUCCESS : APR_ENOENT;
}

apr_status_t gmcp_pending_get(gmcp_db *db, const char *session_id, const char *request_key,
                              const char **response)
{
    gmcp_rows rs;
    apr_status_t rv;
    *response = NULL;
    rv = gmcp_db_select(db, "gmcp_pending_select", &rs, GMCP_ARGS(session_id, request_key));
    if (rv != APR_SUCCESS) return rv;
    if (rs.rows->nelts != 1) return APR_ENOENT;
    if (atoi(GMCP_ROW(&rs, 0)[0])) *response = GMCP_ROW(&rs, 0)[1];
    return APR_SUCCESS;
}

apr_status_t gmcp_pending_delete(gmcp_db *db, const char *session_id, const char *request_key)
{
    return gmcp_db_exec(db, "gmcp_pending_delete", NULL, GMCP_ARGS(session_id, request_key));
}

apr_status_t gmcp_cancel_record(gmcp_db *db, const char *session_id, const char *request_key)
{
    int cancelled = 0;
    /* A repeated cancellation is harmless: only insert the first. */
    apr_status_t rv = gmcp_cancel_check(db, session_id, request_key, &cancelled);
    if (rv != APR_SUCCESS || cancelled) return rv;
    /* Two cancellations racing past the check: the second insert conflicts, and the
     * request is cancelled all the same. */
    rv = gmcp_db_exec_unique(db, "gmcp_cancel_insert", NULL,
                             GMCP_ARGS(session_id, request_key, gmcp_now_str(db->pool)));
    return rv == APR_EEXIST ? APR_SUCCESS : rv;
}

apr_status_t gmcp_cancel_check(gmcp_db *db, const char *session_id, const char *request_key,
                               int *cancelled)
{
    gmcp_rows rs;
    apr_status_t rv =
        gmcp_db_select(db, "gmcp_cancel_select", &rs, GMCP_ARGS(session_id, request_key));
    if (rv != APR_SUCCESS) return rv;
    *cancelled = rs.rows->nelts > 0;
    return APR_SUCCESS;
}

apr_status_t gmcp_subscription_add(gmcp_db *db, const char *session_id, const char *uri)
{
    gmcp_rows rs;
    apr_status_t rv = gmcp_db_select(db, "gmcp_sub_exists", &rs, GMCP_ARGS(session_id, uri));
    if (rv != APR_SUCCESS || rs.rows->nelts) return rv;
    /* A concurrent subscribe of the same URI: subscribed either way. */
    rv = gmcp_db_exec_unique(db, "gmcp_sub_insert", NULL,
                             GMCP_ARGS(session_id, uri, gmcp_now_str(db->pool)));
    return rv == APR_EEXIST ? APR_SUCCESS : rv;
}

apr_status_t gmcp_subscription_remove(gmcp_db *db, const char *session_id, const char *uri)
{
    return gmcp_db_exec(db, "gmcp_sub_delete", NULL, GMCP_ARGS(session_id, uri));
}

apr_status_t gmcp_store_sweep(gmcp_db *db, apr_int64_t idle_timeout, apr_int64_t event_retention)
{
    /* Children first, in this order (see the statements). */
    static const char *const aged[] = {"gmcp_sweep_events", "gmcp_sweep_streams",
                                       "gmcp_sweep_pending", "gmcp_sweep_cancels", NULL};
    static const char *const idled[] = {"gmcp_sweep_subs", "gmcp_sweep_sessions", NULL};
    apr_int64_t now = gmcp_now_sec();
    const char *idle = gmcp_i64_str(db->pool, now - idle_timeout);
    const char *old = gmcp_i64_str(db->pool, now - event_retention);
    apr_status_t rv;
    int i;
    for (i = 0; aged[i]; i++)
        if ((rv = gmcp_db_exec(db, aged[i], NULL, GMCP_ARGS(old, idle))) != APR_SUCCESS) return rv;
    for (i = 0; idled[i]; i++)
        if ((rv = gmcp_db_exec(db, idled[i], NULL, GMCP_ARGS(idle))) != APR_SUCCESS) return rv;
    return APR_SUCCESS;
}
