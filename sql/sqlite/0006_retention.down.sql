-- 0006 down: the audit log is append-only without exception again, and
-- the daily usage roll-ups are dropped (their counts are lost: run it before any
-- cleanup rolled usage up, or accept that the totals of those days go).
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
DROP TABLE retention_grants;
DROP INDEX usage_daily_day;
DROP TABLE usage_daily;
