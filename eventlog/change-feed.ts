import { log as rootLog } from '../runtime/log.js';
import { changeFeedSources } from '../runtime/metrics.js';
import { changeTopic, changeTopicPartitions } from './change-event.js';
import type { EventLog, LogRecord, Tail, TailStatus } from './event-log.js';

const log = rootLog.child({ component: 'change-feed' });

/** A reader of the change feed; it must not throw (a throw is logged and the next reader still gets the record). */
export type ChangeListener = (record: LogRecord) => void;

/**
 * The change feed (`feature-updates`) as one process sees it: one tail of the
 * topic, fanned out to its readers in the order they subscribed. The gateway
 * subscribes its hot tier first and its subscription hub second, so a
 * subscriber's payload, resolved after the hub got the change, is never read
 * from a cache entry that the same change is about to invalidate.
 *
 * `status()` says where the tail is (store/hot-tier.ts decides from it
 * whether memory may be trusted); `position()` is what a caller can quote as
 * "every change before this was applied", e.g. a coherence test.
 */
export class ChangeFeed {
  private readonly listeners: ChangeListener[] = [];
  private tail: Tail | null = null;
  private readonly metricsSource = (): TailStatus | null => this.tail?.status() ?? null;

  private constructor(private readonly eventLog: EventLog) {}

  /** Creates the topic if needed (Kafka has no auto-creation here) and starts tailing it from its end. */
  static async start(eventLog: EventLog): Promise<ChangeFeed> {
    const feed = new ChangeFeed(eventLog);
    await eventLog.createTopics([{ topic: changeTopic, partitions: changeTopicPartitions }]);
    feed.tail = await eventLog.tail({ topics: [changeTopic], onRecord: (record) => feed.dispatch(record) });
    changeFeedSources.add(feed.metricsSource);
    return feed;
  }

  /** The log the feed tails (producers of change events, e.g. the push API, write to it). */
  get log(): EventLog {
    return this.eventLog;
  }

  /** Returns the unsubscribe function. */
  subscribe(listener: ChangeListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  status(): TailStatus {
    if (!this.tail) return { running: false, epoch: 0, confirmedAtMs: null, partitions: [] };
    return this.tail.status();
  }

  /** Per partition of `feature-updates`: every change below this offset has been handed to every reader. */
  position(): Map<number, number> {
    return new Map(this.status().partitions.filter((p) => p.topic === changeTopic).map((p) => [p.partition, p.next]));
  }

  async stop(): Promise<void> {
    changeFeedSources.delete(this.metricsSource);
    const tail = this.tail;
    if (!tail) return;
    await tail.stop();
  }

  private dispatch(record: LogRecord): void {
    for (const listener of this.listeners) {
      try {
        listener(record);
      } catch (error) {
        log.error({ err: (error as Error).message, partition: record.partition, offset: record.offset }, 'a change feed reader failed on a record');
      }
    }
  }
}
