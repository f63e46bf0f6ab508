import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningGateway } from '../../gateway/server.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { demoRows } from '../../store/demo-data.js';
import { writeRows } from '../../store/rows.js';
import { registry, startTestGateway } from '../support/gateway.js';
import { get, gql, type Reply } from '../support/http.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * Redis going away mid-run: requests fail fast with a clear error (no hang),
 * /readyz turns unready, and serving recovers by itself when Redis returns.
 * The bounds below are liveness bounds (seconds, far above normal latency),
 * not performance assertions.
 */
const query = '{ users(ids: ["1", "2"]) { id clickStats { clickRate } } }';
const storeTimeoutMs = 300;

describe('Redis stopped and restarted under a running gateway', () => {
  let redis: RedisProcess;
  let store: CodecStore;
  let gateway: RunningGateway;
  let readyz: string;

  before(async () => {
    redis = await RedisProcess.start();
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: storeTimeoutMs });
    await eventually(() => store.ping());
    await writeRows(store, demoRows(registry, { eventTimeMs: Date.now(), counts: { user: 10, item: 10, merchant: 10 } }));
    gateway = await startTestGateway(store);
    readyz = gateway.url.replace('/graphql', '/readyz');
  });

  after(async () => {
    await gateway.close();
    await store.close();
    await redis.destroy();
  });

  test('serves while Redis is up', async () => {
    const reply = await gql(gateway.url, query);
    assert.equal(reply.json.errors, undefined, reply.text);
    assert.equal(reply.json.data.users.length, 2);
    assert.equal((await get(readyz)).status, 200);
  });

  test('Redis stopped: requests fail fast with STORE_UNAVAILABLE naming the shard; /readyz is 503', async () => {
    await redis.stop();
    for (let i = 0; i < 5; i++) {
      const [reply, ms] = await timed(() => gql(gateway.url, query));
      assert.ok(ms < 3000, `answered after ${ms} ms`);
      assertStoreUnavailable(reply, `127.0.0.1:${redis.port}`);
    }
    const ready = await get(readyz);
    assert.equal(ready.status, 503);
    assert.match(ready.json.checks.store, /redis/);
    assert.equal((await get(gateway.url.replace('/graphql', '/healthz'))).status, 200, 'the process itself stays healthy');
  });

  test('Redis back: serving recovers without a restart of the gateway', async () => {
    await redis.restart();
    const reply = await eventually(async () => {
      const r = await gql(gateway.url, query);
      if (r.json.errors) throw new Error(r.text);
      return r;
    });
    assert.equal(reply.json.data.users[0].id, '1');
    assert.notEqual(reply.json.data.users[0].clickStats, null, 'the data saved at shutdown is served again');
    assert.equal((await get(readyz)).status, 200);
  });

  test('Redis hung (SIGSTOP): requests fail within the store timeout, then recover on SIGCONT', async () => {
    const pid = redis.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      const [reply, ms] = await timed(() => gql(gateway.url, query));
      assert.ok(ms < 3000, `answered after ${ms} ms`);
      assertStoreUnavailable(reply, `127.0.0.1:${redis.port}`);
      assert.equal((await get(readyz)).status, 503);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await eventually(async () => {
      const r = await gql(gateway.url, query);
      if (r.json.errors) throw new Error(r.text);
    });
  });
});

function assertStoreUnavailable(reply: Reply, shard: string): void {
  assert.equal(reply.status, 200, 'a GraphQL execution error, not an HTTP failure');
  const error = reply.json.errors?.[0];
  assert.ok(error, reply.text);
  assert.equal(error.extensions.code, 'STORE_UNAVAILABLE', reply.text);
  assert.match(error.message, new RegExp(shard.replace(/\./g, '\\.')));
  assert.equal(error.extensions.stacktrace, undefined, 'no stack traces reach clients');
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now();
  const result = await fn();
  return [result, performance.now() - started];
}
