import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Aggregate, Feature, Materialization, ScalarTypeName, ViewVersion } from '../../schema/types.js';
import { mulberry32 } from '../../store/demo-data.js';
import type { EventValue, ValidEvent } from '../../materializer/events.js';
import { emptyState, ViewAggregator, type ApplyOutcome, type WindowState } from '../../materializer/windows.js';

/**
 * ViewAggregator on hand-built view versions: every aggregate, tumbling and
 * sliding windows, eviction, duplicates, lateness, the JSON state, and
 * independence from how partitions interleave. Expected values are computed
 * by hand or by brute force over the events, never by the aggregator.
 */
const sec = 1000;
const min = 60 * sec;
const TOPIC = 'events';

function feature(name: string, scalar: ScalarTypeName, aggregate: Aggregate): Feature {
  return { name, type: { scalar, list: false }, typeName: scalar, description: '', aggregate };
}

function viewOf(features: Feature[], spec: Partial<Materialization> = {}): ViewVersion {
  return {
    viewName: 'testView', entityName: 'user', version: 1, active: true, ttlSeconds: 3600, features, readRoles: null, hotTier: { enabled: true, maxAgeMs: null },
    materialization: { source: TOPIC, entityKey: 'userId', windowMs: 10 * min, slideMs: min, allowedLatenessMs: 30 * sec, ...spec },
  };
}

function ev(ts: number, fields: Record<string, EventValue | undefined> = {}): ValidEvent {
  return { ts, fields: { userId: 'u1', ...fields } };
}

const pos = (partition: number, offset: number, topic = TOPIC) => ({ topic, partition, offset });

/**
 * Feeds events like the processor does: per partition, offsets count up from 0
 * and each event is judged against its partition's stream time before it.
 */
class Feeder {
  readonly offsets = new Map<number, number>();
  readonly streamTimes = new Map<number, number>();
  constructor(readonly aggregator: ViewAggregator, readonly state: WindowState = emptyState()) {}

  feed(event: ValidEvent, partition = 0): ApplyOutcome {
    const offset = this.offsets.get(partition) ?? 0;
    this.offsets.set(partition, offset + 1);
    const streamTime = this.streamTimes.get(partition) ?? null;
    if (streamTime === null || event.ts > streamTime) this.streamTimes.set(partition, event.ts);
    return this.aggregator.apply(this.state, event, pos(partition, offset), streamTime);
  }

  feedAll(events: readonly ValidEvent[], partition = 0): ApplyOutcome[] {
    return events.map((e) => this.feed(e, partition));
  }

  value() {
    return this.aggregator.value(this.state);
  }
}

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

