"""gmcpctl migrate down --to N [--force], the down scripts, and drift in migrate status.

Every test runs on SQLite and PostgreSQL, each on a fresh database (a new file, or a new
database in the session's throwaway cluster).
"""
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from harness import ROOT

BUILD = os.environ.get("GMCP_BUILD", "build")
BUILD = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
GMCPCTL = os.path.join(BUILD, "gmcpctl")
SQL = os.path.join(ROOT, "sql")
PEPPER_ENV = "GMCP_T_PEPPER"
ENV = dict(os.environ, **{PEPPER_ENV: "0123456789abcdef-pepper"})
SUBDIR = {"sqlite": "sqlite", "pgsql": "pgsql"}


def up_files(sql_dir, kind):
    d = os.path.join(sql_dir, SUBDIR[kind])
    return sorted(f for f in os.listdir(d) if f.endswith(".sql") and not f.endswith(".down.sql"))


NEWEST = len(up_files(SQL, "sqlite"))


class Db:
    """A fresh database and the gmcpctl flags that reach it."""

    def __init__(self, kind, tmp, pg_dsn=None):
        self.kind, self.tmp, self.pg_dsn = kind, tmp, pg_dsn
        self.sql_dir = SQL
        if kind == "sqlite":
            self.path = os.path.join(tmp, "g.db")
            self.base = ["-d", "sqlite3", "-p", self.path]
        else:
            self.name = "gmcp_down_" + secrets.token_hex(4)
            self.admin(f'CREATE DATABASE "{self.name}"')
            self.dsn = pg_dsn + f" dbname={self.name}"
            self.base = ["-d", "pgsql", "-p", self.dsn]

    def admin(self, sql):
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        self.pg_dsn + " dbname=postgres", "-c", sql], check=True,
                       capture_output=True)

    def drop(self):
        if self.kind == "pgsql":
            self.admin(f'DROP DATABASE IF EXISTS "{self.name}"')

    def ctl(self, *args, sql_dir=None):
        argv = [GMCPCTL] + self.base + ["-s", sql_dir or self.sql_dir,
                                        "-k", "env:" + PEPPER_ENV] + list(args)
        return subprocess.run(argv, capture_output=True, text=True, env=ENV)

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    def query(self, sql):
        if self.kind == "sqlite":
            con = sqlite3.connect(self.path)
            try:
                rows = [tuple("" if v is None else str(v) for v in row)
                        for row in con.execute(sql)]
                con.commit()
                return rows
            finally:
                con.close()
        out = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              self.dsn, "-c", sql], capture_output=True, text=True, check=True)
        return [tuple(l.split("\t")) for l in out.stdout.splitlines() if l]

    def version(self):
        return int(self.query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0])

    def schema(self):
        """Everything the migrations define, normalised and sorted (no data, no OIDs)."""
        if self.kind == "sqlite":
            rows = self.query("SELECT type, name, tbl_name, sql FROM sqlite_master "
                              "WHERE name <> 'sqlite_sequence'")
            return sorted((t, n, tb, re.sub(r"\s+", " ", s).strip()) for t, n, tb, s in rows)
        return sorted(self.query(r"""
            SELECT 'column', table_name || '.' || column_name,
                   (row_number() OVER (PARTITION BY table_name ORDER BY ordinal_position))::text,
                   data_type || ' null=' || is_nullable || ' default=' || COALESCE(column_default, '')
              FROM information_schema.columns WHERE table_schema = 'public'
            UNION ALL
            SELECT 'index', indexname, tablename, indexdef FROM pg_indexes
             WHERE schemaname = 'public'
            UNION ALL
            SELECT 'constraint', conname, conrelid::regclass::text, pg_get_constraintdef(oid)
              FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            UNION ALL
            SELECT 'trigger', tgname, tgrelid::regclass::text, pg_get_triggerdef(oid)
              FROM pg_trigger WHERE NOT tgisinternal
            UNION ALL
            SELECT 'function', proname, pg_get_function_identity_arguments(oid), md5(prosrc)
              FROM pg_proc WHERE pronamespace = 'public'::regnamespace
            UNION ALL
            SELECT 'sequence', sequencename, data_type::text, increment_by::text
              FROM pg_sequences WHERE schemaname = 'public'
        """))

    def tables(self):
        if self.kind == "sqlite":
            q = "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence'"
        else:
            q = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return sorted(r[0] for r in self.query(q))


