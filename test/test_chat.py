"""gemini_chat_*: conversations in SQL, continued by any child process, surviving
restarts, serialised under concurrency, private to their owner."""
import json
import os
import re
import tempfile
import threading
import time

import pytest

from conftest import Server, response_of


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def cserver(request, fake_gemini_proc):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = Server(request.param, [
        "--gemini-url", fake_gemini_proc.url, "--gemini-key", fake_gemini_proc.key,
        "--conf", "<Location /mcp-bob>", "--conf", "SetHandler gemini-mcp",
        "--conf", "GeminiMCPDefaultPrincipal bob", "--conf", "</Location>"])
    yield s
    s.stop()


@pytest.fixture
def c(cserver, fake_gemini):
    cserver.sid = cserver.initialize()
    cserver.new_log_lines()
    yield cserver


def tool(s, name, args, sid=None, url=None, token=None):
    params = {"name": name, "arguments": args}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    if url:
        import requests
        r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                     "params": params},
                          headers={"Accept": "application/json, text/event-stream",
                                   "Mcp-Session-Id": sid})
    else:
        r = s.rpc(sid or s.sid, "tools/call", params)
    return response_of(r)["result"]


def start_chat(s, **kw):
    res = tool(s, "gemini_chat_start", kw)
    assert not res.get("isError"), res
    return res["structuredContent"]["session_id"]


def send(s, chat, message, **kw):
    return tool(s, "gemini_chat_send", dict(kw, session_id=chat, message=message))


def test_history_is_sent_and_stored(c, fake_gemini):
    chat = start_chat(c, system_instruction="be brief", title="t1")
    r1 = send(c, chat, "first")
    assert r1["content"][0]["text"] == \
        "[gemini-2.5-flash] 1 turn(s); last: first (system: be brief)"
    r2 = send(c, chat, "second")
    assert r2["content"][0]["text"].startswith("[gemini-2.5-flash] 3 turn(s); last: second")
    assert r2["structuredContent"]["message_count"] == 4
    body = [r["body"] for r in fake_gemini.requests() if "generateContent" in r["path"]][-1]
    assert [(x["role"], x["parts"][0]["text"]) for x in body["contents"]] == [
        ("user", "first"), ("model", r1["content"][0]["text"]), ("user", "second")]
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    hist = tool(c, "gemini_chat_history", {"session_id": chat})["structuredContent"]
    assert [(m["seq"], m["role"]) for m in hist["messages"]] == \
        [(1, "user"), (2, "model"), (3, "user"), (4, "model")]
    page = tool(c, "gemini_chat_history", {"session_id": chat, "limit": 3})["structuredContent"]
    assert len(page["messages"]) == 3 and page["next_after_seq"] == 3
    rest = tool(c, "gemini_chat_history", {"session_id": chat, "after_seq": 3})
    assert [m["seq"] for m in rest["structuredContent"]["messages"]] == [4]


def test_send_streams_progress_and_stores_the_whole_reply(c):
    chat = start_chat(c)
    r = c.rpc(c.sid, "tools/call", {"name": "gemini_chat_send",
                                    "arguments": {"session_id": chat, "message": "stream it"},
                                    "_meta": {"progressToken": 1}})
    from conftest import sse_events
    msgs = [json.loads(e["data"]) for e in sse_events(r) if e.get("data")]
    assert [m for m in msgs if m.get("method") == "notifications/progress"]
    text = msgs[-1]["result"]["content"][0]["text"]
    hist = tool(c, "gemini_chat_history", {"session_id": chat})["structuredContent"]
    assert hist["messages"][-1]["text"] == text


def test_any_process_continues_any_session(c):
    def send_pids():
        return {re.search(r"pid=(\d+)", l).group(1) for l in c.access_lines()
                if "tool=gemini_chat_send" in l}
    chat = start_chat(c)
    # At least 8 sends; more (up to 32) while one child happened to take them all: Linux
    # wakes the most recent waiter on a shared listening socket.
    for i in range(32):
        if i >= 8 and len(send_pids()) >= 2:
            break
        res = send(c, chat, f"m{i}")
        assert f"{2 * i + 1} turn(s); last: m{i}" in res["content"][0]["text"]
    assert len(send_pids()) >= 2


def test_every_send_gives_gemini_the_stored_history_exactly(c, fake_gemini):
    """Whichever child takes a send, each request to Gemini holds exactly the previous
    request's contents plus the model's stored answer and the new turn, and
    gemini_chat_history agrees."""
    chat = start_chat(c)
    fake_gemini.reset()
    for i in range(12):
        send(c, chat, f"h{i}")
    bodies = [r["body"] for r in fake_gemini.requests()
              if r["body"] and "enerateContent" in r["path"]]
    assert len(bodies) == 12
    hist = tool(c, "gemini_chat_history", {"session_id": chat})["structuredContent"]["messages"]
    for i in range(1, 12):
        prev, cur = bodies[i - 1]["contents"], bodies[i]["contents"]
        model = {"role": "model", "parts": [{"text": hist[2 * i - 1]["text"]}]}
        assert cur == prev + [model, {"role": "user", "parts": [{"text": f"h{i}"}]}], i


