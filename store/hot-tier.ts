import fs from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { AppliedChanges, sourceOfHeaders } from '../eventlog/applied-changes.js';
import { changeKey, parseChangeKey } from '../eventlog/change-event.js';
import type { LogRecord, TailStatus } from '../eventlog/event-log.js';
import { log as rootLog } from '../runtime/log.js';
import {
  changeFeedDuplicates, hotTierBypassSeconds, hotTierBypassSources, hotTierByteSources, hotTierEvictions, hotTierFlushes, hotTierInvalidations, hotTierLookups,
} from '../runtime/metrics.js';
import type { Registry, ViewVersion } from '../schema/types.js';
import type { FeatureValue, FeatureValues } from './codec.js';
import { expiryOf, isStale } from './freshness.js';
import type { HotTierConfig } from './hot-tier-config.js';
import type { FeatureRow, OnlineStore, ReadOptions, ReadResult, ShardHealth, StoredFeatures } from './online-store.js';

const log = rootLog.child({ component: 'hot-tier' });

/** What the hot tier needs of the change feed (eventlog/change-feed.ts). */
export interface ChangeSource {
  subscribe(listener: (record: LogRecord) => void): () => void;
  status(): TailStatus;
}

export type HotTierSettings = Pick<HotTierConfig, 'maxBytes' | 'maxLagRecords' | 'maxSilenceMs' | 'maxAgeMs'>;

/** Why the tier reads everything from the store right now. */
export type BypassReason = 'feed_stopped' | 'feed_unconfirmed' | 'feed_lagging';

/**
 * The hot tier: decoded values of the store held in this process, in front
 * of any OnlineStore, kept coherent by the change feed (ARCHITECTURE.md,
 * decision 9; docs/decisions/0025-hot-tier.md). Both serving paths read
 * through it, since both read an OnlineStore.
 *
 * The guarantee, and how each part of it is kept:
 *
 * 1. Once this process has consumed a change event of a value (or made the
 *    change itself, through `write`), it never serves an older value of it.
 *    A consumed change deletes the entry. The subtle part is a read that is
 *    in flight while the change arrives: it may have read the store before
 *    the write and must not put its older answer into the cache afterwards.
 *    Each missed key is therefore read under a token; a change of that key
 *    voids the token, and only a read whose token is still valid fills.
 *    A value is written to the store before its change event is committed,
 *    so a read that begins after the change was consumed reads the new value.
 * 2. A value is never served past its TTL: entries keep their event time and
 *    staleness is decided at every read, as the store's own reads do; at the
 *    store's expiry the entry is dropped and the store asked again.
 * 3. A cached "missing" is an entry like any other: the value's first write
 *    comes with a change event, which deletes it.
 * 4. It never serves on a feed it cannot see: while the feed is stopped, has
 *    not confirmed its position for HOT_TIER_MAX_SILENCE_MS, or lags its end
 *    by more than HOT_TIER_MAX_LAG_RECORDS, every read goes to the store and
 *    nothing is cached. When the feed restarts from its end (a new epoch) it
 *    may have skipped changes, so everything is dropped first; so it is
 *    after any bypass, so that nothing served during it is followed by an
 *    older entry.
 */
export class HotTier implements OnlineStore {
  private readonly cache: LRUCache<string, Entry>;
  /** Keys being read from the store now, each with the token its fills need. */
  private readonly inFlight = new Map<string, Token>();
  /** Changes applied so far, to ignore one that comes again. */
  private readonly applied = new AppliedChanges();
  /** Bumped by every flush: a read begun before it does not fill. */
  private generation = 0;
  /** The feed epoch the cache was filled under. */
  private epoch: number | null = null;
  private bypassSince: number | null = null;
  private bypassReason: BypassReason | null = null;
  private readonly views = new WeakMap<ViewVersion, ViewSlot>();
  private readonly slotsByLabel = new Map<string, ViewSlot>();
  private readonly unsubscribe: () => void;
  private readonly bypassSource = (): string | null => this.check();
  private readonly byteSource = (): [string, number][] => [...this.slotsByLabel].map(([label, slot]) => [label, slot.bytes]);