describe('ViewAggregator: aggregates', () => {
  test('count without and with where; value is null before any event', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('impressions', 'Int', { fn: 'count', where: null }),
      feature('clicks', 'Int', { fn: 'count', where: 'clicked' }),
    ])));
    assert.equal(f.value(), null);
    f.feedAll([ev(1000, { clicked: true }), ev(2000, { clicked: false }), ev(3000, {}), ev(4000, { clicked: true })]);
    assert.deepEqual(f.value(), { values: { impressions: 4, clicks: 2 }, eventTimeMs: 4000 });
  });

  test('where counts only events whose Boolean is true (absent and false do not count)', () => {
    const f = new Feeder(new ViewAggregator(viewOf([feature('clicks', 'Int', { fn: 'count', where: 'clicked' })])));
    f.feedAll([ev(1000, { clicked: false }), ev(2000, {})]);
    assert.deepEqual(f.value()?.values, { clicks: 0 });
  });

  test('sum, min and max; an event without the (optional) field is skipped; where filters', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('total', 'Float', { fn: 'sum', of: 'amount', where: null }),
      feature('smallest', 'Float', { fn: 'min', of: 'amount', where: null }),
      feature('largest', 'Float', { fn: 'max', of: 'amount', where: null }),
      feature('clickedTotal', 'Float', { fn: 'sum', of: 'amount', where: 'clicked' }),
      feature('clickedMax', 'Float', { fn: 'max', of: 'amount', where: 'clicked' }),
    ])));
    f.feedAll([
      ev(1000, { amount: 2.5, clicked: true }),
      ev(2000, { amount: -1.25 }),
      ev(3000, {}),
      ev(4000, { amount: 10, clicked: false }),
      ev(5000, { amount: 0.5, clicked: true }),
    ]);
    assert.deepEqual(f.value()?.values, { total: 11.75, smallest: -1.25, largest: 10, clickedTotal: 3, clickedMax: 2.5 });
  });

  test('sum is 0 and min/max are null when no event carries the field', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('total', 'Float', { fn: 'sum', of: 'amount', where: null }),
      feature('smallest', 'Float', { fn: 'min', of: 'amount', where: null }),
      feature('largest', 'Float', { fn: 'max', of: 'amount', where: null }),
    ])));
    f.feedAll([ev(1000), ev(2000)]);
    assert.deepEqual(f.value()?.values, { total: 0, smallest: null, largest: null });
  });

  test('min and max over buckets of a sliding window', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('smallest', 'Int', { fn: 'min', of: 'n', where: null }),
      feature('largest', 'Int', { fn: 'max', of: 'n', where: null }),
    ])));
    // One event per minute: buckets 0..5; the extremes are in different buckets.
    f.feedAll([7, 3, 9, 4, 12, 5].map((n, i) => ev(i * min + 1, { n })));
    assert.deepEqual(f.value()?.values, { smallest: 3, largest: 12 });
  });

  test('last: the value with the greatest event time, whatever the arrival order', () => {
    const f = new Feeder(new ViewAggregator(viewOf([feature('category', 'String', { fn: 'last', of: 'category', where: null })], { allowedLatenessMs: 10 * min })));
    f.feedAll([ev(5 * sec, { category: 'b' }), ev(9 * sec, { category: 'newest' }), ev(2 * sec, { category: 'old' }), ev(7 * sec, {})]);
    assert.deepEqual(f.value()?.values, { category: 'newest' });
    // Across buckets too: a newer bucket's value beats an older bucket's.
    f.feed(ev(3 * min, { category: 'in a later bucket' }));
    f.feed(ev(2 * min, { category: 'older bucket, arrived later' }));
    assert.deepEqual(f.value()?.values, { category: 'in a later bucket' });
  });

  test('last: equal event times are broken by partition, then by offset', () => {
    const agg = new ViewAggregator(viewOf([feature('label', 'String', { fn: 'last', of: 'label', where: null })]));
    const t = 1000;
    // Partition 2 beats partition 1, in either order, even with a smaller offset.
    for (const order of [[1, 2], [2, 1]]) {
      const state = emptyState();
      for (const p of order) assert.equal(agg.apply(state, ev(t, { label: `p${p}` }), pos(p, p === 2 ? 3 : 99), null), 'applied');
      assert.deepEqual(agg.value(state)?.values, { label: 'p2' }, `order ${order.join(',')}`);
    }
    // Same time and partition: the greater offset wins.
    const state = emptyState();
    agg.apply(state, ev(t, { label: 'offset 4' }), pos(0, 4), null);
    agg.apply(state, ev(t, { label: 'offset 5' }), pos(0, 5), null);
    assert.deepEqual(agg.value(state)?.values, { label: 'offset 5' });
    // An older event of a higher partition does not win over a newer one.
    agg.apply(state, ev(t - 1, { label: 'older, partition 9' }), pos(9, 0), null);
    assert.deepEqual(agg.value(state)?.values, { label: 'offset 5' });
  });

  test('last of a Float, a Boolean and an Int, with where', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('price', 'Float', { fn: 'last', of: 'price', where: null }),
      feature('lastClickPrice', 'Float', { fn: 'last', of: 'price', where: 'clicked' }),
      feature('clicked', 'Boolean', { fn: 'last', of: 'clicked', where: null }),
      feature('n', 'Int', { fn: 'last', of: 'n', where: null }),
    ])));
    f.feedAll([ev(1000, { price: 1.5, clicked: true, n: 3 }), ev(2000, { price: 2.25, clicked: false, n: -4 })]);
    assert.deepEqual(f.value()?.values, { price: 2.25, lastClickPrice: 1.5, clicked: false, n: -4 });
  });

  test('avg, with where; null when nothing to average', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('avgAmount', 'Float', { fn: 'avg', of: 'amount', where: null }),
      feature('avgClicked', 'Float', { fn: 'avg', of: 'amount', where: 'clicked' }),
    ])));
    f.feed(ev(1000, { amount: 4 }));
    assert.deepEqual(f.value()?.values, { avgAmount: 4, avgClicked: null });
    f.feedAll([ev(2000, { amount: 1, clicked: true }), ev(3000, { amount: 2.5, clicked: true })]);
    assert.deepEqual(f.value()?.values, { avgAmount: 2.5, avgClicked: 1.75 });
  });

  test('avg of an optional field averages the events that carry it (absent is not zero)', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('avgPrice', 'Float', { fn: 'avg', of: 'price', where: null }),
      feature('impressions', 'Int', { fn: 'count', where: null }),
    ])));
    f.feedAll([ev(1000, { price: 10 }), ev(2000, {}), ev(3000, { price: 20 }), ev(4000, {})]);
    assert.deepEqual(f.value()?.values, { avgPrice: 15, impressions: 4 });
    const g = new Feeder(new ViewAggregator(viewOf([feature('avgPrice', 'Float', { fn: 'avg', of: 'price', where: null })])));
    g.feedAll([ev(1000), ev(2000)]);
    assert.deepEqual(g.value()?.values, { avgPrice: null });
  });

  test('ratio of two measures; null while the denominator is 0', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('clickRate', 'Float', { fn: 'ratio', numerator: { fn: 'count', where: 'clicked' }, denominator: { fn: 'count', where: null } }),
      feature('perClick', 'Float', { fn: 'ratio', numerator: { fn: 'sum', of: 'amount', where: null }, denominator: { fn: 'count', where: 'clicked' } }),
      feature('maxOverMin', 'Float', { fn: 'ratio', numerator: { fn: 'max', of: 'amount', where: null }, denominator: { fn: 'min', of: 'amount', where: null } }),
    ])));
    f.feedAll([ev(1000, { amount: 3 }), ev(2000, { amount: 0 })]);
    assert.deepEqual(f.value()?.values, { clickRate: 0, perClick: null, maxOverMin: null }, 'no clicks yet; min is 0');
    f.feedAll([ev(3000, { clicked: true, amount: 6 }), ev(4000, { amount: 1 })]);
    assert.deepEqual(f.value()?.values, { clickRate: 0.25, perClick: 10, maxOverMin: null });
  });

  test('ratio is null before its measures have values (min of nothing)', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('r', 'Float', { fn: 'ratio', numerator: { fn: 'min', of: 'amount', where: null }, denominator: { fn: 'count', where: null } }),
    ])));
    f.feed(ev(1000));
    assert.deepEqual(f.value()?.values, { r: null });
    f.feed(ev(2000, { amount: 3 }));
    assert.deepEqual(f.value()?.values, { r: 1.5 });
  });

  test('an Int feature is rounded; a Float feature is not', () => {
    const f = new Feeder(new ViewAggregator(viewOf([
      feature('avgInt', 'Int', { fn: 'avg', of: 'n', where: null }),
      feature('avgFloat', 'Float', { fn: 'avg', of: 'n', where: null }),
      feature('sumInt', 'Int', { fn: 'sum', of: 'x', where: null }),
      feature('ratioInt', 'Int', { fn: 'ratio', numerator: { fn: 'count', where: 'clicked' }, denominator: { fn: 'count', where: null } }),
    ])));
    f.feedAll([ev(1000, { n: 1, x: 0.75, clicked: true }), ev(2000, { n: 2, x: 0.5 })]);
    assert.deepEqual(f.value()?.values, { avgInt: 2, avgFloat: 1.5, sumInt: 1, ratioInt: 1 });
    f.feed(ev(3000, { n: 1, x: 0.125 }));
    assert.deepEqual(f.value()?.values, { avgInt: 1, avgFloat: 4 / 3, sumInt: 1, ratioInt: 0 });
  });

  test('a view without a source cannot be aggregated', () => {
    assert.throws(() => new ViewAggregator({ ...viewOf([]), materialization: null }), /testView v1 is not materialized/);
  });
});