def test_concurrent_sends_are_serialised(c, fake_gemini):
    chat = start_chat(c)
    fake_gemini.fault("latency", count=6, ms=150)
    results, errors = [], []

    def worker(i):
        try:
            results.append(send(c, chat, f"parallel {i}")["content"][0]["text"])
        except Exception as e:  # pragma: no cover
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    # Every send saw all earlier turns: 1, 3, 5, ... turns, none lost or reordered.
    turns = sorted(int(re.search(r"(\d+) turn", r).group(1)) for r in results)
    assert turns == [1, 3, 5, 7, 9, 11]
    msgs = tool(c, "gemini_chat_history", {"session_id": chat})["structuredContent"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "model"] * 6
    assert [m["seq"] for m in msgs] == list(range(1, 13))


def test_failed_send_stores_nothing_and_releases_the_session(c, fake_gemini):
    chat = start_chat(c)
    send(c, chat, "one")
    fake_gemini.fault("503", count=10)
    res = send(c, chat, "two")
    assert res["isError"] is True
    fake_gemini.reset()
    t0 = time.time()
    res = send(c, chat, "three")
    assert time.time() - t0 < 2 and "3 turn(s); last: three" in res["content"][0]["text"]
    msgs = tool(c, "gemini_chat_history", {"session_id": chat})["structuredContent"]["messages"]
    assert [m["text"] for m in msgs if m["role"] == "user"] == ["one", "three"]


def test_chat_deleted_while_gemini_answers_stores_nothing(c, fake_gemini):
    """The turn is stored only under the send's lease: a chat deleted meanwhile gets a
    tool error saying the answer was not stored, and no message appears anywhere."""
    chat = start_chat(c)
    send(c, chat, "one")
    fake_gemini.fault("latency", count=1, ms=1500)
    out = {}
    t = threading.Thread(target=lambda: out.update(res=send(c, chat, "two")))
    t.start()
    time.sleep(0.5)
    assert not tool(c, "gemini_chat_delete", {"session_id": chat}).get("isError")
    t.join()
    res = out["res"]
    assert res["isError"] is True
    assert "deleted or expired while Gemini was answering" in res["content"][0]["text"], res
    assert c.sql(f"SELECT COUNT(*) FROM chat_messages WHERE session_id = '{chat}'") == ["0"]


def test_sessions_are_private_to_their_owner(c):
    chat = start_chat(c, title="mine")
    send(c, chat, "secret")
    bob_url = c.base + "/mcp-bob"
    import requests
    r = requests.post(bob_url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                     "params": {"protocolVersion": "2025-11-25",
                                                "capabilities": {},
                                                "clientInfo": {"name": "b", "version": "1"}}},
                      headers={"Accept": "application/json, text/event-stream"})
    bob = r.headers["Mcp-Session-Id"]
    for name, args in (("gemini_chat_send", {"session_id": chat, "message": "hi"}),
                       ("gemini_chat_history", {"session_id": chat}),
                       ("gemini_chat_export", {"session_id": chat}),
                       ("gemini_chat_delete", {"session_id": chat})):
        res = tool(c, name, args, sid=bob, url=bob_url)
        assert res["isError"] is True and "No chat session" in res["content"][0]["text"]
    listed = tool(c, "gemini_chat_list", {}, sid=bob, url=bob_url)["structuredContent"]
    assert chat not in [x["session_id"] for x in listed["sessions"]]
    # Still intact for its owner.
    assert tool(c, "gemini_chat_history", {"session_id": chat})["structuredContent"]["messages"]


