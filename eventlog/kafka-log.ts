import { randomUUID } from 'node:crypto';
import { Counter, Gauge } from 'prom-client';
import { Kafka, logLevel, type Admin, type Consumer, type KafkaConfig, type Producer, type IHeaders, type SASLOptions } from 'kafkajs';
import type { KafkaSecurity } from '../runtime/config.js';
import { log } from '../runtime/log.js';
import { kafkaBatchesAbandoned, kafkaRecordsSkipped, metricsRegistry } from '../runtime/metrics.js';
import { isFenced, PartitionLeases, type Owned, type PartitionLease } from './partition-leases.js';
import type {
  BatchResult, ConsumerOptions, EventLog, LogRecord, OutgoingRecord, Tail, TailOptions, TailStatus, TransactionalConsumer,
} from './event-log.js';

/**
 * The event log on Apache Kafka, through kafkajs.
 *
 * Transactions: one transactional producer per consumed partition, with a
 * transactional id derived from the group, topic and partition, so whichever
 * process initialised it last owns the partition's commits. kafkajs predates
 * KIP-447's fencing by group generation, so the new owner of a partition
 * initialises its id on assignment, before it handles anything, and reads the
 * committed offset only after that (eventlog/partition-leases.ts has the
 * whole argument). The consumer reads committed records only.
 */
export const lagGauge = new Gauge({
  name: 'materializer_lag_events',
  help: 'Records between the last committed batch and the end of the partition.',
  labelNames: ['topic', 'partition'] as const,
  registers: [metricsRegistry],
});

export const brokerReachable = new Gauge({
  name: 'kafka_broker_reachable',
  help: '1 while this process reaches the Kafka cluster, 0 from the first failed connection until a request succeeds again.',
  labelNames: ['client'] as const,
  registers: [metricsRegistry],
});

export const brokerOutages = new Counter({
  name: 'kafka_broker_outages_total',
  help: 'Times this process lost the Kafka cluster (each followed by a recovery unless it is still down).',
  labelNames: ['client'] as const,
  registers: [metricsRegistry],
});

export const consumerRestarts = new Counter({
  name: 'kafka_consumer_restarts_total',
  help: 'Restarts of the transactional consumer after it crashed on a retriable error (a broker outage, a coordinator move).',
  labelNames: ['client'] as const,
  registers: [metricsRegistry],
});

/** Records per produce request inside a transaction (~300 bytes each: far below 1 MB). */
const outputSlice = 500;

export interface KafkaLogOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  /** TLS and SASL (KAFKA_SSL*, KAFKA_SASL_*); absent: plaintext, no authentication. */
  readonly security?: KafkaSecurity;
  /** What this client is for, the `client` label of the broker metrics: `materializer`, `gateway`, … */
  readonly role?: string;
  /** TCP connect timeout to one broker (KAFKA_CONNECTION_TIMEOUT_MS). */
  readonly connectionTimeoutMs?: number;
  /** Longest wait between two retries of one request, and between two restarts of the consumer (KAFKA_RETRY_MAX_MS). */
  readonly retryMaxMs?: number;
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

/**
 * Whether this client reaches the cluster, for logs and metrics. kafkajs
 * reports a failed connection only in its log (namespace `Connection`), and
 * every successful request as a `request` instrumentation event: the first
 * marks the cluster lost, the second found again. One structured line each
 * way, with the outage's length on the way back.
 */
class BrokerHealth {
  private downSince: number | null = null;
  private lastError = '';

  constructor(private readonly client: string, private readonly brokers: readonly string[]) {
    brokerReachable.set({ client }, 1);
  }

  lost(error: string): void {
    this.lastError = error;
    if (this.downSince !== null) return;
    this.downSince = Date.now();
    brokerReachable.set({ client: this.client }, 0);
    brokerOutages.inc({ client: this.client });
    log.warn({ client: this.client, brokers: this.brokers, err: error }, 'kafka broker unreachable');
  }

  reached(): void {
    if (this.downSince === null) return;
    const downMs = Date.now() - this.downSince;
    this.downSince = null;
    brokerReachable.set({ client: this.client }, 1);
    log.info({ client: this.client, brokers: this.brokers, downMs, lastError: this.lastError }, 'kafka broker reachable again');
  }
}

