import { EventEmitter } from 'node:events';
import { log } from '../runtime/log.js';
import { hash32 } from '../store/backends/hash-ring.js';
import type {
  ConsumerOptions, EventLog, LogRecord, OutgoingRecord, RecordBatch, Tail, TailOptions, TransactionalConsumer,
} from './event-log.js';

/**
 * An in-process, partitioned, transactional log with Kafka's semantics where
 * the materializer depends on them: records of one key stay in one partition
 * and in order; a consumer group's offsets and the records a batch produces
 * are committed together (in-process, one synchronous step, so atomic);
 * readers see committed records only; partitions of a topic are shared among
 * the live consumers of a group; a stopped consumer commits the batch in hand;
 * a topic must be created before it is used (as on Kafka with auto-creation
 * off). For `npm start` and fast tests; Kafka is the production log. The
 * contract both pass: test/integration/event-log-contract.test.ts.
 *
 * Retention, as Kafka's `retention` by size: each partition keeps its newest
 * `retainRecords` records (offsets are never reused); a consumer group behind
 * that resumes at the oldest record kept (Kafka's `auto.offset.reset=earliest`)
 * with a warning. Without it a long-running `npm start` would keep every demo
 * event and change event in memory.
 */
export class EmbeddedLog implements EventLog {
  readonly kind = 'embedded';
  private readonly topics = new Map<string, LogRecord[][]>();
  /** group → "topic/partition" → next offset to read, and the handler's checkpoint */
  private readonly committed = new Map<string, Map<string, { offset: number; checkpoint: string | null }>>();
  private readonly groups = new Map<string, Set<EmbeddedConsumer>>();
  private readonly appended = new EventEmitter();
  private roundRobin = 0;
  /** The offset of each partition's first kept record (absent: 0, nothing trimmed yet). */
  private readonly bases = new WeakMap<LogRecord[], number>();

  constructor(private readonly retainRecords = 10_000) {
    this.appended.setMaxListeners(0);
  }

  async createTopics(topics: readonly { topic: string; partitions: number }[]): Promise<void> {
    for (const { topic, partitions } of topics) {
      if (!this.topics.has(topic)) this.topics.set(topic, Array.from({ length: partitions }, () => []));
    }
  }

  async produce(records: readonly OutgoingRecord[]): Promise<void> {
    this.append(records);
  }

  /** Appends atomically: every record, or (on a topic not created) none. */
  append(records: readonly OutgoingRecord[]): LogRecord[] {
    for (const r of records) this.partitionsOf(r.topic);
    const now = Date.now();
    const written = records.map((r) => {
      const partitions = this.partitionsOf(r.topic);
      const partition = r.key === null ? this.roundRobin++ % partitions.length : hash32(r.key) % partitions.length;
      const records = partitions[partition]!;
      const record: LogRecord = {
        topic: r.topic, partition, offset: this.endOf(records), key: r.key,
        value: typeof r.value === 'string' ? Buffer.from(r.value) : r.value, timestampMs: now, headers: r.headers ?? {},
      };
      records.push(record);
      // Trimmed in steps of a tenth, so the copy is amortized over many appends.
      if (records.length > this.retainRecords * 1.1) {
        const drop = records.length - this.retainRecords;
        records.splice(0, drop);
        this.bases.set(records, this.baseOf(records) + drop);
      }
      return record;
    });
    for (const record of written) this.appended.emit('record', record);
    if (written.length > 0) this.appended.emit('appended');
    return written;
  }

  consumer(options: ConsumerOptions): TransactionalConsumer {
    return new EmbeddedConsumer(this, options);
  }

  async tail(options: TailOptions): Promise<Tail> {
    const topics = new Set(options.topics);
    // From the current end: what was appended before the tail started is not delivered (as with Kafka).
    const next = new Map<string, number>();
    for (const topic of topics) this.partitionsOf(topic).forEach((records, p) => next.set(`${topic}/${p}`, this.endOf(records)));
    let running = true;
    const listener = (record: LogRecord): void => {
      if (!topics.has(record.topic)) return;
      options.onRecord(record);
      next.set(`${record.topic}/${record.partition}`, record.offset + 1);
    };
    this.appended.on('record', listener);
    return {
      stop: async () => {
        running = false;
        this.appended.off('record', listener);
      },
      status: () => ({
        running,
        epoch: 0,
        // In-process delivery is synchronous with the append: the tail is always as up to date as it says.
        confirmedAtMs: running ? Date.now() : null,
        partitions: [...topics].flatMap((topic) => this.partitionsOf(topic).map((records, partition) => ({
          topic, partition, next: next.get(`${topic}/${partition}`) ?? this.baseOf(records), end: this.endOf(records),
        }))),
      }),
    };
  }

  async close(): Promise<void> {
    for (const members of this.groups.values()) for (const c of [...members]) await c.stop();
    this.appended.removeAllListeners();
  }

  // --- for EmbeddedConsumer ---------------------------------------------------------------

  /**
   * A topic's partitions. A topic that was not created is an error, as on Kafka (auto-creation is off
   * there): code that forgot createTopics must fail on the embedded log too, not only in production.
   */
  partitionsOf(topic: string): LogRecord[][] {
    const partitions = this.topics.get(topic);
    if (!partitions) throw new UnknownTopicError(topic);
    return partitions;
  }

  offsetOf(group: string, topic: string, partition: number, fromBeginning: boolean): { offset: number; checkpoint: string | null } {
    const committed = this.committed.get(group)?.get(`${topic}/${partition}`);
    if (committed !== undefined) return committed;
    const records = this.partitionsOf(topic)[partition]!;
    return { offset: fromBeginning ? this.baseOf(records) : this.endOf(records), checkpoint: null };
  }

