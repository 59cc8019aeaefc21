-- 0006: retention (gmcpctl cleanup, GeminiMCP*Retention).
-- usage_daily: hourly usage rolled up per key and UTC day once the hours are older than
--   GeminiMCPUsageRetention (the roll-up deletes the hourly rows it adds, in the same
--   transaction, so hourly + daily rows hold disjoint counts and sums stay exact).
-- retention_grants: lets exactly one kind of DELETE through audit_log's append-only
--   trigger: rows older than the granted cutoff, while the grant row exists. gmcpctl
--   cleanup inserts the grant, deletes, and removes the grant in one transaction (no
--   other connection ever sees it); UPDATE stays refused always.
CREATE TABLE usage_daily (
    key_id        TEXT NOT NULL,
    day           BIGINT NOT NULL,                -- start of the UTC day, seconds since the epoch
    requests      BIGINT NOT NULL DEFAULT 0,
    errors        BIGINT NOT NULL DEFAULT 0,
    rejected      BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    bytes_in      BIGINT NOT NULL DEFAULT 0,
    bytes_out     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);
CREATE INDEX usage_daily_day ON usage_daily (day);

CREATE TABLE retention_grants (
    tbl    TEXT PRIMARY KEY,                      -- the table the grant is for: audit_log
    cutoff BIGINT NOT NULL                        -- rows with at < cutoff may be deleted
);

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (SELECT 1 FROM retention_grants
                 WHERE tbl = 'audit_log' AND OLD.at < cutoff)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
