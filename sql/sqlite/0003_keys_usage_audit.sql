-- 0003: API keys, hourly usage per key, the append-only audit log, and the
-- rate-limit state shared by several httpd nodes (GeminiMCPRateLimitStore dbd).
CREATE TABLE api_keys (
    id                TEXT PRIMARY KEY,           -- lookup id: public, part of the key
    name              TEXT NOT NULL,
    tenant            TEXT NOT NULL DEFAULT '',
    apache_user       TEXT NOT NULL DEFAULT '',   -- r->user this row describes (GeminiMCPAuth apache)
    scopes            TEXT NOT NULL DEFAULT '*',  -- tool name patterns, space-separated
    rate_count        BIGINT NOT NULL DEFAULT 0,  -- requests per rate_period seconds; 0 = no limit
    rate_period       BIGINT NOT NULL DEFAULT 1,
    burst             BIGINT NOT NULL DEFAULT 0,  -- 0 = as many as rate_count
    token_rate_count  BIGINT NOT NULL DEFAULT 0,  -- Gemini tokens per token_rate_period seconds
    token_rate_period BIGINT NOT NULL DEFAULT 60,
    token_quota       BIGINT NOT NULL DEFAULT 0,  -- tokens per quota_period; 0 = none
    quota_period      TEXT NOT NULL DEFAULT 'day',
    max_inflight      BIGINT NOT NULL DEFAULT 0,
    secret_hash       TEXT NOT NULL,              -- HMAC-SHA256(pepper, secret), hex
    prev_hash         TEXT NOT NULL DEFAULT '',   -- the secret before the last rotation
    prev_until        BIGINT NOT NULL DEFAULT 0,  -- ... valid until then
    created           BIGINT NOT NULL,
    updated           BIGINT NOT NULL,
    expires           BIGINT NOT NULL DEFAULT 0,
    revoked           BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX api_keys_apache_user ON api_keys (apache_user) WHERE apache_user <> '';

CREATE TABLE usage_hourly (
    key_id        TEXT NOT NULL,
    hour          BIGINT NOT NULL,                -- start of the hour, seconds since the epoch
    requests      BIGINT NOT NULL DEFAULT 0,
    errors        BIGINT NOT NULL DEFAULT 0,
    rejected      BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    bytes_in      BIGINT NOT NULL DEFAULT 0,
    bytes_out     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, hour)
);
CREATE INDEX usage_hourly_hour ON usage_hourly (hour);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE rate_limits (
    key_id TEXT PRIMARY KEY,
    tat    BIGINT NOT NULL                        -- GCRA theoretical arrival time, microseconds
);
