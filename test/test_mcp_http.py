"""MCP 2025-11-25 over Streamable HTTP: lifecycle, headers, errors and bad input.

Every bad-input case asserts the HTTP status, the JSON-RPC error code and that the
server still serves the next request.
"""
import json

import pytest

from conftest import response_of

SERVER_ARGS = ["--location-conf", "GeminiMCPMaxBodySize 4K",
               "--location-conf", "GeminiMCPAllowedOrigins https://app.example.com"]


@pytest.fixture(scope="module")
def sid(server):
    return server.initialize()


def error_of(r):
    body = r.json()
    assert body["jsonrpc"] == "2.0" and "error" in body, body
    return body["error"]


# ---- lifecycle ---------------------------------------------------------------------------

def test_initialize_negotiates_and_issues_session(server):
    r = server.post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                     "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    sid = r.headers["Mcp-Session-Id"]
    assert len(sid) >= 32 and all(0x21 <= ord(c) <= 0x7E for c in sid)
    res = r.json()["result"]
    assert res["protocolVersion"] == "2025-11-25"
    caps = res["capabilities"]
    assert {"tools", "resources", "prompts", "logging", "completions"} <= set(caps)
    assert caps["resources"]["subscribe"] is True
    assert res["serverInfo"]["name"] == "mod_gemini_mcp"


@pytest.mark.parametrize("asked,answered", [("2025-06-18", "2025-06-18"),
                                            ("2025-03-26", "2025-03-26"),
                                            ("2099-01-01", "2025-11-25")])
def test_version_negotiation(server, asked, answered):
    r = server.post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                     "params": {"protocolVersion": asked, "capabilities": {},
                                "clientInfo": {"name": "t", "version": "1"}}})
    assert r.json()["result"]["protocolVersion"] == answered


def test_initialize_missing_params(server):
    r = server.post({"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {}})
    assert r.status_code == 200
    assert error_of(r)["code"] == -32602
    assert r.json()["id"] == 9


def test_notification_and_response_get_202(server, sid):
    r = server.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid)
    assert r.status_code == 202 and r.content == b""
    r = server.post({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
                    session=sid)
    assert r.status_code == 202


def test_ping(server, sid):
    r = server.rpc(sid, "ping", rid="p1")
    assert r.json() == {"jsonrpc": "2.0", "id": "p1", "result": {}}


def test_missing_session_is_400(server):
    r = server.rpc(None, "ping")
    assert r.status_code == 400
    assert error_of(r)["code"] == -32000


def test_unknown_session_is_404(server, sid):
    r = server.rpc("no-such-session", "tools/list")
    assert r.status_code == 404
    assert error_of(r)["code"] == -32000
    assert server.ping_ok(sid)


def test_delete_terminates_then_404(server):
    s = server.initialize()
    assert server.ping_ok(s)
    r = server.http.delete(server.url, headers={"Mcp-Session-Id": s})
    assert r.status_code == 204
    assert server.rpc(s, "ping").status_code == 404
    assert server.http.delete(server.url, headers={"Mcp-Session-Id": s}).status_code == 404
    assert server.sql(f"SELECT count(*) FROM mcp_sessions WHERE id = '{s}'") == ["0"]


def test_protocol_version_header(server, sid):
    r = server.rpc(sid, "ping", version="1999-01-01")
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == -32000 and "2025-11-25" in err["message"]
    # Any supported version is accepted, not only the negotiated one.
    for v in ("2025-11-25", "2025-06-18", "2025-03-26"):
        assert server.rpc(sid, "ping", version=v).status_code == 200


# ---- bad input ---------------------------------------------------------------------------

def test_bad_accept_is_406(server, sid):
    for accept in ("application/json", "text/event-stream", "text/html", ""):
        r = server.rpc(sid, "ping", headers={"Accept": accept})
        assert r.status_code == 406, accept
        assert error_of(r)["code"] == -32000
    assert server.ping_ok(sid)


def test_wildcard_accept_is_fine(server, sid):
    assert server.rpc(sid, "ping", headers={"Accept": "*/*"}).status_code == 200


def test_bad_content_type_is_415(server, sid):
    for ct in ("text/plain", "application/jsonx", None):
        r = server.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid,
                        headers={"Content-Type": ct})
        assert r.status_code == 415, ct
        assert error_of(r)["code"] == -32000
    assert server.ping_ok(sid)


def test_oversize_body_is_413(server, sid):
    big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 5000}}
    r = server.post(big, session=sid)
    assert r.status_code == 413
    assert error_of(r)["code"] == -32600
    assert server.ping_ok(sid)


def test_oversize_chunked_body_is_413(server, sid):
    def gen():
        for _ in range(10):
            yield b" " * 1000
        yield b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    r = server.post(None, session=sid, raw=gen())
    assert r.status_code == 413
    assert error_of(r)["code"] == -32600
    assert server.ping_ok(sid)


