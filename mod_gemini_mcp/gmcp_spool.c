/* gmcp_spool.c — see gmcp_spool.h. */
#include "gmcp_spool.h"

#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <string.h>

/* How soon a due timed sync looks again while a job is under way. */
#define GMCP_SPOOL_RECHECK apr_time_from_msec(10)

struct gmcp_spool_writer {
    apr_pool_t *pool;  /* unmanaged: the threads and their buffers */
    apr_pool_t *owner; /* the caller's pool, whose cleanup closes */
    apr_file_t *f;
    gmcp_sha256 *h; /* the hasher thread's, until finish */
    gmcp_spool_policy policy;
    char *buf[2];
    apr_size_t fill; /* bytes in buf[cur], the request thread's buffer */
    int cur;

    /* Everything below is shared, under mu; cv signals any change. */
    apr_thread_mutex_t *mu;
    apr_thread_cond_t *cv;
    const char *job; /* a buffer for the writer and the hasher, or NULL */
    apr_size_t job_len;
    apr_uint64_t job_gen; /* which job it is */
    int job_done;         /* how many of the two finished it */
    int job_write_ok;
    apr_int64_t written; /* bytes written and hashed */
    int sync_pending;    /* a snapshot waits for (or is in) fdatasync */
    apr_int64_t sync_bytes;
    gmcp_sha256 *sync_state;
    apr_int64_t durable, reported;
    apr_time_t durable_at; /* when the last durable point was reached (or open) */
    gmcp_sha256 *durable_state;
    int stop;
    int finishing; /* finish_written: no new sync starts */
    apr_status_t err;
    apr_thread_t *writer, *hasher, *syncer;
};

static void fail(gmcp_spool_writer *w, apr_status_t rv)
{
    if (rv != APR_SUCCESS && w->err == APR_SUCCESS) w->err = rv;
}

/* (locked, syncer free) Hand the syncer what is written now and the hash there. */
static void start_sync(gmcp_spool_writer *w)
{
    w->sync_bytes = w->written;
    gmcp_sha256_copy(w->sync_state, w->h);
    w->sync_pending = 1;
    apr_thread_cond_broadcast(w->cv);
}

/* (locked) Start a sync when the syncer is free and the policy says one is due: enough
 * written since the last durable point, or (interval) long enough since it. Never while
 * a job is under way: the hasher updates h outside the lock, so only between jobs do h
 * and `written` describe the same bytes. */
static void maybe_sync(gmcp_spool_writer *w)
{
    apr_int64_t behind = w->written - w->durable;
    if (w->job || w->sync_pending || behind <= 0 || w->finishing) return;
    if (behind >= w->policy.gap
        || (w->policy.every > 0 && apr_time_now() - w->durable_at >= w->policy.every))
        start_sync(w);
}

gmcp_spool_policy gmcp_spool_interval(apr_int64_t lag, apr_interval_time_t every)
{
    gmcp_spool_policy pol;
    if (lag < GMCP_SPOOL_SYNC_GAP) lag = GMCP_SPOOL_SYNC_GAP;
    pol.max_lag = lag;
    pol.gap = lag / 4 < GMCP_SPOOL_SYNC_GAP ? GMCP_SPOOL_SYNC_GAP : lag / 4;
    pol.every = every;
    return pol;
}

/* The writer and the hasher take every job, each its part; the second to finish
 * retires it (and takes a durable-point snapshot when one is due). */
static void work(gmcp_spool_writer *w, int writes)
{
    apr_uint64_t seen = 0;
    apr_thread_mutex_lock(w->mu);
    for (;;) {
        const char *job;
        apr_size_t len;
        apr_status_t rv = APR_SUCCESS;
        while (!(w->job && w->job_gen != seen) && !w->stop) apr_thread_cond_wait(w->cv, w->mu);
        if (!(w->job && w->job_gen != seen)) break;
        seen = w->job_gen;
        job = w->job;
        len = w->job_len;
        apr_thread_mutex_unlock(w->mu);
        if (writes) {
            if (len) rv = apr_file_write_full(w->f, job, len, NULL);
        }
        else {
            gmcp_sha256_update(w->h, job, len);
        }
        apr_thread_mutex_lock(w->mu);
        if (writes) {
            fail(w, rv);
            w->job_write_ok = rv == APR_SUCCESS;
        }
        if (++w->job_done < 2) continue;
        w->job = NULL;
        w->job_done = 0;
        if (w->job_write_ok) {
            w->written += (apr_int64_t)len;
            /* The syncer follows as the disk lets it: whenever it is free and the
             * policy's gap was written (fewer, larger flushes cost less). */
            maybe_sync(w);
        }
        apr_thread_cond_broadcast(w->cv);
    }
    apr_thread_mutex_unlock(w->mu);
}

