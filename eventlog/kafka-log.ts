import { randomUUID } from 'node:crypto';
import { Gauge } from 'prom-client';
import { Kafka, logLevel, type Consumer, type KafkaConfig, type Producer, type IHeaders } from 'kafkajs';
import { log } from '../runtime/log.js';
import { metricsRegistry } from '../runtime/metrics.js';
import type {
  ConsumerOptions, EventLog, LogRecord, OutgoingRecord, Tail, TailOptions, TransactionalConsumer,
} from './event-log.js';

/**
 * The event log on Apache Kafka, through kafkajs.
 *
 * Transactions: one transactional producer per consumed partition, with a
 * transactional id derived from the group, topic and partition. When a
 * rebalance moves a partition to another process, that process's producer
 * takes over the id and fences the old one, so a zombie cannot commit
 * (kafkajs predates KIP-447's fencing by group generation; stable ids per
 * partition are the classic way). The consumer reads committed records only.
 */
export const lagGauge = new Gauge({
  name: 'materializer_lag_events',
  help: 'Records between the last committed batch and the end of the partition.',
  labelNames: ['topic', 'partition'] as const,
  registers: [metricsRegistry],
});

export interface KafkaLogOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly ssl?: KafkaConfig['ssl'];
  readonly sasl?: KafkaConfig['sasl'];
}

export class KafkaLog implements EventLog {
  readonly kind = 'kafka';
  private readonly kafka: Kafka;
  private producer: Producer | null = null;
  private readonly closers = new Set<() => Promise<void>>();

  constructor(readonly options: KafkaLogOptions) {
    this.kafka = new Kafka({
      clientId: options.clientId,
      brokers: [...options.brokers],
      ssl: options.ssl,
      sasl: options.sasl,
      connectionTimeout: 3000,
      retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 },
      logLevel: logLevel.WARN,
      logCreator: () => ({ namespace, level, log: entry }) => {
        const { message, ...rest } = entry;
        const line = { component: 'kafkajs', namespace, ...rest };
        if (level <= logLevel.ERROR) log.warn(line, message);
        else log.debug(line, message);
      },
    });
  }

  async createTopics(topics: readonly { topic: string; partitions: number }[]): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      const missing = topics.filter((t) => !existing.has(t.topic));
      if (missing.length > 0) {
        await admin.createTopics({ waitForLeaders: true, topics: missing.map((t) => ({ topic: t.topic, numPartitions: t.partitions, replicationFactor: 1 })) });
      }
    } finally {
      await admin.disconnect();
    }
  }

  async produce(records: readonly OutgoingRecord[]): Promise<void> {
    if (!this.producer) {
      const producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      this.producer = producer;
    }
    await this.producer.sendBatch({ topicMessages: toTopicMessages(records), acks: -1 });
  }

  consumer(options: ConsumerOptions): TransactionalConsumer {
    const consumer = new KafkaTransactionalConsumer(this.kafka, options);
    this.closers.add(() => consumer.stop());
    return consumer;
  }

  async tail(options: TailOptions): Promise<Tail> {
    // A group of its own, starting at the end: every replica sees every record.
    const consumer = this.kafka.consumer({ groupId: `${this.options.clientId}-tail-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 50 });
    await consumer.connect();
    for (const topic of options.topics) await consumer.subscribe({ topic, fromBeginning: false });
    await consumer.run({
      autoCommit: true,
      eachMessage: async ({ topic, partition, message }) => options.onRecord(toLogRecord(topic, partition, message)),
    });
    const stop = async (): Promise<void> => {
      this.closers.delete(stop);
      await consumer.disconnect();
    };
    this.closers.add(stop);
    return { stop };
  }

  async close(): Promise<void> {
    for (const close of [...this.closers]) await close().catch((e: Error) => log.warn({ err: e.message }, 'kafka close'));
    this.closers.clear();
    await this.producer?.disconnect();
    this.producer = null;
  }
}

class KafkaTransactionalConsumer implements TransactionalConsumer {
  private readonly consumer: Consumer;
  private readonly producers = new Map<string, Producer>();
  private started = false;

  constructor(private readonly kafka: Kafka, private readonly options: ConsumerOptions) {
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      readUncommitted: false,
      sessionTimeout: 10_000,
      heartbeatInterval: 1000,
      rebalanceTimeout: 20_000,
      maxWaitTimeInMs: 50,
      retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 2000 },
    });
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.consumer.connect();
    for (const topic of this.options.topics) await this.consumer.subscribe({ topic, fromBeginning: this.options.fromBeginning });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
        if (batch.isEmpty() || !isRunning() || isStale()) return;
        const records = batch.messages.map((m) => toLogRecord(batch.topic, batch.partition, m));
        const outputs = await this.options.handler({ topic: batch.topic, partition: batch.partition, records });
        if (!isRunning() || isStale()) return; // the partition moved: leave the batch to its new owner
        const last = records[records.length - 1]!.offset;
        const producer = await this.producerFor(batch.topic, batch.partition);
        const tx = await producer.transaction();
        try {
          if (outputs.length > 0) await tx.sendBatch({ topicMessages: toTopicMessages(outputs), acks: -1 });
          await tx.sendOffsets({
            consumerGroupId: this.options.groupId,
            topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: String(last + 1) }] }],
          });
          await tx.commit();
        } catch (error) {
          await tx.abort().catch(() => undefined);
          // A fenced or broken producer is rebuilt on the next batch.
          this.producers.delete(`${batch.topic}/${batch.partition}`);
          await producer.disconnect().catch(() => undefined);
          throw error;
        }
        resolveOffset(String(last));
        lagGauge.set({ topic: batch.topic, partition: String(batch.partition) }, Math.max(0, Number(batch.highWatermark) - last - 1));
        await heartbeat();
      },
    });
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.consumer.disconnect();
    for (const producer of this.producers.values()) await producer.disconnect().catch(() => undefined);
    this.producers.clear();
  }

  private async producerFor(topic: string, partition: number): Promise<Producer> {
    const key = `${topic}/${partition}`;
    let producer = this.producers.get(key);
    if (!producer) {
      producer = this.kafka.producer({
        transactionalId: `${this.options.groupId}.${topic}.${partition}`,
        idempotent: true,
        maxInFlightRequests: 1,
        transactionTimeout: 30_000,
      });
      await producer.connect();
      this.producers.set(key, producer);
    }
    return producer;
  }
}

function toLogRecord(topic: string, partition: number, m: { offset: string; key: Buffer | null; value: Buffer | null; timestamp: string; headers?: IHeaders }): LogRecord {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(m.headers ?? {})) if (v !== undefined) headers[k] = Array.isArray(v) ? String(v[0]) : String(v);
  return { topic, partition, offset: Number(m.offset), key: m.key ? m.key.toString('utf8') : null, value: m.value ?? Buffer.alloc(0), timestampMs: Number(m.timestamp), headers };
}

function toTopicMessages(records: readonly OutgoingRecord[]) {
  const byTopic = new Map<string, { key: string | null; value: Buffer | string; headers?: Record<string, string> }[]>();
  for (const r of records) {
    let list = byTopic.get(r.topic);
    if (!list) byTopic.set(r.topic, (list = []));
    list.push({ key: r.key, value: r.value, ...(r.headers ? { headers: { ...r.headers } } : {}) });
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}
