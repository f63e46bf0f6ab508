import type { Producer } from 'kafkajs';
import { log as rootLog } from '../runtime/log.js';
import { kafkaBatchesAbandoned, kafkaProducersFenced } from '../runtime/metrics.js';

const log = rootLog.child({ component: 'partition-leases' });

/**
 * Who may commit a partition's outputs: exactly-once for every output, not
 * only for the stored values (README, "Exactly once").
 *
 * Each consumed partition has one transactional id (group, topic,
 * partition), so whichever process initialises it last owns the partition's
 * transactions; the broker refuses anything an older holder of the id still
 * tries (it is "fenced"). kafkajs sends no group generation with its
 * transactional offset commits (no KIP-447), so that fence is the only thing
 * that stops a zombie — a process that was paused, lost the partition in a
 * rebalance and wakes up holding a batch of it — and it must happen before
 * the new owner handles anything:
 *
 * 1. On every assignment (the group's GROUP_JOIN) each assigned partition
 *    gets a new lease: its producer is created and initialised at once,
 *    which fences every earlier holder of the id and aborts a transaction it
 *    left open; the producers of the previous generation are closed, once
 *    the batch they are committing (if any) is done.
 * 2. Only then is the partition's committed offset read. kafkajs read its own
 *    fetch position earlier, before the fence, so a zombie may have committed
 *    past it in between; records below the offset read here are skipped,
 *    never handled twice.
 * 3. Before a commit the consumer checks that the lease is still the current
 *    one and that the coordinator still knows this member (a heartbeat); a
 *    batch of a partition it no longer owns is abandoned, nothing of it
 *    published.
 * 4. A fenced commit is expected, not a crash: the batch is abandoned and the
 *    partition paused until the next assignment. Re-initialising the id at
 *    once would fence the new owner in turn. If no new assignment comes
 *    within the session timeout the fence had another cause (the broker
 *    aborted a transaction that outlived its timeout): the lease is dropped
 *    and the next batch takes a new one.
 */
export interface Owned {
  readonly producer: Producer;
  /** The next offset to handle: the committed offset read after the fence, then moved on by each commit. */
  next: number;
  /** The checkpoint committed with that offset (see BatchHandler). */
  checkpoint: string | null;
}

export interface LeaseSupport {
  /** A transactional producer for the partition's id, not yet connected. */
  createProducer(topic: string, partition: number): Producer;
  /** The group's committed offset (null: none yet) and its metadata, read from the coordinator now. */
  readCommitted(topic: string, partition: number): Promise<{ offset: number | null; metadata: string | null }>;
  /** How long a fenced partition waits for a new assignment before it takes a new lease. */
  readonly sessionTimeoutMs: number;
}

type LeaseState = 'current' | 'fenced' | 'broken' | 'retired';

export class PartitionLease {
  state: LeaseState = 'current';
  /** Resolves once the producer is initialised (every earlier holder fenced) and the position read after that. */
  readonly ready: Promise<Owned>;
  /** The batch being handled under this lease; its producer is closed only after it. */
  private busy: Promise<unknown> = Promise.resolve();
  /** Resolves once this lease's producer is closed (set when it is retired). */
  closed: Promise<void> | null = null;
  /** Resumes the partition after a fence paused it. */
  resume: (() => void) | null = null;

  constructor(readonly topic: string, readonly partition: number, readonly generation: number, support: LeaseSupport, previous: PartitionLease | undefined) {
    this.ready = (async () => {
      // The previous lease of this partition (this process's) finishes its batch and closes first.
      await previous?.closed;
      const producer = support.createProducer(topic, partition);
      await producer.connect();
      try {
        const committed = await support.readCommitted(topic, partition);
        return { producer, next: committed.offset ?? 0, checkpoint: committed.metadata };
      } catch (error) {
        await producer.disconnect().catch(() => undefined);
        throw error;
      }
    })();
    // A lease taken on assignment may never be used (no batch comes); its failure is the next batch's to see.
    this.ready.catch((error: Error) => {
      if (this.state === 'current') this.state = 'broken';
      log.warn({ topic, partition, err: error.message, kind: error.name }, 'could not take over the partition yet; the next batch tries again');
    });
  }

  /** Runs one batch under the lease: a retire waits for it. */
  run<T>(work: () => Promise<T>): Promise<T> {
    const done = this.busy.then(work);
    this.busy = done.catch(() => undefined);
    return done;
  }

  retire(): void {
    if (this.closed) return;
    // A fenced lease stays "fenced": it keeps its partition from taking a new lease until the next assignment.
    if (this.state === 'current') this.state = 'retired';
    this.closed = (async () => {
      await this.busy;
      const owned = await this.ready.catch(() => null);
      await owned?.producer.disconnect().catch((error: Error) => log.warn({ topic: this.topic, partition: this.partition, err: error.message }, 'closing a producer failed'));
    })();
  }
}

