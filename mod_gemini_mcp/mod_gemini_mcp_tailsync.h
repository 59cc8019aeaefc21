/* mod_gemini_mcp_tailsync.h — the tails of interval-mode uploads made durable after
 * their PATCH answered (GeminiMCPUploadDurability interval; mod_gemini_mcp_tailsync.c).
 *
 * A PATCH in interval mode answers once its bytes are written, with the rest of the
 * file past its last durable point still in the page cache. A thread in each child
 * syncs each such tail within the interval's seconds and moves the row's durable point
 * up to it. Should the child die first, nothing is lost on this machine (the page cache
 * outlives the process); should the machine restart, the row's durable point is where
 * the upload goes on (gmcp_upload_tail_lost). Bounded: at most TAILSYNC_MAX tails wait;
 * past that the PATCH syncs its own before answering. */
#ifndef MOD_GEMINI_MCP_TAILSYNC_H
#define MOD_GEMINI_MCP_TAILSYNC_H

#include <httpd.h>

/* Start the thread (at the first child init; its end syncs what still waits). */
void gmcp_tailsync_child_init(apr_pool_t *pchild, server_rec *s);

/* Have upload `id`'s spool file `path` made durable up to `offset` (hash state `state`,
 * as gmcp_sha256_save wrote it) within `within`, with the database of server s. 0 when
 * it will be; -1 when it cannot wait (no thread, or too many wait): sync it yourself. A
 * newer tail of the same upload replaces an older one, keeping the older one's time. */
int gmcp_tailsync_later(server_rec *s, const char *id, const char *path, apr_int64_t offset,
                        const char *state, apr_interval_time_t within);

#endif