  /** The offset of a partition's oldest kept record. */
  baseOf(records: LogRecord[]): number {
    return this.bases.get(records) ?? 0;
  }

  /** The offset the partition's next record gets. */
  endOf(records: LogRecord[]): number {
    return this.baseOf(records) + records.length;
  }

  /**
   * The transaction: outputs appended and the group's offset moved, in one synchronous step. Refused
   * (false, nothing written) when `consumer` no longer owns the partition, or the group's offset has moved
   * since the batch was read at `fromOffset`: the group changed while the batch was in hand and another
   * member handles (or has handled) it. Kafka fences such a zombie the same way, by group generation.
   */
  commit(consumer: EmbeddedConsumer, topic: string, partition: number, fromOffset: number, nextOffset: number,
    outputs: readonly OutgoingRecord[], checkpoint: string | null): boolean {
    const group = consumer.options.groupId;
    const current = this.committed.get(group)?.get(`${topic}/${partition}`);
    if (!this.assignment(consumer, topic).includes(partition) || (current !== undefined && current.offset !== fromOffset)) return false;
    for (const r of outputs) this.partitionsOf(r.topic);
    let offsets = this.committed.get(group);
    if (!offsets) this.committed.set(group, (offsets = new Map()));
    offsets.set(`${topic}/${partition}`, { offset: nextOffset, checkpoint });
    this.append(outputs);
    return true;
  }

  join(consumer: EmbeddedConsumer): void {
    let members = this.groups.get(consumer.options.groupId);
    if (!members) this.groups.set(consumer.options.groupId, (members = new Set()));
    members.add(consumer);
  }

  leave(consumer: EmbeddedConsumer): void {
    this.groups.get(consumer.options.groupId)?.delete(consumer);
  }

  /** Partitions of `topic` this member owns: round-robin over the group's members, by join order. */
  assignment(consumer: EmbeddedConsumer, topic: string): number[] {
    const members = [...(this.groups.get(consumer.options.groupId) ?? [])];
    const index = members.indexOf(consumer);
    if (index < 0) return [];
    return this.partitionsOf(topic).map((_, p) => p).filter((p) => p % members.length === index);
  }

  onAppend(listener: () => void): () => void {
    this.appended.on('appended', listener);
    return () => this.appended.off('appended', listener);
  }
}

export class UnknownTopicError extends Error {
  override name = 'UnknownTopicError';
  constructor(readonly topic: string) {
    super(`topic ${JSON.stringify(topic)} does not exist: create it first (createTopics), as Kafka has no auto-creation here`);
  }
}

/** Attempts at one batch before the consumer stops and calls onFatal. */
const maxBatchAttempts = 10;

class EmbeddedConsumer implements TransactionalConsumer {
  private running = false;
  private readonly failures = new Map<string, number>();
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly logStore: EmbeddedLog, readonly options: ConsumerOptions) {}

  async start(): Promise<void> {
    if (this.running) return;
    for (const topic of this.options.topics) this.logStore.partitionsOf(topic); // a topic not created: refused, as by Kafka
    this.running = true;
    this.logStore.join(this);
    this.unsubscribe = this.logStore.onAppend(() => this.wake?.());
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake?.();
    this.unsubscribe?.();
    await this.loop;
    this.logStore.leave(this);
  }

  private async run(): Promise<void> {
    const { groupId, topics, handler, fromBeginning } = this.options;
    while (this.running) {
      let worked = false;
      for (const topic of topics) {
        for (const partition of this.logStore.assignment(this, topic)) {
          if (!this.running) return;
          const records = this.logStore.partitionsOf(topic)[partition]!;
          const from = this.logStore.offsetOf(groupId, topic, partition, fromBeginning);
          if (from.offset >= this.logStore.endOf(records)) continue;
          const base = this.logStore.baseOf(records);
          if (from.offset < base) {
            log.warn({ topic, partition, groupId, committed: from.offset, oldestKept: base }, 'embedded consumer: records past retention were lost; resuming at the oldest kept');
          }
          const start = Math.max(from.offset, base) - base;
          const batch: RecordBatch = { topic, partition, records: records.slice(start, start + 500) };
          try {
            const result = await handler(batch, from.checkpoint);
            // Also when stop() came meanwhile: the batch in hand is committed, as KafkaLog commits it, so that a
            // graceful stop leaves no handled batch uncommitted (unless the partition went to another member).
            if (!this.logStore.commit(this, topic, partition, from.offset, batch.records[batch.records.length - 1]!.offset + 1, result.records, result.checkpoint)) {
              log.warn({ topic, partition, groupId }, 'embedded consumer: partition reassigned while its batch was in hand; the result is discarded');
            }
            if (!this.running) return;
          } catch (error) {
            // The batch is not committed and will be delivered again, as Kafka would after a failed transaction;
            // like kafkajs's consumer, give up after a bounded number of attempts and report it as fatal.
            const failures = (this.failures.get(`${topic}/${partition}`) ?? 0) + 1;
            this.failures.set(`${topic}/${partition}`, failures);
            log.error({ err: (error as Error).message, topic, partition, attempt: failures }, 'embedded consumer: batch failed; retrying');
            if (failures >= maxBatchAttempts) {
              this.running = false;
              this.unsubscribe?.();
              this.logStore.leave(this); // its partitions go to the group's other members
              this.options.onFatal?.(error as Error);
              return;
            }
            await new Promise((r) => setTimeout(r, Math.min(200 * failures, 2000)));
            continue;
          }
          this.failures.delete(`${topic}/${partition}`);
          worked = true;
        }
      }
      if (!worked) await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 100).unref();
      });
    }
  }
}
