"""Hardening: no request leaks, crashes or locks what other requests need.

Each test here would have caught a defect seen on an earlier main:
- upload paths (404/410 DELETEs, completing PATCHes) kept their mod_dbd connection, and
  after about 2 x DBDMax of them every request needing the database hung;
- PATCHes that end early (checksum mismatch, client abort) crashed a child now and then
  (the spool's helper threads shared the request pool);
- a chat whose send was in flight in a killed child stayed locked for minutes.
Run on SQLite and PostgreSQL, plain and under ASan/UBSan (make test-asan)."""
import base64
import hashlib
import json
import os
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import Server, response_of

DBS = ["sqlite", "pgsql"]
TUS = {"Tus-Resumable": "1.0.0"}
ACCEPT = "application/json, text/event-stream"


class _Timed(requests.Session):
    """Every request with a timeout (a leaked connection shows as a failure, not a hang)
    and on a new connection (so requests land on either child)."""

    def __init__(self):
        super().__init__()
        self.headers["Connection"] = "close"

    def request(self, *a, **kw):
        kw.setdefault("timeout", 15)
        return super().request(*a, **kw)


http = _Timed()
DBD_MAX = 16          # start-server: DBDMax = ThreadsPerChild = 16, 2 children
REPEAT = 4 * DBD_MAX  # per path: well over DBDMax per child whichever child serves


@pytest.fixture(scope="module", params=DBS)
def hs(request, fake_gemini_proc):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = Server(request.param, ["--auth", "apikey", "--fixtures",
                               "--gemini-url", fake_gemini_proc.url,
                               "--gemini-key", fake_gemini_proc.key])
    s.key = s.info["api_key"]
    s.other = json.loads(s.gmcpctl_run("--json", "keys", "create", "--name",
                                       "other").stdout)["secret"]
    yield s
    s.stop()


@pytest.fixture
def server(hs, fake_gemini):
    """The module's server, with the error-log check of conftest after each test."""
    yield hs


def bearer(key, **extra):
    h = {"Authorization": f"Bearer {key}"}
    h.update(extra)
    return h


def tus(key, **extra):
    return bearer(key, **dict(TUS, **extra))


