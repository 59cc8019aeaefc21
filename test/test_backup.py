"""gmcpctl backup / backup verify / restore / copy on SQLite and PostgreSQL."""
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

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
    r = ctl(*src, "--json", "backup", "--output", os.path.join(tmp, "one.gmcpbak"))
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] > 500


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
    # the data itself, not only the hashes
    assert query(back, "SELECT title FROM chat_sessions WHERE id = 's-b'") == TRICKY.strip()
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
def test_backup_while_serving(server, tmp):
    sid = server.initialize()
    stop = threading.Event()
    failures = []
    counts = {"pings": 0, "keys": 0}

    def load():
        i = 0
        while not stop.is_set():
            if not server.ping_ok(sid):
                failures.append("ping")
            counts["pings"] += 1
            if i % 5 == 0:
                r = server.gmcpctl_run("keys", "create", "--name", f"load{i}", check=False)
                if r.returncode != 0:
                    failures.append(r.stderr)
                counts["keys"] += 1
            i += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        out = os.path.join(tmp, "online")
        os.mkdir(out)
        for _ in range(5):
            r = server.gmcpctl_run("backup", "--output", out, check=False)
            assert r.returncode == 0, r.stderr
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert counts["pings"] > 10 and counts["keys"] > 2
    files = glob.glob(os.path.join(out, "gmcp-backup-*"))
    assert len(files) == 5
    for f in files:
        r = ctl("-s", SQL, "backup", "verify", f)
        assert r.returncode == 0, r.stderr
