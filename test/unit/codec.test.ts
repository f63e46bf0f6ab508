import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { CodecError, codecFor, type EncodedRecord, type FeatureValues } from '../../store/codec.js';
import { loadRegistry, parseType } from '../../schema/registry.js';
import { findView, type Feature, type ViewVersion } from '../../schema/types.js';

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const T = 1_700_000_000_123; // a typical event time in ms

/** A hand-built view version: `[name, type]` pairs, types written as in the registry. */
function viewOf(features: readonly (readonly [string, string])[], viewName = 'testView', version = 1): ViewVersion {
  return {
    viewName,
    entityName: 'user',
    version,
    readRoles: null,
    hotTier: { enabled: true, maxAgeMs: null },
    active: true,
    ttlSeconds: 60,
    materialization: null,
    features: features.map(([name, typeName]): Feature => {
      const type = parseType(typeName);
      assert.ok(type, `test setup: type ${typeName}`);
      return { name, type, typeName, description: '', aggregate: null };
    }),
  };
}

function roundTrip(view: ViewVersion, record: EncodedRecord): EncodedRecord {
  const codec = codecFor(view);
  const decoded = codec.decode(codec.encode(record));
  assert.deepEqual(decoded, record);
  return decoded;
}

const registry = loadRegistry();
const clickStats = findView(registry, 'clickStats')!;
const clickStatsV1 = clickStats.versions[0]!;
const clickStatsV2 = clickStats.versions[1]!;

