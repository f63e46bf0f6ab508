import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import { aerospikeHosts, aerospikeSkip } from '../support/aerospike.js';
import { NodeProcess } from '../support/gateway.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { startTogether } from '../support/start-together.js';
import { RedisCluster } from '../support/redis-cluster.js';
import { freePort } from '../support/ports.js';
import { RedisProcess } from '../support/redis-server.js';
import { groupProgress, makeStream, waitForGroup, type Stream } from '../support/event-stream.js';
import { materializerGroup as group, rawTopics, registry, streamSize, verifyAgainstTruth as verify } from '../support/ground-truth.js';
import { mulberry32 } from '../../store/demo-data.js';

/**
 * The materializer on a real Kafka broker and a real store, as separate
 * processes: 100k events with a known ground truth shared by two processes,
 * then the same under kill -9 at random points. The stored features must
 * equal the ground truth (nothing lost, nothing counted twice), every invalid
 * and late event must be in the DLQ exactly once, and no change event may be
 * committed twice for one source offset. Each runs on one Redis node and on a
 * six-node Redis Cluster (and on Aerospike where AEROSPIKE_HOSTS names one).
 */
interface StoreUnderTest {
  /** The store's variables for the materializer processes. */
  readonly env: Record<string, string>;
  readonly store: CodecStore;
  /** Closes the store client, then stops the servers. */
  destroy(): Promise<void>;
}

const stores: { readonly name: string; readonly skip?: string; start(): Promise<StoreUnderTest> }[] = [
  {
    name: 'Redis',
    async start() {
      const redis = await RedisProcess.start();
      const store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
      return { env: { REDIS_URL: redis.url }, store, destroy: async () => { await store.close(); await redis.destroy(); } };
    },
  },
  {
    name: 'Redis Cluster',
    async start() {
      const cluster = await RedisCluster.start({ masters: 3, replicasPerMaster: 1 });
      const store = createStore({ kind: 'redis-cluster', nodes: cluster.seeds.split(','), readFromReplicas: false, commandTimeoutMs: 2000 });
      return {
        env: { REDIS_CLUSTER_NODES: cluster.seeds, STORE_TIMEOUT_MS: '2000' },
        store,
        destroy: async () => { await store.close(); await cluster.destroy(); },
      };
    },
  },
  {
    name: 'Aerospike',
    ...(aerospikeHosts() ? {} : { skip: aerospikeSkip }),
    async start() {
      const hosts = aerospikeHosts()!;
      const set = `materializer_${process.pid}_${Date.now() % 100_000}`;
      const namespace = process.env.AEROSPIKE_NAMESPACE ?? 'test';
      const store = createStore({ kind: 'aerospike', hosts: hosts.split(','), namespace, set, commandTimeoutMs: 2000 });
      return {
        env: { AEROSPIKE_HOSTS: hosts, AEROSPIKE_NAMESPACE: namespace, AEROSPIKE_SET: set, STORE_TIMEOUT_MS: '2000' },
        store,
        destroy: () => store.close(),
      };
    },
  },
];

for (const target of stores) {
  if (target.skip) {
    test(`materializer on real Kafka and ${target.name}`, { skip: target.skip }, () => {});
    continue;
  }

  describe(`materializer on real Kafka and ${target.name}: two processes share the partitions`, () => {
    let broker: KafkaBroker;
    let backing: StoreUnderTest;
    let store: CodecStore;
    let processes: NodeProcess[] = [];
    let stream: Stream;

    before(async () => {
      [broker, backing] = await startTogether(KafkaBroker.start(), target.start());
      store = backing.store;
      stream = makeStream({ ...streamSize, seed: 1, baseMs: Date.now() - 100_000 });
    });

    after(async () => {
      await Promise.all(processes.map((p) => p.stop()));
      await broker?.destroy();
      await backing?.destroy();
    });

    test('100k events: stored features equal the ground truth; DLQ and change events exactly once', async () => {
      const env = { KAFKA_BROKERS: broker.brokers.join(','), ...backing.env, LOG_LEVEL: 'warn' };
      const ports = [await freePort(), await freePort()];
      processes = ports.map((port) => NodeProcess.spawn('materializer/main.js', ['--port', String(port)], env));
      const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-producer' });
      await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
      for (let i = 0; i < stream.records.length; i += 5000) await producer.produce(stream.records.slice(i, i + 5000));
      await producer.close();
      await waitForGroup(broker.brokers, group, rawTopics, 180_000);
      await verify(stream, store, broker.brokers);

      // Both processes did part of the work.
      for (const port of ports) {
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const applied = [...metrics.matchAll(/materializer_events_total\{[^}]*outcome="applied"\} (\d+)/g)].reduce((s, m) => s + Number(m[1]), 0);
        assert.ok(applied > 0, `materializer on port ${port} applied no event:\n${processes.map((p) => p.output).join('\n')}`);
      }
    });
  });

  describe(`materializer crash test on ${target.name}: kill -9 at random points during the stream`, () => {
    let broker: KafkaBroker;
    let backing: StoreUnderTest;
    let store: CodecStore;
    let current: NodeProcess | undefined;
    let stream: Stream;

    before(async () => {
      [broker, backing] = await startTogether(KafkaBroker.start(), target.start());
      store = backing.store;
      stream = makeStream({ ...streamSize, seed: 2, baseMs: Date.now() - 100_000 });
    });

    after(async () => {
      await current?.stop();
      await broker?.destroy();
      await backing?.destroy();
    });

    test('after 3 kills and restarts the stored features still equal the ground truth', async () => {
      const env = { KAFKA_BROKERS: broker.brokers.join(','), ...backing.env, LOG_LEVEL: 'info' };
      const spawn = () => NodeProcess.spawn('materializer/main.js', [], env);
      const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-producer' });
      await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
      current = spawn();
      const random = mulberry32(42);
      const chunks = 20;
      const chunkSize = Math.ceil(stream.records.length / chunks);
      const killAt = new Set<number>();
      while (killAt.size < 3) killAt.add(2 + Math.floor(random() * (chunks - 4)));
      let kills = 0;
      for (let c = 0; c < chunks; c++) {
        await producer.produce(stream.records.slice(c * chunkSize, (c + 1) * chunkSize));
        if (killAt.has(c)) {
          // Wait until this process is visibly committing batches, then kill it at a random moment of its work.
          const startedAt = (await groupProgress(broker.brokers, group, rawTopics)).committed;
          const deadline = Date.now() + 120_000;
          while ((await groupProgress(broker.brokers, group, rawTopics)).committed <= startedAt) {
            if (Date.now() > deadline) throw new Error(`the materializer made no progress:\n${current.output}`);
            await new Promise((r) => setTimeout(r, 100));
          }
          await new Promise((r) => setTimeout(r, Math.floor(random() * 400)));
          if (current.child.exitCode !== null) throw new Error(`the materializer exited by itself (${current.child.exitCode}):\n${current.output.slice(-4000)}`);
          const exited = new Promise((r) => current!.child.once('exit', r));
          current.child.kill('SIGKILL');
          await exited;
          kills++;
          current = spawn();
        }
      }
      await producer.close();
      assert.equal(kills, 3);
      await waitForGroup(broker.brokers, group, rawTopics, 240_000).catch((error: Error) => {
        throw new Error(`${error.message}\nmaterializer output (last 4000 chars):\n${current!.output.slice(-4000)}`);
      });
      await verify(stream, store, broker.brokers);
    });
  });
}
