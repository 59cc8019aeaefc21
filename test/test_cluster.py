"""Three httpd nodes on one PostgreSQL behind a round-robin balancer without stickiness
(test/start-cluster): the conformance referees and the official SDK clients through the
front, a chat continued across nodes, an upload patched on several nodes and relayed by
another, sampling answered on another node, a stream resumed after its child was killed,
a node stopped and started under load, every node serving its share, the limits every
node counts in the database, and a node without the shared spool."""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import INIT_PARAMS, ROOT, check_logs, response_of
from test_clients import CONF_ALPHA, CONF_STABLE, TASK_SCENARIOS, node, referee
from test_uploads import make_file, sha256_file, tus_js

START_CLUSTER = os.path.join(ROOT, "test", "start-cluster")
NODES = 3


class Node:
    """A node's error log, as check_logs reads a server's."""

    def __init__(self, info):
        self.info = info
        self.log_pos = 0

    def new_log_lines(self):
        path = self.info["error_log"]
        if not os.path.exists(path):
            return []
        with open(path, errors="replace") as f:
            f.seek(self.log_pos)
            data = f.read()
            self.log_pos = f.tell()
        return data.splitlines()

    def access_count(self):
        with open(self.info["access_log"]) as f:
            return sum(1 for _ in f)


class Cluster:
    def __init__(self, *args):
        self.proc = subprocess.Popen([START_CLUSTER, "--nodes", str(NODES)] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("start-cluster failed: " + self.proc.stderr.read())
        self.info = json.loads(line)
        self.url = self.info["mcp"]
        self.nodes = [Node(n) for n in self.info["nodes"]]
        self.http = requests.Session()

    def post(self, body, session=None, version="2025-11-25"):
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": version}
        if session:
            h["Mcp-Session-Id"] = session
        if "api_key" in self.info:
            h["Authorization"] = "Bearer " + self.info["api_key"]
        return self.http.post(self.url, data=json.dumps(body), headers=h, timeout=60)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def cluster(request):
    request.getfixturevalue("pg_dsn")
    c = Cluster("--fixtures", "--fake-gemini", "--auth", "none")
    yield c
    c.stop()


@pytest.fixture(autouse=True)
def _node_logs(request, cluster):
    for n in cluster.nodes:
        n.new_log_lines()
    yield
    check_logs(request, cluster.nodes)


def test_every_node_serves(cluster):
    """Round-robin without stickiness: 30 requests of one session reach all three nodes
    (their access logs), and every one of them is answered."""
    before = [n.access_count() for n in cluster.nodes]
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    cluster.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid)
    for i in range(30):
        r = cluster.post({"jsonrpc": "2.0", "id": i + 2, "method": "tools/list"}, session=sid)
        assert r.status_code == 200, r.text
        assert response_of(r)["result"]["tools"]
    served = [n.access_count() - b for n, b in zip(cluster.nodes, before)]
    assert all(s >= 5 for s in served), served


def test_metrics_name_their_node(cluster):
    """One Prometheus job scrapes every node: each node's /status/metrics carries its
    GeminiMCPNodeName on every sample, and gmcp_node_info says which node it is."""
    for i, n in enumerate(cluster.info["nodes"]):
        text = requests.get(n["status"]["metrics"], timeout=10).text
        name = f"node-{i + 1}"
        assert re.search(r'^gmcp_node_info\{node="%s",version="[^"]+"\} 1$' % name, text, re.M)
        samples = [l for l in text.splitlines() if l and not l.startswith("#")]
        assert samples and all(l.startswith(re.split(r"[{ ]", l)[0] + '{node="%s"' % name)
                               for l in samples), samples[:5]


