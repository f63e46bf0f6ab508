import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ChangeFeed } from '../../eventlog/change-feed.js';
import { changeTopic, encodeChange, parseChangeKey } from '../../eventlog/change-event.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import type { LogRecord, TailStatus } from '../../eventlog/event-log.js';
import { changeFeedDuplicates, hotTierLookups } from '../../runtime/metrics.js';
import { loadRegistry, parseRegistry } from '../../schema/registry.js';
import { findView, type Registry, type ViewVersion } from '../../schema/types.js';
import { fromRoot } from '../../runtime/paths.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { HotTier, loadWarmUpKeys, saveWarmUpKeys, type ChangeSource, type HotTierSettings } from '../../store/hot-tier.js';
import type { OnlineStore, ReadOptions, ReadResult } from '../../store/online-store.js';
import { replaceOnce } from '../support/registry-text.js';

/**
 * The hot tier on the embedded store and the embedded change feed (the real
 * ones); where a test needs the feed in a state the embedded log never is in
 * (lagging, unconfirmed, restarted), a ChangeSource whose status the test sets.
 */
const registry = loadRegistry();
const T = Date.UTC(2030, 0, 1, 12);
let now = T;
const clock = () => now;
const profile = findView(registry, 'profile')!.versions[0]!; // TTL 7 d
const clickV2 = findView(registry, 'clickStats')!.versions[1]!; // TTL 60 s
const settings: HotTierSettings = { maxBytes: 1 << 20, maxLagRecords: 10, maxSilenceMs: 1000, maxAgeMs: 0 };

const values = (sessionLength: number) => ({ sessionLength, isPremium: false, country: 'DE', embedding: [0.5] });

/** A store that counts reads and can hold a read's answer until released (a read in flight across a change). */
class CountingStore implements OnlineStore {
  reads = 0;
  readIds: string[] = [];
  hold: Promise<void> | null = null;
  constructor(readonly inner: CodecStore) {}
  get kind(): string {
    return this.inner.kind;
  }
  async readSettled(view: ViewVersion, ids: readonly string[], options?: ReadOptions): Promise<ReadResult[]> {
    this.reads++;
    this.readIds.push(...ids);
    const answer = await this.inner.readSettled(view, ids, options);
    if (this.hold) await this.hold;
    return answer;
  }
  read: OnlineStore['read'] = (v, ids, o) => this.inner.read(v, ids, o);
  write: OnlineStore['write'] = (v, rows) => this.inner.write(v, rows);
  ping = () => this.inner.ping();
  health: OnlineStore['health'] = () => this.inner.health();
  close = () => this.inner.close();
}

/** A feed whose status the test decides; records are delivered by `emit`. */
class SetFeed implements ChangeSource {
  state: TailStatus = { running: true, epoch: 1, confirmedAtMs: Date.now(), partitions: [] };
  private listener: ((r: LogRecord) => void) | null = null;
  subscribe(listener: (r: LogRecord) => void) {
    this.listener = listener;
    return () => void (this.listener = null);
  }
  status(): TailStatus {
    return this.state;
  }
  emit(key: string | null): void {
    this.listener?.({ topic: changeTopic, partition: 0, offset: 0, key, value: Buffer.from('{}'), timestampMs: 0, headers: {} });
  }
}

const opened: { close(): Promise<void> | void }[] = [];
after(async () => {
  for (const o of opened) await o.close();
});

async function setUp(feedKind: 'embedded' | 'set' = 'embedded', tierSettings: HotTierSettings = settings, reg: Registry = registry) {
  const inner = createStore({ kind: 'embedded' }, clock);
  const store = new CountingStore(inner);
  const log = new EmbeddedLog();
  const feed = feedKind === 'embedded' ? await ChangeFeed.start(log) : new SetFeed();
  const tier = new HotTier(store, feed, tierSettings, reg, clock);
  opened.push({ close: async () => {
    tier.detach();
    if (feed instanceof ChangeFeed) await feed.stop();
    await inner.close();
  } });
  /** What the materializer does: write the value, then commit its change event. */
  const change = async (view: ViewVersion, id: string, v: Record<string, unknown>, eventTimeMs: number) => {
    await inner.write(view, [{ entityId: id, values: v as never, eventTimeMs }]);
    await log.produce([encodeChange({
      entity: view.entityName, id, view: view.viewName, version: view.version, values: v as never, eventTime: new Date(eventTimeMs).toISOString(),
      source: { topic: 'click-events', partition: 0, offset: eventTimeMs },
    })]);
  };
  return { inner, store, log, feed, tier, change };
}

async function lookups(view: ViewVersion, outcome: string): Promise<number> {
  const metric = await hotTierLookups.get();
  return metric.values.find((v) => v.labels.view === `${view.viewName}:v${view.version}` && v.labels.outcome === outcome)?.value ?? 0;
}

