"""Access and operations: API keys, GeminiMCPAuth, scopes, isolation, limits, quotas,
usage, audit, metrics, CORS, TLS — through httpd with 2 child processes, on SQLite and
PostgreSQL."""
import concurrent.futures
import json
import re
import time

import pytest
import requests

from conftest import ACCEPT_BOTH, response_of

DBS = ["sqlite", "pgsql"]
INIT = {"protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "pytest", "version": "1"}}


def hdrs(key=None, sid=None, **extra):
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    if key:
        h["Authorization"] = f"Bearer {key}"
    if sid:
        h["Mcp-Session-Id"] = sid
        h["MCP-Protocol-Version"] = "2025-11-25"
    h.update(extra)
    return h


def post(s, body, key=None, sid=None, **extra):
    # A new connection each time: requests land on either child process.
    return requests.post(s.url, data=json.dumps(body), headers=hdrs(key, sid, **extra),
                         timeout=30)


def init(s, key):
    r = post(s, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}, key)
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    assert post(s, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key,
                sid).status_code == 202
    return sid


def call(s, key, sid, name, args=None, rid=1):
    return post(s, {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                    "params": {"name": name, "arguments": args or {}}}, key, sid)


def ctl(s, *args, check=True):
    return s.gmcpctl_run(*args, check=check)


def new_key(s, *flags):
    out = json.loads(ctl(s, "--json", "keys", "create", *flags).stdout)
    return out["id"], out["secret"]


def srv(start, db, fake=None, *extra):
    args = ["--auth", "apikey"]
    if fake:
        args += ["--gemini-url", fake.url, "--gemini-key", fake.key]
    return start(db, *args, *extra)


# ---- keys and identity ---------------------------------------------------------------------

@pytest.mark.parametrize("db", DBS)
def test_key_lifecycle_and_401s(start, db):
    s = srv(start, db)
    kid, secret = new_key(s, "--name", "ci", "--tenant", "acme", "--rate", "100/m",
                          "--burst", "20", "--token-quota", "5000/day", "--max-inflight", "3")
    assert re.fullmatch(r"gmcp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", secret)
    assert secret.startswith(f"gmcp_{kid}_")
    # Plain output prints the secret alone on stdout (for scripts), the note on stderr.
    p = ctl(s, "keys", "create", "--name", "plain")
    assert re.fullmatch(r"gmcp_\S+\n", p.stdout) and "shown only once" in p.stderr
    listed = json.loads(ctl(s, "--json", "keys", "list").stdout)
    assert {k["id"] for k in listed} >= {kid}
    shown = json.loads(ctl(s, "--json", "keys", "show", kid).stdout)
    assert shown["tenant"] == "acme" and shown["rate_count"] == 100 and shown["burst"] == 20
    assert shown["token_quota"] == 5000 and shown["quota_period"] == "day"
    assert shown["max_inflight"] == 3 and shown["state"] == "active"
    # The secret is never shown again, nor stored: only its keyed hash.
    tail = secret.split("_", 2)[2]
    for out in (ctl(s, "keys", "list").stdout, ctl(s, "keys", "show", kid).stdout,
                json.dumps(listed), "\n".join(s.sql("SELECT * FROM api_keys"))):
        assert tail not in out
    assert s.sql(f"SELECT secret_hash FROM api_keys WHERE id = '{kid}'")[0] != secret

    # 401s: missing, malformed, unknown, wrong secret — Bearer challenge + JSON-RPC body.
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}
    r = post(s, body)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="gemini-mcp"'
    assert r.json()["error"]["code"] == -32000 and "API key is required" in r.json()["error"]["message"]
    for bad in ("nonsense", secret[:-1] + ("A" if secret[-1] != "A" else "B"),
                "gmcp_0000000000000000_" + tail):
        r = post(s, body, bad)
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        assert r.json()["error"]["message"] == "Unauthorized: the API key is not valid"
    sid = init(s, secret)
    assert post(s, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, secret, sid).json()["result"] == {}

    # update: limits and scopes change without a restart.
    ctl(s, "keys", "update", kid, "--scopes", "gemini_usage", "--rate", "none")
    shown = json.loads(ctl(s, "--json", "keys", "show", kid).stdout)
    assert shown["scopes"] == "gemini_usage" and shown["rate_count"] == 0

    # rotate: new secret works at once, the old one during the grace period only.
    rot = json.loads(ctl(s, "--json", "keys", "rotate", kid, "--grace", "2s").stdout)
    assert rot["id"] == kid and rot["secret"] != secret
    assert post(s, body, rot["secret"]).status_code == 200
    assert post(s, body, secret).status_code == 200
    time.sleep(3.2)
    assert post(s, body, secret).status_code == 401
    assert post(s, body, rot["secret"]).status_code == 200

    # expiry
    eid, esecret = new_key(s, "--name", "soon", "--expires", "+2s")
    assert post(s, body, esecret).status_code == 200
    time.sleep(2.6)
    r = post(s, body, esecret)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]

    # bad flags are usage errors (exit 2) with a clear message
    p = ctl(s, "keys", "create", "--name", "x", "--rate", "fast", check=False)
    assert p.returncode == 2 and "--rate 'fast'" in p.stderr
    p = ctl(s, "keys", "revoke", "ffffffffffffffff", check=False)
    assert p.returncode == 1 and "no API key" in p.stderr