  constructor(
    private readonly store: OnlineStore,
    private readonly feed: ChangeSource,
    private readonly settings: HotTierSettings,
    private readonly registry: Registry,
    /** The clock values' freshness is judged by: the inner store's (tests with a fixed-clock store pass the same). */
    private readonly now: () => number = Date.now,
  ) {
    this.cache = new LRUCache<string, Entry>({
      maxSize: settings.maxBytes,
      dispose: (entry, _key, reason) => {
        entry.slot.bytes -= entry.bytes;
        if (reason === 'evict') entry.slot.evictions.inc();
      },
    });
    this.unsubscribe = feed.subscribe((record) => this.onChange(record));
    hotTierBypassSources.add(this.bypassSource);
    hotTierByteSources.add(this.byteSource);
  }

  get kind(): string {
    return this.store.kind;
  }

  /** Values held now (tests, warm-up). */
  get size(): number {
    return this.cache.size;
  }

  async readSettled(view: ViewVersion, ids: readonly string[], options: ReadOptions = {}): Promise<ReadResult[]> {
    const slot = this.slotOf(view);
    const now = this.now();
    if (!slot.enabled || this.check() !== null) {
      slot.bypass.inc(ids.length);
      return this.store.readSettled(view, ids, options);
    }
    const results: ReadResult[] = new Array(ids.length);
    let missed: number[] | null = null;
    for (let i = 0; i < ids.length; i++) {
      const key = slot.prefix + ids[i]!;
      const entry = this.cache.get(key);
      if (entry !== undefined && this.usable(entry, slot, now)) {
        results[i] = this.served(entry, view, now);
      } else {
        if (entry !== undefined) this.cache.delete(key);
        (missed ??= []).push(i);
      }
    }
    if (missed === null) {
      slot.hit.inc(ids.length);
      return results;
    }
    if (missed.length < ids.length) slot.hit.inc(ids.length - missed.length);
    slot.miss.inc(missed.length);

    const generation = this.generation;
    const epoch = this.epoch;
    const keys = missed.map((i) => slot.prefix + ids[i]!);
    const tokens = keys.map((key) => this.claim(key));
    let read: ReadResult[];
    try {
      read = await this.store.readSettled(view, missed.length === ids.length ? ids : missed.map((i) => ids[i]!), options);
    } finally {
      keys.forEach((key, k) => this.release(key, tokens[k]!));
    }
    // Fill only what no change (and no flush, no feed trouble) has overtaken since the read began.
    const fillNow = this.now();
    const fill = generation === this.generation && this.check() === null && this.epoch === epoch;
    missed.forEach((i, k) => {
      const r = read[k]!;
      results[i] = r;
      if (fill && tokens[k]!.valid && !(r instanceof Error)) this.fill(keys[k]!, slot, r, view, fillNow);
    });
    return results;
  }

  async read(view: ViewVersion, ids: readonly string[], options: ReadOptions = {}): Promise<(StoredFeatures | null)[]> {
    const results = await this.readSettled(view, ids, options);
    for (const r of results) if (r instanceof Error) throw r;
    return results as (StoredFeatures | null)[];
  }

  /** This process's own writes (the push API): the store first, then the entries, so no older value is served after `write` resolves. */
  async write(view: ViewVersion, rows: readonly FeatureRow[]): Promise<void> {
    try {
      await this.store.write(view, rows);
    } finally {
      // Also when it failed: some rows may have been written.
      const slot = this.slotOf(view);
      for (const row of rows) this.invalidate(slot.prefix + row.entityId, slot);
    }
  }

  ping(): Promise<void> {
    return this.store.ping();
  }

