import { GraphQLError } from 'graphql';
import { AppliedChanges } from '../../eventlog/applied-changes.js';
import { changeKey, decodeChange, parseChangeKey, type FeatureChange } from '../../eventlog/change-event.js';
import type { LogRecord } from '../../eventlog/event-log.js';
import { ErrorCode } from '../../runtime/errors.js';
import { log as rootLog } from '../../runtime/log.js';
import {
  changeFeedDuplicates, rejectedRequests, subscriptionChangeEvents, subscriptionEventsDropped, subscriptionEventsSuperseded, subscriptionQueueSources, subscriptionsActive,
} from '../../runtime/metrics.js';
import type { Entity, FeatureView, Registry } from '../../schema/types.js';

/**
 * The change hub: the `feature-updates` feed, tailed once per gateway, fanned
 * out by (entity, id) to the subscriptions watching it, each through its own
 * bounded queue (a ChangeStream). It knows no transport and no GraphQL
 * execution; the transports pull from the streams.
 *
 * Slow subscribers: each subscription has a bounded queue
 * (SUBSCRIPTION_QUEUE_SIZE). Every transport sends one event at a time and
 * waits for its sink to take it (send-gate.ts), so a client that stops
 * reading stalls only its own queue. A change of a value (entity, view,
 * version) that is already queued replaces the queued one in place (counted
 * in `subscription_events_superseded_total`): the entity is resolved only
 * when an event is sent, so the older event would show the same current
 * value. Hence a queue holds at most one event per watched value, and while a
 * subscription watches no more values than SUBSCRIPTION_QUEUE_SIZE, every
 * value's latest change reaches it. Past that, a full queue drops its OLDEST
 * event (`subscription_events_dropped_total`). Memory per subscription is
 * bounded either way.
 */

export interface FeatureChangedArgs {
  readonly entity: string;
  readonly ids: readonly string[];
  /** Views whose ACTIVE version is watched. */
  readonly views?: readonly string[] | null;
  /** Exact view versions watched, besides `views`. */
  readonly versions?: readonly WatchedVersion[] | null;
}

export interface WatchedVersion {
  readonly view: string;
  readonly version: number;
}

export interface SubscriptionStats {
  /** Open subscriptions. */
  readonly active: number;
  /** Open connections of every transport (a WebSocket, an SSE or multipart response). */
  readonly connections: number;
  /** Events waiting in all queues. */
  readonly queued: number;
  /** The fullest queue's length. */
  readonly deepestQueue: number;
  readonly queueCapacity: number;
  /** Events dropped from full queues of this gateway since it started. */
  readonly dropped: number;
  /** Queued events replaced by a newer change of the same value. */
  readonly superseded: number;
}

const log = rootLog.child({ component: 'subscriptions' });
const unwatched = { outcome: 'unwatched' } as const;

/** Routes each change of the feed to the subscriptions watching its (entity, id). */
export class ChangeHub {
  private readonly byEntity = new Map<string, Map<string, Set<ChangeStream>>>();
  private readonly views = new Map<string, ReadonlySet<string>>();
  /** View name → its entity's name (view names are unique across entities in a registry). */
  private readonly entityOfView = new Map<string, string>();
  /** Changes fanned out so far, to ignore one that comes again. */
  private readonly applied = new AppliedChanges();
  readonly streams = new Set<ChangeStream>();
  dropped = 0;
  superseded = 0;

  /** This hub's share of `subscription_queued_events`, summed when scraped (a gauge update per queue operation cost more than the queue). */
  private readonly queued = (): number => {
    let n = 0;
    for (const stream of this.streams) n += stream.length;
    return n;
  };

  constructor(private readonly registry: Registry, private readonly queueCapacity: number) {
    subscriptionQueueSources.add(this.queued);
    for (const entity of registry.entities) {
      this.views.set(entity.name, new Set(entity.views.map((v) => v.name)));
      for (const v of entity.views) this.entityOfView.set(v.name, entity.name);
    }
  }

  /** Opens a stream for validated `featureChanged` arguments; throws a GraphQLError for bad ones. */
  open(args: FeatureChangedArgs, maxBatchIds: number): ChangeStream {
    const entity = this.registry.entities.find((e) => e.name === args.entity);
    if (!entity) throw userError(`Unknown entity type ${args.entity}`);
    if (args.ids.length === 0) throw userError('`ids` must name at least one entity');
    if (args.ids.length > maxBatchIds) {
      rejectedRequests.inc({ code: ErrorCode.BatchTooLarge });
      throw new GraphQLError(`\`ids\` holds ${args.ids.length} items; at most ${maxBatchIds} are allowed per subscription (MAX_BATCH_IDS)`, {
        extensions: { code: ErrorCode.BatchTooLarge, max: maxBatchIds },
      });
    }
    const stream = new ChangeStream(entity.name, new Set(args.ids), watchedVersions(entity, args), this.queueCapacity, this);
    this.streams.add(stream);
    let byId = this.byEntity.get(entity.name);
    if (!byId) this.byEntity.set(entity.name, (byId = new Map()));
    for (const id of stream.ids) {
      let watchers = byId.get(id);
      if (!watchers) byId.set(id, (watchers = new Set()));
      watchers.add(stream);
    }
    subscriptionsActive.inc();
    return stream;
  }