def test_deleted_session_refused_by_every_node(cluster):
    """DELETE on one node: the next requests of that session, whichever node they reach,
    are 404 at once."""
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]
    for i in range(6):                     # the session is known on every node first
        assert cluster.post({"jsonrpc": "2.0", "id": 2, "method": "ping"},
                            session=sid).status_code == 200
    before = [n.access_count() for n in cluster.nodes]
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    assert cluster.http.delete(cluster.url, headers=h, timeout=30).status_code in (200, 204)
    codes = [cluster.post({"jsonrpc": "2.0", "id": 3, "method": "ping"}, session=sid).status_code
             for _ in range(9)]
    assert codes == [404] * 9, codes
    assert all(n.access_count() > b for n, b in zip(cluster.nodes, before))


def test_log_level_set_on_one_node_holds_on_every_node(cluster):
    """logging/setLevel on one node: the next call, whichever node serves it, sends log
    notifications at the new level (no node answers from a copy of the old row)."""
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "test_tool_with_logging", "arguments": {}}}
    seen = []
    for i in range(6):
        level = "error" if i % 2 else "debug"
        for _ in range(3):                 # every node has just read the session
            assert cluster.post({"jsonrpc": "2.0", "id": 2, "method": "ping"},
                                session=sid).status_code == 200
        r = cluster.post({"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel",
                          "params": {"level": level}}, session=sid)
        assert r.status_code == 200, r.text
        r = cluster.post(call, session=sid)
        msgs = [m for _, m in sse_messages(r.text.splitlines())]
        logs = [m for m in msgs if m.get("method") == "notifications/message"]
        seen.append((level, len(logs)))
    assert all((n == 0) == (lvl == "error") for lvl, n in seen), seen


def test_revoked_key_refused_by_every_node_within_1s(pg_dsn):
    """gmcpctl keys revoke: within 1 s every node answers the key 401 (each node's
    children cache a key row for at most 0.5 s)."""
    c = Cluster("--auth", "apikey")
    nodes = [Node(n) for n in c.info["nodes"]]
    try:
        key = json.loads(subprocess.run(c.info["gmcpctl"] + ["--json", "keys", "create", "--name",
                                        "soon-revoked"], capture_output=True, text=True,
                                        check=True).stdout)
        c.info["api_key"] = key["secret"]
        r = c.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
        sid = r.headers["Mcp-Session-Id"]
        for i in range(9):                 # cached on every node
            assert c.post({"jsonrpc": "2.0", "id": 2, "method": "ping"},
                          session=sid).status_code == 200
        subprocess.run(c.info["gmcpctl"] + ["keys", "revoke", key["id"]], check=True,
                       capture_output=True)
        t0 = time.time()
        time.sleep(1.0)
        codes = [c.post({"jsonrpc": "2.0", "id": 3, "method": "ping"}, session=sid).status_code
                 for _ in range(9)]
        assert codes == [401] * 9, (codes, time.time() - t0)
    finally:
        c.stop()
    bad = [l for n in nodes for l in n.new_log_lines()
           if re.search(r"\[(\w+:)?(error|crit|alert|emerg)\]", l)]
    assert not bad, bad


def test_chat_continued_across_nodes(cluster):
    """Nine turns of one chat, each send on whichever node the balancer picks: the history
    is whole and in order (the chat lease and the history live in PostgreSQL)."""
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]

    def tool(name, args, rid):
        r = cluster.post({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                          "params": {"name": name, "arguments": args}}, session=sid)
        assert r.status_code == 200, r.text
        res = response_of(r, rid)["result"]
        assert not res.get("isError"), res
        return res

    chat = tool("gemini_chat_start", {"title": "across"}, 2)["structuredContent"]["session_id"]
    # Whichever node takes a send, Gemini gets the whole history (the reply counts it).
    for i in range(9):
        res = tool("gemini_chat_send", {"session_id": chat, "message": f"turn {i}"}, 10 + i)
        assert f"{2 * i + 1} turn(s); last: turn {i}" in res["content"][0]["text"], res
    hist = tool("gemini_chat_history", {"session_id": chat}, 99)["structuredContent"]["messages"]
    assert [m["role"] for m in hist] == ["user", "model"] * 9
    assert [m["text"] for m in hist[::2]] == [f"turn {i}" for i in range(9)]


