"""MCP 2026-07-28 (stateless revision) on the same endpoint as 2025-11-25 sessions."""
import json
import socket
import time

import pytest
import requests

from conftest import ACCEPT_BOTH, response_of, sse_events

V = "2026-07-28"
CAPS = {"sampling": {}, "elicitation": {}, "roots": {}}


def meta(caps=None, **extra):
    m = {"io.modelcontextprotocol/protocolVersion": V,
         "io.modelcontextprotocol/clientCapabilities": CAPS if caps is None else caps,
         "io.modelcontextprotocol/clientInfo": {"name": "pytest", "version": "1"}}
    m.update(extra)
    return m


def name_of(method, params):
    if method in ("tools/call", "prompts/get"):
        return params.get("name")
    if method == "resources/read":
        return params.get("uri")
    return None


def call(server, method, params=None, rid=1, headers=None, caps=None, meta_extra=None,
         stream=False, raw_meta=False):
    params = dict(params or {})
    if not raw_meta:
        params["_meta"] = meta(caps, **(meta_extra or {}))
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
         "MCP-Protocol-Version": V, "Mcp-Method": method}
    n = name_of(method, params)
    if n is not None:
        h["Mcp-Name"] = n
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    return requests.post(server.url, data=json.dumps(body), headers=h, stream=stream,
                         timeout=30)


def result(r, rid=1):
    msg = response_of(r, rid)
    assert "result" in msg, msg
    return msg["result"]


def error(r):
    body = r.json()
    return body["error"]


def test_discover_and_decorated_results(server):
    r = call(server, "server/discover", rid=7)
    assert r.status_code == 200
    res = result(r, 7)
    assert "2026-07-28" in res["supportedVersions"] and "2025-11-25" in res["supportedVersions"]
    assert {"tools", "resources", "prompts"} <= set(res["capabilities"])
    assert res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mod_gemini_mcp"
    assert res["resultType"] == "complete" and res["cacheScope"] in ("public", "private")
    for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
        res = result(call(server, method))
        assert res["resultType"] == "complete"
        assert isinstance(res["ttlMs"], int) and res["ttlMs"] >= 0
        assert res["cacheScope"] in ("public", "private")
    res = result(call(server, "resources/read", {"uri": "test://static-text"}))
    assert res["ttlMs"] == 0 and res["contents"][0]["text"]
    res = result(call(server, "tools/call", {"name": "test_simple_text", "arguments": {}}))
    assert res["resultType"] == "complete" and "ttlMs" not in res


def test_no_session_state_is_created(server):
    before = server.sql("SELECT count(*) FROM mcp_sessions")
    for _ in range(3):
        assert call(server, "tools/list").status_code == 200
    assert server.sql("SELECT count(*) FROM mcp_sessions") == before


@pytest.mark.parametrize("drop", ["_meta", "io.modelcontextprotocol/protocolVersion",
                                  "io.modelcontextprotocol/clientCapabilities"])
def test_missing_meta_is_400_32602(server, drop):
    params = {} if drop == "_meta" else {"_meta": {k: v for k, v in meta().items() if k != drop}}
    r = call(server, "server/discover", params, rid=101, raw_meta=True)
    assert r.status_code == 400
    assert error(r)["code"] == -32602 and r.json()["id"] == 101


def test_client_info_is_optional(server):
    m = meta()
    del m["io.modelcontextprotocol/clientInfo"]
    r = call(server, "server/discover", {"_meta": m}, raw_meta=True)
    assert r.status_code == 200 and "result" in r.json()


def test_unsupported_version_is_32022(server):
    r = call(server, "server/discover", meta_extra={
        "io.modelcontextprotocol/protocolVersion": "v999.0.0"},
        headers={"MCP-Protocol-Version": "v999.0.0"}, rid=301)
    assert r.status_code == 400
    err = error(r)
    assert err["code"] == -32022 and err["data"] == {"supported": [V], "requested": "v999.0.0"}


@pytest.mark.parametrize("headers", [
    {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "prompts/list"},   # method mismatch
    {"Mcp-Method": None},                                                   # missing method
    {"Mcp-Method": "TOOLS/LIST"},                                           # case matters
])
def test_header_mismatch_is_32020(server, headers):
    r = call(server, "tools/list", headers=headers)
    assert r.status_code == 400 and error(r)["code"] == -32020


def test_version_header_must_match_meta(server):
    r = call(server, "server/discover", meta_extra={
        "io.modelcontextprotocol/protocolVersion": "v999.0.0"})
    assert r.status_code == 400 and error(r)["code"] == -32020


def test_mcp_name_checks(server):
    p = {"name": "test_simple_text", "arguments": {}}
    assert call(server, "tools/call", p, headers={"Mcp-Name": "other"}).status_code == 400
    assert call(server, "tools/call", p, headers={"Mcp-Name": None}).status_code == 400
    assert call(server, "tools/call", p, headers={"Mcp-Name": "test_simple_text \t "}
                ).status_code == 200
    assert call(server, "tools/call", p, headers={"mcp-method": "tools/call"}).status_code == 200


