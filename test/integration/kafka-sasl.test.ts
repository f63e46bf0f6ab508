/**
 * The event log against a real Kafka broker whose client listener requires
 * SASL (SASL_PLAINTEXT, mechanism PLAIN): with KAFKA_SASL_* from the config a
 * record goes through (produce, tail); a wrong password or no SASL at all is
 * refused rather than hanging.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import type { LogRecord } from '../../eventlog/event-log.js';
import { loadConfig } from '../../runtime/config.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { eventually } from '../support/wait.js';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

const user = { username: 'feature-gateway', password: 'kafka-secret' };

describe('Kafka with SASL PLAIN', () => {
  let broker: KafkaBroker;
  const logs: KafkaLog[] = [];
  const logFor = (env: Record<string, string>, clientId: string): KafkaLog => {
    const config = loadConfig({ KAFKA_BROKERS: broker.brokers.join(','), ...env });
    const log = new KafkaLog({ brokers: config.kafkaBrokers!, clientId, security: config.kafkaSecurity });
    logs.push(log);
    return log;
  };

  before(async () => {
    broker = await KafkaBroker.start({ sasl: user, startTimeoutMs: 120_000 });
  });
  after(async () => {
    for (const log of logs) await log.close().catch(() => {});
    await broker?.destroy();
  });

  test('KAFKA_SASL_MECHANISM=plain with user and password: a produced record reaches a tail', async () => {
    const log = logFor({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: user.username, KAFKA_SASL_PASSWORD: user.password }, 'sasl-ok');
    await log.createTopics([{ topic: 'sasl-check', partitions: 1 }]);
    const received: LogRecord[] = [];
    const tail = await log.tail({ topics: ['sasl-check'], onRecord: async (record) => void received.push(record) });
    try {
      // The tail starts at the end once it has joined: produce until a record arrives.
      await eventually(async () => {
        await log.produce([{ topic: 'sasl-check', key: 'k', value: 'hello over SASL' }]);
        assert.ok(received.length > 0, 'nothing received yet');
      }, 60_000, 1000);
      assert.equal(received[0]!.value.toString(), 'hello over SASL');
    } finally {
      await tail.stop();
    }
  });

  test('a wrong password is refused with an authentication error', async () => {
    const log = logFor({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: user.username, KAFKA_SASL_PASSWORD: 'wrong' }, 'sasl-wrong');
    await assert.rejects(log.createTopics([{ topic: 'never', partitions: 1 }]), /SASL|[Aa]uthentication/);
  });

  test('a client without SASL is not served', async () => {
    const log = logFor({}, 'sasl-none');
    // The broker closes an unauthenticated connection at its first request after ApiVersions.
    await assert.rejects(log.createTopics([{ topic: 'never', partitions: 1 }]), /Closed connection/);
  });
});
