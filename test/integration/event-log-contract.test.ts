import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import type { BatchHandler, EventLog, LogRecord, OutgoingRecord, Tail, TransactionalConsumer } from '../../eventlog/event-log.js';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { eventually } from '../support/wait.js';

/**
 * One contract, both event logs (eventlog/event-log.ts): the embedded log of
 * `npm start` and the unit tests, and KafkaLog on a real broker
 * (test/support/kafka-broker.ts), run the same cases, as the store contract
 * does for the stores (ARCHITECTURE.md decision 8):
 *
 * - createTopics is idempotent, a topic keeps its partitions, and a topic
 *   that was not created is refused (Kafka's auto-creation is off);
 * - produce: keyed records of one key go to one partition, in order, with
 *   their key, value and headers;
 * - the transactional consumer: a batch's outputs, offsets and checkpoint are
 *   committed together; a failed handler commits nothing and gets the batch
 *   again; stop() commits the batch in hand; a group's members share the
 *   partitions, each output committed once;
 * - the tail: from the end, every record produced once it is confirmed, in
 *   order per partition, to every tail; its status (running, epoch,
 *   positions); committed records only.
 *
 * Where the two differ on purpose, the case says so: the embedded log
 * cannot hold an open or aborted transaction (its commit is one synchronous
 * step), so "an aborted transaction is not read" runs on Kafka alone.
 */

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

/** Generous: a Kafka consumer joins its group, and restarts after a failed batch, in seconds on a shared machine. */
const WAIT_MS = 90_000;

interface Adapter {
  readonly name: string;
  open(): Promise<EventLog>;
  /** Writes `records` in a transaction that is aborted (Kafka only: the embedded log has no such state). */
  abortedTransaction?(records: readonly OutgoingRecord[]): Promise<void>;
  destroy(): Promise<void>;
}

function embeddedAdapter(): Adapter {
  return { name: 'embedded', open: async () => new EmbeddedLog(), destroy: async () => undefined };
}