@pytest.mark.parametrize("db", DBS)
@pytest.mark.expect_log(r"GMCP0111|database")
def test_revocation_reaches_every_child_within_a_second(start, db):
    s = srv(start, db)
    kid, secret = new_key(s, "--name", "victim")
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}
    # Warm every child's cache with the live key.
    pids = set()
    for _ in range(20):
        assert post(s, body, secret).status_code == 200
    ctl(s, "keys", "revoke", kid)
    t0 = time.time()
    statuses = []
    while time.time() - t0 < 1.0:
        statuses.append(post(s, body, secret).status_code)
    # From 1 s after the revocation on, every request on every child is refused.
    after = [post(s, body, secret) for _ in range(30)]
    assert all(r.status_code == 401 for r in after)
    assert "revoked" in after[0].json()["error"]["message"]
    pids = {l.split("pid ")[1].split(":")[0] for l in s.new_log_lines() if "revoked" in l}
    assert len(pids) == 2, "both child processes refused the revoked key"
    del pids


# ---- scopes and isolation --------------------------------------------------------------------

@pytest.mark.parametrize("db", DBS)
def test_scopes_forbid_tools(start, db, fake_gemini):
    s = srv(start, db, fake_gemini)
    _, secret = new_key(s, "--name", "narrow", "--scopes", "gemini_count_tokens,gemini_usage")
    sid = init(s, secret)
    r = call(s, secret, sid, "gemini_generate", {"prompt": "hi"}, rid=7)
    assert r.status_code == 403
    err = r.json()
    assert err["id"] == 7 and err["error"]["code"] == -32000
    assert "scopes" in err["error"]["message"] and "gemini_generate" in err["error"]["message"]
    assert not [q for q in fake_gemini.requests() if "generateContent" in q["path"]]
    r = call(s, secret, sid, "gemini_count_tokens", {"text": "hello"})
    assert r.status_code == 200 and not response_of(r)["result"].get("isError")
    m = requests.get(s.info["status"]["metrics"]).text
    assert 'gmcp_auth_failures_total{reason="forbidden"} 1' in m


@pytest.mark.parametrize("db", DBS)
def test_isolation_between_keys_and_tenants(start, db, fake_gemini):
    s = srv(start, db, fake_gemini)
    _, a = new_key(s, "--name", "a")
    _, b = new_key(s, "--name", "b")
    _, t1 = new_key(s, "--name", "t1", "--tenant", "acme")
    _, t2 = new_key(s, "--name", "t2", "--tenant", "acme")
    sa, sb = init(s, a), init(s, b)
    # An MCP session belongs to the key that made it.
    r = post(s, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, b, sa)
    assert r.status_code == 404
    # Chat sessions: another key's id answers exactly like a missing one, both ways.
    chat_a = response_of(call(s, a, sa, "gemini_chat_start", {}))["result"]["structuredContent"]["session_id"]
    chat_b = response_of(call(s, b, sb, "gemini_chat_start", {}))["result"]["structuredContent"]["session_id"]
    for key, sid, foreign in ((b, sb, chat_a), (a, sa, chat_b)):
        for name, args in (("gemini_chat_send", {"session_id": foreign, "message": "x"}),
                           ("gemini_chat_history", {"session_id": foreign}),
                           ("gemini_chat_export", {"session_id": foreign}),
                           ("gemini_chat_delete", {"session_id": foreign})):
            res = response_of(call(s, key, sid, name, args))["result"]
            assert res["isError"] and "No chat session" in res["content"][0]["text"], name
        listed = response_of(call(s, key, sid, "gemini_chat_list"))["result"]["structuredContent"]
        assert foreign not in [x["session_id"] for x in listed["sessions"]]
        r = post(s, {"jsonrpc": "2.0", "id": 2, "method": "resources/read",
                     "params": {"uri": f"gemini://chat/{foreign}/transcript"}}, key, sid)
        assert "error" in response_of(r)
    # Keys of one tenant share its chats (the tenant owns them).
    s1, s2 = init(s, t1), init(s, t2)
    chat_t = response_of(call(s, t1, s1, "gemini_chat_start", {}))["result"]["structuredContent"]["session_id"]
    res = response_of(call(s, t2, s2, "gemini_chat_history", {"session_id": chat_t}))["result"]
    assert not res.get("isError")
    owners = set(s.sql("SELECT DISTINCT owner FROM chat_sessions"))
    assert owners == {f"key:{a.split('_')[1]}", f"key:{b.split('_')[1]}", "tenant:acme"}


