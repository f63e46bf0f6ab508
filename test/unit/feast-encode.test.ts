import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadRegistry } from '../../schema/registry.js';
import { encodeFeast, feastTime, floatText } from '../../serving/feast/encode.js';
import type { FeastReads } from '../../serving/feast/read.js';
import { FeastRequests } from '../../serving/feast/request.js';
import { StoreUnavailableError, type ReadResult } from '../../store/online-store.js';

/**
 * Feast's response JSON from a plan's reads: columns, statuses, event
 * times, partial failures, and the number tokens Feast's client infers its
 * types from (a Float is never written as an integer).
 */
const requests = new FeastRequests(loadRegistry());
const T = Date.parse('2026-11-26T12:00:00.250Z');

/** Reads as readFeast answers them: per view slot the distinct ids' answers, and each row's position. */
function reads(perSlot: (ReadResult | Error)[][], rowAt: number[][]): FeastReads {
  return { results: perSlot, rowAt: rowAt.map((r) => Int32Array.from(r)) };
}

describe('Feast response encoding', () => {
  test('join keys first, then the features in the order asked; statuses and times per row', () => {
    const request = requests.parse({ entities: { user_id: ['1', '2', '3', '1'] }, features: ['clickStats:clickRate', 'clickStats:clicks'] });
    const body = encodeFeast(request, reads([[
      { values: { clickRate: 1, clicks: 3, impressions: 3 }, eventTimeMs: T, stale: false },
      { values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: T - 250, stale: true },
      null,
    ]], [[0, 1, 2, 0]]));
    assert.deepEqual(JSON.parse(body), {
      results: [
        { values: ['1', '2', '3', '1'], statuses: ['PRESENT', 'PRESENT', 'PRESENT', 'PRESENT'], event_timestamps: Array(4).fill('1970-01-01T00:00:00Z') },
        {
          values: [1, null, null, 1], statuses: ['PRESENT', 'OUTSIDE_MAX_AGE', 'NOT_FOUND', 'PRESENT'],
          event_timestamps: ['2026-11-26T12:00:00.250Z', '2026-11-26T12:00:00Z', '1970-01-01T00:00:00Z', '2026-11-26T12:00:00.250Z'],
        },
        {
          values: [3, null, null, 3], statuses: ['PRESENT', 'OUTSIDE_MAX_AGE', 'NOT_FOUND', 'PRESENT'],
          event_timestamps: ['2026-11-26T12:00:00.250Z', '2026-11-26T12:00:00Z', '1970-01-01T00:00:00Z', '2026-11-26T12:00:00.250Z'],
        },
      ],
      metadata: { feature_names: ['user_id', 'clickRate', 'clicks'] },
    });
    // The stale value's features are not in the body at all (decision 3), only its time.
    assert.ok(!body.includes('0.5'));
    // Float tokens keep a decimal point; Int tokens are integers.
    assert.match(body, /"values":\[1\.0,null,null,1\.0\]/);
    assert.match(body, /"values":\[3,null,null,3\]/);
  });

  test('a stored value whose feature is null: NULL_VALUE in that column only', () => {
    const request = requests.parse({ entities: { user_id: ['1'] }, features: ['clickStats:clickRate', 'clickStats:clicks'] });
    const body = JSON.parse(encodeFeast(request, reads([[{ values: { clickRate: null, clicks: 0, impressions: 0 }, eventTimeMs: T, stale: false }]], [[0]])));
    assert.deepEqual(body.results[1], { values: [null], statuses: ['NULL_VALUE'], event_timestamps: ['2026-11-26T12:00:00.250Z'] });
    assert.deepEqual(body.results[2], { values: [0], statuses: ['PRESENT'], event_timestamps: ['2026-11-26T12:00:00.250Z'] });
  });

  test('multi-entity rows: each column follows its own entity; lists, strings and booleans as JSON', () => {
    const request = requests.parse({
      entities: { user_id: ['1', '1'], item_id: ['7', '8'] },
      features: ['profile:embedding', 'profile:isPremium', 'itemStats:category', 'itemStats:price'], full_feature_names: true, include_feature_view_version_metadata: true,
    });
    const body = encodeFeast(request, reads([
      [{ values: { sessionLength: 1, isPremium: true, country: 'DE', embedding: [1, -0.5, 2e-7] }, eventTimeMs: T, stale: false }],
      [{ values: { ctr: 0.1, price: 10, category: 'books "new"' }, eventTimeMs: T, stale: false }, null],
    ], [[0, 0], [0, 1]]));
    const parsed = JSON.parse(body);
    assert.deepEqual(parsed.metadata, {
      feature_names: ['user_id', 'item_id', 'profile__embedding', 'profile__isPremium', 'itemStats__category', 'itemStats__price'],
      feature_view_metadata: [{ name: 'profile', version: 1 }, { name: 'itemStats', version: 1 }],
    });
    assert.deepEqual(parsed.results[2].values, [[1, -0.5, 2e-7], [1, -0.5, 2e-7]]);
    assert.match(body, /\[1\.0,-0\.5,2e-7\]/);
    assert.deepEqual(parsed.results[3].values, [true, true]);
    assert.deepEqual(parsed.results[4], { values: ['books "new"', null], statuses: ['PRESENT', 'NOT_FOUND'], event_timestamps: ['2026-11-26T12:00:00.250Z', '1970-01-01T00:00:00Z'] });
    assert.match(body, /"values":\[10\.0,null\]/);
  });

  test('a failed read: null, INVALID, the epoch, and one error entry per view naming code, shard and ids; the rest is served', () => {
    const request = requests.parse({ entities: { user_id: ['1', '2', '3'], item_id: ['7', '7', '7'] }, features: ['clickStats:clickRate', 'itemStats:ctr'] });
    const down = new StoreUnavailableError('redis', '127.0.0.1:6390', 'Connection is closed.');
    const parsed = JSON.parse(encodeFeast(request, reads([
      [down, { values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: T, stale: false }, down],
      [{ values: { ctr: 0.25, price: 1.5, category: 'x' }, eventTimeMs: T, stale: false }],
    ], [[0, 1, 2], [0, 0, 0]])));
    assert.deepEqual(parsed.results[2], { values: [null, 0.5, null], statuses: ['INVALID', 'PRESENT', 'INVALID'], event_timestamps: ['1970-01-01T00:00:00Z', '2026-11-26T12:00:00.250Z', '1970-01-01T00:00:00Z'] });
    assert.deepEqual(parsed.results[3].statuses, ['PRESENT', 'PRESENT', 'PRESENT']);
    assert.deepEqual(parsed.errors, [{
      message: 'online store redis shard 127.0.0.1:6390 is unavailable: Connection is closed.',
      extensions: { code: 'STORE_UNAVAILABLE', store: 'redis', shard: '127.0.0.1:6390', view: 'clickStats:v2', join_key: 'user_id', ids: ['1', '3'] },
    }]);
  });

  test('a Float column is checked value by value: an integral value after fractional ones still gets its .0', () => {
    const request = requests.parse({ entities: { user_id: ['a', 'b', 'c'] }, features: ['profile:embedding', 'clickStats:clickRate'] });
    const profile = (embedding: number[]) => ({ values: { sessionLength: 1, isPremium: true, country: 'DE', embedding }, eventTimeMs: T, stale: false });
    const stats = (clickRate: number) => ({ values: { clickRate, clicks: 1, impressions: 1 }, eventTimeMs: T, stale: false });
    const body = encodeFeast(request, reads([
      [profile([0.5, 0.25]), profile([0.5, 3]), profile([-0, 0.125])],
      [stats(0.5), stats(0.75), stats(2)],
    ], [[0, 1, 2], [0, 1, 2]]));
    assert.ok(body.includes('"values":[[0.5,0.25],[0.5,3.0],[-0.0,0.125]]'), body);
    assert.ok(body.includes('"values":[0.5,0.75,2.0]'), body);
    // Fractional only: JSON.stringify's own tokens, already floats.
    const fractional = encodeFeast(request, reads([[profile([0.5])], [stats(0.1)]], [[0, 0, 0], [0, 0, 0]]));
    assert.ok(fractional.includes('"values":[0.1,0.1,0.1]'), fractional);
  });

  test('no rows: empty columns', () => {
    const request = requests.parse({ entities: { user_id: [] }, features: ['clickStats:clickRate'] });
    assert.deepEqual(JSON.parse(encodeFeast(request, reads([[]], [[]]))), {
      results: [{ values: [], statuses: [], event_timestamps: [] }, { values: [], statuses: [], event_timestamps: [] }],
      metadata: { feature_names: ['user_id', 'clickRate'] },
    });
  });
});

