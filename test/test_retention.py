"""Retention (gmcpctl cleanup with GeminiMCP*Retention), on SQLite and PostgreSQL:
old rows put straight into SQL go, younger ones stay, usage totals stay exact (hourly rows
rolled up per UTC day), the audit log stays append-only except for the audited
retention delete, --dry-run changes nothing, a second run is a no-op."""
import calendar
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from harness import ROOT, configtest_conf, httpd_env

BUILD = os.environ.get("GMCP_BUILD", "build")
BUILD = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
GMCPCTL = os.path.join(BUILD, "gmcpctl")
SQL = os.path.join(ROOT, "sql")
HTTPD = shutil.which("apache2") or "/usr/sbin/apache2"
DAY = 86400
COLS = ["requests", "errors", "rejected", "prompt_tokens", "output_tokens", "bytes_in",
        "bytes_out"]

RETENTION = """GeminiMCPUsageRetention 3d
GeminiMCPUsageDailyRetention 40d
GeminiMCPAuditRetention 10d
GeminiMCPEventRetention 3600
GeminiMCPSessionIdleTimeout 86400
GeminiMCPChatIdleTimeout 259200
"""


class Db:
    def __init__(self, kind, tmp, dsn=None):
        self.kind, self.tmp = kind, tmp
        if kind == "sqlite":
            self.params = os.path.join(tmp, "r.db")
            self.driver = "sqlite3"
        else:
            self.name = "gmcp_ret_" + uuid.uuid4().hex[:10]
            self.admin = dsn + " dbname=postgres"
            subprocess.run(["psql", "-X", "-q", self.admin, "-c",
                            f'CREATE DATABASE "{self.name}"'], check=True)
            self.params = dsn + f" dbname={self.name}"
            self.driver = "pgsql"
        r = subprocess.run([GMCPCTL, "-d", self.driver, "-p", self.params, "-s", SQL,
                            "migrate"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.conf = self.config(RETENTION)

    def config(self, directives, name="httpd.conf"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(f'DBDriver {self.driver}\nDBDParams "{self.params}"\n{directives}')
        return path

    def drop(self):
        if self.kind == "pgsql":
            subprocess.run(["psql", "-X", "-q", self.admin, "-c",
                            f'DROP DATABASE IF EXISTS "{self.name}"'], check=False)

    def run_sql(self, query):
        if self.kind == "sqlite":
            return subprocess.run(["sqlite3", "-bail", self.params, query], capture_output=True,
                                  text=True)
        return subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                               self.params, "-c", query], capture_output=True, text=True)

    def sql(self, query):
        r = self.run_sql(query)
        assert r.returncode == 0, r.stderr
        return [l for l in r.stdout.splitlines() if l]

    def ctl(self, *args, conf=None):
        return subprocess.run([GMCPCTL, "-f", conf or self.conf, "-s", SQL] + list(args),
                              capture_output=True, text=True)


@pytest.fixture(params=["sqlite", "pgsql"])
def rdb(request):
    tmp = tempfile.mkdtemp(prefix="gmcp-ret-")
    dsn = request.getfixturevalue("pg_dsn") if request.param == "pgsql" else None
    d = Db(request.param, tmp, dsn)
    yield d
    d.drop()
    shutil.rmtree(tmp, ignore_errors=True)


def hourly_rows(today):
    """(key, hour, counters...) over 46 UTC days back from today: some of them past the
    daily retention (40d), most past the hourly one (3d)."""
    rows = []
    now = int(time.time())
    for key in ("k1", "k2"):
        for i in range(0, 46):
            for h in (0, 5, 23):
                hour = today - i * DAY + h * 3600
                if hour > now:
                    continue
                n = i + 1 + (key == "k2") * 100
                rows.append((key, hour, n, i % 3, h % 2, 10 * n + h, h, 1000 + i, 7))
    return rows


def totals(rows, since=0):
    out = {}
    for r in rows:
        if r[1] >= since:
            t = out.setdefault(r[0], [0] * 7)
            for j in range(7):
                t[j] += r[2 + j]
    return out


def usage_totals(d, since_date):
    r = d.ctl("--json", "usage", "--since", since_date)
    assert r.returncode == 0, r.stderr
    out = {}
    for row in json.loads(r.stdout):
        t = out.setdefault(row["key_id"], [0] * 7)
        for j, c in enumerate(COLS):
            t[j] += row[c]
    return out


def date_of(t):
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def snapshot(d):
    return {t: d.sql(f"SELECT * FROM {t} ORDER BY 1, 2")
            for t in ("usage_hourly", "usage_daily", "audit_log", "mcp_events", "chat_sessions")}


def test_cleanup_applies_every_retention_and_keeps_totals_exact(rdb):
    d = rdb
    now = int(time.time())
    today = now - now % DAY
    rows = hourly_rows(today)
    d.sql("INSERT INTO usage_hourly (key_id, hour, " + ", ".join(COLS) + ") VALUES "
          + ", ".join("('%s', %d, %d, %d, %d, %d, %d, %d, %d)" % r for r in rows))
    ages = {"a20": 20 * DAY, "a11": 11 * DAY, "a9": 9 * DAY, "a1": DAY}
    d.sql("INSERT INTO audit_log (at, actor, action, key_id, detail) VALUES "
          + ", ".join(f"({now - a}, 'test', '{n}', '', '')" for n, a in ages.items()))
    d.sql("INSERT INTO mcp_sessions (id, owner, protocol_version, client_info, client_caps, "
          f"log_level, created, last_seen) VALUES ('s-live', 'x', '2025-11-25', '{{}}', '{{}}', "
          f"'', {now}, {now})")
    d.sql("INSERT INTO mcp_events (stream_id, seq, session_id, message, created) VALUES "
          f"('st', 1, 's-live', 'm', {now - 7200}), ('st', 2, 's-live', 'm', {now - 3700}), "
          f"('st', 3, 's-live', 'm', {now - 60})")
    d.sql("INSERT INTO chat_sessions (id, owner, model, created, last_used) VALUES "
          f"('c-old', 'x', 'm', {now - 5 * DAY}, {now - 4 * DAY}), "
          f"('c-new', 'x', 'm', {now - 5 * DAY}, {now - 2 * DAY})")

    usage_before = today - 3 * DAY           # the 3d cutoff rounded down to a day
    daily_before = today - 40 * DAY
    kept = [r for r in rows if r[1] >= daily_before]     # what the totals must still see
    starts = [daily_before, today - 10 * DAY, usage_before - DAY, usage_before, today,
              calendar.timegm(time.gmtime(now)[:2] + (1, 0, 0, 0))]   # this month's start
    expect = {s: totals(kept, s) for s in starts}
    assert expect[daily_before] == totals(rows, daily_before)

    # --dry-run: counts per kind, nothing changes.
    before = snapshot(d)
    r = d.ctl("--json", "cleanup", "--dry-run")
    assert r.returncode == 0, r.stderr
    dry = json.loads(r.stdout)
    rolled = [r for r in rows if r[1] < usage_before]
    ret = dry["retention"]
    assert ret["usage_hourly"] == len(rolled)
    assert ret["usage_days"] == len({(r[0], r[1] - r[1] % DAY) for r in rolled})
    assert ret["audit_log"] == 2 and ret["mcp_events"] == 2
    assert ret["usage_daily"] == 0           # no roll-ups exist yet
    assert dry["chat_sessions"] == 1
    assert ret["usage_before"] == time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                time.gmtime(usage_before))
    assert snapshot(d) == before
    r = d.ctl("-v", "cleanup", "--dry-run")
    assert r.returncode == 0 and "would remove" in r.stdout and "audit row(s)" in r.stdout

    # The run: quiet on success.
    r = d.ctl("cleanup")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr

    # Hourly rows: exactly those of whole days before the cutoff are gone.
    left = sorted((k, int(h)) for k, h in (l.split("|") for l in
                  d.sql("SELECT key_id, hour FROM usage_hourly")))
    assert left == sorted((r[0], r[1]) for r in rows if r[1] >= usage_before)
    # Daily roll-ups: one per key and day from the daily cutoff to the hourly one, each
    # the sum of its hours; older ones (past 40d) deleted.
    daily = {}
    for l in d.sql("SELECT key_id, day, " + ", ".join(COLS) + " FROM usage_daily"):
        f = l.split("|")
        daily[(f[0], int(f[1]))] = [int(x) for x in f[2:]]
    want = {}
    for r in rolled:
        if r[1] - r[1] % DAY >= daily_before:
            t = want.setdefault((r[0], r[1] - r[1] % DAY), [0] * 7)
            for j in range(7):
                t[j] += r[2 + j]
    assert daily == want and len(daily) == 2 * 37
    # Totals, as the quota code and gemini_usage compute them (day, month starts), and
    # over the whole period kept: unchanged.
    for s in starts:
        assert usage_totals(d, date_of(s)) == expect[s], date_of(s)
    assert usage_totals(d, "1970-01-01") == expect[daily_before]
    listed = json.loads(d.ctl("--json", "usage", "--since", "1970-01-01").stdout)
    assert {x["period"] for x in listed if x["hour_epoch"] < usage_before} == {"day"}
    assert {x["period"] for x in listed if x["hour_epoch"] >= usage_before} == {"hour"}

    # Audit: the two old rows went, the retention delete is recorded with its counts.
    audit = json.loads(d.ctl("--json", "audit").stdout)
    actions = [a["action"] for a in audit]
    assert "a20" not in actions and "a11" not in actions
    assert "a9" in actions and "a1" in actions
    assert actions.count("retention.delete") == 1
    detail = dict(kv.split("=") for kv in
                  next(a for a in audit if a["action"] == "retention.delete")["detail"].split())
    assert int(detail["usage_hourly"]) == len(rolled) and int(detail["audit_log"]) == 2
    assert int(detail["usage_daily"]) == 2 * 5            # days 41..45 back, two keys
    assert int(detail["usage_before"]) == usage_before
    assert int(detail["usage_daily_before"]) == daily_before
    assert now - 10 * DAY <= int(detail["audit_before"]) <= int(time.time()) - 10 * DAY

    # Events past GeminiMCPEventRetention and chats past GeminiMCPChatIdleTimeout.
    assert d.sql("SELECT seq FROM mcp_events ORDER BY seq") == ["3"]
    assert d.sql("SELECT id FROM chat_sessions") == ["c-new"]

    # A second run is a no-op (and writes no second retention row).
    after = snapshot(d)
    r = d.ctl("--json", "cleanup")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)["retention"]
    assert [again[k] for k in ("usage_hourly", "usage_days", "usage_daily", "audit_log",
                               "mcp_events")] == [0] * 5
    assert snapshot(d) == after