  /** Called by a stream when it ends. */
  remove(stream: ChangeStream): void {
    if (!this.streams.delete(stream)) return;
    subscriptionsActive.dec();
    const byId = this.byEntity.get(stream.entity);
    for (const id of stream.ids) {
      const watchers = byId?.get(id);
      watchers?.delete(stream);
      if (watchers?.size === 0) byId!.delete(id);
    }
  }

  /** One record of the feed. Never throws: the log calls it synchronously, possibly inside a producer. */
  onRecord(record: LogRecord): void {
    // Most changes are of ids nobody watches. The record key names the value (`view:vN:id`), so
    // those are told apart without parsing the JSON payload (under a change stream that parse was
    // the largest cost of a gateway with no subscriber at all). A key of another shape is decoded.
    const named = record.key === null ? null : parseChangeKey(record.key);
    const entity = named && this.entityOfView.get(named.view);
    if (entity && !this.byEntity.get(entity)?.has(named!.id)) {
      subscriptionChangeEvents.inc(unwatched);
      return;
    }
    let change: FeatureChange;
    try {
      change = decodeChange(record);
    } catch (error) {
      subscriptionChangeEvents.inc({ outcome: 'malformed' });
      log.warn({ err: (error as Error).message, topic: record.topic, partition: record.partition, offset: record.offset }, 'malformed change event skipped');
      return;
    }
    if (!this.views.get(change.entity)?.has(change.view)) {
      subscriptionChangeEvents.inc({ outcome: 'unknown' });
      log.debug({ entity: change.entity, view: change.view }, 'change event of an entity or view this registry does not know; skipped');
      return;
    }
    // Committed once by the materializer; ignored here all the same if it comes again (eventlog/applied-changes.ts).
    if (!this.applied.admit(changeKey(change), change.source)) {
      changeFeedDuplicates.inc({ reader: 'subscriptions' });
      return;
    }
    subscriptionChangeEvents.inc({ outcome: 'accepted' });
    const watchers = this.byEntity.get(change.entity)?.get(change.id);
    if (!watchers) return;
    for (const stream of watchers) {
      try {
        stream.offer(change);
      } catch (error) {
        log.error({ err: (error as Error).message }, 'fan-out to a subscription failed');
      }
    }
  }

  stats(connections: number): SubscriptionStats {
    let queued = 0;
    let deepestQueue = 0;
    for (const s of this.streams) {
      queued += s.length;
      deepestQueue = Math.max(deepestQueue, s.length);
    }
    return { active: this.streams.size, connections, queued, deepestQueue, queueCapacity: this.queueCapacity, dropped: this.dropped, superseded: this.superseded };
  }

  closeAll(): void {
    for (const stream of [...this.streams]) stream.close();
    subscriptionQueueSources.delete(this.queued);
  }

  /** Ends every stream once its queue is sent (see ChangeStream.finish). */
  finishAll(): void {
    for (const stream of [...this.streams]) stream.finish();
  }
}

function userError(message: string, extensions: Record<string, unknown> = {}): GraphQLError {
  rejectedRequests.inc({ code: ErrorCode.BadUserInput });
  return new GraphQLError(message, { extensions: { code: ErrorCode.BadUserInput, ...extensions } });
}

/** View name → the versions a subscription watches of it. */
export type Watched = ReadonlyMap<string, ReadonlySet<number>>;

/**
 * The one rule of what a subscription watches: the ACTIVE version of each
 * view in `views` (of every view of the entity when neither `views` nor
 * `versions` is given), and each exact version in `versions`. The
 * materializer writes every live version of a view from the same raw event
 * (clickStats v1 and v2), so watching a view by name must mean one version
 * of it, or one change would be sent once per version. Throws a
 * BAD_USER_INPUT GraphQLError naming what is wrong.
 */
export function watchedVersions(entity: Entity, args: Pick<FeatureChangedArgs, 'views' | 'versions'>): Watched {
  const watched = new Map<string, Set<number>>();
  const watch = (view: string, version: number): void => {
    let versions = watched.get(view);
    if (!versions) watched.set(view, (versions = new Set()));
    versions.add(version);
  };
  const find = (names: readonly string[]): FeatureView[] => {
    const unknown = [...new Set(names.filter((name) => !entity.views.some((v) => v.name === name)))];
    if (unknown.length > 0) {
      throw userError(
        `Unknown feature view${unknown.length > 1 ? 's' : ''} ${unknown.map((v) => `"${v}"`).join(', ')} for entity ${entity.name}; ` +
          `its views are: ${entity.views.map((v) => v.name).join(', ') || 'none'}`,
      );
    }
    return names.map((name) => entity.views.find((v) => v.name === name)!);
  };
  if (args.views) {
    if (args.views.length === 0) throw userError('`views` must name at least one view of the entity; leave it out to watch all of them');
    for (const view of find(args.views)) watch(view.name, view.activeVersion);
  }
  if (args.versions) {
    if (args.versions.length === 0) {
      throw userError('`versions` must name at least one view version, e.g. [{ view: "clickStats", version: 1 }]; leave it out to watch active versions only');
    }
    const views = find(args.versions.map((v) => v.view));
    args.versions.forEach(({ version }, i) => {
      const view = views[i]!;
      if (!view.versions.some((v) => v.version === version)) {
        throw userError(
          `Feature view ${view.name} has no version ${version}; its versions are ${view.versions.map((v) => v.version).join(', ')} (active: ${view.activeVersion})`,
          { view: view.name, version },
        );
      }
      watch(view.name, version);
    });
  }
  if (!args.views && !args.versions) for (const view of entity.views) watch(view.name, view.activeVersion);
  return watched;
}

