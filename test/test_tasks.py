"""MCP tasks (io.modelcontextprotocol/tasks on 2026-07-28) beyond the conformance
referee (whose ten scenarios test_clients.py and test_cluster.py run): a task runs on
a worker after its answer was sent and is kept in SQL; its owner alone sees it (another
key gets what an unknown id gets); a cancel stops a running tool within a second; a
task whose child process is SIGKILLed is failed with a clear error, never left
working; gmcpctl cleanup sweeps tasks past their TTL; no task without the extension,
on a 2025-11-25 session, or with GeminiMCPTaskWorkers 0. On SQLite and PostgreSQL,
through httpd with 2 child processes."""
import json
import os
import signal
import time

import pytest
import requests

from conftest import ACCEPT_BOTH, Server, check_logs

V = "2026-07-28"
EXT = "io.modelcontextprotocol/tasks"
TASK_CAPS = {"elicitation": {}, "extensions": {EXT: {}}}


def post(s, key, method, params=None, caps=TASK_CAPS, rid=1):
    params = dict(params or {})
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": V,
                       "io.modelcontextprotocol/clientCapabilities": caps,
                       "io.modelcontextprotocol/clientInfo": {"name": "pytest", "version": "1"}}
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
         "MCP-Protocol-Version": V, "Mcp-Method": method}
    name = params.get("taskId") if method.startswith("tasks/") else params.get("name")
    if name is not None:
        h["Mcp-Name"] = name
    if key:
        h["Authorization"] = f"Bearer {key}"
    r = requests.post(s.url, data=json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                              "params": params}), headers=h, timeout=30)
    return r.json()


def start_task(s, key, tool, args):
    r = post(s, key, "tools/call", {"name": tool, "arguments": args})
    assert r["result"]["resultType"] == "task", r
    return r["result"]


def get(s, key, task_id):
    return post(s, key, "tasks/get", {"taskId": task_id})


def wait_for(s, key, task_id, statuses, timeout=15):
    end = time.time() + timeout
    while True:
        r = get(s, key, task_id)["result"]
        if r["status"] in statuses or time.time() > end:
            return r
        time.sleep(0.1)


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def srv(request):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = Server(request.param, ["--fixtures", "--auth", "apikey"])
    out = s.gmcpctl_run("--json", "keys", "create", "--name", "other").stdout
    s.other_key = json.loads(out)["secret"]
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _srv_logs(request):
    if "srv" not in request.fixturenames:
        yield
        return
    s = request.getfixturevalue("srv")
    s.new_log_lines()
    yield
    check_logs(request, [s])


def test_a_task_runs_after_its_answer_and_is_kept(srv):
    key = srv.info["api_key"]
    t0 = time.time()
    task = start_task(srv, key, "slow_compute", {"seconds": 1.5, "label": "kept"})
    assert time.time() - t0 < 1.0                   # answered before the work is done
    assert task["status"] == "working" and task["ttlMs"] == 3600 * 1000
    assert len(task["taskId"]) >= 22                # 128 random bits, base64url
    done = wait_for(srv, key, task["taskId"], ("completed",))
    assert done["status"] == "completed", done
    assert done["result"]["content"][0]["text"] == "Computed kept in 1.5 s"
    assert "pollIntervalMs" not in done and done["resultType"] == "complete"
    row = srv.sql(f"SELECT status, tool FROM mcp_tasks WHERE id = '{task['taskId']}'")
    assert row == ["completed|slow_compute"], row


def test_another_key_sees_no_task(srv):
    key, other = srv.info["api_key"], srv.other_key
    task = start_task(srv, key, "slow_compute", {"seconds": 30, "label": "mine"})
    tid = task["taskId"]
    unknown = get(srv, other, "no-such-task")
    assert unknown["error"]["code"] == -32602
    for method, extra in (("tasks/get", {}), ("tasks/update", {"inputResponses": {}}),
                          ("tasks/cancel", {})):
        r = post(srv, other, method, dict({"taskId": tid}, **extra))
        assert r["error"]["code"] == -32602 and r["error"]["message"] == \
            unknown["error"]["message"], (method, r)
    # The other key's cancel did nothing; the owner's does.
    assert get(srv, key, tid)["result"]["status"] == "working"
    assert post(srv, key, "tasks/cancel", {"taskId": tid})["result"] == {"resultType": "complete"}
    assert wait_for(srv, key, tid, ("cancelled",))["status"] == "cancelled"


def test_cancel_stops_a_running_tool_within_a_second(srv):
    key = srv.info["api_key"]
    tid = start_task(srv, key, "slow_compute", {"seconds": 60, "label": "long"})["taskId"]
    time.sleep(0.5)
    t0 = time.time()
    post(srv, key, "tasks/cancel", {"taskId": tid})
    r = wait_for(srv, key, tid, ("cancelled",), timeout=5)
    assert r["status"] == "cancelled" and time.time() - t0 < 1.0, (r, time.time() - t0)
    assert "result" not in r and "error" not in r
    # A cancel of a task that ended is acknowledged and changes nothing.
    assert post(srv, key, "tasks/cancel", {"taskId": tid})["result"] == {"resultType": "complete"}
    assert get(srv, key, tid)["result"]["status"] == "cancelled"


