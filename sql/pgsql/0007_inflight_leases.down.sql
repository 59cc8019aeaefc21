-- 0007 down: in-flight leases are only held while requests run: nothing is lost.
DROP TABLE inflight_leases;
