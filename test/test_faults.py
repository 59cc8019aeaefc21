"""Faults an administrator will meet: PostgreSQL stopped and restarted under load, the
upload spool's filesystem full, the SQLite database made unwritable under a running
server, Gemini failing mid-load. Each checks what a client gets (status, body, time), that
nothing stored is half-written or corrupt, that the error log says what broke, and that
the server recovers by itself, without an httpd restart.

Runs as root (mount, chattr); httpd children run as www-data (test/start-server).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import ACCEPT_BOTH, INIT_PARAMS, Server, check_logs, response_of
from harness import PgCluster, dsn_with_db, pg_bin, psql, run_as

MiB = 1024 * 1024
BOUND = 10            # seconds: no request may take longer than this, whatever is broken
TUS = {"Tus-Resumable": "1.0.0"}

# mod_dbd's own complaints while the database is gone, the module's database lines (today's
# APLOGNOs and the GMCPnnnn tags being added), and the usage flush retrying.
DB_DOWN_LOG = (r"\[dbd:(error|warn|crit|alert)\]", r"AH0063\d|AH0062\d",
               r"gemini_mcp: (no database connection|database error|refusing to serve)",
               r"gemini_mcp: could not write usage", r"GMCP\d+")


# ---- fixtures and helpers ------------------------------------------------------------------

@pytest.fixture
def servers(request):
    """Start servers inside a test (like conftest's `start`, with any start-server args and
    without the session PostgreSQL); stopped, and their logs checked, at teardown."""
    made = []

    def start(db, *args):
        s = Server(db, args)
        made.append(s)
        return s
    yield start
    try:
        check_logs(request, made)
    finally:
        for s in made:
            s.stop()


def private_dir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)          # www-data must reach the data dir below it
    return d


def no_child_crash(s):
    log = open(s.info["error_log"], errors="replace").read()
    crashes = [l for l in log.splitlines()
               if re.search(r"exit signal|Segmentation|Aborted|core dumped|\[core:(crit|alert|emerg)\]", l)]
    assert not crashes, "child processes crashed:\n" + "\n".join(crashes)


def fake_fault(s, mode, count=1, **kw):
    requests.post(s.info["gemini"] + "/_fake/faults", json=dict(kw, mode=mode, count=count),
                  timeout=5).raise_for_status()


def fake_reset(s):
    requests.post(s.info["gemini"] + "/_fake/reset", timeout=5).raise_for_status()


class Client:
    """MCP over HTTP with a hard time bound on every request; records what it saw."""

    def __init__(self, s, key=None):
        self.s, self.key = s, key
        self.sent = 0           # requests made (for usage accounting)

    def post(self, body, sid=None, timeout=BOUND):
        h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
        if sid:
            h["Mcp-Session-Id"] = sid
            h["MCP-Protocol-Version"] = "2025-11-25"
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        t0 = time.time()
        self.sent += 1
        r = requests.post(self.s.url, data=json.dumps(body), headers=h, timeout=timeout)
        r.elapsed_s = time.time() - t0
        return r

    def initialize(self):
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS})
        if r.status_code != 200 or "Mcp-Session-Id" not in r.headers:
            return r, None
        sid = r.headers["Mcp-Session-Id"]
        r2 = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
        return r2, (sid if r2.status_code == 202 else None)

    def rpc(self, sid, method, params=None, rid=1):
        body = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            body["params"] = params
        return self.post(body, sid)

    def tool(self, sid, name, args):
        return self.rpc(sid, "tools/call", {"name": name, "arguments": args})


def jsonrpc_503(r):
    """None when r is a proper 'database unusable' answer (architecture.md: -32603 with HTTP
    503 and Retry-After), else what is wrong with it."""
    if r.status_code != 503:
        return f"HTTP {r.status_code}"
    if not r.headers.get("Content-Type", "").startswith("application/json"):
        return f"503 with Content-Type {r.headers.get('Content-Type')}: {r.text[:200]!r}"
    try:
        body = r.json()
    except ValueError:
        return f"503 with a body that is not JSON: {r.text[:200]!r}"
    if body.get("jsonrpc") != "2.0" or body.get("error", {}).get("code") != -32603:
        return f"503 without a -32603 JSON-RPC error: {body}"
    if "Retry-After" not in r.headers:
        return "503 without Retry-After"
    return None


def store_tool_error(r):
    """None when r is a tool call the server accepted whose store then failed: a tool
    result with isError saying the store is unavailable (architecture.md: a tool that
    already runs reports its store's failure as its result), else what is wrong."""
    if r.status_code != 200:
        return f"HTTP {r.status_code}"
    res, err = result_of(r)
    text = " ".join(c.get("text", "") for c in (res or {}).get("content", []))
    if err or not res.get("isError") or "unavailable" not in text:
        return f"not a store-failure tool result: {res or err}"
    return None


def result_of(r):
    """(result, error) of a 200 answer (JSON or SSE)."""
    msg = response_of(r)
    return msg.get("result"), msg.get("error")


def history_problems(s, chat_ids):
    """Every chat's stored history: seq 1..n, user/model alternating, no orphan user turn."""
    bad = []
    for chat in chat_ids:
        rows = s.sql(f"SELECT seq, role FROM chat_messages WHERE session_id = '{chat}' "
                     "ORDER BY seq")
        got = [tuple(r.split("|")) for r in rows]
        want = [(str(i + 1), "user" if i % 2 == 0 else "model") for i in range(len(got))]
        if got != want or len(got) % 2:
            bad.append((chat, got))
    return bad


def chat_texts(s, chat):
    return [r for r in s.sql(f"SELECT text FROM chat_messages WHERE session_id = '{chat}' "
                             "AND role = 'user' ORDER BY seq")]


# ---- 1. PostgreSQL stopped and restarted under load ------------------------------------------

class OwnPg(PgCluster):
    """A PostgreSQL cluster for one test only, which the test stops and starts."""

    def start(self):
        run_as(self.user, [pg_bin("pg_ctl"), "-D", self.data, "-l",
                           os.path.join(self.dir, "log"), "-w", "-o",
                           f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                           "-c fsync=off -c synchronous_commit=on -c max_connections=200",
                           "start"], stdout=subprocess.DEVNULL)

    def halt(self, mode):
        run_as(self.user, [pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"],
               stdout=subprocess.DEVNULL)


@pytest.fixture
def own_pg():
    base = private_dir("gmcp-faults-pg-")
    pg = OwnPg(base)
    # PgCluster runs with synchronous_commit=off, which loses the last commits in an
    # immediate stop; a production server has it on, so restart with it on.
    pg.halt("fast")
    pg.start()
    yield pg
    pg.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.expect_log(*DB_DOWN_LOG)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_stopped_and_restarted_under_load(own_pg, servers, mode):
    psql(dsn_with_db(own_pg.dsn, "postgres"), 'CREATE DATABASE "gmcp_faults"')
    # A tool call's deadline bounds how long a chat send waits for its session's lease;
    # 8 s keeps every answer inside BOUND even if a lease is left behind.
    s = servers("pgsql", "--pg-dsn", dsn_with_db(own_pg.dsn, "gmcp_faults"), "--fake-gemini",
                "--conf", "GeminiMCPToolTimeout 8")
    fake_fault(s, "latency", count=100000, ms=150)   # sends are in flight when PG stops
    c = Client(s)
    log, lock, stop = [], threading.Lock(), threading.Event()
    chats = []

    def record(kind, t0, r=None, exc=None, detail=None):
        with lock:
            log.append({"kind": kind, "t0": t0, "t1": time.time(), "status":
                        r.status_code if r is not None else None, "exc": exc, "resp": r,
                        "detail": detail})

    def mcp_worker(n):
        sid = None
        i = 0
        while not stop.is_set():
            i += 1
            t0 = time.time()
            try:
                if sid is None or i % 5 == 0:
                    r, new = c.initialize()
                    record("initialize", t0, r)
                    sid = new or sid
                else:
                    r = c.rpc(sid, "ping" if i % 2 else "tools/list", rid=i)
                    record("ping/list", t0, r)
            except requests.RequestException as e:
                record("mcp", t0, exc=repr(e))
            time.sleep(0.05)

    def chat_worker(n, sid, chat):
        i = 0
        while not stop.is_set():
            i += 1
            t0 = time.time()
            msg = f"w{n}-m{i}"
            try:
                r = c.tool(sid, "gemini_chat_send", {"session_id": chat, "message": msg})
                detail = None
                if r.status_code == 200:
                    res, err = result_of(r)
                    detail = {"msg": msg, "ok": bool(res) and not res.get("isError"),
                              "text": (res or {}).get("content", [{}])[0].get("text", "")
                              if res else json.dumps(err)}
                record("chat_send", t0, r, detail=detail)
            except requests.RequestException as e:
                record("chat_send", t0, exc=repr(e), detail={"msg": msg, "ok": False})
            time.sleep(0.05)

    threads = [threading.Thread(target=mcp_worker, args=(n,)) for n in range(3)]
    for n in range(3):
        _, sid = c.initialize()
        res, _ = result_of(c.tool(sid, "gemini_chat_start", {"title": f"load {n}"}))
        chat = res["structuredContent"]["session_id"]
        chats.append(chat)
        threads.append(threading.Thread(target=chat_worker, args=(n, sid, chat)))
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        t_stop = time.time()
        own_pg.halt(mode)
        t_down = time.time()
        time.sleep(4)
        t_up_begin = time.time()
        own_pg.start()
        t_up = time.time()
        time.sleep(7)
    finally:
        stop.set()
        for t in threads:
            t.join(BOUND + 5)
    hung = [t for t in threads if t.is_alive()]
    assert not hung, "client threads still waiting on the server"
    problems = []           # every failed expectation, reported together

    # What was seen, by phase (printed: shown with a failure).
    summary = {}
    for e in log:
        phase = "before" if e["t1"] < t_stop else "down" if e["t0"] < t_up else "after"
        what = e["exc"] or e["status"]
        if e["detail"] and not e["detail"]["ok"]:
            what = f"{what} {e['detail']['text'][:60]}"
        elif e["status"] == 200 and e["resp"].headers.get("Content-Type", "").startswith(
                "application/json") and "error" in e["resp"].json():
            what = f"200 {e['resp'].json()['error']}"
        key = (phase, e["kind"], str(what))
        summary[key] = summary.get(key, 0) + 1
    for key in sorted(summary):
        print(*key, summary[key])
    kinds = {}
    for line in open(s.info["error_log"], errors="replace"):
        if re.search(r"\[(\w+:)?(error|warn|crit)\]", line):
            k = re.sub(r"^(\[[^\]]*\]\s*)+", "", line)
            k = re.sub(r"\d+", "N", k)[:160]
            kinds[k] = kinds.get(k, 0) + 1
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"log x{n}: {k.strip()}")

    # No hang, no exception: every request got an answer within BOUND.
    broken = [(e["kind"], round(e["t0"] - t_stop, 2), e["exc"]) for e in log if e["exc"]]
    if broken:
        problems.append(f"requests without an answer (timeout {BOUND}s or connection "
                        f"error): {broken}")
    slow = [(e["kind"], round(e["t1"] - e["t0"], 2)) for e in log if e["t1"] - e["t0"] > BOUND]
    if slow:
        problems.append(f"requests slower than {BOUND}s: {slow}")

    # Only 2xx or a proper JSON-RPC 503 — never another 5xx or 4xx.
    wrong = []
    for e in log:
        r = e["resp"]
        if r is None or r.status_code == 202:
            continue
        if r.status_code == 200:
            body = r.json() if r.headers.get("Content-Type", "").startswith(
                "application/json") else {}
            if body.get("error", {}).get("code") == -32603:
                # architecture.md: "-32603 with HTTP 503 and Retry-After when the database
                # is unusable" -- not 200.
                wrong.append((e["kind"], round(e["t0"] - t_stop, 2), "-32603 with HTTP 200",
                              r.text[:200]))
            continue
        why = jsonrpc_503(r)
        if why:
            wrong.append((e["kind"], round(e["t0"] - t_stop, 2), why, r.text[:200]))
    if wrong:
        problems.append(f"answers other than 2xx / JSON-RPC 503: {wrong}")

    down = [e for e in log if t_down <= e["t0"] and e["t1"] <= t_up_begin]
    if not any(e["status"] == 503 for e in down):
        problems.append(f"no 503 while PostgreSQL was down: "
                        f"{[(e['kind'], e['status']) for e in down]}")

    # Recovery without an httpd restart: within 5 s of PostgreSQL answering again,
    # everything succeeds (a chat tool error counts as a failure).
    def ok(e):
        return e["status"] in (200, 202) and (e["detail"] is None or e["detail"]["ok"])
    late_fail = [(e["kind"], round(e["t0"] - t_up, 2), round(e["t1"] - t_up, 2), e["status"],
                  e["detail"]) for e in log if e["t1"] > t_up + 5 and not ok(e)]
    if late_fail:
        problems.append(f"still failing more than 5 s after PostgreSQL came back: {late_fail}")
    first_ok = min((e["t1"] for e in log if e["t0"] >= t_up and ok(e)), default=None)
    if first_ok is None or first_ok - t_up >= 5:
        problems.append("no success within 5 s of the restart")
    if open(s.info["error_log"]).read().count("resuming normal operations") != 1:
        problems.append("httpd restarted")

    # Every existing chat continues (all at once: each may wait out a tool deadline), and
    # a new session with a new chat works.
    def continue_chat(chat):
        _, sid = c.initialize()
        t0 = time.time()
        r = c.tool(sid, "gemini_chat_send", {"session_id": chat, "message": f"after {chat}"})
        res, err = result_of(r)
        if not res or res.get("isError"):
            with lock:
                problems.append(f"chat {chat} after recovery (sent {t0 - t_up:.1f}s after the "
                                f"restart, answered in {time.time() - t0:.1f}s): {res or err}")
    after = [threading.Thread(target=continue_chat, args=(chat,)) for chat in chats]
    for t in after:
        t.start()
    for t in after:
        t.join(BOUND + 5)
    _, sid = c.initialize()
    if not sid or c.rpc(sid, "ping").status_code != 200:
        problems.append("a new session does not work after recovery")
    else:
        res, _ = result_of(c.tool(sid, "gemini_chat_start", {}))
        chat = res["structuredContent"]["session_id"]
        res, err = result_of(c.tool(sid, "gemini_chat_send", {"session_id": chat,
                                                             "message": "new"}))
        if not res or res.get("isError"):
            problems.append(f"a new chat does not work after recovery: {res or err}")

    # No half-written turn: histories alternate user/model; every send that succeeded is
    # stored (once).
    if history_problems(s, chats):
        problems.append(f"half-written chat histories: {history_problems(s, chats)}")
    stored = {chat: chat_texts(s, chat) for chat in chats}
    every = [t for ts in stored.values() for t in ts]
    if len(every) != len(set(every)):
        problems.append("a message stored twice")
    for e in log:
        d = e["detail"]
        if e["kind"] == "chat_send" and d and d["ok"]:
            n = int(d["msg"][1:].split("-")[0])
            if d["msg"] not in stored[chats[n]]:
                problems.append(f"acknowledged send not stored: {d}")
    no_child_crash(s)
    assert problems == [], "\n".join(problems)


# ---- 2. the spool directory's filesystem full ---------------------------------------------

def sha256(data):
    return hashlib.sha256(data).hexdigest()


def slow_body(data, piece=256 * 1024, pause=0.02):
    for i in range(0, len(data), piece):
        yield data[i:i + piece]
        time.sleep(pause)


@pytest.fixture
def small_spool():
    """A data dir whose uploads/ is an 8 MiB tmpfs, 5 MiB of it taken by a filler file."""
    data = private_dir("gmcp-faults-spool-")
    spool = os.path.join(data, "uploads")
    os.makedirs(spool)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", spool],
                   check=True)
    try:
        filler = os.path.join(spool, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * 5 * MiB)
        yield {"data": data, "spool": spool, "filler": filler}
    finally:
        subprocess.run(["umount", "-l", spool], check=False)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.expect_log(r"No space left on device", r"GMCP\d+",
                        r"gemini_mcp: database error while storing upload bytes")
