"""The gemini_* tools through httpd (2 child processes) against test/fake-gemini: what
is sent, what comes back, streaming progress, and every failure mode."""
import json
import threading
import time

import pytest

from conftest import Server, response_of, sse_events

ARGS = ["--fixtures", "--conf", "GeminiMCPGeminiRetries 2"]


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def gserver(request, fake_gemini_proc):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = Server(request.param, ARGS + ["--gemini-url", fake_gemini_proc.url,
                                      "--gemini-key", fake_gemini_proc.key])
    yield s
    # The API key never reaches a log.
    for log in (s.info["error_log"], s.info["access_log"]):
        assert fake_gemini_proc.key not in open(log).read()
    s.stop()


@pytest.fixture
def g(gserver, fake_gemini):
    gserver.sid = gserver.initialize()
    gserver.new_log_lines()
    yield gserver


def tool(s, name, args, token=None, rid=1):
    params = {"name": name, "arguments": args}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return response_of(s.rpc(s.sid, "tools/call", params, rid=rid), rid)["result"]


def generate_bodies(fake):
    return [r["body"] for r in fake.requests() if "generateContent" in r["path"]
            or "streamGenerateContent" in r["path"]]


def test_tools_are_listed_with_schemas(g):
    tools = {t["name"]: t for t in g.rpc(g.sid, "tools/list").json()["result"]["tools"]}
    for name in ("gemini_generate", "gemini_count_tokens", "gemini_embed", "gemini_list_models"):
        assert tools[name]["description"] and tools[name]["inputSchema"]["type"] == "object"
        assert tools[name]["outputSchema"]["type"] == "object"
    assert list(tools)[0] == "gemini_generate"       # the product's tools come first


def test_generate_sends_what_was_asked(g, fake_gemini):
    res = tool(g, "gemini_generate", {
        "prompt": "hello there", "system_instruction": "be nice", "temperature": 0.5,
        "max_output_tokens": 50, "stop_sequences": ["END"], "model": "gemini-2.5-pro",
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT",
                             "threshold": "BLOCK_ONLY_HIGH"}],
        "files": [{"uri": "https://example.invalid/v1beta/files/abc",
                   "mime_type": "application/pdf"}]})
    assert not res.get("isError")
    text = res["content"][0]["text"]
    assert text.startswith("[gemini-2.5-pro] 1 turn(s); last: hello there (system: be nice)")
    sc = res["structuredContent"]
    assert sc["text"] == text and sc["model"] == "gemini-2.5-pro"
    assert sc["finish_reason"] == "STOP"
    assert sc["usage"]["total_tokens"] == sc["usage"]["prompt_tokens"] + sc["usage"]["output_tokens"]
    [body] = generate_bodies(fake_gemini)
    assert body["systemInstruction"] == {"parts": [{"text": "be nice"}]}
    assert body["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 50,
                                        "stopSequences": ["END"]}
    assert body["safetySettings"][0]["threshold"] == "BLOCK_ONLY_HIGH"
    parts = body["contents"][0]["parts"]
    assert parts[1] == {"fileData": {"fileUri": "https://example.invalid/v1beta/files/abc",
                                     "mimeType": "application/pdf"}}
    sent = [r for r in fake_gemini.requests() if "generateContent" in r["path"]][0]
    assert sent["headers"]["x-goog-api-key"] == fake_gemini.key
    assert sent["path"] == "/v1beta/models/gemini-2.5-pro:generateContent"


def test_generate_with_contents_and_json_output(g, fake_gemini):
    contents = [{"role": "user", "parts": [{"text": "a"}]},
                {"role": "model", "parts": [{"text": "b"}]},
                {"role": "user", "parts": [{"text": "c"}]}]
    res = tool(g, "gemini_generate", {"contents": contents,
                                      "response_mime_type": "application/json"})
    assert json.loads(res["content"][0]["text"])["reply"].endswith("3 turn(s); last: c")
    assert generate_bodies(fake_gemini)[0]["contents"] == contents
    res = tool(g, "gemini_generate", {"contents": contents, "prompt": "x"})
    assert res["isError"] is True