export class KafkaLog implements EventLog {
  readonly kind = 'kafka';
  private readonly kafka: Kafka;
  private producer: Promise<Producer> | null = null;
  private readonly closers = new Set<() => Promise<void>>();
  readonly health: BrokerHealth;
  private readonly retryMaxMs: number;

  constructor(readonly options: KafkaLogOptions) {
    this.health = new BrokerHealth(options.role ?? options.clientId, options.brokers);
    this.retryMaxMs = options.retryMaxMs ?? 2000;
    this.kafka = new Kafka({
      clientId: options.clientId,
      brokers: [...options.brokers],
      ...kafkaSecurityOptions(options.security),
      connectionTimeout: options.connectionTimeoutMs ?? 3000,
      // One request: 8 retries, backing off to retryMaxMs, about 10 s in all with the defaults. A longer
      // outage is ridden out a level up: the consumer restarts itself (KafkaTransactionalConsumer), forever.
      retry: { retries: 8, initialRetryTime: 100, maxRetryTime: this.retryMaxMs },
      logLevel: logLevel.WARN,
      logCreator: () => ({ namespace, level, log: entry }) => {
        const { message, ...rest } = entry;
        if (namespace === 'Connection' && level <= logLevel.ERROR && /^Connection (error|timeout)/.test(message)) this.health.lost(message);
        const line = { component: 'kafkajs', namespace, ...rest };
        if (level <= logLevel.ERROR) log.warn(line, message);
        else log.debug(line, message);
      },
    });
  }

  /** Every client this log makes reports its successful requests: the signal that the cluster is back. */
  private watch<T extends Consumer | Producer | Admin>(client: T): T {
    (client.on as (event: string, listener: () => void) => unknown)(client.events.REQUEST, () => this.health.reached());
    return client;
  }