@pytest.fixture(params=["sqlite", "pgsql"])
def db(request):
    tmp = tempfile.mkdtemp(prefix="gmcp-down-")
    dsn = request.getfixturevalue("pg_dsn") if request.param == "pgsql" else None
    d = Db(request.param, tmp, dsn)
    yield d
    d.drop()
    shutil.rmtree(tmp, ignore_errors=True)


def copy_sql(db, keep=None):
    """A copy of sql/ (with only migrations 1..keep when given) for -s."""
    dst = os.path.join(db.tmp, "sql-%s" % secrets.token_hex(3))
    shutil.copytree(SQL, dst)
    if keep is not None:
        for sub in SUBDIR.values():
            for f in os.listdir(os.path.join(dst, sub)):
                if int(f[:4]) > keep:
                    os.remove(os.path.join(dst, sub, f))
    return dst


def one_line(r, code):
    lines = r.stderr.splitlines()
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("gmcpctl: "), r.stderr
    return lines[0]


def test_every_migration_has_a_down_script_on_both_drivers():
    for kind in SUBDIR:
        for f in up_files(SQL, kind):
            assert os.path.exists(os.path.join(SQL, SUBDIR[kind], f[:-4] + ".down.sql")), f


def test_up_down_up_leaves_the_schema_identical(db):
    r = db.ok("migrate")
    assert r.stdout == "" and r.stderr == ""
    before = db.schema()
    assert db.version() == NEWEST
    r = db.ok("migrate", "down", "--to", "0")
    assert r.stdout == "" and r.stderr == ""          # quiet on success
    assert db.version() == 0
    assert db.tables() == ["schema_migrations"]
    db.ok("migrate")
    assert db.schema() == before
    assert db.version() == NEWEST


def test_down_to_each_version_matches_a_fresh_migrate_to_it(db):
    db.ok("migrate")
    for n in range(NEWEST - 1, -1, -1):
        # Each step above 0003 writes a schema.down audit row: rows that rolling back
        # 0003 (which drops audit_log) counts as data, so those steps need --force.
        force = ["--force"] if n < 3 else []
        r = db.ok("--json", "migrate", "down", "--to", str(n), *force)
        out = json.loads(r.stdout)
        assert out["rolled_back"] == [up_files(SQL, db.kind)[n][:-4]]
        assert out["from"] == n + 1 and out["version"] == n
        assert db.version() == n
        # The same schema as a database migrated to n from scratch.
        ref = Db(db.kind, tempfile.mkdtemp(dir=db.tmp), db.pg_dsn)
        try:
            if n:
                ref.ok("migrate", sql_dir=copy_sql(db, keep=n))
                assert ref.version() == n
                assert db.schema() == ref.schema(), n
            else:
                assert db.tables() == ["schema_migrations"]
        finally:
            ref.drop()
        st = json.loads(db.ctl("--json", "migrate", "status").stdout)
        assert [m["state"] for m in st] == ["applied"] * n + ["pending"] * (NEWEST - n)


def test_verbose_and_noop(db):
    db.ok("migrate")
    r = db.ok("-v", "migrate", "down", "--to", str(NEWEST))
    assert "already at version %d" % NEWEST in r.stdout
    assert db.ok("migrate", "down", "--to", str(NEWEST)).stdout == ""
    r = db.ok("-v", "migrate", "down", "--to", str(NEWEST - 1))
    assert "rolled back " + up_files(SQL, db.kind)[-1][:-4] in r.stdout
    assert "schema is at version %d" % (NEWEST - 1) in r.stdout


def test_refuses_to_drop_data_without_force(db):
    db.ok("migrate")
    r = db.ok("--json", "keys", "create", "--name", "k1")
    key_id = json.loads(r.stdout)["id"]
    before = db.schema()
    r = db.ctl("migrate", "down", "--to", "2")
    line = one_line(r, 1)
    assert "would drop data" in line and "api_keys has rows" in line and "--force" in line
    assert "nothing was changed" in line and r.stdout == ""
    assert db.version() == NEWEST and db.schema() == before
    assert db.query("SELECT id FROM api_keys") == [(key_id,)]
    # Rolling back above 0003 drops nothing of the key's: allowed, and audited.
    r = db.ok("--json", "migrate", "down", "--to", "3")
    assert json.loads(r.stdout)["audited"] is True
    audit = json.loads(db.ok("--json", "audit").stdout)
    rows = [a for a in audit if a["action"] == "schema.down"]
    assert len(rows) == 1 and "to 3" in rows[0]["detail"], audit
    # --force drops the keys (and the audit log: no audit row is possible then).
    r = db.ok("--json", "migrate", "down", "--to", "2", "--force")
    out = json.loads(r.stdout)
    assert out["version"] == 2 and out["audited"] is False
    assert db.version() == 2 and "api_keys" not in db.tables()
    db.ok("migrate")
    assert db.schema() == before


