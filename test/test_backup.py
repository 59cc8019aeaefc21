"""gmcpctl backup / backup verify / restore / copy on SQLite and PostgreSQL."""
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import requests

from harness import ROOT

BUILD = os.environ.get("GMCP_BUILD", "build")
BUILD = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
GMCPCTL = os.path.join(BUILD, "gmcpctl")
SQL = os.path.join(ROOT, "sql")

TRICKY = "line1\nline2\t\"quoted\" back\\slash 'single' é ☃ \x01"


def ctl(*args, env=None):
    return subprocess.run([GMCPCTL] + list(args), capture_output=True, text=True, env=env)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="gmcp-bk-")
    os.chmod(d, 0o755)
    with open(os.path.join(d, "pepper"), "w") as f:
        f.write("pepper-for-backup-tests-0123456789\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def lite(path):
    return ["-d", "sqlite3", "-p", path, "-s", SQL]


def new_pg(pg_dsn):
    name = "bk_" + uuid.uuid4().hex[:10]
    subprocess.run(["psql", "-X", "-q", pg_dsn + " dbname=postgres", "-c",
                    f"CREATE DATABASE {name}"], check=True, stdout=subprocess.DEVNULL)
    return ["-d", "pgsql", "-p", pg_dsn + f" dbname={name}", "-s", SQL]


def run_sql(target, sql):
    if target[1] == "sqlite3":
        subprocess.run(["sqlite3", target[3]], input=sql, text=True, check=True)
    else:
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", target[3]], input=sql,
                       text=True, check=True, stdout=subprocess.DEVNULL)


def query(target, sql):
    if target[1] == "sqlite3":
        out = subprocess.run(["sqlite3", target[3], sql], capture_output=True, text=True,
                             check=True).stdout
    else:
        out = subprocess.run(["psql", "-X", "-A", "-t", target[3], "-c", sql],
                             capture_output=True, text=True, check=True).stdout
    return out.strip()


def populate(target, tmp, usage_rows=500):
    r = ctl(*target, "migrate")
    assert r.returncode == 0, r.stderr
    pep = "file:" + os.path.join(tmp, "pepper")
    for name in ("alpha", "beta's key", "gamma"):
        r = ctl(*target, "-k", pep, "keys", "create", "--name", name, "--rate", "10/s")
        assert r.returncode == 0, r.stderr
    t = TRICKY.replace("'", "''")
    series = (f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < "
              f"{usage_rows}) SELECT x FROM c") if target[1] == "sqlite3" else \
             f"SELECT generate_series(1, {usage_rows}) AS x"
    run_sql(target, f"""
INSERT INTO chat_sessions (id, owner, title, model, created, last_used)
  VALUES ('s-b', 'alice', '{t}', 'gemini-x', 1700000000, 1700000100),
         ('S-a', 'bob', '', 'gemini-y', 1700000000, 1700000200),
         ('s-c', 'alice', 'Zürich', 'gemini-x', 1, 2);
INSERT INTO chat_messages (session_id, seq, role, parts, text, created)
  VALUES ('s-b', 1, 'user', '[{{"text":"hi"}}]', '{t}', 1700000001),
         ('s-b', 2, 'model', '[{{"text":"ho"}}]', 'ho', 1700000002);
INSERT INTO usage_hourly (key_id, hour, requests, prompt_tokens)
  SELECT 'key' || x, x * 3600, x, x * 7 FROM ({series}) s;
INSERT INTO audit_log (at, actor, action, key_id, detail)
  VALUES (1700000000, 'test', 'seed', '', '{t}');
INSERT INTO mcp_tasks (id, owner, key_id, tool, request, status, status_message, outcome,
                       created_ms, updated_ms, ttl_ms, expires)
  VALUES ('task-1', 'alice', 'k1', 'slow_compute', '{{"name":"slow_compute"}}', 'completed',
          '{t}', '{{"content":[{{"type":"text","text":"done"}}]}}', 1700000000123,
          1700000001456, 3600000, 1700003601);
""")


def manifest(path):
    m = None
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b'{"manifest"'):
                m = json.loads(line)["manifest"]
    return m


def backup(target, path):
    r = ctl(*target, "backup", "--output", path)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    return manifest(path)


def tables_of(m):
    return {t["name"]: (t["rows"], t["sha256"], t["columns"]) for t in m["tables"]}


def rehash_end(path):
    """Rewrite the end line so that only the edit made before is what is wrong."""
    data = open(path, "rb").read()
    body = data[:data.rindex(b'{"end"')]
    end = json.dumps({"end": {"sha256": hashlib.sha256(body).hexdigest()}},
                     separators=(",", ":")).encode()
    open(path, "wb").write(body + end + b"\n")


