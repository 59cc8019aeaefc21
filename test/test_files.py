"""Relay of finished tus uploads into the Gemini Files API (test/fake-gemini), and the
gemini_file_* tools, on SQLite and PostgreSQL."""
import hashlib
import json
import os

import pytest
import requests

from conftest import ACCEPT_BOTH, sse_events

DBS = ["sqlite", "pgsql"]
MiB = 1024 * 1024


@pytest.fixture(params=DBS)
def fs(request, start, fake_gemini):
    s = start(request.param, "--auth", "apikey", "--gemini-url", fake_gemini.url,
              "--gemini-key", fake_gemini.key)
    s.key = s.info["api_key"]
    s.sid = init(s, s.key)
    return s


def hdrs(key, sid=None):
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
         "Authorization": f"Bearer {key}"}
    if sid:
        h["Mcp-Session-Id"] = sid
        h["MCP-Protocol-Version"] = "2025-11-25"
    return h


def init(s, key):
    r = requests.post(s.url, headers=hdrs(key), data=json.dumps(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}}))
    sid = r.headers["Mcp-Session-Id"]
    requests.post(s.url, headers=hdrs(key, sid),
                  data=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return sid


def call(s, name, args, key=None, sid=None, token=None):
    params = {"name": name, "arguments": args}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    r = requests.post(s.url, headers=hdrs(key or s.key, sid or s.sid), data=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}), timeout=60)
    if r.headers["Content-Type"].startswith("text/event-stream"):
        msgs = [json.loads(e["data"]) for e in sse_events(r) if e.get("data")]
        return [m for m in msgs if "result" in m][0]["result"], \
            [m for m in msgs if m.get("method") == "notifications/progress"]
    return r.json()["result"], []


