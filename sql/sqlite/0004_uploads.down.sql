-- 0004 down: drop the uploads and Gemini file records (the spool files are not touched:
-- 'gmcpctl cleanup' before rolling back removes them).
DROP INDEX gemini_files_upload;
DROP INDEX gemini_files_owner;
DROP TABLE gemini_files;
DROP INDEX uploads_expires;
DROP INDEX uploads_owner;
DROP TABLE uploads;
