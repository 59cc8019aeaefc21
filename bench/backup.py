#!/usr/bin/python3
"""gmcpctl backup against the native tools, and what a backup costs the requests served.

  bench/backup.py [--db sqlite,pgsql] [--usage-rows N] [--messages N] [--rounds R]
                  [--load-seconds S] [--connections C] [--build DIR] [--pg-dsn DSN]

Per driver, in one run on the same data:

1. a freshly migrated database is seeded with SQL (INSERT ... SELECT from a recursive
   CTE on SQLite, generate_series on PostgreSQL): N usage_hourly rows (1,000 keys x
   N/1,000 hours, distinct (key, hour)), the 1,000 api_keys, chat_sessions with 100
   chat_messages each, 10,000 audit_log rows;
2. R rounds, interleaved, of `gmcpctl backup --output FILE` against the native tools
   (SQLite: `sqlite3 DB ".backup FILE"` and `VACUUM INTO`; PostgreSQL: `pg_dump -Fc`, also
   `-Fc -Z0`, from the server's own install), then `gmcpctl backup verify` and `restore`
   into a fresh database (`pg_restore` beside it); medians, with the child's user and
   system CPU time (PostgreSQL's server-side CPU is not in it);
3. httpd through test/start-server on that database, wrk (bench/mcp.lua, --latency)
   driving `tools/list` on one MCP session (a session lookup in SQL per request) for S
   seconds without a backup, S seconds while gmcpctl backups run back to back, and S
   seconds without again; p99 with / p99 without.

PostgreSQL: --pg-dsn names a server to use (a database gmcp_bbench_<pid> is created in
it and dropped), else a throwaway cluster is started on a free loopback port
(test/harness.py PgCluster: fsync off). Writes bench/results/backup.json and prints
Markdown tables. Targets (issue 12): gmcpctl within 1.5x of the native tool's time, p99
during backups within 2x of p99 without.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test"))
from harness import PgCluster, as_root, chown_tree, dsn_with_db, pg_bin, psql  # noqa: E402

SQL_DIR = os.path.join(ROOT, "sql")
RUN_USER = "www-data"
KEYS = 1000
PER_SESSION = 100
AUDIT = 10000
# ~600 characters; each message takes a 50-449 character slice of it.
LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
         "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute "
         "irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla "
         "pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
         "deserunt mollit anim id est laborum. \"Quoted\" text, a tab\tand unicode: caf\u00e9 "
         "\u2014 na\u00efve \u00fcber \u65e5\u672c\u8a9e. Sed ut perspiciatis unde omnis iste "
         "natus error sit voluptatem accusantium doloremque laudantium, totam rem aperiam.")


def sqlite_seed_sql(usage_rows, messages):
    hours = usage_rows // KEYS
    sessions = messages // PER_SESSION
    lorem = LOREM.replace("'", "''")
    return f"""
PRAGMA synchronous=OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {KEYS - 1})
INSERT INTO api_keys (id, name, tenant, scopes, secret_hash, created, updated)
SELECT printf('%016x', i), 'bench-' || i, 'tenant-' || (i % 20), '*',
       lower(hex(randomblob(32))), 1764000000, 1764000000 FROM n;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {usage_rows - 1})
INSERT INTO usage_hourly (key_id, hour, requests, errors, rejected, prompt_tokens,
                          output_tokens, bytes_in, bytes_out)
SELECT printf('%016x', i / {hours}), 1700000000 + (i % {hours}) * 3600, (i * 7) % 1000,
       i % 5, i % 3, (i * 13) % 100000, (i * 17) % 100000, (i * 31) % 1000000,
       (i * 37) % 10000000 FROM n;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {sessions - 1})
INSERT INTO chat_sessions (id, owner, title, model, system_instruction, created, last_used,
                           message_count, prompt_tokens, output_tokens)
