// The official MCP TypeScript SDK client calls every gemini_* tool and reads both
// resource templates, against httpd backed by test/fake-gemini. argv: URL.
// Prints one JSON summary line; exits non-zero on any failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const client = new Client({ name: "sdk-gemini-test", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(process.argv[2]));
await client.connect(transport);
const call = async (name, args, extra) => {
  const r = await client.callTool({ name, arguments: args }, undefined, extra);
  if (r.isError) throw new Error(`${name}: ${r.content[0].text}`);
  return r;
};
const out = {};
out.tools = (await client.listTools()).tools.map((t) => t.name).filter((n) => n.startsWith("gemini_"));
out.models = (await call("gemini_list_models", {})).structuredContent.models.length;
out.tokens = (await call("gemini_count_tokens", { text: "a b c" })).structuredContent.total_tokens;
out.dims = (await call("gemini_embed", { texts: ["x"], output_dimensionality: 5 })).structuredContent.dimensions;
const progress = [];
const gen = await call("gemini_generate", { prompt: "hello sdk" }, {
  onprogress: (p) => progress.push(p.message) });
out.generate = gen.content[0].text;
out.progress = progress.length;
out.lastProgress = progress[progress.length - 1];
const chat = (await call("gemini_chat_start", { title: "sdk", system_instruction: "terse" }))
  .structuredContent.session_id;
await call("gemini_chat_send", { session_id: chat, message: "one" });
out.send = (await call("gemini_chat_send", { session_id: chat, message: "two" })).content[0].text;
out.history = (await call("gemini_chat_history", { session_id: chat })).structuredContent.messages.length;
out.listed = (await call("gemini_chat_list", {})).structuredContent.sessions.some((s) => s.session_id === chat);
out.export = (await call("gemini_chat_export", { session_id: chat, format: "markdown" })).content[0].text.split("\n")[0];
out.transcript = (await client.readResource({ uri: `gemini://chat/${chat}/transcript` })).contents[0].mimeType;
out.model = JSON.parse((await client.readResource({ uri: "gemini://models/gemini-2.5-flash" })).contents[0].text).name;
out.deleted = (await call("gemini_chat_delete", { session_id: chat })).structuredContent.deleted;
out.usage = (await call("gemini_usage", {})).structuredContent;
await client.close();
console.log(JSON.stringify(out));
