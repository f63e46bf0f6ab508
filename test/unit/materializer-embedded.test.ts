import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { loadRegistry } from '../../schema/registry.js';
import { findView, type ViewVersion } from '../../schema/types.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import type { MaterializedStore } from '../../store/online-store.js';
import { hash32 } from '../../store/backends/hash-ring.js';
import { mulberry32 } from '../../store/demo-data.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { changeTopic, decodeChange, type FeatureChange } from '../../eventlog/change-event.js';
import type { BatchResult, LogRecord, OutgoingRecord, RecordBatch } from '../../eventlog/event-log.js';
import { Materializer } from '../../materializer/processor.js';
import { startMaterializer } from '../../materializer/run.js';
import type { WindowState } from '../../materializer/windows.js';
import { makeStream } from '../support/event-stream.js';
import { eventually } from '../support/wait.js';

/**
 * The materializer in-process, end to end, on the embedded log and the
 * embedded store: stored values against a hand-computed truth, dead letters,
 * change events, replay after a crash before commit, compare-and-set between
 * two materializers, and the embedded log's consumer groups and atomic commit.
 * The clock is fixed, so freshness and expiry do not depend on how long a test takes.
 */
const registry = loadRegistry();
const T = Date.UTC(2030, 0, 1, 12); // event time base
const clock = () => T + 10_000;
const sec = 1000;

const vv = (name: string, version = 1): ViewVersion => findView(registry, name)!.versions[version - 1]!;
const clickV1 = vv('clickStats', 1);
const clickV2 = vv('clickStats', 2);
const itemStats = vv('itemStats');
const riskStats = vv('riskStats');

const stores: CodecStore[] = [];
function newStore(): CodecStore {
  const store = createStore({ kind: 'embedded' }, clock);
  stores.push(store);
  return store;
}
after(async () => {
  for (const s of stores) await s.close();
});

interface Click { userId: string; adId: string; clicked: boolean; ts: number | string; price?: number; category?: string }
const click = (userId: string, ts: number, extra: Partial<Click> = {}): Click => ({ userId, adId: 'i1', clicked: false, ts, price: 5, category: 'toys', ...extra });

function rec(partition: number, offset: number, body: unknown, topic = 'click-events'): LogRecord {
  const value = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const key = typeof body === 'object' && body !== null ? String((body as Record<string, unknown>).userId ?? (body as Record<string, unknown>).merchantId) : null;
  return { topic, partition, offset, key, value, timestampMs: T, headers: { trace: `t-${offset}` } };
}

/** Records at consecutive offsets from `from`. */
function batch(partition: number, from: number, bodies: readonly unknown[], topic = 'click-events'): RecordBatch {
  return { topic, partition, records: bodies.map((b, i) => rec(partition, from + i, b, topic)) };
}

const bytesOf = (r: OutgoingRecord): Buffer => (typeof r.value === 'string' ? Buffer.from(r.value) : r.value);
const changesOf = (result: BatchResult): FeatureChange[] => result.records.filter((r) => r.topic === changeTopic).map((r) => decodeChange({ value: bytesOf(r) }));
const deadLettersOf = (result: BatchResult): OutgoingRecord[] => result.records.filter((r) => r.topic.endsWith('.dlq'));
const changeIds = (changes: readonly FeatureChange[]) =>
  changes.map((c) => `${c.view}:v${c.version}:${c.id}@${c.source.topic}/${c.source.partition}/${c.source.offset}`).sort();

async function valuesOf(store: CodecStore, view: ViewVersion, ids: readonly string[]) {
  return (await store.read(view, ids)).map((v) => v?.values ?? null);
}

async function stateOf(store: CodecStore, view: ViewVersion, id: string): Promise<{ version: number; state: WindowState } | null> {
  const [s] = await store.readStates(view, [id]);
  return s ? { version: s.version, state: JSON.parse(s.state) as WindowState } : null;
}

function close(actual: unknown, expected: number, label: string): void {
  assert.ok(typeof actual === 'number' && Math.abs(actual - expected) <= 1e-9 * Math.max(1, Math.abs(expected)), `${label}: stored ${String(actual)}, expected ${expected}`);
}

