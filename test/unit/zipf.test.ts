import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Zipf } from '../../loadtest/zipf.js';
import { mulberry32 } from '../../store/demo-data.js';

describe('Zipf sampler (the benchmark\'s skewed ids, W4)', () => {
  const zipf = new Zipf(100_000, 1.1);

  it('gives the same sequence for the same seed, another for another seed', () => {
    const draw = (seed: number) => {
      const next = zipf.sampler(mulberry32(seed));
      return Array.from({ length: 1000 }, next);
    };
    assert.deepEqual(draw(42), draw(42));
    assert.notDeepEqual(draw(42), draw(43));
  });

  it('stays within 1..n, at both ends of [0, 1)', () => {
    assert.equal(zipf.rank(0), 1);
    assert.equal(zipf.rank(1 - Number.EPSILON), 100_000);
    const next = zipf.sampler(mulberry32(1));
    for (let i = 0; i < 10_000; i++) {
      const k = next();
      assert.ok(Number.isInteger(k) && k >= 1 && k <= 100_000, `rank ${k}`);
    }
  });

  it('has probabilities that sum to 1 and follow k^-s', () => {
    let sum = 0;
    for (let k = 1; k <= 100_000; k++) sum += zipf.probability(k);
    assert.ok(Math.abs(sum - 1) < 1e-9, `sum ${sum}`);
    assert.ok(Math.abs(zipf.probability(1) / zipf.probability(2) - 2 ** 1.1) < 1e-9);
    assert.equal(zipf.probability(0), 0);
    assert.equal(zipf.probability(100_001), 0);
  });

  it('draws ranks with the frequencies of the Zipf law', () => {
    const samples = 400_000;
    const counts = new Map<number, number>();
    const next = zipf.sampler(mulberry32(2026));
    for (let i = 0; i < samples; i++) {
      const k = next();
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    const freq = (k: number) => (counts.get(k) ?? 0) / samples;
    // Rank 1 about P(1) (≈ 0.13 for s = 1.1 over 100k): within 3 % of it.
    for (const k of [1, 2, 3, 10]) {
      const expected = zipf.probability(k);
      assert.ok(Math.abs(freq(k) - expected) / expected < (k === 10 ? 0.1 : 0.03), `rank ${k}: ${freq(k)} against ${expected}`);
    }
    // Rank 1 against rank 2 and 4: 2^1.1 ≈ 2.14, 4^1.1 ≈ 4.59.
    assert.ok(Math.abs(freq(1) / freq(2) - 2 ** 1.1) < 0.1, `f1/f2 ${freq(1) / freq(2)}`);
    assert.ok(Math.abs(freq(1) / freq(4) - 4 ** 1.1) < 0.3, `f1/f4 ${freq(1) / freq(4)}`);
    // The head carries the mass: the 100 hottest ranks draw the share the CDF says (within 1 point).
    let head = 0;
    let expectedHead = 0;
    for (let k = 1; k <= 100; k++) {
      head += freq(k);
      expectedHead += zipf.probability(k);
    }
    assert.ok(Math.abs(head - expectedHead) < 0.01, `top 100: ${head} against ${expectedHead}`);
  });

  it('refuses parameters that define no distribution', () => {
    assert.throws(() => new Zipf(0, 1.1), RangeError);
    assert.throws(() => new Zipf(10, 0), RangeError);
    assert.throws(() => new Zipf(10, Number.NaN), RangeError);
  });
});