@pytest.mark.parametrize("value,ok", [
    ("eu", True),
    ("=?base64?ZXU=?=", True),           # "eu"
    ("=?base64?ZXU?=", False),           # bad padding
    ("=?base64?Z!U=?=", False),          # not the alphabet
    ("=?base64?ZXU=", False),            # no suffix: literal, differs from "eu"
    ("us", False),                       # differs from the body
    (None, False),                       # missing while the body has a value
])
def test_custom_param_header(server, value, ok):
    r = call(server, "tools/call", {"name": "test_header_param", "arguments": {"region": "eu"}},
             headers={"Mcp-Param-Region": value})
    if ok:
        assert r.status_code == 200 and result(r)["content"][0]["text"] == "region=eu"
    else:
        assert r.status_code == 400 and error(r)["code"] == -32020


@pytest.mark.parametrize("method", ["initialize", "ping", "logging/setLevel",
                                    "resources/subscribe", "resources/unsubscribe",
                                    "no/such/method"])
def test_removed_and_unknown_methods_are_404(server, method):
    r = call(server, method, rid=500)
    assert r.status_code == 404
    assert error(r)["code"] == -32601 and r.json()["id"] == 500


def test_unknown_resource_is_32602(server):
    r = call(server, "resources/read", {"uri": "test://missing"})
    assert error(r)["code"] == -32602 and error(r)["data"]["uri"] == "test://missing"


def test_missing_capability_is_400_32021(server):
    r = call(server, "tools/call", {"name": "test_missing_capability", "arguments": {}}, caps={})
    assert r.status_code == 400
    err = error(r)
    assert err["code"] == -32021 and err["data"]["requiredCapabilities"] == {"sampling": {}}
    r = call(server, "tools/call", {"name": "test_missing_capability", "arguments": {}})
    assert result(r)["content"][0]["text"] == "Success"


def test_mrtr_round_trip(server):
    r1 = result(call(server, "tools/call", {"name": "test_input_required_result_elicitation",
                                            "arguments": {}}))
    assert r1["resultType"] == "input_required"
    req = r1["inputRequests"]["user_name"]
    assert req["method"] == "elicitation/create" and req["params"]["requestedSchema"]
    r2 = result(call(server, "tools/call", {
        "name": "test_input_required_result_elicitation", "arguments": {},
        "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Alice"}},
                           "extra": {"ignored": True}}}))
    assert r2["resultType"] == "complete" and r2["content"][0]["text"] == "Hello, Alice!"