  async createTopics(topics: readonly { topic: string; partitions: number }[]): Promise<void> {
    const admin = this.watch(this.kafka.admin());
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
      const producer = this.watch(this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 }));
      await producer.connect();
      return producer;
    })().catch((error: unknown) => {
      // A failed connect (the broker down) must not be kept: the next produce connects afresh.
      this.producer = null;
      throw error;
    });
    await (await this.producer).sendBatch({ topicMessages: toTopicMessages(records), acks: -1 });
  }

  consumer(options: ConsumerOptions): TransactionalConsumer {
    const consumer = new KafkaTransactionalConsumer(this.kafka, options, this.support());
    this.closers.add(() => consumer.stop());
    return consumer;
  }

  async tail(options: TailOptions): Promise<Tail> {
    // A group of its own (kafkajs has no group-less consumer), starting at the end, never committing:
    // every replica sees every record from when it starts. After a broker outage the consumer starts
    // afresh in a new group, at the end again (subscribers miss what was committed between the broker's
    // return and that moment): the old group, reloaded by the restarted broker with our old member in it,
    // would hold the new member's join until that member's session expired (30 s). For the same reason
    // kafkajs must not restart it in place.
    const progress = new TailProgress();
    const tail = new SupervisedConsumer('tail', this.support(), () => this.kafka.consumer({
      groupId: `${this.options.clientId}-tail-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 50,
      retry: { retries: 8, initialRetryTime: 100, maxRetryTime: this.retryMaxMs, restartOnFailure: async () => false },
    }), async (consumer) => {
      progress.watch(consumer);
      for (const topic of options.topics) await consumer.subscribe({ topic, fromBeginning: false });
      // eachBatch, not eachMessage: a gateway tails every change of the store (thousands a second under
      // a change stream), and kafkajs' eachMessage costs a promise and a resolve per record.
      await consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch, isRunning, isStale }) => {
          let last = -1;
          for (const message of batch.messages) {
            if (!isRunning() || isStale()) break;
            const record = toLogRecord(batch.topic, batch.partition, message);
            options.onRecord(record);
            last = record.offset;
          }
          // Once per batch: the records were handed over synchronously, so no reader saw the position between them.
          if (last >= 0) progress.delivered(batch.topic, batch.partition, last);
        },
      });
    });
    await tail.start();
    const stop = async (): Promise<void> => {
      this.closers.delete(stop);
      progress.running = false;
      await tail.stop();
    };
    this.closers.add(stop);
    return { stop, status: () => progress.status() };
  }

  private support(): ConsumerSupport {
    return { retryMaxMs: this.retryMaxMs, client: this.options.role ?? this.options.clientId, watch: (client) => this.watch(client) };
  }

  async close(): Promise<void> {
    for (const close of [...this.closers]) await close().catch((e: Error) => log.warn({ err: e.message }, 'kafka close'));
    this.closers.clear();
    const producer = this.producer;
    this.producer = null;
    await (await producer?.catch(() => null))?.disconnect();
  }
}

/**
 * A Kafka tail's TailStatus, from kafkajs' instrumentation events. The
 * subtle part is when the tail may be trusted again after a (re)join: a tail
 * starts at the log end, which kafkajs resolves only when it first fetches
 * after joining. Until that fetch completes, records committed meanwhile may
 * be skipped, so the join bumps the epoch and clears `confirmedAtMs`, and
 * only the next completed fetch sets it.
 */
class TailProgress {
  running = true;
  private epoch = 0;
  private confirmedAtMs: number | null = null;
  private readonly positions = new Map<string, { topic: string; partition: number; next: number; end: number }>();
  private consumer: Consumer | null = null;

  watch(consumer: Consumer): void {
    this.consumer = consumer;
    const mine = (): boolean => this.consumer === consumer;
    consumer.on(consumer.events.GROUP_JOIN, () => {
      if (!mine()) return;
      this.epoch++;
      this.confirmedAtMs = null;
      this.positions.clear();
    });
    consumer.on(consumer.events.FETCH, () => {
      if (mine() && this.running) this.confirmedAtMs = Date.now();
    });
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (!mine()) return;
      // Also emitted for a batch of control records only (a transaction's commit marker): the position moves past them.
      const position = this.position(payload.topic, payload.partition);
      position.next = Math.max(position.next, Number(payload.lastOffset) + 1);
      position.end = Number(payload.highWatermark);
    });
    for (const event of [consumer.events.CRASH, consumer.events.STOP, consumer.events.DISCONNECT]) {
      consumer.on(event, () => {
        if (mine()) this.confirmedAtMs = null;
      });
    }
  }

  delivered(topic: string, partition: number, offset: number): void {
    const position = this.position(topic, partition);
    position.next = Math.max(position.next, offset + 1);
    if (position.end < position.next) position.end = position.next;
  }

  status(): TailStatus {
    return { running: this.running, epoch: this.epoch, confirmedAtMs: this.running ? this.confirmedAtMs : null, partitions: [...this.positions.values()] };
  }

  private position(topic: string, partition: number) {
    const key = `${topic}/${partition}`;
    let position = this.positions.get(key);
    if (!position) this.positions.set(key, (position = { topic, partition, next: 0, end: 0 }));
    return position;
  }
}

/** What the consumer needs of its KafkaLog. */
interface ConsumerSupport {
  readonly retryMaxMs: number;
  /** The `client` label of the restart counter. */
  readonly client: string;
  readonly watch: <T extends Consumer | Producer | Admin>(client: T) => T;
}

/**
 * kafkajs errors that mean "the cluster is not there right now" although
 * kafkajs gives up on them: it restarts a consumer only after a retriable
 * error, and a broker outage longer than its retry budget can surface as a
 * non-retriable one (no coordinator, a timeout). Anything else that is not
 * retriable (authentication, a protocol or client bug) stops the process.
 */
const outageErrors = new Set([
  'KafkaJSConnectionError', 'KafkaJSConnectionClosedError', 'KafkaJSNoBrokerAvailableError', 'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound', 'KafkaJSGroupCoordinatorNotFound', 'KafkaJSTimeout', 'KafkaJSLockTimeout', 'KafkaJSNumberOfRetriesExceeded',
  'KafkaJSMetadataNotLoaded', 'KafkaJSTopicMetadataNotLoaded',
]);

export function isBrokerOutage(error: unknown): boolean {
  for (let e = error as { name?: string; retriable?: boolean; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (outageErrors.has(e.name ?? '') || (e.name?.startsWith('KafkaJS') && e.retriable === true)) return true;
  }
  return false;
}

/**
 * A kafkajs consumer kept running through broker outages: kafkajs restarts
 * it after retriable failures; when it gives up on an outage (see
 * isBrokerOutage) a fresh consumer takes its place after a backoff (doubling
 * up to KAFKA_RETRY_MAX_MS), again and again until the cluster is back. Any
 * other crash is fatal: `onFatal`, or an error log when there is none.
 */
class SupervisedConsumer {
  private consumer: Consumer | null = null;
  private running = false;
  private relaunchTimer: NodeJS.Timeout | null = null;
  /** Relaunches since the consumer last joined its group: the backoff's exponent. */
  private relaunches = 0;

  constructor(
    private readonly name: string,
    private readonly support: ConsumerSupport,
    private readonly create: () => Consumer,
    /** Subscribes and runs a freshly connected consumer. */
    private readonly setup: (consumer: Consumer) => Promise<void>,
    private readonly onFatal?: (error: Error) => void,
  ) {}

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.launch();
  }

  /** Stops after the batch in hand: kafkajs waits for it before it leaves the group. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.relaunchTimer) clearTimeout(this.relaunchTimer);
    this.relaunchTimer = null;
    await this.consumer?.disconnect();
  }

  private async launch(): Promise<void> {
    const consumer = this.support.watch(this.create());
    this.consumer = consumer;
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (this.consumer !== consumer || !this.running) return;
      const context = { consumer: this.name, err: payload.error.message, kind: payload.error.name };
      if (payload.restart) {
        // kafkajs restarts it itself, after a retriable error (e.g. the broker went away mid-batch).
        consumerRestarts.inc({ client: this.support.client });
        log.warn(context, 'kafka consumer crashed; kafkajs restarts it');
      } else if (isBrokerOutage(payload.error)) {
        log.warn(context, 'kafka consumer stopped by a broker outage; starting a new one');
        this.scheduleRelaunch();
      } else {
        log.error(context, 'kafka consumer crashed');
        // Stopping silently would stall its partitions: the process exits and its supervisor restarts it.
        this.onFatal?.(payload.error);
      }
    });
    consumer.on(consumer.events.GROUP_JOIN, () => (this.relaunches = 0));
    await consumer.connect();
    // stop() during a relaunch disconnects the consumer it sees, which may already be this one, before
    // it ran: a consumer started after stop() would keep the process alive for good.
    if (!this.running) return void (await consumer.disconnect());
    await this.setup(consumer);
    if (!this.running) await consumer.disconnect();
  }

  private scheduleRelaunch(): void {
    const delay = Math.min(this.support.retryMaxMs, 250 * 2 ** Math.min(this.relaunches++, 10));
    consumerRestarts.inc({ client: this.support.client });
    const old = this.consumer;
    this.relaunchTimer = setTimeout(() => {
      this.relaunchTimer = null;
      if (!this.running) return;
      (async () => {
        await old?.disconnect().catch(() => undefined);
        // Stopped while the old one disconnected: launching now would leave a consumer nobody stops.
        if (this.running) await this.launch();
      })().catch((error: Error) => {
        if (!this.running) return;
        if (isBrokerOutage(error)) {
          log.warn({ consumer: this.name, err: error.message, kind: error.name, retryInMs: delay }, 'kafka consumer could not start yet; retrying');
          this.scheduleRelaunch();
        } else {
          log.error({ consumer: this.name, err: error.message, kind: error.name }, 'kafka consumer could not be restarted');
          this.onFatal?.(error);
        }
      });
    }, delay);
  }
}

/** The consumer's session timeout: a member silent for longer (a paused process) loses its partitions. */
export const consumerSessionTimeoutMs = 6_000;

/** Heartbeat errors that say this member is no longer part of the group's current generation. */
const leftGroupErrors = new Set(['UNKNOWN_MEMBER_ID', 'ILLEGAL_GENERATION', 'FENCED_INSTANCE_ID', 'NOT_COORDINATOR_FOR_GROUP']);

class KafkaTransactionalConsumer implements TransactionalConsumer {
  private readonly supervised: SupervisedConsumer;
  /** Who may commit each partition (eventlog/partition-leases.ts): the exactly-once guarantee for outputs. */
  private readonly leases: PartitionLeases;
  private admin: Promise<Admin> | null = null;
  private stopping = false;

  constructor(private readonly kafka: Kafka, private readonly options: ConsumerOptions, private readonly support: ConsumerSupport) {
    this.leases = new PartitionLeases({
      createProducer: (topic, partition) => support.watch(kafka.producer({
        transactionalId: `${options.groupId}.${topic}.${partition}`,
        idempotent: true,
        maxInFlightRequests: 1,
        transactionTimeout: 30_000,
      })),
      readCommitted: (topic, partition) => this.readCommitted(topic, partition),
      sessionTimeoutMs: consumerSessionTimeoutMs,
    });
    this.supervised = new SupervisedConsumer(`group ${options.groupId}`, support, () => kafka.consumer({
      groupId: options.groupId,
      readUncommitted: false,
      sessionTimeout: consumerSessionTimeoutMs,
      heartbeatInterval: 1000,
      rebalanceTimeout: 20_000,
      maxWaitTimeInMs: 50,
      // kafkajs restarts a crashed consumer by itself; once stop() has begun it must not, or a consumer
      // whose broker is gone keeps relaunching itself and its process never exits (seen in a test run).
      retry: { retries: 10, initialRetryTime: 100, maxRetryTime: support.retryMaxMs, restartOnFailure: async () => !this.stopping },
    }), (consumer) => this.run(consumer), options.onFatal);
  }

  start(): Promise<void> {
    return this.supervised.start();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.supervised.stop();
    await this.leases.close();
    const admin = this.admin;
    this.admin = null;
    await admin?.then((a) => a.disconnect()).catch(() => undefined);
  }

  private async run(consumer: Consumer): Promise<void> {
    // Synchronous, before kafkajs fetches anything of the new assignment: the new leases start fencing now.
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => this.leases.assigned(payload.memberAssignment));
    for (const topic of this.options.topics) await consumer.subscribe({ topic, fromBeginning: this.options.fromBeginning });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale, pause }) => {
        if (batch.isEmpty() || !isRunning() || isStale()) return;
        const lease = this.leases.acquire(batch.topic, batch.partition);
        // Fenced and paused, waiting for the next assignment: a batch fetched before the pause is left alone.
        if (!lease) return;
        await lease.run(async () => {
          const owned = await lease.ready;
          const lastMessage = batch.messages[batch.messages.length - 1]!;
          // Committed by an earlier owner after kafkajs read its fetch position (see partition-leases.ts, point 2).
          const fresh = batch.messages.filter((m) => Number(m.offset) >= owned.next);
          if (fresh.length < batch.messages.length) {
            kafkaRecordsSkipped.inc({ topic: batch.topic }, batch.messages.length - fresh.length);
            log.info({ topic: batch.topic, partition: batch.partition, skipped: batch.messages.length - fresh.length, committed: owned.next }, 'records committed by an earlier owner skipped');
          }
          if (fresh.length === 0) return void resolveOffset(lastMessage.offset);
          const records = fresh.map((m) => toLogRecord(batch.topic, batch.partition, m));
          const result = await this.options.handler({ topic: batch.topic, partition: batch.partition, records }, owned.checkpoint);
          // Ownership, checked before the commit. When only stopping (not running, not stale) the batch is still
          // ours: it is committed, so that a graceful stop leaves no applied batch uncommitted.
          if (isStale() || !this.leases.holds(lease)) return void kafkaBatchesAbandoned.inc({ topic: batch.topic, reason: 'revoked' });
          let rebalancing: Error | null = null;
          try {
            await heartbeat();
          } catch (error) {
            const type = (error as { type?: string }).type ?? '';
            if (leftGroupErrors.has(type)) {
              // Paused or cut off past the session timeout: the partition may be another member's now.
              kafkaBatchesAbandoned.inc({ topic: batch.topic, reason: 'left_group' });
              log.warn({ topic: batch.topic, partition: batch.partition, err: (error as Error).message }, 'no longer a member of the group\'s generation: batch abandoned, rejoining');
              throw error; // kafkajs rejoins the group
            }
            // A rebalance has begun; until this member rejoins, no one else is given the partition: commit, then rejoin.
            if (type === 'REBALANCE_IN_PROGRESS') rebalancing = error as Error;
            else throw error;
          }
          const last = Number(lastMessage.offset);
          await this.commit(lease, owned, batch.topic, batch.partition, result, last, pause);
          if (owned.next === last + 1) {
            resolveOffset(lastMessage.offset);
            lagGauge.set({ topic: batch.topic, partition: String(batch.partition) }, Math.max(0, Number(batch.highWatermark) - last - 1));
          }
          if (rebalancing) throw rebalancing;
        });
      },
    });
  }

  /** Commits the batch's outputs, offsets and checkpoint in one transaction of the lease's producer. */
  private async commit(lease: PartitionLease, owned: Owned, topic: string, partition: number, result: BatchResult, last: number, pause: () => () => void): Promise<void> {
    const tx = await owned.producer.transaction();
    try {
      // In slices: one produce request must stay under the broker's message.max.bytes.
      for (let i = 0; i < result.records.length; i += outputSlice) {
        await tx.sendBatch({ topicMessages: toTopicMessages(result.records.slice(i, i + outputSlice)), acks: -1 });
      }
      const committed = { partition, offset: String(last + 1), metadata: result.checkpoint };
      await tx.sendOffsets({ consumerGroupId: this.options.groupId, topics: [{ topic, partitions: [committed] }] });
      await tx.commit();
    } catch (error) {
      await tx.abort().catch(() => undefined);
      // Another process owns the partition now: expected after a pause or a rebalance, never a crash.
      if (isFenced(error)) return this.leases.fenced(lease, pause);
      // A broken producer, or a commit of unknown outcome: the next batch takes a new lease, which reads the
      // committed offset again.
      this.leases.broken(lease);
      throw error;
    }
    owned.next = last + 1;
    owned.checkpoint = result.checkpoint;
  }

  /** The group's committed offset and metadata of one partition, from one admin client kept for the purpose. */
  private async readCommitted(topic: string, partition: number): Promise<{ offset: number | null; metadata: string | null }> {
    const admin = (this.admin ??= (async () => {
      const client = this.support.watch(this.kafka.admin());
      await client.connect();
      return client;
    })());
    try {
      const [offsets] = await (await admin).fetchOffsets({ groupId: this.options.groupId, topics: [topic] });
      const found = offsets?.partitions.find((p) => p.partition === partition);
      const offset = found ? Number(found.offset) : -1;
      return { offset: offset >= 0 ? offset : null, metadata: found?.metadata || null };
    } catch (error) {
      // Built again on the next call (after an outage kafkajs may not reconnect an admin client by itself).
      if (this.admin === admin) this.admin = null;
      await admin.then((a) => a.disconnect()).catch(() => undefined);
      throw error;
    }
  }
}

function toLogRecord(topic: string, partition: number, m: { offset: string; key: Buffer | null; value: Buffer | null; timestamp: string; headers?: IHeaders }): LogRecord {
  return new KafkaRecord(topic, partition, m);
}

/**
 * A kafkajs message as a LogRecord. Headers are converted on first read: the change feed's readers
 * (a gateway's hot tier and subscriptions) never read them, and a gateway tails every change of the
 * store. A class, so that every record has one shape and the getter lives on the prototype; the
 * raw headers are a private field, so the record's own properties are exactly a LogRecord's.
 */
class KafkaRecord implements LogRecord {
  readonly offset: number;
  readonly key: string | null;
  readonly value: Buffer;
  readonly timestampMs: number;
  readonly #raw: IHeaders | undefined;
  #headers: Record<string, string> | undefined;

  constructor(readonly topic: string, readonly partition: number, m: { offset: string; key: Buffer | null; value: Buffer | null; timestamp: string; headers?: IHeaders }) {
    this.offset = Number(m.offset);
    this.key = m.key ? m.key.toString('utf8') : null;
    this.value = m.value ?? Buffer.alloc(0);
    this.timestampMs = Number(m.timestamp);
    this.#raw = m.headers;
  }

  get headers(): Readonly<Record<string, string>> {
    return (this.#headers ??= headersOf(this.#raw));
  }
}

function headersOf(raw: IHeaders | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw ?? {})) if (v !== undefined) headers[k] = Array.isArray(v) ? String(v[0]) : String(v);
  return headers;
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
