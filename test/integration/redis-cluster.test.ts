import assert from 'node:assert/strict';
import calculateSlot from 'cluster-key-slot';
import { after, before, describe, test } from 'node:test';
import type { ViewVersion } from '../../schema/types.js';
import { activeVersionOf } from '../../schema/types.js';
import { recordKey } from '../../store/backends/byte-backend.js';
import { RedisClusterBackend } from '../../store/backends/redis-cluster.js';
import { CodecStore } from '../../store/codec-store.js';
import { demoRows } from '../../store/demo-data.js';
import { clusterKey } from '../../store/keys.js';
import { writeRows } from '../../store/rows.js';
import { NodeProcess, registry, waitUntilReady } from '../support/gateway.js';
import { get } from '../support/http.js';
import { Load, type Sample } from '../support/load.js';
import { bulk, RedisCluster, serves, type ClusterNodeInfo } from '../support/redis-cluster.js';
import { freePort } from '../support/ports.js';
import { type RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * The Redis Cluster engine on a real six-node cluster (three masters, three
 * replicas): how many round trips a batch costs, counted by the nodes
 * themselves; redirections of a slot migrated by hand (ASK, TRYAGAIN, MOVED);
 * and a master killed (SIGKILL) under a gateway process serving continuous
 * load, then restarted. Time bounds are liveness bounds for a shared 2-core
 * machine, not benchmarks.
 */
const USERS = 300;
const user = registry.entities.find((e) => e.name === 'user')!;
const clickStats: ViewVersion = activeVersionOf(user.views.find((v) => v.name === 'clickStats')!);
const profile: ViewVersion = activeVersionOf(user.views.find((v) => v.name === 'profile')!);

/** `INFO stats`, `commandstats` and `errorstats` of one node in one command (so one read event). */
async function nodeStats(node: RedisProcess): Promise<{ reads: number; calls: Record<string, number>; errors: Record<string, number> }> {
  const info = bulk(await node.command('INFO stats commandstats errorstats'));
  const calls: Record<string, number> = {};
  for (const m of info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)) calls[m[1]!] = Number(m[2]);
  const errors: Record<string, number> = {};
  for (const m of info.matchAll(/errorstat_(\w+):count=(\d+)/g)) errors[m[1]!] = Number(m[2]);
  return { reads: Number(/total_reads_processed:(\d+)/.exec(info)![1]), calls, errors };
}

