import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Kafka, logLevel, type Admin, type Consumer, type KafkaMessage } from 'kafkajs';
import { KafkaBroker } from '../support/kafka-broker.js';

/**
 * kafkajs 2.2.4 against the real Kafka 4.x broker the harness starts (KRaft,
 * jars from Maven Central): topics with partitions, produce/consume,
 * transactions (consume-transform-produce with `sendOffsets`, abort,
 * read_committed) and a broker restart that keeps data and committed offsets.
 */

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

interface Received {
  partition: number;
  offset: string;
  key: string;
  value: string;
}

const stepTimeoutMs = 30_000;

describe('real Kafka broker (KRaft) with kafkajs', () => {
  let broker: KafkaBroker;
  let kafka: Kafka;
  let admin: Admin;

  before(async () => {
    broker = await KafkaBroker.start();
    kafka = new Kafka({
      clientId: 'fg-kafka-broker-test',
      brokers: broker.brokers,
      // kafkajs logs retried, expected errors (coordinator loading, concurrent transactions) at ERROR.
      logLevel: process.env.LOG_LEVEL === 'debug' ? logLevel.INFO : logLevel.NOTHING,
    });
    admin = kafka.admin();
    await admin.connect();
  });

  after(async () => {
    await admin?.disconnect().catch(() => {});
    await broker?.destroy();
  });

  test('creates a topic with 3 partitions; produces and consumes in partition order', { timeout: 60_000 }, async () => {
    assert.equal(await admin.createTopics({ topics: [{ topic: 'events', numPartitions: 3 }], waitForLeaders: true }), true);
    const metadata = await admin.fetchTopicMetadata({ topics: ['events'] });
    assert.equal(metadata.topics[0]?.partitions.length, 3);

    const producer = kafka.producer();
    await producer.connect();
    const sent = Array.from({ length: 12 }, (_, i) => ({ partition: i % 3, key: `k${i}`, value: `v${i}` }));
    await producer.send({ topic: 'events', acks: -1, messages: sent });
    await producer.disconnect();

    const got = await consume(kafka, { groupId: 'events-reader', topic: 'events', count: sent.length });
    for (const partition of [0, 1, 2]) {
      assert.deepEqual(
        got.filter((m) => m.partition === partition).map((m) => [m.offset, m.value]),
        sent.filter((m) => m.partition === partition).map((m, i) => [String(i), m.value]),
      );
    }
    const offsets = await admin.fetchTopicOffsets('events');
    assert.deepEqual(offsets.map((o) => [o.partition, o.high]).sort(), [[0, '4'], [1, '4'], [2, '4']]);
  });

  test('a transaction carries output records and consumer offsets together; read_committed skips aborted ones', { timeout: 90_000 }, async () => {
    await admin.createTopics({
      topics: [{ topic: 'tx-in', numPartitions: 3 }, { topic: 'tx-out', numPartitions: 1 }],
      waitForLeaders: true,
    });
    const plain = kafka.producer();
    await plain.connect();
    const inputs = Array.from({ length: 6 }, (_, i) => ({ partition: i % 3, key: `e${i}`, value: `in-${i}` }));
    await plain.send({ topic: 'tx-in', acks: -1, messages: inputs });
    await plain.disconnect();

    const producer = kafka.producer({ idempotent: true, transactionalId: 'fg-test-tx', maxInFlightRequests: 1 });
    await producer.connect();

    // Consume-transform-produce: one transaction per fetched batch, committing the
    // consumer's position through the transaction (not through the consumer).
    const groupId = 'tx-processor';
    const consumer = kafka.consumer({ groupId });
    await consumer.connect();
    await consumer.subscribe({ topic: 'tx-in', fromBeginning: true });
    let processed = 0;
    let transactions = 0;
    await runUntil(consumer, () => processed === inputs.length, {
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        if (batch.messages.length === 0) return;
        const tx = await producer.transaction();
        try {
          await tx.send({
            topic: 'tx-out',
            messages: batch.messages.map((m) => ({ key: m.key, value: `out-${String(m.value)}` })),
          });
          await tx.sendOffsets({
            consumerGroupId: groupId,
            topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next(batch.lastOffset()) }] }],
          });
          await tx.commit();
        } catch (error) {
          await tx.abort().catch(() => {});
          throw error;
        }
        transactions += 1;
        processed += batch.messages.length;
      },
    });
    assert.ok(transactions >= 1);
    assert.deepEqual(await committed(admin, groupId, 'tx-in'), [[0, '2'], [1, '2'], [2, '2']]);

    // An aborted transaction: its records stay in the log, its offsets are not committed.
    const aborted = await producer.transaction();
    await aborted.send({ topic: 'tx-out', messages: [{ key: 'x', value: 'aborted-1' }, { key: 'x', value: 'aborted-2' }] });
    await aborted.sendOffsets({
      consumerGroupId: groupId,
      topics: [{ topic: 'tx-in', partitions: [{ partition: 0, offset: '0' }] }],
    });
    await aborted.abort();
    assert.deepEqual(await committed(admin, groupId, 'tx-in'), [[0, '2'], [1, '2'], [2, '2']]);

    // A last committed record after the aborted ones: a reader that got it has read past them.
    const last = await producer.transaction();
    await last.send({ topic: 'tx-out', messages: [{ key: 'x', value: 'final' }] });
    await last.commit();
    await producer.disconnect();

    // read_committed (kafkajs' default): exactly the committed outputs, then 'final'.
    const committedView = await consume(kafka, {
      groupId: 'tx-reader-committed',
      topic: 'tx-out',
      until: (got) => got.some((m) => m.value === 'final'),
    });
    const values = committedView.map((m) => m.value);
    assert.equal(values.at(-1), 'final');
    assert.deepEqual(values.slice(0, -1).sort(), inputs.map((m) => `out-${m.value}`).sort());

    // The aborted records are really in the log: a read_uncommitted reader sees them.
    const uncommittedView = await consume(kafka, {
      groupId: 'tx-reader-uncommitted',
      topic: 'tx-out',
      readUncommitted: true,
      until: (got) => got.some((m) => m.value === 'final'),
    });
    assert.deepEqual(
      uncommittedView.map((m) => m.value).filter((v) => v.startsWith('aborted')),
      ['aborted-1', 'aborted-2'],
    );
  });

  test('a second producer with the same transactionalId fences the first', { timeout: 60_000 }, async () => {
    await admin.createTopics({ topics: [{ topic: 'fence-out', numPartitions: 1 }], waitForLeaders: true });
    const options = { idempotent: true, transactionalId: 'fg-test-fence', maxInFlightRequests: 1 };
    const zombie = kafka.producer(options);
    await zombie.connect();
    const open = await zombie.transaction();
    await open.send({ topic: 'fence-out', messages: [{ value: 'zombie' }] });

    // The successor's InitProducerId aborts the zombie's open transaction and bumps the epoch.
    const successor = kafka.producer(options);
    await successor.connect();
    const tx = await successor.transaction();
    await tx.send({ topic: 'fence-out', messages: [{ value: 'successor' }] });
    await tx.commit();
    await successor.disconnect();

    await assert.rejects(open.commit(), (error: Error) => {
      assert.match(`${error.name} ${error.message}`, /fenced|epoch|ProducerFenced|INVALID_PRODUCER_EPOCH/i);
      return true;
    });
    await zombie.disconnect().catch(() => {});

    const view = await consume(kafka, {
      groupId: 'fence-reader',
      topic: 'fence-out',
      until: (got) => got.some((m) => m.value === 'successor'),
    });
    assert.deepEqual(view.map((m) => m.value), ['successor']);
  });

  test('a stopped and restarted broker keeps topic data and committed group offsets; so does a killed one', { timeout: 120_000 }, async () => {
    await admin.createTopics({ topics: [{ topic: 'durable', numPartitions: 3 }], waitForLeaders: true });
    const first = Array.from({ length: 6 }, (_, i) => ({ partition: i % 3, value: `first-${i}` }));
    await produce(kafka, 'durable', first);
    const groupId = 'durable-reader';
    await consume(kafka, { groupId, topic: 'durable', count: first.length, commit: true });
    assert.deepEqual(await committed(admin, groupId, 'durable'), [[0, '2'], [1, '2'], [2, '2']]);
    await admin.disconnect();

    await broker.stop();
    assert.equal(broker.running, false);
    await broker.restart();
    admin = kafka.admin();
    await admin.connect();

    assert.ok((await admin.listTopics()).includes('durable'));
    assert.deepEqual(await committed(admin, groupId, 'durable'), [[0, '2'], [1, '2'], [2, '2']]);
    const second = [0, 1, 2].map((partition) => ({ partition, value: `second-${partition}` }));
    await produce(kafka, 'durable', second);
    // The group resumes where it committed: were its offsets lost, it would start with first-*.
    const resumed = await consume(kafka, { groupId, topic: 'durable', count: second.length, commit: true });
    assert.deepEqual(resumed.map((m) => m.value).sort(), second.map((m) => m.value));
    await admin.disconnect();

    // SIGKILL: no controlled shutdown, the broker recovers its logs on start.
    await broker.kill();
    await broker.restart();
    admin = kafka.admin();
    await admin.connect();
    assert.deepEqual(await committed(admin, groupId, 'durable'), [[0, '3'], [1, '3'], [2, '3']]);
    const everything = await consume(kafka, { groupId: 'durable-fresh', topic: 'durable', count: first.length + second.length });
    assert.deepEqual(
      everything.map((m) => m.value).sort(),
      [...first, ...second].map((m) => m.value).sort(),
    );
  });
});

