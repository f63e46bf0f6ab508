import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningGateway } from '../../gateway/server.js';
import type { ViewVersion } from '../../schema/types.js';
import { activeVersionOf } from '../../schema/types.js';
import { RedisBackend } from '../../store/backends/redis.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { demoRows } from '../../store/demo-data.js';
import { recordKey } from '../../store/backends/byte-backend.js';
import { writeRows } from '../../store/rows.js';
import { NodeProcess, registry, startTestGateway, waitUntilReady } from '../support/gateway.js';
import { get, post } from '../support/http.js';
import { adhocQuery, Load, persistedId, type Sample } from '../support/load.js';
import { freePort } from '../support/ports.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * One of three Redis shards killed (SIGKILL) and hung (SIGSTOP) under a
 * running gateway process serving continuous concurrent load: the other
 * shards' values keep being served, only the fields whose values live on the
 * failed shard error (naming it), no request waits past the deadline, the
 * shard's circuit opens, and serving recovers fully when the shard returns,
 * without restarting the gateway. Time bounds are liveness bounds (the
 * deadline plus generous slack for a shared 2-core machine), not benchmarks.
 */
const USERS = 300;
// Timeouts well above a healthy shard's answer even when the machine is starved (load average 15+ on
// 2 cores stalls the event loop for hundreds of ms), so that only the failed shard ever times out.
const STORE_TIMEOUT_MS = 800;
const DEADLINE_MS = 1500;
/** Scheduling slack on a machine shared with other test runs. */
const SLACK_MS = 2000;
/** The in-process gateway's deadline in the deadline test, far below its store timeout. */
const SHORT_DEADLINE_MS = 1000;
const WORKERS = 12;