@pytest.mark.parametrize("db", ["sqlite", "pgsql"])
def test_spool_filesystem_full(request, servers, small_spool, db):
    if db == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = servers(db, "--auth", "apikey", "--data-dir", small_spool["data"])
    key = s.info["api_key"]
    assert os.path.ismount(small_spool["spool"])
    free = shutil.disk_usage(small_spool["spool"]).free
    data = os.urandom(6 * MiB + 12345)
    assert len(data) > free
    auth = dict(TUS, Authorization=f"Bearer {key}")
    r = requests.post(s.info["upload"], headers=dict(auth, **{"Upload-Length": str(len(data))}),
                      timeout=BOUND)
    assert r.status_code == 201, r.text
    url = r.headers["Location"]
    path = os.path.join(small_spool["spool"], url.rsplit("/", 1)[1])
    s.new_log_lines()

    # One PATCH with the whole file, larger than the free space.
    t0 = time.time()
    r = requests.patch(url, headers=dict(auth, **{"Upload-Offset": "0", "Content-Type":
                                                  "application/offset+octet-stream"}),
                       data=slow_body(data), timeout=30)
    took = time.time() - t0
    answer = (r.status_code, dict(r.headers), r.text[:300])
    log = s.new_log_lines()
    assert took < BOUND + 5, f"the failing PATCH took {took:.1f}s"
    # A deliberate answer: 507 Insufficient Storage, or 503 with Retry-After.
    assert r.status_code in (507, 503), answer
    if r.status_code == 503:
        assert "Retry-After" in r.headers, answer

    # HEAD tells the truth: the bytes below the offset are there and are what was sent.
    h = requests.head(url, headers=auth, timeout=BOUND)
    assert h.status_code == 200, (h.status_code, h.text)
    offset = int(h.headers["Upload-Offset"])
    assert 0 <= offset <= free, (offset, free)
    with open(path, "rb") as f:
        assert sha256(f.read(offset)) == sha256(data[:offset]), "bytes below the offset differ"
    db_row = s.sql("SELECT upload_offset, state FROM uploads WHERE id = '%s'" % url.rsplit("/", 1)[1])
    assert db_row and db_row[0].split("|")[0] == str(offset), db_row

    print(f"PATCH answer {answer}; HEAD offset {offset} of {len(data)}, {free} bytes were free")
    print("error log during the PATCH:", *log, sep="\n  ")

    # Free the space: the client resumes from HEAD and the file completes byte-identical.
    os.remove(small_spool["filler"])
    r = requests.patch(url, headers=dict(auth, **{"Upload-Offset": str(offset), "Content-Type":
                                                  "application/offset+octet-stream"}),
                       data=data[offset:], timeout=30)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data)), \
        (r.status_code, r.text)
    with open(path, "rb") as f:
        assert sha256(f.read()) == sha256(data)
    row = s.sql("SELECT state, sha256 FROM uploads WHERE id = '%s'" % url.rsplit("/", 1)[1])
    assert row[0].split("|") == ["complete", sha256(data)], row
    no_child_crash(s)
    # The admin can tell what happened from the error log.
    assert any("No space left on device" in l for l in log), \
        "no error-log line names the full disk:\n" + "\n".join(log)
    blamed = [l for l in log if re.search(r"database error|no connection", l)]
    assert not blamed, "a full disk reported as a database problem:\n" + "\n".join(blamed)