# ---- the core path ------------------------------------------------------------------------
def test_backup_is_quiet_and_verifies(tmp):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp)
    out = os.path.join(tmp, "out")
    os.mkdir(out)
    r = ctl(*src, "backup", "--output", out)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    files = glob.glob(os.path.join(out, "*"))
    assert len(files) == 1 and os.path.basename(files[0]).startswith("gmcp-backup-")
    assert oct(os.stat(files[0]).st_mode & 0o777) == "0o600"
    assert not glob.glob(os.path.join(out, ".*"))
    r = ctl("-s", SQL, "backup", "verify", files[0])
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    m = manifest(files[0])
    assert m["source"]["driver"] == "sqlite3" and m["created_at"].endswith("Z")
    names = [t["name"] for t in m["tables"]]
    assert "schema_migrations" not in names and names == sorted(names)
    assert {"api_keys", "usage_hourly", "chat_sessions", "audit_log"} <= set(names)
    assert m["schema"]["version"] == len(m["schema"]["migrations"]) >= 5
    assert tables_of(m)["usage_hourly"][0] == 500 and tables_of(m)["api_keys"][0] == 3
    r = ctl(*src, "-v", "--json", "backup", "--output", os.path.join(tmp, "one.gmcpbak"))
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] > 500
    # One thread on a busy host, two when a core is free; -v says which and why.
    threads = json.loads(r.stdout)["threads"]
    assert threads in (1, 2)
    assert re.search(rf"backup on {threads} threads? \((tasks waited for a CPU \d+ % of "
                     r"\d+ ms|load average [\d.]+ on \d+ CPUs|one CPU)\)", r.stderr), r.stderr


def test_roundtrip_sqlite_pg_sqlite(tmp, pg_dsn):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp)
    a = os.path.join(tmp, "a.gmcpbak")
    ma = backup(src, a)
    pg = new_pg(pg_dsn)
    r = ctl(*pg, "restore", a)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    b = os.path.join(tmp, "b.gmcpbak")
    mb = backup(pg, b)
    assert mb["source"]["driver"] == "pgsql"
    assert tables_of(mb) == tables_of(ma)
    back = lite(os.path.join(tmp, "back.db"))
    r = ctl(*back, "restore", b)
    assert r.returncode == 0, r.stderr
    mc = backup(back, os.path.join(tmp, "c.gmcpbak"))
    assert tables_of(mc) == tables_of(ma)
    # the data itself, not only the hashes (a task too: millisecond times, JSON as text)
    assert query(back, "SELECT title FROM chat_sessions WHERE id = 's-b'") == TRICKY.strip()
    assert query(back, "SELECT status_message FROM mcp_tasks WHERE id = 'task-1'") == \
        TRICKY.strip()
    assert query(pg, "SELECT created_ms || ' ' || outcome FROM mcp_tasks") == \
        '1700000000123 {"content":[{"type":"text","text":"done"}]}'
    assert tables_of(mc)["mcp_tasks"][0] == 1
    # ids continue past the loaded ones on both engines
    for t in (pg, back):
        run_sql(t, "INSERT INTO audit_log (at, actor, action) VALUES (1, 'x', 'after');")
        ids = query(t, "SELECT id FROM audit_log ORDER BY id").split()
        assert len(ids) == len(set(ids)) and int(ids[-1]) > int(ids[-2])


def test_pg_source_restores_into_fresh_sqlite_and_pg(tmp, pg_dsn):
    src = new_pg(pg_dsn)
    populate(src, tmp)
    a = os.path.join(tmp, "a.gmcpbak")
    ma = backup(src, a)
    for target in (lite(os.path.join(tmp, "t.db")), new_pg(pg_dsn)):
        r = ctl(*target, "restore", a)
        assert r.returncode == 0, r.stderr
        m = backup(target, os.path.join(tmp, f"t-{target[1]}.gmcpbak"))
        assert tables_of(m) == tables_of(ma)


def test_dry_run_changes_nothing(tmp, pg_dsn):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp)
    a = os.path.join(tmp, "a.gmcpbak")
    backup(src, a)
    tdb = os.path.join(tmp, "t.db")
    r = ctl(*lite(tdb), "restore", "--dry-run", a)
    assert r.returncode == 0 and "usage_hourly" in r.stdout and "500" in r.stdout
    assert not os.path.exists(tdb)
    pg = new_pg(pg_dsn)
    r = ctl(*pg, "restore", "--dry-run", a)
    assert r.returncode == 0 and "nothing changed" in r.stdout
    assert query(pg, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"


# ---- refusals -------------------------------------------------------------------------------
@pytest.fixture
def archive(tmp):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp)
    a = os.path.join(tmp, "a.gmcpbak")
    backup(src, a)
    return a


