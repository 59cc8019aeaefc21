"""Three httpd nodes on one PostgreSQL behind a round-robin balancer without stickiness
(test/start-cluster): the conformance referees and the official SDK clients through the
front, a chat continued across nodes, every node serving its share."""
import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from conftest import INIT_PARAMS, ROOT, check_logs, response_of
from test_clients import CONF_ALPHA, CONF_STABLE, node, referee

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


def test_chat_continued_across_nodes(cluster):
    """Six turns of one chat, each send on whichever node the balancer picks: the history
    is whole and in order (the chat lease and the history live in PostgreSQL)."""
    r = cluster.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS})
    sid = r.headers["Mcp-Session-Id"]

    def tool(name, args, rid):
        r = cluster.post({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                          "params": {"name": name, "arguments": args}}, session=sid)
        assert r.status_code == 200, r.text
        res = response_of(r, rid)["result"]
        assert not res.get("isError"), res
        return res["structuredContent"]

    chat = tool("gemini_chat_start", {"title": "across"}, 2)["session_id"]
    for i in range(6):
        tool("gemini_chat_send", {"session_id": chat, "message": f"turn {i}"}, 10 + i)
    hist = tool("gemini_chat_history", {"session_id": chat}, 99)["messages"]
    assert [m["role"] for m in hist] == ["user", "model"] * 6
    assert [m["text"] for m in hist[::2]] == [f"turn {i}" for i in range(6)]


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
    and another opens."""
    passed, out = referee(CONF_ALPHA, cluster.url, "--requirements", "2026-07-28",
                          failing_ok=("tasks-",))
    assert passed >= 160