SELECT printf('cs%014x', i), 'user' || (i % 50), 'Session ' || i, 'gemini-2.5-flash',
       'You are a helpful assistant.', 1764000000 + i, 1764100000 + i, {PER_SESSION},
       i * 10, i * 20 FROM n;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {messages - 1}),
     m(i, t) AS (SELECT i, substr('{lorem}', 1 + i % 97, 50 + i % 400) FROM n)
INSERT INTO chat_messages (session_id, seq, role, parts, text, prompt_tokens, output_tokens,
                           finish_reason, model_version, created)
SELECT printf('cs%014x', i / {PER_SESSION}), i % {PER_SESSION},
       CASE i % 2 WHEN 0 THEN 'user' ELSE 'model' END,
       '[{{"text":' || json_quote(t) || '}}]', t, i % 300, i % 700,
       CASE i % 2 WHEN 0 THEN '' ELSE 'STOP' END,
       CASE i % 2 WHEN 0 THEN '' ELSE 'gemini-2.5-flash-001' END, 1764000000 + i FROM m;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {AUDIT - 1})
INSERT INTO audit_log (at, actor, action, key_id, detail)
SELECT 1764000000 + i, 'admin', 'key.update', printf('%016x', i % {KEYS}),
       '{{"rate":"' || i || '/s"}}' FROM n;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
"""


def pg_seed_sql(usage_rows, messages):
    hours = usage_rows // KEYS
    sessions = messages // PER_SESSION
    lorem = LOREM.replace("'", "''")
    return f"""
SET synchronous_commit = off;
BEGIN;
INSERT INTO api_keys (id, name, tenant, scopes, secret_hash, created, updated)
SELECT lpad(to_hex(i), 16, '0'), 'bench-' || i, 'tenant-' || (i % 20), '*',
       md5(i::text) || md5((i + 1)::text), 1764000000, 1764000000
FROM generate_series(0::bigint, {KEYS - 1}) i;
INSERT INTO usage_hourly (key_id, hour, requests, errors, rejected, prompt_tokens,
                          output_tokens, bytes_in, bytes_out)
SELECT lpad(to_hex(i / {hours}), 16, '0'), 1700000000 + (i % {hours}) * 3600, (i * 7) % 1000,
       i % 5, i % 3, (i * 13) % 100000, (i * 17) % 100000, (i * 31) % 1000000,
       (i * 37) % 10000000 FROM generate_series(0::bigint, {usage_rows - 1}) i;
INSERT INTO chat_sessions (id, owner, title, model, system_instruction, created, last_used,
                           message_count, prompt_tokens, output_tokens)
SELECT 'cs' || lpad(to_hex(i), 14, '0'), 'user' || (i % 50), 'Session ' || i,
       'gemini-2.5-flash', 'You are a helpful assistant.', 1764000000 + i, 1764100000 + i,
       {PER_SESSION}, i * 10, i * 20 FROM generate_series(0::bigint, {sessions - 1}) i;
INSERT INTO chat_messages (session_id, seq, role, parts, text, prompt_tokens, output_tokens,
                           finish_reason, model_version, created)
SELECT 'cs' || lpad(to_hex(i / {PER_SESSION}), 14, '0'), i % {PER_SESSION},
       CASE i % 2 WHEN 0 THEN 'user' ELSE 'model' END,
       '[{{"text":' || to_json(t)::text || '}}]', t, i % 300, i % 700,
       CASE i % 2 WHEN 0 THEN '' ELSE 'STOP' END,
       CASE i % 2 WHEN 0 THEN '' ELSE 'gemini-2.5-flash-001' END, 1764000000 + i
FROM (SELECT i, substr('{lorem}', (1 + i % 97)::int, (50 + i % 400)::int) AS t
      FROM generate_series(0::bigint, {messages - 1}) i) m;
INSERT INTO audit_log (at, actor, action, key_id, detail)
SELECT 1764000000 + i, 'admin', 'key.update', lpad(to_hex(i % {KEYS}), 16, '0'),
       '{{"rate":"' || i || '/s"}}' FROM generate_series(0::bigint, {AUDIT - 1}) i;
