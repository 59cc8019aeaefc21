"""SSE responses, Last-Event-ID resumption, server→client requests across processes,
cancellation, restarts and session expiry."""
import json
import re
import threading
import time

import requests

from conftest import response_of, sse_events


def call(server, sid, tool, args=None, rid=1, token=None, stream=False):
    params = {"name": tool, "arguments": args or {}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return server.rpc(sid, "tools/call", params, rid=rid, stream=stream)


def test_progress_stream(server):
    sid = server.initialize()
    r = call(server, sid, "test_tool_with_progress", token="tok-1")
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["X-Accel-Buffering"] == "no"
    events = sse_events(r)
    prime = events[0]
    assert prime["id"].endswith(".0") and prime["retry"] == "1000" and prime.get("data", "") == ""
    stream = prime["id"][:-2]
    msgs = [json.loads(e["data"]) for e in events[1:]]
    prog = [m["params"] for m in msgs if m.get("method") == "notifications/progress"]
    assert len(prog) == 3 and all(p["progressToken"] == "tok-1" for p in prog)
    assert [p["progress"] for p in prog] == [0, 50, 100] and prog[0]["total"] == 100
    assert msgs[-1]["id"] == 1 and msgs[-1]["result"]["content"][0]["text"]
    seqs = [int(e["id"].rsplit(".", 1)[1]) for e in events[1:]]
    assert all(e["id"].startswith(stream + ".") for e in events[1:])
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_logging_respects_level(server):
    sid = server.initialize()
    assert server.rpc(sid, "logging/setLevel", {"level": "debug"}).json()["result"] == {}
    msgs = [json.loads(e["data"]) for e in sse_events(call(server, sid, "test_tool_with_logging"))
            if e.get("data")]
    logs = [m for m in msgs if m.get("method") == "notifications/message"]
    assert len(logs) == 3 and logs[0]["params"]["level"] == "info"
    assert logs[0]["params"]["data"] == "Tool execution started"
    server.rpc(sid, "logging/setLevel", {"level": "error"})
    msgs = [json.loads(e["data"]) for e in sse_events(call(server, sid, "test_tool_with_logging"))
            if e.get("data")]
    assert not [m for m in msgs if m.get("method") == "notifications/message"]
    assert "result" in msgs[-1]


def resume(server, sid, last_id, headers=None):
    h = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "Last-Event-ID": last_id}
    h.update(headers or {})
    return requests.get(server.url, headers=h, timeout=30)


def test_detached_stream_resumes_with_last_event_id(server):
    sid = server.initialize()
    r = call(server, sid, "test_reconnection", rid=41)
    events = sse_events(r)
    assert len(events) == 1 and events[0].get("data", "") == ""   # closed before the result
    g = resume(server, sid, events[0]["id"])
    assert g.status_code == 200 and g.headers["Content-Type"].startswith("text/event-stream")
    msgs = [json.loads(e["data"]) for e in sse_events(g) if e.get("data")]
    assert msgs[-1]["id"] == 41
    assert msgs[-1]["result"]["content"][0]["text"] == "Reconnection test completed successfully"


def test_resume_replays_only_later_events(server):
    sid = server.initialize()
    events = [e for e in sse_events(call(server, sid, "test_tool_with_progress", token=7))
              if e.get("data")]
    assert len(events) == 4
    g = resume(server, sid, events[0]["id"])
    replay = [e for e in sse_events(g) if e.get("data")]
    assert [e["id"] for e in replay] == [e["id"] for e in events[1:]]
    assert [e["data"] for e in replay] == [e["data"] for e in events[1:]]
    # Resuming after the last event of a finished stream ends at once.
    assert [e for e in sse_events(resume(server, sid, events[-1]["id"])) if e.get("data")] == []


def test_get_errors(server):
    sid = server.initialize()
    r = requests.get(server.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid})
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert r.json()["error"]["code"] == -32000
    r = requests.get(server.url, headers={"Accept": "application/json", "Mcp-Session-Id": sid})
    assert r.status_code == 406
    assert resume(server, sid, "garbage").status_code == 400
    assert resume(server, sid, "nostream.3").status_code == 400
    assert requests.get(server.url, headers={"Accept": "text/event-stream"}).status_code == 400
    # Another session's stream is not replayed.
    other = server.initialize()
    first = sse_events(call(server, other, "test_reconnection"))[0]["id"]
    assert resume(server, sid, first).status_code == 400
    assert server.ping_ok(sid)


def start_call(server, sid, tool, args, rid):
    """Open a tool call's SSE stream and read up to the server's request."""
    r = call(server, sid, tool, args, rid=rid, stream=True)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    lines = r.iter_lines(decode_unicode=True)
    data = None
    for line in lines:
        if line and line.startswith("data: ") and len(line) > 6:
            data = json.loads(line[6:])
            break
    assert data and "method" in data, data
    return r, lines, data


def rest_of(lines):
    out = []
    for line in lines:
        if line and line.startswith("data: ") and len(line) > 6:
            out.append(json.loads(line[6:]))
    return out


def answer(server, sid, req_id, result=None, error=None):
    body = {"jsonrpc": "2.0", "id": req_id}
    if error:
        body["error"] = error
    else:
        body["result"] = result
    return server.post(body, session=sid)