def test_upload_patched_on_several_nodes_then_relayed(cluster, tmp_path):
    """tus-js-client in 1 MiB chunks through the front: the PATCHes land on different
    nodes, the shared spool holds the exact bytes, and gemini_upload_file (on whichever
    node) relays them into the Files API."""
    path = make_file(tmp_path, 6 * 1024 * 1024 + 7)
    out = tus_js(cluster, path, "", chunkSize=1024 * 1024)
    uid = out["url"].rstrip("/").rsplit("/", 1)[1]
    assert sha256_file(os.path.join(cluster.info["upload_dir"], uid)) == sha256_file(path)
    patched_on = [i for i, n in enumerate(cluster.nodes)
                  if any(f"PATCH /uploads/{uid}" in l for l in open(n.info["access_log"]))]
    assert len(patched_on) >= 2, patched_on
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]
    r = cluster.post({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "gemini_upload_file", "arguments": {"upload_id": uid}}},
                     session=sid)
    res = response_of(r, 2)["result"]
    assert not res.get("isError"), res
    sc = res["structuredContent"]
    assert sc["sha256"] == sha256_file(path) and sc["size"] == os.path.getsize(path)
    assert sc["state"] == "ACTIVE"


def free_port():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


@pytest.fixture
def stray_node(cluster):
    """A fourth node, outside the balancer, on the same database but with its own upload
    directory instead of the shared spool (the misconfiguration)."""
    argv = list(cluster.info["nodes"][1]["argv"])
    i = next(i for i in range(len(argv) - 1)
             if argv[i] == "--conf" and argv[i + 1].startswith("GeminiMCPUploadDir"))
    del argv[i:i + 2]
    p = subprocess.Popen(argv + ["--port", str(free_port())], stdout=subprocess.PIPE, text=True)
    info = json.loads(p.stdout.readline())
    yield info
    p.send_signal(signal.SIGTERM)
    p.wait(30)


@pytest.mark.expect_log(r"GMCP0148", r"GMCP0417")
def test_node_without_the_shared_spool_corrupts_nothing(cluster, stray_node):
    """A node whose GeminiMCPUploadDir is not the shared spool refuses to touch another
    node's upload (503 saying why, Retry-After), changes nothing, and the upload goes on
    elsewhere; an upload it made itself is refused the same way by the others."""
    tus = {"Tus-Resumable": "1.0.0"}
    good, stray = cluster.info["nodes"][0], stray_node
    r = requests.post(good["upload"], headers=dict(tus, **{"Upload-Length": "10"}))
    assert r.status_code == 201, r.text
    uid = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    shared = os.path.join(cluster.info["upload_dir"], uid)
    assert os.path.getsize(shared) == 0       # made with the upload

    def patch(n, data, offset=0):
        return requests.patch(n["upload"] + "/" + uid, data=data, headers=dict(
            tus, **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}))
    r = patch(stray, b"01234")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
    assert "upload spool is not the one" in r.text
    assert not os.path.exists(os.path.join(stray["data_dir"], "uploads", uid))
    r = requests.delete(stray["upload"] + "/" + uid, headers=tus)
    assert r.status_code == 503, r.text
    r = requests.head(good["upload"] + "/" + uid, headers=tus)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == "0"
    assert patch(cluster.info["nodes"][2], b"0123456789").status_code == 204
    with open(shared, "rb") as f:
        assert f.read() == b"0123456789"
    # Relaying from the stray node: a clear tool error, nothing sent to Gemini.
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": "2025-11-25"}
    r = requests.post(stray["mcp"], headers=h, data=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}))
    h["Mcp-Session-Id"] = r.headers["Mcp-Session-Id"]
    r = requests.post(stray["mcp"], headers=h, data=json.dumps(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "gemini_upload_file", "arguments": {"upload_id": uid}}}))
    res = response_of(r, 2)["result"]
    assert res["isError"] and "cannot reach the bytes" in res["content"][0]["text"], res
    # The other way round: an upload the stray node made lives in its own spool.
    r = requests.post(stray["upload"], headers=dict(tus, **{"Upload-Length": "3"}))
    assert r.status_code == 201, r.text
    uid = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    r = patch(good, b"abc")
    assert r.status_code == 503, r.text
    assert not os.path.exists(os.path.join(cluster.info["upload_dir"], uid))
    assert patch(stray, b"abc").status_code == 204