def test_generate_streams_progress(g, fake_gemini):
    r = g.rpc(g.sid, "tools/call", {"name": "gemini_generate",
                                    "arguments": {"prompt": "stream this please"},
                                    "_meta": {"progressToken": "p"}})
    assert r.headers["Content-Type"].startswith("text/event-stream")
    msgs = [json.loads(e["data"]) for e in sse_events(r) if e.get("data")]
    prog = [m["params"] for m in msgs if m.get("method") == "notifications/progress"]
    assert len(prog) >= 2
    assert [p["progress"] for p in prog] == sorted(p["progress"] for p in prog)
    final = msgs[-1]["result"]
    assert prog[-1]["message"] == final["content"][0]["text"]
    assert final["content"][0]["text"] == \
        "[gemini-2.5-flash] 1 turn(s); last: stream this please"
    assert final["structuredContent"]["finish_reason"] == "STOP"
    assert "alt=sse" in [x for x in fake_gemini.requests() if "stream" in x["path"]][0]["path"]


def test_count_embed_list(g):
    res = tool(g, "gemini_count_tokens", {"text": "one two three four"})
    assert res["structuredContent"]["total_tokens"] == 4 and res["content"][0]["text"] == "4 tokens"
    res = tool(g, "gemini_embed", {"texts": ["x", "y", "z"], "output_dimensionality": 4,
                                   "task_type": "SEMANTIC_SIMILARITY"})
    sc = res["structuredContent"]
    assert sc["dimensions"] == 4 and len(sc["embeddings"]) == 3
    assert sc["embeddings"][0] != sc["embeddings"][1]
    assert json.loads(res["content"][0]["text"]) == sc["embeddings"]
    res = tool(g, "gemini_list_models", {"page_size": 2})
    sc = res["structuredContent"]
    assert [m["name"] for m in sc["models"]] == ["models/gemini-2.5-flash",
                                                 "models/gemini-2.5-pro"]
    res2 = tool(g, "gemini_list_models", {"page_size": 2, "page_token": sc["next_page_token"]})
    assert res2["structuredContent"]["models"][0]["name"] == "models/gemini-embedding-001"
    assert tool(g, "gemini_list_models", {"page_token": "a&b=c"})["isError"] is True


@pytest.mark.parametrize("args,expect", [
    ({"prompt": "x", "model": "gemini-nope"}, "Gemini error 404 NOT_FOUND: models/gemini-nope"),
    ({"prompt": "please BLOCK_ME"}, "refused the prompt (blocked: SAFETY)"),
    ({"prompt": "SAFETY_STOP now"}, "withheld by safety filters"),
    ({"prompt": "x", "model": "../../etc"}, "invalid model name"),
    ({"prompt": ""}, "non-empty prompt"),
])
def test_generate_errors_are_plain(g, args, expect):
    res = tool(g, "gemini_generate", args)
    assert res["isError"] is True and expect in res["content"][0]["text"]
    assert g.ping_ok(g.sid)


def test_retries_honour_retry_info(g, fake_gemini):
    fake_gemini.fault("429", count=2, retry_delay="0.3s")
    t0 = time.time()
    res = tool(g, "gemini_generate", {"prompt": "retry me"})
    assert not res.get("isError") and time.time() - t0 >= 0.6
    assert len(generate_bodies(fake_gemini)) == 3          # 2 refused + 1 served


def test_retries_give_up_with_a_clear_error(g, fake_gemini):
    fake_gemini.fault("503", count=5)
    res = tool(g, "gemini_generate", {"prompt": "x"})
    assert res["isError"] is True
    text = res["content"][0]["text"]
    assert "503 UNAVAILABLE" in text and "overloaded" in text and "after 2 retries" in text
    assert len(generate_bodies(fake_gemini)) == 3          # 1 + GeminiMCPGeminiRetries 2


def test_client_errors_are_not_retried(g, fake_gemini):
    tool(g, "gemini_generate", {"prompt": "x", "model": "gemini-nope"})
    assert len(fake_gemini.requests()) == 1


def test_malformed_answer(g, fake_gemini):
    fake_gemini.fault("malformed")
    res = tool(g, "gemini_generate", {"prompt": "x"})
    assert res["isError"] is True and "malformed JSON" in res["content"][0]["text"]


