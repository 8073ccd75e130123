#!/usr/bin/env node
// Streams chat completions with the official `openai` npm package, as an
// unmodified node application would, and prints what it received and when:
// the same JSON as openai_stream.py ({"sdk", "pid", "calls": [...]}, exit 0
// when every call succeeded, 2 otherwise).
//
//   NODE_EXTRA_CA_CERTS=ca.pem node openai_stream.mjs https://127.0.0.1:PORT [--model M]
//       [--calls N] [--two-threads] [--max-tokens N] [--no-stream]
//
// node reads NODE_EXTRA_CA_CERTS only at startup, so the CA can't be passed
// any other way without changing how the SDK connects. `--two-threads` runs
// two clients concurrently on node's one thread: two connections at once.

import OpenAI from "openai";
import { parseArgs } from "node:util";
import { VERSION as sdkVersion } from "openai/version";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: "string", default: "gpt-4o-mini" },
    calls: { type: "string", default: "1" },
    "max-tokens": { type: "string" },
    prompt: { type: "string", default: "Say hello to llmtap." },
    "no-stream": { type: "boolean", default: false },
    "two-threads": { type: "boolean", default: false },
    // Write the JSON report here instead of stdout (which a wrapper like
    // `llmtap -- node ...` may share with its own output).
    output: { type: "string" },
  },
});
if (positionals.length !== 1) {
  console.error("usage: openai_stream.mjs BASE_URL [--model M] [--calls N] [--two-threads] [--max-tokens N] [--no-stream]");
  process.exit(64);
}
const baseURL = `${positionals[0]}/v1`;
const maxTokens = opts["max-tokens"] === undefined ? undefined : Number(opts["max-tokens"]);

// Wall clock in ns as a BigInt: a Number can't hold it exactly, and
// Date.now() has only millisecond resolution.
const originNs = BigInt(Math.round(performance.timeOrigin * 1e3)) * 1000n;
const nowNs = () => originNs + BigInt(Math.round(performance.now() * 1e6));

async function oneCall(client, thread) {
  const r = {
    thread, id: null, model: null, text: "", chunks: 0, content_chunks: 0,
    finish_reason: null, usage: null, error: null,
    start_ns: nowNs(), first_token_ns: null, chunk_ns: [], end_ns: null, ttft_ns: null,
  };
  const content = (text) => {
    const now = nowNs();
    r.chunks += 1;
    if (!text) return;
    if (r.first_token_ns === null) r.first_token_ns = now;
    r.chunk_ns.push(now);
    r.content_chunks += 1;
    r.text += text;
  };
  const messages = [{ role: "user", content: opts.prompt }];
  try {
    if (opts["no-stream"]) {
      const resp = await client.chat.completions.create({ model: opts.model, messages, max_tokens: maxTokens });
      content(resp.choices[0].message.content);
      Object.assign(r, { id: resp.id, model: resp.model, finish_reason: resp.choices[0].finish_reason, usage: resp.usage ?? null });
    } else {
      const stream = await client.chat.completions.create({
        model: opts.model, messages, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true },
      });
      for await (const chunk of stream) {
        const choice = chunk.choices[0];
        content(choice?.delta?.content);
        Object.assign(r, { id: chunk.id, model: chunk.model });
        if (choice?.finish_reason) r.finish_reason = choice.finish_reason;
        if (chunk.usage) r.usage = chunk.usage;
      }
    }
  } catch (e) {
    r.error = { type: e.constructor.name, status: e.status ?? null, message: String(e.message) };
  }
  r.end_ns = nowNs();
  if (r.first_token_ns !== null) r.ttft_ns = r.first_token_ns - r.start_ns;
  return r;
}

async function worker(thread) {
  // No retries: a test asking for a 429 wants exactly one request.
  const client = new OpenAI({ baseURL, apiKey: "sk-llmtap-test", maxRetries: 0 });
  const results = [];
  for (let i = 0; i < Number(opts.calls); i++) results.push(await oneCall(client, thread));
  return results;
}

const threads = opts["two-threads"] ? [0, 1] : [0];
const calls = (await Promise.all(threads.map(worker))).flat();
// BigInts become bare JSON numbers, like Python's ints.
const json = JSON.stringify({ sdk: `openai-node ${sdkVersion}`, pid: process.pid, calls }, (_, v) =>
  typeof v === "bigint" ? `@bigint:${v}` : v,
).replace(/"@bigint:(-?\d+)"/g, "$1");
if (opts.output) {
  (await import("node:fs")).writeFileSync(opts.output, json + "\n");
} else {
  process.stdout.write(json + "\n");
}
process.exitCode = calls.every((c) => c.error === null) ? 0 : 2;