# ---- 3. the SQLite database made unwritable under the server -----------------------------

@pytest.fixture
def sqlite_dir():
    data = private_dir("gmcp-faults-sqlite-")
    frozen = []

    def freeze():
        for name in ("gmcp.db", "gmcp.db-wal"):
            p = os.path.join(data, name)
            if os.path.exists(p):
                subprocess.run(["chattr", "+i", p], check=True)
                frozen.append(p)

    def thaw():
        while frozen:
            subprocess.run(["chattr", "-i", frozen.pop()], check=True)
    yield {"data": data, "freeze": freeze, "thaw": thaw}
    thaw()
    shutil.rmtree(data, ignore_errors=True)


@pytest.mark.expect_log(*DB_DOWN_LOG)
def test_sqlite_database_unwritable(servers, sqlite_dir):
    """`chattr +i` on the database and its WAL: writes fail even through the connections
    httpd already holds open (as after an ext4 error remount), reads through them still
    work. Each child opens all its connections at start (DBDMin = DBDMax), each reads
    once (which opens its WAL): a connection made, or a WAL first opened, while the
    database is unwritable is refused (the next test), so a read that needed one would
    get a 503 here."""
    s = servers("sqlite", "--auth", "apikey", "--fake-gemini", "--data-dir", sqlite_dir["data"],
                "--conf", "DBDMin 16", "--conf", "DBDKeep 16",
                "--conf", 'DBDInitSQL "SELECT count(*) FROM sqlite_master"',
                "--conf", "GeminiMCPRateLimitStore dbd",
                "--conf", "GeminiMCPUsageFlushInterval 1")
    dev = Client(s, s.info["api_key"])
    limited = Client(s, json.loads(s.gmcpctl_run("--json", "keys", "create", "--name", "lim",
                                                 "--rate", "1000/s").stdout)["secret"])
    _, sid = dev.initialize()
    res, _ = result_of(dev.tool(sid, "gemini_chat_start", {"title": "ro"}))
    chat = res["structuredContent"]["session_id"]
    res, _ = result_of(dev.tool(sid, "gemini_chat_send", {"session_id": chat, "message": "one"}))
    assert not res.get("isError"), res
    _, lsid = limited.initialize()
    assert limited.rpc(lsid, "ping").status_code == 200
    time.sleep(1.2)
    dev.rpc(sid, "ping")                      # flushes usage while writable
    s.new_log_lines()

    sqlite_dir["freeze"]()
    problems, kinds = [], {}
    try:
        # Writes: a clear JSON-RPC 503 (tools: a tool error naming the store), quickly,
        # and a log line saying why.
        writes = {
            "session create": lambda: dev.post({"jsonrpc": "2.0", "id": 0, "method":
                                                "initialize", "params": INIT_PARAMS}),
            "chat start": lambda: dev.tool(sid, "gemini_chat_start", {"title": "x"}),
            "chat send": lambda: dev.tool(sid, "gemini_chat_send",
                                          {"session_id": chat, "message": "two"}),
            "key use (dbd rate store)": lambda: limited.rpc(lsid, "ping"),
        }
        for kind, call in writes.items():
            for attempt in range(2):          # each child process may answer
                t0 = time.time()
                try:
                    r = call()
                except requests.RequestException as e:
                    problems.append((kind, "no answer", repr(e)))
                    continue
                took = time.time() - t0
                why = jsonrpc_503(r)
                if why and kind.startswith("chat"):
                    why = store_tool_error(r)
                if why:
                    problems.append((kind, why, r.text[:300]))
                if took > BOUND:
                    problems.append((kind, f"took {took:.1f}s"))
            kinds[kind] = s.new_log_lines()

        # Reads that need no write still work.
        reads = {
            "ping": lambda: dev.rpc(sid, "ping"),
            "tools/list": lambda: dev.rpc(sid, "tools/list"),
            "chat history": lambda: dev.tool(sid, "gemini_chat_history", {"session_id": chat}),
            "chat list": lambda: dev.tool(sid, "gemini_chat_list", {}),
        }
        for kind, call in reads.items():
            for attempt in range(2):
                try:
                    r = call()
                except requests.RequestException as e:
                    problems.append((kind, "no answer", repr(e)))
                    continue
                if r.status_code != 200:
                    problems.append((kind, f"read failed: HTTP {r.status_code}", r.text[:300]))
                    continue
                res, err = result_of(r)
                if err or (res and res.get("isError")):
                    problems.append((kind, "read failed", res or err))
                elif kind == "chat history":
                    texts = [m["role"] for m in res["structuredContent"]["messages"]]
                    if texts != ["user", "model"]:
                        problems.append((kind, "history changed", texts))
        time.sleep(1.2)
        dev.rpc(sid, "ping")                  # a usage flush, which must fail and keep counts
        kinds["reads"] = s.new_log_lines()
    finally:
        sqlite_dir["thaw"]()

    # One clear line per kind of failure: [error], what was being done, SQLite's reason.
    reason = re.compile(r"readonly|read-only|I/O error|not permitted|disk", re.I)
    for kind in writes:
        lines = [l for l in kinds[kind] if re.search(r":(error|crit)\]", l)]
        if not any(reason.search(l) for l in lines):
            problems.append((kind, "no log line with the database's reason", lines))
        if len(lines) > 4:
            problems.append((kind, f"{len(lines)} log lines for 2 requests", lines))

    # Writable again: everything works at once, without a restart, and no usage is lost.
    _, sid2 = dev.initialize()
    if not sid2:
        problems.append(("after thaw", "initialize failed"))
    else:
        res, err = result_of(dev.tool(sid2, "gemini_chat_send",
                                      {"session_id": chat, "message": "three"}))
        if not res or res.get("isError"):
            problems.append(("after thaw", "chat send failed", res or err))
    r = limited.rpc(lsid, "ping")
    if r.status_code != 200:
        problems.append(("after thaw", f"limited key: HTTP {r.status_code}", r.text[:200]))
    # Usage counted while the database was read-only is kept and written afterwards.
    # Each child flushes its own counts when a request reaches it after the interval:
    # ping (up to 10 rounds) until both children have had one.
    dev_id = s.sql("SELECT id FROM api_keys WHERE name = 'dev'")[0]
    for _ in range(10):
        time.sleep(1.2)
        dev.rpc(sid2 or sid, "ping")
        counted = int(s.sql(f"SELECT COALESCE(SUM(requests), 0) FROM usage_hourly "
                            f"WHERE key_id = '{dev_id}'")[0])
        if dev.sent - 2 <= counted <= dev.sent:
            break
    if not dev.sent - 2 <= counted <= dev.sent:
        problems.append(("usage", f"{dev.sent} requests made with the key, {counted} recorded"))
    assert not history_problems(s, [chat]), history_problems(s, [chat])
    assert "two" not in chat_texts(s, chat) or chat_texts(s, chat).count("two") == 1
    kinds["after the thaw"] = s.new_log_lines()
    for kind, lines in kinds.items():          # shown with a failure
        print(f"log, {kind}:", *lines, sep="\n  ")
    assert problems == [], "\n".join(map(repr, problems))
    assert open(s.info["error_log"]).read().count("resuming normal operations") == 1
    no_child_crash(s)


