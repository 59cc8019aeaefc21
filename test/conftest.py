"""pytest fixtures: real httpd instances started with test/start-server on 127.0.0.1.

Every server fixture is parametrised over SQLite and PostgreSQL. One throwaway
PostgreSQL cluster serves the whole session (unless GMCP_TEST_PG names one); each
server gets a fresh database in it. As in httpd's own mod_md tests, an [error] or
[warn] line in the error log that a test did not declare fails that test.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, PgCluster  # noqa: E402

START = os.path.join(ROOT, "test", "start-server")
ACCEPT_BOTH = "application/json, text/event-stream"
NODE_DIR = os.path.join(ROOT, "test", "node_modules")
NODE22 = os.path.join(NODE_DIR, ".bin", "node")

INIT_PARAMS = {"protocolVersion": "2025-11-25",
               "capabilities": {"sampling": {}, "elicitation": {}},
               "clientInfo": {"name": "pytest", "version": "1"}}


class Server:
    """One running start-server instance."""

    def __init__(self, db, args=()):
        self.db = db
        self.args = list(args)
        self.proc = subprocess.Popen([START, "--db", db] + self.args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            raise RuntimeError(f"start-server failed: {err}")
        self.info = json.loads(line)
        self.url = self.info["mcp"]
        self.base = self.info["base"]
        self.gmcpctl = self.info["gmcpctl"]
        self.log_pos = 0
        self.http = requests.Session()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # ---- HTTP helpers ------------------------------------------------------------------
    def post(self, body, session=None, headers=None, raw=None, stream=False, version=None):
        h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
        if session:
            h["Mcp-Session-Id"] = session
        if version:
            h["MCP-Protocol-Version"] = version
        if headers:
            h.update(headers)
        h = {k: v for k, v in h.items() if v is not None}
        data = raw if raw is not None else json.dumps(body)
        # A new connection each time: requests land on any child process.
        return requests.post(self.url, data=data, headers=h, stream=stream, timeout=30)

    def initialize(self, version="2025-11-25", caps=None):
        params = dict(INIT_PARAMS, protocolVersion=version)
        if caps is not None:
            params["capabilities"] = caps
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        assert r.status_code == 200, r.text
        sid = r.headers["Mcp-Session-Id"]
        r2 = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid)
        assert r2.status_code == 202
        return sid

    def rpc(self, session, method, params=None, rid=1, **kw):
        body = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            body["params"] = params
        return self.post(body, session=session, **kw)

    def ping_ok(self, session):
        r = self.rpc(session, "ping", rid="alive")
        return r.status_code == 200 and r.json() == {"jsonrpc": "2.0", "id": "alive", "result": {}}

    def graceful_restart(self):
        """SIGUSR1 to httpd; returns once the new generation of children serves."""
        def generations():
            return open(self.info["error_log"]).read().count("resuming normal operations")
        before = generations()
        os.kill(self.info["pid"], signal.SIGUSR1)
        deadline = time.time() + 20
        while generations() == before:
            assert time.time() < deadline, "httpd did not restart"
            time.sleep(0.1)
        time.sleep(0.5)
        self.new_log_lines()

    def gmcpctl_run(self, *args, check=True):
        return subprocess.run(self.gmcpctl + list(args), capture_output=True, text=True,
                              check=check)

    def sql(self, query):
        """Run SQL against this server's database and return the rows as text lines."""
        conf = open(self.info["conf"]).read()
        params = re.search(r'DBDParams "([^"]*)"', conf).group(1)
        if self.db == "sqlite":
            out = subprocess.run(["sqlite3", params, query], capture_output=True, text=True,
                                 check=True).stdout
        else:
            out = subprocess.run(["psql", "-X", "-A", "-t", params, "-c", query],
                                 capture_output=True, text=True, check=True).stdout
        return [l for l in out.splitlines() if l]

    # ---- logs ---------------------------------------------------------------------------
    def new_log_lines(self):
        path = self.info["error_log"]
        if not os.path.exists(path):
            return []
        with open(path) as f:
            f.seek(self.log_pos)
            data = f.read()
            self.log_pos = f.tell()
        return data.splitlines()

    def access_lines(self):
        with open(self.info["access_log"]) as f:
            return f.read().splitlines()


def sse_events(resp):
    """Parse a text/event-stream response into a list of {id, event, data, retry} dicts."""
    events, cur = [], {}
    for raw in resp.iter_lines(decode_unicode=True):
        if raw is None:
            continue
        if raw == "":
            if cur:
                events.append(cur)
            cur = {}
            continue
        if raw.startswith(":"):
            continue
        field, _, value = raw.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            cur["data"] = cur["data"] + "\n" + value if "data" in cur else value
        else:
            cur[field] = value
    if cur:
        events.append(cur)
    return events


