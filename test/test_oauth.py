"""OAuth 2.1 resource server (GeminiMCPAuth oauth): the Protected Resource Metadata,
the Bearer challenges, every refusal one by one, scopes, principals and limits, the
shared JWKS cache with its rate-bounded refresh — through httpd with 2 child
processes, on SQLite and PostgreSQL.

The tokens here are signed with keys this file holds and publishes from a small JWKS
server (so a test can rotate keys and count fetches); test_oauth_flow.py runs the
whole flow against a real authorization server (oidc-provider) with the official SDK."""
import http.server
import os
import json
import threading
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import ACCEPT_BOTH, Server, response_of
from harness import free_port
from test_stateless import call as stateless_call

V_NEW = "2026-07-28"


class Issuer:
    """An issuer's metadata and JWKS over HTTP on 127.0.0.1, counting JWKS fetches."""

    def __init__(self):
        self.keys = {}            # kid -> private key
        self.published = []       # kids in the JWKS
        self.jwks_fetches = 0
        issuer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/oauth-authorization-server":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks",
                            "authorization_endpoint": issuer.url + "/auth",
                            "token_endpoint": issuer.url + "/token"}
                elif self.path == "/jwks":
                    issuer.jwks_fetches += 1
                    body = {"keys": [issuer.public_jwk(k) for k in issuer.published]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add_key(self, kid, publish=True):
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def public_jwk(self, kid):
        j = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        j.update(kid=kid, use="sig", alg="RS256")
        return j

    def token(self, kid="k1", alg="RS256", headers=None, **claims):
        now = int(time.time())
        body = {"iss": self.url, "aud": RESOURCE[0], "sub": "alice", "iat": now,
                "exp": now + 300, "scope": "gemini", "client_id": "c1"}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        key = self.keys[kid].private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
        return jwt.encode(body, key, algorithm=alg, headers=dict({"kid": kid}, **(headers or {})))

    def stop(self):
        self.httpd.shutdown()


RESOURCE = [None]  # this module's server's canonical URI, once it runs


@pytest.fixture(scope="module")
def issuer():
    i = Issuer()
    i.add_key("k1")
    yield i
    i.stop()


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def srv(request, issuer):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    port = free_port()
    RESOURCE[0] = f"http://127.0.0.1:{port}/mcp"
    s = Server(request.param, ["--fixtures", "--port", str(port), "--conf",
                               "GeminiMCPOAuthJWKSRefresh 2 3600",
                               "--location-conf", "GeminiMCPAuth oauth",
                               "--location-conf", f"GeminiMCPOAuthResource {RESOURCE[0]}",
                               "--location-conf", f"GeminiMCPOAuthIssuer {issuer.url}",
                               "--location-conf", "GeminiMCPOAuthClaims sub org"])
    yield s
    s.stop()


def post(s, body, token=None, version="2025-11-25", sid=None, url=None, **extra):
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
         "MCP-Protocol-Version": version}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if sid:
        h["Mcp-Session-Id"] = sid
    h.update(extra)
    return requests.post(url or s.url, data=json.dumps(body), headers=h, timeout=30)


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "pytest", "version": "1"}}}


def session(s, token):
    r = post(s, INIT, token)
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    assert post(s, {"jsonrpc": "2.0", "method": "notifications/initialized"}, token,
                sid=sid).status_code == 202
    return sid


def tool(s, token, sid, name, args=None, rid=1):
    return post(s, {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                    "params": {"name": name, "arguments": args or {}}}, token, sid=sid)


def challenge(r):
    return r.headers.get("WWW-Authenticate", "")


def prm_url(s):
    return s.base + "/.well-known/oauth-protected-resource/mcp"


def test_protected_resource_metadata(srv, issuer):
    for url in (prm_url(srv), srv.base + "/.well-known/oauth-protected-resource"):
        r = requests.get(url, headers={"Origin": "http://elsewhere.example"}, timeout=10)
        assert r.status_code == 200, (url, r.text)
        doc = r.json()
        assert doc["resource"] == RESOURCE[0]
        assert doc["authorization_servers"] == [issuer.url]
        assert doc["scopes_supported"] == ["gemini", "gemini:generate", "gemini:chat",
                                           "gemini:files"]
        assert doc["bearer_methods_supported"] == ["header"]
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert requests.get(srv.base + "/.well-known/oauth-protected-resource/other",
                        timeout=10).status_code == 404
    assert requests.post(prm_url(srv), data="{}", timeout=10).status_code == 405


