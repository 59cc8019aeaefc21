-- 0009 down: streams no longer name the process that answers them.
ALTER TABLE mcp_streams DROP COLUMN holder;