def test_dropping_columns_of_a_non_empty_table_is_refused(db):
    db.ok("migrate")
    db.ok("migrate", "down", "--to", "5")
    db.query("INSERT INTO uploads (id, owner, created, expires) VALUES ('u1', 'alice', 1, 2)")
    before = db.schema()
    line = one_line(db.ctl("migrate", "down", "--to", "4"), 1)
    assert "uploads has rows (0005_upload_progress)" in line
    assert db.version() == 5 and db.schema() == before
    db.ok("migrate", "down", "--to", "4", "--force")
    assert db.version() == 4
    assert db.query("SELECT id, owner FROM uploads") == [("u1", "alice")]


@pytest.mark.parametrize("to", ["-1", "x", "", "1.5", "+2", "99"])
def test_invalid_to_is_a_usage_error(db, to):
    db.ok("migrate")
    before = db.schema()
    line = one_line(db.ctl("migrate", "down", "--to", to), 2)
    assert line.endswith("(see gmcpctl --help)")
    assert db.version() == NEWEST and db.schema() == before


def test_usage_errors(db):
    db.ok("migrate")
    assert "needs --to" in one_line(db.ctl("migrate", "down"), 2)
    assert "--force does not apply" in one_line(db.ctl("migrate", "--force"), 2)
    assert "--to does not apply" in one_line(db.ctl("migrate", "status", "--to", "1"), 2)
    db.ok("migrate", "down", "--to", "2")
    assert "above" in one_line(db.ctl("migrate", "down", "--to", "3"), 2)


def test_down_refused_without_a_down_script(db):
    sql = copy_sql(db)
    db.ok("migrate", sql_dir=sql)
    last = up_files(sql, db.kind)[-1][:-4]
    os.remove(os.path.join(sql, SUBDIR[db.kind], last + ".down.sql"))
    line = one_line(db.ctl("migrate", "down", "--to", "0", sql_dir=sql), 1)
    assert "%s has no down script" % last in line
    assert db.version() == NEWEST


def test_drift_is_shown_and_refused(db):
    sql = copy_sql(db)
    db.ok("migrate", sql_dir=sql)
    r = db.ok("migrate", "status", sql_dir=sql)
    assert "drift" not in r.stdout
    second = up_files(sql, db.kind)[1]
    with open(os.path.join(sql, SUBDIR[db.kind], second), "a") as f:
        f.write("\n-- edited after it was applied\n")
    r = db.ctl("migrate", "status", sql_dir=sql)
    assert "schema drift: 1 applied migration" in one_line(r, 1)
    assert re.search(r"^0002\s+%s\s+drift\s" % second[:-4], r.stdout, re.M), r.stdout
    assert re.search(r"^0001\s+\S+\s+applied\s", r.stdout, re.M)
    r = db.ctl("--json", "migrate", "status", sql_dir=sql)
    assert r.returncode == 1
    st = {m["version"]: m for m in json.loads(r.stdout)}
    assert st[2]["state"] == "drift" and st[2]["applied_checksum"] != st[2]["checksum"]
    assert st[1]["state"] == "applied" and st[1]["down"] is True
    # migrate (up) and migrate down refuse to run on drift.
    assert "was changed after it was applied" in one_line(db.ctl("migrate", sql_dir=sql), 1)
    line = one_line(db.ctl("migrate", "down", "--to", "0", "--force", sql_dir=sql), 1)
    assert "was changed after it was applied" in line
    assert db.version() == NEWEST
    # The original file again: no drift.
    assert db.ctl("migrate", "status").returncode == 0


def test_missing_migration_file_is_shown(db):
    db.ok("migrate")
    old = copy_sql(db, keep=NEWEST - 1)
    r = db.ctl("migrate", "status", sql_dir=old)
    one_line(r, 1)
    assert re.search(r"^%04d\s+\S+\s+missing\s" % NEWEST, r.stdout, re.M), r.stdout
    st = json.loads(db.ctl("--json", "migrate", "status", sql_dir=old).stdout)
    assert st[-1]["version"] == NEWEST and st[-1]["state"] == "missing"
    line = one_line(db.ctl("migrate", "down", "--to", "0", sql_dir=old), 1)
    assert "no file" in line
    assert db.version() == NEWEST