def refused(tmp, pg_dsn, path, needle):
    r = ctl("-s", SQL, "backup", "verify", path)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    tdb = os.path.join(tmp, "fresh.db")
    r = ctl(*lite(tdb), "restore", path)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert not os.path.exists(tdb)
    pg = new_pg(pg_dsn)
    r = ctl(*pg, "restore", path)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert query(pg, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"


def test_tampered_archive_is_refused(tmp, pg_dsn, archive):
    data = bytearray(open(archive, "rb").read())
    i = data.index(b',"key1",')
    data[i + 5] = ord("X")            # key1 -> keyX in a usage_hourly row
    bad = os.path.join(tmp, "tampered.gmcpbak")
    open(bad, "wb").write(bytes(data))
    refused(tmp, pg_dsn, bad, "tampered")
    rehash_end(bad)                   # a consistent end line: the table hash still catches it
    refused(tmp, pg_dsn, bad, "hash mismatch on table usage_hourly")


def test_truncated_archive_is_refused(tmp, pg_dsn, archive):
    data = open(archive, "rb").read()
    bad = os.path.join(tmp, "truncated.gmcpbak")
    open(bad, "wb").write(data[:len(data) // 2])
    refused(tmp, pg_dsn, bad, "truncated")


def test_unknown_format_version_is_refused(tmp, pg_dsn, archive):
    data = open(archive, "rb").read().replace(b'{"gmcp_backup":1}', b'{"gmcp_backup":7}', 1)
    bad = os.path.join(tmp, "v7.gmcpbak")
    open(bad, "wb").write(data)
    refused(tmp, pg_dsn, bad, "unknown format version 7")


def test_newer_schema_is_refused(tmp, pg_dsn, archive):
    # an sql dir with one migration fewer than the archive's schema
    old = os.path.join(tmp, "oldsql")
    m = manifest(archive)
    for d in ("sqlite", "pgsql"):
        os.makedirs(os.path.join(old, d))
        for f in sorted(glob.glob(os.path.join(SQL, d, "*.sql"))):
            v = int(os.path.basename(f)[:4])
            if v < m["schema"]["version"] and not f.endswith(".down.sql"):
                shutil.copy(f, os.path.join(old, d))
    tdb = os.path.join(tmp, "t.db")
    r = ctl("-d", "sqlite3", "-p", tdb, "-s", old, "restore", archive)
    assert r.returncode == 1 and "newer than this gmcpctl's migrations" in r.stderr, r.stderr
    assert not os.path.exists(tdb)
    pg = new_pg(pg_dsn)
    r = ctl("-d", "pgsql", "-p", pg[3], "-s", old, "restore", archive)
    assert r.returncode == 1 and "newer than this gmcpctl's migrations" in r.stderr
    assert query(pg, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
    # and a manifest that claims a newer version (end line made consistent)
    data = open(archive, "rb").read()
    v = m["schema"]["version"]
    data = data.replace(b'"schema":{"version":%d' % v, b'"schema":{"version":%d' % (v + 50))
    bad = os.path.join(tmp, "newer.gmcpbak")
    open(bad, "wb").write(data)
    rehash_end(bad)
    r = ctl(*lite(tdb), "restore", bad)
    assert r.returncode == 1 and "newer than this gmcpctl's migrations" in r.stderr, r.stderr
    assert not os.path.exists(tdb)


def test_non_empty_target_is_refused_then_replaced(tmp, pg_dsn, archive):
    for target in (lite(os.path.join(tmp, "busy.db")), new_pg(pg_dsn)):
        ctl(*target, "migrate")
        run_sql(target, "INSERT INTO rate_limits (key_id, tat) VALUES ('someone', 42);")
        r = ctl(*target, "restore", archive)
        assert r.returncode == 1 and "not empty" in r.stderr and "--replace" in r.stderr
        assert query(target, "SELECT count(*) FROM rate_limits") == "1"
        assert query(target, "SELECT count(*) FROM usage_hourly") == "0"
        before = set(glob.glob(os.path.join(tmp, "gmcp-pre-restore-*")))
        r = ctl(*target, "restore", "--replace", archive)
        assert r.returncode == 0, r.stderr
        pre = set(glob.glob(os.path.join(tmp, "gmcp-pre-restore-*"))) - before
        assert len(pre) == 1 and list(pre)[0] in r.stdout
        assert tables_of(manifest(list(pre)[0]))["rate_limits"][0] == 1
        assert query(target, "SELECT count(*) FROM rate_limits") == "0"
        assert query(target, "SELECT count(*) FROM usage_hourly") == "500"
        # the append-only trigger is back
        assert subprocess.run((["sqlite3", target[3]] if target[1] == "sqlite3" else
                               ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", target[3], "-c"])
                              + ["DELETE FROM audit_log"], capture_output=True).returncode != 0


def test_usage_errors():
    r = ctl("restore")
    assert r.returncode == 2 and "needs an ID" in r.stderr or "needs" in r.stderr
    r = ctl("backup", "--replace")
    assert r.returncode == 2 and "--replace does not apply to 'backup'" in r.stderr
    r = ctl("backup", "verify")
    assert r.returncode == 2


# ---- a backup killed mid-way -----------------------------------------------------------------
@pytest.mark.parametrize("driver", ["sqlite", "pgsql"])
def test_killed_backup_leaves_nothing_that_verifies(tmp, pg_dsn, driver):
    src = lite(os.path.join(tmp, "big.db")) if driver == "sqlite" else new_pg(pg_dsn)
    populate(src, tmp, usage_rows=400000)
    out = os.path.join(tmp, "out")
    os.mkdir(out)
    p = subprocess.Popen([GMCPCTL] + src + ["backup", "--output", out])
    deadline = time.time() + 30
    while time.time() < deadline:
        tmps = glob.glob(os.path.join(out, ".*.tmp-*"))
        if tmps and os.path.getsize(tmps[0]) > 1 << 20:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert tmps, "the backup finished before it could be killed"
    assert not glob.glob(os.path.join(out, "gmcp-backup-*"))
    for f in glob.glob(os.path.join(out, ".*")):
        r = ctl("-s", SQL, "backup", "verify", f)
        assert r.returncode == 1 and "truncated" in r.stderr
    # the next run is not blocked by the dead one
    r = ctl(*src, "backup", "--output", out)
    assert r.returncode == 0, r.stderr
    assert len(glob.glob(os.path.join(out, "gmcp-backup-*"))) == 1


# ---- options -----------------------------------------------------------------------------------
def test_keep(tmp):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp, usage_rows=10)
    out = os.path.join(tmp, "series")
    os.mkdir(out)
    other = os.path.join(out, "notes.txt")
    open(other, "w").write("mine")
    made = []
    for _ in range(4):
        r = ctl(*src, "--json", "backup", "--output", out, "--keep", "2")
        assert r.returncode == 0, r.stderr
        made.append(json.loads(r.stdout)["path"])
    left = sorted(glob.glob(os.path.join(out, "gmcp-backup-*")))
    assert [os.path.basename(x) for x in left] == [os.path.basename(x) for x in made[-2:]]
    assert os.path.exists(other)
    r = ctl(*src, "backup", "--output", os.path.join(tmp, "x.gmcpbak"), "--keep", "2")
    assert r.returncode == 2


def test_encrypt(tmp, pg_dsn):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp, usage_rows=50)
    key = os.path.join(tmp, "key")
    open(key, "w").write("a backup key of some length\n")
    a = os.path.join(tmp, "e.gmcpbak")
    r = ctl(*src, "backup", "--output", a, "--encrypt", "file:" + key)
    assert r.returncode == 0, r.stderr
    data = open(a, "rb").read()
    assert b"usage_hourly" not in data and b'"key_fingerprint"' in data.split(b"\n")[0]
    r = ctl("-s", SQL, "backup", "verify", a)
    assert r.returncode == 1 and "encrypted" in r.stderr
    env = dict(os.environ, BK_WRONG="another key, also long")
    r = ctl("-s", SQL, "backup", "verify", a, "--encrypt", "env:BK_WRONG", env=env)
    assert r.returncode == 1 and "wrong key" in r.stderr
    r = ctl(*new_pg(pg_dsn), "restore", a, "--encrypt", "env:BK_WRONG", env=env)
    assert r.returncode == 1 and "wrong key" in r.stderr
    r = ctl("-s", SQL, "backup", "verify", a, "--encrypt", "file:" + key)
    assert r.returncode == 0, r.stderr
    pg = new_pg(pg_dsn)
    r = ctl(*pg, "restore", a, "--encrypt", "file:" + key)
    assert r.returncode == 0, r.stderr
    assert query(pg, "SELECT count(*) FROM usage_hourly") == "50"
    # a flipped ciphertext byte
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1
    open(a + ".bad", "wb").write(bytes(bad))
    r = ctl("-s", SQL, "backup", "verify", a + ".bad", "--encrypt", "file:" + key)
    assert r.returncode == 1 and "tampered" in r.stderr


def test_copy(tmp, pg_dsn):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp, usage_rows=100)
    ma = backup(src, os.path.join(tmp, "a.gmcpbak"))
    pg = new_pg(pg_dsn)
    r = ctl(*src, "copy", "--to-driver", "pgsql", "--to-params", pg[3])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert tables_of(backup(pg, os.path.join(tmp, "b.gmcpbak"))) == tables_of(ma)
    r = ctl(*src, "copy", "--to-driver", "pgsql", "--to-params", pg[3])
    assert r.returncode == 1 and "not empty" in r.stderr


def test_pepper_fingerprint_warns(tmp):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp, usage_rows=5)
    a = os.path.join(tmp, "a.gmcpbak")
    r = ctl(*src, "-k", "file:" + os.path.join(tmp, "pepper"), "backup", "--output", a)
    assert r.returncode == 0
    m = manifest(a)
    assert len(m["key_pepper_fingerprint"]) == 32
    assert "pepper-for-backup" not in open(a, encoding="utf-8").read()
    env = dict(os.environ, OTHER_PEPPER="a different pepper, long enough")
    r = ctl(*lite(os.path.join(tmp, "t.db")), "-k", "env:OTHER_PEPPER", "restore", a, env=env)
    assert r.returncode == 0 and "another key pepper" in r.stderr


# ---- online: a backup while the server serves --------------------------------------------------
TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1 << 20


def tus_create(base, key, length):
    r = requests.post(base + "/uploads", headers=dict(TUS, **{
        "Authorization": f"Bearer {key}", "Upload-Length": str(length)}), timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def tus_patch(url, key, offset, data):
    return requests.patch(url, data=data, timeout=60, headers=dict(TUS, **{
        "Authorization": f"Bearer {key}", "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream"}))


def tus_head(url, key):
    return requests.head(url, headers=dict(TUS, Authorization=f"Bearer {key}"), timeout=30)


def mcp(s, key, body, sid=None):
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "Authorization": f"Bearer {key}"}
    if sid:
        h["Mcp-Session-Id"] = sid
    return requests.post(s.url, data=json.dumps(body), headers=h, timeout=60)


def mcp_session(s, key):
    r = mcp(s, key, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "pytest", "version": "1"}}})
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    assert mcp(s, key, {"jsonrpc": "2.0", "method": "notifications/initialized"},
               sid).status_code == 202
    return sid


