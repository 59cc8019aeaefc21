-- 0011 down: tasks are short-lived (their TTL is minutes); running ones end failed.
DROP TABLE mcp_tasks;
