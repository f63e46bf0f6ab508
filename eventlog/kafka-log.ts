import { randomUUID } from 'node:crypto';
import { Gauge } from 'prom-client';
import { Kafka, logLevel, type Consumer, type KafkaConfig, type Producer, type IHeaders, type SASLOptions } from 'kafkajs';
import type { KafkaSecurity } from '../runtime/config.js';
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

/** Records per produce request inside a transaction (~300 bytes each: far below 1 MB). */
const outputSlice = 500;

export interface KafkaLogOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  /** TLS and SASL (KAFKA_SSL*, KAFKA_SASL_*); absent: plaintext, no authentication. */
  readonly security?: KafkaSecurity;
}

/**
 * The kafkajs connection options for the configured security: the one place
 * KAFKA_SSL* and KAFKA_SASL_* become client options (every Kafka client of
 * the project is built from a KafkaLog). TLS verifies the broker against
 * KAFKA_SSL_CA_FILE, else the system CAs; never unverified.
 */
export function kafkaSecurityOptions(security: KafkaSecurity | undefined): Pick<KafkaConfig, 'ssl' | 'sasl'> {
  const out: Pick<KafkaConfig, 'ssl' | 'sasl'> = {};
  if (security?.ssl) {
    const { ca, cert, key } = security.ssl;
    out.ssl = { rejectUnauthorized: true, ...(ca !== undefined ? { ca: [ca] } : {}), ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}) };
  }
  if (security?.sasl) {
    const { mechanism, username, password } = security.sasl;
    out.sasl = { mechanism, username, password } as SASLOptions;
  }
  return out;
}

export class KafkaLog implements EventLog {
  readonly kind = 'kafka';
  private readonly kafka: Kafka;
  private producer: Promise<Producer> | null = null;
  private readonly closers = new Set<() => Promise<void>>();

  constructor(readonly options: KafkaLogOptions) {
    this.kafka = new Kafka({
      clientId: options.clientId,
      brokers: [...options.brokers],
      ...kafkaSecurityOptions(options.security),
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
    // One producer however many calls race to be first: they share its connect.
    this.producer ??= (async () => {
      const producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      return producer;
    })();
    await (await this.producer).sendBatch({ topicMessages: toTopicMessages(records), acks: -1 });
  }

  consumer(options: ConsumerOptions): TransactionalConsumer {
    const consumer = new KafkaTransactionalConsumer(this.kafka, options);
    this.closers.add(() => consumer.stop());
    return consumer;
  }

  async tail(options: TailOptions): Promise<Tail> {
    // A group of its own (kafkajs has no group-less consumer), starting at the end, never committing:
    // every replica sees every record from when it starts.
    const consumer = this.kafka.consumer({ groupId: `${this.options.clientId}-tail-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 50 });
    await consumer.connect();
    for (const topic of options.topics) await consumer.subscribe({ topic, fromBeginning: false });
    await consumer.run({
      autoCommit: false,
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
    const producer = this.producer;
    this.producer = null;
    await (await producer?.catch(() => null))?.disconnect();
  }
}

class KafkaTransactionalConsumer implements TransactionalConsumer {
  private readonly consumer: Consumer;
  private readonly producers = new Map<string, Producer>();
  /** Checkpoints committed with each owned partition's offsets; dropped on rebalance or failure and re-read. */
  private readonly checkpoints = new Map<string, string | null>();
  private started = false;

  constructor(private readonly kafka: Kafka, private readonly options: ConsumerOptions) {
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      readUncommitted: false,
      sessionTimeout: 6_000,
      heartbeatInterval: 1000,
      rebalanceTimeout: 20_000,
      maxWaitTimeInMs: 50,
      retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 2000 },
    });
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      log.error({ err: payload.error.message, restart: payload.restart, group: this.options.groupId }, 'kafka consumer crashed');
      // kafkajs restarts the consumer after retriable errors; after any other, stopping silently would stall the group.
      if (!payload.restart) this.options.onFatal?.(payload.error);
    });
    // After a rebalance a partition may come back with offsets another process committed.
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => this.checkpoints.clear());
    await this.consumer.connect();
    for (const topic of this.options.topics) await this.consumer.subscribe({ topic, fromBeginning: this.options.fromBeginning });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
        if (batch.isEmpty() || !isRunning() || isStale()) return;
        const records = batch.messages.map((m) => toLogRecord(batch.topic, batch.partition, m));
        const tp = `${batch.topic}/${batch.partition}`;
        if (!this.checkpoints.has(tp)) this.checkpoints.set(tp, await this.committedCheckpoint(batch.topic, batch.partition));
        let result;
        try {
          result = await this.options.handler({ topic: batch.topic, partition: batch.partition, records }, this.checkpoints.get(tp) ?? null);
        } catch (error) {
          this.checkpoints.delete(tp);
          throw error;
        }
        const outputs = result.records;
        if (!isRunning() || isStale()) return; // the partition moved: leave the batch to its new owner
        const last = records[records.length - 1]!.offset;
        const producer = await this.producerFor(batch.topic, batch.partition);
        const tx = await producer.transaction();
        try {
          // In slices: one produce request must stay under the broker's message.max.bytes.
          for (let i = 0; i < outputs.length; i += outputSlice) {
            await tx.sendBatch({ topicMessages: toTopicMessages(outputs.slice(i, i + outputSlice)), acks: -1 });
          }
          const committed = { partition: batch.partition, offset: String(last + 1), metadata: result.checkpoint };
          await tx.sendOffsets({ consumerGroupId: this.options.groupId, topics: [{ topic: batch.topic, partitions: [committed] }] });
          await tx.commit();
          this.checkpoints.set(tp, result.checkpoint);
        } catch (error) {
          this.checkpoints.delete(tp);
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

  private async committedCheckpoint(topic: string, partition: number): Promise<string | null> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const [offsets] = await admin.fetchOffsets({ groupId: this.options.groupId, topics: [topic] });
      return offsets?.partitions.find((p) => p.partition === partition)?.metadata || null;
    } finally {
      await admin.disconnect();
    }
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
