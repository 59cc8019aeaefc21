"""SetHandler gemini-mcp-status: /live and /ready."""
import pytest
import requests

from conftest import response_of


def test_live_and_ready(start):
    s = start("sqlite")
    r = requests.get(s.info["status"]["live"])
    assert r.status_code == 200 and r.json()["status"] == "live"
    assert r.headers["Cache-Control"] == "no-store"
    r = requests.get(s.info["status"]["ready"])
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["database"]["status"] == "ok" and body["database"]["driver"] == "sqlite3"
    assert body["database"]["schema_version"] == body["database"]["schema_needed"]
    assert body["gemini"] == {"configured": False, "breaker": "closed", "breaker_opens": 0}
    assert requests.get(s.base + "/status/nope").status_code == 404
    assert requests.post(s.info["status"]["ready"]).status_code == 405


def test_ready_on_postgresql(start):
    s = start("pgsql")
    body = requests.get(s.info["status"]["ready"]).json()
    assert body["status"] == "ready" and body["database"]["driver"] == "pgsql"


def test_not_ready_until_migrated(start):
    s = start("sqlite", "--no-migrate")
    r = requests.get(s.info["status"]["ready"])
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unready"
    assert body["database"]["status"] == "schema-behind"
    assert body["database"]["schema_version"] == 0 and "gmcpctl migrate" in \
        body["database"]["message"]
    assert requests.get(s.info["status"]["live"]).status_code == 200
    s.gmcpctl_run("migrate")
    from harness import chown_tree
    chown_tree(s.info["data_dir"], "www-data")
    assert requests.get(s.info["status"]["ready"]).status_code == 200


@pytest.mark.expect_log(r"GMCP0401")
def test_ready_reports_the_breaker_without_failing(start, fake_gemini):
    s = start("sqlite", "--gemini-url", fake_gemini.url, "--gemini-key", fake_gemini.key,
              "--conf", "GeminiMCPGeminiRetries 0", "--conf", "GeminiMCPBreakerThreshold 1")
    sid = s.initialize()
    fake_gemini.fault("503")
    res = response_of(s.rpc(sid, "tools/call", {"name": "gemini_generate",
                                                "arguments": {"prompt": "x"}}))["result"]
    assert res["isError"] is True
    r = requests.get(s.info["status"]["ready"])
    assert r.status_code == 200
    assert r.json()["gemini"] == {"configured": True, "breaker": "open", "breaker_opens": 1}
