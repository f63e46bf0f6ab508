import type { ViewVersion } from '../schema/types.js';

/**
 * TTL at write, freshness at read (ARCHITECTURE.md, decision 3).
 *
 * A value is fresh until eventTime + TTL. The store keeps it for one more TTL
 * (capped at a day) so that, for that while, a read can say "stale" rather
 * than "missing": a model owner can tell a stalled pipeline from an unknown
 * entity. After that the store expires it by itself.
 */
const maxStaleRetentionMs = 86_400_000;

export function isStale(view: ViewVersion, eventTimeMs: number, nowMs: number): boolean {
  return nowMs - eventTimeMs > view.ttlSeconds * 1000;
}

/** Absolute time (ms) at which the store should drop the value. */
export function expiryOf(view: ViewVersion, eventTimeMs: number): number {
  const ttlMs = view.ttlSeconds * 1000;
  return eventTimeMs + ttlMs + Math.min(ttlMs, maxStaleRetentionMs);
}