/**
 * The source stream of one subscription: a ring buffer of at most
 * `capacity` changes, at most one per value (entity id, view, version): a
 * newer change of a queued value takes its place. A change of another value
 * that arrives while the buffer is full pushes out the oldest queued one
 * (counted as dropped).
 */
/** What a stream reports to: drop counters, and removal when it closes (the ChangeHub). */
export interface QueueOwner {
  dropped: number;
  superseded: number;
  remove(stream: ChangeStream): void;
}

function valueKey(change: FeatureChange): string {
  return `${change.id}\u0000${change.view}\u0000${change.version}`;
}

export class ChangeStream implements AsyncIterableIterator<FeatureChange> {
  private readonly ring: (FeatureChange | undefined)[];
  /** Queued value → its slot in `ring`. */
  private readonly slots = new Map<string, number>();
  private head = 0;
  private size = 0;
  private waiting: ((result: IteratorResult<FeatureChange>) => void) | null = null;
  private closed = false;
  /** Finishing: no new changes are queued; the stream ends once the queue is empty. */
  private finishing = false;

  constructor(
    readonly entity: string,
    readonly ids: ReadonlySet<string>,
    private readonly watched: Watched,
    private readonly capacity: number,
    private readonly hub: QueueOwner,
  ) {
    this.ring = new Array<FeatureChange | undefined>(capacity);
  }

  get length(): number {
    return this.size;
  }

  get done(): boolean {
    return this.closed;
  }

  offer(change: FeatureChange): void {
    if (this.closed || this.finishing || !this.watched.get(change.view)?.has(change.version)) return;
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve({ value: change, done: false });
      return;
    }
    const key = valueKey(change);
    const slot = this.slots.get(key);
    if (slot !== undefined) {
      this.ring[slot] = change;
      this.hub.superseded++;
      subscriptionEventsSuperseded.inc();
      return;
    }
    if (this.size === this.capacity) {
      this.slots.delete(valueKey(this.ring[this.head]!));
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.size--;
      this.hub.dropped++;
      subscriptionEventsDropped.inc();
    }
    const at = (this.head + this.size) % this.capacity;
    this.ring[at] = change;
    this.slots.set(key, at);
    this.size++;
  }

  next(): Promise<IteratorResult<FeatureChange>> {
    if (this.size > 0) {
      const value = this.ring[this.head]!;
      this.slots.delete(valueKey(value));
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.size--;
      return Promise.resolve({ value, done: false });
    }
    if (this.finishing) this.close();
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  return(): Promise<IteratorResult<FeatureChange>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(): Promise<IteratorResult<FeatureChange>> {
    return this.return();
  }

  /** Ends the stream once what is queued has been taken (graphql-ws then sends `complete`); at once if nothing is. */
  finish(): void {
    this.finishing = true;
    if (this.size === 0) this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ring.fill(undefined);
    this.slots.clear();
    this.size = 0;
    this.waiting?.({ value: undefined, done: true });
    this.waiting = null;
    this.hub.remove(this);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<FeatureChange> {
    return this;
  }
}

/**
 * The change streams of one connection, so that they end when the connection
 * starts to close rather than when its socket is gone. graphql-ws ends a
 * connection's subscriptions on the socket's `close` event, which comes after
 * the close handshake: up to ws's 30 s for a client that answers no close
 * frame, a second and more (the cut-off timer, on a busy event loop) for one
 * closed as too slow. Until then its subscriptions would stay in the hub, take
 * every change of their ids, resolve payloads nobody is sent (graphql-ws drops
 * sends on a closing socket) and count in `subscriptions_active`.
 */
export class ConnectionStreams {
  private readonly streams = new Set<ChangeStream>();
  private ended = false;

  /** Adds a stream just opened for the connection; one opened once the connection is closing ends at once. */
  track(stream: ChangeStream): ChangeStream {
    if (this.ended) {
      stream.close();
      return stream;
    }
    for (const s of this.streams) if (s.done) this.streams.delete(s);
    this.streams.add(stream);
    return stream;
  }

  /** The connection is closing: every stream ends now (graphql-ws then completes its subscription). */
  end(): void {
    this.ended = true;
    for (const stream of this.streams) stream.close();
    this.streams.clear();
  }
}

