// The official TypeScript SDK v2 client (@modelcontextprotocol/client), which speaks
// protocol revision 2026-07-28, against mod_gemini_mcp. argv: URL MODE, where MODE is
// "auto" (probe with server/discover, fall back to initialize) or "pin" (2026-07-28
// only). Prints one JSON summary line; exits non-zero on any failure.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const url = new URL(process.argv[2]);
const mode = process.argv[3] === "pin" ? { pin: "2026-07-28" } : "auto";
const client = new Client({ name: "sdk2-client-test", version: "1.0.0" },
  { capabilities: { elicitation: {}, sampling: {} }, versionNegotiation: { mode } });
const asked = [];
client.setRequestHandler("elicitation/create", async (req) => {
  asked.push(req.params.message);
  return { action: "accept", content: { name: "Ada" } };
});
client.setRequestHandler("sampling/createMessage", async () => ({
  role: "assistant", model: "m", content: { type: "text", text: "sampled" } }));

const transport = new StreamableHTTPClientTransport(url);
await client.connect(transport);
const out = { era: client.getProtocolEra(), version: client.getNegotiatedProtocolVersion() };
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.simple = (await client.callTool({ name: "test_simple_text", arguments: {} })).content[0].text;
// Multi-round trip: the server answers input_required, the client fulfils it through
// the handler above and retries with inputResponses (+ requestState).
out.mrtr = (await client.callTool({ name: "test_input_required_result_elicitation",
                                    arguments: {} })).content[0].text;
out.sampling = (await client.callTool({ name: "test_sampling",
                                        arguments: { prompt: "hi" } })).content[0].text;
out.asked = asked;
out.resource = (await client.readResource({ uri: "test://static-text" })).contents[0].text;
out.prompt = (await client.getPrompt({ name: "test_prompt_with_arguments",
                                       arguments: { arg1: "a", arg2: "b" } })).messages[0].content.text;
await client.close();
console.log(JSON.stringify(out));