describe('codec round trips', () => {
  test('Int: zero, small, negative, int32 min and max', () => {
    const view = viewOf([['n', 'Int']]);
    for (const n of [0, 1, -1, 63, -64, 64, 1000, -1000, 123_456_789, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1]) {
      roundTrip(view, { values: { n }, eventTimeMs: T });
    }
  });

  test('Float: zero, negative, tiny, huge, fractions', () => {
    const view = viewOf([['x', 'Float']]);
    for (const x of [0, -0, 1.5, -1.5, Math.PI, -273.15, 5e-324, -5e-324, Number.MIN_VALUE, Number.MAX_VALUE, -Number.MAX_VALUE, 1e-300, 0.1 + 0.2, 2 ** 53 + 2]) {
      const decoded = roundTrip(view, { values: { x }, eventTimeMs: T });
      assert.ok(Object.is(decoded.values.x, x), `${x} keeps its exact value (and sign)`);
    }
  });

  test('Boolean', () => {
    const view = viewOf([['a', 'Boolean'], ['b', 'Boolean']]);
    roundTrip(view, { values: { a: true, b: false }, eventTimeMs: T });
    roundTrip(view, { values: { a: false, b: true }, eventTimeMs: T });
  });

  test('String: empty, ASCII, unicode (multi-byte, astral), long', () => {
    const view = viewOf([['s', 'String']]);
    for (const s of ['', 'DE', 'héllo wörld', '日本語のテキスト', '🌍🚀 emoji', 'line\nbreak\ttab\u0000nul', 'x'.repeat(200), 'é'.repeat(10_000)]) {
      roundTrip(view, { values: { s }, eventTimeMs: T });
    }
  });

  test('lists of every scalar, including empty lists', () => {
    const view = viewOf([['f', '[Float!]'], ['i', '[Int!]'], ['b', '[Boolean!]'], ['s', '[String!]']]);
    roundTrip(view, { values: { f: [0.25, -1.5, 1e300, 5e-324], i: [0, -1, INT32_MIN, INT32_MAX], b: [true, false, true], s: ['', 'a', '🌍'] }, eventTimeMs: T });
    roundTrip(view, { values: { f: [], i: [], b: [], s: [] }, eventTimeMs: T });
    const long = Array.from({ length: 300 }, (_, k) => k / 7);
    roundTrip(view, { values: { f: long, i: [1], b: [], s: ['x'] }, eventTimeMs: T });
  });

  test('every feature view version of the shipped registry', () => {
    const samples = { Int: -42, Float: 0.125, Boolean: true, String: 'DE' } as const;
    for (const entity of registry.entities) {
      for (const view of entity.views) {
        for (const version of view.versions) {
          const values: FeatureValues = {};
          for (const f of version.features) values[f.name] = f.type.list ? [samples[f.type.scalar], samples[f.type.scalar]] as number[] : samples[f.type.scalar];
          roundTrip(version, { values, eventTimeMs: T });
        }
      }
    }
  });

  test('nulls: all null, some null; missing features decode as null', () => {
    const view = viewOf([['a', 'Int'], ['b', 'Float'], ['c', 'String'], ['d', '[Float!]']]);
    roundTrip(view, { values: { a: null, b: null, c: null, d: null }, eventTimeMs: T });
    roundTrip(view, { values: { a: 1, b: null, c: 'x', d: null }, eventTimeMs: T });
    roundTrip(view, { values: { a: null, b: 2.5, c: null, d: [1] }, eventTimeMs: T });
    const codec = codecFor(view);
    assert.deepEqual(codec.decode(codec.encode({ values: { c: 'only' }, eventTimeMs: T })).values, { a: null, b: null, c: 'only', d: null });
    assert.deepEqual(codec.decode(codec.encode({ values: {}, eventTimeMs: T })).values, { a: null, b: null, c: null, d: null });
  });

  test('more than 8 features: the presence bitmap spans 2 bytes', () => {
    const names = Array.from({ length: 10 }, (_, i) => `f${i}`);
    const view10 = viewOf(names.map((n) => [n, 'Int'] as const));
    const view8 = viewOf(names.slice(0, 8).map((n) => [n, 'Int'] as const));
    // format + flags + eventTime(0) + count + bitmap
    assert.equal(codecFor(view8).encode({ values: {}, eventTimeMs: 0 }).length, 1 + 1 + 1 + 1 + 1);
    assert.equal(codecFor(view10).encode({ values: {}, eventTimeMs: 0 }).length, 1 + 1 + 1 + 1 + 2);

    const all: FeatureValues = Object.fromEntries(names.map((n, i) => [n, i * 100 - 500]));
    roundTrip(view10, { values: all, eventTimeMs: T });
    // only features in the second bitmap byte
    roundTrip(view10, { values: { ...Object.fromEntries(names.map((n) => [n, null])), f8: 8, f9: -9 }, eventTimeMs: T });
    // every other feature
    roundTrip(view10, { values: Object.fromEntries(names.map((n, i) => [n, i % 2 ? i : null])), eventTimeMs: T });
    // each feature alone
    for (const name of names) {
      roundTrip(view10, { values: Object.fromEntries(names.map((n) => [n, n === name ? 7 : null])), eventTimeMs: T });
    }
  });

  test('event time: 0, varint boundaries, typical ms values, up to 2^53 - 1', () => {
    const view = viewOf([['n', 'Int']]);
    for (const eventTimeMs of [0, 1, 127, 128, 16_383, 16_384, T, Date.now(), 2 ** 49, 2 ** 53 - 2, Number.MAX_SAFE_INTEGER]) {
      roundTrip(view, { values: { n: 1 }, eventTimeMs });
    }
  });

  test('event times and positions a varint cannot hold are rejected, not silently changed', () => {
    const codec = codecFor(viewOf([['n', 'Int']]));
    for (const eventTimeMs of [-1, 1.5, 2 ** 53, 2 ** 60, NaN]) {
      assert.throws(() => codec.encode({ values: { n: 1 }, eventTimeMs }), (e: unknown) => e instanceof CodecError && /event time must be a non-negative integer/.test(e.message), String(eventTimeMs));
    }
    assert.throws(() => codec.encode({ values: {}, eventTimeMs: T, position: { partition: -1, offset: 0 } }), /source partition must be a non-negative integer/);
    assert.throws(() => codec.encode({ values: {}, eventTimeMs: T, position: { partition: 0, offset: -1 } }), /source offset must be a non-negative integer/);
    assert.throws(() => codec.encode({ values: {}, eventTimeMs: T, position: { partition: 0, offset: 2 ** 57 } }), /source offset/);
  });

  test('source position {partition, offset} round trips, and is absent when not given', () => {
    const view = viewOf([['n', 'Int']]);
    const codec = codecFor(view);
    for (const position of [{ partition: 0, offset: 0 }, { partition: 7, offset: 123_456_789_012 }, { partition: 1023, offset: Number.MAX_SAFE_INTEGER }]) {
      roundTrip(view, { values: { n: 5 }, eventTimeMs: T, position });
    }
    const without = codec.decode(codec.encode({ values: { n: 5 }, eventTimeMs: T }));
    assert.equal('position' in without, false);
    const undefinedPosition = codec.decode(codec.encode({ values: { n: 5 }, eventTimeMs: T, position: undefined }));
    assert.equal('position' in undefinedPosition, false);
  });

  test('decodes from a Uint8Array view into a larger buffer (unaligned offset)', () => {
    const view = viewOf([['x', 'Float'], ['s', 'String'], ['e', '[Float!]']]);
    const codec = codecFor(view);
    const record = { values: { x: -2.75, s: 'ünï', e: [1.5, -0.5] }, eventTimeMs: T };
    const bytes = codec.encode(record);
    const big = new Uint8Array(bytes.length + 10);
    big.set(bytes, 3);
    assert.deepEqual(codec.decode(big.subarray(3, 3 + bytes.length)), record);
  });

  test('bytes follow the documented layout', () => {
    const view = viewOf([['i', 'Int'], ['b', 'Boolean'], ['n', 'Float'], ['s', 'String'], ['l', '[Int!]']]);
    const bytes = codecFor(view).encode({ values: { i: -2, b: true, n: null, s: 'hé', l: [1, -1] }, eventTimeMs: 300, position: { partition: 2, offset: 129 } });
    assert.deepEqual([...bytes], [
      1, // format
      1, // flags: position follows
      0xac, 0x02, // event time 300 as varint
      5, // feature count
      0b11011, // presence: i, b, s, l (n is null)
      3, // i = -2, zig-zag
      1, // b = true
      3, 0x68, 0xc3, 0xa9, // s: byte length 3, "hé" in UTF-8
      2, 2, 1, // l: length 2, then 1 and -1 zig-zag
      2, 0x81, 0x01, // partition 2, offset 129
    ]);
  });

  test('the codec of a view version is built once', () => {
    assert.equal(codecFor(clickStatsV2), codecFor(clickStatsV2));
    assert.notEqual(codecFor(clickStatsV1), codecFor(clickStatsV2));
  });
});

