"""OAuth against a real authorization server: oidc-provider (test/oauth-as.mjs) with
dynamic client registration, PKCE and resource indicators, and the official MCP
TypeScript SDK's OAuth client in both generations — v1, @modelcontextprotocol/sdk
(test/clients/sdk-oauth.mjs), and v2, @modelcontextprotocol/client
(test/clients/sdk-oauth-v2.mjs): discovery (protected resource metadata, then the AS's
metadata), registration, the authorization code with PKCE, tools/list and tools/call, a
refresh after the access token expired, and a key rotation at the AS picked up without a
restart. On SQLite and PostgreSQL."""
import json
import os
import subprocess

import jwt
import pytest
import requests

from conftest import ACCEPT_BOTH, NODE22, ROOT, Server
from harness import free_port

AS_SCRIPT = os.path.join(ROOT, "test", "oauth-as.mjs")
CLIENT = os.path.join(ROOT, "test", "clients", "sdk-oauth.mjs")
CLIENT_V2 = os.path.join(ROOT, "test", "clients", "sdk-oauth-v2.mjs")


class AuthServer:
    def __init__(self, port, resource, keys, ttl):
        self.proc = subprocess.Popen([NODE22, AS_SCRIPT, "--port", str(port), "--resource",
                                      resource, "--keys", keys, "--access-ttl", str(ttl)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), self.proc.stderr.read()
        self.issuer = line.split()[1]

    def client_credentials(self, resource, scope="gemini"):
        r = requests.post(self.issuer + "/token", auth=("test-client", "test-secret"),
                          data={"grant_type": "client_credentials", "resource": resource,
                                "scope": scope}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def setup(request, tmp_path_factory):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    tmp = tmp_path_factory.mktemp("oauth")
    port, as_port = free_port(), free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    auth = AuthServer(as_port, resource, str(tmp / "keys1.json"), ttl=4)
    s = Server(request.param, ["--fixtures", "--port", str(port),
                               "--conf", "GeminiMCPOAuthJWKSRefresh 1 3600",
                               "--location-conf", "GeminiMCPAuth oauth",
                               "--location-conf", f"GeminiMCPOAuthResource {resource}",
                               "--location-conf", f"GeminiMCPOAuthIssuer {auth.issuer}",
                               # the AS's tokens live 4 s: no leeway, so they do expire
                               "--location-conf", "GeminiMCPOAuthLeeway 0"])
    box = {"auth": auth, "server": s, "resource": resource, "as_port": as_port, "tmp": tmp}
    yield box
    s.stop()
    box["auth"].stop()


def test_sdk_discovers_registers_authorizes_calls_and_refreshes(setup):
    s = setup["server"]
    r = subprocess.run([NODE22, CLIENT, s.url, "--tool", "test_simple_text", "--args", "{}",
                        "--sleep-then-call", "6"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["registered"] is True
    assert "test_simple_text" in out["tools"] and "gemini_generate" in out["tools"]
    assert out["call"] and out["second"]
    # The second call came after the first token expired: the SDK got a 401, used its
    # refresh token and retried with a new access token.
    assert len(out["access_tokens"]) >= 2 and out["tokens_saved"] >= 2
    claims = jwt.decode(out["access_tokens"][-1], options={"verify_signature": False})
    assert claims["aud"] == setup["resource"] and claims["sub"] == "alice"
    # The session is owned by the token's subject.
    owners = set(s.sql("SELECT owner FROM mcp_sessions"))
    assert "oauth:alice" in owners, owners


# Before the key rotation test below: that one restarts the AS with 60 s tokens, which
# would not expire during this test's sleep.
def test_sdk_v2_client_discovers_registers_authorizes_calls_and_refreshes(setup):
    s = setup["server"]
    r = subprocess.run([NODE22, CLIENT_V2, s.url, "--tool", "test_simple_text", "--args", "{}",
                        "--sleep-then-call", "6"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["registered"] is True
    assert "test_simple_text" in out["tools"] and "gemini_generate" in out["tools"]
    assert out["call"] and out["second"]
    # As with v1: the second call came after the first token expired, so the SDK got a
    # 401, used its refresh token and retried with a new access token — a refresh, not a
    # second trip through the authorization endpoint.
    assert len(out["access_tokens"]) >= 2 and out["tokens_saved"] >= 2
    assert out["authorizations"] == 1, out
    claims = jwt.decode(out["access_tokens"][-1], options={"verify_signature": False})
    assert claims["aud"] == setup["resource"] and claims["sub"] == "alice"
    # v2 stamps what it saves with the issuer of the AS's (validated) metadata.
    assert out["issuer"] == setup["auth"].issuer
    # This client's session (not just some earlier one) is owned by the token's subject.
    sid = out["session_id"]
    assert sid and "'" not in sid, out
    assert s.sql(f"SELECT owner FROM mcp_sessions WHERE id = '{sid}'") == ["oauth:alice"]


def call(setup, token):
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "pytest", "version": "1"}}}
    return requests.post(setup["server"].url, data=json.dumps(body), timeout=30,
                         headers={"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
                                  "Authorization": f"Bearer {token}"})


def test_key_rotation_at_the_authorization_server_is_picked_up(setup):
    tok = setup["auth"].client_credentials(setup["resource"])
    assert call(setup, tok).status_code == 200
    kid1 = jwt.get_unverified_header(tok)["kid"]
    # The AS restarts with a new signing key (same issuer, same port).
    setup["auth"].stop()
    setup["auth"] = AuthServer(setup["as_port"], setup["resource"],
                               str(setup["tmp"] / "keys2.json"), ttl=60)
    fresh = setup["auth"].client_credentials(setup["resource"])
    assert jwt.get_unverified_header(fresh)["kid"] != kid1
    r = call(setup, fresh)
    assert r.status_code == 200, r.text
    # A token for another resource is refused by the AS itself, and one the server did
    # not get is not accepted in the query string either.
    r = requests.post(setup["auth"].issuer + "/token", auth=("test-client", "test-secret"),
                      data={"grant_type": "client_credentials",
                            "resource": "http://127.0.0.1:1/other", "scope": "gemini"},
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_target"
