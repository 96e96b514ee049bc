// The official openai npm client against a live crucible server: node openai-client.mjs BASE_URL API_KEY
// Exits 0 when every check passes; prints what failed otherwise.
import OpenAI from "openai";
import assert from "node:assert/strict";

const [base, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base + "/v1", apiKey: key, maxRetries: 0, timeout: 20000 });

const models = await client.models.list();
assert.equal(models.data[0].id, "tiny");

const c = await client.completions.create({ model: "tiny", prompt: "hello", max_tokens: 5, temperature: 0, logprobs: 2, ignore_eos: true });
assert.equal(c.object, "text_completion");
assert.equal(c.choices[0].finish_reason, "length");
assert.equal(c.usage.completion_tokens, 5);
assert.equal(c.choices[0].logprobs.tokens.length, 5);

const chat = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 4, n: 2, seed: 3, ignore_eos: true });
assert.equal(chat.choices.length, 2);
assert.equal(chat.choices[0].message.role, "assistant");
assert.equal(chat.usage.completion_tokens, 8);

// Streaming chat with usage: the client parses SSE itself and stops at [DONE].
const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 6,
  temperature: 0, stream: true, stream_options: { include_usage: true }, ignore_eos: true });
let text = "", finish = null, usage = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const ch of chunk.choices) {
    text += ch.delta?.content ?? "";
    if (ch.finish_reason) finish = ch.finish_reason;
  }
}
assert.equal(finish, "length");
assert.equal(usage.completion_tokens, 6);
const whole = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 6, temperature: 0, ignore_eos: true });
assert.equal(text, whole.choices[0].message.content);

// Streaming completions.
const cs = await client.completions.create({ model: "tiny", prompt: "abc", max_tokens: 4, stream: true, ignore_eos: true });
let n = 0;
for await (const chunk of cs) n += chunk.choices.length;
assert.ok(n >= 1);

// Errors surface as the client's typed errors with the server's message.
await assert.rejects(client.completions.create({ model: "tiny", prompt: "x", temperature: 9 }),
  e => e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message) && e.param === "temperature");
await assert.rejects(client.chat.completions.create({ model: "tiny", messages: [] }), e => e.status === 400);
const bad = new OpenAI({ baseURL: base + "/v1", apiKey: "wrong", maxRetries: 0 });
await assert.rejects(bad.models.list(), e => e instanceof OpenAI.AuthenticationError && e.status === 401);

console.log("openai client: all checks passed");
