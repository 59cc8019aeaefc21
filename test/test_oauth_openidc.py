"""OAuth the Apache way: mod_auth_openidc (Debian 12's libapache2-mod-auth-openidc,
2.4.12.3) as the OAuth 2.0 resource server in front of the module, which runs with
GeminiMCPAuth apache and takes r->user (the token's sub) as its principal.

The tokens come from the real authorization server of the suite (test/oauth-as.mjs,
oidc-provider); the refused ones are made with that server's own signing key (its
--keys file) so that each differs from a good token in one thing only (audience,
expiry, issuer), or are a good token tampered with.

mod_auth_openidc 2.4.12.3 takes OIDCOAuthVerifyJwksUri as https only (the directive
refuses an http URL at startup), and the test AS is plain http on loopback: the JWKS is
served to httpd over TLS by a small pass-through in front of the AS (JwksFront), trusted
with OIDCCABundlePath, with certificate validation left on.
"""
import base64
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import ACCEPT_BOTH, INIT_PARAMS, NODE22, ROOT, Server, check_logs, response_of
from harness import free_port

OPENIDC = "/usr/lib/apache2/modules/mod_auth_openidc.so"
MODDIR = "/usr/lib/apache2/modules"
AS_SCRIPT = os.path.join(ROOT, "test", "oauth-as.mjs")

pytestmark = pytest.mark.skipif(
    not os.path.exists(OPENIDC),
    reason=f"{OPENIDC} is absent (apt-get install libapache2-mod-auth-openidc)")

# What mod_auth_openidc logs when it refuses a token.
REFUSED = r"\[auth_openidc:error\]"
# A kid not in the cached JWKS makes it fetch the JWKS again (a key rollover, maybe).
REFETCH = r"\[auth_openidc:warn\].*doing a forced refresh in case keys were rolled over"
# A Require claim that fails is httpd's authorization failure.
AUTHZ = r"\[authz_core:error\].*AH01631: user \S+: authorization failure"