static void *APR_THREAD_FUNC writer(apr_thread_t *t, void *arg)
{
    (void)t;
    work(arg, 1);
    return NULL;
}

static void *APR_THREAD_FUNC hasher(apr_thread_t *t, void *arg)
{
    (void)t;
    work(arg, 0);
    return NULL;
}

static void *APR_THREAD_FUNC syncer(apr_thread_t *t, void *arg)
{
    gmcp_spool_writer *w = arg;
    (void)t;
    apr_thread_mutex_lock(w->mu);
    for (;;) {
        apr_status_t rv;
        while (!w->sync_pending && !w->stop) {
            /* Interval: bytes not yet durable are synced within the policy's time even
             * when nothing more arrives (the client paused or stalled). */
            apr_interval_time_t left = w->durable_at + w->policy.every - apr_time_now();
            if (w->policy.every <= 0 || w->written <= w->durable || w->err != APR_SUCCESS
                || w->finishing)
                apr_thread_cond_wait(w->cv, w->mu);
            else if (left > 0 || w->job) /* a job's retirement starts it (maybe_sync) */
                apr_thread_cond_timedwait(w->cv, w->mu, left > 0 ? left : GMCP_SPOOL_RECHECK);
            else
                start_sync(w);
        }
        if (!w->sync_pending) break;
        apr_thread_mutex_unlock(w->mu);
        /* Everything up to sync_bytes was written before this call began: on disk
         * when it returns (later bytes may be too; they are not counted yet). */
        rv = apr_file_datasync(w->f);
        apr_thread_mutex_lock(w->mu);
        fail(w, rv);
        if (rv == APR_SUCCESS) {
            w->durable = w->sync_bytes;
            w->durable_at = apr_time_now();
            gmcp_sha256_copy(w->durable_state, w->sync_state);
        }
        w->sync_pending = 0;
        /* A writer held back by the lag bound retires nothing until this one syncs
         * again: go on at once when the gap is there already. */
        if (rv == APR_SUCCESS) maybe_sync(w);
        apr_thread_cond_broadcast(w->cv);
    }
    apr_thread_mutex_unlock(w->mu);
    return NULL;
}

static apr_status_t close_cleanup(void *data)
{
    gmcp_spool_writer *w = data;
    w->owner = NULL; /* being destroyed: nothing to unregister */
    gmcp_spool_close(w);
    return APR_SUCCESS;
}

/* Pools are not thread-safe, so the threads touch none another thread uses: they and
 * the buffers live in a pool of their own (an unmanaged one, with its own allocator),
 * made and destroyed only by the calling thread, and they end by returning, never by
 * apr_thread_exit() (which destroys the thread's pool from the thread itself). A
 * cleanup of the caller's pool closes the writer on any return path. */
apr_status_t gmcp_spool_open(gmcp_spool_writer **wp, apr_pool_t *p, apr_file_t *f, gmcp_sha256 *h,
                             gmcp_spool_policy policy)
{
    apr_pool_t *own;
    gmcp_spool_writer *w;
    apr_status_t rv;
    *wp = NULL;
    if ((rv = apr_pool_create_unmanaged_ex(&own, NULL, NULL)) != APR_SUCCESS) return rv;
    w = apr_pcalloc(own, sizeof(*w));
    w->pool = own;
    w->f = f;
    w->h = h;
    w->policy = policy;
    w->durable_at = apr_time_now();
    w->buf[0] = apr_palloc(own, GMCP_SPOOL_BUFFER);
    w->buf[1] = apr_palloc(own, GMCP_SPOOL_BUFFER);
    w->sync_state = gmcp_sha256_make(own);
    w->durable_state = gmcp_sha256_make(own);
    if ((rv = apr_thread_mutex_create(&w->mu, APR_THREAD_MUTEX_DEFAULT, own)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&w->cv, own)) != APR_SUCCESS)
        goto leave;
    /* From here on gmcp_spool_close undoes it, on failure too. */
    w->owner = p;
    apr_pool_cleanup_register(p, w, close_cleanup, apr_pool_cleanup_null);
    if ((rv = apr_thread_create(&w->writer, NULL, writer, w, own)) != APR_SUCCESS)
        w->writer = NULL;
    else if ((rv = apr_thread_create(&w->hasher, NULL, hasher, w, own)) != APR_SUCCESS)
        w->hasher = NULL;
    else if ((rv = apr_thread_create(&w->syncer, NULL, syncer, w, own)) != APR_SUCCESS)
        w->syncer = NULL;
leave:
    if (rv == APR_SUCCESS)
        *wp = w;
    else if (w->owner)
        gmcp_spool_close(w); /* stops what started; w goes with own */
    else
        apr_pool_destroy(own);
    return rv;
}

