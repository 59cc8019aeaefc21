"""gmcpctl, directive validation (apachectl -t), and a missing, old or dead database."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from harness import ROOT, configtest_conf, httpd_env

BUILD = os.environ.get("GMCP_BUILD", "build")
BUILD = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
GMCPCTL = os.path.join(BUILD, "gmcpctl")
SQL = os.path.join(ROOT, "sql")
HTTPD = shutil.which("apache2") or "/usr/sbin/apache2"



def up_migrations(d):
    """The up scripts of a migrations directory (NNNN_name.down.sql undo them)."""
    return sorted(f for f in os.listdir(d) if f.endswith(".sql") and not f.endswith(".down.sql"))

def ctl(*args, env=None):
    return subprocess.run([GMCPCTL] + list(args), capture_output=True, text=True, env=env)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="gmcp-t-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_help_and_version():
    r = ctl("--help")
    assert r.returncode == 0 and "migrate status" in r.stdout and r.stderr == ""
    r = ctl("--version")
    assert r.returncode == 0 and re.match(r"gmcpctl \d+\.\d+\.\d+ \(schema version \d+\)", r.stdout)


def test_usage_errors():
    r = ctl()
    assert r.returncode == 2 and "Usage" in r.stderr
    r = ctl("--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = ctl("frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = ctl("migrate")
    assert r.returncode == 2 and "no database" in r.stderr


def test_operation_errors(tmp):
    r = ctl("-d", "mysql", "-p", "x", "migrate")
    assert r.returncode == 1 and "unsupported driver" in r.stderr
    r = ctl("-d", "sqlite3", "-p", os.path.join(tmp, "typo.db"), "-s", SQL, "migrate", "status")
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert not os.path.exists(os.path.join(tmp, "typo.db"))
    r = ctl("-d", "pgsql", "-p", "host=127.0.0.1 port=1 user=nobody connect_timeout=2",
            "-s", SQL, "migrate")
    assert r.returncode == 1 and "cannot open the database" in r.stderr
    r = ctl("-f", os.path.join(tmp, "missing.conf"), "migrate")
    assert r.returncode == 1 and "cannot read httpd configuration" in r.stderr


def test_migrate_is_quiet_idempotent_and_reports(tmp):
    db = os.path.join(tmp, "g.db")
    args = ["-d", "sqlite3", "-p", db, "-s", SQL]
    r = ctl(*args, "migrate")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    r = ctl(*args, "migrate")
    assert r.returncode == 0 and r.stdout == ""
    r = ctl(*args, "-v", "migrate")
    assert r.returncode == 0 and "schema is at version" in r.stdout
    r = ctl(*args, "migrate", "status")
    assert r.returncode == 0 and re.search(r"0001\s+0001_\w+\s+applied", r.stdout)
    r = ctl(*args, "--json", "migrate", "status")
    import json
    rows = json.loads(r.stdout)
    assert rows[0]["version"] == 1 and rows[0]["state"] == "applied" and rows[0]["applied_at"] > 0
    out = subprocess.run(["sqlite3", db, "PRAGMA journal_mode"], capture_output=True, text=True)
    assert out.stdout.strip() == "wal"


def test_modified_migration_is_refused(tmp):
    sql = os.path.join(tmp, "sql")
    shutil.copytree(SQL, sql)
    db = os.path.join(tmp, "g.db")
    assert ctl("-d", "sqlite3", "-p", db, "-s", sql, "migrate").returncode == 0
    first = up_migrations(os.path.join(sql, "sqlite"))[0]
    with open(os.path.join(sql, "sqlite", first), "a") as f:
        f.write("\n-- edited\n")
    r = ctl("-d", "sqlite3", "-p", db, "-s", sql, "migrate")
    assert r.returncode == 1 and "was changed after it was applied" in r.stderr
    r = ctl("-d", "sqlite3", "-p", db, "-s", sql, "migrate", "status")
    assert "modified" in r.stdout


def test_pending_migrations_apply_in_order(tmp, pg_dsn):
    """A new migration file is applied on the next run, on both drivers."""
    sql = os.path.join(tmp, "sql")
    shutil.copytree(SQL, sql)
    n = len(up_migrations(os.path.join(sql, "sqlite")))
    for d in ("sqlite", "pgsql"):
        with open(os.path.join(sql, d, f"{n + 1:04d}_extra.sql"), "w") as f:
            f.write("-- test\nCREATE TABLE extra_t (a TEXT);\nINSERT INTO extra_t VALUES ('x;y');\n")
    db = os.path.join(tmp, "g.db")
    assert ctl("-d", "sqlite3", "-p", db, "-s", SQL, "migrate").returncode == 0
    r = ctl("-d", "sqlite3", "-p", db, "-s", sql, "-v", "migrate")
    assert r.returncode == 0 and f"applied {n + 1:04d}_extra" in r.stdout
    out = subprocess.run(["sqlite3", db, "SELECT a FROM extra_t"], capture_output=True, text=True)
    assert out.stdout.strip() == "x;y"
    # Same on PostgreSQL, in a database of its own.
    import secrets
    name = "gmcp_mig_" + secrets.token_hex(4)
    subprocess.run(["psql", "-X", "-q", pg_dsn + " dbname=postgres", "-c",
                    f'CREATE DATABASE "{name}"'], check=True)
    try:
        dsn = pg_dsn + f" dbname={name}"
        assert ctl("-d", "pgsql", "-p", dsn, "-s", sql, "migrate").returncode == 0
        r = ctl("-d", "pgsql", "-p", dsn, "-s", sql, "--json", "migrate", "status")
        assert r.returncode == 0 and r.stdout.count('"applied"') == n + 1
    finally:
        subprocess.run(["psql", "-X", "-q", pg_dsn + " dbname=postgres", "-c",
                        f'DROP DATABASE "{name}"'], check=True)


def test_reads_dbd_settings_through_includes(tmp):
    os.makedirs(os.path.join(tmp, "conf.d"))
    db = os.path.join(tmp, "inc.db")
    with open(os.path.join(tmp, "main.conf"), "w") as f:
        f.write(f'ServerRoot "{tmp}"\n# DBDParams /wrong.db\nIncludeOptional conf.d/*.conf\n')
    with open(os.path.join(tmp, "conf.d", "db.conf"), "w") as f:
        f.write(f'<IfModule dbd_module>\n  DBDriver sqlite3\n  DBDParams \\\n    "{db}"\n'
                "</IfModule>\n")
    r = ctl("-f", os.path.join(tmp, "main.conf"), "-s", SQL, "migrate")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(db)
    with open(os.path.join(tmp, "nodb.conf"), "w") as f:
        f.write("ServerName x\n")
    r = ctl("-f", os.path.join(tmp, "nodb.conf"), "migrate")
    assert r.returncode == 1 and "no DBDriver and DBDParams" in r.stderr


def test_a_directive_given_twice_takes_its_last_value(tmp):
    """As httpd: a later Include overrides an earlier value of the main server; a value
    inside <VirtualHost> counts only when the main server has none."""
    a, b, c = (os.path.join(tmp, n) for n in ("a.db", "b.db", "c.db"))
    with open(os.path.join(tmp, "over.conf"), "w") as f:
        f.write(f'DBDParams "{b}"\n')
    with open(os.path.join(tmp, "twice.conf"), "w") as f:
        f.write(f'ServerRoot "{tmp}"\nDBDriver sqlite3\nDBDParams "{a}"\nInclude over.conf\n'
                f'<VirtualHost 127.0.0.1:8080>\n  DBDParams "{c}"\n</VirtualHost>\n')
    r = ctl("-f", os.path.join(tmp, "twice.conf"), "-s", SQL, "migrate")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(b) and not os.path.exists(a) and not os.path.exists(c)
    with open(os.path.join(tmp, "vhost.conf"), "w") as f:
        f.write(f'DBDriver sqlite3\n<VirtualHost *:80>\n  DBDParams "{c}"\n</VirtualHost>\n'
                f'<VirtualHost *:81>\n  DBDParams "{a}"\n</VirtualHost>\n')
    r = ctl("-f", os.path.join(tmp, "vhost.conf"), "-s", SQL, "migrate")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(c) and not os.path.exists(a)


@pytest.mark.parametrize("line,name", [
    ("GeminiMCPMaxBodySize 12x", "GeminiMCPMaxBodySize"),
    ("GeminiMCPMaxBodySize 10", "GeminiMCPMaxBodySize"),
    ("GeminiMCPPageSize 0", "GeminiMCPPageSize"),
    ("GeminiMCPAllowedOrigins not-an-origin", "GeminiMCPAllowedOrigins"),
    ("GeminiMCPAllowedOrigins https://x.example/path", "GeminiMCPAllowedOrigins"),
    ("GeminiMCPAllowedHosts bad!host", "GeminiMCPAllowedHosts"),
    ("GeminiMCPClientRequestTimeout 0", "GeminiMCPClientRequestTimeout"),
    ("GeminiMCPSSERetry soon", "GeminiMCPSSERetry"),
    ("GeminiMCPSessionIdleTimeout -5", "GeminiMCPSessionIdleTimeout"),
    ("GeminiMCPEventRetention 1e3", "GeminiMCPEventRetention"),
    ("GeminiMCPDefaultPrincipal \"\"", "GeminiMCPDefaultPrincipal"),
    ("GeminiMCPStateSecret s3cr3t-in-the-config", "GeminiMCPStateSecret"),
    ("GeminiMCPGeminiKey AIzaSy-in-the-config", "GeminiMCPGeminiKey"),
    ("GeminiMCPGeminiBaseURL ftp://example.com", "GeminiMCPGeminiBaseURL"),
    ("GeminiMCPGeminiModel ../etc/passwd", "GeminiMCPGeminiModel"),
    ("GeminiMCPGeminiTimeout 0", "GeminiMCPGeminiTimeout"),
    ("GeminiMCPGeminiConnectTimeout soon", "GeminiMCPGeminiConnectTimeout"),
    ("GeminiMCPGeminiRetries 99", "GeminiMCPGeminiRetries"),
    ("GeminiMCPToolTimeout -1", "GeminiMCPToolTimeout"),
    ("GeminiMCPChatIdleTimeout 0", "GeminiMCPChatIdleTimeout"),
    ("GeminiMCPBreakerThreshold 0", "GeminiMCPBreakerThreshold"),
    ("GeminiMCPBreakerCooldown forever", "GeminiMCPBreakerCooldown"),
    ("GeminiMCPUploadDurability sometimes", "GeminiMCPUploadDurability"),
    ("GeminiMCPUploadDurability synced 64M", "GeminiMCPUploadDurability"),
    ("GeminiMCPUploadDurability interval 1M", "GeminiMCPUploadDurability"),
    ("GeminiMCPUploadDurability interval 64M 0", "GeminiMCPUploadDurability"),
    ("GeminiMCPUploadDurability interval 64M 61", "GeminiMCPUploadDurability"),
])
def test_configtest_rejects_bad_values(tmp, line, name):
    conf = configtest_conf(tmp, BUILD, line)
    env = httpd_env(BUILD, tmp)
    r = subprocess.run([HTTPD, "-t", "-f", conf], capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert name in r.stderr, r.stderr
    # The same file with the line removed is valid.
    with open(conf) as f:
        good = f.read().replace(line, "")
    with open(conf, "w") as f:
        f.write(good)
    r = subprocess.run([HTTPD, "-t", "-f", conf], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert not [f for f in os.listdir(tmp) if f.startswith(("asan", "ubsan"))]


@pytest.mark.parametrize("db", ["sqlite", "pgsql"])
@pytest.mark.expect_log(r"refusing to serve: database schema is at version 0, this build needs \d+: "
                        r"run 'gmcpctl migrate'",
                        r"DBD: failed to prepare SQL statements")
def test_unmigrated_database_is_refused_then_served(start, db):
    s = start(db, "--fixtures", "--no-migrate")
    r = s.post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 503 and r.headers["Retry-After"]
    err = r.json()["error"]
    assert err["code"] == -32603 and "schema" in err["message"]
    log = open(s.info["error_log"]).read()
    assert "refusing to serve: database schema is at version 0" in log
    # After the admin migrates, the same server serves without a restart.
    s.gmcpctl_run("migrate")
    if db == "sqlite":
        from harness import chown_tree
        chown_tree(s.info["data_dir"], "www-data")
    sid = s.initialize()
    assert s.ping_ok(sid)


@pytest.mark.expect_log(r"no database connection", r"Failed to acquire DBD connection",
                        r"could not connect|Connection refused|connection to server")
def test_dead_database_answers_503(start, pg_dsn):
    """PostgreSQL unreachable: every request gets a clean 503, the server stays up."""
    s = start("pgsql", "--fixtures")
    sid = s.initialize()
    conf = open(s.info["conf"]).read()
    # Point the same server at a port where nothing listens and restart it gracefully.
    bad = re.sub(r'DBDParams "[^"]*"', 'DBDParams "host=127.0.0.1 port=1 user=x '
                 'connect_timeout=1"', conf)
    with open(s.info["conf"], "w") as f:
        f.write(bad)
    s.graceful_restart()
    for _ in range(3):
        r = s.rpc(sid, "ping")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == -32603
    r = s.post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 503


# ---- usage errors, dates, durations, --format, one-line failures ---------------------

PEPPER_ENV = "GMCP_T_PEPPER"


@pytest.fixture
def keydb(tmp):
    """A migrated SQLite database and the flags (with a pepper) that reach it."""
    db = os.path.join(tmp, "k.db")
    assert ctl("-d", "sqlite3", "-p", db, "-s", SQL, "migrate").returncode == 0
    env = dict(os.environ, **{PEPPER_ENV: "0123456789abcdef-pepper"})
    args = ["-d", "sqlite3", "-p", db, "-s", SQL, "-k", "env:" + PEPPER_ENV]
    return args, env


def one_usage_line(r):
    lines = r.stderr.splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("gmcpctl: ") and lines[0].endswith("(see gmcpctl --help)"), lines
    assert r.stdout == ""
    return lines[0]


def key_count(keydb):
    args, env = keydb
    return len(json.loads(ctl(*args, "--json", "keys", "list", env=env).stdout))


@pytest.mark.parametrize("argv,says", [
    (["--bogus", "migrate"], "unknown option '--bogus'"),
    (["-x"], "unknown option '-x'"),
    (["keys", "create", "--name"], "'--name' needs a value"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["keys"], "'keys' needs a subcommand"),
    (["keys", "frob"], "unknown command 'keys frob'"),
    (["keys", "list", "extra"], "'keys list' takes no argument"),
    (["keys", "show"], "'keys show' needs an ID"),
    (["keys", "show", "a", "b"], "too many arguments for 'keys show'"),
    (["usage", "now"], "'usage' takes no argument"),
    (["migrate", "now"], "unknown command 'migrate now'"),
    (["migrate", "status", "x"], "'migrate status' takes no argument"),
    (["uploads", "frob"], "unknown command 'uploads frob'"),
    (["sessions", "export"], "'sessions export' needs an ID"),
    (["keys", "create", "--grace", "1h", "--name", "x"], "--grace does not apply to 'keys create'"),
    (["audit", "--key", "abc"], "--key does not apply to 'audit'"),
    (["migrate", "--dry-run"], "--dry-run does not apply to 'migrate'"),
])
def test_usage_errors_are_one_line(keydb, argv, says):
    args, env = keydb
    line = one_usage_line(ctl(*args, *argv, env=env))
    assert says in line, line


def test_no_database_is_a_one_line_usage_error():
    assert "no database" in one_usage_line(ctl("keys", "list"))


def test_no_command_prints_the_help_on_stderr():
    r = ctl("-v")
    assert r.returncode == 2 and r.stdout == "" and "Usage: gmcpctl" in r.stderr


@pytest.mark.parametrize("date,says", [
    ("2026-02-30", "has no day 30"), ("2027-02-30", "has no day 30"),
    ("2026-13-01", "no month 13"), ("2026-00-10", "no month 00"),
    ("2025-02-29", "has no day 29"), ("2027-02-29", "has no day 29"),
    ("2027-04-31", "has no day 31"), ("2027-01-00", "has no day 00"),
    ("2027-06-01T24:00Z", "no hour 24"), ("2027-06-01T12:60", "no minute 60"),
    ("2027-06-01T12:30:61Z", "no second 61"), ("2027-06-01x", "not a date"),
    ("2027/06/01", "not a date"), ("1969-12-31", "year 1969"),
])
@pytest.mark.parametrize("where", ["keys create", "keys update", "usage", "audit"])
def test_impossible_dates_are_usage_errors(keydb, date, says, where):
    args, env = keydb
    if where == "usage" or where == "audit":
        argv = [where, "--since", date]
        name = "--since"
    elif where == "keys create":
        argv = ["keys", "create", "--name", "x", "--expires", date]
        name = "--expires"
    else:
        kid = json.loads(ctl(*args, "--json", "keys", "create", "--name", "u", env=env).stdout)["id"]
        argv = ["keys", "update", kid, "--expires", date]
        name = "--expires"
    before = key_count(keydb)
    line = one_usage_line(ctl(*args, *argv, env=env))
    assert f"{name} '{date}'" in line and says in line, line
    assert key_count(keydb) == before
    if where == "keys update":
        shown = json.loads(ctl(*args, "--json", "keys", "show", kid, env=env).stdout)
        assert not shown.get("expires")


def test_leap_day_in_a_leap_year_is_accepted(keydb):
    args, env = keydb
    r = ctl(*args, "--json", "keys", "create", "--name", "leap", "--expires", "2028-02-29", env=env)
    assert r.returncode == 0, r.stderr
    k = json.loads(r.stdout)
    assert k["expires"] == "Tue, 29 Feb 2028 00:00:00 GMT", k
    r = ctl(*args, "keys", "update", k["id"], "--expires", "2032-02-29T23:59:59Z", env=env)
    assert r.returncode == 0, r.stderr
    r = ctl(*args, "audit", "--since", "2028-02-29", env=env)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("argv,says", [
    (["--grace", "-1h"], "negative"),
    (["--grace", "99999999999999999d"], "more than 100 years"),
    (["--grace", "99999999999999999999999999"], "more than 100 years"),
    (["--grace", "36600d"], "more than 100 years"),
    (["--grace", "5w"], "unknown unit"),
    (["--grace", "1.5h"], "not a whole number"),
    (["--grace", "h"], "no number"),
    (["--grace", ""], "empty"),
])
def test_absurd_grace_is_a_usage_error(keydb, argv, says):
    args, env = keydb
    kid = json.loads(ctl(*args, "--json", "keys", "create", "--name", "g", env=env).stdout)["id"]
    line = one_usage_line(ctl(*args, "keys", "rotate", kid, *argv, env=env))
    assert says in line, line


@pytest.mark.parametrize("argv,says", [
    (["usage", "--since", "0h"], "zero"),
    (["audit", "--since", "-0d"], "zero"),
    (["usage", "--since", "99999999999999999d"], "more than 100 years"),
    (["audit", "--since", "36600d"], "more than 100 years"),
    (["audit", "--since", "+1h"], "in the future"),
    (["audit", "--since", "7y"], "unknown unit"),
    (["keys", "create", "--name", "x", "--expires", "+0d"], "zero"),
    (["keys", "create", "--name", "x", "--expires", "+99999999999999999d"], "more than 100 years"),
    (["keys", "create", "--name", "x", "--expires", "+36600d"], "more than 100 years"),
    (["keys", "create", "--name", "x", "--expires", "-1h"], "in the past"),
    (["keys", "create", "--name", "x", "--expires", "2020-01-01"], "in the past"),
    (["keys", "create", "--name", "x", "--expires", "9999-01-01"], "more than 100 years"),
    (["keys", "create", "--name", "x", "--rate", "2000000/s"], "more than 1000000"),
    (["keys", "create", "--name", "x", "--token-rate", "9999999999999/m"], "more than 10^12"),
    (["keys", "create", "--name", "x", "--token-quota", "9999999999999/day"], "more than 10^12"),
])
def test_absurd_durations_and_rates_are_usage_errors(keydb, argv, says):
    args, env = keydb
    line = one_usage_line(ctl(*args, *argv, env=env))
    assert says in line, line
    assert key_count(keydb) == 0


def test_sane_durations_still_work(keydb):
    args, env = keydb
    k = json.loads(ctl(*args, "--json", "keys", "create", "--name", "ok", "--expires", "+36500d",
                       "--rate", "1000000/s", env=env).stdout)
    for g in ("0", "90", "30m", "24h", "36500d"):
        r = ctl(*args, "--json", "keys", "rotate", k["id"], "--grace", g, env=env)
        assert r.returncode == 0, r.stderr
    for s in ("24h", "-7d", "2026-01-01T00:00:00Z", "2999-01-01"):
        assert ctl(*args, "audit", "--since", s, env=env).returncode == 0


@pytest.mark.parametrize("argv,says", [
    (["sessions", "export", "chat_x", "--format", "pdf"], "--format 'pdf'"),
    (["sessions", "export", "chat_x", "-F", "JSON"], "--format 'JSON'"),
    (["keys", "list", "--format", "json"], "--format does not apply to 'keys list'"),
    (["migrate", "status", "--format", "text"], "--format does not apply"),
    (["sessions", "list", "--format", "markdown"], "--format does not apply"),
    (["audit", "-F", "nonsense"], "--format does not apply"),
])
def test_format_errors(keydb, argv, says):
    args, env = keydb
    line = one_usage_line(ctl(*args, *argv, env=env))
    assert says in line, line


PG_DEAD = "host=127.0.0.1 port=1 user=nobody password=hunter2 connect_timeout=2"


@pytest.mark.parametrize("params", [
    PG_DEAD,
    "hostaddr=hunter2 port=1 user=nobody password=hunter2 connect_timeout=2",
    "postgresql://nobody:hunter2@127.0.0.1:1/gmcp?connect_timeout=2",
])
@pytest.mark.parametrize("argv", [["migrate"], ["migrate", "status"], ["keys", "list"],
                                  ["cleanup"], ["-v", "audit"]])
def test_unreachable_postgresql_is_one_line_without_password(params, argv):
    r = ctl("-d", "pgsql", "-p", params, "-s", SQL, *argv)
    lines = r.stderr.splitlines()
    assert r.returncode == 1, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("gmcpctl: cannot open the database: "), lines
    assert "hunter2" not in r.stderr and "hunter2" not in r.stdout
    assert "\t" not in lines[0]


def test_sqlite_in_a_missing_directory_is_one_line(tmp):
    path = os.path.join(tmp, "no", "such", "dir", "g.db")
    r = ctl("-d", "sqlite3", "-p", path, "-s", SQL, "migrate")
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("gmcpctl: cannot open the database: ") and path in lines[0]
    for argv in (["keys", "list"], ["migrate", "status"], ["cleanup"]):
        r = ctl("-d", "sqlite3", "-p", path, "-s", SQL, *argv)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert path in r.stderr
