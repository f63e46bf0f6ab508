/**
 * The whole pipeline on real parts, end to end: a raw click event produced to
 * a real Kafka broker is consumed by the materializer PROCESS into a real
 * Redis, its change event committed to `feature-updates`, tailed by a
 * co-located gateway (in this process, on the same Redis) and sent to the
 * graphql-ws subscribers watching that user, with exactly the fields each
 * selected; the new value is also readable through an HTTP query.
 *
 * No assertion depends on speed: every wait has a generous timeout that
 * only bounds a broken run.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { NodeProcess, registry, testConfig } from '../support/gateway.js';
import { gql } from '../support/http.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { startTogether } from '../support/start-together.js';
import { RedisProcess } from '../support/redis-server.js';

const timeoutMs = 30_000;

async function waitFor(predicate: () => boolean, what: string, context: () => string = () => '', ms = timeoutMs): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${context()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** One subscription through the graphql-ws client, recording what it receives. */
class Watch {
  readonly events: any[] = [];
  error: unknown = undefined;

  constructor(client: Client, query: string) {
    client.subscribe({ query }, {
      next: (value) => void this.events.push(value),
      error: (error) => void (this.error = error),
      complete: () => undefined,
    });
  }

  ids(): string[] {
    return this.events.map((e) => e.data?.featureChanged?.id);
  }
}

describe('freshness end to end: Kafka → materializer process → Redis → gateway subscriptions and queries', () => {
  let broker: KafkaBroker;
  let redis: RedisProcess;
  let store: CodecStore;
  let producer: KafkaLog;
  let gatewayLog: KafkaLog;
  let materializer: NodeProcess;
  let gateway: RunningGateway;
  const clients: Client[] = [];

  before(async () => {
    [broker, redis] = await startTogether(KafkaBroker.start(), RedisProcess.start());
    producer = new KafkaLog({ brokers: broker.brokers, clientId: 'freshness-e2e-producer' });
    // The raw topics as the registry sizes them (the materializer creates them too, but events may
    // come first). The change topic is created by whichever of the materializer and the gateway
    // starts first.
    await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
    materializer = NodeProcess.spawn('materializer/main.js', [], { KAFKA_BROKERS: broker.brokers.join(','), REDIS_URL: redis.url, LOG_LEVEL: 'warn' });
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
    gatewayLog = new KafkaLog({ brokers: broker.brokers, clientId: 'freshness-e2e-gateway' });
    gateway = await startGateway({ config: testConfig({ REDIS_URL: redis.url }), registry, store, eventLog: gatewayLog });
  });

  after(async () => {
    for (const c of clients) await c.dispose();
    await gateway?.close();
    await gatewayLog?.close();
    await producer?.close();
    await materializer?.stop();
    await store?.close();
    await broker?.destroy();
    await redis?.destroy();
  });

  it('a click event reaches exactly the subscribers watching its user, with their selection, and the HTTP query', async () => {
    const open = (): Client => {
      const c = createClient({ url: gateway.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
      clients.push(c);
      return c;
    };
    const mine = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["a", "b", "c"], views: ["clickStats"]) { id view version user { id clickStats { clicks impressions } } } }');
    const others = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["x", "y", "z"]) { id view user { clickStats { impressions } } } }');
    const versions = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["b", "c"], versions: [{ view: "clickStats", version: 1 }, { view: "clickStats", version: 2 }]) { id version user { clickStatsV1 { clickRate } } } }');
    await waitFor(() => gateway.subscriptions!.stats().active === 3, 'the subscriptions to be active');
    const context = () => `materializer output:\n${materializer.output.slice(-4000)}\nmine: ${JSON.stringify(mine.events)}\nothers: ${JSON.stringify(others.events)}\nversions: ${JSON.stringify(versions.events)}`;
    const click = (userId: string, clicked: boolean) => ({
      topic: 'click-events', key: userId, value: JSON.stringify({ userId, adId: 'i1', clicked, ts: Date.now(), price: 9.5, category: 'books' }),
    });

    // The pipeline is live once a change makes it all the way through: the materializer has joined
    // its group and the gateway's tail reads the change topic. (A tail starts at the end of the
    // topic, so a change committed before it was positioned is not seen: produce until one is.)
    const warmDeadline = Date.now() + 60_000;
    while (others.events.length === 0) {
      if (materializer.child.exitCode !== null) throw new Error(`the materializer exited (${materializer.child.exitCode}):\n${context()}`);
      if (Date.now() > warmDeadline) throw new Error(`no change reached the gateway within 60 s\n${context()}`);
      await producer.produce([click('x', false)]);
      await waitFor(() => others.events.length > 0, 'a warm-up change', context, 2000).catch(() => undefined);
    }
    assert.equal(mine.error, undefined);
    assert.equal(others.error, undefined);
    assert.equal(mine.events.length, 0, `the first subscriber watches a, b, c only: ${JSON.stringify(mine.events)}`);

    // One impression of "b" (clicked) and one of "z" (not clicked).
    await producer.produce([click('b', true), click('z', false)]);
    // clickStats is materialized in v1 and v2 (both in one transaction): one change event each. A subscription
    // naming the view, or none, watches the active version (v2) alone: one event; one naming both versions, two.
    await waitFor(() => mine.events.length >= 1 && others.ids().includes('z') && versions.events.length >= 2, 'the changes of "b" and "z"', context);
    // Changes of one subscription arrive in order: once a later raw event's change has arrived, nothing more
    // of the first one can come.
    await producer.produce([click('c', false), click('y', false)]);
    await waitFor(() => mine.ids().includes('c') && others.ids().includes('y') && versions.ids().includes('c'), 'the changes of "c" and "y"', context);

    assert.deepEqual(mine.events.filter((e) => e.data.featureChanged.id === 'b'), [
      { data: { featureChanged: { id: 'b', view: 'clickStats', version: 2, user: { id: 'b', clickStats: { clicks: 1, impressions: 1 } } } } },
    ], context());
    assert.deepEqual(mine.ids(), ['b', 'c'], context());
    assert.equal(mine.error, undefined);
    assert.deepEqual(versions.events.filter((e) => e.data.featureChanged.id === 'b').sort((p, q) => p.data.featureChanged.version - q.data.featureChanged.version), [1, 2].map((version) => ({
      data: { featureChanged: { id: 'b', version, user: { clickStatsV1: { clickRate: 1 } } } },
    })), context());

    // The second subscriber got the changes of its own users, never one of "b".
    assert.ok(others.ids().every((id) => ['x', 'y', 'z'].includes(id)), context());
    const z = others.events.filter((e) => e.data.featureChanged.id === 'z');
    assert.deepEqual(z, [{ data: { featureChanged: { id: 'z', view: 'clickStats', user: { clickStats: { impressions: 1 } } } } }]);
    assert.equal(others.error, undefined);
    assert.equal(versions.error, undefined);

    // The same value through an HTTP query of the gateway.
    const reply = await gql(gateway.url, '{ user(id: "b") { id clickStats { clicks impressions clickRate stale } } }');
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.json, { data: { user: { id: 'b', clickStats: { clicks: 1, impressions: 1, clickRate: 1, stale: false } } } });
  });
});