describe('hot tier', () => {
  test('a second read is served from memory, equal to the store\'s answer', async () => {
    now = T;
    const { inner, store, tier } = await setUp();
    await inner.write(profile, [{ entityId: 'a', values: values(1), eventTimeMs: T - 1000 }]);
    const hits = await lookups(profile, 'hit');
    const first = await tier.readSettled(profile, ['a', 'missing']);
    const second = await tier.readSettled(profile, ['a', 'missing']);
    assert.deepEqual(second, first);
    assert.deepEqual(second, await inner.readSettled(profile, ['a', 'missing']));
    assert.equal(store.reads, 1, 'the second read did not reach the store');
    assert.equal(await lookups(profile, 'hit'), hits + 2);
  });

  test('a consumed change event replaces the value; a cached "missing" is invalidated by the first write', async () => {
    now = T;
    const { tier, change, store } = await setUp();
    assert.deepEqual(await tier.readSettled(profile, ['new']), [null]);
    await change(profile, 'new', values(1), T - 1000);
    assert.deepEqual((await tier.readSettled(profile, ['new']))[0], { values: values(1), eventTimeMs: T - 1000, stale: false });
    await change(profile, 'new', values(2), T - 500);
    assert.deepEqual((await tier.readSettled(profile, ['new']))[0], { values: values(2), eventTimeMs: T - 500, stale: false });
    assert.equal(store.reads, 3);
    await tier.readSettled(profile, ['new']);
    assert.equal(store.reads, 3, 'cached again after the change');
  });

  test('a change event that comes again is ignored (no store read); a later or another source partition\'s is not', async () => {
    now = T;
    const { tier, log, store, inner } = await setUp();
    const announce = async (partition: number, offset: number) => {
      await log.produce([encodeChange({
        entity: profile.entityName, id: 'dup', view: profile.viewName, version: profile.version, values: values(offset) as never,
        eventTime: new Date(T - 1000).toISOString(), source: { topic: 'click-events', partition, offset },
      })]);
      await new Promise((r) => setImmediate(r));
    };
    await inner.write(profile, [{ entityId: 'dup', values: values(1), eventTimeMs: T - 1000 }]);
    // Read first: changes of a view this process has never read are not even looked at.
    await tier.readSettled(profile, ['dup']);
    await announce(0, 10);
    await tier.readSettled(profile, ['dup']);
    const reads = store.reads;
    const duplicates = (await changeFeedDuplicates.get()).values.find((v) => v.labels.reader === 'hot_tier')?.value ?? 0;
    await announce(0, 10);
    await announce(0, 9);
    await tier.readSettled(profile, ['dup']);
    assert.equal(store.reads, reads, 'a duplicate invalidated the entry');
    assert.equal((await changeFeedDuplicates.get()).values.find((v) => v.labels.reader === 'hot_tier')?.value, duplicates + 2);
    await announce(1, 3);
    await tier.readSettled(profile, ['dup']);
    assert.equal(store.reads, reads + 1, 'a change from another source partition invalidates');
    await announce(0, 11);
    await tier.readSettled(profile, ['dup']);
    assert.equal(store.reads, reads + 2, 'a later change invalidates');
  });

  test('a read in flight while its value changes does not put the older value into memory', async () => {
    now = T;
    const { inner, store, tier, change } = await setUp();
    await inner.write(profile, [{ entityId: 'r', values: values(1), eventTimeMs: T - 2000 }]);
    let release!: () => void;
    store.hold = new Promise((r) => (release = r));
    const inFlight = tier.readSettled(profile, ['r']); // reads v1 from the store, then waits
    await new Promise((r) => setImmediate(r));
    await change(profile, 'r', values(2), T - 1000); // consumed while the read is in flight
    store.hold = null;
    release();
    // The in-flight read answers what it read (v1: it began before the change) but must not have cached it.
    assert.deepEqual(((await inFlight)[0] as { values: unknown }).values, values(1));
    const after = await tier.readSettled(profile, ['r']);
    assert.deepEqual((after[0] as { values: unknown }).values, values(2));
  });

  test('staleness is decided at every read, and a value past the store\'s expiry is asked of the store again', async () => {
    now = T;
    const { inner, store, tier } = await setUp();
    await inner.write(clickV2, [{ entityId: 'u', values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: T - 59_000 }]);
    assert.equal(((await tier.readSettled(clickV2, ['u']))[0] as { stale: boolean }).stale, false);
    now = T + 2000; // 61 s old: past the 60 s TTL
    assert.equal(((await tier.readSettled(clickV2, ['u']))[0] as { stale: boolean }).stale, true);
    assert.equal(store.reads, 1, 'went stale in memory, without a store read');
    now = T + 62_000; // 121 s: past the store's retention (2 × TTL)
    assert.deepEqual(await tier.readSettled(clickV2, ['u']), [null]);
    assert.equal(store.reads, 2);
  });

  test('its own writes (the push API) are visible as soon as write resolves', async () => {
    now = T;
    const { tier } = await setUp();
    await tier.write(profile, [{ entityId: 'w', values: values(1), eventTimeMs: T - 1000 }]);
    assert.deepEqual(((await tier.readSettled(profile, ['w']))[0] as { values: unknown }).values, values(1));
    await tier.write(profile, [{ entityId: 'w', values: values(2), eventTimeMs: T - 500 }]);
    assert.deepEqual(((await tier.readSettled(profile, ['w']))[0] as { values: unknown }).values, values(2));
  });

  test('a stopped feed: every read goes to the store, nothing is cached', async () => {
    now = T;
    const { inner, store, tier, feed } = await setUp();
    await inner.write(profile, [{ entityId: 's', values: values(1), eventTimeMs: T - 1000 }]);
    await tier.readSettled(profile, ['s']);
    await (feed as ChangeFeed).stop();
    assert.equal(tier.bypassing(), 'feed_stopped');
    await inner.write(profile, [{ entityId: 's', values: values(2), eventTimeMs: T - 500 }]); // a change this process cannot see
    assert.deepEqual(((await tier.readSettled(profile, ['s']))[0] as { values: unknown }).values, values(2));
    const reads = store.reads;
    await tier.readSettled(profile, ['s']);
    assert.equal(store.reads, reads + 1);
  });

  test('a feed that lags past the bound or has not confirmed its position is bypassed; a new epoch flushes', async () => {
    now = T;
    const { inner, store, tier, feed } = await setUp('set');
    const set = feed as SetFeed;
    await inner.write(profile, [{ entityId: 'l', values: values(1), eventTimeMs: T - 1000 }]);
    await tier.readSettled(profile, ['l']);
    set.state = { ...set.state, partitions: [{ topic: changeTopic, partition: 0, next: 5, end: 16 }] };
    assert.equal(tier.bypassing(), 'feed_lagging');
    set.state = { ...set.state, partitions: [{ topic: changeTopic, partition: 0, next: 6, end: 16 }] };
    assert.equal(tier.bypassing(), null, 'a lag of exactly the bound is within it');
    set.state = { ...set.state, confirmedAtMs: Date.now() - 1500 };
    assert.equal(tier.bypassing(), 'feed_unconfirmed');
    set.state = { ...set.state, confirmedAtMs: null };
    assert.equal(tier.bypassing(), 'feed_unconfirmed');
    // Back, same epoch: writes made while the tier was bypassed went to the store, not through
    // the tier, so it starts empty (one store read), then caches again.
    set.state = { ...set.state, confirmedAtMs: Date.now() };
    const reads = store.reads;
    await tier.readSettled(profile, ['l']);
    assert.equal(store.reads, reads + 1, 'resuming after a bypass flushes');
    await tier.readSettled(profile, ['l']);
    assert.equal(store.reads, reads + 1, 'then the entry is cached again');
    // Back in a new epoch (the tail restarted from the log end and may have skipped changes): flushed.
    set.state = { ...set.state, epoch: 2 };
    await tier.readSettled(profile, ['l']);
    assert.equal(store.reads, reads + 2);
    assert.equal(tier.size, 1);
  });

  test('a change event without a readable key flushes everything; one of an unread view costs nothing', async () => {
    now = T;
    const { inner, tier, feed } = await setUp('set');
    await inner.write(profile, [{ entityId: 'k', values: values(1), eventTimeMs: T - 1000 }]);
    await tier.readSettled(profile, ['k']);
    (feed as SetFeed).emit('riskStats:v1:m1');
    assert.equal(tier.size, 1);
    (feed as SetFeed).emit(null);
    assert.equal(tier.size, 0);
    await tier.readSettled(profile, ['k']);
    (feed as SetFeed).emit('no key shape');
    assert.equal(tier.size, 0);
  });

  test('views opt out or bound entry age in the registry', async () => {
    now = T;
    let text = fs.readFileSync(fromRoot('schema', 'registry.yaml'), 'utf8');
    text = replaceOnce(text, '    owner: identity-team@example.com\n', '    owner: identity-team@example.com\n    hotTier: { maxAge: 10s }\n');
    text = replaceOnce(text, '    owner: ranking-team@example.com\n', '    owner: ranking-team@example.com\n    hotTier: { enabled: false }\n');
    const reg = parseRegistry(text, 'test.yaml');
    const p = findView(reg, 'profile')!.versions[0]!;
    const c = findView(reg, 'clickStats')!.versions[1]!;
    assert.deepEqual(p.hotTier, { enabled: true, maxAgeMs: 10_000 });
    assert.deepEqual(c.hotTier, { enabled: false, maxAgeMs: null });
    const { inner, store, tier } = await setUp('embedded', settings, reg);
    await inner.write(p, [{ entityId: 'x', values: values(1), eventTimeMs: T - 1000 }]);
    await inner.write(c, [{ entityId: 'x', values: { clickRate: 1, clicks: 1, impressions: 1 }, eventTimeMs: T - 1000 }]);
    await tier.readSettled(c, ['x']);
    await tier.readSettled(c, ['x']);
    assert.equal(store.reads, 2, 'clickStats opted out: every read goes to the store');
    await tier.readSettled(p, ['x']);
    now = T + 9_000;
    await tier.readSettled(p, ['x']);
    assert.equal(store.reads, 3);
    now = T + 10_000;
    await tier.readSettled(p, ['x']);
    assert.equal(store.reads, 4, 'held 10 s: read again');
    // HOT_TIER_MAX_AGE_MS bounds every view; the lower bound wins.
    const bounded = await setUp('embedded', { ...settings, maxAgeMs: 1000 }, reg);
    await bounded.inner.write(p, [{ entityId: 'y', values: values(1), eventTimeMs: T - 1000 }]);
    await bounded.tier.readSettled(p, ['y']);
    now += 1000;
    await bounded.tier.readSettled(p, ['y']);
    assert.equal(bounded.store.reads, 2);
  });

  test('bad registry values for hotTier are refused with the path', async () => {
    const text = fs.readFileSync(fromRoot('schema', 'registry.yaml'), 'utf8');
    for (const [setting, message] of [['hotTier: { maxAge: 0s }', /bad duration/], ['hotTier: { enabled: maybe }', /wrong value type/], ['hotTier: { ttl: 1s }', /unknown property "ttl"/]] as const) {
      const bad = replaceOnce(text, '    owner: identity-team@example.com\n', `    owner: identity-team@example.com\n    ${setting}\n`);
      assert.throws(() => parseRegistry(bad, 'bad.yaml'), (error: Error & { issues?: { path: string; message: string }[] }) => {
        assert.ok(error.issues?.some((i) => i.path.includes('/hotTier') && message.test(i.message)), JSON.stringify(error.issues));
        return true;
      });
    }
  });

  test('bounded in bytes: the least recently used values are evicted', async () => {
    now = T;
    const { inner, tier } = await setUp('embedded', { ...settings, maxBytes: 20_000 });
    const ids = Array.from({ length: 200 }, (_, i) => `e${i}`);
    await inner.write(profile, ids.map((id) => ({ entityId: id, values: values(1), eventTimeMs: T - 1000 })));
    await tier.readSettled(profile, ids);
    assert.ok(tier.size > 10 && tier.size < 200, `held ${tier.size}`);
    const kept = tier.hotKeys(1000);
    assert.equal(kept[0], 'profile:v1:e199', 'most recently used first');
    assert.ok(!kept.includes('profile:v1:e0'), 'the oldest went first');
  });

  test('warm-up: the most recently used keys are saved, read back and cached before traffic', async () => {
    now = T;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hot-tier-'));
    const file = path.join(dir, 'sub', 'warm.json');
    const first = await setUp();
    await first.inner.write(profile, ['1', '2', '3'].map((id) => ({ entityId: id, values: values(Number(id)), eventTimeMs: T - 1000 })));
    await first.tier.readSettled(profile, ['1', '2', '3']);
    saveWarmUpKeys(file, [...first.tier.hotKeys(10), 'gone:v1:1', 'profile:v9:1']);
    const second = await setUp();
    await second.inner.write(profile, ['1', '2', '3'].map((id) => ({ entityId: id, values: values(Number(id)), eventTimeMs: T - 1000 })));
    assert.equal(await second.tier.warmUp(loadWarmUpKeys(file), 1000), 3, 'views and versions the registry lacks are skipped');
    const reads = second.store.reads;
    await second.tier.readSettled(profile, ['3', '1']);
    assert.equal(second.store.reads, reads);
    // No file, or a damaged one: start cold, never fail.
    assert.deepEqual(loadWarmUpKeys(path.join(dir, 'none.json')), []);
    fs.writeFileSync(file, '{"version":1,"keys":[1]}');
    assert.deepEqual(loadWarmUpKeys(file), []);
    fs.writeFileSync(file, 'not json');
    assert.deepEqual(loadWarmUpKeys(file), []);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('keys: view, version and an id that may hold colons', () => {
    assert.deepEqual(parseChangeKey('clickStats:v2:a:b'), { view: 'clickStats', version: 2, id: 'a:b' });
    assert.equal(parseChangeKey('clickStats:2:a'), null);
    assert.equal(parseChangeKey('clickStats:v2:'), null);
  });
});
