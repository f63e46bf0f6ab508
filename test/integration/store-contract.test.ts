import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseRegistry } from '../../schema/registry.js';
import { activeVersionOf, type ViewVersion } from '../../schema/types.js';
import { EmbeddedBackend } from '../../store/backends/embedded.js';
import { RedisBackend } from '../../store/backends/redis.js';
import { CodecError } from '../../store/codec.js';
import { CodecStore } from '../../store/codec-store.js';
import { storeKey } from '../../store/keys.js';
import { CorruptValueError, DeadlineExceededError, StoreUnavailableError } from '../../store/online-store.js';
import { Deadline } from '../../runtime/deadline.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * One contract, every adapter: the embedded store must behave exactly like
 * Redis and sharded Redis (ARCHITECTURE.md, decision 8).
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

interface Adapter {
  readonly name: string;
  readonly redis: RedisProcess[];
  open(): Promise<CodecStore>;
}

const adapters: Adapter[] = [
  { name: 'embedded', redis: [], open: async () => new CodecStore(new EmbeddedBackend()) },
  { name: 'redis', redis: [], open: async () => new CodecStore(new RedisBackend({ urls: adapters[1]!.redis.map((r) => r.url), commandTimeoutMs: 500, breaker })) },
  { name: 'sharded-redis (3 nodes)', redis: [], open: async () => new CodecStore(new RedisBackend({ urls: adapters[2]!.redis.map((r) => r.url), commandTimeoutMs: 500, breaker })) },
];

for (const adapter of adapters) {
  describe(`OnlineStore contract: ${adapter.name}`, () => {
    let store: CodecStore;

    before(async () => {
      const nodes = adapter.name === 'redis' ? 1 : adapter.name.startsWith('sharded') ? 3 : 0;
      for (let i = 0; i < nodes; i++) (adapter.redis as RedisProcess[]).push(await RedisProcess.start());
      store = await adapter.open();
      await eventually(() => store.ping(), 10_000, 50);
    });

    after(async () => {
      await store.close();
      for (const r of adapter.redis) await r.destroy();
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
      if (store.backend instanceof RedisBackend && adapter.redis.length > 1) {
        const perShard = new Map<string, number>();
        for (const id of ids) {
          const shard = store.backend.shardOf(storeKey(v1, id));
          perShard.set(shard, (perShard.get(shard) ?? 0) + 1);
        }
        assert.equal(perShard.size, 3, 'every shard holds part of the batch');
        for (const n of perShard.values()) assert.ok(n > 150, `a shard holds only ${n} of 1000 keys`);
      }
    });

    test('ids with unicode, spaces, colons and braces are kept apart', async () => {
      const now = Date.now();
      const ids = ['ü:1', 'a b', '{tag}', ':', ''];
      await store.write(v1, ids.map((id, i) => ({ entityId: id, values: { rate: i }, eventTimeMs: now })));
      assert.deepEqual((await store.read(v1, ids)).map((v) => v?.values.rate), [0, 1, 2, 3, 4]);
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
      await store.backend.setMany([{ key: storeKey(v2, 'corrupt'), value: Buffer.from([1, 0, 5]), expireAtMs: Date.now() + 60_000 }]);
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

    if (adapter.name !== 'embedded') {
      test('a stopped node fails reads at once with the shard named, and reads recover when it returns', async () => {
        const victim = adapter.redis[0]!;
        const now = Date.now();
        await store.write(v1, [{ entityId: 'survivor', values: { rate: 9 }, eventTimeMs: now }]);
        await victim.stop();
        const ids = Array.from({ length: 50 }, (_, i) => `bulk-${i}`);
        const victimName = `127.0.0.1:${victim.port}`;
        await assert.rejects(store.read(v1, ids), (e: unknown) => e instanceof StoreUnavailableError && e.shard === victimName);
        await assert.rejects(store.ping(), StoreUnavailableError);
        // Per id: the keys on the stopped node fail naming it; the others are read as usual.
        const backend = store.backend as RedisBackend;
        const settled = await store.readSettled(v1, ids);
        settled.forEach((r, i) => {
          const onVictim = backend.shardOf(storeKey(v1, ids[i]!)) === victimName;
          if (onVictim) assert.ok(r instanceof StoreUnavailableError && r.shard === victimName, `${ids[i]}: ${String(r)}`);
          else assert.equal(r !== null && !(r instanceof Error) ? r.values.rate : r, i, `${ids[i]} lives on a running node`);
        });
        if (adapter.redis.length > 1) assert.ok(settled.some((r) => !(r instanceof Error)), 'some ids live on running nodes');
        // Repeated failures open the victim's circuit: its reads then fail at once, saying so.
        const opened = await eventually(async () => {
          const [r] = await store.readSettled(v1, [ids.find((id) => backend.shardOf(storeKey(v1, id)) === victimName)!]);
          if (!(r instanceof StoreUnavailableError && /circuit open/.test(r.reason))) throw new Error(`not short-circuited yet: ${String(r)}`);
          return r;
        }, 10_000, 20);
        assert.equal(opened.shard, victimName);
        assert.match((await store.health()).find((h) => h.shard === victimName)!.detail, /unavailable.*circuit (open|half-open)/);
        await victim.restart();
        await eventually(() => store.ping(), 10_000, 50);
        // The circuit is probed after resetMs and closes once a probe answers.
        await eventually(async () => {
          const values = await store.readSettled(v1, ['survivor', ...ids]);
          const failed = values.find((v) => v === null || v instanceof Error);
          if (failed !== undefined) throw new Error(String(failed));
        }, 10_000, 50);
        assert.equal((await store.read(v1, ['survivor']))[0]?.values.rate, 9);
        for (const h of await store.health()) assert.match(h.detail, /reachable, circuit closed/, h.shard);
      });
    }
  });
}
