/* gmcp_breaker.h — a circuit breaker for the Gemini API.
 *
 * After `threshold` consecutive failed calls (Gemini unreachable, 429/5xx after
 * retries) calls fail fast for `cooldown`; then one probe call is let through, and its
 * outcome closes or reopens the breaker. The state lives wherever the caller puts it
 * (httpd shared memory, so every child process sees it) and is guarded by the caller's
 * lock. */
#ifndef GMCP_BREAKER_H
#define GMCP_BREAKER_H

#include <apr_time.h>

#define GMCP_BREAKER_CLOSED 0
#define GMCP_BREAKER_OPEN 1
#define GMCP_BREAKER_HALF_OPEN 2

typedef struct {
    apr_uint32_t state;
    apr_uint32_t failures; /* consecutive */
    apr_time_t opened_at;
    apr_time_t probe_started; /* half-open: when the probe went out */
    apr_uint64_t opens;       /* how often it opened (for metrics) */
} gmcp_breaker_state;

typedef struct {
    gmcp_breaker_state *st;
    void (*lock)(void *baton);
    void (*unlock)(void *baton);
    void *baton;
    unsigned int threshold;
    apr_interval_time_t cooldown;
} gmcp_breaker;

/* May a call go out now? Returns 1 (and *probe when it is the half-open probe), or 0
 * with *retry_in = how long until a probe may go. */
int gmcp_breaker_allow(gmcp_breaker *b, apr_time_t now, int *probe, apr_interval_time_t *retry_in);
/* Record a call's outcome: healthy (Gemini answered, even with a 4xx) or failed. */
void gmcp_breaker_record(gmcp_breaker *b, int healthy, int probe, apr_time_t now);

#endif