@pytest.mark.expect_log(*DB_DOWN_LOG, r"readonly|read-only|unable to open")
def test_sqlite_connections_made_while_unwritable(servers, sqlite_dir):
    """A connection made while the database cannot be written (here: httpd restarted
    during the `chattr +i`, as during an ext4 error remount) is refused, never pooled
    read-only: once the database is writable again, every write works at once in every
    child, without another restart."""
    s = servers("sqlite", "--auth", "apikey", "--fake-gemini", "--data-dir", sqlite_dir["data"])
    dev = Client(s, s.info["api_key"])
    _, sid = dev.initialize()
    assert sid
    sqlite_dir["freeze"]()
    problems = []
    try:
        s.graceful_restart()                  # new children: their connections are new
        for i in range(4):
            t0 = time.time()
            try:
                r = dev.post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                              "params": INIT_PARAMS})
            except requests.ConnectionError:
                continue                      # a keep-alive connection the restart closed
            why = jsonrpc_503(r)
            if why:
                problems.append(("while unwritable", why, r.text[:300]))
            if time.time() - t0 > BOUND:
                problems.append(("while unwritable", f"took {time.time() - t0:.1f}s"))
    finally:
        sqlite_dir["thaw"]()
    frozen_log = s.new_log_lines()
    for i in range(8):                        # both children, with their pooled connections
        r = dev.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS})
        if r.status_code != 200:
            problems.append(("after the thaw", f"initialize {i}: HTTP {r.status_code}",
                             r.text[:300]))
            continue
        sid2 = r.headers.get("Mcp-Session-Id")
        res, err = result_of(dev.tool(sid2, "gemini_chat_start", {"title": f"after {i}"}))
        if err or res.get("isError"):
            problems.append(("after the thaw", f"chat start {i}", res or err))
    after_log = s.new_log_lines()
    assert problems == [], "\n".join(map(repr, problems + [frozen_log, after_log]))
    assert any(re.search(r"readonly|read-only|unable to open", l) for l in frozen_log), frozen_log
    no_child_crash(s)