class AuthServer:
    """test/oauth-as.mjs on a loopback port (as in test_oauth_flow.py)."""

    def __init__(self, port, resource, keys, ttl):
        self.keys_file = keys
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

    def sign(self, claims, headers):
        """A JWT signed with the AS's own (first) signing key."""
        jwk = json.load(open(self.keys_file))["keys"][0]
        key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
        return jwt.encode(claims, key, algorithm="RS256", headers=headers)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class JwksFront:
    """HTTPS on a loopback port, passing GETs through to the (plain http) AS."""

    def __init__(self, port, upstream, cert, key):
        self.fetches = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                front.fetches += 1
                up = requests.get(upstream + self.path, timeout=10)
                self.send_response(up.status_code)
                self.send_header("Content-Type", up.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(up.content)))
                self.end_headers()
                self.wfile.write(up.content)

            def log_message(self, *args):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed(tmp):
    """A certificate for 127.0.0.1, in a directory httpd's children (www-data) can read
    (pytest's own temporary directories are private to root)."""
    cert, key = os.path.join(tmp, "front-cert.pem"), os.path.join(tmp, "front-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    os.chmod(cert, 0o644)   # read by the children through libcurl (OIDCCABundlePath)
    return cert, key


def openidc_conf(jwks_uri, ca_bundle):
    """Server-level lines: the modules, and the resource-server directives, which
    2.4.12.3 takes at server (virtual host) level only."""
    return ["<IfModule !authn_core_module>",
            f"LoadModule authn_core_module {MODDIR}/mod_authn_core.so",
            "</IfModule>",
            "<IfModule !headers_module>",
            f"LoadModule headers_module {MODDIR}/mod_headers.so",
            "</IfModule>",
            f"LoadModule auth_openidc_module {OPENIDC}",
            f"OIDCOAuthVerifyJwksUri {jwks_uri}",
            # only because the test's JWKS front has a self-signed certificate
            f"OIDCCABundlePath {ca_bundle}",
            "OIDCOAuthRemoteUserClaim sub"]


def location_conf(resource, issuer):
    return ["AuthType oauth20",
            "<RequireAny>",
            # CORS preflights carry no token; the module answers them itself.
            "Require method OPTIONS",
            # Several Require lines on their own mean any one of them: all, here.
            "<RequireAll>",
            f"Require claim aud:{resource}",
            f"Require claim iss:{issuer}",
            "</RequireAll>",
            "</RequireAny>",
            # The claims stay out of the request headers (the module needs r->user only).
            "OIDCPassClaimsAs none",
            # mod_auth_openidc leaves the challenge of a failed Require claim to
            # mod_headers (its ChangeLog, 2.4.8).
            "Header always append WWW-Authenticate %{OIDC_OAUTH_BEARER_SCOPE_ERROR}e "
            "\"expr=(%{REQUEST_STATUS} == 401) && (-n reqenv('OIDC_OAUTH_BEARER_SCOPE_ERROR'))\"",
            "GeminiMCPAuth apache"]


def args(kind, lines):
    out = []
    for l in lines:
        out += [kind, l]
    return out


@pytest.fixture(scope="module", params=["sqlite", "pgsql"])
def setup(request, tmp_path_factory):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    tmp = tmp_path_factory.mktemp("openidc")
    port, as_port, front_port = free_port(), free_port(), free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    auth = AuthServer(as_port, resource, str(tmp / "keys.json"), ttl=300)
    box = {"auth": auth, "resource": resource}
    front = s = certs = None
    try:
        meta = requests.get(auth.issuer + "/.well-known/openid-configuration", timeout=10).json()
        jwks = urlsplit(meta["jwks_uri"])
        assert f"{jwks.scheme}://{jwks.netloc}" == auth.issuer, meta["jwks_uri"]
        certs = tempfile.mkdtemp(prefix="gmcp-openidc-")
        os.chmod(certs, 0o755)
        cert, key = self_signed(certs)
        front = JwksFront(front_port, auth.issuer, cert, key)
        jwks_uri = f"https://127.0.0.1:{front_port}{jwks.path}"
        s = Server(request.param, ["--fixtures", "--port", str(port)]
                   + args("--conf", openidc_conf(jwks_uri, cert))
                   + args("--location-conf", location_conf(resource, auth.issuer)))
        box.update(server=s, front=front, startup=s.new_log_lines())
        yield box
    finally:
        if s:
            s.stop()
        if front:
            front.stop()
        box["auth"].stop()   # the test of key rotation starts another
        if certs:
            shutil.rmtree(certs, ignore_errors=True)


@pytest.fixture(autouse=True)
def _logs(request):
    if "setup" not in request.fixturenames:
        yield
        return
    s = request.getfixturevalue("setup")["server"]
    s.new_log_lines()
    yield
    check_logs(request, [s])


def post(setup, body, token=None, session=None):
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if session:
        h["Mcp-Session-Id"] = session
    return requests.post(setup["server"].url, data=json.dumps(body), headers=h, timeout=30)


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}


def claims_of(token):
    return jwt.decode(token, options={"verify_signature": False})


def resigned(setup, token, **changes):
    """The claims of a good token, changed, signed again with the AS's key and kid."""
    c = dict(claims_of(token), **changes)
    c = {k: v for k, v in c.items() if v is not None}
    h = jwt.get_unverified_header(token)
    return setup["auth"].sign(c, {"kid": h["kid"], "typ": h.get("typ", "JWT")})


SCOPE_ERROR = ('Bearer error="insufficient_scope", '
               'error_description="Different scope(s) or other claims required"')


def assert_refused(r, status=401, error="invalid_token"):
    assert r.status_code == status, (r.status_code, r.headers, r.text)
    www = r.headers.get("WWW-Authenticate", "")
    assert www.startswith("Bearer") and f'error="{error}"' in www, www
    # mod_auth_openidc's challenge, not the module's: no RFC 9728 pointer to the
    # protected resource metadata.
    assert "resource_metadata" not in www, www
    assert "Mcp-Session-Id" not in r.headers


