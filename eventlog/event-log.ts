/**
 * The seam between the materializer and a partitioned, transactional event
 * log: Apache Kafka in production and tests, an embedded in-process log for
 * the zero-setup `npm start` and unit tests. Both pass the same contract
 * tests (test/integration/event-log-contract.test.ts).
 *
 * The one idea: a consumer handles a batch of one partition and returns the
 * records to produce; the log then commits those records and the batch's
 * consumer offset in ONE transaction (ARCHITECTURE.md, decision 6). A crash
 * before that commit leaves neither, and the batch is delivered again.
 */
export interface LogRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string | null;
  readonly value: Buffer;
  readonly timestampMs: number;
  readonly headers: Readonly<Record<string, string>>;
}

export interface RecordBatch {
  readonly topic: string;
  readonly partition: number;
  readonly records: readonly LogRecord[];
}

export interface OutgoingRecord {
  readonly topic: string;
  readonly key: string | null;
  readonly value: Buffer | string;
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * A batch handler gets the partition's checkpoint (an opaque string the
 * handler returned for the previous committed batch, null at first) and
 * returns the records to commit together with the batch's offsets, and the
 * new checkpoint, committed with them (Kafka: the offset commit's metadata).
 * The materializer keeps the partition's stream time there, so lateness is
 * decided the same way when a batch is redelivered after a crash.
 */
export type BatchHandler = (batch: RecordBatch, checkpoint: string | null) => Promise<BatchResult>;

export interface BatchResult {
  readonly records: readonly OutgoingRecord[];
  readonly checkpoint: string | null;
}

export interface TransactionalConsumer {
  /** Resolves once the consumer has joined its group and started. */
  start(): Promise<void>;
  /** Stops after the batch in hand is committed (abandoned only when its partition is no longer this member's). */
  stop(): Promise<void>;
}

export interface ConsumerOptions {
  readonly groupId: string;
  readonly topics: readonly string[];
  readonly handler: BatchHandler;
  /** Unique per process; the log uses it to fence a zombie instance of the same consumer. */
  readonly instanceId: string;
  /** Where a group without committed offsets starts. */
  readonly fromBeginning: boolean;
  /** Called when the consumer stopped for good (a non-retriable error); a process usually exits so it is restarted. */
  readonly onFatal?: (error: Error) => void;
}

/** A reader of every partition of some topics from the current end, for fan-out (no shared group, no commits). */
export interface TailOptions {
  readonly topics: readonly string[];
  readonly onRecord: (record: LogRecord) => void;
}

export interface Tail {
  stop(): Promise<void>;
  /** Where the tail stands now (see TailStatus); cheap enough to call per request. */
  status(): TailStatus;
}

/**
 * What a reader of the tail needs to know to trust what it has (and has
 * not) seen: whether it is connected, where it is, and whether it may have
 * skipped records. The hot tier (store/hot-tier.ts) serves from memory only
 * while this says the feed is seen whole and nearly up to date.
 */
export interface TailStatus {
  /** False once stopped. */
  readonly running: boolean;
  /**
   * Bumped whenever the tail (re)starts from the log's end: after a reconnect
   * or a rebalance it may have skipped records committed meanwhile, so what
   * was learned under an older epoch is not to be trusted.
   */
  readonly epoch: number;
  /** Date.now() when the tail last heard from the log that it is up to date to within `end` (Kafka: a completed fetch); null before it first did. */
  readonly confirmedAtMs: number | null;
  /** Per partition of each tailed topic: the next offset to be delivered, and the log end as last reported. */
  readonly partitions: readonly TailPosition[];
}

export interface TailPosition {
  readonly topic: string;
  readonly partition: number;
  /** Every record below this offset has been handed to onRecord (and onRecord has returned). */
  readonly next: number;
  /** The log end offset (Kafka: high watermark) last reported; end - next is the lag. */
  readonly end: number;
}

export interface EventLog {
  readonly kind: 'kafka' | 'embedded';
  /**
   * Idempotent: an existing topic keeps its partitions. A topic must be created before it is produced
   * to, consumed or tailed (Kafka's auto-creation is off): those refuse a topic that does not exist.
   */
  createTopics(topics: readonly { topic: string; partitions: number }[]): Promise<void>;
  /** Non-transactional produce (event generators, tests). Keyed records of one key go to one partition, in order. */
  produce(records: readonly OutgoingRecord[]): Promise<void>;
  consumer(options: ConsumerOptions): TransactionalConsumer;
  /** Reads committed records only: every one committed after `status().confirmedAtMs` is first set (it starts at the log's end). */
  tail(options: TailOptions): Promise<Tail>;
  close(): Promise<void>;
}
