-- 0010 down: uploads no longer keep a durable point apart from their offset. httpd
--   syncs every tail within seconds and before a child exits, so a row still lagging
--   is one whose machine crashed or whose sync failed: it goes back to its durable
--   point (a complete one is receiving again), as HEAD would have told.
UPDATE uploads SET upload_offset = durable_offset, sha_state = durable_state,
       state = 'receiving', sha256 = '', completed = 0
 WHERE durable_offset >= 0 AND durable_offset < upload_offset AND state <> 'terminated';
ALTER TABLE uploads DROP COLUMN unsynced_at;
ALTER TABLE uploads DROP COLUMN unsynced_on;
ALTER TABLE uploads DROP COLUMN durable_state;
ALTER TABLE uploads DROP COLUMN durable_offset;