describe('Feast number and time tokens', () => {
  test('a Float is a float token: integral values get .0, JS exponents stay', () => {
    const cases: [number, string][] = [[1, '1.0'], [0, '0.0'], [-0, '-0.0'], [-3, '-3.0'], [0.25, '0.25'], [1e21, '1e+21'], [1e-7, '1e-7'],
      [123456789012, '123456789012.0'], [0.1 + 0.2, '0.30000000000000004']];
    for (const [v, text] of cases) {
      assert.equal(floatText(v), text, String(v));
      assert.ok(Object.is(JSON.parse(floatText(v)), v), `${text} reads back as ${v}`);
      assert.match(floatText(v), /[.eE]/, `${text} is a float token for Python`);
    }
    assert.equal(floatText(NaN), '"NaN"');
    assert.equal(floatText(Infinity), '"Infinity"');
    assert.equal(floatText(-Infinity), '"-Infinity"');
  });

  test('times: RFC 3339 UTC with Z, milliseconds only when there are some', () => {
    assert.equal(feastTime(Date.parse('2026-01-01T00:00:00Z')), '2026-01-01T00:00:00Z');
    assert.equal(feastTime(Date.parse('2026-01-01T00:00:00.123Z')), '2026-01-01T00:00:00.123Z');
    assert.equal(feastTime(Date.parse('2026-01-01T00:00:00.100Z')), '2026-01-01T00:00:00.100Z');
  });
});
