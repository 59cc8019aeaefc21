/* gmcp_chat_cache.h — a copy of chat histories this process read or wrote, so a
 * gemini_chat_send need not read the whole history again (gmcp_chat_cache.c).
 *
 * A chat's messages are only ever appended (two per turn, under its send lease) and
 * the session row counts them; a session deleted is never found again under its id.
 * So a copy holding exactly the session's message_count messages, as the send lease
 * returned it, is the history itself, whichever process or node wrote the messages:
 * the count is the check, no time-to-live and no message between nodes is needed.
 * Memory is bounded: a fixed number of slots, each holding one history of at most
 * GMCP_CHAT_CACHE_MAX_BYTES (longer ones are read from the database every time). */
#ifndef GMCP_CHAT_CACHE_H
#define GMCP_CHAT_CACHE_H

#include <apr_pools.h>
#include <apr_tables.h>

#define GMCP_CHAT_CACHE_SLOTS 64
#define GMCP_CHAT_CACHE_MAX_BYTES (256 * 1024)

typedef struct gmcp_chat_cache gmcp_chat_cache;

/* A cache living as long as `p`; NULL when a mutex cannot be made. */
gmcp_chat_cache *gmcp_chat_cache_create(apr_pool_t *p);

/* The history of session `id` when the copy holds exactly `count` messages: 1 with *out
 * (gmcp_chat_message, oldest first, copied into p), else 0. c may be NULL (no cache). */
int gmcp_chat_cache_get(gmcp_chat_cache *c, const char *id, apr_int64_t count, apr_pool_t *p,
                        apr_array_header_t **out);
/* Remember the whole history of `id` (msgs: gmcp_chat_message, oldest first), or forget
 * it when it is too large to keep. */
void gmcp_chat_cache_put(gmcp_chat_cache *c, const char *id, const apr_array_header_t *msgs);
void gmcp_chat_cache_drop(gmcp_chat_cache *c, const char *id);

#endif