def _rendezvous_pids(server):
    calls = [re.search(r"pid=(\d+)", l).group(1) for l in server.access_lines()
             if "tool=test_sampling" in l]
    answers = [re.search(r"pid=(\d+)", l).group(1) for l in server.access_lines()
               if "method=response" in l and '" 202 ' in l]
    return calls, answers


def test_sampling_rendezvous_across_processes(server):
    sid = server.initialize()
    # At least 16 rounds; more (up to 64) while every call and its answer happened to land
    # in the same process: Linux wakes the most recent waiter on a shared listening
    # socket, so one child may take many connections in a row.
    for i in range(64):
        if i >= 16:
            calls, answers = _rendezvous_pids(server)
            if any(c != a for c, a in zip(calls[-16:], answers[-16:])):
                break
        r, lines, req = start_call(server, sid, "test_sampling", {"prompt": f"hello {i}"}, rid=i)
        assert req["method"] == "sampling/createMessage"
        assert req["params"]["messages"][0]["content"]["text"] == f"hello {i}"
        a = answer(server, sid, req["id"], {"role": "assistant", "model": "m",
                                            "content": {"type": "text", "text": f"answer {i}"}})
        assert a.status_code == 202
        msgs = rest_of(lines)
        assert msgs[-1]["id"] == i
        assert msgs[-1]["result"]["content"][0]["text"] == f"LLM response: answer {i}"
        # A late duplicate answer finds nothing waiting.
        assert answer(server, sid, req["id"], {}).status_code == 400
    # The answers were stored by whichever process got them; the waiting call read
    # them from SQL. Show that calls and answers ran in different processes.
    calls, answers = _rendezvous_pids(server)
    assert len(set(calls + answers)) >= 2
    assert any(c != a for c, a in zip(calls[-16:], answers[-16:]))
    assert server.sql("SELECT count(*) FROM mcp_pending") == ["0"]


def test_elicitation_decline_and_client_error(server):
    sid = server.initialize()
    r, lines, req = start_call(server, sid, "test_elicitation", {"message": "who?"}, rid=5)
    assert req["method"] == "elicitation/create"
    assert req["params"]["requestedSchema"]["type"] == "object"
    answer(server, sid, req["id"], {"action": "decline"})
    res = rest_of(lines)[-1]["result"]
    assert "decline" in res["content"][0]["text"]

    r, lines, req = start_call(server, sid, "test_sampling", {"prompt": "x"}, rid=6)
    answer(server, sid, req["id"], error={"code": -1, "message": "user rejected"})
    res = rest_of(lines)[-1]["result"]
    assert res["isError"] is True and "user rejected" in res["content"][0]["text"]


def test_missing_client_capability_is_tool_error(server):
    sid = server.initialize(caps={})
    res = response_of(call(server, sid, "test_sampling", {"prompt": "x"}))["result"]
    assert res["isError"] is True and "sampling" in res["content"][0]["text"]


def test_cancellation_stops_the_call(server):
    sid = server.initialize()
    r, lines, req = start_call(server, sid, "test_sampling", {"prompt": "x"}, rid="c-1")
    n = server.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": "c-1", "reason": "user"}}, session=sid)
    assert n.status_code == 202
    t0 = time.time()
    msgs = rest_of(lines)                       # the stream ends without a response
    assert time.time() - t0 < 5
    assert not [m for m in msgs if m.get("id") == "c-1"]
    assert server.sql("SELECT count(*) FROM mcp_pending") == ["0"]
    assert server.ping_ok(sid)


def test_client_request_timeout(start):
    s = start("sqlite", "--fixtures", "--location-conf", "GeminiMCPClientRequestTimeout 1")
    sid = s.initialize()
    t0 = time.time()
    res = response_of(call(s, sid, "test_sampling", {"prompt": "x"}))["result"]
    assert 0.9 < time.time() - t0 < 5
    assert res["isError"] is True and "timed out" in res["content"][0]["text"]
    assert s.sql("SELECT count(*) FROM mcp_pending") == ["0"]


def test_session_survives_graceful_restart(server):
    sid = server.initialize()
    server.rpc(sid, "logging/setLevel", {"level": "debug"})
    first = sse_events(call(server, sid, "test_reconnection", rid=77))[0]["id"]
    server.graceful_restart()
    assert server.ping_ok(sid)
    msgs = [json.loads(e["data"]) for e in sse_events(resume(server, sid, first)) if e.get("data")]
    assert msgs[-1]["id"] == 77


def test_idle_sessions_expire_and_are_swept(start, request):
    db = "sqlite"
    s = start(db, "--fixtures", "--conf", "GeminiMCPSessionIdleTimeout 2")
    old = s.initialize()
    assert s.ping_ok(old)
    time.sleep(3.2)
    assert s.rpc(old, "ping").status_code == 404
    # Requests sweep expired sessions (at most every idle-timeout seconds per process).
    for _ in range(6):
        s.initialize()
    assert s.sql(f"SELECT count(*) FROM mcp_sessions WHERE id = '{old}'") == ["0"]


def test_concurrent_requests_on_one_session(server):
    sid = server.initialize()
    results, errors = [], []

    def worker(i):
        try:
            r = call(server, sid, "test_tool_with_progress", token=i, rid=i)
            results.append(response_of(r, rid=i)["id"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == list(range(8))
