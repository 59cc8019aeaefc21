-- 0008 down: uploads no longer record their spool (nothing else is lost).
ALTER TABLE uploads DROP COLUMN spool;
