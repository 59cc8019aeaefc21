-- 0004: resumable uploads (tus 1.0). The bytes live in the spool directory
-- (GeminiMCPUploadDir/<id>); upload_offset only ever counts bytes already fsync'ed there.
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    key_id        TEXT NOT NULL DEFAULT '',
    length        BIGINT NOT NULL DEFAULT -1,      -- -1: deferred (Upload-Defer-Length)
    upload_offset BIGINT NOT NULL DEFAULT 0,
    metadata      TEXT NOT NULL DEFAULT '',        -- Upload-Metadata as received (validated)
    filename      TEXT NOT NULL DEFAULT '',
    filetype      TEXT NOT NULL DEFAULT '',
    concat        TEXT NOT NULL DEFAULT '',        -- '', 'partial', or 'final;<urls>'
    parts         TEXT NOT NULL DEFAULT '',        -- final: the partial upload ids, in order
    sha256        TEXT NOT NULL DEFAULT '',        -- whole file, once complete
    state         TEXT NOT NULL DEFAULT 'receiving', -- receiving, complete, terminated
    created       BIGINT NOT NULL,
    expires       BIGINT NOT NULL,
    completed     BIGINT NOT NULL DEFAULT 0,
    -- a lease: one PATCH at a time per upload, across processes and nodes
    lock_token    TEXT NOT NULL DEFAULT '',
    lock_until    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX uploads_owner ON uploads (owner, created);
CREATE INDEX uploads_expires ON uploads (expires);

-- Files relayed to the Gemini Files API, per owner (Gemini deletes them after 48 h).
CREATE TABLE gemini_files (
    name         TEXT PRIMARY KEY,                 -- files/<id> at Gemini
    owner        TEXT NOT NULL,
    upload_id    TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    uri          TEXT NOT NULL,
    mime_type    TEXT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    state        TEXT NOT NULL,
    created      BIGINT NOT NULL,
    expires      BIGINT NOT NULL
);
CREATE INDEX gemini_files_owner ON gemini_files (owner, created);
CREATE INDEX gemini_files_upload ON gemini_files (upload_id);
