/* gmcp_keys.h — API keys, the audit log and hourly usage in SQL.
 *
 * A key reads "gmcp_<id>_<secret>": the id (16 hex digits) is public and finds the row;
 * the secret (32 random bytes, base64url) is never stored — only HMAC-SHA256 under the
 * server's pepper (GeminiMCPKeyPepper), so a copy of the database alone verifies
 * nothing. Shared by the module and gmcpctl. */
#ifndef GMCP_KEYS_H
#define GMCP_KEYS_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <jansson.h>
#include "gmcp_db.h"
#include "gmcp_util.h"

#define GMCP_KEY_PREFIX "gmcp_"
#define GMCP_KEY_ID_HEX 16

typedef struct {
    const char *id, *name, *tenant, *apache_user, *scopes, *quota_period;
    apr_int64_t rate_count, rate_period, burst;
    apr_int64_t token_rate_count, token_rate_period;
    apr_int64_t token_quota, max_inflight;
    const char *secret_hash, *prev_hash;
    apr_int64_t prev_until, created, updated, expires, revoked;
} gmcp_key;

/* What gmcp_key_verify found: a verdict the caller answers differently (401 with its
 * own reason each), not a failure of the check. */
typedef enum {
    GMCP_KEY_OK = 0,
    GMCP_KEY_BAD, /* no such key, or wrong secret */
    GMCP_KEY_EXPIRED,
    GMCP_KEY_REVOKED
} gmcp_key_verdict;

/* A fresh key: *id and *secret (the whole "gmcp_<id>_<secret>" text). APR_SUCCESS, or
 * APR_ENOTENOUGHENTROPY when the CSPRNG fails. */
apr_status_t gmcp_key_generate(apr_pool_t *p, const char **id, const char **secret);
/* Split a presented key: APR_SUCCESS, or APR_EINVAL when it is not shaped like one of
 * ours. */
apr_status_t gmcp_key_parse(apr_pool_t *p, const char *presented, const char **id,
                            const char **secret_part);
/* HMAC-SHA256(pepper, presented key), lowercase hex; NULL when OpenSSL fails. */
const char *gmcp_key_hash(apr_pool_t *p, const char *pepper, const char *presented);
/* Check a presented key's hash against its row at `now` (constant-time compare). A
 * wrong secret is GMCP_KEY_BAD whatever the row's state. */
gmcp_key_verdict gmcp_key_verify(const gmcp_key *k, const char *hash, apr_int64_t now);

/* Does the space- or comma-separated list of tool-name patterns admit `tool`? */
int gmcp_scope_allows(apr_pool_t *p, const char *scopes, const char *tool);
/* "10/s", "600/m", "1000/h", "5000/day", "100000/month" (`units` lists which suffixes
 * are allowed, e.g. "smh" or "dM"); period in seconds (a month counts as 30 days for
 * rates, calendar months for quotas). APR_SUCCESS, or APR_EINVAL for anything else. */
apr_status_t gmcp_rate_parse(const char *s, const char *units, apr_int64_t *count,
                             apr_int64_t *period, const char **unit);
/* Start of the current quota period ("day" or "month", UTC). */
apr_int64_t gmcp_quota_period_start(const char *period, apr_int64_t now);
apr_int64_t gmcp_quota_period_end(const char *period, apr_int64_t now);

/* Rows: APR_SUCCESS, GMCP_EDB when the database failed (gmcp_db logged it), or — where
 * it says so — APR_ENOENT. */
apr_status_t gmcp_key_insert(gmcp_db *db, const gmcp_key *k);
/* APR_ENOENT when there is no such key. */
apr_status_t gmcp_key_get(gmcp_db *db, const char *id, gmcp_key *out);
apr_status_t gmcp_key_get_by_user(gmcp_db *db, const char *apache_user, gmcp_key *out);
apr_status_t gmcp_key_list(gmcp_db *db, apr_array_header_t **out /* gmcp_key */);
/* Each changes one live (unrevoked) key; APR_ENOENT otherwise. */
apr_status_t gmcp_key_revoke(gmcp_db *db, const char *id, apr_int64_t now);
apr_status_t gmcp_key_rotate(gmcp_db *db, const char *id, const char *new_hash,
                             apr_int64_t grace_until, apr_int64_t now);
apr_status_t gmcp_key_update(gmcp_db *db, const gmcp_key *k, apr_int64_t now);
/* A key as JSON for listings: never the hash. */
json_t *gmcp_key_json(const gmcp_key *k, apr_int64_t now);

/* The audit log (append-only). */
apr_status_t gmcp_audit(gmcp_db *db, const char *actor, const char *action, const char *key_id,
                        const char *detail);
apr_status_t gmcp_audit_list(gmcp_db *db, apr_int64_t since, gmcp_rows *out /* id, at,
                             actor, action, key_id, detail */);

/* Usage per key and hour. */
typedef struct {
    apr_int64_t requests, errors, rejected, prompt_tokens, output_tokens, bytes_in, bytes_out;
} gmcp_usage;
apr_status_t gmcp_usage_add(gmcp_db *db, const char *key_id, apr_int64_t hour, const gmcp_usage *u);
/* Totals since `since` (inclusive hour start): hourly rows, plus the daily roll-ups of
 * days starting at or after `since` (exact for day-aligned starts; see gmcp_retention.h). */
apr_status_t gmcp_usage_sum(gmcp_db *db, const char *key_id, apr_int64_t since, gmcp_usage *out);
/* Rows (key_id, start, requests, errors, rejected, prompt, output, bytes_in, bytes_out,
 * "hour" or "day"), ordered by start; key_id NULL = every key. */
apr_status_t gmcp_usage_rows(gmcp_db *db, const char *key_id, apr_int64_t since, gmcp_rows *out);
void gmcp_usage_merge(gmcp_usage *into, const gmcp_usage *u);
int gmcp_usage_empty(const gmcp_usage *u);

/* The shared GCRA store (GeminiMCPRateLimitStore dbd): one atomic statement admits a
 * request or not. Times in microseconds. *allowed set (a refusal is no failure); on
 * refusal *tat is the stored theoretical arrival time. APR_SUCCESS or GMCP_EDB. */
apr_status_t gmcp_ratelimit_dbd(gmcp_db *db, const char *key_id, apr_int64_t now_us,
                                apr_int64_t interval_us, apr_int64_t limit_us, int *allowed,
                                apr_int64_t *tat);

#endif
