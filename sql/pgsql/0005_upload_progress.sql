-- 0005: what an upload is doing (for its progress stream), its running SHA-256, and the
-- media type found in its first bytes.
-- sha_state: the whole-file SHA-256 state at upload_offset (gmcp_sha256.h), written in
--   the same UPDATE as the offset, so a resume elsewhere picks up exactly there.
-- phase: receiving, received, relaying, processing, active, failed.
-- progress: bytes of the phase so far (received, not yet necessarily durable; or sent
--   to Gemini), at progress_at (milliseconds since the epoch); detail: why it failed.
ALTER TABLE uploads ADD COLUMN sha_state TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN phase TEXT NOT NULL DEFAULT 'receiving';
ALTER TABLE uploads ADD COLUMN progress BIGINT NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN progress_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN detail TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN sniffed TEXT NOT NULL DEFAULT '';
UPDATE uploads SET phase = 'received', progress = length WHERE state = 'complete';
