/**
 * A generated bad-input suite (test/support/fuzz.ts) against the gateway as
 * `npm start` runs it, in a child process: the embedded store and event log
 * with the in-process materializer, so subscriptions are served too.
 *
 * At least 10,000 inputs over HTTP and graphql-ws, a few at a time. Each
 * must get a well-formed answer: HTTP a 4xx (or 200) with a JSON `errors`
 * array of messages with known codes, the codes the case expects, no stack
 * trace; ws the close code graphql-ws documents, or coded `error` messages on
 * a connection that stays usable. The process must stay alive and log no
 * error, its memory must stay bounded (RSS and heap from /metrics, after a
 * warm-up and at the end), and a valid query must still answer correctly.
 *
 * Replay a failure with the seed it prints: FUZZ_SEED=<seed>. FUZZ_HTTP and
 * FUZZ_WS set the number of cases.
 */
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { readManifest } from '../../schema/manifest.js';
import { activeVersionOf } from '../../schema/types.js';
import { demoRows } from '../../store/demo-data.js';
import {
  Rng, describeCase, generateHttpCases, generateWsCases, inputsOf, knownCodes, type FuzzCase, type FuzzLimits, type HttpCase, type WsCase,
} from '../support/fuzz.js';
import { NodeProcess, registry, waitUntilReady } from '../support/gateway.js';
import { freePort } from '../support/ports.js';

const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const httpCount = Number(process.env.FUZZ_HTTP ?? 7000);
const wsCount = Number(process.env.FUZZ_WS ?? 1700);
const HTTP_CONCURRENCY = 6;
const WS_CONCURRENCY = 3;
/** An answer slower than this is a hang. */
const ANSWER_TIMEOUT_MS = 30_000;
/**
 * Growth allowed between the warm-up and the end, of the heap after a full
 * collection and of RSS. Apollo's caches of parsed documents and of plans may
 * still fill (bounded LRUs of ~30 MiB each). A leak that outgrows the gateway's
 * capped heap (--max-old-space-size) kills it, which fails the test too.
 */
const MAX_HEAP_GROWTH = 32 * 2 ** 20;
const MAX_RSS_GROWTH = 128 * 2 ** 20;
const HEAP_CAP_MIB = 384;

const limits: FuzzLimits = {
  maxBatchIds: 20,
  maxQueryDepth: 8,
  maxQueryNesting: 64,
  maxBodyBytes: 65_536,
  maxSubscriptionsPerConnection: 4,
  manifest: readManifest().operations.map((op) => ({ id: op.id, body: op.body })),
};

const validQuery = '{ user(id: "7") { id profile { country isPremium sessionLength } } }';

/** What the demo seed wrote for user 7's profile: the answer the valid query must get. */
function expectedAnswer(): unknown {
  const profile = registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'profile')!;
  const version = activeVersionOf(profile);
  for (const { view, row } of demoRows(registry, { eventTimeMs: 0, counts: { user: 7, item: 0, merchant: 0 }, views: (v) => v === version })) {
    if (row.entityId !== '7') continue;
    assert.equal(view, version);
    const { country, isPremium, sessionLength } = row.values;
    return { data: { user: { id: '7', profile: { country, isPremium, sessionLength } } } };
  }
  throw new Error('the demo data has no profile for user 7');
}

interface Memory {
  readonly rss: number;
  readonly heapUsed: number;
}