describe('codec type errors name the view and the feature', () => {
  const view = viewOf([['count', 'Int'], ['rate', 'Float'], ['flag', 'Boolean'], ['label', 'String'], ['vec', '[Float!]']], 'typed', 3);
  const codec = codecFor(view);
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['Int given 1.5', { count: 1.5 }, /^typed v3: feature "count" expects Int \(32-bit integers\), got 1\.5$/],
    ['Int given 2^31', { count: 2 ** 31 }, /feature "count" expects Int \(32-bit integers\), got 2147483648/],
    ['Int given -2^31-1', { count: INT32_MIN - 1 }, /feature "count" expects Int/],
    ['Int given a string', { count: '5' }, /feature "count" expects Int.*got "5"/],
    ['Int given a bigint', { count: 5n }, /feature "count" expects Int.*got 5$/],
    ['Float given NaN', { rate: NaN }, /feature "rate" expects Float, got NaN/],
    ['Float given Infinity', { rate: Infinity }, /feature "rate" expects Float, got Infinity/],
    ['Float given -Infinity', { rate: -Infinity }, /feature "rate" expects Float/],
    ['Boolean given 1', { flag: 1 }, /feature "flag" expects Boolean, got 1/],
    ['String given a number', { label: 42 }, /feature "label" expects String, got 42/],
    ['list given a scalar', { vec: 1.5 }, /feature "vec" expects \[Float!\], got 1\.5/],
    ['list with a null element', { vec: [1, null] }, /feature "vec" expects \[Float!\], got null/],
    ['list with a wrong element', { vec: [1, 'x'] }, /feature "vec" expects \[Float!\], got "x"/],
    ['list with a NaN element', { vec: [1, NaN] }, /feature "vec" expects \[Float!\], got NaN/],
    ['unknown feature name', { count: 1, cuont: 2 }, /^typed v3: unknown feature "cuont"; known: count, rate, flag, label, vec$/],
  ];
  for (const [name, values, message] of cases) {
    test(name, () => {
      const isCodecError = (e: unknown): boolean => {
        assert.ok(e instanceof CodecError, String(e));
        assert.equal(e.name, 'CodecError');
        assert.equal(e.view, 'typed v3');
        assert.match(e.message, message);
        return true;
      };
      assert.throws(() => codec.check(values), isCodecError);
      assert.throws(() => codec.encode({ values: values as FeatureValues, eventTimeMs: T }), isCodecError);
    });
  }

  test('check accepts good values and fills absent features with null', () => {
    assert.deepEqual(codec.check({ count: -3, vec: [], label: undefined }), { count: -3, rate: null, flag: null, label: null, vec: [] });
  });
});

