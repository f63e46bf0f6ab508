import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { changeTopic, changeTopicPartitions, encodeChange } from '../../eventlog/change-event.js';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { demoRows } from '../../store/demo-data.js';
import { writeRows } from '../../store/rows.js';
import { NodeProcess, waitUntilReady } from '../support/gateway.js';
import { groupProgress, makeStream, waitForGroup, type Stream } from '../support/event-stream.js';
import { materializerGroup as group, rawTopics, registry, streamSize, verifyAgainstTruth } from '../support/ground-truth.js';
import { gql, type Reply } from '../support/http.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { startTogether } from '../support/start-together.js';
import { freePort } from '../support/ports.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * SIGTERM to real gateway and materializer processes (README, "Shutdown").
 *
 * Gateway: Redis is SIGSTOPped so that requests sent before the signal stay
 * in flight for as long as the test wants. On SIGTERM /readyz turns 503
 * (draining) while the port still accepts, then new connections are
 * refused, yet every request in flight completes with 200 and its data once
 * Redis resumes; the WebSocket subscriber gets `complete` and a 1001 close
 * frame; the process exits 0 within SHUTDOWN_TIMEOUT_MS. And a drain that
 * cannot finish in time ends in exit 1 with a log line saying so.
 *
 * Materializer: SIGTERM twice mid-stream; each process exits 0 after
 * committing its batch (its successor is redelivered nothing it had
 * applied), the next one continues, and the stored values equal the ground
 * truth (nothing lost, nothing applied twice).
 */
const query = '{ users(ids: ["1", "2"]) { id clickStats { clickRate } } }';
const readinessDelayMs = 3000;
const shutdownTimeoutMs = 20_000;

