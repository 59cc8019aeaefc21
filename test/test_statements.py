"""Every labelled SQL statement prepares on PostgreSQL too: the unit test
test/unit/test_statements runs its PostgreSQL half against the suite's cluster (make
test-unit runs it without one, SQLite only)."""
import os
import re
import subprocess

from harness import ROOT

BUILD = os.path.join(ROOT, os.environ.get("GMCP_BUILD", "build"))


def test_every_statement_prepares_on_both_drivers(pg_dsn):
    exe = os.path.join(BUILD, "unit", "test_statements")
    env = dict(os.environ, GMCP_TEST_PG=pg_dsn)
    p = subprocess.run([exe], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    counts = dict((d, int(n)) for n, d in
                  re.findall(r"statements: (\d+) prepared on (\w+)", p.stdout))
    assert "skipped" not in p.stdout, p.stdout
    assert set(counts) == {"sqlite", "pgsql"}, p.stdout
    assert counts["pgsql"] >= 80 and counts["sqlite"] >= 80, counts