def test_audit_log_stays_append_only(rdb):
    d = rdb
    now = int(time.time())
    d.sql(f"INSERT INTO audit_log (at, actor, action) VALUES (1000, 't', 'old'), "
          f"({now}, 't', 'new')")
    for q in ("DELETE FROM audit_log",
              "DELETE FROM audit_log WHERE at < 2000",
              "UPDATE audit_log SET actor = 'x'",
              "UPDATE audit_log SET at = 1 WHERE at = 1000"):
        r = d.run_sql(q)
        assert r.returncode != 0 and "append-only" in r.stderr, (q, r.stdout, r.stderr)
    if d.kind == "pgsql":
        r = d.run_sql("TRUNCATE audit_log")
        assert r.returncode != 0 and "append-only" in r.stderr
    # A grant lets only rows older than its cutoff go, and never an UPDATE.
    r = d.run_sql("BEGIN; INSERT INTO retention_grants (tbl, cutoff) VALUES ('audit_log', 2000);"
                  f" DELETE FROM audit_log WHERE at = {now}; COMMIT;")
    assert r.returncode != 0 and "append-only" in r.stderr
    r = d.run_sql("BEGIN; INSERT INTO retention_grants (tbl, cutoff) VALUES ('audit_log', 2000);"
                  " UPDATE audit_log SET actor = 'x' WHERE at = 1000; COMMIT;")
    assert r.returncode != 0 and "append-only" in r.stderr
    if d.kind == "sqlite":
        d.run_sql("ROLLBACK")
    assert d.sql("SELECT COUNT(*) FROM retention_grants") == ["0"]
    assert sorted(d.sql("SELECT action || ':' || actor FROM audit_log")) == ["new:t", "old:t"]
    # The retention delete itself goes through, and leaves no grant behind.
    r = d.ctl("cleanup")
    assert r.returncode == 0, r.stderr
    assert d.sql("SELECT action FROM audit_log ORDER BY id") == ["new", "retention.delete"]
    assert d.sql("SELECT COUNT(*) FROM retention_grants") == ["0"]
    # ... and after it, the log is as append-only as before.
    r = d.run_sql("DELETE FROM audit_log")
    assert r.returncode != 0 and "append-only" in r.stderr