def response_of(resp, rid=None):
    """The JSON-RPC response in an application/json or text/event-stream answer."""
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        return resp.json()
    for ev in sse_events(resp):
        if ev.get("data"):
            msg = json.loads(ev["data"])
            if ("result" in msg or "error" in msg) and (rid is None or msg.get("id") == rid):
                return msg
    raise AssertionError("no JSON-RPC response in the SSE stream")


@pytest.fixture(scope="session")
def pg_dsn():
    dsn = os.environ.get("GMCP_TEST_PG")
    if dsn:
        yield dsn
        return
    tmp = tempfile.mkdtemp(prefix="gmcp-pg-")
    os.chmod(tmp, 0o755)
    cluster = PgCluster(tmp)
    os.environ["GMCP_TEST_PG"] = cluster.dsn
    yield cluster.dsn
    cluster.stop()
    del os.environ["GMCP_TEST_PG"]
    shutil.rmtree(tmp, ignore_errors=True)


def check_logs(request, servers):
    """Fail on undeclared [error]/[warn] lines and on any sanitizer report."""
    marker = request.node.get_closest_marker("expect_log")
    allowed = [re.compile(p) for p in (marker.args if marker else ())]
    bad = []
    for s in servers:
        for line in s.new_log_lines():
            if re.search(r"\[(\w+:)?(error|warn|crit|alert|emerg)\]", line) and \
                    not any(p.search(line) for p in allowed):
                bad.append(line)
    reports = new_sanitizer_reports()
    assert not reports, "sanitizer reports:\n" + "\n".join(reports)
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


SEEN_REPORTS = set()


def new_sanitizer_reports():
    """Sanitizer reports written since the last look, each as its name and first lines."""
    d = os.environ.get("GMCP_SANITIZER_DIR")
    out = []
    for f in sorted(os.listdir(d)) if d and os.path.isdir(d) else []:
        if f.startswith(("asan", "ubsan")) and f not in SEEN_REPORTS:
            SEEN_REPORTS.add(f)
            with open(os.path.join(d, f), errors="replace") as fh:
                out.append(f"{d}/{f}:\n" + "".join(fh.readlines()[:40]))
    return out


class FakeGemini:
    """test/fake-gemini on a free loopback port."""

    def __init__(self):
        self.proc = subprocess.Popen([os.path.join(ROOT, "test", "fake-gemini")],
                                     stdout=subprocess.PIPE, text=True)
        info = json.loads(self.proc.stdout.readline())
        self.url, self.key = info["url"], info["key"]

    def fault(self, mode, count=1, **kw):
        requests.post(self.url + "/_fake/faults", json=dict(kw, mode=mode, count=count))

    def requests(self):
        return requests.get(self.url + "/_fake/requests").json()["requests"]

    def reset(self):
        requests.post(self.url + "/_fake/reset")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture(scope="session")
def fake_gemini_proc():
    f = FakeGemini()
    yield f
    f.stop()


@pytest.fixture
def fake_gemini(fake_gemini_proc):
    fake_gemini_proc.reset()
    yield fake_gemini_proc


class ServerFactory:
    def __init__(self, request):
        self.request = request
        self.servers = []

    def __call__(self, db, *args):
        if db == "pgsql":
            self.request.getfixturevalue("pg_dsn")
        s = Server(db, args)
        self.servers.append(s)
        return s

    def close(self):
        try:
            check_logs(self.request, self.servers)
        finally:
            for s in self.servers:
                s.stop()


@pytest.fixture
def start(request):
    """Start extra servers inside a test: start('sqlite', '--conf', '...')."""
    f = ServerFactory(request)
    yield f
    f.close()


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def server(request):
    """A shared server with the fixtures module, per test module and database."""
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = Server(request.param, ["--fixtures"] + list(getattr(request.module, "SERVER_ARGS", [])))
    yield s
    s.stop()


# Log lines a test expects can be declared with @pytest.mark.expect_log(r"regex", ...).
def pytest_configure(config):
    # One directory for every httpd's sanitizer reports, kept for the whole session:
    # check_logs fails the test whose server wrote one, pytest_sessionfinish the run for
    # any written after (a module's server stopping, a child ending at shutdown).
    if not os.environ.get("GMCP_SANITIZER_DIR"):
        d = tempfile.mkdtemp(prefix="gmcp-sanitizer-")
        os.chmod(d, 0o1777)
        os.environ["GMCP_SANITIZER_DIR"] = d
    config.addinivalue_line("markers", "expect_log(*patterns): error-log lines this test causes")


@pytest.fixture(autouse=True)
def _server_logs(request):
    if "server" not in request.fixturenames:
        yield
        return
    s = request.getfixturevalue("server")
    s.new_log_lines()
    yield
    check_logs(request, [s])


def pytest_sessionfinish(session, exitstatus):
    reports = new_sanitizer_reports()
    if reports:
        sys.stderr.write("\nsanitizer reports written outside a checked test:\n"
                         + "\n".join(reports) + "\n")
        session.exitstatus = 1
