// A plain HTTP PUT of a file, streamed, for bench/upload.py's baseline.
//   node put.mjs <url> <file>
// Prints {"status": n, "t0": ms, "t1": ms}.
import fs from "node:fs";
import http from "node:http";

const [url, file] = process.argv.slice(2);
const size = fs.statSync(file).size;
const t0 = Date.now();
const req = http.request(url, { method: "PUT", headers: { "Content-Length": size } }, (res) => {
  res.resume();
  res.on("end", () => console.log(JSON.stringify({ status: res.statusCode, t0, t1: Date.now() })));
});
req.on("error", (e) => { console.log(JSON.stringify({ error: String(e) })); process.exitCode = 1; });
fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(req);
