#!/usr/bin/env node
// Reads an AI SDK UI message stream with the real `ai` package, as useChat's DefaultChatTransport
// does, and prints what the package rebuilt, as one JSON line:
//
//   {"status":200,"header":"v1","messageId":"…","text":"…","parts":[…],"partTypes":[…],
//    "finished":true,"errors":[…]}
//
// Usage: node read-ui-stream.mjs <url> [<options JSON>]
//   options: {"method":"POST","headers":{…},"body":<string, or any JSON value sent as JSON>}
//
// - `text` joins the text parts of the assistant message; `parts` is the message's parts.
// - `finished` says whether a `finish` part came.
// - `errors` lists the `errorText` of the stream's `error` parts (useChat would stop at the first
//   one; this reader goes on, to show the whole stream).
// - A response that is not 2xx is printed with empty text (204 is how a resume endpoint says
//   that no stream is active); the exit code is 0 for 204 and 1 for any other non-2xx status.
// - Exit code 1 when the package rejects the stream: a part that fails its schema, a text-delta
//   without its text-start, a missing `x-vercel-ai-ui-message-stream: v1` header, a network error.
import {
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} from 'ai';

function usage(message) {
  process.stderr.write(`${message}\nusage: node read-ui-stream.mjs <url> [<options JSON>]\n`);
  process.exit(2);
}

function fail(result, error) {
  process.stdout.write(`${JSON.stringify({ ...result, rejected: String(error?.message ?? error) })}\n`);
  process.stderr.write(`the ai package rejected the stream: ${error?.stack ?? error}\n`);
  process.exit(1);
}

const [url, optionsJson] = process.argv.slice(2);
if (!url) usage('missing url');
let options = {};
if (optionsJson) {
  try {
    options = JSON.parse(optionsJson);
  } catch (e) {
    usage(`options are not JSON: ${e.message}`);
  }
}

const headers = { ...(options.headers ?? {}) };
let body = options.body;
if (body !== undefined && typeof body !== 'string') {
  body = JSON.stringify(body);
  if (!Object.keys(headers).some(h => h.toLowerCase() === 'content-type')) {
    headers['content-type'] = 'application/json';
  }
}

const result = {
  status: null,
  header: null,
  messageId: null,
  text: '',
  parts: [],
  partTypes: [],
  finished: false,
  errors: [],
};

let response;
try {
  response = await fetch(url, { method: options.method ?? 'GET', headers, body });
} catch (e) {
  fail(result, e);
}
result.status = response.status;
result.header = response.headers.get('x-vercel-ai-ui-message-stream');

if (!response.ok || response.status === 204 || response.body == null) {
  await response.body?.cancel();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(response.status === 204 ? 0 : 1);
}
if (result.header !== 'v1') {
  fail(result, new Error(`x-vercel-ai-ui-message-stream is ${result.header}, not v1`));
}

// The chunks, parsed and validated as DefaultChatTransport.processResponseStream does (a chunk
// that fails the schema errors the stream), noting `finish` and the error texts on the way.
const pendingErrorTexts = [];
const chunks = parseJsonEventStream({
  stream: response.body,
  schema: uiMessageChunkSchema,
}).pipeThrough(
  new TransformStream({
    transform(chunk, controller) {
      if (!chunk.success) {
        throw chunk.error;
      }
      const value = chunk.value;
      if (value.type === 'finish') result.finished = true;
      if (value.type === 'error') {
        result.errors.push(value.errorText);
        pendingErrorTexts.push(value.errorText);
      }
      controller.enqueue(value);
    },
  }),
);

// readUIMessageStream hands every error to onError: those of `error` parts (a plain Error with the
// part's text), and rejections (a schema or JSON error, a UIMessageStreamError, ...).
const rejections = [];
let message;
try {
  for await (const snapshot of readUIMessageStream({
    stream: chunks,
    onError(error) {
      const fromPart =
        pendingErrorTexts.length > 0 &&
        Object.getPrototypeOf(error) === Error.prototype &&
        error.message === pendingErrorTexts[0];
      if (fromPart) {
        pendingErrorTexts.shift();
      } else {
        rejections.push(error);
      }
    },
  })) {
    message = snapshot;
  }
} catch (e) {
  rejections.push(e);
}

if (message) {
  result.messageId = message.id;
  result.parts = message.parts;
  result.partTypes = message.parts.map(part => part.type);
  result.text = message.parts
    .filter(part => part.type === 'text')
    .map(part => part.text)
    .join('');
}
if (rejections.length > 0) {
  fail(result, rejections[0]);
}
process.stdout.write(`${JSON.stringify(result)}\n`);