/** The offset after `offset` (a string in kafkajs). */
function next(offset: string): string {
  return (BigInt(offset) + 1n).toString();
}

async function produce(kafka: Kafka, topic: string, messages: { partition: number; value: string }[]): Promise<void> {
  const producer = kafka.producer();
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages });
  } finally {
    await producer.disconnect();
  }
}

/** The group's committed offsets on `topic` as [partition, offset] pairs, sorted by partition. */
async function committed(admin: Admin, groupId: string, topic: string): Promise<[number, string][]> {
  const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
  return (offsets?.partitions ?? []).map((p): [number, string] => [p.partition, p.offset]).sort((a, b) => a[0] - b[0]);
}

/**
 * Reads `topic` from the beginning (or the group's committed position) in a
 * new consumer until `count` messages (or `until`) arrived, then leaves the
 * group. With `commit`, offsets are committed after each message.
 */
async function consume(
  kafka: Kafka,
  options: {
    groupId: string;
    topic: string;
    count?: number;
    until?: (got: Received[]) => boolean;
    readUncommitted?: boolean;
    commit?: boolean;
  },
): Promise<Received[]> {
  const consumer = kafka.consumer({ groupId: options.groupId, readUncommitted: options.readUncommitted ?? false });
  await consumer.connect();
  await consumer.subscribe({ topic: options.topic, fromBeginning: true });
  const got: Received[] = [];
  const done = options.until ?? ((all: Received[]) => all.length >= (options.count ?? 0));
  await runUntil(consumer, () => done(got), {
    autoCommit: options.commit ?? false,
    autoCommitThreshold: 1,
    eachMessage: async ({ partition, message }) => {
      got.push(received(partition, message));
    },
  });
  return got;
}

