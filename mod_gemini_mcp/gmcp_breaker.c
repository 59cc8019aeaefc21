/* gmcp_breaker.c — closed → open → half-open → closed, shared through the caller's state. */
#include "gmcp_breaker.h"

int gmcp_breaker_allow(gmcp_breaker *b, apr_time_t now, int *probe, apr_interval_time_t *retry_in)
{
    gmcp_breaker_state *st = b->st;
    int ok = 1;
    *probe = 0;
    *retry_in = 0;
    b->lock(b->baton);
    if (st->state == GMCP_BREAKER_OPEN) {
        if (now - st->opened_at >= b->cooldown) {
            st->state = GMCP_BREAKER_HALF_OPEN;
            st->probe_started = now;
            *probe = 1;
        }
        else {
            ok = 0;
            *retry_in = b->cooldown - (now - st->opened_at);
        }
    }
    else if (st->state == GMCP_BREAKER_HALF_OPEN) {
        /* One probe at a time; a probe that never reported (its process died) is
         * replaced after another cooldown. */
        if (now - st->probe_started >= b->cooldown) {
            st->probe_started = now;
            *probe = 1;
        }
        else {
            ok = 0;
            *retry_in = b->cooldown - (now - st->probe_started);
        }
    }
    b->unlock(b->baton);
    return ok;
}

void gmcp_breaker_record(gmcp_breaker *b, int healthy, int probe, apr_time_t now)
{
    gmcp_breaker_state *st = b->st;
    b->lock(b->baton);
    if (healthy) {
        st->state = GMCP_BREAKER_CLOSED;
        st->failures = 0;
    }
    else {
        st->failures++;
        if (probe || (st->state == GMCP_BREAKER_CLOSED && st->failures >= b->threshold)) {
            if (st->state != GMCP_BREAKER_OPEN) st->opens++;
            st->state = GMCP_BREAKER_OPEN;
            st->opened_at = now;
        }
    }
    b->unlock(b->baton);
}
