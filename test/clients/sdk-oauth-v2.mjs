// The official MCP TypeScript SDK v2 client (@modelcontextprotocol/client) and its OAuth
// client against an OAuth-protected MCP server (with test/oauth-as.mjs as its
// authorization server); test/clients/sdk-oauth.mjs does the same with the v1 SDK.
//   argv: MCP_URL [--tool NAME] [--args JSON] [--sleep-then-call SECONDS]
// The SDK does the discovery (401 -> protected resource metadata -> AS metadata, whose
// issuer it checks), dynamic client registration, PKCE, the token exchange (checking the
// callback's iss, RFC 9207) and stamps the saved client and tokens with the issuer; the
// consent step that a browser would do is driven here by following the AS's redirects
// (with its cookies) up to the redirect URL, which is never actually served. Then
// tools/list and one tools/call; with --sleep-then-call, sleep past the access token's
// expiry and call again, which the SDK must recover from with the refresh token.
// Prints one JSON summary line (as sdk-oauth.mjs, plus how many authorization requests
// were made, the issuer the tokens were stamped with and the MCP session id); exits
// non-zero on any failure.
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { randomBytes } from "node:crypto";
import { Client, StreamableHTTPClientTransport, UnauthorizedError } from "@modelcontextprotocol/client";

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tool: { type: "string", default: "gemini_generate" },
    args: { type: "string", default: '{"prompt":"hello"}' },
    "sleep-then-call": { type: "string" },
  },
});
const url = new URL(positionals[0]);
const REDIRECT_URL = "http://127.0.0.1:9/callback";

// Follows the authorization server's redirects from authorizationUrl as a browser would,
// keeping its cookies, until one points at REDIRECT_URL; returns that URL.
async function consent(authorizationUrl) {
  const jar = new Map(); // cookie name -> value; one host, so paths are not told apart
  let at = new URL(authorizationUrl);
  for (let hop = 0; hop < 20; hop++) {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
    const res = await fetch(at, { redirect: "manual", headers: cookie ? { cookie } : {} });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const eq = pair.indexOf("=");
      jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    const location = res.headers.get("location");
    await res.body?.cancel();
    if (!location) throw new Error(`consent: ${at} answered ${res.status} with no redirect`);
    at = new URL(location, at);
    if (at.href.startsWith(REDIRECT_URL)) return at;
  }
  throw new Error("consent: too many redirects");
}

// An in-memory OAuthClientProvider (the v2 interface exported by @modelcontextprotocol/client).
// One AS, so the issuer context (ctx) the SDK passes to the credential methods is not
// needed to tell stores apart: tokens() called without ctx (the per-request read) and with
// it return the same set. The discovery state is kept, as v2 asks, beside the code
// verifier, so that the callback leg is checked against the AS that the redirect went to.
const seen = { tokensSaved: 0, registered: false, accessTokens: [], authorizations: 0, callback: undefined };
const store = {};
const provider = {
  get redirectUrl() { return REDIRECT_URL; },
  get clientMetadata() {
    return {
      client_name: "sdk-oauth-v2-test",
      redirect_uris: [REDIRECT_URL],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  state() { return (store.state = randomBytes(16).toString("base64url")); },
  clientInformation() { return store.client; },
  saveClientInformation(info) { seen.registered ||= !!info.client_id && !store.client; store.client = info; },
  tokens() { return store.tokens; },
  saveTokens(tokens) {
    store.tokens = tokens;
    seen.tokensSaved++;
    if (!seen.accessTokens.includes(tokens.access_token)) seen.accessTokens.push(tokens.access_token);
  },
  saveCodeVerifier(v) { store.verifier = v; },
  codeVerifier() { return store.verifier; },
  saveDiscoveryState(state) { store.discovery = state; },
  discoveryState() { return store.discovery; },
  invalidateCredentials(scope) {
    if (scope === "all" || scope === "client") delete store.client;
    if (scope === "all" || scope === "tokens") delete store.tokens;
    if (scope === "all" || scope === "verifier") delete store.verifier;
    if (scope === "all" || scope === "discovery") delete store.discovery;
  },
  // The SDK does not check state; code, iss (and error) are left to finishAuth().
  async redirectToAuthorization(authorizationUrl) {
    seen.authorizations++;
    const back = await consent(authorizationUrl);
    if (back.searchParams.get("state") !== store.state) throw new Error("authorization: state mismatch");
    seen.callback = back.searchParams;
  },
};

const textOf = (result) => {
  if (result.isError) throw new Error(`tool error: ${JSON.stringify(result.content)}`);
  return result.content.find((c) => c.type === "text")?.text ?? null;
};

try {
  // First connect: 401, discovery, registration, authorization (redirectToAuthorization
  // above) and then UnauthorizedError, since a real client would now wait for the browser.
  const first = new StreamableHTTPClientTransport(url, { authProvider: provider });
  try {
    await new Client({ name: "sdk-oauth-v2-test", version: "1.0.0" }).connect(first);
    throw new Error("connected without authorization");
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !seen.callback) throw e;
  }
  // v2: the whole callback query (code, and iss for the RFC 9207 check), not just the code.
  await first.finishAuth(seen.callback);

  const client = new Client({ name: "sdk-oauth-v2-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const call = () => client.callTool({ name: opt.tool, arguments: JSON.parse(opt.args) });
  const out = { tools, call: textOf(await call()), second: null };
  if (opt["sleep-then-call"] !== undefined) {
    await sleep(Number(opt["sleep-then-call"]) * 1000);
    out.second = textOf(await call());
  }
  const sessionId = transport.sessionId ?? null;
  await client.close();
  Object.assign(out, { tokens_saved: seen.tokensSaved, registered: seen.registered,
                       access_tokens: seen.accessTokens, authorizations: seen.authorizations,
                       issuer: store.tokens?.issuer ?? null,
                       session_id: sessionId });
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  console.error("sdk-oauth-v2:", e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
}
