// The official OpenAI client (npm `openai`, pinned in package-lock.json)
// against a running `vllmc serve`, started by tests/unit/test_server.c
// (openai_node_client) with a tiny random model, an API key and a chat
// template. VLLMC_BASE_URL (http://127.0.0.1:PORT/v1), VLLMC_API_KEY and
// VLLMC_MODEL say where and what.
//
// The model's weights are random, so these tests check what a client relies
// on (shapes, streaming order, usage, logprobs, n, stop, seed, error classes,
// auth) and consistency (streamed == non-streamed greedy text), not text.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';

const baseURL = process.env.VLLMC_BASE_URL;
const apiKey = process.env.VLLMC_API_KEY;
const model = process.env.VLLMC_MODEL;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say something about cats.' },
];

test('models list', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.ok(ids.includes(model), `models: ${ids}`);
  const m = list.data.find((x) => x.id === model);
  assert.equal(m.object, 'model');
  assert.equal(m.owned_by, 'vllm');
  assert.ok(m.max_model_len > 0);
});

test('completion, non-streamed and streamed agree', async () => {
  const params = { model, prompt: 'the cat sat on', max_tokens: 8, temperature: 0, ignore_eos: true };
  const r = await client.completions.create(params);
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 8);
  const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, r.choices[0].text);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 8);
});

test('chat, non-streamed and streamed agree', async () => {
  const params = { model, messages, max_completion_tokens: 6, temperature: 0, ignore_eos: true };
  const r = await client.chat.completions.create(params);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 6);
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let first = true;
  let content = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (first) assert.equal(c.delta.role, 'assistant'); // the role delta comes first
      first = false;
      assert.equal(finish, null, 'nothing after finish_reason');
      content += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(content, r.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 6);
  assert.equal(usage.prompt_tokens, r.usage.prompt_tokens);
});

test('logprobs', async () => {
  const c = await client.completions.create({ model, prompt: 'hello', max_tokens: 4, logprobs: 2, ignore_eos: true });
  const lp = c.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.token_logprobs.length, 4);
  for (const x of lp.token_logprobs) assert.ok(x <= 0);
  for (const t of lp.top_logprobs) assert.ok(Object.keys(t).length >= 1 && Object.keys(t).length <= 3);
  const r = await client.chat.completions.create({ model, messages, max_tokens: 3, logprobs: true, top_logprobs: 2, ignore_eos: true });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, 3);
  for (const e of content) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.ok(Array.isArray(e.bytes));
    assert.equal(e.top_logprobs.length, 2);
    assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob);
  }
});

test('n > 1 and seed', async () => {
  const r = await client.completions.create({ model, prompt: 'abc', max_tokens: 5, n: 3, temperature: 1.0, seed: 42, ignore_eos: true });
  assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1, 2]);
  assert.equal(r.usage.completion_tokens, 15);
  const again = await client.completions.create({ model, prompt: 'abc', max_tokens: 5, n: 3, temperature: 1.0, seed: 42, ignore_eos: true });
  assert.deepEqual(again.choices.map((c) => c.text), r.choices.map((c) => c.text));
  const chat = await client.chat.completions.create({ model, messages, max_tokens: 4, n: 2, temperature: 1.0, seed: 7 });
  assert.equal(chat.choices.length, 2);
});

test('stop string', async () => {
  const base = { model, prompt: 'once upon a time', max_tokens: 24, temperature: 0, ignore_eos: true };
  const full = (await client.completions.create(base)).choices[0].text;
  // a stop string taken from the greedy text itself: generation stops before it
  let at = -1;
  let stop = '';
  for (let i = 2; i + 2 <= full.length && at < 0; i++) {
    const s = full.slice(i, i + 2);
    if (!s.includes('\uFFFD') && s.trim().length === 2) { stop = s; at = full.indexOf(s); }
  }
  if (at < 0) return; // nothing usable in this random text
  const r = await client.completions.create({ ...base, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, full.slice(0, at));
  assert.equal(r.choices[0].stop_reason, stop);
});

test('errors surface as the client error classes', async () => {
  await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 }), OpenAI.NotFoundError);
  await assert.rejects(client.completions.create({ model, prompt: 'x', max_tokens: 1, top_p: 2 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.status, 400);
    assert.match(e.message, /top_p/);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model, messages: [], max_tokens: 1, n: 0 }), OpenAI.BadRequestError);
  await assert.rejects(client.get('/no/such/endpoint'), OpenAI.NotFoundError);
  const wrong = new OpenAI({ baseURL, apiKey: 'wrong-key', maxRetries: 0 });
  await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
});
