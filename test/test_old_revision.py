"""Clients of the revisions before 2025-11-25 on response streams.

The priming event (an SSE event with an `id`, `retry:` and empty `data`, SEP-1699) is a
2025-11-25 feature. SDKs of 2025-06-18 and 2025-03-26 JSON-parse the data of every SSE
event, so a primed stream makes them report an error on every streamed call. As the
official SDK server does, only sessions negotiated at >= 2025-11-25 are primed.

The client is the official TypeScript SDK 1.23.1 (npm alias sdk-2025-06-18): the newest
release whose LATEST_PROTOCOL_VERSION is 2025-06-18 and that still parses every event;
1.24.0, the only later one at 2025-06-18, already skips events without data.
"""
import json
import os
import subprocess

import pytest

from conftest import ACCEPT_BOTH, INIT_PARAMS, NODE22, ROOT, Server, sse_events

CLIENT = os.path.join(ROOT, "test", "clients", "old-revision.mjs")
PROGRESS_TEXT = "Tool with progress executed successfully"


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def server(request, fake_gemini_proc):
    """The fixtures module, test/fake-gemini behind the gemini_* tools, and API keys."""
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = Server(request.param, ["--fixtures", "--auth", "apikey",
                               "--gemini-url", fake_gemini_proc.url,
                               "--gemini-key", fake_gemini_proc.key])
    yield s
    s.stop()


def run_client(server):
    r = subprocess.run([NODE22, CLIENT, server.url, server.info["api_key"]],
                       capture_output=True, text=True, timeout=120,
                       cwd=os.path.join(ROOT, "test"))
    lines = r.stdout.strip().splitlines()
    assert lines, f"no output (exit {r.returncode}): {r.stderr}"
    return r, json.loads(lines[-1])


def test_sdk_2025_06_18_client_streams_without_errors(server, fake_gemini):
    r, out = run_client(server)
    # Every error the SDK reported (transport/client onerror, throws, console.error).
    assert out["errors"] == [], json.dumps(out["errors"], indent=1)
    assert r.returncode == 0 and out["ok"], r.stderr
    assert out["sdkLatest"] == "2025-06-18" and out["version"] == "2025-06-18"
    assert out["server"]["name"] == "mod_gemini_mcp"
    assert {"test_simple_text", "test_tool_with_progress", "gemini_generate"} <= set(out["tools"])
    assert out["listedAfter"] == len(out["tools"])
    assert out["simple"] == "This is a simple text response for testing."
    for key in ("progress", "progressAgain"):
        assert out[key] == {"text": PROGRESS_TEXT, "progress": [0, 50, 100]}
    gen = out["generate"]
    assert gen["text"] == "[gemini-2.5-flash] 1 turn(s); last: old revision"
    assert len(gen["progress"]) >= 2 and gen["progress"][-1] == gen["text"]


# ---- the wire, without an SDK ---------------------------------------------------------

def auth(server):
    return {"Authorization": f"Bearer {server.info['api_key']}"}


def open_session(server, version):
    params = dict(INIT_PARAMS, protocolVersion=version)
    r = server.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params},
                    headers=auth(server))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["protocolVersion"] == version
    sid = r.headers["Mcp-Session-Id"]
    # MCP-Protocol-Version exists since 2025-06-18; a 2025-03-26 client never sends it.
    hv = version if version >= "2025-06-18" else None
    r = server.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid,
                    headers=auth(server), version=hv)
    assert r.status_code == 202, r.text
    return sid, hv


STREAMED = [("test_tool_with_progress", {}),
            ("gemini_generate", {"prompt": "old revision"})]


def streamed_call(server, version, tool, args):
    sid, hv = open_session(server, version)
    r = server.rpc(sid, "tools/call", {"name": tool, "arguments": args,
                                       "_meta": {"progressToken": "p1"}},
                   rid=7, headers=dict(auth(server), Accept=ACCEPT_BOTH), version=hv)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events
    return events


@pytest.mark.parametrize("tool,args", STREAMED, ids=[t for t, _ in STREAMED])
@pytest.mark.parametrize("version", ["2025-06-18", "2025-03-26"])
def test_no_priming_event_before_2025_11_25(server, fake_gemini, version, tool, args):
    events = streamed_call(server, version, tool, args)
    # A block without a data line dispatches no event in any SSE parser (a bare
    # `retry:` would be harmless); every event that has data must carry a JSON message.
    dispatched = [e for e in events if "data" in e]
    assert dispatched, events
    assert dispatched[0]["data"].strip(), f"first event has empty data (priming): {events[0]}"
    msgs = []
    for e in dispatched:
        assert e["data"].strip(), f"event with empty data on a {version} stream: {e}"
        msgs.append(json.loads(e["data"]))
    assert msgs[0]["method"] == "notifications/progress", msgs[0]
    assert msgs[0]["params"]["progressToken"] == "p1"
    final = msgs[-1]
    assert final["id"] == 7 and not final["result"].get("isError"), final
    assert all(m.get("method") == "notifications/progress" for m in msgs[:-1])


@pytest.mark.parametrize("tool,args", STREAMED, ids=[t for t, _ in STREAMED])
def test_priming_event_on_2025_11_25(server, fake_gemini, tool, args):
    events = streamed_call(server, "2025-11-25", tool, args)
    first = events[0]
    assert first.get("data") == "" and first.get("id") and int(first["retry"]) > 0, first
    msgs = [json.loads(e["data"]) for e in events[1:] if e.get("data")]
    assert msgs[0]["method"] == "notifications/progress"
    assert msgs[-1]["id"] == 7 and not msgs[-1]["result"].get("isError"), msgs[-1]
