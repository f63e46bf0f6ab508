/**
 * The push API's change events on a real Kafka broker, as a subgraph process
 * with KAFKA_BROKERS produces them: each pushed row becomes one
 * `feature-updates` record; `npm run subgraph` wires Kafka in as that sink;
 * with the broker down the rows are still written and the call fails with
 * PUSH_NOT_PUBLISHED, saying so.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { graphql } from 'graphql';
import { principalKey, type Principal } from '../../auth/principal.js';
import { changeTopic, changeTopicPartitions, decodeChange, type FeatureChange } from '../../eventlog/change-event.js';
import type { TransactionalConsumer } from '../../eventlog/event-log.js';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { buildEntitySubgraph, type EntitySubgraph } from '../../subgraphs/factory.js';
import { NodeProcess, registry, waitUntilReady } from '../support/gateway.js';
import { post } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { viewOf } from '../support/registry-text.js';
import { eventually } from '../support/wait.js';

const profile = activeVersionOf(viewOf(registry, 'profile'));
const admin: Principal = { id: 'push-kafka-test', roles: new Set(['admin']), via: 'internal' };
const PUSH = 'mutation ($rows: [UserProfileV1Push!]!) { pushUserProfile(rows: $rows) { written } }';

describe('push change events on Kafka', () => {
  let broker: KafkaBroker;
  let store: CodecStore;
  let changes: KafkaLog;
  let reader: KafkaLog;
  let consumer: TransactionalConsumer;
  let subgraph: EntitySubgraph;
  const received: FeatureChange[] = [];

  before(async () => {
    broker = await KafkaBroker.start();
    store = createStore({ kind: 'embedded' });
    // As subgraphs/main.ts does with KAFKA_BROKERS: the topic exists before the first push.
    changes = new KafkaLog({ brokers: broker.brokers, clientId: 'push-subgraph' });
    await changes.createTopics([{ topic: changeTopic, partitions: changeTopicPartitions }]);
    subgraph = buildEntitySubgraph(registry, 'user', { store, maxBatchIds: 10, pushMaxFutureMs: 60_000, changes });
    // A group reading from the beginning sees every record, however late it joins.
    reader = new KafkaLog({ brokers: broker.brokers, clientId: 'push-reader' });
    consumer = reader.consumer({
      groupId: 'push-test-reader', topics: [changeTopic], instanceId: 'push-test-reader', fromBeginning: true,
      handler: async (batch) => {
        for (const record of batch.records) received.push(decodeChange(record));
        return { records: [], checkpoint: null };
      },
    });
    await consumer.start();
  });

  after(async () => {
    await consumer?.stop();
    await reader?.close();
    await changes?.close();
    await store?.close();
    await broker?.destroy();
  });

  const push = (rows: unknown[]) => graphql({ schema: subgraph.schema, source: PUSH, variableValues: { rows }, contextValue: { [principalKey]: admin } });

  it('produces one feature-updates record per pushed row, after the write', async () => {
    const eventTime = new Date(Date.now() - 5000).toISOString();
    const result = await push([
      { id: 'k-1', eventTime, sessionLength: 1, isPremium: true, country: 'DE', embedding: [1.5] },
      { id: 'k-2', eventTime, sessionLength: 2, isPremium: false, country: 'PL', embedding: [2.5, 3] },
    ]);
    assert.deepEqual(JSON.parse(JSON.stringify(result)), { data: { pushUserProfile: { written: 2 } } });
    await eventually(async () => assert.equal(received.length, 2, JSON.stringify(received)), 60_000, 100);
    const offset = Date.parse(eventTime);
    assert.deepEqual([...received].sort((a, b) => a.id.localeCompare(b.id)), [
      { entity: 'user', id: 'k-1', view: 'profile', version: 1, eventTime, values: { sessionLength: 1, isPremium: true, country: 'DE', embedding: [1.5] }, source: { topic: 'push:graphql', partition: 0, offset } },
      { entity: 'user', id: 'k-2', view: 'profile', version: 1, eventTime, values: { sessionLength: 2, isPremium: false, country: 'PL', embedding: [2.5, 3] }, source: { topic: 'push:graphql', partition: 0, offset } },
    ]);
  });

  it('a subgraph process with KAFKA_BROKERS starts with Kafka as its push change sink, and refuses a push without a principal', async () => {
    const port = await freePort();
    const proc = NodeProcess.spawn('subgraphs/main.js', ['--entity', 'user', '--port', String(port)], {
      KAFKA_BROKERS: broker.brokers.join(','), DEMO_SEED: 'false', DEMO_WRITER: 'false',
    });
    try {
      await waitUntilReady(`http://127.0.0.1:${port}/readyz`, proc, 60_000);
      assert.match(proc.output, /"pushChanges":"kafka"/, proc.output);
      const reply = await post(`http://127.0.0.1:${port}/graphql`, {
        query: PUSH, variables: { rows: [{ id: 'k-proc', sessionLength: 1, isPremium: true, country: 'DE', embedding: [1] }] },
      });
      assert.equal(reply.json?.errors?.[0]?.extensions?.code, 'FORBIDDEN', reply.text);
    } finally {
      await proc.stop();
    }
  });

  it('with the broker down, the rows are written and the call fails with PUSH_NOT_PUBLISHED', async () => {
    await consumer.stop();
    await broker.stop();
    const result = await push([{ id: 'k-down', sessionLength: 9, isPremium: true, country: 'SE', embedding: [9] }]);
    assert.equal(result.data, null);
    const error = result.errors?.[0];
    assert.equal(error?.extensions.code, 'PUSH_NOT_PUBLISHED', JSON.stringify(result.errors));
    assert.equal(error?.extensions.written, 1);
    assert.match(error!.message, /1 row\(s\) of profile v1 were written, but their change events could not be produced .*Pushing the same rows again is safe/);
    const [stored] = await store.read(profile, ['k-down']);
    assert.deepEqual(stored?.values, { sessionLength: 9, isPremium: true, country: 'SE', embedding: [9] });
  });
});
