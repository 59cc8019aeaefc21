-- 0008: the spool an upload's bytes live in: the id in <GeminiMCPUploadDir>/.spool-id of
--   the node that created it. A node whose upload directory has another id (it does not
--   share the spool) refuses to touch the upload instead of writing a second copy of
--   it. '' for uploads created before: they are not checked.
ALTER TABLE uploads ADD COLUMN spool TEXT NOT NULL DEFAULT '';
