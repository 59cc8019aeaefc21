-- 0003 down: drop the API keys, usage, audit log (with its sequence, triggers and their
-- function) and rate-limit state.
DROP TABLE rate_limits;
DROP TRIGGER audit_log_no_truncate ON audit_log;
DROP TRIGGER audit_log_no_change ON audit_log;
DROP INDEX audit_log_at;
DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
DROP INDEX usage_hourly_hour;
DROP TABLE usage_hourly;
DROP INDEX api_keys_apache_user;
DROP TABLE api_keys;