def create(s, length, key=None, **extra):
    r = http.post(s.info["upload"], headers=tus(key or s.key, **{
        "Upload-Length": str(length)}, **extra))
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def patch(s, url, offset, data, key=None, **extra):
    return http.patch(url, data=data, headers=tus(key or s.key, **dict({
        "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        **extra)))


def mcp(s, body, sid=None, key=None, timeout=30):
    h = bearer(key or s.key, **{"Content-Type": "application/json", "Accept": ACCEPT})
    if sid:
        h["Mcp-Session-Id"] = sid
    return http.post(s.url, data=json.dumps(body), headers=h, timeout=timeout)


def initialize(s, timeout=30):
    r = mcp(s, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "hardening", "version": "1"}}}, timeout=timeout)
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    assert mcp(s, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid,
               timeout=timeout).status_code == 202
    return sid


def children(ppid):
    """Pids of the processes whose parent is ppid (httpd's children)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[1]) == ppid and fields[0] != "Z":
                out.append(int(d))
    return out


def still_serves(s):
    """An MCP session and a readiness check, each answered within 1 s."""
    t0 = time.time()
    sid = initialize(s, timeout=1)
    r = mcp(s, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, sid, timeout=1)
    assert r.status_code == 200 and "tools" in response_of(r)["result"]
    r = http.get(s.info["base"] + "/status/ready", timeout=1)
    assert r.status_code == 200, r.text
    assert time.time() - t0 < 3


# ---- 1. every path of every handler, more than DBDMax times per child ---------------------

def upload_paths(s):
    """(name, function) for every answer the upload handler gives."""
    unknown = s.info["upload"] + "/" + "A" * 22
    theirs = create(s, 10, key=s.other)
    gone = create(s, 10)
    assert http.delete(gone, headers=tus(s.key)).status_code == 204
    stale = create(s, 10)
    s.sql("UPDATE uploads SET expires = 1 WHERE id = '%s'" % stale.rsplit("/", 1)[1])
    done = create(s, 3)
    assert patch(s, done, 0, b"abc").status_code == 204

    def complete_one():
        url = create(s, 5)
        return patch(s, url, 0, b"hello")

    def creation_with_upload():
        return http.post(s.info["upload"], data=b"xyz", headers=tus(s.key, **{
            "Upload-Length": "3", "Content-Type": "application/offset+octet-stream"}))

    def mismatch():
        url = create(s, 4)
        return patch(s, url, 0, b"data", **{"Upload-Checksum": "sha256 " + base64.b64encode(
            hashlib.sha256(b"other").digest()).decode()})

    return [
        ("DELETE unknown", 404, lambda: http.delete(unknown, headers=tus(s.key))),
        ("DELETE another owner's", 404, lambda: http.delete(theirs, headers=tus(s.key))),
        ("DELETE terminated", 410, lambda: http.delete(gone, headers=tus(s.key))),
        ("DELETE expired", 410, lambda: http.delete(stale, headers=tus(s.key))),
        ("HEAD unknown", 404, lambda: http.head(unknown, headers=tus(s.key))),
        ("HEAD expired", 410, lambda: http.head(stale, headers=tus(s.key))),
        ("HEAD complete", 200, lambda: http.head(done, headers=tus(s.key))),
        ("GET progress", 200, lambda: http.get(done, headers=tus(s.key))),
        ("GET terminated", 410, lambda: http.get(gone, headers=tus(s.key))),
        ("PATCH unknown", 404, lambda: patch(s, unknown, 0, b"x")),
        ("PATCH expired", 410, lambda: patch(s, stale, 0, b"x")),
        ("PATCH wrong offset", 409, lambda: patch(s, done, 1, b"x")),
        ("PATCH complete, empty", 204, lambda: patch(s, done, 3, b"")),
        ("PATCH past the length", 413, lambda: patch(s, done, 3, b"x")),
        ("PATCH completing", 204, complete_one),
        ("PATCH checksum mismatch", 460, mismatch),
        ("POST creation-with-upload", 201, creation_with_upload),
        ("POST bad length", 400, lambda: http.post(s.info["upload"], headers=tus(
            s.key, **{"Upload-Length": "-1"}))),
        ("POST no auth", 401, lambda: http.post(s.info["upload"], headers=dict(
            TUS, **{"Upload-Length": "1"}))),
        ("OPTIONS", 204, lambda: http.options(s.info["upload"])),
    ]


def mcp_paths(s):
    sid = initialize(s)

    def call(name, args):
        return mcp(s, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": name, "arguments": args}}, sid)

    chat = call("gemini_chat_start", {}).json()["result"]["structuredContent"]["session_id"]

    def deleted_session():
        gone = initialize(s)
        http.delete(s.url, headers=bearer(s.key, **{"Mcp-Session-Id": gone}))
        return mcp(s, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, gone)

    def stateless():
        return http.post(s.url, data=json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "h", "version": "1"}}}}),
            headers=bearer(s.key, **{"Content-Type": "application/json", "Accept": ACCEPT,
                                     "MCP-Protocol-Version": "2026-07-28",
                                     "Mcp-Method": "tools/list"}))

    return [
        ("initialize", 200, lambda: mcp(s, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                            "params": {"protocolVersion": "2025-11-25",
                                                       "capabilities": {}, "clientInfo": {
                                                           "name": "h", "version": "1"}}})),
        ("tools/list", 200, lambda: mcp(s, {"jsonrpc": "2.0", "id": 1,
                                            "method": "tools/list"}, sid)),
        ("tools/call", 200, lambda: call("test_simple_text", {})),
        ("chat start", 200, lambda: call("gemini_chat_start", {})),
        ("chat unknown", 200, lambda: call("gemini_chat_send", {"session_id": "nope",
                                                                 "message": "hi"})),
        ("chat send", 200, lambda: call("gemini_chat_send", {"session_id": chat,
                                                              "message": "hi"})),
        ("setLevel", 200, lambda: mcp(s, {"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel",
                                          "params": {"level": "info"}}, sid)),
        ("notification", 202, lambda: mcp(s, {"jsonrpc": "2.0",
                                              "method": "notifications/initialized"}, sid)),
        ("cancel", 202, lambda: mcp(s, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                        "params": {"requestId": 99}}, sid)),
        ("unknown session", 404, lambda: mcp(s, {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                             "no-such-session")),
        ("deleted session", 404, deleted_session),
        ("malformed JSON", 400, lambda: http.post(s.url, data="{", headers=bearer(
            s.key, **{"Content-Type": "application/json", "Accept": ACCEPT}))),
        ("GET bad Last-Event-ID", 400, lambda: http.get(s.url, headers=bearer(
            s.key, **{"Accept": "text/event-stream", "Mcp-Session-Id": sid,
                      "Last-Event-ID": "nostream.1"}))),
        ("no key", 401, lambda: http.post(s.url, data="{}", headers={
            "Content-Type": "application/json", "Accept": ACCEPT})),
        ("stateless", 200, stateless),
    ]


def status_paths(s):
    base = s.info["base"] + "/status/"
    return [(leaf, 200, (lambda u: lambda: http.get(u))(base + leaf))
            for leaf in ("live", "ready", "metrics")]


def test_no_path_keeps_a_database_connection(server):
    for name, want, fn in upload_paths(server) + mcp_paths(server) + status_paths(server):
        for _ in range(REPEAT):
            r = fn()
            assert r.status_code == want, (name, r.status_code, r.text[:300])
        still_serves(server)


@pytest.mark.parametrize("db", DBS)
def test_interval_patches_keep_no_connection(start, db):
    """GeminiMCPUploadDurability interval: PATCHes that leave a tail to the child's
    syncer (1 s), complete one, or are refused by their checksum, each more than DBDMax
    times per child; the tails' background syncs take connections too. The server
    still answers, and every tail ends up durable."""
    s = start(db, "--auth", "apikey", "--conf",
              "<Location /uploads>\nGeminiMCPUploadDurability interval 8M 1\n</Location>")
    s.key = s.info["api_key"]
    urls = []

    def tail_left():
        url = create(s, 10)
        urls.append(url)
        return patch(s, url, 0, b"hello")

    def completing():
        url = create(s, 5)
        urls.append(url)
        return patch(s, url, 0, b"hello")

    def mismatch():
        url = create(s, 4)
        return patch(s, url, 0, b"data", **{"Upload-Checksum": "sha256 " + base64.b64encode(
            hashlib.sha256(b"other").digest()).decode()})
    for name, want, fn in [("PATCH leaving a tail", 204, tail_left),
                           ("PATCH completing", 204, completing),
                           ("PATCH checksum mismatch", 460, mismatch)]:
        for _ in range(REPEAT):
            r = fn()
            assert r.status_code == want, (name, r.status_code, r.text[:300])
        still_serves(s)
    time.sleep(2.5)
    lagging = s.sql("SELECT COUNT(*) FROM uploads WHERE durable_offset >= 0")
    assert lagging == ["0"], lagging
    still_serves(s)


# ---- 2. PATCHes that end early, in a loop --------------------------------------------------

def aborted_patch(s, url, offset):
    """A PATCH announcing 2 MiB that sends half and closes the connection."""
    host, port = s.info["base"].split("//")[1].split(":")
    path = url.split(s.info["base"])[1]
    head = (f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {s.key}\r\nUpload-Offset: {offset}\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {2 * 1024 * 1024}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as c:
        c.sendall(head + os.urandom(1024 * 1024 + 123))
        c.shutdown(socket.SHUT_RDWR)


def offset_of(s, url):
    return int(http.head(url, headers=tus(s.key)).headers["Upload-Offset"])


def patch_when_free(s, url, data, **extra):
    """PATCH at the current offset, again while an aborted one still ends (423, or 409
    when it recorded more after our HEAD)."""
    deadline = time.time() + 10
    while True:
        r = patch(s, url, offset_of(s, url), data, **extra)
        if r.status_code not in (409, 423) or time.time() > deadline:
            return r
        time.sleep(0.02)


def test_early_ending_patches_do_not_crash(server):
    body = os.urandom(256 * 1024)
    wrong = "sha256 " + base64.b64encode(hashlib.sha256(b"not it").digest()).decode()
    url = create(server, 1024 * 1024 * 1024)
    for i in range(150):
        r = patch_when_free(server, url, body, **{"Upload-Checksum": wrong})
        assert r.status_code == 460, r.text
        aborted_patch(server, url, offset_of(server, url))
    # The aborted PATCHes kept whatever they made durable; the upload goes on from there.
    r = patch_when_free(server, url, body)
    off = int(r.headers["Upload-Offset"]) - len(body)
    assert r.status_code == 204 and int(r.headers["Upload-Offset"]) == off + len(body)
    log = open(server.info["error_log"]).read()
    assert "exit signal" not in log, [l for l in log.splitlines() if "exit signal" in l]
    still_serves(server)


# ---- 3. a child killed mid chat send ---------------------------------------------------------

def tool_call(s, sid, name, args, timeout=30):
    r = mcp(s, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": name, "arguments": args}}, sid, timeout=timeout)
    assert r.status_code == 200, r.text
    return response_of(r)["result"]


@pytest.mark.expect_log(r"exit signal|GMCP0401")
def test_chat_usable_after_its_sender_was_killed(server, fake_gemini):
    sid = initialize(server)
    res = tool_call(server, sid, "gemini_chat_start", {})
    chat = res["structuredContent"]["session_id"]
    fake_gemini.fault("hang", seconds=20)

    def send():
        try:
            mcp(server, {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
                "name": "gemini_chat_send", "arguments": {"session_id": chat,
                                                          "message": "first"}}}, sid)
        except requests.RequestException:
            pass            # its child is killed below
    t = threading.Thread(target=send)
    t.start()
    deadline = time.time() + 10
    while not server.sql("SELECT lock_token FROM chat_sessions WHERE id = '%s' "
                         "AND lock_token <> ''" % chat):
        assert time.time() < deadline, "the send never took its lease"
        time.sleep(0.05)
    for pid in children(server.info["pid"]):
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    t.join(30)
    fake_gemini.reset()
    res = None
    while time.time() - killed < 2:
        try:
            res = tool_call(server, initialize(server, timeout=2), "gemini_chat_send",
                            {"session_id": chat, "message": "second"}, timeout=2)
            break
        except (requests.RequestException, AssertionError):
            time.sleep(0.1)     # httpd is still making new children
    assert res is not None and not res.get("isError"), res
    assert time.time() - killed < 2.5
    assert "second" in res["content"][0]["text"]


# ---- 4. a stream request answered with another success status ----------------------------

@pytest.mark.expect_log(r"GMCP0401")
@pytest.mark.parametrize("code", [201, 204])
def test_stream_answered_with_another_2xx(server, fake_gemini, code):
    """Found by gcc -fanalyzer: a streamed generation answered with a 2xx other than 200
    dereferenced NULL. Now it is a clear tool error, and the server goes on."""
    sid = initialize(server)
    fake_gemini.fault("status", code=code)
    r = mcp(server, {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "gemini_generate", "arguments": {"prompt": "hi"},
        "_meta": {"progressToken": "p1"}}}, sid)
    assert r.status_code == 200
    res = response_of(r, 5)["result"]
    assert res.get("isError") and f"HTTP {code}" in res["content"][0]["text"], res
    still_serves(server)


# ---- 5. memory after a burst of big bodies ---------------------------------------------------

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0


@pytest.mark.expect_log(r"AH10159")     # 16 busy threads of 32: the MPM says so
@pytest.mark.skipif("asan" in os.environ.get("GMCP_BUILD", ""),
                    reason="ASan's allocator keeps freed memory in quarantine by design")
def test_big_bodies_do_not_keep_memory(server):
    """A 1 MiB body of small objects takes ~30 MiB of jansson nodes while it is parsed;
    glibc used to keep that in every worker thread's arena (~500 MB per child after a
    burst, though nothing leaked). The module now gives the heap back."""
    sid = initialize(server)
    items = [{"k": i % 10} for i in range(60000)]
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "test_simple_text", "arguments": {"items": items}}})
    assert len(body) < 1024 * 1024
    h = bearer(server.key, **{"Content-Type": "application/json", "Accept": ACCEPT,
                              "Mcp-Session-Id": sid})

    def burst():
        for _ in range(8):
            r = http.post(server.url, data=body, headers=h)
            assert r.status_code == 200, r.text[:200]
    threads = [threading.Thread(target=burst) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    time.sleep(1)
    rss = {pid: rss_mib(pid) for pid in children(server.info["pid"])}
    assert rss and all(v < 160 for v in rss.values()), rss


# ---- 6. a spool file that lost its bytes -------------------------------------------------------

@pytest.mark.expect_log(r"GMCP0147")
@pytest.mark.parametrize("loss", ["removed", "truncated"])
def test_patch_refuses_a_spool_file_that_lost_bytes(server, loss):
    """A file gone or shorter than the recorded offset (a restore without the spool, a
    replaced disk) used to be padded with zeros up to the offset and completed with the
    original's hash. Now the PATCH is refused (410) and nothing is written."""
    url = create(server, 2000)
    assert patch(server, url, 0, b"a" * 1000).status_code == 204
    path = os.path.join(server.info["data_dir"], "uploads", url.rsplit("/", 1)[1])
    if loss == "removed":
        os.remove(path)
    else:
        os.truncate(path, 10)
    r = patch(server, url, 1000, b"b" * 1000)
    assert r.status_code == 410, r.text
    assert "start the upload over" in r.text
    assert os.path.exists(path) == (loss == "truncated")
    if loss == "truncated":
        assert os.path.getsize(path) == 10
    head = http.head(url, headers=tus(server.key))
    assert head.headers["Upload-Offset"] == "1000"
