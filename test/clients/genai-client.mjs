// The official @google/genai SDK against test/fake-gemini: every endpoint the module
// uses, so the fake is known to speak the real wire. argv: BASE_URL KEY.
// Prints one JSON summary line; exits non-zero on any failure.
import { GoogleGenAI } from "@google/genai";

const [baseUrl, apiKey] = process.argv.slice(2);
const ai = new GoogleGenAI({ apiKey, httpOptions: { baseUrl } });
const out = {};

const gen = await ai.models.generateContent({
  model: "gemini-2.5-flash",
  contents: [{ role: "user", parts: [{ text: "first" }] },
             { role: "model", parts: [{ text: "ok" }] },
             { role: "user", parts: [{ text: "second question" }] }],
  config: { systemInstruction: "be brief", temperature: 0.2, maxOutputTokens: 100 },
});
out.text = gen.text;
out.usage = gen.usageMetadata;
out.finish = gen.candidates[0].finishReason;

let streamed = "";
let chunks = 0;
for await (const c of await ai.models.generateContentStream({
  model: "gemini-2.5-flash", contents: "stream me" })) {
  streamed += c.text ?? "";
  chunks++;
}
out.streamed = streamed;
out.chunks = chunks;

out.tokens = (await ai.models.countTokens({ model: "gemini-2.5-flash",
                                            contents: "one two three" })).totalTokens;
const emb = await ai.models.embedContent({ model: "gemini-embedding-001",
  contents: ["a", "b"], config: { outputDimensionality: 3 } });
out.embeddings = emb.embeddings.map((e) => e.values.length);

const models = [];
for await (const m of await ai.models.list({ config: { pageSize: 2 } })) models.push(m.name);
out.models = models;
out.model = (await ai.models.get({ model: "gemini-2.5-pro" })).displayName;

const blob = new Blob([new Uint8Array(1000).fill(7)], { type: "application/pdf" });
const file = await ai.files.upload({ file: blob, config: { displayName: "doc" } });
out.file = { name: file.name, size: file.sizeBytes, mime: file.mimeType, state: file.state };
await new Promise((r) => setTimeout(r, 300));
out.fileState = (await ai.files.get({ name: file.name })).state;
const listed = [];
for await (const f of await ai.files.list()) listed.push(f.name);
out.listed = listed;
await ai.files.delete({ name: file.name });

try {
  await ai.models.generateContent({ model: "gemini-nope", contents: "x" });
  out.notFound = "no error";
} catch (e) {
  out.notFound = e.status;
}
console.log(JSON.stringify(out));