function kafkaAdapter(): Adapter {
  let broker: KafkaBroker | undefined;
  return {
    name: 'kafka (real broker, KafkaLog)',
    async open() {
      broker = await KafkaBroker.start();
      return new KafkaLog({ brokers: broker.brokers, clientId: `contract-${process.pid}`, connectionTimeoutMs: 2000, retryMaxMs: 300 });
    },
    async abortedTransaction(records) {
      const kafka = new Kafka({ clientId: 'contract-aborter', brokers: broker!.brokers, logLevel: logLevel.NOTHING });
      const producer = kafka.producer({ transactionalId: `contract-aborter-${process.pid}`, idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      try {
        const tx = await producer.transaction();
        for (const r of records) await tx.send({ topic: r.topic, messages: [{ key: r.key, value: r.value }] });
        await tx.abort();
      } finally {
        await producer.disconnect();
      }
    },
    async destroy() {
      await broker?.destroy();
    },
  };
}

let unique = 0;
const name = (what: string): string => `contract-${what}-${process.pid}-${++unique}`;

/** A tail of `topic`, once it is confirmed (from then on every record produced is delivered). */
async function confirmedTail(log: EventLog, topic: string): Promise<{ tail: Tail; records: LogRecord[] }> {
  const records: LogRecord[] = [];
  const tail = await log.tail({ topics: [topic], onRecord: (r) => records.push(r) });
  await eventually(async () => assert.notEqual(tail.status().confirmedAtMs, null, 'the tail confirmed its position'), WAIT_MS);
  return { tail, records };
}

interface Call {
  readonly partition: number;
  readonly offsets: readonly number[];
  readonly checkpoint: string | null;
}

/**
 * A member of `groupId` whose handler records each call and answers one output per record on `out`
 * (value `in:<partition>/<offset>`) with the checkpoint `<tag>@<last offset>`. `before` runs first (to fail or wait).
 */
function member(log: EventLog, options: { groupId: string; topic: string; out: string; tag: string; before?: (call: Call) => Promise<void> | void }): {
  consumer: TransactionalConsumer; calls: Call[];
} {
  const calls: Call[] = [];
  const handler: BatchHandler = async (batch, checkpoint) => {
    const call = { partition: batch.partition, offsets: batch.records.map((r) => r.offset), checkpoint };
    calls.push(call);
    await options.before?.(call);
    return {
      records: batch.records.map((r) => ({ topic: options.out, key: r.key, value: `in:${r.partition}/${r.offset}` })),
      checkpoint: `${options.tag}@${batch.records.at(-1)!.offset}`,
    };
  };
  const consumer = log.consumer({ groupId: options.groupId, topics: [options.topic], handler, instanceId: options.tag, fromBeginning: true });
  return { consumer, calls };
}

const values = (records: readonly LogRecord[]): string[] => records.map((r) => r.value.toString()).sort();
/** The inputs a list of calls covered, as `in:<partition>/<offset>`. */
const handled = (calls: readonly Call[]): string[] => calls.flatMap((c) => c.offsets.map((o) => `in:${c.partition}/${o}`));

for (const adapter of [embeddedAdapter(), kafkaAdapter()]) {
  describe(`event log contract: ${adapter.name}`, { timeout: 600_000 }, () => {
    let log: EventLog;
    const consumers: TransactionalConsumer[] = [];
    const tails: Tail[] = [];
    const started = async (c: TransactionalConsumer): Promise<TransactionalConsumer> => {
      consumers.push(c);
      await c.start();
      return c;
    };
    const tailed = async (topic: string) => {
      const t = await confirmedTail(log, topic);
      tails.push(t.tail);
      return t;
    };

    before(async () => {
      log = await adapter.open();
    });

    after(async () => {
      for (const c of consumers) await c.stop().catch(() => undefined);
      for (const t of tails) await t.stop().catch(() => undefined);
      await log?.close();
      await adapter.destroy();
    });

    test('createTopics is idempotent and a topic keeps the partitions it was created with', async () => {
      const topic = name('topics');
      await log.createTopics([{ topic, partitions: 3 }]);
      await log.createTopics([{ topic, partitions: 3 }]);
      await log.createTopics([{ topic, partitions: 5 }]);
      const { records } = await tailed(topic);
      await log.produce(Array.from({ length: 60 }, (_, i) => ({ topic, key: `key-${i}`, value: String(i) })));
      await eventually(async () => assert.equal(records.length, 60), WAIT_MS);
      assert.deepEqual([...new Set(records.map((r) => r.partition))].sort(), [0, 1, 2]);
    });

    test('a topic that was not created is refused by produce, tail and consumer, and nothing is written to it', async () => {
      const topic = name('missing');
      await assert.rejects(log.produce([{ topic, key: 'k', value: 'never' }]));
      await assert.rejects(log.tail({ topics: [topic], onRecord: () => undefined }));
      const { consumer } = member(log, { groupId: name('group'), topic, out: topic, tag: 'm' });
      await assert.rejects(consumer.start());
      await consumer.stop();
      // Created afterwards, it is empty: the refused produce left nothing behind.
      await log.createTopics([{ topic, partitions: 1 }]);
      const out = name('out');
      await log.createTopics([{ topic: out, partitions: 1 }]);
      const { consumer: reader, calls } = member(log, { groupId: name('group'), topic, out, tag: 'r' });
      await started(reader);
      await log.produce([{ topic, key: 'k', value: 'first' }]);
      await eventually(async () => assert.deepEqual(handled(calls), ['in:0/0']), WAIT_MS);
    });

    test('produce: records of one key go to one partition in the order produced, with their key, value and headers', async () => {
      const topic = name('keys');
      await log.createTopics([{ topic, partitions: 3 }]);
      const { records } = await tailed(topic);
      const startedAt = Date.now();
      const sent: OutgoingRecord[] = [];
      for (let round = 0; round < 5; round++) {
        const batch: OutgoingRecord[] = ['a', 'b', 'c', 'd', 'e', 'f'].map((key) => ({
          topic, key, value: round % 2 === 0 ? `${key}-${round}` : Buffer.from(`${key}-${round}`), headers: { round: String(round), key },
        }));
        sent.push(...batch);
        await log.produce(batch);
      }
      await log.produce([{ topic, key: null, value: 'no key' }]);
      await eventually(async () => assert.equal(records.length, sent.length + 1), WAIT_MS);
      for (const key of ['a', 'b', 'c', 'd', 'e', 'f']) {
        const got = records.filter((r) => r.key === key);
        assert.equal(new Set(got.map((r) => r.partition)).size, 1, `key ${key} in one partition`);
        assert.deepEqual(got.map((r) => r.value.toString()), [0, 1, 2, 3, 4].map((round) => `${key}-${round}`), `key ${key} in order`);
        assert.deepEqual(got.map((r) => r.headers), [0, 1, 2, 3, 4].map((round) => ({ round: String(round), key })));
        for (const r of got) assert.equal(r.topic, topic);
      }
      assert.deepEqual(records.filter((r) => r.key === null).map((r) => r.value.toString()), ['no key']);
      for (const partition of new Set(records.map((r) => r.partition))) {
        const offsets = records.filter((r) => r.partition === partition).map((r) => r.offset);
        assert.deepEqual(offsets, offsets.map((_, i) => i), `partition ${partition} of a new topic: offsets 0, 1, 2, …`);
      }
      for (const r of records) assert.ok(r.timestampMs >= startedAt - 60_000 && r.timestampMs <= Date.now() + 60_000, `timestamp ${r.timestampMs}`);
    });

    test('a batch\'s outputs, offsets and checkpoint are committed together; a new member resumes after them with the checkpoint', async () => {
      const [input, out, groupId] = [name('in'), name('out'), name('group')];
      await log.createTopics([{ topic: input, partitions: 2 }, { topic: out, partitions: 1 }]);
      const outputs = await tailed(out);
      const first = member(log, { groupId, topic: input, out, tag: 'first' });
      await log.produce(Array.from({ length: 10 }, (_, i) => ({ topic: input, key: `k${i}`, value: String(i) })));
      await started(first.consumer);
      await eventually(async () => assert.equal(outputs.records.length, 10), WAIT_MS);
      await first.consumer.stop();
      // Every record handled once, each partition's first batch without a checkpoint, later ones with the one before.
      assert.deepEqual(handled(first.calls).sort(), values(outputs.records));
      for (const partition of [0, 1]) {
        const calls = first.calls.filter((c) => c.partition === partition);
        calls.forEach((c, i) => assert.equal(c.checkpoint, i === 0 ? null : `first@${calls[i - 1]!.offsets.at(-1)}`));
      }

      const second = member(log, { groupId, topic: input, out, tag: 'second' });
      await started(second.consumer);
      await log.produce(Array.from({ length: 10 }, (_, i) => ({ topic: input, key: `k${i}`, value: String(10 + i) })));
      await eventually(async () => assert.equal(outputs.records.length, 20), WAIT_MS);
      await second.consumer.stop();
      assert.equal(new Set(values(outputs.records)).size, 20, 'no output twice');
      assert.deepEqual([...handled(first.calls), ...handled(second.calls)].sort(), values(outputs.records), 'every input handled once');
      for (const partition of [0, 1]) {
        const before = first.calls.filter((c) => c.partition === partition);
        const after = second.calls.filter((c) => c.partition === partition);
        if (after.length === 0) continue;
        assert.equal(after[0]!.checkpoint, before.length > 0 ? `first@${before.at(-1)!.offsets.at(-1)}` : null, `partition ${partition}: the committed checkpoint`);
        assert.equal(after[0]!.offsets[0], before.length > 0 ? before.at(-1)!.offsets.at(-1)! + 1 : 0, `partition ${partition}: after the committed offset`);
      }
    });

    test('a handler that fails commits nothing and gets the same batch again, with the same checkpoint', async () => {
      const [input, out, groupId] = [name('in'), name('out'), name('group')];
      await log.createTopics([{ topic: input, partitions: 1 }, { topic: out, partitions: 1 }]);
      const outputs = await tailed(out);
      let failures = 0;
      const m = member(log, {
        groupId, topic: input, out, tag: 'm',
        before: () => {
          if (failures++ === 0) throw new Error('handler failed (test)');
        },
      });
      await log.produce([0, 1, 2].map((i) => ({ topic: input, key: 'k', value: String(i) })));
      await started(m.consumer);
      await eventually(async () => assert.equal(outputs.records.length, 3), WAIT_MS);
      assert.deepEqual(m.calls.slice(0, 2).map((c) => [c.offsets, c.checkpoint]), [[[0, 1, 2], null], [[0, 1, 2], null]]);
      await log.produce([{ topic: input, key: 'k', value: '3' }]);
      await eventually(async () => assert.equal(outputs.records.length, 4), WAIT_MS);
      assert.deepEqual(values(outputs.records), ['in:0/0', 'in:0/1', 'in:0/2', 'in:0/3'], 'each output once: the failed attempt left nothing');
      assert.deepEqual(m.calls.at(-1), { partition: 0, offsets: [3], checkpoint: 'm@2' });
      await m.consumer.stop();
    });

    test('stop() commits the batch in hand: its outputs are published and the next member starts after it', async () => {
      const [input, out, groupId] = [name('in'), name('out'), name('group')];
      await log.createTopics([{ topic: input, partitions: 1 }, { topic: out, partitions: 1 }]);
      const outputs = await tailed(out);
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => (entered = resolve));
      const slow = member(log, {
        groupId, topic: input, out, tag: 'slow',
        before: async () => {
          entered();
          await gate;
        },
      });
      await log.produce([{ topic: input, key: 'k', value: 'v' }]);
      await started(slow.consumer);
      await inHandler;
      const stopped = slow.consumer.stop();
      release();
      await stopped;
      await eventually(async () => assert.deepEqual(values(outputs.records), ['in:0/0']), WAIT_MS);

      const next = member(log, { groupId, topic: input, out, tag: 'next' });
      await started(next.consumer);
      await log.produce([{ topic: input, key: 'k', value: 'w' }]);
      await eventually(async () => assert.equal(outputs.records.length, 2), WAIT_MS);
      assert.deepEqual(next.calls.map((c) => [c.offsets, c.checkpoint]), [[[1], 'slow@0']]);
      assert.deepEqual(values(outputs.records), ['in:0/0', 'in:0/1']);
      await next.consumer.stop();
    });

    test('members of one group share its partitions; every input\'s output is committed once', async () => {
      const [input, out, groupId] = [name('in'), name('out'), name('group')];
      await log.createTopics([{ topic: input, partitions: 4 }, { topic: out, partitions: 1 }]);
      const outputs = await tailed(out);
      const a = member(log, { groupId, topic: input, out, tag: 'a' });
      const b = member(log, { groupId, topic: input, out, tag: 'b' });
      await started(a.consumer);
      await started(b.consumer);
      // Records for every partition until both members have handled some: B's share comes once the group has rebalanced.
      let produced = 0;
      await eventually(async () => {
        await log.produce(Array.from({ length: 8 }, (_, i) => ({ topic: input, key: `key-${produced + i}`, value: String(produced + i) })));
        produced += 8;
        assert.ok(a.calls.length > 0 && b.calls.length > 0, `both members handled records (a ${a.calls.length}, b ${b.calls.length} batches)`);
      }, WAIT_MS, 500);
      await eventually(async () => assert.equal(outputs.records.length, produced), WAIT_MS);
      assert.equal(new Set(values(outputs.records)).size, produced, 'no output committed twice');
      // A batch in hand during the rebalance may be handled again by the new owner, never committed twice.
      assert.deepEqual([...new Set([...handled(a.calls), ...handled(b.calls)])].sort(), values(outputs.records), 'every input handled');
      await a.consumer.stop();
      await b.consumer.stop();
    });

    test('a tail starts at the end and delivers every later record, in order per partition, to every tail; its status says where it is', async () => {
      const topic = name('tail');
      await log.createTopics([{ topic, partitions: 3 }]);
      await log.produce([{ topic, key: 'early', value: 'before the tails' }]);
      const one = await tailed(topic);
      const two = await tailed(topic);
      const epoch = one.tail.status().epoch;
      assert.equal(one.tail.status().running, true);
      const sent = Array.from({ length: 30 }, (_, i) => ({ topic, key: `k${i % 5}`, value: String(i) }));
      await log.produce(sent);
      await eventually(async () => assert.equal(one.records.length, 30), WAIT_MS);
      await eventually(async () => assert.equal(two.records.length, 30), WAIT_MS);
      for (const { records } of [one, two]) {
        assert.ok(!records.some((r) => r.key === 'early'), 'a record produced before the tail started is not delivered');
        for (const key of ['k0', 'k1', 'k2', 'k3', 'k4']) {
          assert.deepEqual(records.filter((r) => r.key === key).map((r) => Number(r.value.toString())), sent.filter((r) => r.key === key).map((r) => Number(r.value)));
        }
      }
      // The status: every delivered record is below its partition's `next`, which is one past the last delivered.
      const status = one.tail.status();
      assert.equal(status.epoch, epoch, 'the epoch is unchanged while the tail stays connected');
      for (const partition of new Set(one.records.map((r) => r.partition))) {
        const position = status.partitions.find((p) => p.topic === topic && p.partition === partition);
        assert.ok(position, `a position for partition ${partition}`);
        const lastOffset = Math.max(...one.records.filter((r) => r.partition === partition).map((r) => r.offset));
        assert.equal(position.next, lastOffset + 1);
        assert.ok(position.end >= position.next, `end ${position.end} >= next ${position.next}`);
      }
      await one.tail.stop();
      assert.equal(one.tail.status().running, false);
      assert.equal(one.tail.status().confirmedAtMs, null);
      await log.produce([{ topic, key: 'late', value: 'after the first tail stopped' }]);
      await eventually(async () => assert.ok(two.records.some((r) => r.key === 'late')), WAIT_MS);
      assert.ok(!one.records.some((r) => r.key === 'late'), 'a stopped tail delivers nothing');
    });

    test('tails and consumers read committed records only: an aborted transaction is skipped', { skip: adapter.abortedTransaction ? false : 'the embedded log has no open or aborted transactions (a commit is one synchronous step)' }, async () => {
      const [topic, out, groupId] = [name('committed'), name('out'), name('group')];
      await log.createTopics([{ topic, partitions: 1 }, { topic: out, partitions: 1 }]);
      const { records } = await tailed(topic);
      await adapter.abortedTransaction!([{ topic, key: 'k', value: 'aborted 1' }, { topic, key: 'k', value: 'aborted 2' }]);
      await log.produce([{ topic, key: 'k', value: 'committed' }]);
      await eventually(async () => assert.ok(records.length >= 1), WAIT_MS);
      const m = member(log, { groupId, topic, out, tag: 'm' });
      await started(m.consumer);
      await eventually(async () => assert.ok(m.calls.length >= 1), WAIT_MS);
      // A later record shows that nothing else was going to come before it.
      await log.produce([{ topic, key: 'k', value: 'later' }]);
      await eventually(async () => assert.equal(records.at(-1)?.value.toString(), 'later'), WAIT_MS);
      await eventually(async () => assert.ok(handled(m.calls).length >= 2), WAIT_MS);
      assert.deepEqual(records.map((r) => r.value.toString()), ['committed', 'later']);
      const offsets = records.map((r) => r.offset);
      assert.deepEqual(handled(m.calls), offsets.map((o) => `in:0/${o}`), 'the consumer got the committed records alone');
      await m.consumer.stop();
    });
  });
}