describe('ViewAggregator: windows', () => {
  test('tumbling: only the window holding the newest event counts', () => {
    const f = new Feeder(new ViewAggregator(viewOf([feature('n', 'Int', { fn: 'count', where: null })], { windowMs: 10 * min, slideMs: 10 * min })));
    f.feedAll([ev(1 * min), ev(9 * min + 59 * sec)]);
    assert.deepEqual(f.value(), { values: { n: 2 }, eventTimeMs: 9 * min + 59 * sec });
    f.feed(ev(10 * min));
    assert.deepEqual(f.value(), { values: { n: 1 }, eventTimeMs: 10 * min }, 'a new window starts at 10m');
    f.feedAll([ev(15 * min), ev(19 * min + 59 * sec)]);
    assert.deepEqual(f.value()?.values, { n: 3 });
    f.feed(ev(35 * min));
    assert.deepEqual(f.value()?.values, { n: 1 }, 'windows 20m-30m skipped');
  });

  test('sliding: the value includes exactly the buckets starting after bucket(maxTs) − size', () => {
    const agg = new ViewAggregator(viewOf([feature('n', 'Int', { fn: 'count', where: null }), feature('first', 'Int', { fn: 'min', of: 'ts', where: null })],
      { windowMs: 10 * min, slideMs: min, allowedLatenessMs: 60 * min }));
    const f = new Feeder(agg);
    const times = [10 * min, 10 * min + 59_999, 11 * min, 15 * min, 20 * min];
    f.feedAll(times.map((ts) => ev(ts, { ts })));
    f.feed(ev(20 * min + 30 * sec, { ts: 20 * min + 30 * sec }));
    // bucket(maxTs) = 20m; buckets 11m..20m count. 10m+59.999s is within 10 minutes of maxTs but its bucket (10m) is not.
    assert.deepEqual(f.value(), { values: { n: 4, first: 11 * min }, eventTimeMs: 20 * min + 30 * sec });
    f.feed(ev(21 * min, { ts: 21 * min }));
    assert.deepEqual(f.value()?.values, { n: 4, first: 15 * min }, '11m slides out');
  });

  test('sliding: brute-force check over a random stream (in order)', () => {
    const spec = { windowMs: 5 * min, slideMs: 30 * sec, allowedLatenessMs: 0 };
    const agg = new ViewAggregator(viewOf([feature('n', 'Int', { fn: 'count', where: null }), feature('s', 'Int', { fn: 'sum', of: 'x', where: null })], spec));
    const f = new Feeder(agg);
    const random = mulberry32(7);
    const seen: { ts: number; x: number }[] = [];
    let ts = 0;
    for (let i = 0; i < 2000; i++) {
      ts += Math.floor(random() * 2 * sec);
      const x = Math.floor(random() * 100);
      seen.push({ ts, x });
      assert.equal(f.feed(ev(ts, { x })), 'applied');
      if (i % 97 === 0 || i === 1999) {
        const current = Math.floor(ts / spec.slideMs) * spec.slideMs;
        const inWindow = seen.filter((e) => Math.floor(e.ts / spec.slideMs) * spec.slideMs > current - spec.windowMs);
        assert.deepEqual(f.value()?.values, { n: inWindow.length, s: inWindow.reduce((a, e) => a + e.x, 0) }, `after event ${i}`);
      }
    }
  });

  for (const [label, spec, bound] of [
    ['lateness a multiple of the slide', { windowMs: 10 * min, slideMs: min, allowedLatenessMs: 2 * min }, 10 + 2 + 1],
    ['the shipped clickStats (10m/1m, 30s)', { windowMs: 10 * min, slideMs: min, allowedLatenessMs: 30 * sec }, 10 + 1 + 1],
    ['tumbling 5m, 1m lateness', { windowMs: 5 * min, slideMs: 5 * min, allowedLatenessMs: min }, 1 + 1 + 1],
  ] as const) {
    test(`eviction keeps the state bounded over 10k events (${label}): ≤ size/slide + ⌈lateness/slide⌉ + 1 buckets`, () => {
      const f = new Feeder(new ViewAggregator(viewOf([feature('n', 'Int', { fn: 'count', where: null })], spec)));
      const random = mulberry32(11);
      const distinct = new Set<number>();
      let max = 0;
      let maxBuckets = 0;
      for (let i = 0; i < 10_000; i++) {
        // ~10 s apart on average (≈ 28 h in all), out of order within the allowed lateness.
        max += Math.floor(random() * 20 * sec);
        const ts = Math.max(0, max - Math.floor(random() * spec.allowedLatenessMs));
        assert.equal(f.feed(ev(ts)), 'applied');
        distinct.add(Math.floor(ts / spec.slideMs));
        maxBuckets = Math.max(maxBuckets, f.state.buckets.length);
        assert.ok(f.state.buckets.length <= bound, `${f.state.buckets.length} buckets after event ${i}, bound ${bound}`);
      }
      assert.ok(distinct.size > 50 * bound, 'the stream spans many more buckets than are kept');
      assert.ok(maxBuckets >= spec.windowMs / spec.slideMs, 'the window itself is kept');
      assert.ok(JSON.stringify(f.state).length < 4000, `state is ${JSON.stringify(f.state).length} bytes`);
    });
  }
});

