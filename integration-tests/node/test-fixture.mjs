#!/usr/bin/env node
// Serves the bytes that the Rust encoder wrote (fixtures/*.txt, from
// crates/stream-core/tests/ai_sdk_fixtures.rs) over HTTP, reads each with read-ui-stream.mjs,
// that is with the real `ai` package, and checks what the package rebuilt against
// fixtures/*.expected.json. Then checks that the reader does fail on streams the package rejects.
//
// Usage: npm test (or node test-fixture.mjs). Exit code 0 when every check passes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, 'fixtures');
const run = promisify(execFile);

const UI_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
  'x-vercel-ai-ui-message-stream': 'v1',
};

// Streams that the package must reject.
const BAD = {
  // A delta whose text part was never opened.
  'delta-without-start':
    'data: {"type":"start"}\n\ndata: {"type":"text-delta","id":"t","delta":"a"}\n\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n',
  // A part without a required field.
  'missing-field': 'data: {"type":"start"}\n\ndata: {"type":"error"}\n\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n',
  // A data line that is not JSON.
  'not-json': 'data: {"type":"start"}\n\ndata: {"type":\n\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n',
  // Our SSE pipeline's own ping frame: why it must not reach an AI SDK client.
  'pipeline-ping':
    'data: {"type":"start"}\n\ndata: {"type":"ping","timestamp":"2026-01-01T00:00:00Z"}\n\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n',
};

/** Writes `bytes` in small pieces cut anywhere (inside lines and UTF-8 sequences). */
async function dribble(res, bytes) {
  for (let at = 0; at < bytes.length; ) {
    const size = 1 + ((at * 7) % 23);
    res.write(bytes.subarray(at, at + size));
    at += size;
    await new Promise(resolve => setTimeout(resolve, 1));
  }
  res.end();
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const [, kind, name] = url.pathname.split('/');
  if (kind === 'fixture') {
    res.writeHead(200, UI_HEADERS);
    return dribble(res, readFileSync(join(fixtures, `${name}.txt`)));
  }
  if (kind === 'post') {
    // The options argument: method, headers and a JSON body reach the server.
    let body = '';
    for await (const chunk of req) body += chunk;
    const ok =
      req.method === 'POST' &&
      req.headers['content-type'] === 'application/json' &&
      req.headers['x-user-id'] === 'alice' &&
      JSON.parse(body).id === 'chat-1';
    if (!ok) {
      res.writeHead(400).end();
      return;
    }
    res.writeHead(200, UI_HEADERS);
    return dribble(res, readFileSync(join(fixtures, `${name}.txt`)));
  }
  if (kind === 'no-header') {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    return dribble(res, readFileSync(join(fixtures, 'sample.txt')));
  }
  if (kind === 'bad') {
    res.writeHead(200, UI_HEADERS);
    return dribble(res, Buffer.from(BAD[name]));
  }
  if (kind === 'none') {
    res.writeHead(204).end();
    return;
  }
  res.writeHead(404).end();
});
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;

/** Runs the reader; returns its exit code and its JSON line. */
async function read(path, options) {
  const args = [join(here, 'read-ui-stream.mjs'), `${base}${path}`];
  if (options) args.push(JSON.stringify(options));
  try {
    const { stdout } = await run(process.execPath, args);
    return { code: 0, out: JSON.parse(stdout) };
  } catch (e) {
    return { code: e.code, out: e.stdout ? JSON.parse(e.stdout) : null, stderr: e.stderr };
  }
}

let failures = 0;
async function check(name, body) {
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL ${name}\n${e.stack ?? e}`);
  }
}

const names = readdirSync(fixtures)
  .filter(f => f.endsWith('.txt'))
  .map(f => f.slice(0, -'.txt'.length))
  .sort();
assert.ok(names.length > 0, 'no fixtures: run the Rust test first');

for (const name of names) {
  await check(`fixture ${name}`, async () => {
    const expected = JSON.parse(readFileSync(join(fixtures, `${name}.expected.json`), 'utf8'));
    const { code, out, stderr } = await read(`/fixture/${name}`);
    assert.equal(code, 0, stderr);
    assert.equal(out.status, 200);
    assert.equal(out.header, 'v1');
    assert.equal(out.messageId, expected.messageId);
    assert.equal(out.text, expected.text);
    assert.deepEqual(out.partTypes, expected.partTypes);
    assert.equal(out.finished, expected.finished);
    assert.deepEqual(out.errors, expected.errors);
    for (const part of out.parts.filter(p => p.type === 'text')) {
      assert.equal(part.state, 'done', 'text-end closed the text part');
    }
  });
}

await check('method, headers and body are sent', async () => {
  const { code, out, stderr } = await read('/post/sample', {
    method: 'POST',
    headers: { 'x-user-id': 'alice' },
    body: { id: 'chat-1', messages: [] },
  });
  assert.equal(code, 0, stderr);
  assert.equal(out.status, 200);
  assert.ok(out.text.length > 0);
});

await check('204: no active stream, exit 0', async () => {
  const { code, out } = await read('/none/x');
  assert.equal(code, 0);
  assert.equal(out.status, 204);
  assert.equal(out.text, '');
  assert.equal(out.finished, false);
});

await check('404: exit 1', async () => {
  const { code, out } = await read('/nothing/here');
  assert.equal(code, 1);
  assert.equal(out.status, 404);
});

await check('a stream without the protocol header is refused', async () => {
  const { code, out } = await read('/no-header/x');
  assert.equal(code, 1);
  assert.match(out.rejected, /x-vercel-ai-ui-message-stream/);
});

for (const name of Object.keys(BAD)) {
  await check(`the package rejects ${name}`, async () => {
    const { code, out } = await read(`/bad/${name}`);
    assert.equal(code, 1, JSON.stringify(out));
    assert.ok(out.rejected, JSON.stringify(out));
  });
}

server.close();
if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