describe('bad input, generated (HTTP and graphql-ws)', () => {
  let gateway: NodeProcess;
  let base: string;
  let exited: string | undefined;
  const agent = new http.Agent({ keepAlive: true, maxSockets: HTTP_CONCURRENCY });

  before(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    gateway = NodeProcess.spawn('gateway/main.js', [], {
      // The inspector lets the test collect garbage before it reads the heap size (see collectGarbage).
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --inspect=127.0.0.1:0 --max-old-space-size=${HEAP_CAP_MIB}`.trim(),
      PORT: String(port),
      LOG_LEVEL: 'warn',
      // The embedded pipeline of `npm start`, seeded once and then still: no demo writer or events, so memory is the inputs' doing.
      DEMO_SEED: 'true',
      DEMO_WRITER: 'false',
      DEMO_EVENTS_PER_SECOND: '0',
      MAX_BATCH_IDS: String(limits.maxBatchIds),
      MAX_QUERY_DEPTH: String(limits.maxQueryDepth),
      MAX_QUERY_NESTING: String(limits.maxQueryNesting),
      MAX_BODY_BYTES: String(limits.maxBodyBytes),
      MAX_SUBSCRIPTIONS_PER_CONNECTION: String(limits.maxSubscriptionsPerConnection),
    });
    gateway.child.on('exit', (code, signal) => (exited = `gateway exited (code ${code}, signal ${signal})`));
    await waitUntilReady(`${base}/readyz`, gateway, 60_000);
  });

  after(async () => {
    agent.destroy();
    await gateway?.stop();
  });

  async function validAnswer(): Promise<unknown> {
    const response = await fetch(`${base}/graphql`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: validQuery }),
    });
    assert.equal(response.status, 200);
    return response.json();
  }

  async function memory(): Promise<Memory> {
    const text = await (await fetch(`${base}/metrics`)).text();
    const value = (name: string) => {
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      assert.ok(line, `no ${name} in /metrics`);
      return Number(line.split(' ')[1]);
    };
    return { rss: value('process_resident_memory_bytes'), heapUsed: value('nodejs_heap_size_used_bytes') };
  }

  /** Memory after a full garbage collection: live objects, not garbage that awaits the next one. */
  async function settledMemory(): Promise<Memory> {
    await collectGarbage(gateway.output);
    return memory();
  }

  it('answers a valid query correctly before the fuzzing', async () => {
    assert.deepEqual(await validAnswer(), expectedAnswer());
  });

  it(`answers ≥ 10,000 generated bad inputs with coded errors, stays up, memory bounded`, async (t) => {
    t.diagnostic(`fuzz seed ${seed} (replay: FUZZ_SEED=${seed})`);
    const rng = new Rng(seed);
    const httpCases = generateHttpCases(rng, limits, httpCount);
    const wsCases = generateWsCases(rng, limits, wsCount);
    const inputs = [...httpCases, ...wsCases].reduce((n, c) => n + inputsOf(c), 0);
    if (!process.env.FUZZ_HTTP && !process.env.FUZZ_WS) assert.ok(inputs >= 10_000, `only ${inputs} inputs generated`);

    const failures: string[] = [];
    let failed = 0;
    // A hang blocks every input after it; past a few failures the rest would only repeat them slowly.
    let stop = false;
    const byCategory = new Map<string, number>();
    const run = async (c: FuzzCase, index: number) => {
      byCategory.set(c.category, (byCategory.get(c.category) ?? 0) + 1);
      let problem: string | undefined;
      try {
        problem = c.kind === 'http' ? await sendHttp(base, agent, c) : await sendWs(base.replace(/^http/, 'ws') + '/graphql', c);
      } catch (error) {
        problem = `client error: ${(error as Error).message}`;
      }
      if (exited) problem = `${exited} after this input${problem ? `; ${problem}` : ''}`;
      if (problem) {
        failed++;
        if (failures.length < 15) failures.push(`#${index} ${problem}\n    ${describeCase(c)}`);
        if (failed >= 25 || problem.startsWith('no ') || exited) stop = true;
      }
    };
    const phase = async (http: HttpCase[], ws: WsCase[], offset: { http: number; ws: number }) => {
      const stopped = () => stop;
      await Promise.all([
        pool(http, HTTP_CONCURRENCY, stopped, (c, i) => run(c, offset.http + i)),
        pool(ws, WS_CONCURRENCY, stopped, (c, i) => run(c, httpCount + offset.ws + i)),
      ]);
    };
    const report = () => `${failed} cases got a wrong answer (FUZZ_SEED=${seed})${stop ? ', the run stopped early' : ''}:\n${failures.join('\n')}`;

    const started = Date.now();
    // Warm-up: a tenth of the inputs fills the caches and the JIT before the baseline.
    const warmHttp = Math.floor(httpCases.length / 10);
    const warmWs = Math.floor(wsCases.length / 10);
    await phase(httpCases.slice(0, warmHttp), wsCases.slice(0, warmWs), { http: 0, ws: 0 });
    assert.equal(failed, 0, report());
    const baseline = await settledMemory();
    await phase(httpCases.slice(warmHttp), wsCases.slice(warmWs), { http: warmHttp, ws: warmWs });
    const seconds = (Date.now() - started) / 1000;
    assert.equal(exited, undefined, `${exited}\n${gateway.output.slice(-4000)}`);
    assert.equal(failed, 0, report());
    const end = await settledMemory();

    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    t.diagnostic(`${inputs} inputs (${httpCases.length} HTTP requests, ${wsCases.length} ws connections) in ${seconds.toFixed(1)} s; ${failed} cases failed`);
    t.diagnostic(`heap used ${mib(baseline.heapUsed)} → ${mib(end.heapUsed)}, RSS ${mib(baseline.rss)} → ${mib(end.rss)}`);
    t.diagnostic(`categories: ${[...byCategory].map(([k, n]) => `${k} ${n}`).join('; ')}`);
    assert.ok(end.heapUsed - baseline.heapUsed < MAX_HEAP_GROWTH, `heap used grew ${mib(end.heapUsed - baseline.heapUsed)} (FUZZ_SEED=${seed})`);
    assert.ok(end.rss - baseline.rss < MAX_RSS_GROWTH, `RSS grew ${mib(end.rss - baseline.rss)} (FUZZ_SEED=${seed})`);
  });

  it('still answers a valid query correctly, holds no subscription, and logged no error', async () => {
    assert.equal(exited, undefined, exited);
    assert.deepEqual(await validAnswer(), expectedAnswer());
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    // Every fuzzing connection is closed: none of their subscriptions may linger.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const text = await (await fetch(`${base}/metrics`)).text();
      const active = Number(text.split('\n').find((l) => l.startsWith('subscriptions_active '))?.split(' ')[1]);
      if (active === 0) break;
      assert.ok(Date.now() < deadline, `${active} subscriptions still active after every client closed`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // pino levels: 50 error, 60 fatal. Bad input is the client's fault, never a server error.
    const errors = gateway.output.split('\n').filter((l) => /"level":(50|60)/.test(l));
    assert.deepEqual(errors.slice(0, 5), [], `the gateway logged ${errors.length} errors`);
  });
});

