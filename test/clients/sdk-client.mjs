// The official MCP TypeScript SDK client against mod_gemini_mcp: connect, list, call,
// read, prompt, answer a sampling request, terminate. Prints one JSON summary line;
// exits non-zero on any failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const url = new URL(process.argv[2]);
const client = new Client({ name: "sdk-client-test", version: "1.0.0" },
                          { capabilities: { sampling: {} } });
client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
  role: "assistant", model: "test-model",
  content: { type: "text", text: "sdk says: " + req.params.messages[0].content.text },
}));
const transport = new StreamableHTTPClientTransport(url);
await client.connect(transport);
const out = { sessionId: transport.sessionId, server: client.getServerVersion() };

const tools = await client.listTools();
out.tools = tools.tools.map((t) => t.name);
const simple = await client.callTool({ name: "test_simple_text" });
out.simple = simple.content[0].text;
const progress = [];
const withProgress = await client.callTool(
  { name: "test_tool_with_progress", arguments: {} }, undefined,
  { onprogress: (p) => progress.push(p.progress) });
out.progress = progress;
out.progressResult = withProgress.content[0].text;
const sampled = await client.callTool({ name: "test_sampling", arguments: { prompt: "hi" } });
out.sampling = sampled.content[0].text;
const res = await client.readResource({ uri: "test://static-text" });
out.resource = res.contents[0].text;
const prompt = await client.getPrompt({ name: "test_prompt_with_arguments",
                                        arguments: { arg1: "a", arg2: "b" } });
out.prompt = prompt.messages[0].content.text;
try {
  await client.callTool({ name: "does_not_exist" });
  out.unknownTool = "no error";
} catch (e) {
  out.unknownTool = String(e.code);
}
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