COMMIT;
VACUUM ANALYZE;
CHECKPOINT;
"""


def timed(argv, env=None, stdin=None):
    """Run argv; return (wall s, user s, sys s) of it and its children; fail loudly."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdin=stdin, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, err = p.communicate()
    # communicate() reaped it; its rusage is in RUSAGE_CHILDREN. Take it as the delta.
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{argv}: exit {p.returncode}: {err.decode(errors='replace')}")
    return wall, out


class Cpu:
    """User + system CPU of reaped children, as a delta around one command."""

    def __enter__(self):
        import resource
        self.r = resource
        self.a = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc):
        b = self.r.getrusage(self.r.RUSAGE_CHILDREN)
        self.user = b.ru_utime - self.a.ru_utime
        self.sys = b.ru_stime - self.a.ru_stime
        self.maxrss_mb = b.ru_maxrss / 1024   # max over all children so far


def measure(argv, env=None):
    # Every tool starts with no dirty pages left by the one before: otherwise the
    # previous output's writeback throttles the next tool's writes and its fsync.
    os.sync()
    time.sleep(0.3)                              # and the disk's queue has settled
    with Cpu() as c:
        wall, out = timed(argv, env)
    r = {"wall": wall, "user": c.user, "sys": c.sys}
    if "--json" in argv:                         # gmcpctl backup: how many threads it took
        r["threads"] = json.loads(out)["threads"]
    return r


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def size_of(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def med(samples, key="wall"):
    return statistics.median(s[key] for s in samples)


# --- wrk ------------------------------------------------------------------------------

def post(url, body, session=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json, text/event-stream"})
    if session:
        req.add_header("Mcp-Session-Id", session)
        req.add_header("MCP-Protocol-Version", "2025-11-25")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("Mcp-Session-Id"), r.read()


def open_session(url):
    sid, _ = post(url, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                   "clientInfo": {"name": "bench", "version": "1"}}})
    post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    return sid


def to_ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, sid, conns, seconds, delay_ms=0):
    env = dict(os.environ, MCP_BODY=json.dumps({"jsonrpc": "2.0", "id": 1,
                                                "method": "tools/list"}),
               MCP_HEADERS=f"Mcp-Session-Id: {sid}\nMCP-Protocol-Version: 2025-11-25",
               MCP_DELAY_MS=str(delay_ms))
    out = subprocess.run(["wrk", "--latency", "-t", str(min(2, conns)), "-c", str(conns),
                          "-d", f"{seconds}s", "--timeout", "5s",
                          "-s", os.path.join(HERE, "mcp.lua"), url],
                         env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not line:
        raise RuntimeError(out.stdout + out.stderr)
    r = json.loads(line[-1])
    # wrk --latency's distribution; the same figure as the Lua percentile(99)
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out.stdout, re.M)
    if m:
        r["p99_ms"] = to_ms(m.group(1), m.group(2))
    m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out.stdout, re.M)
    if m:
        r["p50_ms"] = to_ms(m.group(1), m.group(2))
    return r


def start_server(build, extra):
    argv = [os.path.join(ROOT, "test", "start-server"), "--log-level", "warn",
            "--threads", "64", "--conf", "MaxKeepAliveRequests 0"] + extra
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, GMCP_BUILD=build))
    line = p.stdout.readline()
    if not line:
        p.wait()
        raise RuntimeError("start-server failed")
    return p, json.loads(line)


