-- 0002: Gemini chat sessions and their messages, owned by a principal.
CREATE TABLE chat_sessions (
    id                 TEXT PRIMARY KEY,
    owner              TEXT NOT NULL,
    title              TEXT NOT NULL DEFAULT '',
    model              TEXT NOT NULL,
    system_instruction TEXT NOT NULL DEFAULT '',
    created            BIGINT NOT NULL,
    last_used          BIGINT NOT NULL,
    message_count      INTEGER NOT NULL DEFAULT 0,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    -- a lease that serialises concurrent sends across processes and nodes
    lock_token         TEXT NOT NULL DEFAULT '',
    lock_until         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX chat_sessions_owner ON chat_sessions (owner, last_used);
CREATE INDEX chat_sessions_last_used ON chat_sessions (last_used);

CREATE TABLE chat_messages (
    session_id    TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    role          TEXT NOT NULL,
    parts         TEXT NOT NULL,
    text          TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    finish_reason TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    created       BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
