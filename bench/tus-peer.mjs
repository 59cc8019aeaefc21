// The peer for bench/upload.py: @tus/server with @tus/file-store on Node's http server.
//   node tus-peer.mjs <port> <directory>
// Prints "ready" once listening on 127.0.0.1. The packages come from test/node_modules.
import http from "node:http";
import { createRequire } from "node:module";

const require = createRequire(new URL("../test/package.json", import.meta.url));
const { Server } = await import(require.resolve("@tus/server"));
const { FileStore } = await import(require.resolve("@tus/file-store"));

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
http.createServer((req, res) => tus.handle(req, res))
  .listen(Number(port), "127.0.0.1", () => console.log("ready"));