export class PartitionLeases {
  private generation = 0;
  private readonly leases = new Map<string, PartitionLease>();

  constructor(private readonly support: LeaseSupport) {}

  /**
   * A new assignment: every lease is retired (a partition that stays is
   * re-initialised too, since this process may have missed generations while
   * paused and its producer may be fenced) and each assigned partition gets a
   * new one, fencing at once. Called synchronously from GROUP_JOIN, before
   * kafkajs fetches anything of the new assignment.
   */
  assigned(assignment: Readonly<Record<string, readonly number[]>>): void {
    this.generation++;
    const previous = new Map(this.leases);
    for (const lease of previous.values()) {
      // kafkajs keeps a partition paused across assignments: one paused by a fence is resumed here.
      lease.resume?.();
      lease.resume = null;
      lease.retire();
    }
    this.leases.clear();
    const started = Date.now();
    const taken: PartitionLease[] = [];
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) taken.push(this.take(topic, partition, previous.get(key(topic, partition))));
    }
    const generation = this.generation;
    const partitions = Object.entries(assignment).map(([t, ps]) => `${t}:${ps.join(',')}`);
    void Promise.allSettled(taken.map((lease) => lease.ready)).then((results) => {
      const failed = results.filter((r) => r.status === 'rejected').length;
      log.info({ generation, partitions, failed, tookMs: Date.now() - started }, 'partitions taken over: producers initialised (earlier owners fenced), committed offsets read');
    });
  }

  /**
   * The lease to handle a batch of the partition under, or null while it is
   * fenced (waiting for the next assignment). A broken lease (its producer
   * failed) is replaced.
   */
  acquire(topic: string, partition: number): PartitionLease | null {
    const lease = this.leases.get(key(topic, partition));
    if (lease?.state === 'fenced') return null;
    if (lease?.state === 'current') return lease;
    return this.take(topic, partition, lease);
  }

  /** Whether a batch handled under `lease` may still be committed. */
  holds(lease: PartitionLease): boolean {
    return lease.state === 'current' && this.leases.get(key(lease.topic, lease.partition)) === lease;
  }

  /** The lease's producer failed (not fenced): the next batch takes a new one, which also re-reads the committed offset. */
  broken(lease: PartitionLease): void {
    if (lease.state !== 'current') return;
    lease.state = 'broken';
    lease.retire();
  }

  /** A newer owner fenced the lease's producer: see point 4 above. `pause` pauses the partition and returns its resume. */
  fenced(lease: PartitionLease, pause: () => () => void): void {
    kafkaProducersFenced.inc({ topic: lease.topic });
    kafkaBatchesAbandoned.inc({ topic: lease.topic, reason: 'fenced' });
    log.warn({ topic: lease.topic, partition: lease.partition, generation: lease.generation },
      'producer fenced: another process owns the partition now; its batch is abandoned, nothing of it published, and the partition paused until the next assignment');
    // Already superseded by a new assignment: that one's lease fences and goes on.
    if (!this.holds(lease)) return;
    lease.state = 'fenced';
    lease.resume = pause();
    lease.retire();
    setTimeout(() => {
      if (this.leases.get(key(lease.topic, lease.partition)) !== lease) return;
      log.warn({ topic: lease.topic, partition: lease.partition, waitedMs: this.support.sessionTimeoutMs }, 'no new assignment after a fence; taking the partition up again');
      this.leases.delete(key(lease.topic, lease.partition));
      lease.resume?.();
      lease.resume = null;
    }, this.support.sessionTimeoutMs).unref();
  }

  /** Closes every producer, after the batches in hand. */
  async close(): Promise<void> {
    const leases = [...this.leases.values()];
    this.leases.clear();
    for (const lease of leases) lease.retire();
    await Promise.all(leases.map((lease) => lease.closed));
  }

  private take(topic: string, partition: number, previous: PartitionLease | undefined): PartitionLease {
    const lease = new PartitionLease(topic, partition, this.generation, this.support, previous);
    this.leases.set(key(topic, partition), lease);
    return lease;
  }
}

function key(topic: string, partition: number): string {
  return `${topic}/${partition}`;
}

/** Errors with which the broker refuses a producer whose transactional id a newer holder has initialised. */
const fencedTypes = new Set(['INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED', 'TRANSACTIONAL_ID_FENCED']);

export function isFenced(error: unknown): boolean {
  for (let e = error as { type?: string; code?: number; message?: string; cause?: unknown; originalError?: unknown } | undefined; e; e = (e.cause ?? e.originalError) as typeof e) {
    // PRODUCER_FENCED (90) is newer than kafkajs 2.2.4's error table, which reports it by code only.
    if (fencedTypes.has(e.type ?? '') || e.code === 47 || e.code === 90) return true;
  }
  return false;
}