# ---- limits and quotas ---------------------------------------------------------------------

@pytest.mark.parametrize("db", DBS)
def test_rate_limit_429_headers_and_body(start, db):
    s = srv(start, db)
    _, secret = new_key(s, "--name", "slow", "--rate", "2/s", "--burst", "3")
    body = {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": INIT}
    codes = [post(s, body, secret) for _ in range(5)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    ok = codes[0]
    assert ok.headers["RateLimit-Limit"] == "3" and ok.headers["RateLimit-Policy"] == "2;w=1;burst=3"
    assert ok.headers["RateLimit-Remaining"] == "2"
    r = codes[4]
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["RateLimit-Remaining"] == "0"
    e = r.json()
    assert e["id"] == 5 and e["error"]["data"]["reason"] == "rate"
    assert "rate limit" in e["error"]["message"]
    assert 0 < e["error"]["data"]["retryAfter"] <= 0.5 + 0.05
    time.sleep(0.6)
    assert post(s, body, secret).status_code == 200
    m = requests.get(s.info["status"]["metrics"]).text
    assert re.search(r'gmcp_ratelimit_rejections_total\{reason="rate"\} [12]\n', m)


@pytest.mark.parametrize("db", DBS)
def test_inflight_cap(start, db, fake_gemini):
    s = srv(start, db, fake_gemini)
    _, secret = new_key(s, "--name", "par", "--max-inflight", "2")
    sid = init(s, secret)
    fake_gemini.fault("latency", count=10, ms=1500)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(call, s, secret, sid, "gemini_generate", {"prompt": "p"}, i)
                for i in range(4)]
        time.sleep(0.5)
        during = call(s, secret, sid, "gemini_count_tokens", {"text": "x"})
        codes = sorted(f.result().status_code for f in futs)
    assert during.status_code == 429 and during.json()["error"]["data"]["reason"] == "inflight"
    assert codes == [200, 200, 429, 429]
    assert call(s, secret, sid, "gemini_count_tokens", {"text": "x"}).status_code == 200


@pytest.mark.parametrize("db", DBS)
def test_token_quota_checked_before_and_reconciled_after(start, db, fake_gemini):
    s = srv(start, db, fake_gemini, "--conf", "GeminiMCPUsageFlushInterval 1")
    kid, secret = new_key(s, "--name", "q", "--token-quota", "10/day")
    sid = init(s, secret)
    # The fake reports 1 prompt + 5 output tokens for "hi": 6, then 12 >= 10.
    for _ in range(2):
        r = call(s, secret, sid, "gemini_generate", {"prompt": "hi"})
        assert r.status_code == 200 and not response_of(r)["result"].get("isError")
    n = len(fake_gemini.requests())
    r = call(s, secret, sid, "gemini_generate", {"prompt": "hi"}, rid=9)
    assert r.status_code == 429
    e = r.json()["error"]
    assert e["data"]["reason"] == "quota" and "10 per day" in e["message"]
    assert int(r.headers["Retry-After"]) <= 86400
    assert len(fake_gemini.requests()) == n, "refused before calling Gemini"
    # Tools that spend nothing still work, and gemini_usage tells the caller where it stands.
    u = response_of(call(s, secret, sid, "gemini_usage"))["result"]["structuredContent"]
    assert u["key_id"] == kid and u["quota"]["limit"] == 10 and u["quota"]["used"] == 12
    assert u["quota"]["remaining"] == 0 and u["usage"]["today"]["output_tokens"] == 10
    # Raising the quota takes effect without a restart (within the key cache's 0.5 s).
    ctl(s, "keys", "update", kid, "--token-quota", "100/day")
    time.sleep(0.6)
    assert call(s, secret, sid, "gemini_generate", {"prompt": "hi"}).status_code == 200


@pytest.mark.parametrize("db", DBS)
def test_token_rate_limit(start, db, fake_gemini):
    s = srv(start, db, fake_gemini)
    _, secret = new_key(s, "--name", "tr", "--token-rate", "6/h")
    sid = init(s, secret)
    assert call(s, secret, sid, "gemini_generate", {"prompt": "hi"}).status_code == 200
    # 6 tokens spent: the hour's allowance is gone until it refills.
    r = call(s, secret, sid, "gemini_generate", {"prompt": "hi"})
    assert r.status_code == 429 and r.json()["error"]["data"]["reason"] == "tokens"
    assert int(r.headers["Retry-After"]) > 0


def accepted_in(s, secret, seconds, clients=8):
    # A sessionless ping answers 400 once admitted: what counts is "not 429".
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})

    def worker(url):
        sess = requests.Session()
        n = 0
        end = time.time() + seconds
        while time.time() < end:
            r = sess.post(url, data=body, headers=hdrs(secret))
            n += r.status_code != 429
            assert r.status_code in (400, 429), r.text
        return n
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        return sum(ex.map(worker, [x.url for x in s] * (clients // len(s))))


@pytest.mark.parametrize("db", DBS)
def test_rate_limit_accuracy_shared_memory(start, db):
    """8 concurrent clients on one key for 6 s: accepted = burst + rate * time, +-5 %."""
    s = srv(start, db)
    _, secret = new_key(s, "--name", "acc", "--rate", "50/s", "--burst", "10")
    t0 = time.time()
    got = accepted_in([s], secret, 6)
    elapsed = time.time() - t0
    expected = 10 + 50 * elapsed
    assert abs(got - expected) <= 0.05 * expected, (got, expected)


def test_rate_limit_accuracy_postgresql_store_two_nodes(start, pg_dsn):
    """Two httpd instances sharing one PostgreSQL database and one key."""
    a = srv(start, "pgsql", None, "--conf", "GeminiMCPRateLimitStore dbd")
    conf = open(a.info["conf"]).read()
    params = re.search(r'DBDParams "([^"]*)"', conf).group(1)
    pepper = re.search(r"GeminiMCPKeyPepper (\S+)", conf).group(1)
    b = start("pgsql", "--auth", "apikey", "--no-migrate", "--conf",
              "GeminiMCPRateLimitStore dbd", "--conf", f'DBDParams "{params}"',
              "--conf", f"GeminiMCPKeyPepper {pepper}")
    _, secret = new_key(a, "--name", "multi", "--rate", "40/s", "--burst", "10")
    t0 = time.time()
    got = accepted_in([a, b], secret, 6)
    elapsed = time.time() - t0
    expected = 10 + 40 * elapsed
    assert abs(got - expected) <= 0.05 * expected, (got, expected)


# ---- usage, audit, metrics -------------------------------------------------------------------

@pytest.mark.parametrize("db", DBS)
def test_usage_flushed_and_kept_across_graceful_restart(start, db, fake_gemini):
    s = srv(start, db, fake_gemini, "--conf", "GeminiMCPUsageFlushInterval 3600")
    kid, secret = new_key(s, "--name", "meter")
    sid = init(s, secret)                                   # 2 requests
    for _ in range(3):
        assert call(s, secret, sid, "gemini_generate", {"prompt": "hi"}).status_code == 200
    assert post(s, {"jsonrpc": "2.0", "id": 1, "method": "nope"}, secret, sid).status_code == 200
    r = post(s, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, secret, "no-such-session")
    assert r.status_code == 404                             # an error
    # Nothing flushed yet (interval 1 h): the counts are in shared memory only...
    assert json.loads(ctl(s, "--json", "usage", "--key", kid).stdout) == []
    # ...and a graceful restart writes them out.
    s.graceful_restart()
    rows = json.loads(ctl(s, "--json", "usage", "--key", kid).stdout)
    assert len(rows) == 1
    u = rows[0]
    assert u["requests"] == 7 and u["errors"] == 1
    assert u["prompt_tokens"] == 3 and u["output_tokens"] == 15
    assert u["bytes_in"] > 0 and u["bytes_out"] > 0
    plain = ctl(s, "usage", "--since", "24h").stdout
    assert kid in plain and "REQUESTS" in plain


@pytest.mark.parametrize("db", DBS)
@pytest.mark.expect_log(r"append-only")
def test_audit_log(start, db, fake_gemini):
    s = srv(start, db, fake_gemini)
    kid, secret = new_key(s, "--name", "aud")
    ctl(s, "keys", "update", kid, "--rate", "5/s")
    secret = json.loads(ctl(s, "--json", "keys", "rotate", kid, "--grace", "0").stdout)["secret"]
    ctl(s, "keys", "revoke", kid)
    for _ in range(5):   # a burst of failures is recorded, not row by row
        post(s, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}, secret)
    _, other = new_key(s, "--name", "chatter")
    sid = init(s, other)
    chat = response_of(call(s, other, sid, "gemini_chat_start", {}))["result"]["structuredContent"]["session_id"]
    ctl(s, "sessions", "delete", chat)
    rows = json.loads(ctl(s, "--json", "audit").stdout)
    actions = [r["action"] for r in rows]
    mine = [r for r in rows if r["key_id"] == kid]
    assert [r["action"] for r in mine][:4] == ["key.create", "key.update", "key.rotate",
                                               "key.revoke"]
    assert mine[0]["actor"].startswith("gmcpctl:") and "name=aud" in mine[0]["detail"]
    fails = [r for r in rows if r["action"] == "auth.failure"]
    assert 1 <= len(fails) <= 3 and fails[0]["key_id"] == kid
    assert "revoked" in fails[0]["detail"] and fails[0]["actor"] == "client 127.0.0.1"
    assert "session.delete" in actions
    assert all(secret.split("_", 2)[2] not in json.dumps(r) for r in rows)
    # Append-only: the database refuses changes (a trigger on both drivers).
    for q in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception) as e:
            s.sql(q)
        assert "append-only" in str(e.value.stderr)
    assert len(json.loads(ctl(s, "--json", "audit").stdout)) == len(rows)
    assert json.loads(ctl(s, "--json", "audit", "--since", "2999-01-01").stdout) == []


@pytest.mark.parametrize("db", DBS)
def test_metrics_are_summed_across_child_processes(start, db, fake_gemini):
    s = srv(start, db, fake_gemini)
    _, secret = new_key(s, "--name", "m")
    sid = init(s, secret)
    n = 40
    for i in range(n):   # new connections: both children serve some
        assert post(s, {"jsonrpc": "2.0", "id": i, "method": "ping"}, secret, sid).status_code == 200
    fake_gemini.fault("500", count=1)
    call(s, secret, sid, "gemini_generate", {"prompt": "hi"})
    post(s, {"jsonrpc": "2.0", "id": 0, "method": "ping"}, "gmcp_bad")
    pids = {m.group(1) for m in re.finditer(r"\[pid (\d+):tid \d+\].*method=ping",
                                             open(s.info["error_log"]).read())}
    assert len(pids) == 2
    text = requests.get(s.info["status"]["metrics"]).text
    assert f'gmcp_requests_total{{method="ping",tool="",status="200"}} {n}\n' in text
    assert f'gmcp_request_duration_seconds_count{{method="ping",tool="",status="200"}} {n}\n' in text
    assert 'gmcp_requests_total{method="tools/call",tool="gemini_generate",status="200"} 1' in text
    assert 'gmcp_gemini_calls_total{status="200"} 1' in text
    assert 'gmcp_gemini_retries_total 1' in text
    assert 'gmcp_auth_failures_total{reason="invalid"} 1' in text
    assert re.search(r"^gmcp_active_sessions 1$", text, re.M)
    assert re.search(r'gmcp_bytes_total\{direction="in"\} [1-9]', text)
    assert 'le="+Inf"' in text and "# TYPE gmcp_request_duration_seconds histogram" in text


# ---- CORS, logging, TLS, Apache auth -------------------------------------------------------------

@pytest.mark.parametrize("db", DBS)
def test_cors_preflight_and_exposed_headers(start, db):
    s = srv(start, db, None, "--location-conf", "GeminiMCPAllowedOrigins https://app.example")
    _, secret = new_key(s, "--name", "web")
    r = requests.options(s.url, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id, "
                                          "mcp-protocol-version, mcp-param-q"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "authorization" in r.headers["Access-Control-Allow-Headers"]
    assert r.headers["Vary"] == "Origin"
    r = requests.options(s.url, headers={"Origin": "https://evil.example",
                                         "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.options(s.url, headers={"Origin": "https://app.example",
                                         "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "x-evil"})
    assert r.status_code == 403
    r = post(s, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}, secret,
             Origin="https://app.example")
    assert r.status_code == 200
    exposed = r.headers["Access-Control-Expose-Headers"]
    for h in ("Mcp-Session-Id", "WWW-Authenticate", "Retry-After", "RateLimit-Limit"):
        assert h in exposed
    r = post(s, {"jsonrpc": "2.0", "id": 0, "method": "ping"}, None, Origin="https://app.example")
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"


@pytest.mark.parametrize("db", DBS)
def test_log_line_names_key_never_secret(start, db, fake_gemini):
    s = srv(start, db, fake_gemini)
    kid, secret = new_key(s, "--name", "log")
    sid = init(s, secret)
    call(s, secret, sid, "gemini_generate", {"prompt": "hi"})
    post(s, {"jsonrpc": "2.0", "id": 0, "method": "ping"}, secret[:-2] + "zz")
    log = open(s.info["error_log"]).read()
    line = [l for l in log.splitlines() if "tool=gemini_generate" in l][0]
    assert f"key={kid}" in line and "status=200" in line and "upstream=200" in line
    assert re.search(r"ms=\d+\.\d", line) and "tokens=1/5" in line
    tail = secret.split("_", 2)[2]
    for f in (s.info["error_log"], s.info["access_log"]):
        assert tail not in open(f).read() and tail[:-2] not in open(f).read()
    assert fake_gemini.key not in log


@pytest.mark.parametrize("db", DBS)
def test_apache_auth_maps_users(start, db, fake_gemini):
    s = start(db, "--auth", "apache", "--gemini-url", fake_gemini.url, "--gemini-key",
              fake_gemini.key)
    users = s.info["users"]
    ctl(s, "keys", "create", "--name", "alice's limits", "--user", "alice", "--rate", "1/m",
        "--burst", "2", "--scopes", "gemini_chat_*,gemini_usage")

    def p(user, body, sid=None):
        h = hdrs(None, sid)
        return requests.post(s.url, data=json.dumps(body), headers=h,
                             auth=(user, users[user]) if user else None)
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}
    assert p(None, body).status_code == 401          # mod_auth_basic's own challenge
    r = p("alice", body)
    assert r.status_code == 200
    sa = r.headers["Mcp-Session-Id"]
    r = p("alice", {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "gemini_generate", "arguments": {"prompt": "x"}}}, sa)
    assert r.status_code == 403                      # scopes from her row (no rate spent)
    assert p("alice", body).status_code == 200
    r = p("alice", body)
    assert r.status_code == 429                      # her rate: 1/m with a burst of 2
    # bob has no row: no limits, his own sessions, alice's session is not his.
    sb = p("bob", body).headers["Mcp-Session-Id"]
    assert p("bob", {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sa).status_code == 404
    r = p("bob", {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                  "params": {"name": "gemini_usage", "arguments": {}}}, sb)
    u = response_of(r)["result"]["structuredContent"]
    assert u["principal"] == "user:bob" and u["limits"]["requests"] is None


# A self-signed certificate is its own CA: mod_ssl remarks on that.
@pytest.mark.expect_log(r"AH01906")
def test_tls_with_self_signed_certificate(start):
    s = start("sqlite", "--auth", "apikey", "--tls")
    assert s.url.startswith("https://127.0.0.1:")
    _, secret = new_key(s, "--name", "tls")
    r = requests.post(s.url, data=json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                              "params": INIT}),
                      headers=hdrs(secret), verify=s.info["ca_cert"])
    assert r.status_code == 200 and r.json()["result"]["protocolVersion"] == "2025-11-25"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(s.info["status"]["live"])       # not trusted without the CA file
    assert requests.get(s.info["status"]["live"], verify=s.info["ca_cert"]).status_code == 200
