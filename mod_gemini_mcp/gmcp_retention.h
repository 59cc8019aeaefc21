/* gmcp_retention.h — how long usage and the audit log are kept, and the run of
 * `gmcpctl cleanup` that applies it (shared by the module, which validates the
 * directives, and gmcpctl, which applies them).
 *
 * Usage: hourly rows older than GeminiMCPUsageRetention are rolled into usage_daily
 * (per key and UTC day) and deleted, in one transaction; only whole UTC days entirely
 * before the cutoff are rolled, so gmcp_usage_sum (hourly rows since S plus daily rows
 * of days starting at or after S) stays exact for every day-aligned S. Daily rows older
 * than GeminiMCPUsageDailyRetention are deleted.
 *
 * Audit: rows older than GeminiMCPAuditRetention are deleted through a grant
 * (retention_grants, migration 0006) that only this transaction holds, and the delete
 * is itself audited (action retention.delete) in the same transaction. */
#ifndef GMCP_RETENTION_H
#define GMCP_RETENTION_H

#include <apr_pools.h>
#include "gmcp_db.h"

#define GMCP_DAY 86400
/* Defaults (seconds; 0 = keep forever). */
#define GMCP_DEFAULT_USAGE_RETENTION (90 * GMCP_DAY)
#define GMCP_DEFAULT_USAGE_DAILY_RETENTION 0
#define GMCP_DEFAULT_AUDIT_RETENTION 0
/* A retention is 0 or at least a day, at most 100 years. */
#define GMCP_RETENTION_MIN GMCP_DAY
#define GMCP_RETENTION_MAX ((apr_int64_t)36525 * GMCP_DAY)

/* "N" (seconds) or "N" with s, m, h or d; "0" = forever. The value must be 0 or within
 * [min, max]. APR_SUCCESS (and *out), or APR_EINVAL with *why saying what is accepted. */
apr_status_t gmcp_duration_parse(apr_pool_t *p, const char *s, apr_int64_t min, apr_int64_t max,
                                 apr_int64_t *out, const char **why);

typedef struct {
    apr_int64_t usage, usage_daily, audit; /* seconds; 0 = keep forever */
} gmcp_retention;

typedef struct {
    /* cutoffs (seconds since the epoch; 0 = that retention is off): rows before them go */
    apr_int64_t usage_before;       /* a UTC day boundary */
    apr_int64_t usage_daily_before; /* a UTC day boundary */
    apr_int64_t audit_before;
    /* what was (or, in a dry run, would be) removed */
    apr_int64_t usage_hourly; /* hourly rows rolled up and deleted */
    apr_int64_t usage_days;   /* (key, day) roll-ups written or added to */
    apr_int64_t usage_daily;  /* daily rows deleted */
    apr_int64_t audit;        /* audit rows deleted */
} gmcp_retention_run;

/* APR_SUCCESS when the settings are consistent, else APR_EINVAL and *why says why not
 * (daily roll-ups kept for less time than the hourly rows they come from). */
apr_status_t gmcp_retention_check(const gmcp_retention *r, const char **why);
/* The cutoffs at `now`; counts zeroed. */
void gmcp_retention_cutoffs(const gmcp_retention *r, apr_int64_t now, gmcp_retention_run *out);
/* Count what a run would remove (fills the counts). APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_retention_count(gmcp_db *db, gmcp_retention_run *run);
/* Apply: one transaction (roll-up + deletes + the retention.delete audit row, written
 * when anything was removed). APR_SUCCESS, or GMCP_EDB: then nothing changed (and the
 * counts are 0). */
apr_status_t gmcp_retention_apply(gmcp_db *db, const char *actor, gmcp_retention_run *run);

#endif
