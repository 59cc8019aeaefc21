"""Opaque access tokens (GeminiMCPOAuthIntrospection): tokens that are not JWTs are asked
about at the authorization server's RFC 7662 endpoint — a real one, oidc-provider
(test/oauth-as.mjs --format opaque) — authenticated as a confidential client with
client_secret_basic. The official SDK's whole OAuth flow with such tokens (refresh
included); a client_credentials token names its client; an active answer is reused for
the configured seconds and no longer (a revoked token is refused after it); what is not
a bearer token, and JWTs, are never sent there; a wrong secret or an unreachable endpoint
is a 503 that names no secret; a secret that cannot be read stops httpd from starting.
On SQLite and PostgreSQL."""
import json
import os
import subprocess
import time

import pytest
import requests

from conftest import ACCEPT_BOTH, NODE22, ROOT, Server
from harness import free_port

AS_SCRIPT = os.path.join(ROOT, "test", "oauth-as.mjs")
CLIENT = os.path.join(ROOT, "test", "clients", "sdk-oauth.mjs")
CACHE = 3  # seconds an active answer is reused
SECRET = "test-secret"
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "pytest", "version": "1"}}}


class OpaqueAuthServer:
    def __init__(self, port, resource, ttl):
        self.proc = subprocess.Popen([NODE22, AS_SCRIPT, "--port", str(port), "--resource",
                                      resource, "--access-ttl", str(ttl), "--format", "opaque"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), self.proc.stderr.read()
        self.issuer = line.split()[1]
        self.introspection = self.issuer + "/token/introspection"

    def client_credentials(self, resource, scope="gemini"):
        r = requests.post(self.issuer + "/token", auth=("test-client", SECRET),
                          data={"grant_type": "client_credentials", "resource": resource,
                                "scope": scope}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def revoke(self, token):
        r = requests.post(self.issuer + "/token/revocation", auth=("test-client", SECRET),
                          data={"token": token, "token_type_hint": "access_token"}, timeout=10)
        assert r.status_code == 200, r.text

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def introspection_conf(resource, issuer, url, secret_file, cache=CACHE):
    return ["--location-conf", "GeminiMCPAuth oauth",
            "--location-conf", f"GeminiMCPOAuthResource {resource}",
            "--location-conf", f"GeminiMCPOAuthIssuer {issuer}",
            "--location-conf",
            f"GeminiMCPOAuthIntrospection {url} test-client file:{secret_file} {cache}"]


def secret_file(tmp, value=SECRET):
    path = os.path.join(str(tmp), "introspection.secret")
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def setup(request, tmp_path_factory):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    tmp = tmp_path_factory.mktemp("introspection")
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    auth = OpaqueAuthServer(free_port(), resource, ttl=4)
    s = Server(request.param, ["--fixtures", "--port", str(port),
                               "--location-conf", "GeminiMCPOAuthLeeway 0"]
               + introspection_conf(resource, auth.issuer, auth.introspection,
                                    secret_file(tmp)))
    yield {"auth": auth, "server": s, "resource": resource}
    s.stop()
    auth.stop()


def call(url, token, session=None):
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
         "Authorization": f"Bearer {token}"}
    return (session or requests).post(url, data=json.dumps(INIT), headers=h, timeout=30)


def test_sdk_flow_with_opaque_tokens_including_refresh(setup):
    s = setup["server"]
    r = subprocess.run([NODE22, CLIENT, s.url, "--tool", "test_simple_text", "--args", "{}",
                        "--sleep-then-call", "6"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["registered"] is True and out["call"] and out["second"]
    assert "gemini_generate" in out["tools"]
    # Opaque, not JWTs; the second call came after the first token expired (4 s).
    assert len(out["access_tokens"]) >= 2
    assert all(t.count(".") != 2 for t in out["access_tokens"])
    assert "oauth:alice" in set(s.sql("SELECT owner FROM mcp_sessions"))


def test_client_credentials_token_names_its_client(setup):
    tok = setup["auth"].client_credentials(setup["resource"])
    r = call(setup["server"].url, tok)
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    owner = setup["server"].sql(f"SELECT owner FROM mcp_sessions WHERE id = '{sid}'")
    assert owner == ["oauth:test-client"], owner


def test_an_active_answer_is_reused_for_the_cache_seconds_only(setup):
    s, auth = setup["server"], setup["auth"]
    tok = auth.client_credentials(setup["resource"])
    keep = requests.Session()  # one connection: one child process, one cache
    assert call(s.url, tok, keep).status_code == 200
    auth.revoke(tok)
    # The AS now says inactive; the answer this child got is still reused (at most
    # CACHE seconds after it was given) ...
    assert call(s.url, tok, keep).status_code == 200
    time.sleep(CACHE + 0.5)
    # ... and then asked again: refused, on every child.
    for sess in (keep, None, None):
        r = call(s.url, tok, sess)
        assert r.status_code == 401, r.text
        www = r.headers["WWW-Authenticate"]
        assert 'error="invalid_token"' in www and "resource_metadata=" in www
        assert "not active" in r.json()["error"]["message"]


@pytest.mark.parametrize("token,words", [
    ("madeUpOpaqueToken0123456789", "not active"),    # asked: the AS does not know it
    ("abc%zz", "not a bearer token"),                 # not b64token: never sent out
    ("a=b", "not a bearer token"),
    ("e30.e30.e30", "signing algorithm"),             # JWT-shaped: checked here, not asked
])
def test_bad_tokens_are_refused(setup, token, words):
    r = call(setup["server"].url, token)
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert words in r.json()["error"]["message"], r.text


@pytest.mark.expect_log(r"token introspection at http://127\.0\.0\.1:\d+/token/introspection")
def test_wrong_secret_or_unreachable_endpoint_is_503_naming_no_secret(setup, start, tmp_path):
    auth = setup["auth"]
    tok = auth.client_credentials(setup["resource"])
    wrong = "wrong-secret-5b1f9e"
    for url, secret in ((auth.introspection, wrong),
                        (f"http://127.0.0.1:{free_port()}/token/introspection", SECRET)):
        d = tmp_path / str(abs(hash(url)))
        d.mkdir()
        port = free_port()
        # The token names setup's resource; this server must be that resource too.
        s = start("sqlite", "--fixtures", "--port", str(port),
                  *introspection_conf(setup["resource"], auth.issuer, url,
                                      secret_file(d, secret)))
        r = call(s.url, tok)
        assert r.status_code == 503, r.text
        assert "cannot be asked" in r.json()["error"]["message"]
        assert r.headers.get("Retry-After")
        log = "\n".join(s.new_log_lines())
        s.log_pos = 0
        assert "token introspection at" in log
        assert wrong not in log and SECRET not in log and tok not in log
        assert wrong not in r.text and tok not in r.text


def test_unreadable_secret_stops_startup(setup, tmp_path):
    with pytest.raises(RuntimeError) as e:
        Server("sqlite", ["--port", str(free_port())]
               + introspection_conf(setup["resource"], setup["auth"].issuer,
                                    setup["auth"].introspection, str(tmp_path / "missing")))
    assert "GeminiMCPOAuthIntrospection" in str(e.value)


@pytest.mark.parametrize("line,words", [
    ("GeminiMCPOAuthIntrospection https://as.example/i c1", "URL CLIENT-ID"),
    ("GeminiMCPOAuthIntrospection https://as.example/i?x c1 env:S", "absolute http(s) URL"),
    ("GeminiMCPOAuthIntrospection https://as.example/i c1 s3cret", "file:/path/to/secret"),
    ("GeminiMCPOAuthIntrospection https://as.example/i c1 env:S 301", "0 to 300"),
    ("GeminiMCPOAuthIntrospection https://as.example/i 'c 1' env:S", "not a client_id"),
])
def test_bad_introspection_directives_fail_configtest(tmp_path, line, words):
    from harness import configtest_conf, httpd_env
    build = os.environ.get("GMCP_BUILD", "build")
    build = build if os.path.isabs(build) else os.path.join(ROOT, build)
    conf = configtest_conf(str(tmp_path), build, line)
    r = subprocess.run(["/usr/sbin/apache2", "-t", "-f", conf], capture_output=True, text=True,
                       env=httpd_env(build, str(tmp_path)))
    assert r.returncode != 0 and words in r.stderr, (line, r.stderr)
    assert "s3cret" not in r.stderr