def test_parse_error_is_400(server, sid):
    r = server.post(None, session=sid, raw='{"jsonrpc":')
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == -32700
    assert r.json()["id"] is None
    assert server.ping_ok(sid)


def test_invalid_utf8_is_400(server, sid):
    r = server.post(None, session=sid, raw=b'{"jsonrpc":"2.0","id":1,"method":"p\xffing"}')
    assert r.status_code == 400
    assert error_of(r)["code"] == -32700
    assert "UTF-8" in error_of(r)["message"]
    assert server.ping_ok(sid)


def test_batch_is_400(server, sid):
    r = server.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                     {"jsonrpc": "2.0", "id": 2, "method": "ping"}], session=sid)
    assert r.status_code == 400
    assert error_of(r)["code"] == -32600
    assert "batch" in error_of(r)["message"]
    assert server.ping_ok(sid)


@pytest.mark.parametrize("body,rid", [
    ({"jsonrpc": "1.0", "id": 5, "method": "ping"}, 5),
    ({"jsonrpc": "2.0", "id": 6, "method": 42}, 6),
    ({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": [1]}, 7),
    ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),
    ({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}, None),
    ("just a string", None),
])
def test_invalid_request_is_400(server, sid, body, rid):
    r = server.post(body, session=sid)
    assert r.status_code == 400
    assert error_of(r)["code"] == -32600
    assert r.json()["id"] == rid
    assert server.ping_ok(sid)


def test_unknown_method_is_32601(server, sid):
    r = server.rpc(sid, "no/such/method", rid=3)
    assert r.status_code == 200
    assert error_of(r)["code"] == -32601
    assert r.json()["id"] == 3
    assert server.ping_ok(sid)


def test_unknown_tool_is_32602(server, sid):
    r = server.rpc(sid, "tools/call", {"name": "no_such_tool", "arguments": {}})
    assert r.status_code == 200
    assert error_of(r)["code"] == -32602 and "no_such_tool" in error_of(r)["message"]
    assert server.ping_ok(sid)


def test_bad_arguments_is_32602(server, sid):
    r = server.rpc(sid, "tools/call", {"name": "test_simple_text", "arguments": [1]})
    assert r.status_code == 200
    assert error_of(r)["code"] == -32602
    assert server.ping_ok(sid)


def test_schema_mismatch_is_tool_error(server, sid):
    r = server.rpc(sid, "tools/call", {"name": "test_sampling", "arguments": {"prompt": 3}})
    res = response_of(r)["result"]
    assert res["isError"] is True and "prompt" in res["content"][0]["text"]
    r = server.rpc(sid, "tools/call", {"name": "test_sampling", "arguments": {}})
    assert response_of(r)["result"]["isError"] is True


def test_tool_failure_is_result_with_iserror(server, sid):
    r = server.rpc(sid, "tools/call", {"name": "test_error_handling", "arguments": {}})
    assert r.status_code == 200
    res = r.json()["result"]
    assert res["isError"] is True and res["content"][0]["text"]
    assert server.ping_ok(sid)


def test_bad_cursor_is_32602(server, sid):
    for cursor in ("garbage!", "dG9vbHM6OTk5", "cHJvbXB0czox", 5):
        r = server.rpc(sid, "tools/list", {"cursor": cursor})
        assert error_of(r)["code"] == -32602, cursor
    assert server.ping_ok(sid)


def test_bad_log_level_is_32602(server, sid):
    r = server.rpc(sid, "logging/setLevel", {"level": "verbose"})
    assert error_of(r)["code"] == -32602
    r = server.rpc(sid, "logging/setLevel", {"level": "warning"})
    assert r.json()["result"] == {}


def test_resource_not_found_is_32002(server, sid):
    r = server.rpc(sid, "resources/read", {"uri": "test://nope"})
    err = error_of(r)
    assert err["code"] == -32002 and err["data"]["uri"] == "test://nope"


def test_unknown_prompt_and_missing_argument(server, sid):
    assert error_of(server.rpc(sid, "prompts/get", {"name": "nope"}))["code"] == -32602
    r = server.rpc(sid, "prompts/get", {"name": "test_prompt_with_arguments",
                                        "arguments": {"arg1": "a"}})
    assert error_of(r)["code"] == -32602 and "arg2" in error_of(r)["message"]


def test_response_for_unknown_request_is_400(server, sid):
    r = server.post({"jsonrpc": "2.0", "id": "gmcp-nothing", "result": {}}, session=sid)
    assert r.status_code == 400
    assert error_of(r)["code"] == -32600
    assert server.ping_ok(sid)


def test_cancel_with_bad_params_is_400(server, sid):
    r = server.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}},
                    session=sid)
    assert r.status_code == 400
    assert error_of(r)["code"] == -32602