/** A key that the embedded log puts in `partition` of a topic with `count` partitions. */
const keyFor = (partition: number, count: number, salt = ''): string => {
  for (let i = 0; ; i++) if (hash32(`${salt}k${i}`) % count === partition) return `${salt}k${i}`;
};
const committedAll = (log: EmbeddedLog, group: string, topic: string) => {
  const partitions = log.partitionsOf(topic);
  partitions.forEach((records, p) => assert.equal(log.offsetOf(group, topic, p, true).offset, records.length, `${topic}/${p} committed`));
};
describe('Materializer.handle on the embedded store', () => {
  test('events → stored values equal a hand-computed truth (several views, partitions and topics)', async () => {
    const store = newStore();
    const m = new Materializer(registry, store, { now: clock });
    const b0 = batch(0, 0, [
      click('u1', T, { adId: 'i1', price: 10, category: 'books' }),
      click('u1', T + 1 * sec, { adId: 'i1', clicked: true, price: 11 }),
      click('u1', T + 2 * sec, { adId: 'i2', price: 99 }),
      click('u2', T + 3 * sec, { adId: 'i1', clicked: true, price: 12, category: 'garden' }),
    ]);
    const r0 = await m.handle(b0, null);
    assert.equal(r0.checkpoint, String(T + 3 * sec));
    // Item i1 is also fed from partition 1 (a user there), with an older event: not its `last`.
    const r1 = await m.handle(batch(1, 0, [click('u3', T + 2500, { adId: 'i1', price: 50, category: 'old' }), click('u3', T + 4 * sec, { adId: 'i2', clicked: true })]), null);
    assert.equal(r1.checkpoint, String(T + 4 * sec));
    assert.deepEqual(deadLettersOf(r0), []);

    assert.deepEqual(await valuesOf(store, clickV2, ['u1', 'u2', 'u3', 'nobody']), [
      { clickRate: 1 / 3, clicks: 1, impressions: 3 },
      { clickRate: 1, clicks: 1, impressions: 1 },
      { clickRate: 0.5, clicks: 1, impressions: 2 },
      null,
    ]);
    assert.deepEqual(await valuesOf(store, clickV1, ['u1', 'u2']), [{ clickRate: 1 / 3 }, { clickRate: 1 }]);
    assert.deepEqual(await valuesOf(store, itemStats, ['i1', 'i2']), [
      { ctr: 2 / 4, price: 12, category: 'garden' },
      { ctr: 1 / 2, price: 5, category: 'toys' },
    ]);
    const [u1] = await store.read(clickV2, ['u1']);
    assert.equal(u1!.eventTimeMs, T + 2 * sec);
    assert.equal(u1!.stale, false);

    const rt = await m.handle(batch(2, 0, [
      { userId: 'x', merchantId: 'm1', amount: 10.5, chargeback: false, ts: T },
      { userId: 'x', merchantId: 'm1', amount: 4.25, chargeback: true, ts: new Date(T + sec).toISOString() },
      { userId: 'y', merchantId: 'm2', amount: 1, chargeback: false, ts: T + 2 * sec },
    ], 'transactions'), null);
    assert.deepEqual(deadLettersOf(rt), []);
    assert.deepEqual(await valuesOf(store, riskStats, ['m1', 'm2']), [
      { txnCount1h: 2, amountSum1h: 14.75, chargebackRate: 0.5 },
      { txnCount1h: 1, amountSum1h: 1, chargebackRate: 0 },
    ]);
  });

  test('invalid and late events go to <topic>.dlq with a dlq-reason header and the original bytes', async () => {
    const store = newStore();
    const m = new Materializer(registry, store, { now: clock });
    const bodies: unknown[] = [
      click('u1', T), // 0 on time
      '{not json', // 1 invalid
      { userId: 'u1', adId: 'i1', ts: T }, // 2 invalid: no clicked
      click('u1', T + 60 * sec), // 3 on time, moves stream time to T+60s
      click('u1', T + 29 * sec), // 4 31 s behind: late for clickStats (30 s) but not itemStats (1 m)
      click('u1', T - 10 * 60 * sec), // 5 late for all three view versions
      { userId: 'u1', adId: 'i1', clicked: true, ts: 'yesterday' }, // 6 invalid timestamp
    ];
    const b = batch(0, 0, bodies);
    const result = await m.handle(b, null);
    assert.equal(result.checkpoint, String(T + 60 * sec));
    const dlq = deadLettersOf(result);
    const summary = dlq.map((r) => `${r.headers!['dlq-source-offset']} ${r.headers!['dlq-reason']!.replace(/:.*$/s, '')}`).sort();
    assert.deepEqual(summary, [
      '1 invalid', '2 invalid', '4 late for clickStats v1', '4 late for clickStats v2',
      '5 late for clickStats v1', '5 late for clickStats v2', '5 late for itemStats v1', '6 invalid',
    ]);
    for (const r of dlq) {
      const offset = Number(r.headers!['dlq-source-offset']);
      const source = b.records[offset]!;
      assert.equal(r.topic, 'click-events.dlq');
      assert.ok(bytesOf(r).equals(source.value), `original bytes of offset ${offset}`);
      assert.equal(r.key, source.key);
      assert.equal(r.headers!['dlq-source-topic'], 'click-events');
      assert.equal(r.headers!['dlq-source-partition'], '0');
      assert.equal(r.headers!.trace, `t-${offset}`, 'original headers kept');
    }
    const reason = (offset: number) => dlq.filter((r) => r.headers!['dlq-source-offset'] === String(offset)).map((r) => r.headers!['dlq-reason']!);
    assert.match(reason(1)[0]!, /^invalid: not valid JSON: /);
    assert.equal(reason(2)[0], 'invalid: missing required field "clicked" (Boolean)');
    assert.match(reason(6)[0]!, /^invalid: field "ts" must be a Timestamp/);
    assert.match(reason(4).sort()[0]!, /^late for clickStats v1: event time .* is more than 30000 ms older than the partition's stream time/);

    // Late events changed nothing; offset 4 counted for itemStats, where it was on time.
    assert.deepEqual(await valuesOf(store, clickV2, ['u1']), [{ clickRate: 0, clicks: 0, impressions: 2 }]);
    assert.deepEqual(await valuesOf(store, itemStats, ['i1']), [{ ctr: 0, price: 5, category: 'toys' }]);
    assert.deepEqual((await stateOf(store, clickV2, 'u1'))!.state.recentLate, ['click-events/0/4', 'click-events/0/5']);
  });

  test('an event on a topic the registry does not declare is a dead letter', async () => {
    const m = new Materializer(registry, newStore(), { now: clock });
    const result = await m.handle(batch(0, 0, [click('u1', T)], 'mystery'), null);
    assert.deepEqual(result.records.map((r) => [r.topic, r.headers!['dlq-reason']]), [['mystery.dlq', 'invalid: topic mystery has no event schema in the registry']]);
  });

  test('lateness is judged against the checkpoint (the partition\'s committed stream time)', async () => {
    const store = newStore();
    const m = new Materializer(registry, store, { now: clock });
    const result = await m.handle(batch(0, 7, [click('u9', T)]), String(T + 31 * sec));
    assert.deepEqual(deadLettersOf(result).map((r) => r.headers!['dlq-reason']!.replace(/:.*$/s, '')).sort(), ['late for clickStats v1', 'late for clickStats v2']);
    assert.equal(result.checkpoint, String(T + 31 * sec), 'an older event does not move the stream time back');
    assert.deepEqual(await valuesOf(store, clickV2, ['u9']), [null]);
    assert.deepEqual(await valuesOf(store, itemStats, ['i1']), [{ ctr: 0, price: 5, category: 'toys' }]);
    // The same event with no checkpoint (first batch of the partition) is on time.
    const fresh = new Materializer(registry, newStore(), { now: clock });
    assert.deepEqual(deadLettersOf(await fresh.handle(batch(0, 7, [click('u9', T)]), null)), []);
  });

  test('change events only when the stored value changed (its features or its event time); a duplicate never produces one', async () => {
    const store = newStore();
    const m = new Materializer(registry, store, { now: clock });
    const b1 = batch(0, 0, [click('u1', T)]);
    const r1 = await m.handle(b1, null);
    const c1 = changesOf(r1);
    assert.deepEqual(changeIds(c1), ['clickStats:v1:u1@click-events/0/0', 'clickStats:v2:u1@click-events/0/0', 'itemStats:v1:i1@click-events/0/0']);
    const v2 = c1.find((c) => c.view === 'clickStats' && c.version === 2)!;
    assert.deepEqual(v2, {
      entity: 'user', id: 'u1', view: 'clickStats', version: 2, values: { clickRate: 0, clicks: 0, impressions: 1 },
      eventTime: new Date(T).toISOString(), source: { topic: 'click-events', partition: 0, offset: 0 },
    });
    const record = r1.records.find((r) => r.topic === changeTopic && r.key === 'clickStats:v2:u1')!;
    assert.deepEqual(record.headers, { 'source-topic': 'click-events', 'source-partition': '0', 'source-offset': '0' });

    // A second identical impression at the same time: v1's clickRate stays 0 and itemStats stays (0, 5, toys), their event
    // times too; only v2 (impressions) changes.
    const r2 = await m.handle(batch(0, 1, [click('u1', T)]), r1.checkpoint);
    assert.deepEqual(changeIds(changesOf(r2)), ['clickStats:v2:u1@click-events/0/1']);
    assert.deepEqual(changesOf(r2)[0]!.values, { clickRate: 0, clicks: 0, impressions: 2 });

    // The same impression a second later: the features of v1 and itemStats stay, but their event time moves (and with it
    // when they go stale), so all three change; a cache kept by change events must hear of it.
    const later = await new Materializer(registry, newStore(), { now: clock }).handle(batch(0, 0, [click('u1', T), click('u1', T + sec)]), null);
    assert.deepEqual(changesOf(later).map((c) => `${c.view}:v${c.version} ${c.eventTime}`), [
      `clickStats:v1 ${new Date(T + sec).toISOString()}`, `clickStats:v2 ${new Date(T + sec).toISOString()}`, `itemStats:v1 ${new Date(T + sec).toISOString()}`,
    ]);

    // A click changes all three.
    const r3 = await m.handle(batch(0, 2, [click('u1', T + 2 * sec, { clicked: true })]), r2.checkpoint);
    assert.deepEqual(changeIds(changesOf(r3)), ['clickStats:v1:u1@click-events/0/2', 'clickStats:v2:u1@click-events/0/2', 'itemStats:v1:i1@click-events/0/2']);
    assert.deepEqual(changesOf(r3).find((c) => c.view === 'itemStats')!.values, { ctr: 1 / 3, price: 5, category: 'toys' });

    // Batches 1 and 2 again (already committed long ago): duplicates, no change events, no writes.
    const versions = await Promise.all([clickV1, clickV2, itemStats].map(async (v) => (await stateOf(store, v, v === itemStats ? 'i1' : 'u1'))!.version));
    for (const [b, cp] of [[b1, null], [batch(0, 1, [click('u1', T)]), r1.checkpoint]] as const) {
      const again = await m.handle(b, cp);
      assert.deepEqual(again.records, []);
    }
    assert.deepEqual(await Promise.all([clickV1, clickV2, itemStats].map(async (v) => (await stateOf(store, v, v === itemStats ? 'i1' : 'u1'))!.version)), versions);
    assert.deepEqual(await valuesOf(store, clickV2, ['u1']), [{ clickRate: 1 / 3, clicks: 1, impressions: 3 }]);
  });

  test('replay safety: the same batch and checkpoint twice (a crash before commit) changes nothing and re-produces the same outputs', async () => {
    const store = newStore();
    const m = new Materializer(registry, store, { now: clock });
    const first = await m.handle(batch(0, 0, [click('u1', T), click('u2', T, { adId: 'i2' })]), null);
    const b = batch(0, 2, [
      click('u1', T + 5 * sec, { clicked: true }),
      'garbage',
      click('u2', T + 6 * sec, { adId: 'i2', price: 7 }),
      click('u3', T + 40 * sec, { adId: 'i3', clicked: true }),
      click('u1', T + sec), // stream time is T+40s: late for clickStats (30 s), on time for itemStats (1 m)
      click('u2', T - 5 * 60 * sec), // late for all
      click('u2', T + 41 * sec, { adId: 'i2', price: 7 }), // another impression: clickStats v1 of u2 stays 0
    ]);
    const views = [[clickV1, ['u1', 'u2', 'u3']], [clickV2, ['u1', 'u2', 'u3']], [itemStats, ['i1', 'i2', 'i3']]] as const;
    const snapshot = async () => Promise.all(views.map(async ([v, ids]) => ({
      values: await store.read(v, ids),
      versions: (await store.readStates(v, ids)).map((s) => s?.version ?? 0),
    })));

    const a = await m.handle(b, first.checkpoint);
    const afterFirst = await snapshot();
    const again = await m.handle(b, first.checkpoint);
    assert.deepEqual(await snapshot(), afterFirst, 'the second attempt wrote nothing');
    assert.equal(again.checkpoint, a.checkpoint);
    assert.ok(changesOf(a).length >= 6, `change events: ${changeIds(changesOf(a)).join(', ')}`);
    assert.deepEqual(changesOf(again), changesOf(a), 'the same change events (values and source offsets)');
    const dlq = (r: BatchResult) => deadLettersOf(r).map((d) => `${d.topic} ${d.headers!['dlq-source-offset']} ${d.headers!['dlq-reason']!.split(/[: ]/)[0]}`).sort();
    assert.deepEqual(dlq(a), [
      'click-events.dlq 3 invalid', 'click-events.dlq 6 late', 'click-events.dlq 6 late',
      'click-events.dlq 7 late', 'click-events.dlq 7 late', 'click-events.dlq 7 late',
    ]);
    assert.deepEqual(dlq(again), dlq(a));
    for (const d of deadLettersOf(again)) assert.ok(bytesOf(d).equals(b.records[Number(d.headers!['dlq-source-offset']) - 2]!.value));

    // And a third time, the same again; then the batch after it carries on normally.
    assert.deepEqual(changesOf(await m.handle(b, first.checkpoint)), changesOf(a));
    const next = await m.handle(batch(0, 9, [click('u1', T + 50 * sec)]), a.checkpoint);
    assert.deepEqual(changeIds(changesOf(next)), ['clickStats:v1:u1@click-events/0/9', 'clickStats:v2:u1@click-events/0/9', 'itemStats:v1:i1@click-events/0/9']);
    assert.deepEqual(await valuesOf(store, clickV2, ['u1', 'u2', 'u3']), [
      { clickRate: 1 / 3, clicks: 1, impressions: 3 }, { clickRate: 0, clicks: 0, impressions: 3 }, { clickRate: 1, clicks: 1, impressions: 1 },
    ]);
  });

  test('a redelivered batch that has grown still re-produces the change its first attempt caused', async () => {
    // Kafka (and the embedded log) may hand back more records on redelivery than the first attempt saw.
    const store = newStore();
    const m = new Materializer(registry, store, { now: clock });
    const firstAttempt = await m.handle(batch(0, 0, [click('u1', T)]), null);
    assert.equal(changesOf(firstAttempt).length, 3);
    // Crash before commit. The batch comes again with one more impression at the same time, which leaves clickStats v1 and
    // itemStats unchanged.
    const retry = await m.handle(batch(0, 0, [click('u1', T), click('u1', T)]), null);
    assert.deepEqual(changeIds(changesOf(retry)), ['clickStats:v1:u1@click-events/0/0', 'clickStats:v2:u1@click-events/0/1', 'itemStats:v1:i1@click-events/0/0']);
    assert.deepEqual(changesOf(retry).map((c) => c.values), [{ clickRate: 0 }, { clickRate: 0, clicks: 0, impressions: 2 }, { ctr: 0, price: 5, category: 'toys' }]);
  });

  test('compare-and-set: two materializers on one store, concurrent batches of different partitions for one item, lose no update', async () => {
    const inner = newStore();
    let conflicts = 0;
    const store: MaterializedStore = {
      kind: inner.kind,
      read: (v, ids) => inner.read(v, ids),
      readSettled: (v, ids) => inner.readSettled(v, ids),
      write: (v, rows) => inner.write(v, rows),
      readStates: (v, ids) => inner.readStates(v, ids),
      writeMaterialized: async (v, rows) => {
        const written = await inner.writeMaterialized(v, rows);
        conflicts += written.filter((w) => !w).length;
        return written;
      },
      ping: () => inner.ping(),
      health: () => inner.health(),
      close: () => inner.close(),
    };
    const ms = [new Materializer(registry, store, { now: clock }), new Materializer(registry, store, { now: clock })];
    const partitions = 6;
    const perBatch = 25;
    const random = mulberry32(9);
    let clicks = 0;
    let impressions = 0;
    let newest = { ts: -1, price: 0 };
    const users = new Map<string, { clicks: number; impressions: number }>();
    const checkpoints = new Map<number, string | null>();
    // Two rounds; in each, one batch per partition, all at once, alternating between the two materializers.
    for (let round = 0; round < 2; round++) {
      const batches = Array.from({ length: partitions }, (_, p) => batch(p, round * perBatch, Array.from({ length: perBatch }, (_, i) => {
        const ts = T + ((round * perBatch + i) * partitions + p) * 10; // unique event times
        const clicked = random() < 0.3;
        const userId = `u${p}-${i % 4}`; // a user's events come from one partition
        const price = Math.round(random() * 1000) / 10;
        clicks += clicked ? 1 : 0;
        impressions++;
        if (ts > newest.ts) newest = { ts, price };
        const u = users.get(userId) ?? { clicks: 0, impressions: 0 };
        users.set(userId, { clicks: u.clicks + (clicked ? 1 : 0), impressions: u.impressions + 1 });
        return click(userId, ts, { adId: 'hot', clicked, price });
      })));
      const results = await Promise.all(batches.map((b, p) => ms[p % 2]!.handle(b, checkpoints.get(p) ?? null)));
      results.forEach((r, p) => checkpoints.set(p, r.checkpoint));
    }
    assert.ok(conflicts > 0, 'the batches really raced on the item (compare-and-set refused some writes)');
    const [hot] = await inner.read(itemStats, ['hot']);
    close(hot?.values.ctr, clicks / impressions, 'ctr of hot');
    assert.equal(hot?.values.price, newest.price, 'last price');
    const { state } = (await stateOf(inner, itemStats, 'hot'))!;
    // itemStats measures: [count where clicked, count, last price, last category].
    assert.equal(state.buckets.reduce((s, b) => s + (b.acc[1] as number), 0), impressions, 'every impression counted once');
    assert.equal(state.buckets.reduce((s, b) => s + (b.acc[0] as number), 0), clicks, 'every click counted once');
    assert.deepEqual(state.offsets, Object.fromEntries(Array.from({ length: partitions }, (_, p) => [`click-events/${p}`, 2 * perBatch - 1])));
    const ids = [...users.keys()];
    const stored = await valuesOf(inner, clickV2, ids);
    ids.forEach((id, i) => {
      const u = users.get(id)!;
      assert.equal(stored[i]?.impressions, u.impressions, `impressions of ${id}`);
      assert.equal(stored[i]?.clicks, u.clicks, `clicks of ${id}`);
    });
  });
});

describe('EmbeddedLog: consumer groups and transactional commit', () => {
  const echo = (tag: string, seen: { who: string; partition: number; offsets: number[]; checkpoint: string | null }[]) =>
    async (b: RecordBatch, checkpoint: string | null): Promise<BatchResult> => {
      seen.push({ who: tag, partition: b.partition, offsets: b.records.map((r) => r.offset), checkpoint });
      return { records: b.records.map((r) => ({ topic: 'out', key: r.key, value: `${r.partition}/${r.offset}` })), checkpoint: `${tag}@${b.records.at(-1)!.offset}` };
    };
  const outputs = (log: EmbeddedLog) => log.partitionsOf('out').flat().map((r) => r.value.toString()).sort();

  test('two consumers of one group share the partitions; each record is handled once; a leaver\'s partitions move on', async () => {
    const log = new EmbeddedLog();
    try {
      await log.createTopics([{ topic: 'in', partitions: 4 }, { topic: 'out', partitions: 1 }]);
      const seen: Parameters<typeof echo>[1] = [];
      const a = log.consumer({ groupId: 'g', topics: ['in'], handler: echo('a', seen), instanceId: 'a', fromBeginning: true });
      const b = log.consumer({ groupId: 'g', topics: ['in'], handler: echo('b', seen), instanceId: 'b', fromBeginning: true });
      await a.start();
      await b.start();
      await log.produce(Array.from({ length: 200 }, (_, i) => ({ topic: 'in', key: `key-${i}`, value: String(i) })));
      await eventually(async () => committedAll(log, 'g', 'in'));
      const owners = (who: string) => [...new Set(seen.filter((s) => s.who === who).map((s) => s.partition))].sort();
      assert.deepEqual(owners('a'), [0, 2]);
      assert.deepEqual(owners('b'), [1, 3]);
      const all = log.partitionsOf('in').flatMap((records, p) => records.map((r) => `${p}/${r.offset}`)).sort();
      assert.equal(all.length, 200);
      assert.deepEqual(seen.flatMap((s) => s.offsets.map((o) => `${s.partition}/${o}`)).sort(), all, 'every record handled exactly once');
      assert.deepEqual(outputs(log), all, 'every output committed exactly once');

      // b leaves: a takes partitions 1 and 3 from where b committed, with b's checkpoint.
      await b.stop();
      seen.length = 0;
      const more = [1, 3].map((p) => ({ topic: 'in', key: keyFor(p, 4, 'more'), value: 'x' }));
      await log.produce(more);
      await eventually(async () => committedAll(log, 'g', 'in'));
      assert.deepEqual(seen.map((s) => [s.who, s.partition, s.offsets.length, s.checkpoint?.startsWith('b@')]).sort(), [['a', 1, 1, true], ['a', 3, 1, true]]);
      assert.equal(outputs(log).length, 202);
    } finally {
      await log.close();
    }
  });

  test('the commit is atomic with the outputs: a handler that throws commits nothing and gets the same batch again', async () => {
    const log = new EmbeddedLog();
    try {
      await log.createTopics([{ topic: 'in', partitions: 1 }, { topic: 'out', partitions: 1 }]);
      const calls: { offsets: number[]; checkpoint: string | null; outAtCall: number; committedAtCall: number }[] = [];
      const consumer = log.consumer({
        groupId: 'g', topics: ['in'], instanceId: 'x', fromBeginning: true,
        handler: async (b, checkpoint) => {
          calls.push({ offsets: b.records.map((r) => r.offset), checkpoint, outAtCall: log.partitionsOf('out')[0]!.length, committedAtCall: log.offsetOf('g', 'in', 0, true).offset });
          if (calls.length === 1) throw new Error('handler failed (test)');
          return { records: b.records.map((r) => ({ topic: 'out', key: null, value: `done ${r.offset}` })), checkpoint: `cp${calls.length}` };
        },
      });
      await log.produce([0, 1, 2].map((i) => ({ topic: 'in', key: 'k', value: String(i) })));
      await consumer.start();
      await eventually(async () => committedAll(log, 'g', 'in'));
      assert.deepEqual(calls.slice(0, 2).map((c) => [c.offsets, c.checkpoint, c.outAtCall, c.committedAtCall]), [
        [[0, 1, 2], null, 0, 0],
        [[0, 1, 2], null, 0, 0], // the failed attempt left no output and no offset behind
      ]);
      assert.deepEqual(outputs(log), ['done 0', 'done 1', 'done 2']);
      assert.equal(log.offsetOf('g', 'in', 0, true).checkpoint, 'cp2');

      await log.produce([{ topic: 'in', key: 'k', value: '3' }]);
      await eventually(async () => committedAll(log, 'g', 'in'));
      assert.deepEqual(calls.slice(2).map((c) => [c.offsets, c.checkpoint]), [[[3], 'cp2']]);
      assert.deepEqual(outputs(log), ['done 0', 'done 1', 'done 2', 'done 3']);
      await consumer.stop();
    } finally {
      await log.close();
    }
  });

  test('a consumer stopped mid-batch commits the batch in hand (as on Kafka); the next member of the group goes on after it', async () => {
    const log = new EmbeddedLog();
    try {
      await log.createTopics([{ topic: 'in', partitions: 1 }, { topic: 'out', partitions: 1 }]);
      await log.produce([{ topic: 'in', key: 'k', value: 'v' }]);
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let entered!: () => void;
      const inHandler = new Promise<void>((r) => (entered = r));
      const seen: Parameters<typeof echo>[1] = [];
      const slow = log.consumer({
        groupId: 'g', topics: ['in'], instanceId: 'slow', fromBeginning: true,
        handler: async (b, cp) => {
          entered();
          await gate;
          return echo('slow', seen)(b, cp);
        },
      });
      await slow.start();
      await inHandler;
      const stopped = slow.stop();
      release();
      await stopped;
      assert.deepEqual(outputs(log), ['0/0']);
      assert.deepEqual(log.offsetOf('g', 'in', 0, true), { offset: 1, checkpoint: 'slow@0' });
      const next = log.consumer({ groupId: 'g', topics: ['in'], handler: echo('next', seen), instanceId: 'next', fromBeginning: true });
      await next.start();
      await log.produce([{ topic: 'in', key: 'k', value: 'w' }]);
      await eventually(async () => committedAll(log, 'g', 'in'));
      assert.deepEqual(seen.map((s) => [s.who, s.offsets, s.checkpoint]), [['slow', [0], null], ['next', [1], 'slow@0']]);
      assert.deepEqual(outputs(log), ['0/0', '0/1']);
      await next.stop();
    } finally {
      await log.close();
    }
  });

  for (const bLeavesFirst of [false, true]) {
    test(`a member that lost its partition mid-batch cannot commit it${bLeavesFirst ? ' (even after the new owner left again)' : ''}`, async () => {
      const log = new EmbeddedLog();
      try {
        await log.createTopics([{ topic: 'in', partitions: 2 }, { topic: 'out', partitions: 1 }]);
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let entered!: () => void;
        const inHandler = new Promise<void>((r) => (entered = r));
        let aReturned = false;
        const seen: Parameters<typeof echo>[1] = [];
        const a = log.consumer({
          groupId: 'g', topics: ['in'], instanceId: 'a', fromBeginning: true,
          handler: async (b, cp) => {
            if (seen.length === 0) {
              entered();
              await gate;
            }
            const result = await echo('a', seen)(b, cp);
            aReturned = true;
            return result;
          },
        });
        // Only partition 1 has records; a, alone in the group, starts on it.
        await log.produce([0, 1, 2].map((i) => ({ topic: 'in', key: keyFor(1, 2), value: String(i) })));
        await a.start();
        await inHandler;
        // b joins: partition 1 is now b's. b handles and commits it while a is still busy with it.
        const b = log.consumer({ groupId: 'g', topics: ['in'], handler: echo('b', seen), instanceId: 'b', fromBeginning: true });
        await b.start();
        await eventually(async () => committedAll(log, 'g', 'in'));
        if (bLeavesFirst) await b.stop();
        release();
        await eventually(async () => assert.ok(aReturned));
        for (let i = 0; i < 5; i++) await tick(); // a's commit attempt runs right after its handler returns
        assert.deepEqual(seen.map((s) => [s.who, s.partition, s.offsets]), [['b', 1, [0, 1, 2]], ['a', 1, [0, 1, 2]]]);
        assert.deepEqual(outputs(log), ['1/0', '1/1', '1/2'], 'the outputs are committed once, by the owner');
        assert.equal(log.offsetOf('g', 'in', 1, true).checkpoint, 'b@2');
        if (!bLeavesFirst) await b.stop();
        await a.stop();
      } finally {
        await log.close();
      }
    });
  }
});

describe('startMaterializer on the embedded log and store', () => {
  test('a stream with invalid and late events: stored values equal the ground truth; DLQ and change events exactly once', async () => {
    const store = newStore();
    const log = new EmbeddedLog();
    const stream = makeStream({ clicks: 3000, transactions: 1000, users: 40, items: 15, merchants: 8, seed: 2, baseMs: T });
    const running = await Promise.all(['a', 'b'].map((id) =>
      startMaterializer({ registry, store, log, groupId: 'materializer', instanceId: id, materializer: { now: clock } })));
    try {
      for (let i = 0; i < stream.records.length; i += 700) await log.produce(stream.records.slice(i, i + 700));
      await eventually(async () => {
        for (const topic of ['click-events', 'transactions']) committedAll(log, 'materializer', topic);
      }, 60_000);

      const users = [...stream.truth.clickStats.keys()];
      const [v1, v2] = [await store.read(clickV1, users), await store.read(clickV2, users)];
      users.forEach((id, i) => {
        const t = stream.truth.clickStats.get(id)!;
        assert.equal(v2[i]?.values.clicks, t.clicks, `clicks of ${id}`);
        assert.equal(v2[i]?.values.impressions, t.impressions, `impressions of ${id}`);
        close(v2[i]?.values.clickRate, t.clicks / t.impressions, `clickRate of ${id}`);
        close(v1[i]?.values.clickRate, t.clicks / t.impressions, `clickRate v1 of ${id}`);
      });
      const items = [...stream.truth.itemStats.keys()];
      const itemValues = await store.read(itemStats, items);
      items.forEach((id, i) => {
        const t = stream.truth.itemStats.get(id)!;
        close(itemValues[i]?.values.ctr, t.clicks / t.impressions, `ctr of ${id}`);
        assert.equal(itemValues[i]?.values.price, t.price, `price of ${id}`);
        assert.equal(itemValues[i]?.values.category, t.category, `category of ${id}`);
      });
      const merchants = [...stream.truth.riskStats.keys()];
      const risk = await store.read(riskStats, merchants);
      merchants.forEach((id, i) => {
        const t = stream.truth.riskStats.get(id)!;
        assert.equal(risk[i]?.values.txnCount1h, t.count, `txnCount1h of ${id}`);
        close(risk[i]?.values.amountSum1h, t.amount, `amountSum1h of ${id}`);
        close(risk[i]?.values.chargebackRate, t.chargebacks / t.count, `chargebackRate of ${id}`);
      });

      // Dead letters: each invalid event once, each late click once per view version it is late for; the original bytes.
      const clickDlq = log.partitionsOf('click-events.dlq').flat();
      const txnDlq = log.partitionsOf('transactions.dlq').flat();
      const reasons = (records: readonly LogRecord[], prefix: string) => records.filter((r) => r.headers['dlq-reason']?.startsWith(prefix)).length;
      assert.equal(reasons(clickDlq, 'invalid:'), stream.invalid['click-events']);
      assert.equal(reasons(clickDlq, 'late'), stream.late * 3);
      assert.equal(clickDlq.length, stream.invalid['click-events'] + stream.late * 3);
      assert.equal(reasons(txnDlq, 'invalid:'), stream.invalid.transactions);
      assert.equal(txnDlq.length, stream.invalid.transactions);
      for (const d of [...clickDlq, ...txnDlq]) {
        const source = log.partitionsOf(d.headers['dlq-source-topic']!)[Number(d.headers['dlq-source-partition'])]![Number(d.headers['dlq-source-offset'])]!;
        assert.ok(d.value.equals(source.value), 'original bytes');
      }
      const dlqKeys = clickDlq.map((r) => `${r.headers['dlq-source-partition']}/${r.headers['dlq-source-offset']}/${r.headers['dlq-reason']!.slice(0, 30)}`);
      assert.equal(new Set(dlqKeys).size, dlqKeys.length, 'a dead letter was committed twice');

      // Change events: never two for one (view, version, entity, source offset); the last one of each value is the stored value.
      const changes = log.partitionsOf(changeTopic).flat().map((r) => decodeChange(r));
      assert.ok(changes.length > users.length);
      const ids = changeIds(changes);
      assert.equal(new Set(ids).size, ids.length, 'a change event was committed twice');
      const last = new Map<string, FeatureChange>();
      for (const c of changes) last.set(`${c.view}:${c.version}:${c.id}`, c);
      // (A user's changes come from one partition, so they are committed in order. An item's come from every
      // partition, through two materializers, and may be committed in another order than they were stored.)
      users.forEach((id, i) => assert.deepEqual(last.get(`clickStats:2:${id}`)?.values, v2[i]?.values, `last change of clickStats v2 ${id}`));
    } finally {
      for (const r of running) await r.stop();
      await log.close();
    }
  });
});
