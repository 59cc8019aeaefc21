/* mod_gemini_mcp_child_thread.c — see mod_gemini_mcp_child_thread.h. */
#include "mod_gemini_mcp_child_thread.h"

/* A pre-cleanup of the child pool: stop set, the thread woken and joined. */
static apr_status_t stop_thread(void *data)
{
    gmcp_child_thread *t = data;
    apr_status_t trv;
    apr_thread_mutex_lock(t->mu);
    t->stop = 1;
    apr_thread_cond_broadcast(t->cv);
    apr_thread_mutex_unlock(t->mu);
    apr_thread_join(&trv, t->thread);
    t->thread = NULL;
    return APR_SUCCESS;
}

apr_status_t gmcp_child_thread_start(gmcp_child_thread *t, apr_pool_t *pchild,
                                     apr_thread_start_t fn)
{
    apr_status_t rv;
    t->stop = 0;
    if ((rv = apr_thread_mutex_create(&t->mu, APR_THREAD_MUTEX_DEFAULT, pchild)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&t->cv, pchild)) != APR_SUCCESS
        || (rv = apr_thread_create(&t->thread, NULL, fn, t, pchild)) != APR_SUCCESS) {
        t->mu = NULL;
        return rv;
    }
    apr_pool_pre_cleanup_register(pchild, t, stop_thread);
    return APR_SUCCESS;
}