def test_startup_says_the_resource_server_role_is_deprecated(setup):
    # 2.4.12.3 warns at every start (its successor is mod_oauth2).
    assert any("auth_openidc:warn" in l and "deprecated" in l for l in setup["startup"]), \
        setup["startup"]


def test_valid_token_initializes_and_the_session_is_the_subjects(setup):
    s = setup["server"]
    tok = setup["auth"].client_credentials(setup["resource"])
    claims = claims_of(tok)
    assert claims["aud"] == setup["resource"] and claims["iss"] == setup["auth"].issuer
    sub = claims["sub"]
    r = post(setup, INIT, tok)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["protocolVersion"] == INIT_PARAMS["protocolVersion"]
    sid = r.headers["Mcp-Session-Id"]
    assert post(setup, {"jsonrpc": "2.0", "method": "notifications/initialized"}, tok,
                sid).status_code == 202
    # The module's principal is r->user, i.e. the token's sub (OIDCOAuthRemoteUserClaim).
    r = post(setup, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": "gemini_usage", "arguments": {}}}, tok, sid)
    assert r.status_code == 200, r.text
    assert response_of(r)["result"]["structuredContent"]["principal"] == f"user:{sub}"
    assert f"user:{sub}" in set(s.sql("SELECT owner FROM mcp_sessions"))
    assert s.sql(f"SELECT owner FROM mcp_sessions WHERE id = '{sid}'") == [f"user:{sub}"]
    # Another subject's token (same AS key, same audience) is not that session's owner.
    other = resigned(setup, tok, sub="mallory")
    assert post(setup, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, other,
                sid).status_code == 404
    r = post(setup, INIT, other)
    assert r.status_code == 200, r.text
    assert s.sql("SELECT owner FROM mcp_sessions WHERE id = '%s'"
                 % r.headers["Mcp-Session-Id"]) == ["user:mallory"]


def test_no_token_is_refused_by_mod_auth_openidc(setup):
    sessions = setup["server"].sql("SELECT COUNT(*) FROM mcp_sessions")
    r = post(setup, INIT)
    assert_refused(r, 401, "invalid_request")
    assert r.headers["WWW-Authenticate"] == \
        'Bearer error="invalid_request", error_description="No bearer token found in the request"'
    # Not an MCP (JSON-RPC) error: httpd's own error page.
    assert not r.headers.get("Content-Type", "").startswith("application/json")
    assert setup["server"].sql("SELECT COUNT(*) FROM mcp_sessions") == sessions


def test_resigned_token_is_accepted_so_the_refusals_below_mean_something(setup):
    tok = setup["auth"].client_credentials(setup["resource"])
    assert post(setup, INIT, resigned(setup, tok)).status_code == 200


@pytest.mark.expect_log(AUTHZ)
def test_token_for_another_audience_is_refused(setup):
    tok = setup["auth"].client_credentials(setup["resource"])
    for aud in ("http://127.0.0.1:1/other", [f"{setup['resource']}/x"], setup["resource"] + "/"):
        r = post(setup, INIT, resigned(setup, tok, aud=aud))
        # The signature and expiry are fine, so authentication succeeds; the
        # Require claim aud:... authorization fails: 401, whose challenge is the
        # mod_headers line's (without it there is no WWW-Authenticate at all).
        assert_refused(r, 401, "insufficient_scope")
        assert r.headers["WWW-Authenticate"] == SCOPE_ERROR
    # An audience list that holds the resource is this resource's.
    r = post(setup, INIT, resigned(setup, tok, aud=["http://127.0.0.1:1/other",
                                                     setup["resource"]]))
    assert r.status_code == 200, r.text


@pytest.mark.expect_log(AUTHZ)
def test_token_from_another_issuer_is_refused(setup):
    tok = setup["auth"].client_credentials(setup["resource"])
    # 2.4.12.3 checks no issuer for OAuth access tokens: the Require claim iss: does.
    r = post(setup, INIT, resigned(setup, tok, iss="http://127.0.0.1:1"))
    assert_refused(r, 401, "insufficient_scope")
    assert r.headers["WWW-Authenticate"] == SCOPE_ERROR


@pytest.mark.expect_log(REFUSED)
def test_expired_token_is_refused(setup):
    tok = setup["auth"].client_credentials(setup["resource"])
    now = int(time.time())
    r = post(setup, INIT, resigned(setup, tok, iat=now - 120, exp=now - 5))
    assert_refused(r)
    assert 'error_description="JWT token could not be validated"' in \
        r.headers["WWW-Authenticate"]


@pytest.mark.expect_log(REFUSED, REFETCH)
def test_tampered_tokens_are_refused(setup):
    tok = setup["auth"].client_credentials(setup["resource"])
    head, payload, sig = tok.split(".")

    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    # The payload changed under the AS's signature.
    forged = ".".join([head, b64(dict(claims_of(tok), sub="root")), sig])
    assert_refused(post(setup, INIT, forged))
    # One character of the signature changed.
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert_refused(post(setup, INIT, ".".join([head, payload, flipped])))
    # Signed by another key under the AS key's kid.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    h = jwt.get_unverified_header(tok)
    assert_refused(post(setup, INIT, jwt.encode(claims_of(tok), pem, algorithm="RS256",
                                               headers={"kid": h["kid"]})))
    # alg none.
    none = ".".join([b64({"alg": "none", "kid": h["kid"]}), payload, ""])
    assert_refused(post(setup, INIT, none))
    # Not a JWT at all.
    assert_refused(post(setup, INIT, "not-a-jwt"))


def test_fact_a_token_without_exp_is_accepted(setup):
    # 2.4.12.3 makes exp optional for JWT access tokens (it checks exp only when there
    # is one): only the AS's signing policy keeps tokens short-lived.
    tok = setup["auth"].client_credentials(setup["resource"])
    r = post(setup, INIT, resigned(setup, tok, exp=None))
    assert r.status_code == 200, r.text


def test_fact_an_http_jwks_uri_is_refused_at_startup():
    # OIDCOAuthVerifyJwksUri takes https URLs only in 2.4.12.3.
    with pytest.raises(RuntimeError) as e:
        Server("sqlite", ["--port", str(free_port())]
               + args("--conf", openidc_conf("http://127.0.0.1:1/jwks", "/dev/null")))
    assert 'cannot be parsed as a "https" URL' in str(e.value), str(e.value)


def test_cors_preflight_reaches_the_module_without_a_token(setup):
    s = setup["server"]
    r = requests.options(s.url, headers={
        "Origin": s.base, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id"},
        timeout=10)
    # The module's preflight answer (Require method OPTIONS), not a 401.
    assert r.status_code == 204, (r.status_code, r.headers, r.text)
    assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE, OPTIONS"
    assert r.headers["Access-Control-Allow-Origin"] == s.base
    # Only OPTIONS: a GET or DELETE without a token is still refused.
    for method in ("GET", "DELETE"):
        r = requests.request(method, s.url, headers={"Accept": ACCEPT_BOTH}, timeout=10)
        assert_refused(r, 401, "invalid_request")


# Last: the AS restarts with a new key.
@pytest.mark.expect_log(REFETCH)
def test_key_rotation_at_the_authorization_server_is_picked_up(setup):
    old = setup["auth"]
    tok = old.client_credentials(setup["resource"])
    assert post(setup, INIT, tok).status_code == 200
    port = urlsplit(old.issuer).port
    old.stop()
    setup["auth"] = AuthServer(port, setup["resource"],
                               os.path.join(os.path.dirname(old.keys_file), "keys2.json"),
                               ttl=300)
    fresh = setup["auth"].client_credentials(setup["resource"])
    assert jwt.get_unverified_header(fresh)["kid"] != jwt.get_unverified_header(tok)["kid"]
    fetches = setup["front"].fetches
    # An unknown kid makes mod_auth_openidc fetch the JWKS again, at once.
    r = post(setup, INIT, fresh)
    assert r.status_code == 200, r.text
    assert setup["front"].fetches > fetches