def test_retention_off_and_defaults(rdb):
    """0 = keep forever; without any directive the defaults apply (hourly usage 90d,
    daily roll-ups and audit forever)."""
    d = rdb
    now = int(time.time())
    today = now - now % DAY
    d.sql("INSERT INTO usage_hourly (key_id, hour, requests) VALUES "
          f"('k', {today - 200 * DAY}, 1), ('k', {today - 89 * DAY}, 2), ('k', {today}, 4)")
    d.sql(f"INSERT INTO audit_log (at, actor, action) VALUES ({now - 3000 * DAY}, 't', 'ancient')")
    off = d.config("GeminiMCPUsageRetention 0\nGeminiMCPAuditRetention 0\n", "off.conf")
    r = d.ctl("--json", "cleanup", conf=off)
    assert r.returncode == 0, r.stderr
    ret = json.loads(r.stdout)["retention"]
    assert ret["usage_before"] is None and ret["audit_before"] is None
    assert d.sql("SELECT COUNT(*) FROM usage_hourly") == ["3"]
    dflt = d.config("", "default.conf")
    r = d.ctl("--json", "cleanup", conf=dflt)
    assert r.returncode == 0, r.stderr
    ret = json.loads(r.stdout)["retention"]
    assert ret["usage_hourly"] == 1 and ret["audit_log"] == 0
    assert ret["usage_daily_before"] is None and ret["audit_before"] is None
    assert d.sql("SELECT day, requests FROM usage_daily") == [f"{today - 200 * DAY}|1"]
    assert d.sql("SELECT COUNT(*) FROM audit_log WHERE action = 'ancient'") == ["1"]
    assert usage_totals(d, "1970-01-01") == {"k": [7, 0, 0, 0, 0, 0, 0]}


