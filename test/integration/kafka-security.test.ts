/**
 * The event log against real Kafka brokers whose client listener requires
 * SASL (SASL_PLAINTEXT, mechanism PLAIN) or TLS with client certificates:
 * with KAFKA_SASL_* / KAFKA_SSL_* from the config a record goes through
 * (produce, tail); a wrong password, no SASL, an untrusted broker or a
 * missing client certificate is refused rather than hanging.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import type { LogRecord } from '../../eventlog/event-log.js';
import { loadConfig } from '../../runtime/config.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { makeTestPki, type TestPki } from '../support/tls-certs.js';
import { eventually } from '../support/wait.js';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

const user = { username: 'feature-gateway', password: 'kafka-secret' };

/** Creates `topic`, tails it and produces until a record arrives: the connection works end to end. */
async function roundTrip(log: KafkaLog, topic: string, text: string): Promise<void> {
  await log.createTopics([{ topic, partitions: 1 }]);
  const received: LogRecord[] = [];
  const tail = await log.tail({ topics: [topic], onRecord: async (record) => void received.push(record) });
  try {
    // The tail starts at the end once it has joined: produce until a record arrives.
    await eventually(async () => {
      await log.produce([{ topic, key: 'k', value: text }]);
      assert.ok(received.length > 0, 'nothing received yet');
    }, 60_000, 1000);
    assert.equal(received[0]!.value.toString(), text);
  } finally {
    await tail.stop();
  }
}

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
    await roundTrip(log, 'sasl-check', 'hello over SASL');
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

describe('Kafka over TLS with client certificates', () => {
  let pki: TestPki;
  let broker: KafkaBroker;
  const logs: KafkaLog[] = [];
  const logFor = (env: Record<string, string>, clientId: string): KafkaLog => {
    const config = loadConfig({ KAFKA_BROKERS: broker.brokers.join(','), ...env });
    const log = new KafkaLog({ brokers: config.kafkaBrokers!, clientId, security: config.kafkaSecurity });
    logs.push(log);
    return log;
  };

  before(async () => {
    pki = makeTestPki();
    broker = await KafkaBroker.start({
      startTimeoutMs: 120_000,
      tls: {
        certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.caCert, requireClientCert: true,
        probe: { cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) },
      },
    });
  });
  after(async () => {
    for (const log of logs) await log.close().catch(() => {});
    await broker?.destroy();
    pki?.remove();
  });

  test('KAFKA_SSL_CA_FILE with a client certificate: a produced record reaches a tail', async () => {
    const log = logFor({ KAFKA_SSL_CA_FILE: pki.caCert, KAFKA_SSL_CERT_FILE: pki.clientCert, KAFKA_SSL_KEY_FILE: pki.clientKey }, 'tls-ok');
    await roundTrip(log, 'tls-check', 'hello over TLS');
  });

  test('without the CA the broker is not trusted (system CAs only)', async () => {
    const log = logFor({ KAFKA_SSL: 'true', KAFKA_SSL_CERT_FILE: pki.clientCert, KAFKA_SSL_KEY_FILE: pki.clientKey }, 'tls-untrusted');
    await assert.rejects(log.createTopics([{ topic: 'never', partitions: 1 }]), /certificate/i);
  });

  test('without a client certificate the broker refuses the handshake', async () => {
    const log = logFor({ KAFKA_SSL_CA_FILE: pki.caCert }, 'tls-no-cert');
    await assert.rejects(log.createTopics([{ topic: 'never', partitions: 1 }]));
  });
});