def tool_ok(s, key, sid, name, args):
    """A tools/call that succeeded: its result (None when it failed)."""
    r = mcp(s, key, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": name, "arguments": args}}, sid)
    if r.status_code != 200:
        return None
    if r.headers.get("Content-Type", "").startswith("text/event-stream"):
        msgs = [json.loads(l[5:]) for l in r.text.splitlines() if l.startswith("data:")]
        msgs = [m for m in msgs if m.get("id") == 1]
        if not msgs:
            return None
        body = msgs[-1]
    else:
        body = r.json()
    res = body.get("result")
    return None if not res or res.get("isError") else res


def count_rows(target, table):
    return int(query(target, f"SELECT count(*) FROM {table}"))


@pytest.mark.parametrize("db", ["sqlite", "pgsql"])
def test_backup_while_serving(start, tmp, db, pg_dsn, fake_gemini):
    """Chat sends, tus uploads (creation + PATCH), key creation and revocation and pings,
    while backups (with --include-uploads) run: nothing fails, every archive verifies,
    and the last one restores with its manifest's row counts and spool files."""
    s = start(db, "--auth", "apikey", "--gemini-url", fake_gemini.url,
              "--gemini-key", fake_gemini.key)
    key = s.info["api_key"]
    sid = mcp_session(s, key)
    stop = threading.Event()
    failures = []
    counts = {"pings": 0, "chats": 0, "patches": 0, "uploads": 0, "keys": 0, "revoked": 0}
    lock = threading.Lock()

    def bump(k):
        with lock:
            counts[k] += 1

    def pings_and_chats():
        chat = None
        while not stop.is_set():
            r = mcp(s, key, {"jsonrpc": "2.0", "id": "alive", "method": "ping"}, sid)
            if r.status_code != 200 or r.json() != {"jsonrpc": "2.0", "id": "alive",
                                                    "result": {}}:
                failures.append(f"ping {r.status_code} {r.text[:200]}")
            bump("pings")
            if chat is None:
                res = tool_ok(s, key, sid, "gemini_chat_start", {"title": "load"})
                if res is None:
                    failures.append("gemini_chat_start")
                    continue
                chat = res["structuredContent"]["session_id"]
            res = tool_ok(s, key, sid, "gemini_chat_send", {"session_id": chat,
                                                            "message": f"m{counts['chats']}"})
            if res is None:
                failures.append("gemini_chat_send")
            bump("chats")

    def uploads():
        while not stop.is_set():
            size = 3 * 256 * 1024 + 11
            data = os.urandom(size)
            try:
                url = tus_create(s.base, key, size)
            except AssertionError as e:
                failures.append(f"tus create {e}")
                continue
            bump("uploads")
            for off in range(0, size, 256 * 1024):
                piece = data[off:off + 256 * 1024]
                r = tus_patch(url, key, off, piece)
                if r.status_code != 204 or r.headers.get("Upload-Offset") != str(off + len(piece)):
                    failures.append(f"tus patch {r.status_code} {r.text[:200]}")
                    break
                bump("patches")
                if stop.is_set():
                    break           # leave it live: the next backup copies its bytes

    def keys():
        i = 0
        while not stop.is_set():
            r = s.gmcpctl_run("--json", "keys", "create", "--name", f"load{i}", check=False)
            if r.returncode != 0:
                failures.append(r.stderr)
                continue
            bump("keys")
            kid = json.loads(r.stdout)["id"]
            r = s.gmcpctl_run("keys", "revoke", kid, check=False)
            if r.returncode != 0:
                failures.append(r.stderr)
            bump("revoked")
            i += 1

    threads = [threading.Thread(target=f) for f in (pings_and_chats, pings_and_chats, uploads,
                                                    uploads, keys)]
    for t in threads:
        t.start()
    out = os.path.join(tmp, "online")
    os.mkdir(out)
    try:
        time.sleep(0.5)
        for _ in range(5):
            r = s.gmcpctl_run("backup", "--include-uploads", "--output", out, check=False)
            # Known and unexplained (see the closing note of issue 12's first part): under
            # heavy load a live upload's spool file was reported missing now and then; the
            # backup then skips that upload with this one warning. Nothing else may show.
            other = [l for l in r.stderr.splitlines()
                     if not re.search(r"the spool file \S+ is missing: not included$", l)]
            assert r.returncode == 0 and not other, r.stderr
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert counts["pings"] > 10 and counts["chats"] > 2 and counts["patches"] > 2
    assert counts["keys"] > 1 and counts["revoked"] > 1
    files = sorted(glob.glob(os.path.join(out, "gmcp-backup-*")))
    assert len(files) == 5
    for f in files:
        r = ctl("-s", SQL, "backup", "verify", f)
        assert r.returncode == 0, r.stderr
    assert any(manifest(f)["spool"]["files"] for f in files)    # live uploads were copied
    last = files[-1]
    m = manifest(last)
    assert tables_of(m)["chat_messages"][0] > 0 and tables_of(m)["uploads"][0] > 0
    assert "files" in m["spool"]
    assert all(k["reason"] == "missing" for k in m["spool"]["skipped"]), m["spool"]["skipped"]
    target = lite(os.path.join(tmp, "restored.db")) if db == "pgsql" else new_pg(pg_dsn)
    updir = os.path.join(tmp, "restored-uploads")
    os.mkdir(updir)
    r = ctl(*target, "restore", last, "--upload-dir", updir)
    assert r.returncode == 0, r.stderr
    for name, (rows, _, _) in tables_of(m).items():
        assert count_rows(target, name) == rows, name
    for f in m["spool"]["files"]:
        data = open(os.path.join(updir, f["id"]), "rb").read()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    assert sorted(os.listdir(updir)) == sorted(f["id"] for f in m["spool"]["files"])


# ---- live uploads: --include-uploads ----------------------------------------------------------
def _spool_lines(path):
    return [i for i, l in enumerate(open(path, "rb").read().split(b"\n")) if l.startswith(b'"')]


@pytest.mark.parametrize("src_db,dst_db", [("sqlite", "pgsql"), ("pgsql", "sqlite")])
def test_live_upload_resumes_after_restore(start, tmp, pg_dsn, src_db, dst_db):
    s1 = start(src_db, "--auth", "apikey")
    key = s1.info["api_key"]
    data = os.urandom(2 * MiB + 12345)
    url = tus_create(s1.base, key, len(data))
    uid = url.rstrip("/").rsplit("/", 1)[1]
    part = MiB + 777
    r = tus_patch(url, key, 0, data[:part])
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(part), r.text
    done = tus_create(s1.base, key, 5)                # complete: not a live upload
    assert tus_patch(done, key, 0, b"12345").status_code == 204
    arc = os.path.join(tmp, "live.gmcpbak")
    r = s1.gmcpctl_run("backup", "--include-uploads", "--output", arc, check=False)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    m = manifest(arc)
    assert m["spool"] == {"files": [{"id": uid, "bytes": part,
                                     "sha256": hashlib.sha256(data[:part]).hexdigest()}],
                          "skipped": []}
    r = ctl("-s", SQL, "--json", "backup", "verify", arc)
    assert r.returncode == 0 and json.loads(r.stdout)["spool"]["files"][0]["id"] == uid
    # bytes written after the snapshot are not in it
    assert tus_patch(url, key, part, data[part:part + 1000]).status_code == 204
    # the target: a fresh database of the other driver, another upload dir, s1's pepper
    d2 = tempfile.mkdtemp(prefix="gmcp-bk2-")
    os.chmod(d2, 0o755)
    try:
        updir = os.path.join(d2, "uploads")
        os.mkdir(updir)
        shutil.copy(os.path.join(s1.info["data_dir"], "key-pepper"), os.path.join(d2,
                                                                                  "key-pepper"))
        if dst_db == "sqlite":
            target, extra = lite(os.path.join(d2, "gmcp.db")), []
        else:
            target = new_pg(pg_dsn)
            extra = ["--pg-dsn", target[3]]
        r = ctl(*target, "restore", arc)             # the spool files need a directory
        assert r.returncode == 1 and "--upload-dir" in r.stderr, r.stderr
        r = ctl(*target, "restore", "--dry-run", arc, "--upload-dir", updir)
        assert r.returncode == 0 and f"would write spool file {updir}/{uid}" in r.stdout
        assert os.listdir(updir) == []
        r = ctl(*target, "restore", arc, "--upload-dir", updir)
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
        assert os.listdir(updir) == [uid]
        assert open(os.path.join(updir, uid), "rb").read() == data[:part]
        assert oct(os.stat(os.path.join(updir, uid)).st_mode & 0o777) == "0o600"
        # an existing spool file is not overwritten without --replace
        r = ctl(*target, "restore", "--replace", arc)
        assert r.returncode == 1 and "--upload-dir" in r.stderr
        s2 = start(dst_db, "--auth", "apikey", "--data-dir", d2, *extra)
        url2 = s2.base + "/uploads/" + uid
        r = tus_head(url2, key)
        assert r.status_code == 200 and r.headers["Upload-Offset"] == str(part), r.text
        r = tus_patch(url2, key, part, data[part:])
        assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data)), r.text
        got = open(os.path.join(updir, uid), "rb").read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
        assert s2.sql(f"SELECT state, sha256 FROM uploads WHERE id = '{uid}'")[0].split("|") \
            == ["complete", hashlib.sha256(data).hexdigest()]
        s2.stop()
    finally:
        shutil.rmtree(d2, ignore_errors=True)

    # refusals: an existing spool file without --replace, a tampered spool section
    t3 = lite(os.path.join(tmp, "t3.db"))
    up3 = os.path.join(tmp, "up3")
    os.mkdir(up3)
    open(os.path.join(up3, uid), "wb").write(b"someone else's")
    r = ctl(*t3, "restore", arc, "--upload-dir", up3)
    assert r.returncode == 1 and "exists" in r.stderr and "--replace" in r.stderr
    assert not os.path.exists(t3[3])
    r = ctl(*t3, "restore", "--replace", arc, "--upload-dir", up3)
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(up3, uid), "rb").read() == data[:part]
    assert not [f for f in os.listdir(up3) if f.startswith(".")]

    raw = open(arc, "rb").read().split(b"\n")
    i = _spool_lines(arc)[1]
    line = bytearray(raw[i])
    j = len(line) // 2
    line[j] = ord("A") if line[j] != ord("A") else ord("B")
    bad = os.path.join(tmp, "tampered-spool.gmcpbak")
    open(bad, "wb").write(b"\n".join(raw[:i] + [bytes(line)] + raw[i + 1:]))
    r = ctl("-s", SQL, "backup", "verify", bad)
    assert r.returncode == 1 and "tampered" in r.stderr, r.stderr
    rehash_end(bad)
    r = ctl("-s", SQL, "backup", "verify", bad)
    assert r.returncode == 1 and f"mismatch on spool file {uid}" in r.stderr, r.stderr
    t4 = lite(os.path.join(tmp, "t4.db"))
    up4 = os.path.join(tmp, "up4")
    os.mkdir(up4)
    r = ctl(*t4, "restore", bad, "--upload-dir", up4)
    assert r.returncode == 1 and "spool file" in r.stderr
    assert os.listdir(up4) == [] and not os.path.exists(t4[3])
    # a missing chunk line
    cut = os.path.join(tmp, "cut-spool.gmcpbak")
    open(cut, "wb").write(b"\n".join(raw[:i] + raw[i + 1:]))
    rehash_end(cut)
    r = ctl("-s", SQL, "backup", "verify", cut)
    assert r.returncode == 1 and f"spool file {uid} has" in r.stderr, r.stderr