  health(): Promise<ShardHealth[]> {
    return this.store.health();
  }

  async close(): Promise<void> {
    this.detach();
    await this.store.close();
  }

  /** Stops following the feed and drops everything; the store stays open (its owner closes it). */
  detach(): void {
    this.unsubscribe();
    hotTierBypassSources.delete(this.bypassSource);
    hotTierByteSources.delete(this.byteSource);
    this.flush(null);
  }

  /** Why the tier bypasses now, or null when it may serve from memory. */
  bypassing(): BypassReason | null {
    return this.check();
  }

  /** Up to `max` keys (`view:vN:id`), most recently used first: what a warm-up at the next start should read. */
  hotKeys(max: number): string[] {
    const keys: string[] = [];
    for (const key of this.cache.keys()) {
      if (keys.length >= max) break;
      keys.push(key);
    }
    return keys;
  }

  /**
   * Reads `keys` (`view:vN:id`, e.g. from hotKeys() of the last run) through
   * the tier, so they are cached before traffic arrives; keys of views or
   * versions this registry does not have are skipped. Waits up to
   * `waitForFeedMs` for the feed to be usable: before that nothing can be
   * cached. Returns how many values were cached.
   */
  async warmUp(keys: readonly string[], waitForFeedMs: number, batch = 500): Promise<number> {
    const deadline = Date.now() + waitForFeedMs;
    while (this.bypassing() !== null) {
      if (Date.now() >= deadline) {
        log.warn({ reason: this.bypassing(), keys: keys.length }, 'hot tier warm-up skipped: the change feed did not become usable in time');
        return 0;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const byView = new Map<ViewVersion, string[]>();
    for (const key of keys) {
      const parsed = parseChangeKey(key);
      const view = parsed && this.viewOf(parsed.view, parsed.version);
      if (!parsed || !view) continue;
      let ids = byView.get(view);
      if (!ids) byView.set(view, (ids = []));
      ids.push(parsed.id);
    }
    const before = this.cache.size;
    for (const [view, ids] of byView) {
      for (let i = 0; i < ids.length; i += batch) await this.readSettled(view, ids.slice(i, i + batch));
    }
    return this.cache.size - before;
  }

  private onChange(record: LogRecord): void {
    // The record key is the value's key (`view:vN:id`, eventlog/change-event.ts), exactly the cache's own.
    const key = record.key;
    const parsed = key === null ? null : parseChangeKey(key);
    if (key === null || parsed === null) {
      // A change that names no value could be a change of any: trust nothing cached.
      log.warn({ partition: record.partition, offset: record.offset }, 'change event without a value key; hot tier flushed');
      this.flush('unreadable');
      return;
    }
    const slot = this.slotsByLabel.get(`${parsed.view}:v${parsed.version}`);
    // No slot: this process has never read that view version, so nothing of it is cached or in flight.
    if (!slot) return;
    // A change applied already (eventlog/applied-changes.ts) would only cost a store read: ignored. One
    // without a source position cannot be told apart, so it invalidates.
    const source = sourceOfHeaders(record.headers);
    if (source && !this.applied.admit(key, source)) return void changeFeedDuplicates.inc({ reader: 'hot_tier' });
    this.invalidate(key, slot);
  }

  private invalidate(key: string, slot: ViewSlot): void {
    const token = this.inFlight.get(key);
    if (token) {
      token.valid = false;
      this.inFlight.delete(key);
    }
    if (this.cache.delete(key) || token) slot.invalidations.inc();
  }

  private claim(key: string): Token {
    let token = this.inFlight.get(key);
    if (!token) this.inFlight.set(key, (token = { valid: true, readers: 0 }));
    token.readers++;
    return token;
  }

  private release(key: string, token: Token): void {
    if (--token.readers === 0 && this.inFlight.get(key) === token) this.inFlight.delete(key);
  }

  private flush(reason: 'epoch' | 'resumed' | 'unreadable' | null): void {
    this.generation++;
    for (const token of this.inFlight.values()) token.valid = false;
    this.inFlight.clear();
    if (this.cache.size > 0 && reason !== null) hotTierFlushes.inc({ reason });
    this.cache.clear();
  }

  /**
   * Whether memory may be trusted now; drops everything when the feed has
   * moved to a new epoch. Also keeps the bypass metrics. The feed's times
   * are wall-clock times, hence Date.now() rather than the values' clock.
   */
  private check(): BypassReason | null {
    const now = Date.now();
    const status = this.feed.status();
    let reason: BypassReason | null = null;
    if (!status.running) reason = 'feed_stopped';
    else if (status.confirmedAtMs === null || now - status.confirmedAtMs > this.settings.maxSilenceMs) reason = 'feed_unconfirmed';
    else {
      for (const p of status.partitions) {
        if (p.end - p.next > this.settings.maxLagRecords) {
          reason = 'feed_lagging';
          break;
        }
      }
    }
    if (reason === null && status.epoch !== this.epoch) {
      if (this.epoch !== null) log.info({ from: this.epoch, to: status.epoch }, 'change feed restarted from its end; hot tier flushed');
      this.flush('epoch');
      this.epoch = status.epoch;
    } else if (reason === null && this.bypassReason !== null) {
      // Back from a bypass in the same epoch: no change was skipped, but the store may have been written
      // around the feed meanwhile and those values served; serving older entries now would go backwards.
      this.flush('resumed');
    }
    if (reason !== this.bypassReason) {
      if (this.bypassSince !== null) hotTierBypassSeconds.inc(Math.max(0, now - this.bypassSince) / 1000);
      this.bypassSince = reason === null ? null : now;
      if (reason !== null || this.bypassReason !== null) log.info({ reason: reason ?? 'serving' }, reason === null ? 'hot tier serving from memory' : 'hot tier bypassed: every read goes to the store');
      this.bypassReason = reason;
    } else if (reason !== null && this.bypassSince !== null) {
      hotTierBypassSeconds.inc(Math.max(0, now - this.bypassSince) / 1000);
      this.bypassSince = now;
    }
    return reason;
  }

  private usable(entry: Entry, slot: ViewSlot, now: number): boolean {
    if (entry.expireAtMs !== null && now >= entry.expireAtMs) return false;
    const maxAge = slot.maxAgeMs;
    return maxAge === null || now - entry.filledAtMs < maxAge;
  }

  private served(entry: Entry, view: ViewVersion, now: number): StoredFeatures | null {
    if (entry.fresh === null) return null;
    if (!isStale(view, entry.fresh.eventTimeMs, now)) return entry.fresh;
    return (entry.stale ??= { values: entry.fresh.values, eventTimeMs: entry.fresh.eventTimeMs, stale: true });
  }

  private fill(key: string, slot: ViewSlot, value: StoredFeatures | null, view: ViewVersion, now: number): void {
    let entry: Entry;
    if (value === null) {
      entry = { fresh: null, stale: null, filledAtMs: now, expireAtMs: null, bytes: entryOverhead + key.length, slot };
    } else {
      const fresh = value.stale ? { values: value.values, eventTimeMs: value.eventTimeMs, stale: false } : value;
      entry = {
        fresh, stale: value.stale ? value : null, filledAtMs: now, expireAtMs: expiryOf(view, value.eventTimeMs),
        bytes: entryOverhead + key.length + valuesBytes(value.values), slot,
      };
      if (now >= entry.expireAtMs!) return;
    }
    if (entry.bytes > this.settings.maxBytes) return;
    this.cache.set(key, entry, { size: entry.bytes });
    slot.bytes += entry.bytes;
  }

  private slotOf(view: ViewVersion): ViewSlot {
    let slot = this.views.get(view);
    if (!slot) {
      const label = `${view.viewName}:v${view.version}`;
      const maxAges = [view.hotTier.maxAgeMs, this.settings.maxAgeMs > 0 ? this.settings.maxAgeMs : null].filter((a): a is number => a !== null);
      slot = {
        prefix: changeKey({ view: view.viewName, version: view.version, id: '' }),
        enabled: view.hotTier.enabled,
        maxAgeMs: maxAges.length > 0 ? Math.min(...maxAges) : null,
        // Bound once: prom-client's labels() children hash their labels on every inc.
        hit: hotTierLookups.bind({ view: label, outcome: 'hit' }),
        miss: hotTierLookups.bind({ view: label, outcome: 'miss' }),
        bypass: hotTierLookups.bind({ view: label, outcome: 'bypass' }),
        invalidations: hotTierInvalidations.bind({ view: label }),
        evictions: hotTierEvictions.bind({ view: label }),
        bytes: 0,
      };
      this.views.set(view, slot);
      this.slotsByLabel.set(label, slot);
    }
    return slot;
  }

  private viewOf(name: string, version: number): ViewVersion | undefined {
    for (const entity of this.registry.entities) {
      for (const view of entity.views) if (view.name === name) return view.versions[version - 1];
    }
    return undefined;
  }
}

interface Token {
  valid: boolean;
  readers: number;
}

interface ViewSlot {
  /** `view:vN:`, the key of an id is prefix + id (the change events' key). */
  readonly prefix: string;
  readonly enabled: boolean;
  readonly maxAgeMs: number | null;
  readonly hit: Metric;
  readonly miss: Metric;
  readonly bypass: Metric;
  readonly invalidations: Metric;
  readonly evictions: Metric;
  /** Estimated bytes held (`feature_hot_tier_bytes`, read at each scrape). */
  bytes: number;
}

interface Metric {
  inc(n?: number): void;
}

interface Entry {
  /** The value as served while fresh; null: cached "missing". */
  readonly fresh: StoredFeatures | null;
  /** The same value as served once past its TTL, built on first need. */
  stale: StoredFeatures | null;
  readonly filledAtMs: number;
  /** The store's own expiry of the value; null for "missing". */
  readonly expireAtMs: number | null;
  readonly bytes: number;
  readonly slot: ViewSlot;
}

// Rough V8 sizes: an entry with its map slot and two objects; per feature a property and its value.
const entryOverhead = 160;

function valuesBytes(values: FeatureValues): number {
  let bytes = 0;
  for (const key in values) bytes += 16 + key.length + valueBytes(values[key] ?? null);
  return bytes;
}

function valueBytes(value: FeatureValue | null): number {
  if (value === null || typeof value === 'boolean') return 8;
  if (typeof value === 'number') return 16;
  if (typeof value === 'string') return 16 + value.length * 2;
  return 16 + value.reduce((n: number, v) => n + valueBytes(v as FeatureValue), 0);
}

/** Writes the most recently used keys for the next start's warm-up (atomically: a crash mid-write leaves the old file). */
export function saveWarmUpKeys(file: string, keys: readonly string[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ version: 1, keys }) + '\n');
  fs.renameSync(tmp, file);
}

/** Reads a warm-up file; a missing one is an empty list, an unreadable one is logged and ignored (a warm-up is an optimisation). */
export function loadWarmUpKeys(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    log.warn({ file, err: (error as Error).message }, 'hot tier warm-up file unreadable; starting cold');
    return [];
  }
  try {
    const parsed = JSON.parse(text) as { version?: unknown; keys?: unknown };
    if (parsed.version !== 1 || !Array.isArray(parsed.keys) || !parsed.keys.every((k) => typeof k === 'string')) throw new Error('expected {"version":1,"keys":[…strings]}');
    return parsed.keys as string[];
  } catch (error) {
    log.warn({ file, err: (error as Error).message }, 'hot tier warm-up file malformed; starting cold');
    return [];
  }
}
