/* gmcp_lease.c — see gmcp_lease.h. Linux's /proc tells a process's state and start. */
#include "gmcp_lease.h"
#include "gmcp_util.h"

#include <apr_errno.h>
#include <apr_network_io.h>
#include <apr_strings.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* State letter and start time (clock ticks since boot) of a process: APR_SUCCESS, the
 * OS's error opening /proc/<pid>/stat (ENOENT: no such process), or APR_EINVAL when it
 * does not read as one. */
static apr_status_t proc_stat(long pid, char *state, unsigned long long *start)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;
    int field;
    apr_snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    if (!(f = fopen(path, "r"))) return APR_FROM_OS_ERROR(errno);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) S ..." — comm may hold spaces and parentheses: the last ')' ends it.
     * The start time is field 22; the state is field 3. */
    if (!(p = strrchr(buf, ')')) || p[1] != ' ') return APR_EINVAL;
    p += 2;
    *state = *p;
    for (field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    if (!p) return APR_EINVAL;
    *start = strtoull(p, NULL, 10);
    return APR_SUCCESS;
}

static const char *self_start(apr_pool_t *p)
{
    char state;
    unsigned long long start = 0;
    if (proc_stat((long)getpid(), &state, &start) != APR_SUCCESS) return "0";
    /* APR's formatter has no %llu (it printed "%lu" here, and pid reuse went unseen). */
    return apr_psprintf(p, "%" APR_UINT64_T_FMT, (apr_uint64_t)start);
}

const char *gmcp_lease_token(apr_pool_t *p)
{
    char host[APRMAXHOSTLEN + 1] = "";
    const char *rnd = gmcp_random_id(p, 12);
    apr_gethostname(host, sizeof(host), p);
    if (!rnd) return NULL;
    return apr_psprintf(p, "%s/%ld/%s/%s", host, (long)getpid(), self_start(p), rnd);
}

int gmcp_lease_holder_dead(const char *token)
{
    char host[APRMAXHOSTLEN + 1] = "", state = 0;
    const char *slash = token ? strchr(token, '/') : NULL, *rest;
    char *end;
    unsigned long long start = 0, want;
    long pid;
    apr_pool_t *p;
    if (!slash || apr_pool_create(&p, NULL) != APR_SUCCESS) return 0;
    apr_gethostname(host, sizeof(host), p);
    apr_pool_destroy(p);
    if (strncmp(token, host, (apr_size_t)(slash - token)) != 0 || host[slash - token]) return 0;
    pid = strtol(slash + 1, &end, 10);
    if (pid <= 0 || *end != '/' || pid == (long)getpid()) return 0;
    if (kill((pid_t)pid, 0) != 0) return errno == ESRCH;
    if (proc_stat(pid, &state, &start) != APR_SUCCESS) return 0;
    if (state == 'Z' || state == 'X') return 1; /* a zombie nobody reaped */
    /* "host/pid/start/random": a different start means the pid was reused. Tokens
     * from before the start was recorded ("host/pid/random") only have the pid. */
    rest = end + 1;
    want = strtoull(rest, &end, 10);
    if (*end == '/' && want && want != start) return 1;
    return 0;
}

const char *gmcp_machine_id(apr_pool_t *p)
{
    char host[APRMAXHOSTLEN + 1] = "", boot[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof(boot), f)) boot[0] = '\0';
        fclose(f);
        boot[strcspn(boot, "\r\n")] = '\0';
    }
    apr_gethostname(host, sizeof(host), p);
    return apr_psprintf(p, "%s %s", host, *boot ? boot : "unknown-boot");
}

gmcp_machine_state gmcp_machine_check(apr_pool_t *p, const char *recorded)
{
    const char *me = gmcp_machine_id(p), *sp = strchr(me, ' ');
    apr_size_t host_len = (apr_size_t)(sp - me);
    if (!recorded || strncmp(recorded, me, host_len) != 0 || recorded[host_len] != ' ')
        return GMCP_MACHINE_OTHER;
    return strcmp(recorded, me) == 0 ? GMCP_MACHINE_SAME : GMCP_MACHINE_RESTARTED;
}
