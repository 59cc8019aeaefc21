-- 0003 down: drop the API keys, usage, audit log and rate-limit state.
DROP TABLE rate_limits;
DROP TRIGGER audit_log_no_delete;
DROP TRIGGER audit_log_no_update;
DROP INDEX audit_log_at;
DROP TABLE audit_log;
DROP INDEX usage_hourly_hour;
DROP TABLE usage_hourly;
DROP INDEX api_keys_apache_user;
DROP TABLE api_keys;