def stop_server(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def load_phase(info, backup_cmd, out_dir, conns, seconds, delay_ms=0):
    """p99 without, with back-to-back backups, and without again. delay_ms: each
    connection pauses that long between requests (a paced load, below saturation)."""
    url = info["mcp"]
    sid = open_session(url)
    wrk(url, sid, conns, 2, delay_ms)            # warm-up, not reported
    res = {"before": wrk(url, sid, conns, seconds, delay_ms), "delay_ms": delay_ms}
    stop = threading.Event()
    durations, errors, threads = [], [], []

    def loop():
        n = 0
        while not stop.is_set():
            path = os.path.join(out_dir, f"load-{n}.gmcpbak")
            t0 = time.perf_counter()
            r = subprocess.run(backup_cmd(path), capture_output=True, text=True)
            if r.returncode != 0:
                errors.append(r.stderr.strip())
            else:
                durations.append(time.perf_counter() - t0)
                threads.append(json.loads(r.stdout)["threads"])
            rm(path)
            n += 1

    # The load first, then the backups (from 0.5 s on, back to back, to the end of the
    # window): each backup starts on a host already serving it, as a cron job does.
    t = threading.Thread(target=loop)
    starter = threading.Timer(0.5, t.start)
    starter.start()
    try:
        res["during"] = wrk(url, sid, conns, seconds, delay_ms)
    finally:
        stop.set()
        starter.join()
        t.join()
    res["after"] = wrk(url, sid, conns, seconds, delay_ms)
    res["backups"] = {"completed": len(durations), "errors": errors[:3],
                      "two_threads": threads.count(2),
                      "median_s": statistics.median(durations) if durations else None}
    res["ratio"] = res["during"]["p99_ms"] / res["before"]["p99_ms"]
    for k in ("before", "during", "after"):
        if res[k]["non200"] or res[k]["socket_errors"]:
            print(f"bench: {k}: non-200 or socket errors: {res[k]}", file=sys.stderr)
    return res


# --- SQLite ---------------------------------------------------------------------------

def run_sqlite(args, tmp):
    gmcpctl = os.path.join(args.build, "gmcpctl")
    data = os.path.join(tmp, "sqlite-data")
    out = os.path.join(tmp, "sqlite-out")
    os.makedirs(data)
    os.makedirs(out)
    db = os.path.join(data, "gmcp.db")
    ctl = [gmcpctl, "-d", "sqlite3", "-p", db, "-s", SQL_DIR]
    subprocess.run(ctl + ["migrate"], check=True)
    t0 = time.perf_counter()
    subprocess.run(["sqlite3", db], input=sqlite_seed_sql(args.usage_rows, args.messages),
                   text=True, check=True, stdout=subprocess.DEVNULL)
    seed_s = time.perf_counter() - t0
    counts = {t: int(subprocess.run(["sqlite3", db, f"SELECT count(*) FROM {t}"],
                                    capture_output=True, text=True, check=True).stdout)
              for t in ("usage_hourly", "chat_messages", "chat_sessions", "api_keys",
                        "audit_log")}
    r = {"seed_s": seed_s, "rows": counts, "db_bytes": size_of(db)}
    print(f"sqlite: seeded in {seed_s:.1f} s: {counts}, {size_of(db) / 2**20:.0f} MiB",
          flush=True)

    tools = {
        "gmcpctl backup": lambda f: ctl + ["--json", "backup", "--output", f],
        "sqlite3 .backup": lambda f: ["sqlite3", db, f".backup '{f}'"],
        "sqlite3 VACUUM INTO": lambda f: ["sqlite3", db, f"VACUUM INTO '{f}'"],
    }
    samples = {k: [] for k in tools}
    sizes = {}
    subprocess.run(["cat", db], stdout=subprocess.DEVNULL, check=True)   # page cache
    for rnd in range(args.rounds):
        names = list(tools)
        names = names[rnd % len(names):] + names[:rnd % len(names)]   # rotate the order
        for name in names:
            f = os.path.join(out, f"r{rnd}-" + re.sub(r"[^a-z0-9]+", "_", name))
            samples[name].append(measure(tools[name](f)))
            sizes[name] = size_of(f)
            if name == "gmcpctl backup" and rnd == 0:
                archive = f
            else:
                rm(f)
    extra = {"gmcpctl backup verify": [], "gmcpctl restore": [], "sqlite3 .restore": []}
    for rnd in range(args.rounds):
        extra["gmcpctl backup verify"].append(
            measure([gmcpctl, "-s", SQL_DIR, "backup", "verify", archive]))
        target = os.path.join(out, f"restored-{rnd}.db")
        extra["gmcpctl restore"].append(
            measure([gmcpctl, "-d", "sqlite3", "-p", target, "-s", SQL_DIR, "restore",
                     archive]))
        rm(target)
        for sfx in ("-wal", "-shm", ".cleanup-lock"):
            rm(target + sfx)
        target2 = os.path.join(out, f"native-restored-{rnd}.db")
        src = os.path.join(out, "native.db")
        if not os.path.exists(src):
            subprocess.run(["sqlite3", db, f".backup '{src}'"], check=True)
        extra["sqlite3 .restore"].append(measure(["sqlite3", target2, f".restore '{src}'"]))
        rm(target2)
    r.update(samples=samples, extra=extra, sizes=sizes)

    if args.strace:
        f = os.path.join(out, "strace.gmcpbak")
        s = subprocess.run(["strace", "-f", "-c", "-o", os.path.join(out, "strace.txt")]
                           + ctl + ["backup", "--output", f], capture_output=True, text=True)
        rm(f)
        r["strace"] = open(os.path.join(out, "strace.txt")).read()

    if args.load_seconds:
        # The data dir goes to start-server, which chowns it to the httpd user; backups
        # under load run as that user (a WAL database's -shm must stay writable for it).
        rm(archive)
        rm(os.path.join(out, "native.db"))
        srv = None
        try:
            srv, info = start_server(args.build, ["--db", "sqlite", "--data-dir", data])
            chown_tree(out, RUN_USER)
            pre = ["runuser", "-u", RUN_USER, "--"] if as_root() else []
            for key, delay in (("load", 0), ("load_paced", args.paced_delay_ms)):
                r[key] = load_phase(info, lambda f: pre + ctl + ["--json", "backup", "--output", f], out,
                                    args.connections, args.load_seconds, delay)
        finally:
            stop_server(srv)
    return r


# --- PostgreSQL -----------------------------------------------------------------------

def run_pgsql(args, tmp):
    gmcpctl = os.path.join(args.build, "gmcpctl")
    out = os.path.join(tmp, "pg-out")
    os.makedirs(out)
    cluster = None
    dbs = []
    if args.pg_dsn:
        base = args.pg_dsn
    else:
        cluster = PgCluster(tmp)
        base = cluster.dsn
    admin = dsn_with_db(base, "postgres")
    srv = None
    try:
        name = f"gmcp_bbench_{os.getpid()}"
        psql(admin, f'CREATE DATABASE "{name}"')
        dbs.append(name)
        dsn = dsn_with_db(base, name)
        ctl = [gmcpctl, "-d", "pgsql", "-p", dsn, "-s", SQL_DIR]
        subprocess.run(ctl + ["migrate"], check=True)
        t0 = time.perf_counter()
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn],
                       input=pg_seed_sql(args.usage_rows, args.messages), text=True,
                       check=True, stdout=subprocess.DEVNULL)
        seed_s = time.perf_counter() - t0

        def q(sql):
            return subprocess.run(["psql", "-X", "-At", dsn, "-c", sql], capture_output=True,
                                  text=True, check=True).stdout.strip()
        counts = {t: int(q(f"SELECT count(*) FROM {t}"))
                  for t in ("usage_hourly", "chat_messages", "chat_sessions", "api_keys",
                            "audit_log")}
        dbsize = int(q("SELECT pg_database_size(current_database())"))
        r = {"seed_s": seed_s, "rows": counts, "db_bytes": dbsize,
             "server": q("SHOW server_version"), "pg_dump": pg_bin("pg_dump")}
        print(f"pgsql: seeded in {seed_s:.1f} s: {counts}, {dbsize / 2**20:.0f} MiB",
              flush=True)

        tools = {
            "gmcpctl backup": lambda f: ctl + ["--json", "backup", "--output", f],
            "pg_dump -Fc": lambda f: [pg_bin("pg_dump"), "-Fc", "-f", f, dsn],
            "pg_dump -Fc -Z0": lambda f: [pg_bin("pg_dump"), "-Fc", "-Z0", "-f", f, dsn],
        }
        samples = {k: [] for k in tools}
        sizes = {}
        archive = dump = None
        for rnd in range(args.rounds):
            names = list(tools)
            names = names[rnd % len(names):] + names[:rnd % len(names)]
            for tname in names:
                f = os.path.join(out, f"r{rnd}-{tname.replace(' ', '_')}")
                samples[tname].append(measure(tools[tname](f)))
                sizes[tname] = size_of(f)
                if rnd == 0 and tname == "gmcpctl backup":
                    archive = f
                elif rnd == 0 and tname == "pg_dump -Fc":
                    dump = f
                else:
                    rm(f)
        extra = {"gmcpctl backup verify": [], "gmcpctl restore": [], "pg_restore": []}
        for rnd in range(args.rounds):
            extra["gmcpctl backup verify"].append(
                measure([gmcpctl, "-s", SQL_DIR, "backup", "verify", archive]))
            for tname, argv in (("gmcpctl restore", lambda d: [gmcpctl, "-d", "pgsql", "-p", d,
                                                               "-s", SQL_DIR, "restore",
                                                               archive]),
                                ("pg_restore", lambda d: [pg_bin("pg_restore"), "-d", d,
                                                          dump])):
                tgt = f"gmcp_bbench_{os.getpid()}_r"
                psql(admin, f'CREATE DATABASE "{tgt}"')
                dbs.append(tgt)
                extra[tname].append(measure(argv(dsn_with_db(base, tgt))))
                psql(admin, f'DROP DATABASE "{tgt}"')
        r.update(samples=samples, extra=extra, sizes=sizes)
        rm(archive)
        rm(dump)

        if args.strace:
            f = os.path.join(out, "strace.gmcpbak")
            subprocess.run(["strace", "-f", "-c", "-o", os.path.join(out, "strace.txt")]
                           + ctl + ["backup", "--output", f], capture_output=True)
            rm(f)
            r["strace"] = open(os.path.join(out, "strace.txt")).read()

        if args.load_seconds:
            srv, info = start_server(args.build, ["--db", "pgsql", "--pg-dsn", dsn])
            for key, delay in (("load", 0), ("load_paced", args.paced_delay_ms)):
                r[key] = load_phase(info, lambda f: ctl + ["--json", "backup", "--output", f], out,
                                    args.connections, args.load_seconds, delay)
        return r
    finally:
        stop_server(srv)
        for d in dbs:
            try:
                psql(admin, f'DROP DATABASE IF EXISTS "{d}"')
            except Exception:
                pass
        if cluster:
            cluster.stop()


