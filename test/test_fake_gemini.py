"""The fake Gemini speaks the real wire: the official @google/genai SDK (npm) exercises
every endpoint against it; the fault switches behave as documented."""
import json
import os
import socket
import subprocess

import requests

from conftest import NODE22, ROOT


def test_official_sdk_against_the_fake(fake_gemini):
    r = subprocess.run([NODE22, os.path.join(ROOT, "test", "clients", "genai-client.mjs"),
                        fake_gemini.url, fake_gemini.key], capture_output=True, text=True,
                       timeout=120, cwd=os.path.join(ROOT, "test"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["text"] == "[gemini-2.5-flash] 3 turn(s); last: second question (system: be brief)"
    assert out["usage"]["totalTokenCount"] == out["usage"]["promptTokenCount"] + \
        out["usage"]["candidatesTokenCount"]
    assert out["finish"] == "STOP"
    assert out["streamed"] == "[gemini-2.5-flash] 1 turn(s); last: stream me" and out["chunks"] == 3
    assert out["tokens"] == 3 and out["embeddings"] == [3, 3]
    assert out["models"][:2] == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
    assert out["model"] == "Gemini 2.5 Pro"
    assert out["file"]["size"] == "1000" and out["file"]["mime"] == "application/pdf"
    assert out["file"]["state"] == "PROCESSING" and out["fileState"] == "ACTIVE"
    assert out["listed"] == [out["file"]["name"]] and out["notFound"] == 404
    sent = fake_gemini.requests()
    assert all(r["headers"]["x-goog-api-key"] == fake_gemini.key for r in sent)
    assert any("alt=sse" in r["path"] for r in sent)


def gen(fake, text="hi", stream=False, key=None):
    path = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return requests.post(f"{fake.url}/v1beta/models/gemini-2.5-flash:{path}",
                         headers={"x-goog-api-key": key or fake.key},
                         json={"contents": [{"role": "user", "parts": [{"text": text}]}]},
                         timeout=10, stream=stream)


def test_auth_errors(fake_gemini):
    r = requests.post(f"{fake_gemini.url}/v1beta/models/gemini-2.5-flash:generateContent",
                      json={})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    r = gen(fake_gemini, key="wrong")
    assert r.status_code == 400
    assert r.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_fault_switches(fake_gemini):
    fake_gemini.fault("429", retry_delay="2s")
    r = gen(fake_gemini)
    assert r.status_code == 429
    info = [d for d in r.json()["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert info[0]["retryDelay"] == "2s"
    assert gen(fake_gemini).status_code == 200          # only the next call failed
    fake_gemini.fault("503", count=2)
    assert [gen(fake_gemini).status_code for _ in range(3)] == [503, 503, 200]
    fake_gemini.fault("malformed")
    r = gen(fake_gemini)
    assert r.status_code == 200
    try:
        r.json()
        raise AssertionError("expected malformed JSON")
    except ValueError:
        pass


def test_stream_framing_and_cut(fake_gemini):
    r = gen(fake_gemini, "one two three four", stream=True)
    raw = r.raw.read()
    events = raw.split(b"\r\n\r\n")
    assert events[-1] == b"" and all(e.startswith(b"data: ") for e in events[:-1])
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "finishReason" in chunks[-1]["candidates"][0]
    assert "finishReason" not in chunks[0]["candidates"][0]
    # Cut mid-way: the body ends before the last event and the chunked terminator.
    fake_gemini.fault("cut")
    host, port = fake_gemini.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    body = json.dumps({"contents": [{"parts": [{"text": "cut me please now"}]}]})
    s.sendall((f"POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1\r\n"
               f"Host: {host}\r\nx-goog-api-key: {fake_gemini.key}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    assert data.count(b"data: ") == 1 and not data.endswith(b"0\r\n\r\n")


def test_upload_offsets(fake_gemini):
    r = requests.post(f"{fake_gemini.url}/upload/v1beta/files",
                      headers={"x-goog-api-key": fake_gemini.key,
                               "X-Goog-Upload-Protocol": "resumable",
                               "X-Goog-Upload-Command": "start",
                               "X-Goog-Upload-Header-Content-Type": "text/plain"},
                      json={"file": {"displayName": "t"}})
    url = r.headers["X-Goog-Upload-URL"]
    h = {"x-goog-api-key": fake_gemini.key}
    r = requests.post(url, headers=dict(h, **{"X-Goog-Upload-Command": "upload",
                                              "X-Goog-Upload-Offset": "0"}), data=b"abc")
    assert r.headers["X-Goog-Upload-Status"] == "active"
    r = requests.post(url, headers=dict(h, **{"X-Goog-Upload-Command": "upload",
                                              "X-Goog-Upload-Offset": "1"}), data=b"x")
    assert r.status_code == 400
    r = requests.post(url, headers=dict(h, **{"X-Goog-Upload-Command": "query"}))
    assert r.headers["X-Goog-Upload-Size-Received"] == "3"
    r = requests.post(url, headers=dict(h, **{"X-Goog-Upload-Command": "upload, finalize",
                                              "X-Goog-Upload-Offset": "3"}), data=b"def")
    f = r.json()["file"]
    assert r.headers["X-Goog-Upload-Status"] == "final" and f["sizeBytes"] == "6"
    assert f["mimeType"] == "text/plain"
