/* gmcp_chat.h — persistent Gemini chat sessions in SQL, and their exports.
 *
 * Shared by the gemini_chat_* tools and gmcpctl. Every query filters by owner: another
 * principal's session answers exactly like a missing one. */
#ifndef GMCP_CHAT_H
#define GMCP_CHAT_H

#include <apr_pools.h>
#include <jansson.h>
#include "gmcp_db.h"
#include "gmcp_util.h"

typedef struct {
    const char *id;
    const char *owner;
    const char *title;
    const char *model;
    const char *system_instruction;
    apr_int64_t created, last_used;
    apr_int64_t message_count, prompt_tokens, output_tokens;
} gmcp_chat_session;

typedef struct {
    apr_int64_t seq;
    const char *role;  /* "user" | "model" */
    const char *parts; /* JSON array of Gemini parts */
    const char *text;
    apr_int64_t prompt_tokens, output_tokens;
    const char *finish_reason, *model_version;
    apr_int64_t created;
} gmcp_chat_message;

/* Every function here that returns an apr_status_t answers APR_SUCCESS, GMCP_EDB when
 * the database failed (gmcp_db logged it), or — where it says so — APR_ENOENT (no such
 * session of that owner) or APR_EBUSY. */
apr_status_t gmcp_chat_create(gmcp_db *db, const gmcp_chat_session *s);
/* owner NULL: any owner (gmcpctl). idle_timeout 0: no expiry check. APR_ENOENT. */
apr_status_t gmcp_chat_get(gmcp_db *db, const char *id, const char *owner, apr_int64_t idle_timeout,
                           gmcp_chat_session *out);
/* Sessions of an owner (NULL: all), most recently used first. */
apr_status_t gmcp_chat_list(gmcp_db *db, const char *owner, apr_int64_t idle_timeout, int offset,
                            int limit, apr_array_header_t **out /* gmcp_chat_session */);
apr_status_t gmcp_chat_messages(gmcp_db *db, const char *id, apr_int64_t after_seq, int limit,
                                apr_array_header_t **out /* gmcp_chat_message */);
/* The session and its messages, in one transaction; APR_ENOENT. */
apr_status_t gmcp_chat_delete(gmcp_db *db, const char *id, const char *owner);

/* The send lease: one sender at a time per session, across processes and nodes. The
 * token comes from gmcp_lease_token(); a lease whose holder died on this host is taken
 * over at once, one held elsewhere when it expires. APR_SUCCESS when `token` holds it
 * now (fresh or taken over), APR_EBUSY while another sender holds it (or the session
 * is gone meanwhile), GMCP_EDB. */
apr_status_t gmcp_chat_lock(gmcp_db *db, const char *id, const char *owner, const char *token,
                            apr_int64_t lease_seconds);
/* gmcp_chat_get and gmcp_chat_lock together, in one round trip when the lease is free:
 * APR_SUCCESS (the lease is ours, *out read under it), APR_ENOENT, APR_EBUSY, GMCP_EDB. */
apr_status_t gmcp_chat_lock_get(gmcp_db *db, const char *id, const char *owner,
                                apr_int64_t idle_timeout, const char *token,
                                apr_int64_t lease_seconds, gmcp_chat_session *out);
apr_status_t gmcp_chat_unlock(gmcp_db *db, const char *id, const char *token);
/* A release the database refused: remembered by this process and done by
 * gmcp_chat_release_pending (the next send, or the module's periodic tick). */
void gmcp_chat_release_later(const char *id, const char *token);
int gmcp_chat_releases_pending(void);
void gmcp_chat_release_pending(gmcp_db *db);

/* Append a user message and the model's answer in one statement — both or neither,
 * and only while `token` holds the lease — then release the lease. APR_ENOENT when
 * the lease was lost (nothing stored). */
apr_status_t gmcp_chat_append_turn(gmcp_db *db, const gmcp_chat_session *s, const char *token,
                                   const gmcp_chat_message *user, const gmcp_chat_message *model);

/* Remove sessions idle past idle_timeout seconds (with their messages). */
apr_status_t gmcp_chat_sweep(gmcp_db *db, apr_int64_t idle_timeout);

/* Exports: "json", "text" or "markdown"; NULL for an unknown format. */
const char *gmcp_chat_export(apr_pool_t *p, const gmcp_chat_session *s,
                             const apr_array_header_t *messages, const char *format);
json_t *gmcp_chat_session_json(const gmcp_chat_session *s);

#endif