const user = registry.entities.find((e) => e.name === 'user')!;
const clickStats: ViewVersion = activeVersionOf(user.views.find((v) => v.name === 'clickStats')!);
const profile: ViewVersion = activeVersionOf(user.views.find((v) => v.name === 'profile')!);
describe('one of three Redis shards killed and hung under load', () => {
  const shards: RedisProcess[] = [];
  let writer: CodecStore;
  let router: RedisBackend;
  let gateway: NodeProcess;
  let url: string;
  let load: Load;

  const shardOf = (view: ViewVersion, id: string): string => router.shardOf(recordKey(view, id));
  const loadData = async (): Promise<void> => {
    await eventually(() => writer.ping(), 15_000, 100);
    await writeRows(writer, demoRows(registry, { eventTimeMs: Date.now(), counts: { user: USERS, item: 1, merchant: 1 } }));
    // Snapshots on disk: a shard killed later restarts with its data, as a node with persistence would.
    for (const s of shards) await s.save();
  };
  const metric = async (name: string, shard: string): Promise<number> => {
    const text = (await get(url.replace('/graphql', '/metrics'))).text;
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`shard="${shard}"`));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  };

  before(async () => {
    for (let i = 0; i < 3; i++) shards.push(await RedisProcess.start());
    const urls = shards.map((s) => s.url);
    writer = createStore({ kind: 'redis', urls, commandTimeoutMs: 2000 });
    router = writer.backend as RedisBackend;
    await loadData();
    const port = await freePort();
    gateway = NodeProcess.spawn('gateway/main.js', [], {
      PORT: String(port), REDIS_SHARD_URLS: urls.join(','), DEMO_SEED: 'false', DEMO_WRITER: 'false', LOG_LEVEL: 'warn',
      STORE_TIMEOUT_MS: String(STORE_TIMEOUT_MS), REQUEST_DEADLINE_MS: String(DEADLINE_MS),
      STORE_BREAKER_MIN_CALLS: '5', STORE_BREAKER_RESET_MS: '1000',
    });
    url = `http://127.0.0.1:${port}/graphql`;
    await waitUntilReady(url.replace('/graphql', '/readyz'), gateway);
    load = new Load(url, { users: USERS, workers: WORKERS });
  });

  after(async () => {
    await load?.stop();
    await gateway?.stop();
    await writer?.close();
    for (const s of shards) {
      if (s.pid) process.kill(s.pid, 'SIGCONT');
      await s.destroy();
    }
  });

  /**
   * Checks one reply against where each value lives: every value on a live
   * shard is there; every value on `dead` is null with an error at its path
   * naming `dead`; no other error. An entity whose every selected view is on
   * `dead` is itself null with the error (its existence is unknown).
   */
  function assertPartial(sample: Sample, dead: string | null, codes: readonly string[]): void {
    const { reply, ids, kind } = sample;
    const label = `${kind} ${JSON.stringify(ids)} (dead: ${dead}): ${reply.text}`;
    assert.equal(reply.status, 200, label);
    const views: [string, ViewVersion][] = kind === 'persisted' ? [['clickStats', clickStats]] : [['clickStats', clickStats], ['profile', profile]];
    const expected = new Set<string>();
    ids.forEach((id, k) => {
      const onDead = views.filter(([, v]) => shardOf(v, id) === dead);
      const entity = reply.json.data?.users?.[k];
      if (onDead.length === views.length) {
        assert.equal(entity, null, label);
        expected.add(JSON.stringify(['users', k]));
        return;
      }
      assert.equal(entity?.id, id, label);
      for (const [field, view] of views) {
        if (shardOf(view, id) === dead) {
          assert.equal(entity[field], null, label);
          expected.add(JSON.stringify(['users', k, field]));
        } else {
          assert.notEqual(entity[field], null, `${id}.${field} lives on a live shard: ${label}`);
        }
      }
    });
    const errors: { path: unknown[]; extensions: { code: string; shard?: string } }[] = reply.json.errors ?? [];
    assert.deepEqual(new Set(errors.map((e) => JSON.stringify(e.path))), expected, label);
    for (const e of errors) {
      assert.ok(codes.includes(e.extensions.code), label);
      assert.equal(e.extensions.shard, dead, label);
    }
  }

  const steady = (minSamples: number): Promise<Sample[]> => load.steady(minSamples);

  /** Waits until the last `n` replies were all complete: every value there, no error. */
  async function recovered(n: number): Promise<void> {
    await eventually(async () => {
      const recent = load.samples.slice(-n);
      if (recent.length < n) throw new Error(`only ${recent.length} replies`);
      for (const s of recent) assertPartial(s, null, []);
    }, 30_000, 200);
  }

  test('all shards up: every reply complete', async () => {
    const samples = await steady(100);
    for (const s of samples) assertPartial(s, null, []);
    assert.deepEqual(load.failures, []);
  });

  test('a shard killed (SIGKILL): the others keep serving, its fields fail naming it, its circuit opens, within the deadline', async () => {
    const victim = shards[1]!;
    const dead = `127.0.0.1:${victim.port}`;
    const killedAt = performance.now();
    await victim.kill();
    const samples = await steady(300);
    const seconds = (performance.now() - killedAt) / 1000;
    for (const s of samples) assertPartial(s, dead, ['STORE_UNAVAILABLE']);
    for (const s of samples) assert.ok(s.ms < DEADLINE_MS + SLACK_MS, `a request took ${Math.round(s.ms)} ms`);
    assert.ok(samples.some((s) => s.reply.json.errors), 'some requested values live on the dead shard');
    assert.ok(samples.some((s) => s.reply.json.errors?.some((e: { message: string }) => /circuit open/.test(e.message))), 'the open circuit answers some reads');
    assert.ok((await metric('feature_store_short_circuited_total', dead)) > 0, 'calls were short-circuited');
    await eventually(async () => assert.notEqual(await metric('feature_store_circuit_state', dead), 0, 'the circuit is not closed'));
    const ready = await get(url.replace('/graphql', '/readyz'));
    assert.equal(ready.status, 200, `one dead shard of three leaves the gateway serving (degraded): ${ready.text}`);
    assert.match(ready.json.checks.store, /degraded, 2 of 3 shards reachable/);
    assert.match(ready.json.checks[`store:${dead}`], /unavailable.*circuit (open|half-open)/);
    assert.deepEqual(load.failures, []);
    console.log(`# ${samples.length} replies in ${seconds.toFixed(1)} s with one shard dead (${Math.round(samples.length / seconds)} req/s)`);
  });

  test('the shard restarted on its port with its data: serving recovers without a gateway restart', async () => {
    const victim = shards[1]!;
    await victim.restart(); // same port, same --dir: it loads the snapshot taken before the kill
    await recovered(200);
    const ready = await get(url.replace('/graphql', '/readyz'));
    assert.equal(ready.status, 200);
    for (const s of shards) assert.match(ready.json.checks[`store:127.0.0.1:${s.port}`], /reachable, circuit closed/);
    assert.equal(await metric('feature_store_circuit_state', `127.0.0.1:${victim.port}`), 0);
  });

  test('a shard hung (SIGSTOP): its fields fail within the store timeout, then at once (circuit open); SIGCONT recovers', async () => {
    const victim = shards[2]!;
    const hung = `127.0.0.1:${victim.port}`;
    const shortCircuitedBefore = await metric('feature_store_short_circuited_total', hung);
    process.kill(victim.pid!, 'SIGSTOP');
    let samples: Sample[];
    try {
      samples = await steady(300);
    } finally {
      process.kill(victim.pid!, 'SIGCONT');
    }
    for (const s of samples) assertPartial(s, hung, ['STORE_UNAVAILABLE', 'DEADLINE_EXCEEDED']);
    for (const s of samples) assert.ok(s.ms < DEADLINE_MS + SLACK_MS, `a request took ${Math.round(s.ms)} ms`);
    assert.ok(samples.some((s) => s.reply.json.errors?.some((e: { message: string }) => /timed out|circuit open/i.test(e.message))), 'the hung shard timed out');
    assert.ok((await metric('feature_store_short_circuited_total', hung)) > shortCircuitedBefore, 'the hung shard\'s circuit opened');
    await recovered(200);
  });

  test('a request deadline shorter than the store timeout: the hung shard\'s fields fail with DEADLINE_EXCEEDED, the rest is served', async () => {
    // In-process gateway of its own: a store timeout far above the deadline, so only the deadline can end the wait.
    const slowStore = createStore({ kind: 'redis', urls: shards.map((s) => s.url), commandTimeoutMs: 10_000 });
    let inProcess: RunningGateway | undefined;
    const victim = shards[0]!;
    const hung = `127.0.0.1:${victim.port}`;
    try {
      await eventually(() => slowStore.ping());
      inProcess = await startTestGateway(slowStore, { REQUEST_DEADLINE_MS: String(SHORT_DEADLINE_MS) });
      const ids = Array.from({ length: 40 }, (_, i) => String(i + 1));
      assert.ok(ids.some((id) => shardOf(clickStats, id) === hung) && ids.some((id) => shardOf(clickStats, id) !== hung));
      process.kill(victim.pid!, 'SIGSTOP');
      try {
        for (const kind of ['persisted', 'adhoc'] as const) {
          const body = kind === 'persisted'
            ? { extensions: { persistedQuery: { version: 1, sha256Hash: persistedId } }, variables: { ids } }
            : { query: adhocQuery, variables: { ids } };
          const startedAt = performance.now();
          const reply = await post(inProcess.url, body);
          const ms = performance.now() - startedAt;
          assert.ok(ms < SHORT_DEADLINE_MS + SLACK_MS, `answered after ${Math.round(ms)} ms`);
          assertPartial({ startedAt, ms, kind, ids, reply }, hung, ['DEADLINE_EXCEEDED']);
          assert.ok(reply.json.errors.length > 0, reply.text);
          assert.equal(reply.json.errors[0].extensions.deadlineMs, SHORT_DEADLINE_MS);
        }
      } finally {
        process.kill(victim.pid!, 'SIGCONT');
      }
    } finally {
      await inProcess?.close();
      await slowStore.close();
    }
    await recovered(100);
  });
});
