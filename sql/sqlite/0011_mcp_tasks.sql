-- 0011: MCP tasks (the io.modelcontextprotocol/tasks extension, 2026-07-28): a
--   tools/call answered with a task runs on a worker thread of some child on some node,
--   and is polled (tasks/get), answered (tasks/update) and cancelled (tasks/cancel)
--   through any of them. Changes of the input requests and answers are compare-and-set
--   on `version`, so two nodes answering at once lose nothing. The worker holds the row
--   by `holder` (a lease token naming its process) and renews `lease_until`; a task
--   whose holder died or stopped renewing is failed, never left running.
CREATE TABLE mcp_tasks (
    id             TEXT PRIMARY KEY,            -- 128 random bits, base64url
    owner          TEXT NOT NULL,               -- the creating principal; others: not found
    key_id         TEXT NOT NULL,               -- whose limits and usage it counts against
    tool           TEXT NOT NULL,
    request        TEXT NOT NULL,               -- JSON: the tools/call params
    status         TEXT NOT NULL,               -- working|input_required|completed|cancelled|failed
    status_message TEXT NOT NULL DEFAULT '',
    inputs         TEXT NOT NULL DEFAULT '{}',  -- JSON: outstanding input requests by key
    answers        TEXT NOT NULL DEFAULT '{}',  -- JSON: their answers, not yet taken
    next_input     INTEGER NOT NULL DEFAULT 0,  -- input keys are t<N>: never reused
    outcome        TEXT NOT NULL DEFAULT '',    -- JSON: CallToolResult or JSON-RPC error
    cancel         INTEGER NOT NULL DEFAULT 0,  -- tasks/cancel asked for it
    holder         TEXT NOT NULL DEFAULT '',    -- lease token of the worker running it
    lease_until    BIGINT NOT NULL DEFAULT 0,   -- seconds since the epoch
    version        BIGINT NOT NULL DEFAULT 0,
    created_ms     BIGINT NOT NULL,             -- milliseconds since the epoch
    updated_ms     BIGINT NOT NULL,
    ttl_ms         BIGINT NOT NULL,
    expires        BIGINT NOT NULL              -- seconds: created + ttl; then deleted
);
CREATE INDEX mcp_tasks_expires ON mcp_tasks (expires);
CREATE INDEX mcp_tasks_lease ON mcp_tasks (lease_until);
