// The official MCP TypeScript SDK's OAuth client against an OAuth-protected MCP server
// (with test/oauth-as.mjs as its authorization server).
//   argv: MCP_URL [--tool NAME] [--args JSON] [--sleep-then-call SECONDS]
// The SDK does the discovery (401 -> protected resource metadata -> AS metadata),
// dynamic client registration, PKCE and the token exchange; the consent step that a
// browser would do is driven here by following the AS's redirects (with its cookies)
// up to the redirect URL, which is never actually served. Then tools/list and one
// tools/call; with --sleep-then-call, sleep past the access token's expiry and call
// again, which the SDK must recover from with the refresh token.
// Prints one JSON summary line; exits non-zero on any failure.
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { randomBytes } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

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

// An in-memory OAuthClientProvider (the interface in @modelcontextprotocol/sdk/client/auth.js).
const seen = { tokensSaved: 0, registered: false, accessTokens: [], code: undefined };
const store = {};
const provider = {
  get redirectUrl() { return REDIRECT_URL; },
  get clientMetadata() {
    return {
      client_name: "sdk-oauth-test",
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
  async redirectToAuthorization(authorizationUrl) {
    const back = await consent(authorizationUrl);
    const p = back.searchParams;
    if (p.get("error")) throw new Error(`authorization failed: ${p.get("error")}: ${p.get("error_description")}`);
    if (p.has("state") && p.get("state") !== store.state) throw new Error("authorization: state mismatch");
    if (!p.get("code")) throw new Error(`authorization: no code in ${back}`);
    seen.code = p.get("code");
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
    await new Client({ name: "sdk-oauth-test", version: "1.0.0" }).connect(first);
    throw new Error("connected without authorization");
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !seen.code) throw e;
  }
  await first.finishAuth(seen.code);

  const client = new Client({ name: "sdk-oauth-test", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(url, { authProvider: provider }));
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const call = () => client.callTool({ name: opt.tool, arguments: JSON.parse(opt.args) });
  const out = { tools, call: textOf(await call()), second: null };
  if (opt["sleep-then-call"] !== undefined) {
    await sleep(Number(opt["sleep-then-call"]) * 1000);
    out.second = textOf(await call());
  }
  await client.close();
  Object.assign(out, { tokens_saved: seen.tokensSaved, registered: seen.registered,
                       access_tokens: seen.accessTokens });
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  console.error("sdk-oauth:", e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
}
