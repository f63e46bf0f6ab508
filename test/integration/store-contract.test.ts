import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseRegistry } from '../../schema/registry.js';
import { activeVersionOf, type ViewVersion } from '../../schema/types.js';
import { EmbeddedBackend } from '../../store/backends/embedded.js';
import { recordKey, type RecordKey } from '../../store/backends/byte-backend.js';
import { RedisClusterBackend } from '../../store/backends/redis-cluster.js';
import { RedisBackend } from '../../store/backends/redis.js';
import { CodecError } from '../../store/codec.js';
import { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { CorruptValueError, DeadlineExceededError, StoreUnavailableError } from '../../store/online-store.js';
import { Deadline } from '../../runtime/deadline.js';
import { aerospikeSkip } from '../support/aerospike.js';
import { RedisCluster } from '../support/redis-cluster.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * One contract, every engine: the embedded store, one Redis node, three
 * hash-ring shards, a six-node Redis Cluster and (with AEROSPIKE_HOSTS) an
 * Aerospike server behave alike (ARCHITECTURE.md, decision 8), faults
 * included: the fault test stops a node of each networked engine.
 */
const registry = parseRegistry(
  `
entities:
  - { name: user, type: User, key: id, description: A user. }
views:
  - name: stats
    entity: user
    description: Test view.
    owner: test
    ttl: 60s
    versions:
      - version: 1
        features: [{ name: rate, type: Float }]
      - version: 2
        features:
          - { name: rate, type: Float }
          - { name: count, type: Int }
          - { name: tags, type: "[String!]" }
  - name: blink
    entity: user
    description: A view with a one-second TTL, to watch the store expire values.
    owner: test
    ttl: 1s
    versions:
      - version: 1
        features: [{ name: on, type: Boolean }]
`,
  'contract-registry.yaml',
);
const statsView = registry.entities[0]!.views[0]!;
const v1: ViewVersion = statsView.versions[0]!;
const v2: ViewVersion = statsView.versions[1]!;
const blink: ViewVersion = activeVersionOf(registry.entities[0]!.views[1]!);

/** A breaker that opens after a few failures and probes soon, so the test sees it open and close. */
const breaker = { errorPercent: 50, minCalls: 3, resetMs: 300 };

/** How an adapter's shard fails in the fault test, and what recovery looks like. */
type Fault =
  /** A stopped node's keys fail until it is restarted. */
  | 'restart'
  /** A killed master's keys fail until its replica is promoted; the killed node then rejoins as a replica. */
  | 'failover';

interface Adapter {
  readonly name: string;
  /** Starts what the adapter needs and opens a store on it. */
  open(): Promise<CodecStore>;
  /** Which shard holds a record, where the adapter has more than one. */
  shardOf?(store: CodecStore, record: RecordKey): string;
  readonly fault?: Fault;
  /** The process behind `shard`, for the fault test. */
  process?(shard: string): RedisProcess;
  /** Waits until the adapter's servers are whole again after the fault test. */
  healed?(): Promise<void>;
  destroy(): Promise<void>;
  readonly skip?: string;
}

function redisAdapter(name: string, nodes: number): Adapter {
  const processes: RedisProcess[] = [];
  return {
    name,
    fault: 'restart',
    async open() {
      for (let i = 0; i < nodes; i++) processes.push(await RedisProcess.start());
      return new CodecStore(new RedisBackend({ urls: processes.map((r) => r.url), commandTimeoutMs: 500, breaker }));
    },
    ...(nodes > 1 ? { shardOf: (store: CodecStore, record: RecordKey) => (store.backend as RedisBackend).shardOf(record) } : {}),
    // A single node is every record's shard.
    process: (shard) => processes.find((p) => p.address === shard) ?? processes[0]!,
    async destroy() {
      for (const r of processes) await r.destroy();
    },
  };
}

function clusterAdapter(): Adapter {
  let cluster: RedisCluster | undefined;
  return {
    name: 'redis-cluster (3 masters, 3 replicas)',
    fault: 'failover',
    async open() {
      cluster = await RedisCluster.start({ masters: 3, replicasPerMaster: 1 });
      return new CodecStore(new RedisClusterBackend({ nodes: cluster.seeds.split(','), commandTimeoutMs: 500, breaker, slotsRefreshIntervalMs: 500 }));
    },
    shardOf: (store, record) => (store.backend as RedisClusterBackend).shardOf(record),
    process: (shard) => cluster!.node(shard),
    healed: () => cluster!.waitHealthy(),
    async destroy() {
      await cluster?.destroy();
    },
  };
}

function aerospikeAdapter(): Adapter {
  const hosts = process.env.AEROSPIKE_HOSTS;
  const namespace = process.env.AEROSPIKE_NAMESPACE ?? 'test';
  const set = `contract_${process.pid}`;
  return {
    name: `aerospike (${hosts ?? 'no server'})`,
    ...(hosts ? {} : { skip: aerospikeSkip }),
    async open() {
      return createStore({ kind: 'aerospike', hosts: hosts!.split(','), namespace, set, commandTimeoutMs: 1000, breaker });
    },
    async destroy() {},
  };
}

const adapters: Adapter[] = [
  { name: 'embedded', open: async () => new CodecStore(new EmbeddedBackend()), destroy: async () => {} },
  redisAdapter('redis', 1),
  redisAdapter('sharded-redis (3 nodes)', 3),
  clusterAdapter(),
  aerospikeAdapter(),
];

for (const adapter of adapters) {
  if (adapter.skip) {
    // A test, not a skipped suite, so that the run's totals count it as skipped.
    test(`OnlineStore contract: ${adapter.name}`, { skip: adapter.skip }, () => {});
    continue;
  }
  describe(`OnlineStore contract: ${adapter.name}`, () => {
    let store: CodecStore;

    before(async () => {
      store = await adapter.open();
      await eventually(() => store.ping(), 15_000, 50);
    });

    after(async () => {
      await store?.close();
      await adapter.destroy();
    });

    test('reads back what was written, in the order of the ids, null where nothing is stored', async () => {
      const now = Date.now();
      await store.write(v2, [
        { entityId: 'a', values: { rate: 0.5, count: 3, tags: ['x', 'y'] }, eventTimeMs: now },
        { entityId: 'b', values: { rate: null, count: -7, tags: [] }, eventTimeMs: now - 1000 },
      ]);
      const [b, missing, a] = await store.read(v2, ['b', 'missing', 'a']);
      assert.deepEqual(a, { values: { rate: 0.5, count: 3, tags: ['x', 'y'] }, eventTimeMs: now, stale: false });
      assert.deepEqual(b, { values: { rate: null, count: -7, tags: [] }, eventTimeMs: now - 1000, stale: false });
      assert.equal(missing, null);
    });

    test('an empty batch reads nothing', async () => {
      assert.deepEqual(await store.read(v2, []), []);
      await store.write(v2, []);
    });

    test('versions of one view are separate values', async () => {
      const now = Date.now();
      await store.write(v1, [{ entityId: 'ver', values: { rate: 0.1 }, eventTimeMs: now }]);
      await store.write(v2, [{ entityId: 'ver', values: { rate: 0.2, count: 1, tags: null }, eventTimeMs: now }]);
      assert.deepEqual((await store.read(v1, ['ver']))[0]?.values, { rate: 0.1 });
      assert.deepEqual((await store.read(v2, ['ver']))[0]?.values, { rate: 0.2, count: 1, tags: null });
    });

    test('a later write replaces the value', async () => {
      const now = Date.now();
      await store.write(v1, [{ entityId: 'over', values: { rate: 1 }, eventTimeMs: now - 10 }]);
      await store.write(v1, [{ entityId: 'over', values: { rate: 2 }, eventTimeMs: now }]);
      assert.deepEqual((await store.read(v1, ['over']))[0], { values: { rate: 2 }, eventTimeMs: now, stale: false });
    });

    test('a value older than its TTL reads as stale, with its event time, before the store expires it', async () => {
      const eventTimeMs = Date.now() - 90_000; // TTL 60 s; the store keeps it until 120 s
      await store.write(v1, [{ entityId: 'old', values: { rate: 0.3 }, eventTimeMs }]);
      const [old] = await store.read(v1, ['old']);
      assert.equal(old?.stale, true);
      assert.equal(old?.eventTimeMs, eventTimeMs);
    });

    test('a value already past retention is not stored at all', async () => {
      await store.write(v1, [{ entityId: 'ancient', values: { rate: 0.3 }, eventTimeMs: Date.now() - 10 * 60_000 }]);
      assert.deepEqual(await store.read(v1, ['ancient']), [null]);
    });

    test('the store itself expires values (TTL applied at write)', async () => {
      await store.write(blink, [{ entityId: 'blink', values: { on: true }, eventTimeMs: Date.now() }]);
      assert.equal((await store.read(blink, ['blink']))[0]?.stale, false);
      // TTL 1 s + 1 s stale retention: gone after 2 s without any further write.
      await new Promise((r) => setTimeout(r, 2300));
      assert.deepEqual(await store.read(blink, ['blink']), [null]);
    });

    test('a batch of 1000 ids keeps its order (across shards where sharded)', async () => {
      const now = Date.now();
      const ids = Array.from({ length: 1000 }, (_, i) => `bulk-${i}`);
      await store.write(v1, ids.map((id, i) => ({ entityId: id, values: { rate: i }, eventTimeMs: now })));
      const shuffled = [...ids].reverse();
      const values = await store.read(v1, shuffled);
      assert.deepEqual(values.map((v) => v?.values.rate), shuffled.map((id) => Number(id.slice(5))));
      if (adapter.shardOf) {
        const perShard = new Map<string, number>();
        for (const id of ids) {
          const shard = adapter.shardOf(store, recordKey(v1, id));
          perShard.set(shard, (perShard.get(shard) ?? 0) + 1);
        }
        assert.equal(perShard.size, 3, 'every shard holds part of the batch');
        for (const n of perShard.values()) assert.ok(n > 150, `a shard holds only ${n} of 1000 keys`);
      }
    });

    test('ids with unicode, spaces, colons and braces are kept apart', async () => {
      const now = Date.now();
      const ids = ['ü:1', 'a b', '{tag}', ':', '', 'a}b', '}{', '{'];
      await store.write(v1, ids.map((id, i) => ({ entityId: id, values: { rate: i }, eventTimeMs: now })));
      assert.deepEqual((await store.read(v1, ids)).map((v) => v?.values.rate), ids.map((_, i) => i));
    });

    test('a write with a value of the wrong type is refused whole, naming the feature', async () => {
      const now = Date.now();
      await assert.rejects(
        store.write(v2, [
          { entityId: 'typed-ok', values: { rate: 1, count: 1, tags: null }, eventTimeMs: now },
          { entityId: 'typed-bad', values: { rate: 1, count: 1.5, tags: null }, eventTimeMs: now },
        ]),
        (e: unknown) => e instanceof CodecError && /count/.test(e.message),
      );
      assert.deepEqual(await store.read(v2, ['typed-ok', 'typed-bad']), [null, null]);
    });

    test('a stored value that does not decode is reported as corrupt, naming the key, and fails only its own id', async () => {
      await store.backend.setMany([{ record: recordKey(v2, 'corrupt'), value: Buffer.from([1, 0, 5]), expireAtMs: Date.now() + 60_000 }]);
      await store.write(v2, [{ entityId: 'sound', values: { rate: 1, count: 1, tags: null }, eventTimeMs: Date.now() }]);
      await assert.rejects(store.read(v2, ['corrupt']), (e: unknown) => e instanceof CorruptValueError && e.key === 'fv:stats:v2:corrupt');
      const [corrupt, sound, missing] = await store.readSettled(v2, ['corrupt', 'sound', 'nothing-here']);
      assert.ok(corrupt instanceof CorruptValueError && corrupt.key === 'fv:stats:v2:corrupt', String(corrupt));
      assert.deepEqual(sound && !(sound instanceof Error) ? sound.values : sound, { rate: 1, count: 1, tags: null });
      assert.equal(missing, null);
    });

    test('a read whose deadline has passed reads nothing and answers DeadlineExceededError per id', async () => {
      await store.write(v1, [{ entityId: 'late', values: { rate: 1 }, eventTimeMs: Date.now() }]);
      const deadline = Deadline.after(0);
      await new Promise((r) => setTimeout(r, 5));
      const results = await store.readSettled(v1, ['late', 'bulk-1', 'bulk-2'], { deadline });
      assert.equal(results.length, 3);
      for (const r of results) assert.ok(r instanceof DeadlineExceededError && r.budgetMs === 0, String(r));
      assert.equal((await store.readSettled(v1, ['late'], { deadline: Deadline.after(5000) }))[0] instanceof Error, false, 'a live deadline reads');
    });

    test('ping answers', async () => {
      await store.ping();
    });

    test('compare-and-set: the first write of a record expects version 0 and writes state and value together', async () => {
      const now = Date.now();
      const value = { values: { rate: 0.5 }, eventTimeMs: now, position: { partition: 0, offset: 1 } };
      assert.deepEqual(await store.readStates(v1, ['cas-new']), [null]);
      assert.deepEqual(await store.writeMaterialized(v1, [{ entityId: 'cas-new', expectedVersion: 0, state: '{"w":1}', stateExpireAtMs: now + 60_000, value }]), [true]);
      const [state] = await store.readStates(v1, ['cas-new']);
      assert.deepEqual(state, { version: 1, state: '{"w":1}' });
      assert.deepEqual((await store.read(v1, ['cas-new']))[0]?.values, { rate: 0.5 });
    });

    test('compare-and-set: a stale expected version writes nothing and answers false; the current one wins', async () => {
      const now = Date.now();
      const write = (expectedVersion: number, rate: number, state: string) => store.writeMaterialized(v1, [{
        entityId: 'cas-race', expectedVersion, state, stateExpireAtMs: now + 60_000,
        value: { values: { rate }, eventTimeMs: now, position: { partition: 0, offset: rate } },
      }]);
      assert.deepEqual(await write(0, 1, 'first'), [true]);
      // Two writers that both read version 1: exactly one of them wins.
      const results = await Promise.all([write(1, 2, 'second-a'), write(1, 3, 'second-b')]);
      assert.deepEqual(results.filter(([ok]) => ok).length, 1, JSON.stringify(results));
      const winner = results[0]![0] ? { rate: 2, state: 'second-a' } : { rate: 3, state: 'second-b' };
      assert.deepEqual(await write(1, 9, 'too-late'), [false]);
      assert.deepEqual(await store.readStates(v1, ['cas-race']), [{ version: 2, state: winner.state }]);
      assert.deepEqual((await store.read(v1, ['cas-race']))[0]?.values, { rate: winner.rate });
    });

    test('compare-and-set: a state-only write keeps the value; a batch answers per entry, in order, across shards', async () => {
      const now = Date.now();
      const ids = Array.from({ length: 60 }, (_, i) => `cas-batch-${i}`);
      const first = await store.writeMaterialized(v1, ids.map((entityId, i) => ({
        entityId, expectedVersion: 0, state: `s${i}`, stateExpireAtMs: now + 60_000,
        value: { values: { rate: i }, eventTimeMs: now, position: { partition: 0, offset: i } },
      })));
      assert.deepEqual(first, ids.map(() => true));
      // Every other entry expects a version it does not have.
      const second = await store.writeMaterialized(v1, ids.map((entityId, i) => ({
        entityId, expectedVersion: i % 2 === 0 ? 1 : 7, state: `t${i}`, stateExpireAtMs: now + 60_000, value: null,
      })));
      assert.deepEqual(second, ids.map((_, i) => i % 2 === 0));
      const states = await store.readStates(v1, ids);
      states.forEach((s, i) => assert.deepEqual(s, i % 2 === 0 ? { version: 2, state: `t${i}` } : { version: 1, state: `s${i}` }, ids[i]));
      assert.deepEqual((await store.read(v1, ids)).map((v) => v?.values.rate), ids.map((_, i) => i), 'state-only writes keep the values');
      if (adapter.shardOf) assert.equal(new Set(ids.map((id) => adapter.shardOf!(store, recordKey(v1, id)))).size, 3, 'the batch spans every shard');
    });

    test('compare-and-set: the state expires at its own time, the value at its own', async () => {
      const now = Date.now();
      await store.writeMaterialized(blink, [{ entityId: 'cas-blink', expectedVersion: 0, state: 'short', stateExpireAtMs: now + 1000,
        value: { values: { on: true }, eventTimeMs: now, position: { partition: 0, offset: 1 } } }]);
      await store.writeMaterialized(v1, [{ entityId: 'cas-keep', expectedVersion: 0, state: 'short', stateExpireAtMs: now + 1000,
        value: { values: { rate: 1 }, eventTimeMs: now, position: { partition: 0, offset: 1 } } }]);
      await new Promise((r) => setTimeout(r, 1300));
      assert.deepEqual(await store.readStates(v1, ['cas-keep']), [null], 'the state is gone after its expiry');
      assert.equal((await store.read(v1, ['cas-keep']))[0]?.values.rate, 1, 'the value outlives its state');
      // A state gone means version 0 again.
      assert.deepEqual(await store.writeMaterialized(v1, [{ entityId: 'cas-keep', expectedVersion: 0, state: 'again', stateExpireAtMs: now + 60_000, value: null }]), [true]);
      await new Promise((r) => setTimeout(r, 1000));
      assert.deepEqual(await store.read(blink, ['cas-blink']), [null], 'the value expires at eventTime + TTL + stale retention');
      assert.deepEqual(await store.readStates(v1, ['cas-keep']), [{ version: 1, state: 'again' }]);
    });

    test('a write that is not newer is still a plain replace (the offset guard is the materializer\'s, above the store)', async () => {
      const now = Date.now();
      await store.write(v1, [{ entityId: 'replace', values: { rate: 2 }, eventTimeMs: now }]);
      await store.write(v1, [{ entityId: 'replace', values: { rate: 1 }, eventTimeMs: now - 5000 }]);
      assert.deepEqual((await store.read(v1, ['replace']))[0], { values: { rate: 1 }, eventTimeMs: now - 5000, stale: false });
    });

    if (adapter.fault) {
      test(`a failed node's records fail at once naming it, the others are served, and reads recover (${adapter.fault})`, async () => {
        const now = Date.now();
        const ids = Array.from({ length: 60 }, (_, i) => `fault-${i}`);
        await store.write(v1, ids.map((id, i) => ({ entityId: id, values: { rate: i }, eventTimeMs: now })));
        await store.write(v1, [{ entityId: 'survivor', values: { rate: 9 }, eventTimeMs: now }]);
        // One node fails: the one holding the first record (the only node of a single Redis).
        const victim = adapter.shardOf ? adapter.process!(adapter.shardOf(store, recordKey(v1, ids[0]!))) : adapter.process!('');
        const onVictim = ids.filter((id) => !adapter.shardOf || adapter.shardOf(store, recordKey(v1, id)) === victim.address);
        if (adapter.fault === 'failover') {
          await adapter.healed!(); // the replicas hold every value before the kill
          await victim.kill();
        } else {
          await victim.stop();
        }
        await assert.rejects(store.read(v1, ids), (e: unknown) => e instanceof StoreUnavailableError && e.shard === victim.address);
        await assert.rejects(store.ping(), StoreUnavailableError);
        // Per id: the records on the failed node fail naming it; the others are read as usual.
        const settled = await store.readSettled(v1, ids);
        settled.forEach((r, i) => {
          if (onVictim.includes(ids[i]!)) assert.ok(r instanceof StoreUnavailableError && r.shard === victim.address, `${ids[i]}: ${String(r)}`);
          else assert.equal(r !== null && !(r instanceof Error) ? r.values.rate : r, i, `${ids[i]} lives on a running node`);
        });
        if (adapter.shardOf) assert.ok(settled.some((r) => !(r instanceof Error)), 'some ids live on running nodes');
        if (adapter.fault === 'restart') {
          // Repeated failures open the victim's circuit: its reads then fail at once, saying so.
          const opened = await eventually(async () => {
            const [r] = await store.readSettled(v1, [onVictim[0]!]);
            if (!(r instanceof StoreUnavailableError && /circuit open/.test(r.reason))) throw new Error(`not short-circuited yet: ${String(r)}`);
            return r;
          }, 10_000, 20);
          assert.equal(opened.shard, victim.address);
          assert.match((await store.health()).find((h) => h.shard === victim.address)!.detail, /unavailable.*circuit (open|half-open)/);
          await victim.restart();
        }
        // The circuit is probed after resetMs and closes once a probe answers; on a cluster the records
        // are read from the promoted replica, found by a refresh of the slot map, before the node returns.
        await eventually(async () => {
          const values = await store.readSettled(v1, ['survivor', ...ids]);
          const failed = values.find((v) => v === null || v instanceof Error);
          if (failed !== undefined) throw new Error(String(failed));
        }, 30_000, 50);
        assert.deepEqual((await store.read(v1, ids)).map((v) => v?.values.rate), ids.map((_, i) => i), 'every value reads back unchanged');
        if (adapter.fault === 'failover') {
          assert.notEqual(adapter.shardOf!(store, recordKey(v1, ids[0]!)), victim.address, 'a promoted replica serves the failed master\'s slots');
          await victim.restart(); // it rejoins as a replica of its successor
          await adapter.healed!();
        }
        await eventually(async () => {
          for (const h of await store.health()) assert.match(h.detail, /reachable.*circuit closed/, h.shard);
        }, 15_000, 100);
      });
    }
  });
}