def test_mrtr_state_multi_round_and_integrity(server):
    p = {"name": "test_input_required_result_multi_round", "arguments": {}}
    r1 = result(call(server, "tools/call", p))
    assert list(r1["inputRequests"]) == ["step1"] and r1["requestState"]
    r2 = result(call(server, "tools/call", dict(p, requestState=r1["requestState"],
                inputResponses={"step1": {"action": "accept", "content": {"name": "Bo"}}})))
    assert list(r2["inputRequests"]) == ["step2"] and r2["requestState"] != r1["requestState"]
    r3 = result(call(server, "tools/call", dict(p, requestState=r2["requestState"],
                inputResponses={"step2": {"action": "accept", "content": {"color": "red"}}})))
    assert r3["content"][0]["text"] == "Multi-round complete: Bo likes red"
    # Tampered, or replayed on another tool: refused.
    bad = call(server, "tools/call", dict(p, requestState=r1["requestState"] + "x",
               inputResponses={"step1": {"action": "accept", "content": {"name": "Bo"}}}))
    assert bad.status_code == 400 and error(bad)["code"] == -32602
    other = {"name": "test_input_required_result_request_state", "arguments": {},
             "requestState": r1["requestState"],
             "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}}}
    assert error(call(server, "tools/call", other))["code"] == -32602
    assert error(call(server, "tools/call", dict(p, inputResponses=5)))["code"] == -32602


def test_mrtr_only_declared_capabilities(server):
    p = {"name": "test_input_required_result_capabilities", "arguments": {}}
    r = result(call(server, "tools/call", p, caps={"sampling": {}}))
    assert [v["method"] for v in r["inputRequests"].values()] == ["sampling/createMessage"]
    r = result(call(server, "tools/call", p, caps={}))
    assert r["resultType"] == "complete"


def test_session_fixture_works_statelessly_through_mrtr(server):
    """test_sampling asks the client with a session, and uses MRTR statelessly."""
    p = {"name": "test_sampling", "arguments": {"prompt": "hi"}}
    r1 = result(call(server, "tools/call", p))
    assert r1["inputRequests"]["input"]["method"] == "sampling/createMessage"
    r2 = result(call(server, "tools/call", dict(p, inputResponses={"input": {
        "role": "assistant", "model": "m", "content": {"type": "text", "text": "yo"}}})))
    assert r2["content"][0]["text"] == "LLM response: yo"


def test_prompt_mrtr(server):
    p = {"name": "test_input_required_result_prompt"}
    r1 = result(call(server, "prompts/get", p))
    assert r1["resultType"] == "input_required"
    r2 = result(call(server, "prompts/get", dict(p, inputResponses={
        "user_context": {"action": "accept", "content": {"context": "tests"}}})))
    assert r2["messages"][0]["content"]["text"] == "Prompt with context: tests"


def test_progress_and_logging_streams(server):
    r = call(server, "tools/call", {"name": "test_tool_with_progress", "arguments": {},
                                    "_meta": dict(meta(), progressToken="p1")}, raw_meta=True)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["X-Accel-Buffering"] == "no"
    msgs = [json.loads(e["data"]) for e in sse_events(r) if e.get("data")]
    assert [m["params"]["progress"] for m in msgs if m.get("method")] == [0, 50, 100]
    assert msgs[-1]["result"]["resultType"] == "complete"
    assert all("id" not in e for e in sse_events(r))    # no resumption ids
    # Logs only when the request asked for a level.
    msgs = [json.loads(e["data"]) for e in sse_events(call(
        server, "tools/call", {"name": "test_logging_tool", "arguments": {}})) if e.get("data")]
    assert not [m for m in msgs if m.get("method") == "notifications/message"]
    msgs = [json.loads(e["data"]) for e in sse_events(call(
        server, "tools/call", {"name": "test_logging_tool", "arguments": {}},
        meta_extra={"io.modelcontextprotocol/logLevel": "debug"})) if e.get("data")]
    assert [m for m in msgs if m.get("method") == "notifications/message"]


def test_subscriptions_listen_acknowledges_first(server):
    r = call(server, "subscriptions/listen", {"notifications": {"toolsListChanged": True}},
             rid="sub-1", stream=True)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            first = json.loads(line[6:])
            break
    r.close()
    assert first["method"] == "notifications/subscriptions/acknowledged"
    assert first["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"


def open_listens(server, n):
    host, port = server.base.split("//")[1].split(":")
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
                       "params": {"_meta": meta()}})
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall((f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Content-Type: application/json\r\nAccept: {ACCEPT_BOTH}\r\n"
                   f"MCP-Protocol-Version: {V}\r\nMcp-Method: subscriptions/listen\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        socks.append(s)
    for s in socks:
        got = b""
        while b"acknowledged" not in got:
            chunk = s.recv(4096)          # times out (fails) if no worker serves it
            assert chunk
            got += chunk
    return socks


def test_closed_stream_releases_its_worker(server):
    """Closing a listen stream frees its worker thread: the server notices by peeking
    at the socket, without having to write to it."""
    # The test server has 2 x 16 workers: hold 30 streams, close them, then 30 more
    # must be served, which only works if the first 30 workers were released.
    for s in open_listens(server, 30):
        s.close()
    time.sleep(1)
    for s in open_listens(server, 30):
        s.close()
    time.sleep(1)
    assert call(server, "tools/list").status_code == 200


def test_get_and_delete_are_405_for_stateless_clients(server):
    h = {"Accept": "text/event-stream", "MCP-Protocol-Version": V}
    r = requests.get(server.url, headers=h)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert requests.delete(server.url, headers={"MCP-Protocol-Version": V}).status_code == 405


def test_both_revisions_side_by_side(server):
    sid = server.initialize()
    assert server.ping_ok(sid)
    assert call(server, "tools/list").status_code == 200
    # A session client that sends the stateless _meta by mistake keeps its session rules
    # only without it; with it the request is stateless and validated as such.
    r = server.rpc(sid, "tools/list")
    assert "resultType" not in r.json()["result"]


def test_mrtr_continues_on_another_node_with_the_same_secret(start, tmp_path):
    """Round 1 on one httpd, round 2 on another: only the shared secret matters."""
    import os
    secret = tmp_path / "secret"
    secret.write_text("a-shared-secret-of-enough-length\n")
    os.chmod(tmp_path, 0o755)
    a = start("sqlite", "--fixtures", "--conf", f"GeminiMCPStateSecret file:{secret}")
    b = start("pgsql", "--fixtures", "--conf", f"GeminiMCPStateSecret file:{secret}")
    c = start("sqlite", "--fixtures")            # its own random key
    p = {"name": "test_input_required_result_request_state", "arguments": {}}
    r1 = result(call(a, "tools/call", p))
    retry = dict(p, requestState=r1["requestState"],
                 inputResponses={"confirm": {"action": "accept", "content": {"ok": True}}})
    done = result(call(b, "tools/call", retry))
    assert done["content"][0]["text"] == "state-ok: requestState validated"
    refused = call(c, "tools/call", retry)
    assert refused.status_code == 400 and error(refused)["code"] == -32602


def test_short_state_secret_refuses_to_start(start, tmp_path):
    import os
    secret = tmp_path / "short"
    secret.write_text("tooshort")
    os.chmod(tmp_path, 0o755)
    with pytest.raises(RuntimeError) as e:
        start("sqlite", "--conf", f"GeminiMCPStateSecret file:{secret}")
    assert "GeminiMCPStateSecret" in str(e.value) and "tooshort" not in str(e.value)