/* (locked) Is the writer to wait for the disk: a job under way, or (interval) as much
 * written but not yet durable as the policy allows? */
static int must_wait(const gmcp_spool_writer *w)
{
    return w->job
        || (w->policy.max_lag > 0 && w->err == APR_SUCCESS && w->sync_pending
            && w->written - w->durable >= w->policy.max_lag);
}

/* Hand the request thread's buffer to the writer and hasher, once they are free. */
static apr_status_t hand_over(gmcp_spool_writer *w)
{
    apr_status_t err;
    apr_thread_mutex_lock(w->mu);
    while (must_wait(w)) apr_thread_cond_wait(w->cv, w->mu);
    if ((err = w->err) == APR_SUCCESS && w->fill) {
        w->job = w->buf[w->cur];
        w->job_len = w->fill;
        w->job_gen++;
        apr_thread_cond_broadcast(w->cv);
        w->cur ^= 1;
        w->fill = 0;
    }
    apr_thread_mutex_unlock(w->mu);
    return err;
}

apr_status_t gmcp_spool_write(gmcp_spool_writer *w, const void *data, apr_size_t len)
{
    const char *d = data;
    while (len) {
        apr_size_t take = GMCP_SPOOL_BUFFER - w->fill;
        apr_status_t rv;
        if (take > len) take = len;
        memcpy(w->buf[w->cur] + w->fill, d, take);
        w->fill += take;
        d += take;
        len -= take;
        if (w->fill == GMCP_SPOOL_BUFFER && (rv = hand_over(w)) != APR_SUCCESS) return rv;
    }
    return APR_SUCCESS;
}

apr_status_t gmcp_spool_checkpoint(gmcp_spool_writer *w) { return hand_over(w); }

int gmcp_spool_durable(gmcp_spool_writer *w, apr_int64_t *bytes, gmcp_sha256 *state)
{
    int fresh;
    apr_thread_mutex_lock(w->mu);
    fresh = w->durable > w->reported;
    if (fresh) {
        *bytes = w->reported = w->durable;
        gmcp_sha256_copy(state, w->durable_state);
    }
    apr_thread_mutex_unlock(w->mu);
    return fresh;
}

/* (locked) Until everything handed over is written, hashed and durable, or an error. A
 * buffer retired while the syncer was busy started no sync: start it here. */
static void drain(gmcp_spool_writer *w)
{
    while (w->err == APR_SUCCESS && (w->job || w->sync_pending || w->durable < w->written)) {
        if (!w->job && !w->sync_pending) start_sync(w);
        apr_thread_cond_wait(w->cv, w->mu);
    }
    while (w->job || w->sync_pending) apr_thread_cond_wait(w->cv, w->mu);
}

void gmcp_spool_settle(gmcp_spool_writer *w)
{
    apr_thread_mutex_lock(w->mu);
    drain(w);
    apr_thread_mutex_unlock(w->mu);
}

apr_status_t gmcp_spool_finish(gmcp_spool_writer *w, apr_int64_t *bytes)
{
    apr_status_t rv = hand_over(w);
    apr_thread_mutex_lock(w->mu);
    drain(w);
    if (rv == APR_SUCCESS) rv = w->err;
    *bytes = w->written;
    apr_thread_mutex_unlock(w->mu);
    return rv;
}

apr_status_t gmcp_spool_finish_written(gmcp_spool_writer *w, apr_int64_t *bytes)
{
    apr_status_t rv = hand_over(w);
    apr_thread_mutex_lock(w->mu);
    while (w->job) apr_thread_cond_wait(w->cv, w->mu);
    /* The sync under way (if any) is let end, for the freshest durable point; no other
     * starts: the rest is the caller's to have synced. */
    w->finishing = 1;
    while (w->sync_pending) apr_thread_cond_wait(w->cv, w->mu);
    if (rv == APR_SUCCESS) rv = w->err;
    *bytes = w->written;
    apr_thread_mutex_unlock(w->mu);
    return rv;
}

void gmcp_spool_close(gmcp_spool_writer *w)
{
    apr_status_t ignored;
    apr_thread_mutex_lock(w->mu);
    while ((w->job && w->writer && w->hasher) || (w->sync_pending && w->syncer))
        apr_thread_cond_wait(w->cv, w->mu);
    w->stop = 1;
    apr_thread_cond_broadcast(w->cv);
    apr_thread_mutex_unlock(w->mu);
    if (w->writer) apr_thread_join(&ignored, w->writer);
    if (w->hasher) apr_thread_join(&ignored, w->hasher);
    if (w->syncer) apr_thread_join(&ignored, w->syncer);
    if (w->owner) apr_pool_cleanup_kill(w->owner, w, close_cleanup);
    apr_pool_destroy(w->pool); /* w itself goes with it */
}