@pytest.mark.parametrize("directives, says", [
    ("GeminiMCPUsageRetention 3x\n", "GeminiMCPUsageRetention: '3x' is not a duration"),
    ("GeminiMCPAuditRetention 5h\n", "GeminiMCPAuditRetention: '5h' is not a duration"),
    ("GeminiMCPUsageRetention 30d\nGeminiMCPUsageDailyRetention 7d\n",
     "GeminiMCPUsageDailyRetention must be 0 (forever) or at least GeminiMCPUsageRetention"),
])
def test_bad_retention_is_one_line_and_changes_nothing(rdb, directives, says):
    d = rdb
    d.sql("INSERT INTO usage_hourly (key_id, hour, requests) VALUES ('k', 3600, 1)")
    r = d.ctl("cleanup", conf=d.config(directives, "bad.conf"))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and says in r.stderr, r.stderr
    assert d.sql("SELECT COUNT(*) FROM usage_hourly") == ["1"]


@pytest.mark.parametrize("line, ok", [
    ("GeminiMCPUsageRetention 90d", True),
    ("GeminiMCPUsageRetention 0", True),
    ("GeminiMCPUsageDailyRetention 3650d", True),
    ("GeminiMCPAuditRetention 400d", True),
    ("GeminiMCPAuditRetention 86400", True),
    ("GeminiMCPUsageRetention 12h", False),
    ("GeminiMCPUsageDailyRetention forever", False),
    ("GeminiMCPAuditRetention -1d", False),
    ("GeminiMCPAuditRetention 99999999d", False),
    ("<VirtualHost *:1>\nGeminiMCPAuditRetention 400d\n</VirtualHost>", False),
])
def test_configtest_checks_retention_directives(line, ok):
    tmp = tempfile.mkdtemp(prefix="gmcp-ret-t-")
    try:
        conf = configtest_conf(tmp, BUILD, line)
        r = subprocess.run([HTTPD, "-t", "-f", conf], capture_output=True, text=True,
                           env=httpd_env(BUILD, tmp))
        assert (r.returncode == 0) == ok, r.stderr
        if not ok:
            assert "Retention" in r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("db", ["sqlite", "pgsql"])
