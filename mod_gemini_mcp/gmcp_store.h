/* gmcp_store.h — MCP sessions, SSE event streams and server→client rendezvous in SQL.
 *
 * Everything that must outlive a request lives here, so any child process of any
 * httpd node sharing the database can serve any request of a session. */
#ifndef GMCP_STORE_H
#define GMCP_STORE_H

#include <apr_pools.h>
#include <jansson.h>
#include "gmcp_db.h"

typedef struct {
    const char *id;
    const char *owner;
    const char *protocol_version;
    const char *client_caps;     /* JSON text */
    const char *log_level;       /* "" when the client never set one */
    apr_int64_t last_seen;
} gmcp_session;

/* Return codes of lookups */
#define GMCP_FOUND     0
#define GMCP_NOT_FOUND 1
#define GMCP_DB_ERROR  -1

int gmcp_session_create(gmcp_db *db, const gmcp_session *s, const char *client_info);
/* Load a live session owned by `owner` (NULL = any owner); one idle past
 * `idle_timeout` seconds counts as gone. Refreshes last_seen at most once a minute. */
int gmcp_session_load(gmcp_db *db, const char *id, const char *owner,
                      apr_int64_t idle_timeout, gmcp_session *out);
int gmcp_session_set_level(gmcp_db *db, const char *id, const char *level);
/* Remove a session and everything hanging off it, in one transaction. */
int gmcp_session_delete(gmcp_db *db, const char *id);

/* SSE streams of POST requests and their events (for Last-Event-ID resumption). */
int gmcp_stream_create(gmcp_db *db, const char *stream_id, const char *session_id,
                       const char *request_key);
int gmcp_stream_finish(gmcp_db *db, const char *stream_id);
/* Look a stream up: its session and whether its response was stored. */
int gmcp_stream_get(gmcp_db *db, const char *stream_id, const char **session_id, int *done);
int gmcp_event_append(gmcp_db *db, const char *stream_id, const char *session_id,
                      apr_int64_t seq, const char *message);
/* Events of a stream after `seq`, oldest first: rows of (seq, message). */
int gmcp_events_after(gmcp_db *db, const char *stream_id, apr_int64_t seq, gmcp_rows *out);

/* Server→client requests waiting for the client's response. */
int gmcp_pending_create(gmcp_db *db, const char *session_id, const char *request_key);
/* Store the client's response; GMCP_NOT_FOUND when nothing waits for that id. */
int gmcp_pending_answer(gmcp_db *db, const char *session_id, const char *request_key,
                        const char *response);
/* *response is NULL while unanswered. */
int gmcp_pending_get(gmcp_db *db, const char *session_id, const char *request_key,
                     const char **response);
int gmcp_pending_delete(gmcp_db *db, const char *session_id, const char *request_key);

/* notifications/cancelled */
int gmcp_cancel_record(gmcp_db *db, const char *session_id, const char *request_key);
int gmcp_cancel_check(gmcp_db *db, const char *session_id, const char *request_key,
                      int *cancelled);

int gmcp_subscription_add(gmcp_db *db, const char *session_id, const char *uri);
int gmcp_subscription_remove(gmcp_db *db, const char *session_id, const char *uri);

/* Delete sessions idle past idle_timeout and events older than event_retention
 * seconds. Returns 0 on success. */
int gmcp_store_sweep(gmcp_db *db, apr_int64_t idle_timeout, apr_int64_t event_retention);

#endif