describe('graceful shutdown on SIGTERM', () => {
  let broker: KafkaBroker;
  let redis: RedisProcess;
  let store: CodecStore;
  const processes: NodeProcess[] = [];

  before(async () => {
    [broker, redis] = await startTogether(KafkaBroker.start(), RedisProcess.start());
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
    await eventually(() => store.ping());
  });

  after(async () => {
    if (redis?.pid) process.kill(redis.pid, 'SIGCONT');
    await Promise.all(processes.map((p) => p.stop()));
    await store?.close();
    await broker?.destroy();
    await redis?.destroy();
  });

  // A test that fails while Redis is stopped must not leave it stopped for the next.
  afterEach(() => {
    if (redis?.pid) process.kill(redis.pid, 'SIGCONT');
  });

  const spawn = (script: string, args: string[], env: Record<string, string>): NodeProcess => {
    const proc = NodeProcess.spawn(script, args, env);
    processes.push(proc);
    return proc;
  };
  const exited = (proc: NodeProcess) => new Promise<number | null>((resolve) => {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) resolve(proc.child.exitCode);
    else proc.child.once('exit', (code) => resolve(code));
  });
  const logLines = (proc: NodeProcess) => proc.output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

  test('gateway: unready first, then refuses new connections, finishes every request in flight, closes ws with 1001, exits 0', { timeout: 180_000 }, async () => {
    await writeRows(store, demoRows(registry, { eventTimeMs: Date.now(), counts: { user: 10, item: 10, merchant: 10 } }));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const gateway = spawn('gateway/main.js', [], {
      PORT: String(port), REDIS_URL: redis.url, KAFKA_BROKERS: broker.brokers.join(','), DEMO_SEED: 'false', DEMO_WRITER: 'false',
      // Requests wait on the stopped Redis instead of failing: they are the slow in-flight requests.
      STORE_TIMEOUT_MS: '60000', REQUEST_DEADLINE_MS: '120000', SHUTDOWN_READINESS_DELAY_MS: String(readinessDelayMs), SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs),
    });
    const context = () => `\ngateway output:\n${gateway.output.slice(-4000)}`;
    await waitUntilReady(`${base}/readyz`, gateway, 60_000);
    const first = await gql(`${base}/graphql`, query);
    assert.equal(first.json.errors, undefined, first.text + context());

    // A live subscriber: a change event reaches it before the shutdown.
    const socket = new Socket(`ws://127.0.0.1:${port}/graphql`);
    await socket.opened;
    socket.send({ type: 'connection_init' });
    await socket.message((m) => m.type === 'connection_ack', 'connection_ack');
    socket.send({ id: 's1', type: 'subscribe', payload: { query: 'subscription { featureChanged(entity: USER, ids: ["1"]) { id view } }' } });
    const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-change-producer' });
    await producer.createTopics([{ topic: changeTopic, partitions: changeTopicPartitions }]);
    const clickStats = activeVersionOf(registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!);
    // The gateway's tail starts at the end of the topic once it has joined: publish until one arrives.
    await eventually(async () => {
      await producer.produce([encodeChange({
        entity: 'user', id: '1', view: 'clickStats', version: clickStats.version, values: { clickRate: 0.5, clicks: 50, impressions: 100 },
        eventTime: new Date().toISOString(), source: { topic: 'test-events', partition: 0, offset: 0 },
      })]);
      await socket.message((m) => m.type === 'next' && m.id === 's1', 'a change event', 2000);
    }, 60_000, 0);
    await producer.close();

    // Slow requests in flight: Redis stops answering, then they are sent.
    process.kill(redis.pid!, 'SIGSTOP');
    let settled = 0;
    const inFlight = Array.from({ length: 20 }, () => gql(`${base}/graphql`, query).finally(() => settled++));
    await new Promise((r) => setTimeout(r, 500));
    const signalledAt = Date.now();
    const exit = exited(gateway);
    gateway.child.kill('SIGTERM');

    // Unready first: /readyz says draining while the port still accepts connections.
    const ready = await eventually(async () => {
      const r = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(2000) });
      const body = (await r.json()) as { checks?: Record<string, string> };
      assert.equal(body.checks?.shutdown, 'draining');
      return r.status;
    }, 10_000);
    assert.equal(ready, 503);
    // Then the listener closes: a new connection is refused.
    await eventually(async () => {
      const error = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) }).then(() => null, (e: Error & { cause?: { code?: string } }) => e);
      assert.equal(error?.cause?.code, 'ECONNREFUSED', `still accepting: ${String(error)}`);
    }, readinessDelayMs + 15_000);
    assert.equal(settled, 0, 'requests in flight were answered before Redis came back' + context());
    assert.equal(gateway.child.exitCode, null, 'the gateway exited with requests in flight' + context());

    process.kill(redis.pid!, 'SIGCONT');
    const replies: Reply[] = await Promise.all(inFlight);
    for (const reply of replies) {
      assert.equal(reply.status, 200, reply.text + context());
      assert.equal(reply.json.errors, undefined, reply.text);
      assert.deepEqual(reply.json.data.users.map((u: { id: string }) => u.id), ['1', '2']);
    }
    const closed = await socket.closed;
    assert.equal(closed.code, 1001, `ws close code${context()}`);
    assert.ok(socket.messages.some((m) => m.type === 'complete' && m.id === 's1'), `the subscription was completed before the close: ${JSON.stringify(socket.messages)}`);
    assert.equal(await exit, 0, `exit code${context()}`);
    assert.ok(Date.now() - signalledAt < shutdownTimeoutMs, `took ${Date.now() - signalledAt} ms`);
    assert.ok(logLines(gateway).some((l) => l.msg === 'shut down'), `no "shut down" line${context()}`);
  });

  test('gateway: a drain that outlasts SHUTDOWN_TIMEOUT_MS ends in exit 1 with a log line', { timeout: 120_000 }, async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const gateway = spawn('gateway/main.js', [], {
      PORT: String(port), REDIS_URL: redis.url, DEMO_SEED: 'false', DEMO_WRITER: 'false', STORE_TIMEOUT_MS: '60000', REQUEST_DEADLINE_MS: '120000', SHUTDOWN_TIMEOUT_MS: '2000',
    });
    await waitUntilReady(`${base}/readyz`, gateway, 60_000);
    process.kill(redis.pid!, 'SIGSTOP');
    try {
      const hung = gql(`${base}/graphql`, query).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 500));
      const exit = exited(gateway);
      gateway.child.kill('SIGTERM');
      assert.equal(await exit, 1, gateway.output.slice(-3000));
      await hung;
    } finally {
      process.kill(redis.pid!, 'SIGCONT');
    }
    const line = logLines(gateway).find((l) => String(l.msg).includes('SHUTDOWN_TIMEOUT_MS'));
    assert.ok(line, `no timeout line:\n${gateway.output.slice(-3000)}`);
    assert.equal(line.level, 50, 'logged as an error');
  });

  test('materializer: SIGTERM mid-stream exits 0 after committing; the next process continues; the ground truth holds', { timeout: 600_000 }, async () => {
    const stream: Stream = makeStream({ ...streamSize, seed: 4, baseMs: Date.now() - 100_000 });
    const env = { KAFKA_BROKERS: broker.brokers.join(','), REDIS_URL: redis.url, LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs) };
    const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-producer' });
    await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
    const start = async () => {
      const port = await freePort();
      return { port, proc: spawn('materializer/main.js', ['--port', String(port)], env) };
    };
    /**
     * A successor that finds events of its partitions already applied (outcome "duplicate") got a batch its
     * predecessor applied but did not commit. After a graceful stop there is none: the batch in hand was committed.
     */
    const assertNoRedelivery = async (port: number, proc: NodeProcess): Promise<void> => {
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const duplicates = [...metrics.matchAll(/materializer_events_total\{[^}]*outcome="duplicate"\} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
      const applied = [...metrics.matchAll(/materializer_events_total\{[^}]*outcome="applied"\} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
      assert.ok(applied > 0, `the successor applied nothing:\n${proc.output.slice(-3000)}`);
      assert.equal(duplicates, 0, 'the successor was redelivered events its predecessor had applied: a batch was left uncommitted');
    };
    let { port, proc: current } = await start();
    let successors = 0;
    const chunks = 10;
    const chunkSize = Math.ceil(stream.records.length / chunks);
    for (let c = 0; c < chunks; c++) {
      await producer.produce(stream.records.slice(c * chunkSize, (c + 1) * chunkSize));
      if (c !== 3 && c !== 6) continue;
      // SIGTERM while the process is visibly committing batches: it has one in hand.
      const before = (await groupProgress(broker.brokers, group, rawTopics)).committed;
      const deadline = Date.now() + 120_000;
      while ((await groupProgress(broker.brokers, group, rawTopics)).committed <= before) {
        if (Date.now() > deadline || current.child.exitCode !== null) throw new Error(`the materializer made no progress:\n${current.output.slice(-4000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      if (successors > 0) await assertNoRedelivery(port, current);
      const signalledAt = Date.now();
      const exit = exited(current);
      current.child.kill('SIGTERM');
      assert.equal(await exit, 0, `exit code:\n${current.output.slice(-4000)}`);
      assert.ok(Date.now() - signalledAt < shutdownTimeoutMs, `took ${Date.now() - signalledAt} ms`);
      const lines = logLines(current);
      assert.ok(lines.some((l) => l.msg === 'materializer stopped: current batch committed, group left'), current.output.slice(-4000));
      assert.ok(lines.some((l) => l.msg === 'shut down'), current.output.slice(-4000));
      ({ port, proc: current } = await start());
      successors++;
    }
    await producer.close();
    await waitForGroup(broker.brokers, group, rawTopics, 300_000).catch((error: Error) => {
      throw new Error(`${error.message}\nmaterializer output:\n${current.output.slice(-4000)}`);
    });
    await assertNoRedelivery(port, current);
    await verifyAgainstTruth(stream, store, broker.brokers);
  });
});

/** A raw graphql-transport-ws socket that records every message and how it closed. */
class Socket {
  readonly messages: { type: string; id?: string }[] = [];
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly ws: WebSocket;

  constructor(url: string) {
    this.ws = new WebSocket(url, 'graphql-transport-ws');
    this.ws.on('message', (data) => this.messages.push(JSON.parse(String(data))));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    this.closed = new Promise((resolve) => this.ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
  }

  send(message: unknown): void {
    this.ws.send(JSON.stringify(message));
  }

  async message(predicate: (m: { type: string; id?: string }) => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.messages.some(predicate)) {
      if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms; got ${JSON.stringify(this.messages)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