describe('codec decode errors', () => {
  const codec = codecFor(clickStatsV2);
  const record: EncodedRecord = { values: { clickRate: 0.042, clicks: 42, impressions: 1000 }, eventTimeMs: T, position: { partition: 3, offset: 99_999 } };
  const bytes = codec.encode(record);

  test('every truncation of a value is a CodecError', () => {
    for (let n = 0; n < bytes.length; n++) {
      assert.throws(() => codec.decode(bytes.subarray(0, n)), (e: unknown) => {
        assert.ok(e instanceof CodecError);
        assert.match(e.message, /^clickStats v2: value truncated at byte \d+/);
        return true;
      }, `prefix of ${n} bytes`);
    }
    assert.deepEqual(codec.decode(bytes), record);
  });

  test('a string whose length runs past the end is truncated, not read out of bounds', () => {
    const view = viewOf([['s', 'String']]);
    const full = codecFor(view).encode({ values: { s: 'abcdef' }, eventTimeMs: 0 });
    assert.throws(() => codecFor(view).decode(full.subarray(0, full.length - 2)), /testView v1: value truncated/);
  });

  test('wrong feature count: a v1 value decoded with the v2 codec', () => {
    const v1 = codecFor(clickStatsV1).encode({ values: { clickRate: 0.5 }, eventTimeMs: T });
    assert.throws(() => codec.decode(v1), (e: unknown) => {
      assert.ok(e instanceof CodecError);
      assert.equal(e.message, 'clickStats v2: value holds 1 features, the registry declares 3');
      return true;
    });
  });

  test('trailing bytes', () => {
    assert.throws(() => codec.decode(Buffer.concat([bytes, Buffer.from([0])])), (e: unknown) => e instanceof CodecError && e.message === 'clickStats v2: 1 trailing bytes');
    assert.throws(() => codec.decode(Buffer.concat([bytes, Buffer.from([1, 2, 3])])), (e: unknown) => e instanceof CodecError && /3 trailing bytes/.test(e.message));
  });

  test('unknown format byte', () => {
    const bad = Buffer.from(bytes);
    bad[0] = 2;
    assert.throws(() => codec.decode(bad), (e: unknown) => {
      assert.ok(e instanceof CodecError);
      assert.equal(e.message, 'clickStats v2: unknown value format 2 (expected 1)');
      return true;
    });
  });

  test('an over-long varint is rejected', () => {
    const bad = Buffer.from([1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 3, 0]);
    assert.throws(() => codec.decode(bad), (e: unknown) => e instanceof CodecError && /varint too long/.test(e.message));
  });
});

describe('codec size', () => {
  test('an encoded clickStats v2 value is smaller than its JSON', () => {
    const record = { values: { clickRate: 0.0421875, clicks: 42, impressions: 998 }, eventTimeMs: T };
    const binary = codecFor(clickStatsV2).encode(record);
    const json = Buffer.from(JSON.stringify(record));
    // 1 format + 1 flags + 6 event time + 1 count + 1 bitmap + 8 float + 1 + 2 varints
    assert.equal(binary.length, 21);
    assert.ok(binary.length < json.length, `${binary.length} < ${json.length}`);
    assert.ok(binary.length * 3 < json.length, `at least 3× smaller: ${binary.length} vs ${json.length}`);
  });
});
