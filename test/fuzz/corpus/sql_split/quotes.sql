INSERT INTO t VALUES ('it''s; fine', "col;name");
SELECT 2