def test_include_uploads_skips_short_and_missing_files(tmp):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp, usage_rows=5)
    updir = os.path.join(tmp, "spool")
    os.mkdir(updir)
    ids = ["A" * 22, "B" * 22, "C" * 22, "D" * 22]
    far = int(time.time()) + 3600
    run_sql(src, "".join(
        f"INSERT INTO uploads (id, owner, key_id, length, upload_offset, state, created, expires)"
        f" VALUES ('{i}', 'o', '', 100, {off}, '{st}', 1, {exp});\n"
        for i, off, st, exp in ((ids[0], 10, "receiving", far), (ids[1], 50, "receiving", far),
                                (ids[2], 5, "receiving", far), (ids[3], 5, "receiving", 1))))
    open(os.path.join(updir, ids[0]), "wb").write(b"0123456789" + b"later bytes")
    open(os.path.join(updir, ids[1]), "wb").write(b"short")
    # ids[2] has no file; ids[3] has expired
    a = os.path.join(tmp, "a.gmcpbak")
    r = ctl(*src, "--json", "backup", "--include-uploads", "--upload-dir", updir, "--output", a)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spool_files"] == 1
    assert ids[1] in r.stderr and "fewer than its offset" in r.stderr and ids[2] in r.stderr
    m = manifest(a)
    assert [(f["id"], f["bytes"]) for f in m["spool"]["files"]] == [(ids[0], 10)]
    assert [(x["id"], x["reason"]) for x in m["spool"]["skipped"]] == [
        (ids[1], "shorter than its offset"), (ids[2], "missing")]
    assert ctl("-s", SQL, "backup", "verify", a).returncode == 0
    # restore: the one file back, a warning for the live uploads without one
    t = lite(os.path.join(tmp, "t.db"))
    up = os.path.join(tmp, "up")
    os.mkdir(up)
    r = ctl(*t, "restore", a, "--upload-dir", up)
    assert r.returncode == 0, r.stderr
    assert os.listdir(up) == [ids[0]] and open(os.path.join(up, ids[0]), "rb").read() == \
        b"0123456789"
    assert "2 live upload(s)" in r.stderr
    # usage
    r = ctl(*src, "backup", "--include-uploads", "--output", os.path.join(tmp, "x.gmcpbak"))
    assert r.returncode == 2 and "--upload-dir" in r.stderr
    r = ctl(*src, "restore", "--include-uploads", a)
    assert r.returncode == 2
    # old archives (no spool section) still verify and restore as before
    b = os.path.join(tmp, "b.gmcpbak")
    backup(src, b)
    assert "spool" not in manifest(b) and b'{"spool"' not in open(b, "rb").read()