def upload(s, data, filetype=b"application/octet-stream", key=None):
    import base64
    key = key or s.key
    h = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {key}",
         "Upload-Length": str(len(data)),
         "Upload-Metadata": "filename " + base64.b64encode(b"data.bin").decode()
                            + ",filetype " + base64.b64encode(filetype).decode()}
    r = requests.post(s.info["upload"], headers=h)
    url = r.headers["Location"]
    r = requests.patch(url, data=data, headers={
        "Tus-Resumable": "1.0.0", "Authorization": f"Bearer {key}", "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204
    return url.rsplit("/", 1)[1]


def test_relay_in_chunks_then_generate(fs, fake_gemini):
    data = os.urandom(20 * MiB + 123)
    uid = upload(fs, data)
    res, progress = call(fs, "gemini_upload_file", {"upload_id": uid, "display_name": "big"},
                         token="p1")
    assert not res.get("isError"), res
    sc = res["structuredContent"]
    assert sc["sha256"] == hashlib.sha256(data).hexdigest() and sc["size"] == len(data)
    assert sc["state"] == "ACTIVE" and sc["name"].startswith("files/") and sc["resumes"] == 0
    # Google's resumable protocol, 8 MiB chunks, the last one finalizing.
    ups = [q for q in fake_gemini.requests() if q["path"].startswith("/upload/")]
    cmds = [q["headers"].get("x-goog-upload-command") for q in ups]
    assert cmds == ["start", "upload", "upload", "upload, finalize"]
    assert [q["headers"].get("x-goog-upload-offset") for q in ups[1:]] == \
        ["0", str(8 * MiB), str(16 * MiB)]
    assert ups[0]["headers"]["x-goog-upload-header-content-length"] == str(len(data))
    # Waited for ACTIVE (the fake keeps new files PROCESSING for 200 ms).
    assert any(q["method"] == "GET" and q["path"] == "/v1beta/" + sc["name"]
               for q in fake_gemini.requests())
    assert [p["params"]["progress"] for p in progress][:3] == [8 * MiB, 16 * MiB, len(data)]
    # The file works in a generate call.
    res, _ = call(fs, "gemini_generate", {"prompt": "describe", "files": [{"uri": sc["uri"]}]})
    assert sc["uri"] in res["content"][0]["text"]
    # Relaying the same upload again returns the same file.
    again, _ = call(fs, "gemini_upload_file", {"upload_id": uid})
    assert again["structuredContent"]["name"] == sc["name"] and "Already" in again["content"][0]["text"]


def test_transient_failure_mid_relay_resumes(fs, fake_gemini):
    data = os.urandom(17 * MiB)
    uid = upload(fs, data)
    fake_gemini.fault("503", count=1, skip=1)      # the second chunk fails once
    res, _ = call(fs, "gemini_upload_file", {"upload_id": uid})
    assert not res.get("isError"), res
    assert res["structuredContent"]["resumes"] == 1
    ups = [q["headers"].get("x-goog-upload-command") for q in fake_gemini.requests()
           if q["path"].startswith("/upload/")]
    assert ups == ["start", "upload", "upload", "query", "upload", "upload, finalize"]
    assert res["structuredContent"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_file_tools_are_private(fs, fake_gemini):
    uid = upload(fs, b"hello world", b"text/plain")
    res, _ = call(fs, "gemini_upload_file", {"upload_id": uid})
    name = res["structuredContent"]["name"]
    listed, _ = call(fs, "gemini_file_list", {})
    assert [f["name"] for f in listed["structuredContent"]["files"]] == [name]
    got, _ = call(fs, "gemini_file_get", {"name": name})
    assert got["structuredContent"]["state"] == "ACTIVE" and got["structuredContent"]["size"] == 11
    other = json.loads(fs.gmcpctl_run("--json", "keys", "create", "--name", "o").stdout)["secret"]
    osid = init(fs, other)
    for tool, args in (("gemini_file_get", {"name": name}), ("gemini_file_delete", {"name": name}),
                       ("gemini_upload_file", {"upload_id": uid})):
        r, _ = call(fs, tool, args, key=other, sid=osid)
        assert r["isError"] and "No " in r["content"][0]["text"], (tool, r)
    r, _ = call(fs, "gemini_file_list", {}, key=other, sid=osid)
    assert r["structuredContent"]["files"] == []
    d, _ = call(fs, "gemini_file_delete", {"name": name})
    assert d["structuredContent"]["deleted"] is True
    assert any(q["method"] == "DELETE" for q in fake_gemini.requests())
    r, _ = call(fs, "gemini_file_get", {"name": name})
    assert r["isError"]


def test_incomplete_upload_is_refused(fs):
    h = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {fs.key}", "Upload-Length": "10"}
    uid = requests.post(fs.info["upload"], headers=h).headers["Location"].rsplit("/", 1)[1]
    r, _ = call(fs, "gemini_upload_file", {"upload_id": uid})
    assert r["isError"] and "not complete" in r["content"][0]["text"]


def test_progress_stream_follows_the_relay(fs, fake_gemini):
    """The upload's progress stream goes on through the relay: relaying (bytes sent),
    processing (waiting for ACTIVE), active with the file's name."""
    import threading
    from test_uploads import watch
    data = os.urandom(17 * MiB)
    uid = upload(fs, data)
    url = fs.info["upload"] + "/" + uid
    fake_gemini.fault("latency", count=3, ms=700)            # each chunk takes a while
    events, ready = [], threading.Event()
    t = threading.Thread(target=watch, args=(url, fs.key, ("active", "failed"), events, ready))
    t.start()
    ready.wait(10)
    res, _ = call(fs, "gemini_upload_file", {"upload_id": uid})
    t.join(30)
    assert not res.get("isError"), res
    phases = [e["phase"] for e in events[1:]]
    order = ["received", "relaying", "processing", "active"]
    assert phases[0] == "received" and phases[-1] == "active"
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases)
    relaying = [e for e in events[1:] if e["phase"] == "relaying"]
    assert any(0 < e["bytes"] < len(data) for e in relaying), events
    assert events[-1]["file"] == res["structuredContent"]["name"]
    assert events[-1]["bytes"] == len(data)


@pytest.mark.expect_log(r"GMCP0415")   # the SHA-256 mismatch, logged where detected
def test_relay_refuses_a_spool_file_changed_after_upload(fs, fake_gemini):
    """The hash kept as the bytes arrived is compared with Gemini's sha256Hash: a spool
    file altered afterwards is caught, deleted at Gemini, and the upload shows failed."""
    data = os.urandom(100000)
    uid = upload(fs, data)
    path = os.path.join(fs.info["data_dir"], "uploads", uid)
    with open(path, "r+b") as f:
        f.write(b"tampered")
    res, _ = call(fs, "gemini_upload_file", {"upload_id": uid})
    assert res["isError"] and "SHA-256 differs" in res["content"][0]["text"]
    assert any(q["method"] == "DELETE" for q in fake_gemini.requests())
    snap = requests.get(fs.info["upload"] + "/" + uid, headers={
        "Tus-Resumable": "1.0.0", "Authorization": f"Bearer {fs.key}"}).json()
    assert snap["phase"] == "failed" and "SHA-256" in snap["detail"]
    listed, _ = call(fs, "gemini_file_list", {})
    assert listed["structuredContent"]["files"] == []
