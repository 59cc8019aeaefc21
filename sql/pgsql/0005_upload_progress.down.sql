-- 0005 down: drop the columns 0005 added to uploads (none is indexed or constrained, so
-- ALTER TABLE ... DROP COLUMN does it on SQLite >= 3.35 as on PostgreSQL). The values of
-- phase/progress that 0005 derived from state are dropped with them.
ALTER TABLE uploads DROP COLUMN sniffed;
ALTER TABLE uploads DROP COLUMN detail;
ALTER TABLE uploads DROP COLUMN progress_at;
ALTER TABLE uploads DROP COLUMN progress;
ALTER TABLE uploads DROP COLUMN phase;
ALTER TABLE uploads DROP COLUMN sha_state;
