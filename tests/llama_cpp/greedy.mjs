// Greedy decoding of a GGUF file by llama.cpp, through node-llama-cpp (pinned
// 3.21.1, its prebuilt CPU build): prints {"tokens": [...], "confidence":
// [...]} — the n tokens
// llama.cpp picks at temperature 0 after a prompt of token ids, and
// "confidence": the probability llama.cpp gives each of them.
//   TAPELM_NODE_MODULES=DIR node greedy.mjs FILE.gguf '[ids]' N
// DIR is the node_modules folder holding node-llama-cpp (an ES module, found
// by path: ES imports do not search NODE_PATH).
import path from "node:path";

const [modelPath, promptJson, count] = process.argv.slice(2);
const modules = process.env.TAPELM_NODE_MODULES;
const { getLlama, LlamaLogLevel } = await import(path.join(modules, "node-llama-cpp", "dist", "index.js"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const prompt = JSON.parse(promptJson);
const n = Number(count);
// One thread: these are tiny models, and ggml's threads spin against each
// other on a small machine (0.27 s a token with the default, 0.04 s with one).
// Attention as written, in f32: llama.cpp's CPU flash attention and f16 KV
// cache (its defaults) move the probabilities by ~4e-4.
const context = await model.createContext({
  contextSize: prompt.length + n,
  sequences: 1,
  threads: 1,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
  flashAttention: false,
});
const tokens = [], confidence = [];
const sequence = context.getSequence();
for await (const out of sequence.evaluateWithMetadata(prompt, { confidence: true }, { temperature: 0, yieldEogToken: true })) {
  tokens.push(out.token);
  confidence.push(out.confidence);
  if (tokens.length >= n) break;
}
console.log(JSON.stringify({ tokens, confidence }));
await context.dispose();
await model.dispose();
await llama.dispose();