/** Runs `fn` over `items`, `concurrency` at a time, until `stopped()`. */
async function pool<T>(items: readonly T[], concurrency: number, stopped: () => boolean, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length && !stopped()) {
      const i = next++;
      await fn(items[i]!, i);
    }
  }));
}

/** A full collection in the gateway, through its inspector (HeapProfiler.collectGarbage). */
async function collectGarbage(output: string): Promise<void> {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(output)?.[1];
  assert.ok(url, `the gateway printed no inspector URL:\n${output.slice(0, 2000)}`);
  const socket = new WebSocket(url);
  try {
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    // Twice: objects freed by the first collection's finalizers go in the second.
    for (const id of [1, 2]) {
      const done = new Promise<void>((resolve) => {
        socket.on('message', (data) => {
          if ((JSON.parse(String(data)) as { id?: number }).id === id) resolve();
        });
      });
      socket.send(JSON.stringify({ id, method: 'HeapProfiler.collectGarbage' }));
      await done;
    }
  } finally {
    socket.close();
  }
}

const stackTrace = /\n\s+at |\bstacktrace\b|node:internal|file:\/\//;

/** Sends one HTTP case; returns what is wrong with the answer, or undefined. */
function sendHttp(base: string, agent: http.Agent, c: HttpCase): Promise<string | undefined> {
  return new Promise((resolve) => {
    let answered = false;
    const headers: Record<string, string | number> = { ...c.headers };
    if (c.body) headers['content-length'] = c.body.length;
    const req = http.request(`${base}${c.path}`, { method: c.method, headers, agent, timeout: ANSWER_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (error) => resolve(`response error: ${error.message}`));
      res.on('end', () => {
        answered = true;
        resolve(checkHttp(c, res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8')));
      });
    });
    req.on('timeout', () => {
      req.destroy();
      resolve(`no answer within ${ANSWER_TIMEOUT_MS} ms`);
    });
    // The server may close the connection once it has answered (413); only an error before the answer counts.
    req.on('error', (error) => {
      if (!answered) resolve(`request error before an answer: ${error.message}`);
    });
    req.end(c.body);
  });
}

function checkHttp(c: HttpCase, status: number, text: string): string | undefined {
  const got = `got ${status} ${text.slice(0, 300)}`;
  if (status !== 200 && (status < 400 || status > 499)) return `status ${status}: ${got}`;
  if (stackTrace.test(text)) return `a stack trace in the answer: ${got}`;
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    return `not JSON: ${got}`;
  }
  const errors = body?.errors;
  if (errors !== undefined) {
    if (!Array.isArray(errors) || errors.length === 0) return `errors is not a non-empty array: ${got}`;
    for (const e of errors) {
      if (typeof e?.message !== 'string' || e.message.length === 0) return `an error without a message: ${got}`;
      if (!knownCodes.has(e.extensions?.code)) return `an error code outside the documented set: ${got}`;
    }
  }
  if (c.expect === 'data-or-error') {
    if (errors === undefined && (status !== 200 || body?.data === undefined)) return `neither data nor errors: ${got}`;
    return undefined;
  }
  if (errors === undefined) return `expected an error (${[...c.expect.codes].join(' or ')}): ${got}`;
  const codes = errors.map((e: any) => e.extensions.code as string);
  if (!codes.some((code: string) => c.expect !== 'data-or-error' && c.expect.codes.has(code))) return `expected ${[...c.expect.codes].join(' or ')}: ${got}`;
  // A refused request is a 4xx; only "not found, send the query" is a 200 (the APQ protocol).
  if (status === 200 && !codes.includes('PERSISTED_QUERY_NOT_FOUND')) return `a refusal answered with 200: ${got}`;
  if (body.data !== undefined && body.data !== null) return `data next to a refusal: ${got}`;
  return undefined;
}

