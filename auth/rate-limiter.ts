import { ErrorCode } from '../runtime/errors.js';
import { AccessError } from './errors.js';

/**
 * Requests per principal per second, as token buckets: each principal may
 * send `burst` requests at once and `ratePerSecond` sustained. Hand-written
 * rather than a library (rate-limiter-flexible, bottleneck) because it is a
 * dozen lines in memory on the request path; limits across replicas would need
 * a shared store, and a per-replica limit is what operators can reason about
 * (documented).
 */
interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** Buckets are dropped when this many principals were seen; full buckets are forgotten first. */
const MAX_BUCKETS = 100_000;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Takes one token from `key`'s bucket, or throws RATE_LIMITED with the wait until the next. */
  take(key: string, ratePerSecond: number, burst: number = ratePerSecond): void {
    if (!(ratePerSecond > 0)) return;
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= MAX_BUCKETS) this.forgetFull(now, ratePerSecond, burst);
      bucket = { tokens: burst, updatedMs: now };
      this.buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.updatedMs) / 1000) * ratePerSecond);
      bucket.updatedMs = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return;
    }
    const waitSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / ratePerSecond));
    throw new AccessError(
      ErrorCode.RateLimited,
      429,
      `Rate limit of ${ratePerSecond} requests per second exceeded for this principal (RATE_LIMIT_PER_SECOND); retry after ${waitSeconds} s`,
      waitSeconds,
    );
  }

  private forgetFull(now: number, ratePerSecond: number, burst: number): void {
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.updatedMs) / 1000) * ratePerSecond >= burst) this.buckets.delete(key);
    }
    // Every principal active at once: start over rather than grow without bound.
    if (this.buckets.size >= MAX_BUCKETS) this.buckets.clear();
  }
}
