-- 0010: an upload's durable point when it lags the offset told to the client
--   (GeminiMCPUploadDurability interval). durable_offset -1: every byte up to
--   upload_offset is on disk (always so in synced mode, and for every row before).
--   Otherwise the bytes from durable_offset to upload_offset were written but not yet
--   synced, on the machine named by unsynced_on ("<host> <boot id>") at unsynced_at:
--   they count while that machine has not restarted since; after a crash the upload
--   continues from durable_offset with the hash state durable_state.
ALTER TABLE uploads ADD COLUMN durable_offset BIGINT NOT NULL DEFAULT -1;
ALTER TABLE uploads ADD COLUMN durable_state TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN unsynced_on TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN unsynced_at BIGINT NOT NULL DEFAULT 0;