const serverMessageTypes = new Set(['connection_ack', 'next', 'error', 'complete', 'ping', 'pong']);

/** Runs one ws case; returns what is wrong with the server's behaviour, or undefined. */
async function sendWs(url: string, c: WsCase): Promise<string | undefined> {
  const socket = new WebSocket(url, [...c.protocols]);
  const messages: any[] = [];
  let problem: string | undefined;
  let closed: { code: number; reason: string } | undefined;
  let clientError: string | undefined;
  // Read through a function: TypeScript cannot see the socket's callbacks assign it.
  const closedState = () => closed;
  const changed: (() => void)[] = [];
  const notify = () => changed.splice(0).forEach((f) => f());
  socket.on('message', (data) => {
    const raw = String(data);
    let message: any;
    try {
      message = JSON.parse(raw);
    } catch {
      problem ??= `a message that is not JSON: ${raw.slice(0, 200)}`;
      return notify();
    }
    if (!serverMessageTypes.has(message?.type)) problem ??= `a message of an unknown type: ${raw.slice(0, 200)}`;
    if (stackTrace.test(raw)) problem ??= `a stack trace in a message: ${raw.slice(0, 300)}`;
    if (message.type === 'error') {
      const errors = message.payload;
      if (!Array.isArray(errors) || errors.length === 0) problem ??= `an error message without errors: ${raw.slice(0, 200)}`;
      else if (!errors.every((e: any) => typeof e?.message === 'string' && e.message && knownCodes.has(e.extensions?.code))) {
        problem ??= `an error without a message or a documented code: ${raw.slice(0, 300)}`;
      }
    }
    messages.push(message);
    notify();
  });
  socket.on('open', notify);
  socket.on('close', (code, reason) => {
    closed = { code, reason: String(reason) };
    notify();
  });
  socket.on('error', (error) => {
    clientError = error.message;
    notify();
  });
  const until = (predicate: () => boolean, what: string): Promise<string | undefined> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => resolve(`no ${what} within ${ANSWER_TIMEOUT_MS} ms (messages ${JSON.stringify(messages).slice(0, 300)})`), ANSWER_TIMEOUT_MS);
      const check = () => {
        if (predicate()) {
          clearTimeout(timer);
          resolve(undefined);
        } else changed.push(check);
      };
      check();
    });

  try {
    const opened = await until(() => socket.readyState !== WebSocket.CONNECTING, 'open');
    if (opened) return opened;
    if (socket.readyState !== WebSocket.OPEN) {
      // ws refuses, client-side, a handshake whose subprotocol it did not offer: the server chose none.
      if ('close' in c.expect && c.expect.close.includes(4406) && clientError && /subprotocol/i.test(clientError)) return undefined;
      // Opened and already closing: a server that closes at once (4406) is judged below.
      if (clientError || !('close' in c.expect) || c.init || c.frames.length > 0) return `the handshake failed: ${clientError ?? JSON.stringify(closed)}`;
    }
    if (c.init) {
      socket.send(JSON.stringify({ type: 'connection_init' }));
      const acked = await until(() => messages.some((m) => m.type === 'connection_ack') || closed !== undefined, 'connection_ack');
      if (acked) return acked;
      if (!messages.some((m) => m.type === 'connection_ack')) return `closed before connection_ack: ${JSON.stringify(closed)}`;
    }
    for (const f of c.frames) {
      if (socket.readyState !== WebSocket.OPEN) break;
      socket.send(f.data, { binary: f.binary });
    }

    if ('close' in c.expect) {
      const expected = c.expect.close;
      const waited = await until(() => closed !== undefined, `close (${expected.join(' or ')})`);
      if (waited) return waited;
      if (!expected.includes(closed!.code)) return `closed with ${closed!.code} "${closed!.reason}", expected ${expected.join(' or ')}`;
      return problem;
    }

    const expectedErrors = c.expect.errors;
    const ids = Object.keys(expectedErrors);
    const answered = await until(() => closed !== undefined || ids.every((id) => messages.some((m) => m.type === 'error' && m.id === id)), `error messages for ${ids.join(', ')}`);
    if (answered) return answered;
    if (closed) return `closed with ${closed.code} "${closed.reason}" instead of answering with error messages`;
    for (const m of messages.filter((m) => m.type === 'error')) {
      const allowed = expectedErrors[m.id];
      if (!allowed) return `an error for ${m.id}, which should have been accepted: ${JSON.stringify(m).slice(0, 300)}`;
      if (!m.payload.some((e: any) => allowed.has(e.extensions?.code))) return `error for ${m.id}: expected ${[...allowed].join(' or ')}, got ${JSON.stringify(m.payload).slice(0, 300)}`;
    }
    // The connection is still usable.
    socket.send(JSON.stringify({ type: 'ping' }));
    const ponged = await until(() => closed !== undefined || messages.some((m) => m.type === 'pong'), 'pong');
    if (ponged) return ponged;
    const closedNow = closedState();
    if (closedNow) return `closed with ${closedNow.code} "${closedNow.reason}" instead of answering ping`;
    return problem;
  } finally {
    if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
      socket.close(1000);
      const waited = await until(() => closed !== undefined || clientError !== undefined, 'close after the client closed');
      if (waited) socket.terminate();
    }
  }
}