def test_sampling_and_elicitation_answered_on_another_node(cluster):
    """The call waits on one node, the client's answer reaches another (round-robin):
    the answer is stored in the database and the waiting call reads it there."""
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sid}
    rounds = []
    for i in range(6):
        tool, args = (("test_sampling", {"prompt": f"p{i}"}) if i % 2 else
                      ("test_elicitation", {"message": f"m{i}"}))
        logs = [open(n.info["access_log"]).read() for n in cluster.nodes]
        call = requests.post(cluster.url, headers=h, stream=True, timeout=60, data=json.dumps(
            {"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
             "params": {"name": tool, "arguments": args}}))
        lines = call.iter_lines(decode_unicode=True)
        req = sse_messages(lines, stop=lambda m: "method" in m)[-1][1]
        result = ({"role": "assistant", "model": "m", "content": {"type": "text",
                                                                    "text": f"answer {i}"}}
                  if i % 2 else {"action": "accept", "content": {"name": f"n{i}"}})
        a = cluster.http.post(cluster.url, headers=h, timeout=30, data=json.dumps(
            {"jsonrpc": "2.0", "id": req["id"], "result": result}))
        assert a.status_code == 202, a.text
        res = sse_messages(lines)[-1][1]
        assert res["id"] == 100 + i and not res["result"].get("isError"), res
        text = res["result"]["content"][0]["text"]
        assert (f"answer {i}" if i % 2 else f"n{i}") in text, text
        time.sleep(0.2)                    # both access log lines written
        new = [open(n.info["access_log"]).read()[len(old):] for n, old in zip(cluster.nodes, logs)]
        rounds.append(([j for j, t in enumerate(new) if f"tool={tool}" in t],
                       [j for j, t in enumerate(new) if "method=response" in t]))
    assert all(len(c) == 1 and len(a) == 1 for c, a in rounds), rounds
    assert sum(c != a for c, a in rounds) >= 3, rounds


def sse_messages(lines, stop=None):
    """(id, message) of each SSE event with data, until `stop(message)` is true."""
    out, cur_id, data = [], None, None
    for line in lines:
        if line.startswith("id: "):
            cur_id = line[4:]
        elif line.startswith("data: ") and line[6:].strip():
            data = json.loads(line[6:])
        elif line == "":
            if data is not None:
                out.append((cur_id, data))
                if stop and stop(data):
                    break
            data = None
    return out


