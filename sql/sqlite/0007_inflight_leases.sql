-- 0007: in-flight leases, for keys with a max_inflight cap under
--   GeminiMCPRateLimitStore dbd. A key has max_inflight numbered slots; a request in
--   flight holds one row (the primary key makes more impossible, on any number of
--   processes and nodes). The holder token names its process (host/pid/start/random):
--   a row whose holder died on its host, or that is past `expires` (its holder renews it
--   every few seconds while the request runs), is free to take.
CREATE TABLE inflight_leases (
    key_id  TEXT NOT NULL,
    slot    INTEGER NOT NULL,                     -- 0 .. max_inflight - 1
    holder  TEXT NOT NULL,
    expires BIGINT NOT NULL,                      -- seconds since the epoch
    PRIMARY KEY (key_id, slot)
);