describe('Redis Cluster engine', () => {
  let cluster: RedisCluster;
  let store: CodecStore;

  before(async () => {
    cluster = await RedisCluster.start({ masters: 3, replicasPerMaster: 1 });
    // No refresh on a timer: the counts below see only this test's own commands.
    store = new CodecStore(new RedisClusterBackend({ nodes: cluster.seeds.split(','), commandTimeoutMs: 2000, slotsRefreshIntervalMs: 3_600_000 }));
    await eventually(() => store.ping(), 15_000, 50);
  });

  after(async () => {
    await store?.close();
    await cluster?.destroy();
  });

  /**
   * Runs `op` and asserts, per master, from its own counters: `command` was
   * called once per key whose slot it serves (the server's own slot map and
   * CRC16), and the batch reached it in exactly one read event (one
   * pipelined round trip), or none if it serves none of the keys. Replicas'
   * REPLCONF ACKs and the two INFO connections are the only other reads a
   * master sees (the client refreshes its slot map on no timer here).
   */
  async function countedPerMaster(keys: readonly string[], command: string, op: () => Promise<unknown>): Promise<Map<string, number>> {
    const masters = await cluster.masters();
    const owned = new Map<string, number>(masters.map((m) => [m.address, 0]));
    for (const key of keys) {
      const slot = Number(/^:(\d+)/.exec(await cluster.nodes[0]!.command(`CLUSTER KEYSLOT ${key}`))![1]);
      assert.equal(slot, calculateSlot(key), `the client's slot of ${key} is the server's`);
      const owner = masters.find((m) => serves(m, slot))!;
      owned.set(owner.address, owned.get(owner.address)! + 1);
    }
    const before = await Promise.all(masters.map((m) => nodeStats(cluster.node(m.address))));
    await op();
    const after = await Promise.all(masters.map((m) => nodeStats(cluster.node(m.address))));
    masters.forEach((m, i) => {
      const b = before[i]!;
      const a = after[i]!;
      const calls = (a.calls[command] ?? 0) - (b.calls[command] ?? 0);
      const replication = (a.calls.replconf ?? 0) - (b.calls.replconf ?? 0);
      // The first INFO's connection ends in one more read event (its close), the last INFO is one.
      const roundTrips = a.reads - b.reads - replication - 2;
      assert.equal(calls, owned.get(m.address), `${m.address}: ${command} calls`);
      assert.equal(roundTrips, owned.get(m.address)! > 0 ? 1 : 0, `${m.address}: round trips (reads ${a.reads - b.reads}, replconf ${replication})`);
      // No slot-map refresh (its own connection: more reads), no redirection, nothing else.
      for (const other of ['mget', 'asking', 'cluster']) assert.equal((a.calls[other] ?? 0) - (b.calls[other] ?? 0), 0, `${m.address}: no ${other}`);
    });
    return owned;
  }

  test('a batch read of one view is one pipelined round trip per master that owns any of its slots, counted by the nodes', async () => {
    const ids = Array.from({ length: 200 }, (_, i) => `rt-${i}`);
    const now = Date.now();
    await store.write(clickStats, ids.map((id, i) => ({ entityId: id, values: { clickRate: i / 1000, clicks: i, impressions: 1000 }, eventTimeMs: now })));
    const keys = ids.map((id) => clusterKey(recordKey(clickStats, id), 'value'));
    let values: Awaited<ReturnType<CodecStore['read']>> = [];
    const owned = await countedPerMaster(keys, 'get', async () => {
      values = await store.read(clickStats, ids);
    });
    assert.equal(owned.size, 3);
    for (const n of owned.values()) assert.ok(n > 30, `each master owns part of the batch: ${[...owned.values()]}`);
    assert.deepEqual(values.map((v) => v?.values.clicks), ids.map((_, i) => i));

    // A small batch touches only the masters that own its keys.
    const few = ids.slice(0, 2);
    const fewOwned = await countedPerMaster(few.map((id) => clusterKey(recordKey(clickStats, id), 'value')), 'get', () => store.read(clickStats, few));
    assert.equal([...fewOwned.values()].reduce((a, b) => a + b, 0), 2);

    // The materializer's state reads and writes batch the same way.
    await countedPerMaster(ids.map((id) => clusterKey(recordKey(clickStats, id), 'state')), 'get', () => store.readStates(clickStats, ids));
    await countedPerMaster(keys, 'set', () => store.write(clickStats, ids.map((id) => ({ entityId: id, values: { clickRate: 0, clicks: 0, impressions: 1 }, eventTimeMs: now }))));
  });

  test('a value and its state share a slot whatever the id holds, so the compare-and-set script runs on one node', async () => {
    for (const id of ['1', '', '}', '{', 'a}b', '{x}', 'ü', 'x'.repeat(300)]) {
      const record = recordKey(clickStats, id);
      assert.equal(calculateSlot(clusterKey(record, 'value')), calculateSlot(clusterKey(record, 'state')), JSON.stringify(id));
      const now = Date.now();
      assert.deepEqual(await store.writeMaterialized(clickStats, [{ entityId: id, expectedVersion: 0, state: 's', stateExpireAtMs: now + 60_000,
        value: { values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: now, position: { partition: 0, offset: 0 } } }]), [true], JSON.stringify(id));
    }
  });

  test('a slot migrated by hand: ASK while it moves, TRYAGAIN for a record split across nodes, MOVED after; nothing fails', async () => {
    // Records whose keys all hash to one slot, found by search: the slot the first id's record lands in.
    const slot = calculateSlot(clusterKey(recordKey(clickStats, 'mig-0'), 'value'));
    const ids: string[] = ['mig-0'];
    for (let i = 1; ids.length < 4; i++) if (calculateSlot(clusterKey(recordKey(clickStats, `mig-${i}`), 'value')) === slot) ids.push(`mig-${i}`);
    const now = Date.now();
    const value = (clicks: number) => ({ values: { clickRate: clicks / 10, clicks, impressions: 10 }, eventTimeMs: now, position: { partition: 0, offset: clicks } });
    assert.deepEqual(await store.writeMaterialized(clickStats, ids.map((entityId, i) => ({ entityId, expectedVersion: 0, state: `s${i}`, stateExpireAtMs: now + 600_000, value: value(i) }))), [true, true, true, true]);
    const masters = await cluster.masters();
    const source = masters.find((m) => serves(m, slot))!;
    const target = masters.find((m) => m !== source)!;
    const sourceNode = cluster.node(source.address);
    const targetNode = cluster.node(target.address);
    const ok = (reply: string) => assert.match(reply, /^\+OK/, reply);
    ok(await targetNode.command(`CLUSTER SETSLOT ${slot} IMPORTING ${source.id}`));
    ok(await sourceNode.command(`CLUSTER SETSLOT ${slot} MIGRATING ${target.id}`));
    const migrate = async (key: string) => ok(await sourceNode.command(`MIGRATE 127.0.0.1 ${targetNode.port} "" 0 5000 KEYS ${key}`));
    // mig-0 entirely on the target, mig-1's value only (its state stays behind): ASK for the moved keys.
    await migrate(clusterKey(recordKey(clickStats, ids[0]!), 'value'));
    await migrate(clusterKey(recordKey(clickStats, ids[0]!), 'state'));
    await migrate(clusterKey(recordKey(clickStats, ids[1]!), 'value'));
    const targetBefore = await nodeStats(targetNode);
    const sourceBefore = await nodeStats(sourceNode);
    const answered = async (error: string): Promise<number> => ((await nodeStats(sourceNode)).errors[error] ?? 0) - (sourceBefore.errors[error] ?? 0);
    assert.deepEqual((await store.read(clickStats, ids)).map((v) => v?.values.clicks), [0, 1, 2, 3], 'reads during the migration');
    assert.ok(await answered('ASK') >= 3, 'the source answered ASK for the moved keys');
    assert.ok(((await nodeStats(targetNode)).calls.asking ?? 0) > (targetBefore.calls.asking ?? 0), 'the moved keys were read from the target after ASK');
    assert.deepEqual((await store.readStates(clickStats, ids)).map((s) => s?.state), ['s0', 's1', 's2', 's3']);
    // A compare-and-set of the split record answers TRYAGAIN until the migration completes, then applies.
    const split = store.writeMaterialized(clickStats, [{ entityId: ids[1]!, expectedVersion: 1, state: 'split', stateExpireAtMs: now + 600_000, value: value(11) }]);
    const whole = await store.writeMaterialized(clickStats, [{ entityId: ids[0]!, expectedVersion: 1, state: 'moved', stateExpireAtMs: now + 600_000, value: value(10) }]);
    assert.deepEqual(whole, [true], 'a record wholly on the target is written there (ASK)');
    // Finish the migration only once the split record's compare-and-set has met TRYAGAIN (and is being retried).
    await eventually(async () => assert.ok(await answered('TRYAGAIN') >= 1, 'no TRYAGAIN yet'), 5000, 10);
    for (const id of ids.slice(1)) {
      for (const part of ['value', 'state'] as const) {
        const key = clusterKey(recordKey(clickStats, id), part);
        if (/^:1/.test(await sourceNode.command(`EXISTS ${key}`))) await migrate(key);
      }
    }
    // A second client whose slot map is loaded now (the source owns the slot) and that does nothing until
    // the slot has moved: its first read meets MOVED for certain. (This test's own client may already have
    // learned the new owner by then, from a refresh or a redirection of the split record's retries.)
    const stale = new CodecStore(new RedisClusterBackend({ nodes: cluster.seeds.split(','), commandTimeoutMs: 2000, slotsRefreshIntervalMs: 3_600_000 }));
    try {
      await eventually(() => stale.ping(), 15_000, 50);
      assert.equal((stale.backend as RedisClusterBackend).shardOf(recordKey(clickStats, ids[2]!)), source.address);
      for (const m of masters) ok(await cluster.node(m.address).command(`CLUSTER SETSLOT ${slot} NODE ${target.id}`));
      assert.deepEqual(await split, [true], 'the split record\'s compare-and-set applied once the slot moved');
      assert.ok(await answered('TRYAGAIN') >= 1, 'the source answered TRYAGAIN for the split record');
      assert.deepEqual((await store.read(clickStats, ids)).map((v) => v?.values.clicks), [10, 11, 2, 3], 'reads after the migration');
      // The source now answers MOVED: followed, and the slot map learns the new owner.
      const movedBefore = await answered('MOVED');
      assert.deepEqual((await stale.read(clickStats, ids)).map((v) => v?.values.clicks), [10, 11, 2, 3], 'reads with the old map');
      assert.ok(await answered('MOVED') > movedBefore, 'the source answered MOVED once the slot was the target\'s');
      const staleBackend = stale.backend as RedisClusterBackend;
      await eventually(async () => {
        for (const id of ids) assert.equal(staleBackend.shardOf(recordKey(clickStats, id)), target.address);
      }, 5000, 50);
      const [targetGets, sourceGets] = [(await nodeStats(targetNode)).calls.get ?? 0, (await nodeStats(sourceNode)).calls.get ?? 0];
      assert.deepEqual((await stale.read(clickStats, ids)).map((v) => v?.values.clicks), [10, 11, 2, 3]);
      assert.equal(((await nodeStats(targetNode)).calls.get ?? 0) - targetGets, 4, 'with the map refreshed, the reads go to the new owner…');
      assert.equal(((await nodeStats(sourceNode)).calls.get ?? 0) - sourceGets, 0, '…and no longer to the old one');
    } finally {
      await stale.close();
    }
  });

  describe('a master killed (SIGKILL) under load, then restarted', () => {
    let gateway: NodeProcess;
    let url: string;
    let load: Load;
    let victim: RedisProcess;
    let victimSlots: ClusterNodeInfo;
    const expected = new Map<string, { clickRate: unknown; country: unknown }>();

    before(async () => {
      const rows = [...demoRows(registry, { eventTimeMs: Date.now(), counts: { user: USERS, item: 1, merchant: 1 }, views: (v) => v === clickStats || v === profile })];
      await writeRows(store, rows);
      for (const { view, row } of rows) {
        const e = expected.get(row.entityId) ?? { clickRate: undefined, country: undefined };
        if (view === clickStats) e.clickRate = row.values.clickRate;
        else e.country = row.values.country;
        expected.set(row.entityId, e);
      }
      await cluster.waitForReplication();
      const port = await freePort();
      gateway = NodeProcess.spawn('gateway/main.js', [], {
        PORT: String(port), REDIS_CLUSTER_NODES: cluster.seeds, DEMO_SEED: 'false', DEMO_WRITER: 'false', LOG_LEVEL: 'warn',
        STORE_TIMEOUT_MS: '800', REQUEST_DEADLINE_MS: '1500', STORE_BREAKER_MIN_CALLS: '5', STORE_BREAKER_RESET_MS: '1000',
      });
      url = `http://127.0.0.1:${port}/graphql`;
      await waitUntilReady(url.replace('/graphql', '/readyz'), gateway);
      load = new Load(url, { users: USERS, workers: 8 });
    });

    after(async () => {
      await load?.stop();
      await gateway?.stop();
    });

    const slotOf = (view: ViewVersion, id: string): number => calculateSlot(clusterKey(recordKey(view, id), 'value'));

    /**
     * One reply: every value whose slot `failed` served at the kill is either
     * there or null with an error at its path naming `failed`; every other
     * value is there, equal to what was loaded; no other error.
     */
    function check(sample: Sample, failed: ClusterNodeInfo | null): number {
      const { reply, ids, kind } = sample;
      const label = `${kind} ${JSON.stringify(ids)}: ${reply.text}`;
      assert.equal(reply.status, 200, label);
      const errors: { path: unknown[]; message: string; extensions: { code: string; shard?: string } }[] = reply.json.errors ?? [];
      const errorAt = new Set(errors.map((e) => JSON.stringify(e.path)));
      for (const e of errors) {
        assert.ok(failed, `no error while every master is up: ${label}`);
        assert.ok(['STORE_UNAVAILABLE', 'DEADLINE_EXCEEDED'].includes(e.extensions.code), label);
        assert.equal(e.extensions.shard, failed.address, label);
      }
      const fields: [string, ViewVersion, string][] = kind === 'persisted' ? [['clickStats', clickStats, 'clickRate']] : [['clickStats', clickStats, 'clickRate'], ['profile', profile, 'country']];
      ids.forEach((id, k) => {
        const entity = reply.json.data?.users?.[k];
        const onFailed = fields.filter(([, view]) => failed !== null && serves(failed, slotOf(view, id)));
        if (entity === null) {
          assert.equal(onFailed.length, fields.length, `${id} is null although a view of it lives elsewhere: ${label}`);
          assert.ok(errorAt.has(JSON.stringify(['users', k])), label);
          return;
        }
        assert.equal(entity?.id, id, label);
        for (const [field, , feature] of fields) {
          const want = field === 'clickStats' ? expected.get(id)!.clickRate : expected.get(id)!.country;
          if (entity[field] === null) {
            assert.ok(onFailed.some(([f]) => f === field), `${id}.${field} is null but lives on a running master: ${label}`);
            assert.ok(errorAt.has(JSON.stringify(['users', k, field])), label);
          } else {
            assert.equal(entity[field][feature], want, `${id}.${field}.${feature}: ${label}`);
          }
        }
      });
      return errors.length;
    }

    /** Every loaded value, read back by the test's own client (which learns a new topology at its first failed read). */
    async function assertValuesUnchanged(): Promise<void> {
      const ids = [...expected.keys()];
      const read = (view: ViewVersion) => eventually(() => store.read(view, ids), 10_000, 100);
      const [clicks, profiles] = await Promise.all([read(clickStats), read(profile)]);
      ids.forEach((id, i) => {
        assert.equal(clicks[i]?.values.clickRate, expected.get(id)!.clickRate, `clickStats of ${id}`);
        assert.equal(profiles[i]?.values.country, expected.get(id)!.country, `profile of ${id}`);
      });
    }

    test('all masters up: every reply complete', async () => {
      for (const s of await load.steady(100)) assert.equal(check(s, null), 0);
      assert.deepEqual(load.failures, []);
    });

    test('SIGKILL of a master: the other masters keep serving, its values fail naming it until a replica is promoted, then are served again', async () => {
      victimSlots = (await cluster.masters())[0]!;
      victim = cluster.node(victimSlots.address);
      const killedAt = performance.now();
      await victim.kill();
      // Promotion: another node serves the victim's first slot.
      const promotedAt = await eventually(async () => {
        const now = performance.now();
        const owner = (await cluster.masters()).find((m) => serves(m, victimSlots.ranges[0]![0]));
        if (!owner || owner.address === victimSlots.address) throw new Error('not promoted yet');
        return now;
      }, 30_000, 100);
      // Load goes on until 300 replies have come in for requests sent 2 s or more after the promotion.
      await eventually(async () => {
        if (load.since(promotedAt + 2000).length < 300) throw new Error('not enough replies after the promotion yet');
      }, 60_000, 100);
      const window = load.since(killedAt);
      let errors = 0;
      let failedRequests = 0;
      let first = Infinity;
      let last = -Infinity;
      for (const s of window) {
        const n = check(s, victimSlots);
        if (n > 0) {
          errors += n;
          failedRequests++;
          first = Math.min(first, s.startedAt);
          last = Math.max(last, s.startedAt + s.ms);
        }
        // Errors stop once the replica is promoted (the client finds it at its next slot-map refresh).
        if (s.startedAt >= promotedAt + 2000) assert.equal(n, 0, `an error ${Math.round(s.startedAt - promotedAt)} ms after the promotion: ${s.reply.text}`);
        assert.ok(s.ms < 1500 + 2000, `a request took ${Math.round(s.ms)} ms`);
      }
      assert.ok(errors > 0, 'some requested values lived on the killed master');
      assert.deepEqual(load.failures, []);
      console.log(`# failover: master ${victimSlots.address} killed; replica promoted after ${((promotedAt - killedAt) / 1000).toFixed(2)} s; ` +
        `errors from ${((first - killedAt) / 1000).toFixed(2)} s to ${((last - killedAt) / 1000).toFixed(2)} s after the kill ` +
        `(window ${((last - first) / 1000).toFixed(2)} s): ${errors} field errors in ${failedRequests} of ${window.length} replies, all naming ${victimSlots.address}`);
      await assertValuesUnchanged();
      const ready = await get(url.replace('/graphql', '/readyz'));
      assert.equal(ready.status, 200, ready.text);
      assert.match(ready.json.checks.store, /reachable \(3 of 3 shards\)/, ready.text);
    });

    test('the killed node restarted: it rejoins as a replica of its successor, and serving sees no error', async () => {
      const from = performance.now();
      await victim.restart();
      await eventually(async () => {
        const me = (await cluster.topology()).find((n) => n.address === victim.address);
        if (!me || me.role !== 'replica' || me.failed) throw new Error(`not a replica yet: ${JSON.stringify(me)}`);
      }, 60_000, 200);
      await cluster.waitHealthy();
      await load.steady(200);
      for (const s of load.since(from)) assert.equal(check(s, null), 0);
      assert.deepEqual(load.failures, []);
      await assertValuesUnchanged();
      assert.equal(gateway.child.exitCode, null, 'the same gateway process served throughout');
    });
  });
});
