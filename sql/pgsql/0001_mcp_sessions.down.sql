-- 0001 down: drop the MCP session tables (their indexes go with them).
DROP TABLE mcp_subscriptions;
DROP TABLE mcp_cancels;
DROP TABLE mcp_pending;
DROP INDEX mcp_events_created;
DROP INDEX mcp_events_session;
DROP TABLE mcp_events;
DROP INDEX mcp_streams_session;
DROP TABLE mcp_streams;
DROP INDEX mcp_sessions_last_seen;
DROP TABLE mcp_sessions;