def test_stream_cut_midway_is_an_error_not_a_replay(g, fake_gemini):
    fake_gemini.fault("cut")
    res = tool(g, "gemini_generate", {"prompt": "cut this stream please"}, token="c")
    assert res["isError"] is True and "cannot reach Gemini" in res["content"][0]["text"]
    assert len(generate_bodies(fake_gemini)) == 1          # data had arrived: no retry


def test_error_event_in_the_stream_is_the_answer(g, fake_gemini):
    """Gemini can fail mid-answer with an error object as an event: the tool says so
    (the text before it is not passed off as the answer) and nothing is retried."""
    fake_gemini.fault("stream_error")
    res = tool(g, "gemini_generate", {"prompt": "fail half way please"}, token="e")
    assert res["isError"] is True, res
    assert "Gemini error in the stream: An internal error has occurred." \
        in res["content"][0]["text"]
    assert len(generate_bodies(fake_gemini)) == 1


@pytest.mark.expect_log(r"GMCP0401")
def test_not_retried_past_the_deadline(start, fake_gemini):
    s = start("sqlite", "--gemini-url", fake_gemini.url, "--gemini-key", fake_gemini.key,
              "--conf", "GeminiMCPToolTimeout 3")
    sid = s.initialize()
    fake_gemini.fault("429", retry_delay="30s")
    t0 = time.time()
    res = response_of(s.rpc(sid, "tools/call", {"name": "gemini_generate",
                                                "arguments": {"prompt": "x"}}))["result"]
    assert time.time() - t0 < 2
    assert res["isError"] is True and "deadline" in res["content"][0]["text"]


@pytest.mark.expect_log(r"GMCP0401")
def test_hung_gemini_times_out_and_frees_the_worker(start, fake_gemini):
    s = start("pgsql", "--gemini-url", fake_gemini.url, "--gemini-key", fake_gemini.key,
              "--conf", "GeminiMCPGeminiTimeout 1", "--conf", "GeminiMCPGeminiRetries 0")
    sid = s.initialize()
    fake_gemini.fault("hang", seconds=20)
    t0 = time.time()
    res = response_of(s.rpc(sid, "tools/call", {"name": "gemini_generate",
                                                "arguments": {"prompt": "x"}}))["result"]
    assert time.time() - t0 < 4
    assert res["isError"] is True and "did not answer in time" in res["content"][0]["text"]
    assert s.ping_ok(sid)


def test_cancellation_aborts_the_upstream_call(g, fake_gemini):
    fake_gemini.fault("latency", ms=4000)
    out = {}

    def run():
        t0 = time.time()
        r = g.rpc(g.sid, "tools/call", {"name": "gemini_generate",
                                        "arguments": {"prompt": "slow"}}, rid="slow-1")
        out["elapsed"] = time.time() - t0
        out["body"] = r.json()
    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.7)
    g.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": "slow-1"}}, session=g.sid)
    th.join(10)
    assert out["elapsed"] < 2.5
    assert out["body"]["error"]["code"] == -32800


def test_unconfigured_server_says_so(start):
    s = start("sqlite")
    sid = s.initialize()
    res = response_of(s.rpc(sid, "tools/call", {"name": "gemini_generate",
                                                "arguments": {"prompt": "x"}}))["result"]
    assert res["isError"] is True and "GeminiMCPGeminiKey" in res["content"][0]["text"]


def test_wrong_key_is_reported_by_gemini(start, fake_gemini):
    s = start("sqlite", "--gemini-url", fake_gemini.url, "--gemini-key", "not-the-key")
    sid = s.initialize()
    res = response_of(s.rpc(sid, "tools/call", {"name": "gemini_generate",
                                                "arguments": {"prompt": "x"}}))["result"]
    assert res["isError"] is True and "API key not valid" in res["content"][0]["text"]
    assert "not-the-key" not in open(s.info["error_log"]).read()


def test_generate_on_the_stateless_revision(g):
    import requests
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    r = requests.post(g.url, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
        "Mcp-Name": "gemini_generate"},
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "gemini_generate",
                                    "arguments": {"prompt": "stateless"}, "_meta": meta}}))
    res = r.json()["result"]
    assert res["resultType"] == "complete" and res["content"][0]["text"].endswith("stateless")