def test_gemini_usage_sums_daily_rollups_exactly(start, db):
    """The module's sums (quota, gemini_usage) add the daily roll-ups to the hourly rows:
    the same totals before and after cleanup rolls hours up."""
    import requests
    from conftest import ACCEPT_BOTH, INIT_PARAMS
    s = start(db, "--auth", "apikey", "--conf", "GeminiMCPUsageRetention 1d")
    out = json.loads(s.gmcpctl_run("--json", "keys", "create", "--name", "r").stdout)
    kid, secret = out["id"], out["secret"]
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
         "Authorization": f"Bearer {secret}"}

    def rpc(body, sid=None):
        hh = dict(h, **({"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
                        if sid else {}))
        return requests.post(s.url, data=json.dumps(body), headers=hh, timeout=30)

    r = rpc({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]
    assert rpc({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid).status_code == 202

    def usage():
        from conftest import response_of
        r = rpc({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                 "params": {"name": "gemini_usage", "arguments": {}}}, sid)
        return response_of(r)["result"]["structuredContent"]["usage"]

    now = int(time.time())
    today = now - now % DAY
    month = calendar.timegm(time.gmtime(now)[:2] + (1, 0, 0, 0))
    # Hours over 40 days (several of them past the 1d retention, some last month) ...
    hours = [today - i * DAY + 3600 * k for i in range(40) for k in (2, 20)
             if today - i * DAY + 3600 * k <= now]
    s.sql("INSERT INTO usage_hourly (key_id, hour, requests, prompt_tokens, output_tokens) "
          "VALUES " + ", ".join(f"('{kid}', {t}, 1, {t % 97}, 3)" for t in hours))
    # (requests also count these MCP calls themselves: compare tokens)
    def tokens():
        u = usage()
        return {p: (u[p]["prompt_tokens"], u[p]["output_tokens"]) for p in u}
    before = tokens()
    assert before["this_month"] == (sum(t % 97 for t in hours if t >= month),
                                    3 * len([t for t in hours if t >= month]))
    r = s.gmcpctl_run("--json", "cleanup")
    rolled = json.loads(r.stdout)["retention"]["usage_hourly"]
    assert rolled == len([t for t in hours if t < today - DAY])
    assert tokens() == before
    # ... and a roll-up counts from its day on, never before: one this month, one last.
    s.sql("INSERT INTO usage_daily (key_id, day, prompt_tokens) VALUES "
          f"('{kid}', {month}, 1000), ('{kid}', {month - DAY}, 50000) "
          "ON CONFLICT (key_id, day) DO UPDATE SET prompt_tokens = "
          "usage_daily.prompt_tokens + excluded.prompt_tokens")
    after = tokens()
    assert after["this_month"][0] == before["this_month"][0] + 1000
    assert after["today"][0] == before["today"][0] + (1000 if month == today else 0)
    assert after["this_hour"] == before["this_hour"]
