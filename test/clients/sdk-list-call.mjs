// The official MCP TypeScript SDK client with an API key: connect, list the tools, call
// one (default gemini_usage, which needs no Gemini key), terminate. Used by .ci/deb-test
// against Debian's apache2 with the packaged module. Prints one JSON line; exits non-zero
// on any failure.
//   node sdk-list-call.mjs URL API_KEY [TOOL]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key, tool = "gemini_usage"] = process.argv.slice(2);
const client = new Client({ name: "deb-test", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
try {
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  if (!tools.includes(tool)) throw new Error(`${tool} is not listed: ${tools.join(", ")}`);
  const res = await client.callTool({ name: tool, arguments: {} });
  if (res.isError) throw new Error(`${tool}: ${JSON.stringify(res.content)}`);
  await transport.terminateSession();
  await client.close();
  console.log(JSON.stringify({ ok: true, server: client.getServerVersion()?.name,
                               protocol: transport.protocolVersion, tools: tools.length,
                               called: tool }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e) }));
  process.exit(1);
}
