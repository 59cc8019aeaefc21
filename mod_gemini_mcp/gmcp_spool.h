/* gmcp_spool.h — writing an upload's bytes to its spool file, hashed and made durable
 * off the request thread.
 *
 * The request thread only receives: bytes are gathered into 1 MiB buffers (one write()
 * per MiB rather than one per socket read) and each full buffer goes at once to a writer
 * thread, which writes it, and to a hasher thread, which adds it to the running SHA-256
 * (about 1 ms per MiB), while the next one fills. Whenever a syncer thread is free and
 * 4 MiB more were written, the one of them finishing a buffer last hands it a snapshot — bytes written so far and the
 * hash state there; the syncer fdatasync()s the file and publishes the snapshot as
 * durable. The request thread records durable points in SQL, so the offset a client is
 * told still only counts bytes that are on disk, while the disk flushes keep pace with
 * receiving instead of stopping it.
 *
 * How often it syncs is a policy: synced (every 4 MiB, and finish waits until all is
 * durable) or interval (every quarter of a lag bound or every few seconds; reception
 * waits only when the lag bound is reached, and the tail may be synced after the
 * request, see gmcp_spool_finish_written).
 *
 * Memory is fixed (two 1 MiB buffers per PATCH) whatever the file size. */
#ifndef GMCP_SPOOL_H
#define GMCP_SPOOL_H

#include <apr_file_io.h>
#include "gmcp_sha256.h"

#define GMCP_SPOOL_BUFFER (1024 * 1024)
#define GMCP_SPOOL_SYNC_GAP (4 * GMCP_SPOOL_BUFFER)

typedef struct gmcp_spool_writer gmcp_spool_writer;

typedef struct {
    apr_int64_t gap;           /* a sync starts once this much more was written... */
    apr_interval_time_t every; /* ...or this long after the last durable point (0: no) */
    apr_int64_t max_lag;       /* writing waits while this much is not durable (0: never) */
} gmcp_spool_policy;
/* Every byte durable before the request's answer. */
#define GMCP_SPOOL_SYNCED ((gmcp_spool_policy){GMCP_SPOOL_SYNC_GAP, 0, 0})
/* At most `lag` bytes, and about `every` of time, not yet durable. */
gmcp_spool_policy gmcp_spool_interval(apr_int64_t lag, apr_interval_time_t every);

/* A writer into *w: writes go to f at its current position; h (already holding the bytes
 * before it) follows every byte written; both must outlive p. The threads and buffers
 * live in a pool of the writer's own, never in p. APR_SUCCESS, or the error making that
 * pool, a lock or a thread (*w NULL). */
apr_status_t gmcp_spool_open(gmcp_spool_writer **w, apr_pool_t *p, apr_file_t *f, gmcp_sha256 *h,
                             gmcp_spool_policy policy);
/* Queue bytes; APR_SUCCESS, or the first write or sync error seen so far. */
apr_status_t gmcp_spool_write(gmcp_spool_writer *w, const void *data, apr_size_t len);
/* Pass on a partly filled buffer now (a slow upload's timer), so it becomes durable. */
apr_status_t gmcp_spool_checkpoint(gmcp_spool_writer *w);
/* A durable point newer than the last one returned (a query, not a failure): 1 with the
 * bytes (since open) and the hash state there copied into `state`; 0 when there is none. */
int gmcp_spool_durable(gmcp_spool_writer *w, apr_int64_t *bytes, gmcp_sha256 *state);
/* Wait until everything passed on so far is written, hashed and durable (a pause in the
 * request is the time to catch up). */
void gmcp_spool_settle(gmcp_spool_writer *w);
/* Write, hash and make durable everything queued; *bytes is then all of it, and h its
 * hash. */
apr_status_t gmcp_spool_finish(gmcp_spool_writer *w, apr_int64_t *bytes);
/* Write and hash everything queued, and let a sync under way end, without making the
 * rest durable (interval: the caller has it synced later); *bytes is all of it, h its
 * hash, and gmcp_spool_durable tells the last durable point. */
apr_status_t gmcp_spool_finish_written(gmcp_spool_writer *w, apr_int64_t *bytes);
/* Stop the threads and free the writer; bytes queued and not finished are dropped (may
 * be partly written). Call it at most once, from the thread that opened it; when it is
 * not called, the cleanup of the pool given to open does it. */
void gmcp_spool_close(gmcp_spool_writer *w);

#endif