describe('ViewAggregator: exactly once', () => {
  const view = viewOf([feature('n', 'Int', { fn: 'count', where: null }), feature('s', 'Float', { fn: 'sum', of: 'x', where: null })]);

  test('an offset at or below the recorded one of its partition is a duplicate and changes nothing', () => {
    const agg = new ViewAggregator(view);
    const state = emptyState();
    for (let o = 0; o < 5; o++) assert.equal(agg.apply(state, ev(1000 + o, { x: 1 }), pos(0, o), null), 'applied');
    assert.deepEqual(state.offsets, { [`${TOPIC}/0`]: 4 });
    const before = clone(state);
    for (const o of [4, 3, 0]) assert.equal(agg.apply(state, ev(2000, { x: 100 }), pos(0, o), null), 'duplicate', `offset ${o}`);
    assert.deepEqual(state, before);
    assert.deepEqual(agg.value(state)?.values, { n: 5, s: 5 });
    // Gaps are fine (other entities' events in between): 10 is new.
    assert.equal(agg.apply(state, ev(1010, { x: 1 }), pos(0, 10), null), 'applied');
    assert.equal(agg.apply(state, ev(1011, { x: 1 }), pos(0, 7), null), 'duplicate');
  });

  test('partitions and topics keep their own offsets', () => {
    const agg = new ViewAggregator(view);
    const state = emptyState();
    assert.equal(agg.apply(state, ev(1000, { x: 1 }), pos(0, 50), null), 'applied');
    assert.equal(agg.apply(state, ev(1001, { x: 1 }), pos(1, 0), null), 'applied', 'partition 1 offset 0 is below partition 0 offset 50 but independent');
    assert.equal(agg.apply(state, ev(1002, { x: 1 }), pos(0, 0, 'other-topic'), null), 'applied', 'another topic');
    assert.equal(agg.apply(state, ev(1003, { x: 1 }), pos(1, 0), null), 'duplicate');
    assert.deepEqual(state.offsets, { [`${TOPIC}/0`]: 50, [`${TOPIC}/1`]: 0, 'other-topic/0': 0 });
    assert.deepEqual(agg.value(state)?.values, { n: 3, s: 3 });
  });

  test('lateness is judged against the stream time argument; late events are recorded, not applied', () => {
    const agg = new ViewAggregator(view); // 30 s allowed lateness
    const state = emptyState();
    const stream = 100 * min;
    assert.equal(agg.apply(state, ev(stream, { x: 1 }), pos(0, 0), null), 'applied');
    assert.equal(agg.apply(state, ev(stream - 30 * sec, { x: 1 }), pos(0, 1), stream), 'applied', 'exactly the allowed lateness is on time');
    const before = clone(state);
    assert.equal(agg.apply(state, ev(stream - 30 * sec - 1, { x: 1 }), pos(0, 2), stream), 'late');
    assert.deepEqual(state.buckets, before.buckets, 'not applied');
    assert.equal(state.maxTs, before.maxTs);
    assert.equal(state.offsets[`${TOPIC}/0`], 2, 'offset still recorded');
    assert.deepEqual(state.recentLate, [`${TOPIC}/0/2`]);
    assert.equal(agg.apply(state, ev(stream - 30 * sec - 1, { x: 1 }), pos(0, 2), stream), 'duplicate', 'a redelivered late event is a duplicate');
    assert.deepEqual(state.recentLate, [`${TOPIC}/0/2`]);
    assert.deepEqual(agg.value(state)?.values, { n: 2, s: 2 });
  });

  test('lateness does not depend on the entity\'s own newest event', () => {
    const agg = new ViewAggregator(view);
    // The entity's newest event is old, but the partition has moved on: late.
    const a = emptyState();
    agg.apply(a, ev(10 * min, { x: 1 }), pos(0, 0), null);
    assert.equal(agg.apply(a, ev(50 * min, { x: 1 }), pos(0, 1), 60 * min), 'late');
    // The entity's newest event (from another partition) is far ahead, but this partition's stream time is not: on time.
    const b = emptyState();
    agg.apply(b, ev(100 * min, { x: 1 }), pos(1, 0), null);
    assert.equal(agg.apply(b, ev(99 * min + 45 * sec, { x: 1 }), pos(0, 0), 99 * min + 50 * sec), 'applied');
    assert.deepEqual(agg.value(b)?.values, { n: 2, s: 2 });
    // No stream time yet: nothing is late.
    assert.equal(agg.apply(b, ev(0, { x: 1 }), pos(2, 0), null), 'applied');
  });

  test('recentLate keeps the newest 256 late events', () => {
    const agg = new ViewAggregator(view);
    const state = emptyState();
    for (let o = 0; o < 300; o++) assert.equal(agg.apply(state, ev(0), pos(3, o), 10 * min), 'late');
    assert.equal(state.recentLate.length, 256);
    assert.equal(state.recentLate[0], `${TOPIC}/3/44`);
    assert.equal(state.recentLate[255], `${TOPIC}/3/299`);
    assert.equal(agg.value(state), null, 'nothing was applied');
  });

  test('the state survives a JSON round trip: the copy behaves identically', () => {
    const agg = new ViewAggregator(viewOf([
      feature('n', 'Int', { fn: 'count', where: null }),
      feature('clicks', 'Int', { fn: 'count', where: 'clicked' }),
      feature('lo', 'Float', { fn: 'min', of: 'x', where: null }),
      feature('hi', 'Float', { fn: 'max', of: 'x', where: 'clicked' }),
      feature('label', 'String', { fn: 'last', of: 'label', where: null }),
      feature('avgX', 'Float', { fn: 'avg', of: 'x', where: null }),
      feature('rate', 'Float', { fn: 'ratio', numerator: { fn: 'count', where: 'clicked' }, denominator: { fn: 'count', where: null } }),
    ]));
    const random = mulberry32(3);
    const event = (i: number): ValidEvent => ev(i * 7 * sec, {
      clicked: random() < 0.3, ...(random() < 0.8 ? { x: Math.floor(random() * 64) / 4 } : {}), ...(random() < 0.5 ? { label: `l${i}` } : {}),
    });
    const original = emptyState();
    for (let i = 0; i < 120; i++) agg.apply(original, event(i), pos(i % 2, i), null);
    agg.apply(original, ev(0), pos(0, 1000), 120 * 7 * sec); // one late event in the state
    const copy = clone(original);
    assert.deepEqual(copy, original);
    assert.deepEqual(agg.value(copy), agg.value(original));
    for (let i = 120; i < 300; i++) {
      const e = event(i);
      const p = pos(i % 3, 2000 + i);
      const outcomes = [agg.apply(original, e, p, null), agg.apply(copy, e, p, null)];
      assert.equal(outcomes[0], outcomes[1]);
      assert.deepEqual(agg.value(copy), agg.value(original), `after event ${i}`);
    }
    assert.equal(agg.apply(copy, ev(0), pos(0, 1000), null), 'duplicate');
    assert.deepEqual(clone(copy), clone(original));
  });

  test('the same events in any partition interleaving (each partition in order) give the same value', () => {
    const spec = { windowMs: 10 * min, slideMs: min, allowedLatenessMs: 30 * sec };
    const agg = new ViewAggregator(viewOf([
      feature('n', 'Int', { fn: 'count', where: null }),
      feature('clicks', 'Int', { fn: 'count', where: 'clicked' }),
      // Multiples of 1/4: sums are exact in any order, so equality is exact.
      feature('total', 'Float', { fn: 'sum', of: 'x', where: null }),
      feature('lo', 'Float', { fn: 'min', of: 'x', where: null }),
      feature('hi', 'Float', { fn: 'max', of: 'x', where: null }),
      feature('label', 'String', { fn: 'last', of: 'label', where: null }),
      feature('avgX', 'Float', { fn: 'avg', of: 'x', where: null }),
      feature('rate', 'Float', { fn: 'ratio', numerator: { fn: 'count', where: 'clicked' }, denominator: { fn: 'count', where: null } }),
    ], spec));
    const random = mulberry32(5);
    // Three partitions, each over 30 minutes, out of order within 20 s; event times repeat across partitions (ties for last).
    const partitions = [0, 1, 2].map((p) => {
      const list: ValidEvent[] = [];
      for (let i = 0; i < 400; i++) {
        const ts = Math.max(0, i * 4500 + (p === 0 ? 0 : Math.floor(random() * 3) * 1500) - Math.floor(random() * 20 * sec));
        list.push(ev(ts, { clicked: random() < 0.2, label: `p${p}-${i}`, ...(random() < 0.9 ? { x: Math.floor(random() * 400) / 4 } : {}) }));
      }
      return list;
    });
    const run = (seed: number) => {
      const pick = mulberry32(seed);
      const f = new Feeder(agg);
      const next = [0, 0, 0];
      for (;;) {
        const open = [0, 1, 2].filter((p) => next[p]! < partitions[p]!.length);
        if (open.length === 0) break;
        const p = open[Math.floor(pick() * open.length)]!;
        assert.equal(f.feed(partitions[p]![next[p]!]!, p), 'applied', 'nothing is late');
        next[p] = next[p]! + 1;
      }
      return f.value();
    };
    const reference = run(1);
    assert.ok(reference);
    // Partition by partition, in both directions, and random interleavings.
    const sequential = (order: number[]) => {
      const f = new Feeder(agg);
      for (const p of order) for (const e of partitions[p]!) assert.equal(f.feed(e, p), 'applied');
      return f.value();
    };
    assert.deepEqual(sequential([0, 1, 2]), reference);
    assert.deepEqual(sequential([2, 1, 0]), reference);
    for (let seed = 2; seed < 12; seed++) assert.deepEqual(run(seed), reference, `interleaving ${seed}`);

    // And it is the brute-force answer.
    const all = partitions.flatMap((list, p) => list.map((e, o) => ({ e, p, o })));
    const maxTs = Math.max(...all.map((x) => x.e.ts));
    const current = Math.floor(maxTs / spec.slideMs) * spec.slideMs;
    const inWindow = all.filter((x) => Math.floor(x.e.ts / spec.slideMs) * spec.slideMs > current - spec.windowMs);
    const xs = inWindow.map((x) => x.e.fields.x).filter((x): x is number => typeof x === 'number');
    const clicks = inWindow.filter((x) => x.e.fields.clicked === true).length;
    const last = inWindow.reduce((a, b) => (b.e.ts > a.e.ts || (b.e.ts === a.e.ts && (b.p > a.p || (b.p === a.p && b.o > a.o))) ? b : a));
    assert.deepEqual(reference, {
      eventTimeMs: maxTs,
      values: {
        n: inWindow.length, clicks, total: xs.reduce((a, b) => a + b, 0), lo: Math.min(...xs), hi: Math.max(...xs),
        label: last.e.fields.label, avgX: xs.reduce((a, b) => a + b, 0) / xs.length, rate: clicks / inWindow.length,
      },
    });
  });
});