def test_input_requests_and_answers(srv):
    key = srv.info["api_key"]
    tid = start_task(srv, key, "confirm_delete", {"filename": "a.txt"})["taskId"]
    r = wait_for(srv, key, tid, ("input_required",))
    (k, req), = r["inputRequests"].items()
    assert req["method"] == "elicitation/create" and req["params"]["message"] == "Delete a.txt?"
    # Another key cannot answer it; an unknown key is ignored.
    post(srv, srv.other_key, "tasks/update", {"taskId": tid, "inputResponses": {
        k: {"action": "decline"}}})
    post(srv, key, "tasks/update", {"taskId": tid, "inputResponses": {"zz": {"action": "x"}}})
    assert get(srv, key, tid)["result"]["status"] == "input_required"
    ack = post(srv, key, "tasks/update", {"taskId": tid, "inputResponses": {
        k: {"action": "accept", "content": {"confirm": True}}}})
    assert ack["result"] == {"resultType": "complete"}
    done = wait_for(srv, key, tid, ("completed",))
    assert done["result"]["content"][0]["text"] == "Deleted a.txt"


def test_a_task_whose_child_is_killed_is_failed_not_stuck(srv):
    key = srv.info["api_key"]
    tid = start_task(srv, key, "slow_compute", {"seconds": 60, "label": "doomed"})["taskId"]
    holder = srv.sql(f"SELECT holder FROM mcp_tasks WHERE id = '{tid}'")[0]
    pid = int(holder.split("/")[1])               # "<host>/<pid>/<start>/<random>"
    with open(f"/proc/{pid}/stat") as f:          # a child of the httpd this test started
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == srv.info["pid"]
    os.kill(pid, signal.SIGKILL)
    r = wait_for(srv, key, tid, ("failed",), timeout=10)
    assert r["status"] == "failed", r
    assert r["error"]["code"] == -32603 and "stopped" in r["error"]["message"]
    assert "stopped" in r["statusMessage"]
    # The server goes on serving (httpd made a new child).
    assert start_task(srv, key, "slow_compute", {"seconds": 0, "label": "after"})["taskId"]


def test_cleanup_sweeps_tasks_past_their_ttl(srv):
    key = srv.info["api_key"]
    tid = start_task(srv, key, "slow_compute", {"seconds": 0, "label": "old"})["taskId"]
    wait_for(srv, key, tid, ("completed",))
    srv.sql(f"UPDATE mcp_tasks SET expires = 1000 WHERE id = '{tid}'")
    dry = json.loads(srv.gmcpctl_run("--json", "cleanup", "--dry-run").stdout)
    assert dry["tasks"] == 1
    # Past its TTL it is not served any more, though the row is there until cleanup.
    assert get(srv, key, tid)["error"]["code"] == -32602
    assert srv.sql(f"SELECT id FROM mcp_tasks WHERE id = '{tid}'") == [tid]
    srv.gmcpctl_run("cleanup")
    assert srv.sql(f"SELECT id FROM mcp_tasks WHERE id = '{tid}'") == []
    assert get(srv, key, tid)["error"]["code"] == -32602


def test_no_task_without_the_extension(srv):
    key = srv.info["api_key"]
    r = post(srv, key, "tools/call", {"name": "slow_compute",
                                      "arguments": {"seconds": 0, "label": "sync"}},
             caps={"elicitation": {}})
    assert r["result"]["resultType"] == "complete" and "taskId" not in r["result"]
    r = post(srv, key, "tools/call", {"name": "failing_job", "arguments": {}},
             caps={"elicitation": {}})
    assert r["error"]["code"] == -32021
    assert r["error"]["data"] == {"requiredCapabilities": {"extensions": {EXT: {}}}}
    r = post(srv, key, "tasks/get", {"taskId": "x"}, caps={})
    assert r["error"]["code"] == -32021
    # A 2025-11-25 session: the extension does not apply; the tool runs at once.
    auth = {"Authorization": f"Bearer {key}"}
    r = srv.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "clientInfo": {"name": "pytest", "version": "1"},
        "capabilities": {"elicitation": {}, "extensions": {EXT: {}}}}}, headers=auth)
    sid = r.headers["Mcp-Session-Id"]
    srv.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid, headers=auth)
    r = srv.post({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                  "params": {"name": "failing_job", "arguments": {}}}, session=sid, headers=auth)
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["isError"] is True and "taskId" not in res and "resultType" not in res


def test_tasks_off(start):
    s = start("sqlite", "--fixtures", "--conf", "GeminiMCPTaskWorkers 0")
    disc = post(s, None, "server/discover")
    assert "extensions" not in disc["result"]["capabilities"]
    r = post(s, None, "tools/call", {"name": "slow_compute",
                                     "arguments": {"seconds": 0, "label": "off"}})
    assert r["result"]["resultType"] == "complete"
    assert post(s, None, "tasks/get", {"taskId": "x"})["error"]["code"] == -32601
