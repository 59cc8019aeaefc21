-- 0001: MCP sessions, resumable SSE streams, server-to-client rendezvous.
-- Times are seconds since the epoch (BIGINT), the same on both drivers.
CREATE TABLE mcp_sessions (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    client_info      TEXT NOT NULL,
    client_caps      TEXT NOT NULL,
    log_level        TEXT NOT NULL DEFAULT '',
    created          BIGINT NOT NULL,
    last_seen        BIGINT NOT NULL
);
CREATE INDEX mcp_sessions_last_seen ON mcp_sessions (last_seen);

CREATE TABLE mcp_streams (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    done       INTEGER NOT NULL DEFAULT 0,
    created    BIGINT NOT NULL
);
CREATE INDEX mcp_streams_session ON mcp_streams (session_id);

CREATE TABLE mcp_events (
    stream_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    session_id TEXT NOT NULL,
    message    TEXT NOT NULL,
    created    BIGINT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE INDEX mcp_events_session ON mcp_events (session_id);
CREATE INDEX mcp_events_created ON mcp_events (created);

CREATE TABLE mcp_pending (
    session_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created    BIGINT NOT NULL,
    answered   INTEGER NOT NULL DEFAULT 0,
    response   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session_id, request_id)
);

CREATE TABLE mcp_cancels (
    session_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created    BIGINT NOT NULL,
    PRIMARY KEY (session_id, request_id)
);

CREATE TABLE mcp_subscriptions (
    session_id TEXT NOT NULL,
    uri        TEXT NOT NULL,
    created    BIGINT NOT NULL,
    PRIMARY KEY (session_id, uri)
);
