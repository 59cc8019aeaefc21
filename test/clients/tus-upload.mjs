// Upload a file with the official tus client, tus-js-client (Node).
//   node tus-upload.mjs <endpoint> <file> <api key or ""> '<options JSON>'
// Options are tus-js-client's (chunkSize, parallelUploads, uploadDataDuringCreation,
// uploadLengthDeferred, overridePatchMethod, uploadUrl to resume, metadata).
// Prints one JSON line: {"ok": true, "url": ..., "progress": n, "t0": ms, "t1": ms} (wall
// clock at start and at success) or {"ok": false, "error": ...}.
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, file, key, optsJson] = process.argv.slice(2);
const opts = JSON.parse(optsJson || "{}");
let progress = 0;
const t0 = Date.now();
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  headers: key ? { Authorization: `Bearer ${key}` } : {},
  metadata: { filename: "upload.bin", filetype: "application/octet-stream" },
  retryDelays: [0, 200, 500],
  ...opts,
  onProgress: () => { progress++; },
  onSuccess: () => {
    console.log(JSON.stringify({ ok: true, url: upload.url, progress, t0, t1: Date.now() }));
  },
  onError: (err) => {
    console.log(JSON.stringify({ ok: false, error: String(err), url: upload.url }));
    process.exitCode = 1;
  },
});
upload.start();
