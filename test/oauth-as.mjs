// A real OAuth 2.1 authorization server for the test suite, built on oidc-provider (a
// certified OpenID provider), issuing RFC 9068 JWT access tokens for one resource server
// (or, with --format opaque, opaque ones that only its introspection endpoint explains).
//
//   node test/oauth-as.mjs --port P --resource URL [--keys FILE] [--access-ttl SECONDS]
//        [--account alice] [--tenant-claim NAME --tenant VALUE] [--format jwt|opaque]
//
// Issuer http://127.0.0.1:P (loopback, plain http). Metadata at both
// /.well-known/oauth-authorization-server and /.well-known/openid-configuration; open
// dynamic client registration; PKCE (S256) required for public clients; resource
// indicators: only --resource is a valid target, and it is the default, so every access
// token is a JWT for it (aud = --resource, RS256, signed by the first key of --keys; a
// missing --keys file is created with one fresh RSA key). Refresh tokens for every
// authorization code grant. A confidential client test-client / test-secret
// (client_secret_basic or client_secret_post) may use client_credentials. Login and
// consent complete by themselves: GET of an interaction URL signs in --account and
// grants what was asked. Token introspection (RFC 7662, at /token/introspection) and
// revocation (RFC 7009, at /token/revocation) answer confidential clients, such as
// test-client, which the resource server authenticates as.
// Prints "ready <issuer>" once listening; exits on SIGTERM.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import { parseArgs } from "node:util";
import Provider, { errors } from "oidc-provider";

// oidc-provider prints its notices with console.info, i.e. on stdout, which is kept for
// the one "ready" line.
console.info = console.error;

const { values: opt } = parseArgs({
  options: {
    port: { type: "string" },
    resource: { type: "string" },
    keys: { type: "string" },
    "access-ttl": { type: "string", default: "300" },
    account: { type: "string", default: "alice" },
    "tenant-claim": { type: "string" },
    tenant: { type: "string" },
    format: { type: "string", default: "jwt" },
  },
});
if (!opt.port || !opt.resource || !["jwt", "opaque"].includes(opt.format)) {
  console.error("usage: oauth-as.mjs --port P --resource URL [--keys FILE] [--access-ttl S] "
                + "[--account ID] [--tenant-claim NAME --tenant VALUE] [--format jwt|opaque]");
  process.exit(2);
}
const issuer = `http://127.0.0.1:${opt.port}`;
const accessTtl = Number(opt["access-ttl"]);
const RS_SCOPES = "gemini gemini:generate gemini:chat gemini:files";

// Signing keys: private JWKs; a missing file gets one new RSA-2048 key.
function loadKeys(file) {
  if (file && fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, "utf8")).keys;
  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: "jwk" }),
                kid: crypto.randomBytes(12).toString("base64url"), alg: "RS256", use: "sig" };
  if (file) fs.writeFileSync(file, JSON.stringify({ keys: [jwk] }, null, 2) + "\n", { mode: 0o600 });
  return [jwk];
}
const keys = loadKeys(opt.keys);

const provider = new Provider(issuer, {
  jwks: { keys },
  responseTypes: ["code"], // OAuth 2.1: authorization code only, no implicit
  // Known scopes: listed in scopes_supported. The resource server's scopes must be here
  // too: the MCP SDK registers with scope="gemini" (from WWW-Authenticate), and
  // registration refuses a scope value that is not listed.
  scopes: ["openid", "offline_access", ...RS_SCOPES.split(" ")],
  // Every account exists; its only claim is sub.
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  clients: [{
    client_id: "test-client",
    client_secret: "test-secret",
    token_endpoint_auth_method: "client_secret_basic",
    grant_types: ["client_credentials", "authorization_code", "refresh_token"],
    response_types: ["code"],
    redirect_uris: ["http://127.0.0.1/cb"],
  }],
  // A registration that names no grant_types may still refresh.
  clientDefaults: { grant_types: ["authorization_code", "refresh_token"] },
  cookies: { keys: [crypto.randomBytes(32).toString("base64url")] },
  features: {
    devInteractions: { enabled: false }, // our own interaction handler below
    registration: { enabled: true }, // open: no initial access token
    clientCredentials: { enabled: true },
    // Any authenticated (confidential) client may ask about any token; a client may
    // revoke only its own.
    introspection: {
      enabled: true,
      allowedPolicy: (ctx, client) => client.clientAuthMethod !== "none",
    },
    revocation: {
      enabled: true,
      allowedPolicy: (ctx, client, token) => token.clientId === client.clientId,
    },
    resourceIndicators: {
      enabled: true,
      // No resource parameter means --resource, at the authorization and token endpoints.
      defaultResource: () => opt.resource,
      // A token request without resource gets the resource of the grant, even with openid.
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== opt.resource) throw new errors.InvalidTarget();
        return {
          scope: RS_SCOPES,
          audience: opt.resource,
          accessTokenTTL: accessTtl,
          accessTokenFormat: opt.format,
          ...(opt.format === "jwt" ? { jwt: { sign: { alg: "RS256", kid: keys[0].kid } } } : {}),
        };
      },
    },
  },
  // Refresh tokens whether or not offline_access was asked for, to every client allowed
  // the grant; they do not die with the login session either.
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed("refresh_token"),
  expiresWithSession: () => false,
  extraTokenClaims: () => (opt["tenant-claim"] ? { [opt["tenant-claim"]]: opt.tenant } : undefined),
  ttl: {
    AccessToken: accessTtl, ClientCredentials: accessTtl,
    IdToken: 3600, Interaction: 600, Session: 3600, Grant: 86400, RefreshToken: 86400,
  },
});
// What the AS refused, and why, for the test's logs.
provider.on("server_error", (ctx, err) => console.error("oauth-as server_error:", err));
for (const event of ["authorization.error", "grant.error", "registration_create.error"]) {
  provider.on(event, (ctx, err) => console.error(`oauth-as ${event}: ${err.message}: ${err.error_description}`));
}

// GET /interaction/<uid>: answer whichever prompt it is, as if the user clicked through.
// login signs in --account; consent grants the missing OIDC scopes and resource scopes.
// Either way the answer is a 303 back to the authorization endpoint, which then redirects
// to the next interaction or to redirect_uri?code=...
async function interaction(req, res) {
  const { prompt, params, session, grantId } = await provider.interactionDetails(req, res);
  let result;
  if (prompt.name === "login") {
    result = { login: { accountId: opt.account } };
  } else {
    const grant = grantId ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(" "));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(" "));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  await provider.interactionFinished(req, res, result);
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url.startsWith("/interaction/")) {
    interaction(req, res).catch((err) => {
      console.error("oauth-as interaction:", err);
      res.statusCode = 400;
      res.end(`interaction failed: ${err.message}\n`);
    });
  } else {
    callback(req, res);
  }
});
server.listen(Number(opt.port), "127.0.0.1", () => console.log(`ready ${issuer}`));
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