@pytest.mark.expect_log(r"GMCP0116")
def test_stream_of_a_killed_child_resumed_on_another_node(cluster):
    """A call streams its progress through the front; the child answering it is
    SIGKILLed after the first progress event. Resumed with Last-Event-ID through the
    front, the client gets the events after the one it names, none twice, and then at
    once the request's error (its answering process is gone: nothing else will come);
    resuming after that error adds nothing."""
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]
    requests.post(cluster.info["fake_gemini"] + "/_fake/faults",
                  json={"mode": "slow_stream", "count": 1, "ms": 4000})
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sid}
    body = {"jsonrpc": "2.0", "id": 77, "method": "tools/call",
            "params": {"name": "gemini_generate", "arguments": {"prompt": "a long answer"},
                       "_meta": {"progressToken": "p"}}}
    post = requests.post(cluster.url, data=json.dumps(body), headers=h, stream=True, timeout=60)
    lines = post.iter_lines(decode_unicode=True)
    priming = next(l[4:] for l in lines if l.startswith("id: "))
    first = sse_messages(lines, stop=lambda m: m.get("method") == "notifications/progress")
    assert first and first[-1][1]["method"] == "notifications/progress", first
    stream_id = priming.split(".")[0]
    holder = sql(cluster, f"SELECT holder FROM mcp_streams WHERE id = '{stream_id}'")[0]
    os.kill(int(holder.split("/")[1]), signal.SIGKILL)
    wait_gone(int(holder.split("/")[1]))
    post.close()

    def resume(last):
        g = requests.get(cluster.url, timeout=30, headers={
            "Accept": "text/event-stream", "Mcp-Session-Id": sid,
            "MCP-Protocol-Version": "2025-11-25", "Last-Event-ID": last})
        assert g.status_code == 200, g.text
        return sse_messages(g.text.splitlines())
    t0 = time.time()
    got = resume(priming)
    assert time.time() - t0 < 10
    assert [m for _, m in got[:len(first)]] == [m for _, m in first]      # nothing lost
    last_id, last = got[-1]
    assert last["id"] == 77 and last["error"]["code"] == -32603, got
    assert "stopped before it answered" in last["error"]["message"]
    assert len([m for _, m in got if m.get("id") == 77]) == 1              # answered once
    assert resume(last_id) == []                                           # nothing again
    assert resume(first[-1][0]) == [(last_id, last)]


