/* gmcp_lease.h — who holds a lease row (a chat's send, an upload's PATCH).
 *
 * A lease token names its holder: "<host>/<pid>/<process start>/<random>". A holder on
 * this host whose process is gone (killed mid-request), a zombie, or a process that
 * merely reuses its pid is dead at once, so its lease is taken over without waiting for
 * the expiry; a holder elsewhere is trusted until its lease expires. */
#ifndef GMCP_LEASE_H
#define GMCP_LEASE_H

#include <apr_pools.h>

/* A fresh token for this process (NULL without randomness). */
const char *gmcp_lease_token(apr_pool_t *p);

/* 1 when the token's holder certainly no longer runs: same host, and its pid is gone,
 * a zombie, or now another process. 0 when alive, unknown or elsewhere (also for this
 * very process, whose other threads may hold it). */
int gmcp_lease_holder_dead(const char *token);

#endif
