import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import WebSocket from 'ws';
import { NodeProcess, waitUntilReady } from '../support/gateway.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { startTogether } from '../support/start-together.js';
import { freePort } from '../support/ports.js';
import { RedisProcess } from '../support/redis-server.js';
import { groupProgress, makeStream, waitForGroup, type Stream } from '../support/event-stream.js';
import { materializerGroup as group, rawTopics, registry, streamSize, verifyAgainstTruth } from '../support/ground-truth.js';
import { eventually } from '../support/wait.js';

/**
 * The Kafka broker goes away under a running materializer process, twice:
 * first a controlled stop (SIGTERM), then a crash (SIGKILL). Each time it
 * stays down for 15 s, longer than kafkajs' whole retry budget for one
 * operation (~10 s with our settings, ~9 s with kafkajs' defaults), and comes
 * back on the same ports with the same log directory. The materializer must
 * ride it out in the same process (no supervisor restart), say so in its log
 * and metrics, resume, and end with stored values equal to the ground truth:
 * exactly once, nothing counted twice by the batches in flight when the
 * broker went away. A gateway process tailing `feature-updates` for a
 * WebSocket subscriber rides it out too: change events reach the subscriber
 * after the broker's return.
 */
const outageMs = 15_000;

describe('Kafka broker outage under a running materializer', () => {
  let broker: KafkaBroker;
  let redis: RedisProcess;
  let store: CodecStore;
  let materializer: NodeProcess | undefined;
  let gateway: NodeProcess | undefined;
  let stream: Stream;

  before(async () => {
    [broker, redis] = await startTogether(KafkaBroker.start(), RedisProcess.start());
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
    stream = makeStream({ ...streamSize, seed: 3, baseMs: Date.now() - 100_000 });
  });

  after(async () => {
    await materializer?.stop();
    await gateway?.stop();
    await store?.close();
    await broker?.destroy();
    await redis?.destroy();
  });

  test('stopped, then killed broker: the same process resumes each time and the ground truth holds', { timeout: 600_000 }, async () => {
    const port = await freePort();
    materializer = NodeProcess.spawn('materializer/main.js', ['--port', String(port)], {
      KAFKA_BROKERS: broker.brokers.join(','), REDIS_URL: redis.url, LOG_LEVEL: 'info',
    });
    const proc = materializer;
    // A gateway tails feature-updates for its subscribers through the same outages.
    const gatewayPort = await freePort();
    gateway = NodeProcess.spawn('gateway/main.js', [], {
      PORT: String(gatewayPort), KAFKA_BROKERS: broker.brokers.join(','), REDIS_URL: redis.url, DEMO_SEED: 'false', DEMO_WRITER: 'false', LOG_LEVEL: 'info',
    });
    await waitUntilReady(`http://127.0.0.1:${gatewayPort}/readyz`, gateway, 60_000);
    const watched = [...stream.truth.clickStats.keys()].slice(0, 20);
    const changes: number[] = []; // arrival times of change events
    const socket = new WebSocket(`ws://127.0.0.1:${gatewayPort}/graphql`, 'graphql-transport-ws');
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as { type: string };
      if (message.type === 'connection_ack') {
        socket.send(JSON.stringify({ id: 'w', type: 'subscribe', payload: { query: `subscription { featureChanged(entity: USER, ids: ${JSON.stringify(watched)}) { id } }` } }));
      }
      if (message.type === 'next') changes.push(Date.now());
    });
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send(JSON.stringify({ type: 'connection_init' }));
    const fail = (why: string): never => {
      throw new Error(`${why}\nmaterializer output (last 6000 chars):\n${proc.output.slice(-6000)}\n${broker.logTail(20)}`);
    };
    const alive = (when: string): void => {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) fail(`the materializer exited (${proc.child.exitCode ?? proc.child.signalCode}) ${when}`);
    };
    const produce = async (from: number, to: number): Promise<void> => {
      // A producer per phase: the test's own client is not what is under test.
      const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-producer' });
      await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
      for (let i = from; i < to; i += 5000) await producer.produce(stream.records.slice(i, Math.min(i + 5000, to)));
      await producer.close();
    };
    /** Waits until the group has committed more than before: the materializer is mid-stream, committing batches. */
    const committing = async (): Promise<void> => {
      const before = (await groupProgress(broker.brokers, group, rawTopics)).committed;
      const deadline = Date.now() + 120_000;
      while ((await groupProgress(broker.brokers, group, rawTopics)).committed <= before) {
        alive('before the outage');
        if (Date.now() > deadline) fail('the materializer made no progress');
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const outage = async (how: 'stop' | 'kill'): Promise<void> => {
      await committing();
      if (how === 'stop') await broker.stop();
      else await broker.kill();
      const downAt = Date.now();
      while (Date.now() - downAt < outageMs) {
        alive(`while the broker was down (${how})`);
        await new Promise((r) => setTimeout(r, 250));
      }
      await broker.restart();
      alive(`after the broker came back (${how})`);
    };

    const third = Math.floor(stream.records.length / 3);
    await produce(0, third);
    await outage('stop');
    await produce(third, 2 * third);
    await outage('kill');
    const backAt = Date.now();
    await produce(2 * third, stream.records.length);
    await waitForGroup(broker.brokers, group, rawTopics, 300_000).catch((error: Error) => fail(error.message));
    alive('at the end');
    await verifyAgainstTruth(stream, store, broker.brokers);

    // The outages are visible to an operator: structured log lines and metrics.
    const lines = proc.output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const lost = lines.filter((l) => l.msg === 'kafka broker unreachable');
    const back = lines.filter((l) => l.msg === 'kafka broker reachable again');
    assert.ok(lost.length >= 2, `expected a "kafka broker unreachable" line per outage, got ${lost.length}`);
    assert.ok(back.length >= 2, `expected a "kafka broker reachable again" line per outage, got ${back.length}`);
    for (const line of back) assert.ok(typeof line.downMs === 'number' && line.downMs > 0, `downMs in ${JSON.stringify(line)}`);
    assert.ok(back.some((l) => (l.downMs as number) >= outageMs - 1000), `no recovery line reports an outage near ${outageMs} ms: ${JSON.stringify(back)}`);
    // The gateway's tail came back too: its subscriber got change events after the second outage.
    await eventually(async () => assert.ok(changes.some((t) => t > backAt), `no change event after the broker came back (${changes.length} before)`), 60_000, 250)
      .catch((error: Error) => fail(`${error.message}\ngateway output:\n${gateway!.output.slice(-4000)}`));
    socket.terminate();
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /kafka_broker_reachable\{client="materializer"\} 1/);
    const outages = Number(/kafka_broker_outages_total\{client="materializer"\} (\d+)/.exec(metrics)?.[1]);
    assert.ok(outages >= 2, `kafka_broker_outages_total ${outages}`);
    // The outages outlasted kafkajs' retries: its consumer crashed and was started again (by kafkajs, or by us
    // when kafkajs gives up on a "non-retriable" error such as a missing group coordinator).
    const restarts = Number(/kafka_consumer_restarts_total\{client="materializer"\} (\d+)/.exec(metrics)?.[1]);
    assert.ok(restarts >= 1, `kafka_consumer_restarts_total ${restarts}: the outage did not outlast the retry budget`);
  });
});