def test_include_uploads_encrypted_and_copy(tmp, pg_dsn):
    src = lite(os.path.join(tmp, "src.db"))
    populate(src, tmp, usage_rows=5)
    updir = os.path.join(tmp, "spool")
    os.mkdir(updir)
    uid = "E" * 22
    blob = os.urandom(200000)
    run_sql(src, f"INSERT INTO uploads (id, owner, key_id, length, upload_offset, state, "
                 f"created, expires) VALUES ('{uid}', 'o', '', 300000, {len(blob)}, "
                 f"'receiving', 1, {int(time.time()) + 3600});")
    open(os.path.join(updir, uid), "wb").write(blob)
    key = os.path.join(tmp, "key")
    open(key, "w").write("a backup key of some length\n")
    a = os.path.join(tmp, "e.gmcpbak")
    r = ctl(*src, "backup", "--include-uploads", "--upload-dir", updir, "--output", a,
            "--encrypt", "file:" + key)
    assert r.returncode == 0, r.stderr
    assert b'"spool"' not in open(a, "rb").read()
    r = ctl("-s", SQL, "--json", "backup", "verify", a, "--encrypt", "file:" + key)
    assert r.returncode == 0 and json.loads(r.stdout)["spool"]["files"][0]["bytes"] == len(blob)
    pg = new_pg(pg_dsn)
    up = os.path.join(tmp, "up")
    os.mkdir(up)
    r = ctl(*pg, "restore", a, "--encrypt", "file:" + key, "--upload-dir", up)
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(up, uid), "rb").read() == blob
    # copy: the source's GeminiMCPUploadDir (its --config) to --upload-dir
    conf = os.path.join(tmp, "httpd.conf")
    open(conf, "w").write(f'DBDriver sqlite3\nDBDParams "{src[3]}"\n'
                          f'GeminiMCPUploadDir "{updir}"\n')
    up2 = os.path.join(tmp, "up2")
    os.mkdir(up2)
    pg2 = new_pg(pg_dsn)
    r = ctl("-f", conf, "-s", SQL, "copy", "--include-uploads", "--to-driver", "pgsql",
            "--to-params", pg2[3], "--upload-dir", updir)
    assert r.returncode == 2 and "already there" in r.stderr
    r = ctl("-f", conf, "-s", SQL, "copy", "--include-uploads", "--to-driver", "pgsql",
            "--to-params", pg2[3], "--upload-dir", up2)
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(up2, uid), "rb").read() == blob
    assert query(pg2, f"SELECT upload_offset FROM uploads WHERE id = '{uid}'") == str(len(blob))
