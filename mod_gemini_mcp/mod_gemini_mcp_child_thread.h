/* mod_gemini_mcp_child_thread.h — a thread a child process runs in the background
 * (mod_gemini_mcp_child_thread.c): with the mutex and condition its work shares, and
 * ended by a pre-cleanup of the child pool, so it is gone before mod_dbd's pool. */
#ifndef MOD_GEMINI_MCP_CHILD_THREAD_H
#define MOD_GEMINI_MCP_CHILD_THREAD_H

#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>

typedef struct {
    apr_thread_mutex_t *mu; /* NULL: not running (start failed, or never started) */
    apr_thread_cond_t *cv;  /* signalled on stop */
    apr_thread_t *thread;
    int stop; /* under mu: set once the child is ending */
} gmcp_child_thread;

/* Make t's mutex and condition and run fn(t) in a thread of pchild. APR_SUCCESS, or the
 * error (t->mu NULL). fn returns once it sees t->stop: by returning, never by
 * apr_thread_exit(), whose pthread_exit() leaves ASan's scope poisoning on the stack
 * so the runtime's own thread teardown trips on it and ends the child before the
 * child pool's cleanups (the last usage flush) run. The thread's pool goes with pchild. */
apr_status_t gmcp_child_thread_start(gmcp_child_thread *t, apr_pool_t *pchild,
                                     apr_thread_start_t fn);

#endif