def test_no_token_is_challenged_with_the_metadata(srv):
    r = post(srv, INIT)
    assert r.status_code == 401
    assert challenge(r) == (f'Bearer resource_metadata="{prm_url(srv)}", scope="gemini"')
    assert "Mcp-Session-Id" not in r.headers


def test_a_good_token_lists_and_calls_tools_in_both_revisions(srv, issuer):
    tok = issuer.token()
    sid = session(srv, tok)
    r = post(srv, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, tok, sid=sid)
    assert r.status_code == 200 and response_of(r, 1)["result"]["tools"]
    r = tool(srv, tok, sid, "test_simple_text", rid=2)
    assert r.status_code == 200 and "result" in response_of(r, 2), r.text
    r = stateless_call(srv, "tools/call", {"name": "test_simple_text", "arguments": {}},
                       headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200 and "result" in response_of(r, 1), r.text
    r = stateless_call(srv, "tools/call", {"name": "test_simple_text", "arguments": {}})
    assert r.status_code == 401 and "resource_metadata=" in challenge(r)
    # The session belongs to the token's subject: another subject cannot use it.
    other = issuer.token(sub="mallory")
    assert tool(srv, other, sid, "test_simple_text").status_code in (403, 404)


def refusals(issuer):
    good = issuer.token()
    head, body, sig = good.split(".")
    forged_body = jwt.utils.base64url_encode(json.dumps(dict(
        jwt.decode(good, options={"verify_signature": False}), sub="root")).encode()).decode()
    pub_pem = issuer.keys["k1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    hs = jwt.api_jws.PyJWS()
    hs._algorithms["HS256"] = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
    hs_body = json.dumps({"iss": issuer.url, "aud": RESOURCE[0], "sub": "alice",
                          "exp": now + 300}).encode()
    # PyJWT refuses an HMAC key that looks like a public key; sign by hand.
    import hmac, hashlib
    hs_head = jwt.utils.base64url_encode(b'{"alg":"HS256","kid":"k1","typ":"JWT"}').decode()
    hs_pay = jwt.utils.base64url_encode(hs_body).decode()
    hs_sig = jwt.utils.base64url_encode(hmac.new(pub_pem, f"{hs_head}.{hs_pay}".encode(),
                                                 hashlib.sha256).digest()).decode()
    none_head = jwt.utils.base64url_encode(b'{"alg":"none","kid":"k1"}').decode()
    return {
        "wrong audience": issuer.token(aud="http://127.0.0.1:1/other"),
        "wrong issuer": issuer.token(iss="http://127.0.0.1:1"),
        "expired": issuer.token(exp=now - 120),
        "not yet valid": issuer.token(nbf=now + 600),
        "no expiry": issuer.token(exp=None),
        "alg none": f"{none_head}.{body}.x",
        "HS256 with the public key": f"{hs_head}.{hs_pay}.{hs_sig}",
        "tampered payload": f"{head}.{forged_body}.{sig}",
        "not a JWT": "opaque-token-value",
    }


@pytest.mark.parametrize("case", ["wrong audience", "wrong issuer", "expired", "not yet valid",
                                  "no expiry", "alg none", "HS256 with the public key",
                                  "tampered payload", "not a JWT"])
def test_each_bad_token_is_refused(srv, issuer, case):
    tok = refusals(issuer)[case]
    r = post(srv, INIT, tok)
    assert r.status_code == 401, (case, r.text)
    ch = challenge(r)
    assert ch.startswith('Bearer error="invalid_token", error_description="'), ch
    assert f'resource_metadata="{prm_url(srv)}"' in ch
    assert "Mcp-Session-Id" not in r.headers and "result" not in r.json()
    assert tok not in r.text and tok not in ch
    r = stateless_call(srv, "tools/call", {"name": "test_simple_text", "arguments": {}},
                       headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 401, (case, r.text)


def test_the_tenant_claim_names_the_owner(srv, issuer):
    for sub in ("dora", "erin"):
        session(srv, issuer.token(sub=sub, org="acme"))
    session(srv, issuer.token(sub="frank"))
    owners = srv.sql("SELECT owner FROM mcp_sessions")
    assert "tenant:acme" in owners and "oauth:frank" in owners
    assert "oauth:dora" not in owners and "oauth:erin" not in owners
    r = post(srv, INIT, issuer.token(sub="gina", org=["not", "a", "string"]))
    assert r.status_code == 401 and "tenant" in r.json()["error"]["message"]


def test_token_in_query_string_is_refused(srv, issuer):
    tok = issuer.token()
    r = post(srv, INIT, url=f"{srv.url}?access_token={tok}")
    assert r.status_code == 400
    assert 'error="invalid_request"' in challenge(r)
    r = post(srv, INIT, tok, url=f"{srv.url}?x=1&access_token={tok}")
    assert r.status_code == 400 and "Mcp-Session-Id" not in r.headers


def test_missing_scope_is_403_with_the_scope_it_needs(srv, issuer):
    tok = issuer.token(scope="gemini:files openid")
    sid = session(srv, tok)
    r = tool(srv, tok, sid, "gemini_chat_list")
    assert r.status_code == 403, r.text
    ch = challenge(r)
    assert ch.startswith('Bearer error="insufficient_scope"'), ch
    assert 'scope="gemini:chat gemini:files"' in ch
    assert f'resource_metadata="{prm_url(srv)}"' in ch
    assert "gemini:chat" in r.json()["error"]["message"]
    # The hierarchy: "gemini" covers gemini:chat's tools; gemini:chat covers its own.
    for scope in ("gemini", "gemini:chat"):
        t = issuer.token(scope=scope)
        r = tool(srv, t, session(srv, t), "gemini_chat_list")
        assert r.status_code == 200, (scope, r.text)
    t = issuer.token(scope="gemini:chat")
    assert tool(srv, t, session(srv, t), "test_simple_text").status_code == 403
    # scp as an array (Entra ID, Okta) works the same.
    t = issuer.token(scope=None, scp=["gemini:chat"])
    assert tool(srv, t, session(srv, t), "gemini_chat_list").status_code == 200


def test_unknown_kid_refreshes_once_then_refuses_and_rotation_is_picked_up(srv, issuer):
    tok = issuer.token()
    assert post(srv, INIT, tok).status_code == 200   # the JWKS is cached
    time.sleep(2.2)                                  # past GeminiMCPOAuthJWKSRefresh's MIN
    stranger, rotated = f"stranger-{srv.db}", f"k2-{srv.db}"
    issuer.add_key(stranger, publish=False)
    before = issuer.jwks_fetches
    bad = issuer.token(kid=stranger)
    for _ in range(4):                               # every child, several times
        r = post(srv, INIT, bad)
        assert r.status_code == 401 and 'error="invalid_token"' in challenge(r)
    assert issuer.jwks_fetches == before + 1
    # The issuer rotates: a new key is published and signs from now on.
    time.sleep(2.2)
    issuer.add_key(rotated)
    fresh = issuer.token(kid=rotated)
    for _ in range(4):
        assert post(srv, INIT, fresh).status_code == 200
    assert issuer.jwks_fetches == before + 2
    assert post(srv, INIT, tok).status_code == 200   # the old key still verifies
    # A key the issuer withdraws stops verifying once the set is fetched again, even
    # for a token that verified before (remembered only with the set that verified it).
    issuer.published.remove(rotated)
    time.sleep(2.2)
    assert post(srv, INIT, bad).status_code == 401   # unknown kid: a fetch
    assert issuer.jwks_fetches == before + 3
    for _ in range(4):
        assert post(srv, INIT, fresh).status_code == 401


def test_subject_limits_and_usage(srv, issuer):
    srv.gmcpctl_run("keys", "create", "--name", "carol-limits", "--subject", "carol",
                    "--rate", "3/h", "--burst", "3")  # initialize, initialized, one call
    tok = issuer.token(sub="carol")
    sid = session(srv, tok)
    assert tool(srv, tok, sid, "test_simple_text", rid=1).status_code == 200
    r = tool(srv, tok, sid, "test_simple_text", rid=2)
    assert r.status_code == 429, r.text
    out = srv.gmcpctl_run("--json", "keys", "list").stdout
    assert any(k.get("name") == "carol-limits" for k in json.loads(out))
    # Revoking the row refuses the subject's tokens too.
    kid = [k["id"] for k in json.loads(out) if k.get("name") == "carol-limits"][0]
    srv.gmcpctl_run("keys", "revoke", kid)
    time.sleep(0.7)
    r = post(srv, INIT, issuer.token(sub="carol"))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_token_paths_keep_no_connection(srv, issuer):
    """Every way through the token check (good, refused, revoked row, query token),
    4 x DBDMax times each, then the server still answers at once."""
    srv.gmcpctl_run("keys", "create", "--name", "hank-row", "--subject", "hank")
    rows = json.loads(srv.gmcpctl_run("--json", "keys", "list").stdout)
    srv.gmcpctl_run("keys", "revoke", [k["id"] for k in rows if k["name"] == "hank-row"][0])
    time.sleep(0.7)
    good, now = issuer.token(sub="ivy"), int(time.time())
    cases = [(good, None, 200), (issuer.token(exp=now - 600), None, 401),
             (issuer.token(sub="hank"), None, 401), (None, f"?access_token={good}", 400),
             (issuer.token(kid="k1", aud="http://127.0.0.1:1/x"), None, 401)]
    for _ in range(4 * 16):
        for tok, query, want in cases:
            r = post(srv, INIT, tok, url=srv.url + (query or ""))
            assert r.status_code == want, (want, r.text)
    start = time.time()
    assert post(srv, INIT, issuer.token(sub="ivy")).status_code == 200
    assert time.time() - start < 2


def test_usage_shows_oauth_subjects(srv, issuer):
    """gmcpctl usage: a subject without a key row is metered as oauth:<sub>, one with a
    row (keys create --subject) under the row's id."""
    out = srv.gmcpctl_run("--json", "keys", "create", "--name", "fern-row", "--subject",
                          "fern").stdout
    row = json.loads(out)["id"]
    for sub, calls in (("dave", 2), ("fern", 3)):
        tok = issuer.token(sub=sub)
        sid = session(srv, tok)
        for i in range(calls):
            assert tool(srv, tok, sid, "test_simple_text", rid=i + 1).status_code == 200
    srv.graceful_restart()  # flushes the counters kept in shared memory

    def usage(key, want):
        # The old children write their counts as they end, which may be after the new
        # generation already serves (under ASan, seconds after).
        deadline = time.time() + 20
        while True:
            rows = json.loads(srv.gmcpctl_run("--json", "usage", "--key", key).stdout)
            if sum(u["requests"] for u in rows) >= want or time.time() > deadline:
                return rows
            time.sleep(0.2)
    dave, fern = usage("oauth:dave", 4), usage(row, 5)
    # initialize, notifications/initialized and the calls
    assert sum(u["requests"] for u in dave) == 2 + 2, dave
    assert sum(u["requests"] for u in fern) == 2 + 3, fern
    assert json.loads(srv.gmcpctl_run("--json", "usage", "--key", "oauth:fern").stdout) == []
    plain = srv.gmcpctl_run("usage", "--since", "24h").stdout
    assert "oauth:dave" in plain and row in plain


@pytest.mark.parametrize("line,words", [
    ("GeminiMCPOAuthResource ftp://x/mcp", "absolute http(s) URL"),
    ("GeminiMCPOAuthResource https://x/mcp#frag", "absolute http(s) URL"),
    ("GeminiMCPOAuthIssuer https://as.example https://as.example/jwks?x", "absolute http(s)"),
    ("GeminiMCPOAuthLeeway 301", "0 to 300"),
    ('GeminiMCPOAuthScope "a b"', "not a scope name"),
    ("GeminiMCPOAuthClaims sub\n  GeminiMCPOAuthClaims 'o rg'", "not a claim name"),
    ("GeminiMCPOAuthJWKSRefresh 0", "MIN (1-3600 seconds)"),
    ("GeminiMCPAuth apache oauth", "only 'apikey oauth'"),
    ("GeminiMCPAuth bogus", "not one of apikey, oauth"),
])
def test_bad_directives_fail_configtest(tmp_path, line, words):
    import os
    import subprocess
    from harness import ROOT, configtest_conf, httpd_env
    build = os.environ.get("GMCP_BUILD", "build")
    build = build if os.path.isabs(build) else os.path.join(ROOT, build)
    conf = configtest_conf(str(tmp_path), build, line)
    r = subprocess.run(["/usr/sbin/apache2", "-t", "-f", conf], capture_output=True, text=True,
                       env=httpd_env(build, str(tmp_path)))
    assert r.returncode != 0 and words in r.stderr, (line, r.stderr)
