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

/* This machine as it runs now: "<host> <boot id>" (the kernel's random boot id, new at
 * every boot), naming who holds bytes written but not yet synced (gmcp_uploads.h). */
const char *gmcp_machine_id(apr_pool_t *p);
/* Of a recorded machine id: GMCP_MACHINE_SAME (this machine, not restarted since),
 * GMCP_MACHINE_RESTARTED (this host, booted since: its page cache is gone) or
 * GMCP_MACHINE_OTHER (another host, or not an id). */
typedef enum { GMCP_MACHINE_SAME, GMCP_MACHINE_RESTARTED, GMCP_MACHINE_OTHER } gmcp_machine_state;
gmcp_machine_state gmcp_machine_check(apr_pool_t *p, const char *recorded);

#endif