function received(partition: number, message: KafkaMessage): Received {
  return { partition, offset: message.offset, key: String(message.key ?? ''), value: String(message.value ?? '') };
}

/**
 * `consumer.run(config)` until `done()` holds after a message or batch, then
 * disconnects (committing what autoCommit resolved). Rejects after
 * `stepTimeoutMs`, or when the consumer crashes.
 */
async function runUntil(
  consumer: Consumer,
  done: () => boolean,
  config: Parameters<Consumer['run']>[0] & object,
): Promise<void> {
  let finish!: () => void;
  let fail!: (error: Error) => void;
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const timer = setTimeout(() => fail(new Error(`consumer did not finish within ${stepTimeoutMs} ms`)), stepTimeoutMs);
  const removeCrashListener = consumer.on(consumer.events.CRASH, (event) => {
    if (!event.payload.restart) fail(event.payload.error);
  });
  const { eachMessage, eachBatch } = config;
  try {
    await consumer.run({
      ...config,
      ...(eachMessage && {
        eachMessage: async (payload) => {
          await eachMessage(payload);
          if (done()) finish();
        },
      }),
      ...(eachBatch && {
        eachBatch: async (payload) => {
          await eachBatch(payload);
          if (done()) finish();
        },
      }),
    });
    await finished;
  } finally {
    clearTimeout(timer);
    removeCrashListener();
    await consumer.disconnect();
  }
}