def test_file_names_become_uris(g, fake_gemini):
    tool(g, "gemini_generate", {"prompt": "see file", "files": [{"uri": "files/abc123"}]})
    [body] = generate_bodies(fake_gemini)
    assert body["contents"][0]["parts"][1]["fileData"]["fileUri"] == \
        fake_gemini.url + "/v1beta/files/abc123"


def test_model_details_resource(g):
    tpl = g.rpc(g.sid, "resources/templates/list").json()["result"]["resourceTemplates"]
    assert "gemini://models/{model}" in [t["uriTemplate"] for t in tpl]
    r = g.rpc(g.sid, "resources/read", {"uri": "gemini://models/gemini-2.5-pro"})
    c = r.json()["result"]["contents"][0]
    assert c["mimeType"] == "application/json"
    assert json.loads(c["text"])["displayName"] == "Gemini 2.5 Pro"
    r = g.rpc(g.sid, "resources/read", {"uri": "gemini://models/gemini-nope"})
    assert r.json()["error"]["code"] == -32002


@pytest.mark.expect_log(r"GMCP0401")
def test_circuit_breaker_opens_for_every_process_and_recovers(start, fake_gemini):
    import re
    s = start("sqlite", "--gemini-url", fake_gemini.url, "--gemini-key", fake_gemini.key,
              "--conf", "GeminiMCPGeminiRetries 0", "--conf", "GeminiMCPBreakerThreshold 3",
              "--conf", "GeminiMCPBreakerCooldown 2")
    sid = s.initialize()

    def gen():
        return response_of(s.rpc(sid, "tools/call", {"name": "gemini_generate",
                                                     "arguments": {"prompt": "x"}}))["result"]
    fake_gemini.fault("503", count=3)
    for _ in range(3):
        assert "503" in gen()["content"][0]["text"]
    # Open: calls fail fast, whichever process serves them, and Gemini sees none.
    seen = len(fake_gemini.requests())
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(12) as pool:          # concurrent: both children serve some
        results = list(pool.map(lambda _: gen(), range(36)))
    for res in results:
        assert res["isError"] is True and "circuit breaker open" in res["content"][0]["text"]
    assert len(fake_gemini.requests()) == seen
    pids = [re.search(r"pid=(\d+)", l).group(1) for l in s.access_lines()
            if "tool=gemini_generate" in l][-36:]
    assert len(set(pids)) >= 2
    time.sleep(2.2)
    # Half-open: one probe goes out; it succeeds and the breaker closes.
    assert not gen().get("isError")
    assert not gen().get("isError") and len(fake_gemini.requests()) == seen + 2


def test_typescript_sdk_client_uses_every_gemini_tool(gserver, fake_gemini):
    import os
    import subprocess
    from conftest import NODE22, ROOT
    r = subprocess.run([NODE22, os.path.join(ROOT, "test", "clients", "sdk-gemini.mjs"),
                        gserver.url], capture_output=True, text=True, timeout=120,
                       cwd=os.path.join(ROOT, "test"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(out["tools"]) == sorted([
        "gemini_generate", "gemini_count_tokens", "gemini_embed", "gemini_list_models",
        "gemini_chat_start", "gemini_chat_send", "gemini_chat_history", "gemini_chat_list",
        "gemini_chat_export", "gemini_chat_delete", "gemini_usage", "gemini_upload_file",
        "gemini_file_list", "gemini_file_get", "gemini_file_delete"])
    # The caller's own usage, as the SDK sees it (no auth here: the default principal).
    assert out["usage"]["key_id"] == "default" and out["usage"]["limits"]["requests"] is None
    assert out["usage"]["usage"]["this_hour"]["output_tokens"] > 0
    assert out["models"] == 3 and out["tokens"] == 3 and out["dims"] == 5
    assert out["generate"] == "[gemini-2.5-flash] 1 turn(s); last: hello sdk"
    # onprogress makes the SDK send a progress token: the answer streamed, and the last
    # progress message is the whole text.
    assert out["progress"] >= 2 and out["lastProgress"] == out["generate"]
    assert out["send"].startswith("[gemini-2.5-flash] 3 turn(s); last: two (system: terse)")
    assert out["history"] == 4 and out["listed"] is True and out["export"] == "# sdk"
    assert out["transcript"] == "text/markdown" and out["model"] == "models/gemini-2.5-flash"
    assert out["deleted"] is True
