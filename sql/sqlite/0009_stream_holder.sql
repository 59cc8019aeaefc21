-- 0009: the process that answers a stream (host/pid/start/random, as a lease holder).
--   A client that resumes a stream whose answering process died (killed mid-call on its
--   host) gets an error for its request at once instead of waiting for an answer that
--   never comes. '' for streams from before: they are given up only after the tool
--   timeout.
ALTER TABLE mcp_streams ADD COLUMN holder TEXT NOT NULL DEFAULT '';
