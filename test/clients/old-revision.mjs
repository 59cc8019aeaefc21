// A client of protocol revision 2025-06-18: the official MCP TypeScript SDK 1.23.1 (npm
// alias sdk-2025-06-18, LATEST_PROTOCOL_VERSION 2025-06-18), against mod_gemini_mcp.
// argv: URL [API_KEY]. Makes streamed calls (a progress token makes the server answer
// with SSE) besides a plain call and tools/list, and records every error the client
// side reports: transport and client onerror, anything thrown, console.error output.
// An SDK of this revision JSON-parses every SSE event's data, so an empty-data event
// (the 2025-11-25 priming event) is an error here. Prints one JSON summary line; exits
// non-zero if any error was seen or a call failed.
import { Client } from "sdk-2025-06-18/client/index.js";
import { StreamableHTTPClientTransport } from "sdk-2025-06-18/client/streamableHttp.js";
import { LATEST_PROTOCOL_VERSION } from "sdk-2025-06-18/types.js";

const [urlArg, apiKey] = process.argv.slice(2);
const errors = [];
let during = "connect";
const record = (source, e) => {
  errors.push({ source, during,
                error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
};
const consoleError = console.error.bind(console);
console.error = (...args) => {
  record("console.error", args.map((a) => (a instanceof Error ? a.message : String(a))).join(" "));
  consoleError(...args);
};
process.on("unhandledRejection", (e) => record("unhandledRejection", e));
process.on("uncaughtException", (e) => record("uncaughtException", e));

const out = { sdkLatest: LATEST_PROTOCOL_VERSION };
const transport = new StreamableHTTPClientTransport(new URL(urlArg), {
  requestInit: apiKey ? { headers: { Authorization: `Bearer ${apiKey}` } } : undefined,
});
// Set before connect: Protocol.connect() chains the transport's own onerror to the client's.
transport.onerror = (e) => record("transport.onerror", e);
const client = new Client({ name: "old-revision-test", version: "1.0.0" });
client.onerror = (e) => record("client.onerror", e);

const step = async (name, fn) => {
  during = name;
  try {
    out[name] = await fn();
  } catch (e) {
    record(`${name} threw`, e);
    out[name] = null;
  }
};
const call = async (name, args, extra) => {
  const r = await client.callTool({ name, arguments: args }, undefined, extra);
  if (r.isError) throw new Error(`${name}: ${r.content?.[0]?.text}`);
  return r;
};
const streamed = async (name, args, pick) => {
  const progress = [];
  const r = await call(name, args, { onprogress: (p) => progress.push(pick(p)) });
  return { text: r.content[0].text, progress };
};

let connected = false;
try {
  await client.connect(transport);
  connected = true;
} catch (e) {
  record("connect threw", e);
}
if (connected) {
  out.version = transport.protocolVersion;
  out.server = client.getServerVersion();
  await step("tools", async () => (await client.listTools()).tools.map((t) => t.name));
  await step("simple", async () => (await call("test_simple_text", {})).content[0].text);
  await step("progress", () => streamed("test_tool_with_progress", {}, (p) => p.progress));
  await step("progressAgain", () => streamed("test_tool_with_progress", {}, (p) => p.progress));
  if (out.tools?.includes("gemini_generate"))
    await step("generate", () => streamed("gemini_generate", { prompt: "old revision" },
                                          (p) => p.message));
  await step("listedAfter", async () => (await client.listTools()).tools.length);
  during = "close";
  try {
    await transport.terminateSession();
    await client.close();
  } catch (e) {
    record("close threw", e);
  }
}
out.errors = errors;
const failed = !connected || errors.length > 0 ||
  ["tools", "simple", "progress", "progressAgain", "listedAfter"].some((k) => out[k] == null);
out.ok = !failed;
console.log(JSON.stringify(out));
process.exitCode = failed ? 1 : 0;
