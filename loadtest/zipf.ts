/**
 * A Zipf distribution over ranks 1..n: P(k) = k^-s / H(n, s), H(n, s) = Σ j^-s.
 * The cumulative distribution is computed once (n doubles) and a rank is
 * drawn by a binary search for the first CDF entry above a uniform number,
 * so a draw costs O(log n) and is exact for any s > 0 (no rejection method,
 * no approximation of H). Seeded by the caller's PRNG: the same PRNG state
 * gives the same ranks.
 */
export class Zipf {
  private readonly cdf: Float64Array;
  private readonly norm: number;

  constructor(readonly n: number, readonly s: number) {
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`Zipf: n must be a positive integer, got ${n}`);
    if (!Number.isFinite(s) || s <= 0) throw new RangeError(`Zipf: s must be a positive number, got ${s}`);
    this.cdf = new Float64Array(n);
    let sum = 0;
    for (let k = 1; k <= n; k++) {
      sum += k ** -s;
      this.cdf[k - 1] = sum;
    }
    this.norm = sum;
    for (let i = 0; i < n; i++) this.cdf[i]! /= sum;
    this.cdf[n - 1] = 1; // no rounding gap at the top: every u in [0, 1) finds a rank
  }

  /** P(rank = k), 0 outside 1..n. */
  probability(k: number): number {
    return Number.isInteger(k) && k >= 1 && k <= this.n ? k ** -this.s / this.norm : 0;
  }

  /** The rank (1..n) of a uniform number u in [0, 1): the first k with CDF(k) > u. */
  rank(u: number): number {
    let lo = 0;
    let hi = this.n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.cdf[mid]! > u) hi = mid;
      else lo = mid + 1;
    }
    return lo + 1;
  }

  /** Draws ranks with `random` (uniform in [0, 1), e.g. a seeded mulberry32). */
  sampler(random: () => number): () => number {
    return () => this.rank(random());
  }
}