# --- report ---------------------------------------------------------------------------

def report(results, args):
    lines = []
    for drv, r in results.items():
        native = "sqlite3 .backup" if drv == "sqlite" else "pg_dump -Fc"
        rows = r["rows"]
        lines.append(f"\n**{drv}** ({rows['usage_hourly']:,} usage_hourly, "
                     f"{rows['chat_messages']:,} chat_messages, {rows['chat_sessions']:,} "
                     f"chat_sessions, {rows['api_keys']:,} api_keys, {rows['audit_log']:,} "
                     f"audit_log rows; database {r['db_bytes'] / 2**20:.0f} MiB; seeded in "
                     f"{r['seed_s']:.1f} s)\n")
        lines.append(f"| {drv}: median of {args.rounds} | wall s | user s | sys s | output MiB "
                     f"| vs {native} |")
        lines.append("|---|---|---|---|---|---|")
        base = med(r["samples"][native])
        for name, s in list(r["samples"].items()) + list(r["extra"].items()):
            size = r["sizes"].get(name)
            lines.append(f"| {name} | {med(s):.2f} | {med(s, 'user'):.2f} | "
                         f"{med(s, 'sys'):.2f} | "
                         f"{'' if size is None else f'{size / 2**20:.0f}'} | "
                         f"{med(s) / base:.2f}x |")
        g = med(r["samples"]["gmcpctl backup"])
        th = [x.get("threads") for x in r["samples"]["gmcpctl backup"]]
        lines.append(f"\ngmcpctl backup threads per round: {th}")
        # The target is judged against the native tool that copies rows as gmcpctl does
        # (VACUUM INTO: a logical copy; .backup copies pages and is shown beside it).
        judge = "sqlite3 VACUUM INTO" if drv == "sqlite" else native
        for name in dict.fromkeys((judge, native)):
            ratio = g / med(r["samples"][name])
            verdict = ("met" if ratio <= 1.5 else "MISSED") if name == judge else "not the target"
            lines.append(f"\ngmcpctl backup / {name}: {ratio:.2f}x (target <= 1.5x: {verdict})")
        for key, what in (("load", "saturating"), ("load_paced", "paced")):
            if key not in r:
                continue
            L = r[key]
            pace = (f", each pausing {L['delay_ms']} ms between requests"
                    if L.get("delay_ms") else "")
            lines.append(f"\n| {drv}: tools/list, {what}: {args.connections} conns{pace}, "
                         f"{args.load_seconds} s | req/s | p50 ms | p99 ms | non-200 |")
            lines.append("|---|---|---|---|---|")
            for k, label in (("before", "no backup"), ("during", "backups back to back"),
                             ("after", "no backup, after")):
                w = L[k]
                lines.append(f"| {label} | {w['rps']:.0f} | {w['p50_ms']:.2f} | "
                             f"{w['p99_ms']:.2f} | {w['non200'] + w['socket_errors']} |")
            b = L["backups"]
            ms = f"{b['median_s']:.1f} s each" if b["median_s"] else "none finished"
            lines.append(f"\np99 during / before ({what}): {L['ratio']:.2f}x (target <= 2x: "
                         f"{'met' if L['ratio'] <= 2 else 'MISSED'}); {b['completed']} backups "
                         f"completed during the window ({ms}; "
                         f"{b.get('two_threads', '?')} on two threads)"
                         + (f"; errors: {b['errors']}" if b["errors"] else ""))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default="sqlite,pgsql")
    ap.add_argument("--usage-rows", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load-seconds", type=int, default=20, help="0: skip the load phase")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--paced-delay-ms", type=int, default=2,
                    help="the paced load: each connection's pause between requests")
    ap.add_argument("--build", default=os.environ.get("GMCP_BUILD", "build"))
    ap.add_argument("--pg-dsn", help="an existing PostgreSQL server (libpq DSN, no dbname)")
    ap.add_argument("--strace", action="store_true", help="also strace -c one gmcpctl backup")
    ap.add_argument("--report", metavar="JSON", help="only print the tables of a results file")
    args = ap.parse_args()
    if args.report:
        d = json.load(open(args.report))
        for k in ("rounds", "connections", "load_seconds"):
            setattr(args, k, d["args"][k])
        print(report(d["results"], args))
        return
    args.build = os.path.abspath(os.path.join(ROOT, args.build)
                                 if not os.path.isabs(args.build) else args.build)
    if args.usage_rows % KEYS or args.messages % PER_SESSION:
        sys.exit(f"--usage-rows must be a multiple of {KEYS}, --messages of {PER_SESSION}")
    tmp = tempfile.mkdtemp(prefix="gmcp-bbench-")
    os.chmod(tmp, 0o755)
    results = {}
    try:
        for drv in args.db.split(","):
            results[drv] = (run_sqlite if drv == "sqlite" else run_pgsql)(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "backup.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    print(report(results, args))
    for drv, r in results.items():
        if "strace" in r:
            print(f"\nstrace -c gmcpctl backup ({drv}):\n{r['strace']}")


if __name__ == "__main__":
    main()