# ---- 4. Gemini failing mid-load, then recovering (chats + circuit breaker) ---------------

@pytest.mark.expect_log(r"Gemini call \S+ \S+ failed: HTTP 500", r"circuit breaker")
def test_gemini_500s_mid_load_then_recovery(servers):
    s = servers("sqlite", "--fake-gemini", "--conf", "GeminiMCPGeminiRetries 0",
                "--conf", "GeminiMCPBreakerThreshold 3", "--conf", "GeminiMCPBreakerCooldown 2")
    c = Client(s)
    seen, lock, stop = [], threading.Lock(), threading.Event()
    chats = []

    def worker(n, sid, chat):
        i = 0
        while not stop.is_set():
            i += 1
            msg = f"w{n}-m{i}"
            t0 = time.time()
            try:
                r = c.tool(sid, "gemini_chat_send", {"session_id": chat, "message": msg})
                res, err = result_of(r) if r.status_code == 200 else (None, r.text)
                text = res["content"][0]["text"] if res else str(err)
                ok = r.status_code == 200 and res is not None and not res.get("isError")
                entry = (n, msg, t0, time.time(), r.status_code, ok, text)
            except requests.RequestException as e:
                entry = (n, msg, t0, time.time(), None, False, repr(e))
            with lock:
                seen.append(entry)
            time.sleep(0.05)

    threads = []
    for n in range(4):
        _, sid = c.initialize()
        res, _ = result_of(c.tool(sid, "gemini_chat_start", {}))
        chats.append(res["structuredContent"]["session_id"])
        threads.append(threading.Thread(target=worker, args=(n, sid, chats[-1])))
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        t_fault = time.time()
        fake_fault(s, "500", count=1000)
        time.sleep(3)
        fake_reset(s)
        t_fixed = time.time()
        time.sleep(5)
    finally:
        stop.set()
        for t in threads:
            t.join(BOUND + 5)
    assert not [e for e in seen if e[4] != 200], [e for e in seen if e[4] != 200]
    assert not [e for e in seen if e[3] - e[2] > BOUND]
    during = [e for e in seen if t_fault + 0.5 < e[2] and e[3] < t_fixed]
    assert during and not any(e[5] for e in during)
    errors = {e[6] for e in seen if not e[5]}
    assert all("500" in t or "circuit breaker" in t for t in errors), errors
    assert any("circuit breaker" in t for t in errors), errors
    # The breaker lets a probe through after its 2 s cooldown: all is well 3 s after.
    late = [e for e in seen if e[2] > t_fixed + 3]
    assert late and all(e[5] for e in late), [e for e in late if not e[5]]
    # Nothing half-stored: failed sends left no trace, successful ones are all there.
    assert not history_problems(s, chats), history_problems(s, chats)
    for n, chat in enumerate(chats):
        stored = chat_texts(s, chat)
        assert stored == [e[1] for e in seen if e[0] == n and e[5]], (stored, n)
    no_child_crash(s)