def test_other_methods_are_405(server, sid):
    for method in ("PUT", "PATCH"):
        r = server.http.request(method, server.url, headers={"Mcp-Session-Id": sid})
        assert r.status_code == 405
        assert "POST" in r.headers["Allow"]
        assert error_of(r)["code"] == -32000


# ---- Origin and Host -----------------------------------------------------------------

def test_foreign_origin_is_403(server, sid):
    r = server.rpc(sid, "ping", headers={"Origin": "http://evil.example.com"})
    assert r.status_code == 403
    assert error_of(r)["code"] == -32000
    assert server.ping_ok(sid)


def test_null_origin_is_403(server, sid):
    assert server.rpc(sid, "ping", headers={"Origin": "null"}).status_code == 403


def test_same_origin_and_allowed_origin(server, sid):
    own = server.base
    assert server.rpc(sid, "ping", headers={"Origin": own}).status_code == 200
    assert server.rpc(sid, "ping",
                      headers={"Origin": "https://app.example.com"}).status_code == 200
    # Same host, other port or scheme: a different origin.
    other = own.rsplit(":", 1)[0] + ":1"
    assert server.rpc(sid, "ping", headers={"Origin": other}).status_code == 403
    assert server.rpc(sid, "ping", headers={"Origin": own.replace("http:", "https:")}
                      ).status_code == 403


def test_foreign_host_is_403(server, sid):
    r = server.rpc(sid, "ping", headers={"Host": "evil.example.com"})
    assert r.status_code == 403
    assert error_of(r)["code"] == -32000
    assert server.rpc(sid, "ping", headers={"Host": "localhost"}).status_code == 200
    assert server.ping_ok(sid)


# ---- listings and pagination -------------------------------------------------------------

def test_lists(server, sid):
    tools = server.rpc(sid, "tools/list").json()["result"]["tools"]
    names = {t["name"] for t in tools}
    assert {"test_simple_text", "test_sampling", "json_schema_2020_12_tool"} <= names
    for t in tools:
        assert t["description"] and t["inputSchema"]["type"] == "object"
    res = server.rpc(sid, "resources/list").json()["result"]["resources"]
    assert {r["uri"] for r in res} == {"test://static-text", "test://static-binary"}
    tpl = server.rpc(sid, "resources/templates/list").json()["result"]["resourceTemplates"]
    assert {t["uriTemplate"] for t in tpl} == {"test://template/{id}/data",
                                               "gemini://chat/{session_id}/transcript",
                                               "gemini://models/{model}"}
    prompts = server.rpc(sid, "prompts/list").json()["result"]["prompts"]
    assert len(prompts) == 5 and all(p["description"] for p in prompts)


def test_template_read_and_completion(server, sid):
    r = server.rpc(sid, "resources/read", {"uri": "test://template/abc/data"})
    c = r.json()["result"]["contents"][0]
    assert c["uri"] == "test://template/abc/data" and json.loads(c["text"])["id"] == "abc"
    r = server.rpc(sid, "completion/complete",
                   {"ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
                    "argument": {"name": "arg1", "value": "testV"}})
    comp = r.json()["result"]["completion"]
    assert comp["values"] == ["testValue1", "testValue2"] and comp["total"] == 2
    r = server.rpc(sid, "completion/complete",
                   {"ref": {"type": "ref/prompt", "name": "nope"},
                    "argument": {"name": "a", "value": ""}})
    assert error_of(r)["code"] == -32602


def test_subscribe_unsubscribe(server, sid):
    for m in ("resources/subscribe", "resources/subscribe", "resources/unsubscribe"):
        assert server.rpc(sid, m, {"uri": "test://watched-resource"}).json()["result"] == {}
    assert error_of(server.rpc(sid, "resources/subscribe", {}))["code"] == -32602


def test_pagination(start):
    s = start("sqlite", "--fixtures", "--location-conf", "GeminiMCPPageSize 5")
    sid = s.initialize()
    n_tools = 48   # the fixtures module's 33 tools and the 15 gemini_* tools
    seen, cursor, pages = [], None, 0
    while True:
        params = {"cursor": cursor} if cursor else {}
        res = s.rpc(sid, "tools/list", params).json()["result"]
        assert len(res["tools"]) <= 5
        seen += [t["name"] for t in res["tools"]]
        pages += 1
        cursor = res.get("nextCursor")
        if not cursor:
            break
    assert pages == (n_tools + 4) // 5 and len(seen) == len(set(seen)) == n_tools
    # A tools cursor is not a prompts cursor.
    r = s.rpc(sid, "tools/list").json()["result"]["nextCursor"]
    assert s.rpc(sid, "prompts/list", {"cursor": r}).json()["error"]["code"] == -32602