def test_list_export_transcript_delete(c):
    a = start_chat(c, title="alpha")
    b = start_chat(c, title="beta")
    time.sleep(1.1)                               # last_used has one-second resolution
    send(c, a, "hello")
    listed = tool(c, "gemini_chat_list", {})["structuredContent"]["sessions"]
    ids = [x["session_id"] for x in listed]
    assert ids.index(a) < ids.index(b)          # most recently used first
    md = tool(c, "gemini_chat_export", {"session_id": a})["content"][0]["text"]
    assert md.startswith("# alpha\n") and "### User\n\nhello\n" in md
    js = json.loads(tool(c, "gemini_chat_export", {"session_id": a, "format": "json"})
                    ["content"][0]["text"])
    assert js["session"]["title"] == "alpha" and len(js["messages"]) == 2
    txt = tool(c, "gemini_chat_export", {"session_id": a, "format": "text"})["content"][0]["text"]
    assert txt.startswith("Chat: alpha\n") and "User:\nhello" in txt
    r = c.rpc(c.sid, "resources/read", {"uri": f"gemini://chat/{a}/transcript"})
    content = r.json()["result"]["contents"][0]
    assert content["mimeType"] == "text/markdown" and content["text"] == md
    assert c.rpc(c.sid, "resources/read", {"uri": "gemini://chat/nope/transcript"}
                 ).json()["error"]["code"] == -32002
    assert tool(c, "gemini_chat_delete", {"session_id": a})["structuredContent"]["deleted"]
    assert tool(c, "gemini_chat_send", {"session_id": a, "message": "x"})["isError"] is True
    assert c.sql(f"SELECT count(*) FROM chat_messages WHERE session_id = '{a}'") == ["0"]


def test_chat_survives_graceful_restart(c):
    chat = start_chat(c)
    send(c, chat, "before")
    c.graceful_restart()
    sid = c.initialize()
    res = tool(c, "gemini_chat_send", {"session_id": chat, "message": "after"}, sid=sid)
    assert "3 turn(s); last: after" in res["content"][0]["text"]


def test_chat_survives_a_full_httpd_restart(start, fake_gemini):
    data = tempfile.mkdtemp(prefix="gmcp-keep-")
    os.chmod(data, 0o755)
    args = ["--gemini-url", fake_gemini.url, "--gemini-key", fake_gemini.key,
            "--data-dir", data]
    s1 = start("sqlite", *args)
    s1.sid = s1.initialize()
    chat = start_chat(s1)
    send(s1, chat, "before")
    s1.stop()
    s2 = start("sqlite", *args)
    s2.sid = s2.initialize()
    res = send(s2, chat, "after")
    assert "3 turn(s); last: after" in res["content"][0]["text"]
    import shutil
    shutil.rmtree(data, ignore_errors=True)


def test_idle_chats_expire(start, fake_gemini):
    s = start("sqlite", "--gemini-url", fake_gemini.url, "--gemini-key", fake_gemini.key,
              "--conf", "GeminiMCPChatIdleTimeout 2")
    s.sid = s.initialize()
    chat = start_chat(s)
    time.sleep(3.2)
    res = send(s, chat, "anyone?")
    assert res["isError"] is True and "expired" in res["content"][0]["text"]


def test_gmcpctl_sessions(c):
    chat = start_chat(c, title="admin view")
    send(c, chat, "hello admin")
    out = c.gmcpctl_run("sessions", "list").stdout
    assert chat in out and "admin view" in out
    rows = json.loads(c.gmcpctl_run("--json", "sessions", "list", "--owner", "default").stdout)
    assert chat in [r["session_id"] for r in rows]
    bobs = json.loads(c.gmcpctl_run("--json", "sessions", "list", "--owner", "bob").stdout)
    assert chat not in [r["session_id"] for r in bobs]
    show = json.loads(c.gmcpctl_run("--json", "sessions", "show", chat).stdout)
    assert show["owner"] == "default" and show["message_count"] == 2
    # The CLI and the tool export through the same code.
    for fmt in ("json", "text", "markdown"):
        cli = c.gmcpctl_run("sessions", "export", chat, "--format", fmt).stdout
        via_mcp = tool(c, "gemini_chat_export", {"session_id": chat, "format": fmt})
        assert cli == via_mcp["content"][0]["text"]
    r = c.gmcpctl_run("sessions", "export", chat, "--format", "pdf", check=False)
    assert r.returncode == 2
    r = c.gmcpctl_run("sessions", "show", "chat_nope", check=False)
    assert r.returncode == 1 and "no chat session" in r.stderr
    r = c.gmcpctl_run("sessions", "delete", chat)
    assert r.returncode == 0 and r.stdout == ""
    assert tool(c, "gemini_chat_history", {"session_id": chat})["isError"] is True


def test_bad_file_reference_is_refused_and_releases_the_session(c, fake_gemini):
    chat = start_chat(c)
    res = send(c, chat, "look", files=[{"mime_type": "application/pdf"}])
    assert res["isError"] is True and "needs a uri" in res["content"][0]["text"]
    assert not [r for r in fake_gemini.requests() if "generateContent" in r["path"]]
    t0 = time.time()
    res = send(c, chat, "look", files=[{"uri": "files/doc1"}])
    assert time.time() - t0 < 2 and not res.get("isError")
    body = [r["body"] for r in fake_gemini.requests() if "generateContent" in r["path"]][-1]
    assert body["contents"][-1]["parts"][1]["fileData"]["fileUri"].endswith("/v1beta/files/doc1")
