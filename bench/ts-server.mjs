// The peer for the benchmark: a minimal MCP server on the official TypeScript SDK,
// stateful (sessions in memory) with JSON responses, serving the same two fixtures the
// bench calls (tools/list and test_simple_text). Usage: node ts-server.mjs PORT
import express from "express";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";

const port = Number(process.argv[2]);
const transports = {};

function newServer() {
  const server = new McpServer({ name: "ts-bench-server", version: "1.0.0" });
  server.registerTool("test_simple_text", { description: "Tests simple text content response" },
    async () => ({ content: [{ type: "text", text: "This is a simple text response for testing." }] }));
  server.registerTool("test_error_handling", { description: "Tests error response handling" },
    async () => ({ isError: true, content: [{ type: "text", text: "error" }] }));
  return server;
}

const app = express();
app.use(express.json());
app.post("/mcp", async (req, res) => {
  const sid = req.headers["mcp-session-id"];
  let transport = sid ? transports[sid] : undefined;
  if (!transport) {
    if (sid || !isInitializeRequest(req.body)) {
      res.status(400).json({ jsonrpc: "2.0", error: { code: -32000, message: "Bad session" }, id: null });
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: true,
      onsessioninitialized: (id) => { transports[id] = transport; },
    });
    await newServer().connect(transport);
  }
  await transport.handleRequest(req, res, req.body);
});
app.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
