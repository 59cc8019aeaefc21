/* gmcp_store.h — MCP sessions, SSE event streams and server→client rendezvous in SQL.
 *
 * Everything that must outlive a request lives here, so any child process of any
 * httpd node sharing the database can serve any request of a session. */
#ifndef GMCP_STORE_H
#define GMCP_STORE_H

#include <apr_pools.h>
#include <jansson.h>
#include "gmcp_db.h"
#include "gmcp_util.h"

typedef struct {
    const char *id;
    const char *owner;
    const char *protocol_version;
    const char *client_caps; /* JSON text */
    const char *log_level;   /* "" when the client never set one */
    apr_int64_t last_seen;
} gmcp_session;

/* How stale last_seen may get before a request refreshes it (seconds): keeps the
 * hot path read-only. */
#define GMCP_SESSION_TOUCH_EVERY 60

/* Every function here returns APR_SUCCESS, GMCP_EDB when the database failed (gmcp_db
 * logged it), or — where it says so — APR_ENOENT for "no such row". */

apr_status_t gmcp_session_create(gmcp_db *db, const gmcp_session *s, const char *client_info);
/* Load a live session owned by `owner` (NULL = any owner); one idle past
 * `idle_timeout` seconds counts as gone, and another owner's answers like a missing one:
 * APR_ENOENT. Refreshes last_seen at most once a minute. */
apr_status_t gmcp_session_load(gmcp_db *db, const char *id, const char *owner,
                               apr_int64_t idle_timeout, gmcp_session *out);
apr_status_t gmcp_session_set_level(gmcp_db *db, const char *id, const char *level);
/* Remove a session and everything hanging off it, in one transaction; APR_ENOENT when
 * there was no such session. */
apr_status_t gmcp_session_delete(gmcp_db *db, const char *id);

/* SSE streams of POST requests and their events (for Last-Event-ID resumption). The
 * holder is the answering process's token (gmcp_lease.h). */
typedef struct {
    const char *session_id;
    int done;           /* the response was stored (or the stream given up) */
    const char *holder; /* "" for streams made before holders were recorded */
    apr_int64_t created;
    const char *request_key; /* gmcp_id_key of the request it answers */
} gmcp_stream;
apr_status_t gmcp_stream_create(gmcp_db *db, const char *stream_id, const char *session_id,
                                const char *request_key, const char *holder);
apr_status_t gmcp_stream_finish(gmcp_db *db, const char *stream_id);
/* Look a stream up; APR_ENOENT. */
apr_status_t gmcp_stream_get(gmcp_db *db, const char *stream_id, gmcp_stream *out);
/* A stream whose answering process is gone: marked done, with `error_message` (the
 * request's JSON-RPC error) as its last event unless the response was stored already,
 * all in one transaction; a stream done already is left as it is. APR_SUCCESS or
 * GMCP_EDB. */
apr_status_t gmcp_stream_give_up(gmcp_db *db, const char *stream_id, const char *session_id,
                                 const char *error_message);
/* GMCP_EDB also for an event of that stream and seq stored already. */
apr_status_t gmcp_event_append(gmcp_db *db, const char *stream_id, const char *session_id,
                               apr_int64_t seq, const char *message);
/* Events of a stream after `seq`, oldest first: rows of (seq, message). */
apr_status_t gmcp_events_after(gmcp_db *db, const char *stream_id, apr_int64_t seq, gmcp_rows *out);

/* Server→client requests waiting for the client's response. */
apr_status_t gmcp_pending_create(gmcp_db *db, const char *session_id, const char *request_key);
/* Store the client's response; APR_ENOENT when nothing waits for that id. */
apr_status_t gmcp_pending_answer(gmcp_db *db, const char *session_id, const char *request_key,
                                 const char *response);
/* APR_ENOENT when no such request waits; *response is NULL while unanswered. */
apr_status_t gmcp_pending_get(gmcp_db *db, const char *session_id, const char *request_key,
                              const char **response);
apr_status_t gmcp_pending_delete(gmcp_db *db, const char *session_id, const char *request_key);

/* notifications/cancelled: recording one twice is no error. */
apr_status_t gmcp_cancel_record(gmcp_db *db, const char *session_id, const char *request_key);
apr_status_t gmcp_cancel_check(gmcp_db *db, const char *session_id, const char *request_key,
                               int *cancelled);

/* Subscribing twice, or removing what is not there, is no error. */
apr_status_t gmcp_subscription_add(gmcp_db *db, const char *session_id, const char *uri);
apr_status_t gmcp_subscription_remove(gmcp_db *db, const char *session_id, const char *uri);

/* Delete sessions idle past idle_timeout and events older than event_retention
 * seconds. */
apr_status_t gmcp_store_sweep(gmcp_db *db, apr_int64_t idle_timeout, apr_int64_t event_retention);

#endif
