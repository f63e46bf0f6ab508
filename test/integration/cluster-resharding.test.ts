import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { demoRows } from '../../store/demo-data.js';
import { writeRows } from '../../store/rows.js';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import { groupProgress, makeStream, waitForGroup, type Stream } from '../support/event-stream.js';
import { NodeProcess, waitUntilReady } from '../support/gateway.js';
import { materializerGroup as group, rawTopics, registry, streamSize, verifyAgainstTruth } from '../support/ground-truth.js';
import { get } from '../support/http.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { startTogether } from '../support/start-together.js';
import { Load } from '../support/load.js';
import { bulk, RedisCluster } from '../support/redis-cluster.js';
import { freePort } from '../support/ports.js';
import { eventually } from '../support/wait.js';

/**
 * Resharding under load, real processes: a Redis Cluster of three masters
 * (and replicas) serves a gateway process under continuous load while a
 * materializer process turns 100k raw events from Kafka into values. During
 * the run a fourth master joins (`redis-cli --cluster add-node`) and a
 * quarter of the slots, 4096, move to it key by key (`--cluster reshard`).
 * No request may fail (every reply complete, no error), the materializer
 * must keep writing through it, and the stored values must equal the
 * stream's independently computed ground truth afterwards.
 */
const profile = activeVersionOf(registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'profile')!);

describe('Redis Cluster resharding under load: a fourth master takes a quarter of the slots', () => {
  let broker: KafkaBroker;
  let cluster: RedisCluster;
  let store: CodecStore;
  let stream: Stream;
  let materializer: NodeProcess;
  let gateway: NodeProcess;
  let url: string;
  let load: Load;

  before(async () => {
    [broker, cluster] = await startTogether(KafkaBroker.start(), RedisCluster.start({ masters: 3, replicasPerMaster: 1 }));
    store = createStore({ kind: 'redis-cluster', nodes: cluster.seeds.split(','), readFromReplicas: false, commandTimeoutMs: 2000 });
    stream = makeStream({ ...streamSize, seed: 3, baseMs: Date.now() - 100_000 });
    await eventually(() => store.ping(), 15_000, 50);
    // Every user the stream names has a profile, so every requested entity exists from the start.
    await writeRows(store, [...demoRows(registry, { eventTimeMs: Date.now(), counts: { user: streamSize.users, item: 1, merchant: 1 }, views: (v) => v === profile })]
      .map(({ view, row }) => ({ view, row: { ...row, entityId: `u${row.entityId}` } })));
    const env = { KAFKA_BROKERS: broker.brokers.join(','), REDIS_CLUSTER_NODES: cluster.seeds, STORE_TIMEOUT_MS: '2000', LOG_LEVEL: 'warn' };
    const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-topics' });
    await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
    await producer.close();
    materializer = NodeProcess.spawn('materializer/main.js', [], env);
    const port = await freePort();
    gateway = NodeProcess.spawn('gateway/main.js', [], { ...env, PORT: String(port), DEMO_SEED: 'false', DEMO_WRITER: 'false', REQUEST_DEADLINE_MS: '3000' });
    url = `http://127.0.0.1:${port}/graphql`;
    await waitUntilReady(url.replace('/graphql', '/readyz'), gateway);
  });

  after(async () => {
    await load?.stop();
    await Promise.all([gateway?.stop(), materializer?.stop()]);
    await store?.close();
    await broker?.destroy();
    await cluster?.destroy();
  });

  test('zero failed requests while 4096 slots move to a new master; the stored values equal the ground truth', async () => {
    load = new Load(url, { users: streamSize.users, workers: 6, idPrefix: 'u' });
    const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-producer' });
    // The stream arrives in 20 chunks spread over the run, so the materializer writes throughout the move.
    const chunks = 20;
    const size = Math.ceil(stream.records.length / chunks);
    let produced = 0;
    const producing = (async () => {
      for (let c = 0; c < chunks; c++) {
        await producer.produce(stream.records.slice(c * size, (c + 1) * size));
        produced = c + 1;
        await new Promise((r) => setTimeout(r, 750));
      }
    })();

    // Once the materializer is visibly committing, the fourth master joins and takes a quarter of the slots.
    const committedBefore = await eventually(async () => {
      const { committed } = await groupProgress(broker.brokers, group, rawTopics);
      if (committed === 0) throw new Error(`the materializer has committed nothing yet:\n${materializer.output.slice(-2000)}`);
      return committed;
    }, 120_000, 200);
    const fourth = await cluster.addMaster();
    const movedFrom = performance.now();
    await cluster.reshard(fourth, 4096);
    const movedSeconds = (performance.now() - movedFrom) / 1000;
    const committedAfter = (await groupProgress(broker.brokers, group, rawTopics)).committed;
    const during = load.since(movedFrom);

    await producing;
    await producer.close();
    await waitForGroup(broker.brokers, group, rawTopics, 180_000).catch((error: Error) => {
      throw new Error(`${error.message}\nmaterializer output (last 4000 chars):\n${materializer.output.slice(-4000)}`);
    });
    const final = await load.steady(100);
    await load.stop();

    // Zero failed requests, during the move and throughout.
    assert.deepEqual(load.failures, []);
    for (const s of load.samples) {
      assert.equal(s.reply.status, 200, s.reply.text);
      assert.equal(s.reply.json.errors, undefined, `${s.kind} ${JSON.stringify(s.ids)}: ${s.reply.text}`);
    }
    // Once every event is applied, every user has a value: the replies are complete, not merely error-free.
    for (const s of final) s.ids.forEach((id, k) => assert.equal(s.reply.json.data.users[k]?.id, id, s.reply.text));
    assert.ok(during.length > 100, `only ${during.length} requests were served while the slots moved`);

    // The fourth master serves a quarter of the slots and holds keys; the gateway reads from it too.
    const masters = await cluster.masters();
    assert.equal(masters.length, 4);
    assert.equal(masters.find((m) => m.address === fourth.address)?.slots, 4096);
    const keys = Number(/keys=(\d+)/.exec(bulk(await fourth.command('INFO keyspace')))?.[1] ?? 0);
    assert.ok(keys > 0, 'the new master holds keys');
    const ready = await get(url.replace('/graphql', '/readyz'));
    assert.match(ready.json.checks.store, /reachable \(4 of 4 shards\)/, ready.text);

    await verifyAgainstTruth(stream, store, broker.brokers);
    console.log(`# resharding: 4096 slots moved to ${fourth.address} in ${movedSeconds.toFixed(1)} s while ${during.length} requests were served ` +
      `(${load.samples.length} in all, none failed) and the materializer committed ${committedAfter - committedBefore} events ` +
      `(${produced} of ${chunks} chunks produced by then); ${keys} keys on the new master`);
    assert.ok(committedAfter > committedBefore, 'the materializer wrote while the slots moved');
  });
});