def test_node_stopped_and_started_under_load(cluster):
    """Four clients call tools/list through the front without pause while one node stops
    gracefully (SIGWINCH, httpd's graceful-stop) and later starts again on its port:
    every call is answered 200 (a client sends a call once more when its connection
    closed without any answer: a request the stopping node reset after the front had
    sent it; that is the only retry), the others serve meanwhile, the restarted node
    serves again."""
    stop, lock, results, retried = threading.Event(), threading.Lock(), [], []

    def client():
        http = requests.Session()
        h = {"Content-Type": "application/json",
             "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": "2025-11-25"}
        r = http.post(cluster.url, headers=h, timeout=30, data=json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}))
        h["Mcp-Session-Id"] = r.headers["Mcp-Session-Id"]
        while not stop.is_set():
            for attempt in (1, 2):
                try:
                    r = http.post(cluster.url, headers=h, timeout=30, data=json.dumps(
                        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
                    out = r.status_code
                    break
                except requests.ConnectionError as e:
                    out = repr(e)
                    if attempt == 1 and "without response" in out:
                        with lock:
                            retried.append(out)
                        continue
                    break
                except requests.RequestException as e:
                    out = repr(e)
                    break
            with lock:
                results.append(out)

    victim = cluster.info["nodes"][1]
    port = int(victim["base"].rsplit(":", 1)[1])
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    restarted = None
    try:
        time.sleep(1.5)
        os.kill(victim["pid"], signal.SIGWINCH)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                time.sleep(0.1)
            except OSError:
                break
        else:
            pytest.fail("the node did not stop")
        with lock:
            at_stop = len(results)
        time.sleep(1.5)
        with lock:
            while_down = len(results) - at_stop
        restarted = subprocess.Popen(victim["argv"], stdout=subprocess.PIPE, text=True)
        info = json.loads(restarted.stdout.readline())
        time.sleep(3)                      # the balancer tries it again after retry=1 s
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        bad = [r for r in results if r != 200]
        front_log = open(cluster.info["error_log"], errors="replace").read().splitlines()
        assert not bad and len(results) > 100, "\n".join([str(len(results))] + bad[:5]
                                                          + front_log[-12:])
        assert len(retried) <= 4, retried
        assert while_down > 20, while_down
        with open(info["access_log"]) as f:
            assert sum("tools/list" in l or "POST /mcp" in l for l in f) > 10
    finally:
        if restarted:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(30)


def test_typescript_sdk_clients_through_the_front(cluster):
    r = node(os.path.join(ROOT, "test", "clients", "sdk-client.mjs"), cluster.url)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["simple"] == "This is a simple text response for testing."
    assert out["progress"] == [0, 50, 100]
    assert out["sampling"] == "LLM response: sdk says: hi"
    r = node(os.path.join(ROOT, "test", "clients", "sdk2-client.mjs"), cluster.url, "auto")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["version"] == "2026-07-28"
    # The MRTR state sealed by one node is opened by another (GeminiMCPStateSecret).
    assert out["mrtr"] == "Hello, Ada!" and out["sampling"] == "LLM response: sampled"


def test_conformance_stable_suite_all_through_the_front(cluster):
    passed, out = referee(CONF_STABLE, cluster.url, "--suite", "all")
    assert passed >= 44


def test_conformance_alpha_2025_11_25_through_the_front(cluster):
    passed, out = referee(CONF_ALPHA, cluster.url, "--requirements", "2025-11-25")
    assert passed >= 80
    assert not re.search(r"^\s*✗", out, re.M)


def test_conformance_alpha_2026_07_28_through_the_front(cluster):
    """Including the three multi-round-trip scenarios, whose requestState one node seals
    and another opens, and the tasks scenarios: a task made on one node is polled,
    answered and cancelled through the others."""
    passed, out = referee(CONF_ALPHA, cluster.url, "--requirements", "2026-07-28")
    for scenario in TASK_SCENARIOS:
        assert re.search(rf"^✓ {scenario}:", out, re.M), scenario
    assert passed >= 190


# ---- limits every node counts in the database (GeminiMCPRateLimitStore dbd) -------------------

KEY_RATE = 1024 * 1024     # GeminiMCPUploadKeyRate of the dbd cluster, bytes/s


@pytest.fixture(scope="module")
def dbd_cluster(request):
    request.getfixturevalue("pg_dsn")
    c = Cluster("--auth", "apikey", "--fake-gemini", "--conf", "GeminiMCPRateLimitStore dbd",
                "--conf", f"GeminiMCPUploadKeyRate {KEY_RATE}")
    c.node_logs = [Node(n) for n in c.info["nodes"]]
    yield c
    c.stop()
    bad = [l for n in c.node_logs for l in n.new_log_lines()
           if re.search(r"\[(\w+:)?(error|crit|alert|emerg)\]", l)]
    assert not bad, bad


def key_of(c, *limits):
    out = subprocess.run(c.info["gmcpctl"] + ["--json", "keys", "create", "--name", "k"]
                         + list(limits), capture_output=True, text=True, check=True).stdout
    return json.loads(out)["secret"]


class Caller:
    """One MCP session of a key through the front, on its own connection."""

    def __init__(self, c, secret):
        self.c, self.http = c, requests.Session()
        self.h = {"Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25",
                  "Accept": "application/json, text/event-stream",
                  "Authorization": "Bearer " + secret}
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
        assert r.status_code == 200, r.text
        self.h["Mcp-Session-Id"] = r.headers["Mcp-Session-Id"]

    def post(self, body):
        return self.http.post(self.c.url, data=json.dumps(body), headers=self.h, timeout=60)

    def generate(self, prompt="hi"):
        return self.post({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                          "params": {"name": "gemini_generate", "arguments": {"prompt": prompt}}})


def reason(r):
    return r.json()["error"]["data"]["reason"] if r.status_code == 429 else None


def served_by_several(c, since):
    return sum(n.access_count() > b for n, b in zip(c.node_logs, since)) >= 2


def test_request_rate_holds_across_three_nodes(dbd_cluster):
    """6 clients on one key for 6 s through the front: accepted = burst + rate * time,
    within 5 % (each node alone would accept its own rate: about 3 times as many)."""
    c = dbd_cluster
    secret = key_of(c, "--rate", "30/s", "--burst", "10")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": "2025-11-25", "Authorization": "Bearer " + secret}

    def worker(_):
        http, n, end = requests.Session(), 0, time.time() + 6
        while time.time() < end:
            r = http.post(c.url, data=body, headers=h, timeout=30)
            assert r.status_code in (400, 429), r.text   # sessionless ping: 400 once admitted
            n += r.status_code != 429
        return n
    before = [n.access_count() for n in c.node_logs]
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        got = sum(ex.map(worker, range(6)))
    expected = 10 + 30 * (time.time() - t0)
    assert abs(got - expected) <= 0.05 * expected, (got, expected)
    assert all(n.access_count() - b > 30 for n, b in zip(c.node_logs, before))


def test_inflight_cap_is_exact_across_nodes(dbd_cluster):
    """max_inflight 2 and six slow calls at once on three nodes: exactly two run, four
    are refused; their slots are given back when they end."""
    c = dbd_cluster
    secret = key_of(c, "--max-inflight", "2")
    callers = [Caller(c, secret) for _ in range(6)]
    requests.post(c.info["fake_gemini"] + "/_fake/faults",
                  json={"mode": "latency", "count": 2, "ms": 2500})
    before = [n.access_count() for n in c.node_logs]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        rs = list(ex.map(lambda k: k.generate(), callers))
    assert sorted(r.status_code for r in rs) == [200, 200, 429, 429, 429, 429], \
        [r.text for r in rs]
    assert all(reason(r) == "inflight" for r in rs if r.status_code == 429)
    assert served_by_several(c, before)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        again = list(ex.map(lambda k: k.generate(), callers[:2]))
    assert [r.status_code for r in again] == [200, 200], [r.text for r in again]


def test_inflight_slots_never_leak_on_any_path(dbd_cluster):
    """Far more requests than DBDMax (16 per child) on a key whose in-flight count is
    kept in the database, through every kind of answer — served, a JSON-RPC error, a
    malformed body, an unknown session — leave no slot held and no connection lost:
    the table is empty afterwards and the cap still admits exactly its two calls."""
    c = dbd_cluster
    secret = key_of(c, "--max-inflight", "2")
    k = Caller(c, secret)
    h = dict(k.h, **{"Mcp-Session-Id": "no-such-session"})
    for i in range(4 * 16 * NODES):
        kind = i % 4
        if kind == 0:
            r = k.post({"jsonrpc": "2.0", "id": i, "method": "tools/list"})
            assert r.status_code == 200, r.text
        elif kind == 1:
            r = k.post({"jsonrpc": "2.0", "id": i, "method": "no/such/method"})
            assert r.status_code == 200 and "error" in response_of(r), r.text
        elif kind == 2:
            r = k.http.post(c.url, data="{not json", headers=k.h, timeout=30)
            assert r.status_code == 400, r.text
        else:
            r = k.http.post(c.url, data=json.dumps({"jsonrpc": "2.0", "id": i,
                                                    "method": "ping"}), headers=h, timeout=30)
            assert r.status_code == 404, r.text
    assert sql(c, "SELECT COUNT(*) FROM inflight_leases") == ["0"]
    callers = [k] + [Caller(c, secret) for _ in range(2)]
    requests.post(c.info["fake_gemini"] + "/_fake/faults",
                  json={"mode": "latency", "count": 2, "ms": 1500})
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        rs = list(ex.map(lambda x: x.generate(), callers))
    assert sorted(r.status_code for r in rs) == [200, 200, 429], [r.text for r in rs]


def wait_gone(pid, seconds=10):
    """Until `pid` is a zombie or gone (a big process, ASan's, takes a while to die)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    pytest.fail(f"pid {pid} did not die")


def sql(c, query):
    params = re.search(r'DBDParams "([^"]*)"', open(c.info["conf"]).read()).group(1)
    out = subprocess.run(["psql", "-X", "-A", "-t", params, "-c", query], capture_output=True,
                         text=True, check=True).stdout
    return [l for l in out.splitlines() if l]


def test_inflight_slot_of_a_killed_child_is_free_at_once(dbd_cluster):
    """A child SIGKILLed while it holds the key's only slot: the next call, on any node,
    takes the slot over (its holder is dead on this host) instead of waiting for the
    30 s expiry; and a slot whose holder is alive stays held."""
    c = dbd_cluster
    secret = key_of(c, "--max-inflight", "1")
    kid = secret.split("_")[1]
    a, b = Caller(c, secret), Caller(c, secret)
    requests.post(c.info["fake_gemini"] + "/_fake/faults",
                  json={"mode": "hang", "count": 1, "seconds": 20})
    def held():
        try:
            a.generate("held")
        except requests.ConnectionError:
            pass                       # its child was killed: no answer
    threading.Thread(target=held, daemon=True).start()
    deadline, holder = time.time() + 10, []
    while not holder and time.time() < deadline:
        time.sleep(0.1)
        holder = sql(c, f"SELECT holder FROM inflight_leases WHERE key_id = '{kid}'")
    assert holder, "the slow call holds no slot"
    r = b.generate()
    assert reason(r) == "inflight", r.text
    pid = int(holder[0].split("/")[1])
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    r = b.generate()
    assert r.status_code == 200, r.text
    assert sql(c, f"SELECT count(*) FROM inflight_leases WHERE key_id = '{kid}'") == ["0"]
    requests.post(c.info["fake_gemini"] + "/_fake/reset")


def test_token_rate_holds_across_nodes(dbd_cluster):
    """--token-rate 120/s: each call spends 6 tokens (the fake's 1 + 5), so 3 clients for
    5 s get (burst 120 + 120/s * time) / 6 calls through, within 5 %."""
    c = dbd_cluster
    secret = key_of(c, "--token-rate", "120/s")
    callers = [Caller(c, secret) for _ in range(3)]

    def worker(k):
        n, end = 0, time.time() + 5
        while time.time() < end:
            r = k.generate()
            assert r.status_code == 200 or reason(r) == "tokens", r.text
            n += r.status_code == 200
        return n
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        got = sum(ex.map(worker, callers))
    expected = (120 + 120 * (time.time() - t0)) / 6
    assert abs(got - expected) <= 0.05 * expected, (got, expected)


def test_token_quota_holds_across_nodes(dbd_cluster):
    """A 30-token daily quota, calls of 6 tokens on whichever node: exactly five pass
    (each node writes a call's tokens before it answers, not at its next usage flush)."""
    c = dbd_cluster
    k = Caller(c, key_of(c, "--token-quota", "30/day"))
    codes = [k.generate() for _ in range(8)]
    assert [r.status_code for r in codes] == [200] * 5 + [429] * 3, [r.text for r in codes]
    assert all(reason(r) == "quota" for r in codes[5:])


def test_upload_bandwidth_holds_across_nodes(dbd_cluster):
    """Three uploads of one key at once, on different nodes, under GeminiMCPUploadKeyRate
    1 MiB/s: together they take (bytes - burst) / rate, within 5 %."""
    c = dbd_cluster
    secret = key_of(c)
    size = 2 * 1024 * 1024
    tus = {"Tus-Resumable": "1.0.0", "Authorization": "Bearer " + secret}
    urls = []
    for _ in range(3):
        r = requests.post(c.info["upload"], headers=dict(tus, **{"Upload-Length": str(size)}))
        assert r.status_code == 201, r.text
        urls.append(r.headers["Location"])
    data = os.urandom(size)

    def send(url):
        return requests.patch(url, data=data, timeout=60, headers=dict(
            tus, **{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}))
    before = [n.access_count() for n in c.node_logs]
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        rs = list(ex.map(send, urls))
    took = time.time() - t0
    assert [r.status_code for r in rs] == [204] * 3, [r.text for r in rs]
    want = (3 * size - max(65536, KEY_RATE // 10)) / KEY_RATE
    assert abs(took - want) <= 0.05 * want, (took, want)
    assert served_by_several(c, before)
