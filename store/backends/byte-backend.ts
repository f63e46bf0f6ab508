import type { DeadlineExceededError, ReadOptions, ShardHealth, StoreUnavailableError } from '../online-store.js';

/**
 * The raw key-value layer under the codec store: bytes in, bytes out,
 * absolute expiry. An adapter implements this once per engine; key layout,
 * encoding and freshness live above it in `codec-store.ts` and are therefore
 * the same for every engine.
 */
export interface ByteBackend {
  readonly kind: string;
  /**
   * One answer per key, in order: the bytes, null where absent or expired, or
   * the error of the shard that holds the key. It never rejects for a shard
   * failure, so one failing shard fails only its own keys.
   */
  getMany(keys: readonly string[], options?: ReadOptions): Promise<(Buffer | null | ShardError)[]>;
  setMany(entries: readonly ByteEntry[]): Promise<void>;
  /**
   * For each entry, atomically: if the version at the head of the stored
   * state (see `stateVersion`; absent state = version 0) equals
   * `expectedVersion`, write the state and (when given) the value, and answer
   * true; otherwise write nothing and answer false. The materializer's
   * optimistic concurrency and exactly-once guard rest on this.
   */
  compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]>;
  ping(): Promise<void>;
  health(): Promise<ShardHealth[]>;
  close(): Promise<void>;
}

/** What one shard answers instead of values when it cannot read. */
export type ShardError = StoreUnavailableError | DeadlineExceededError;

export interface ByteEntry {
  readonly key: string;
  readonly value: Buffer;
  /** Absolute expiry, ms since the epoch. */
  readonly expireAtMs: number;
}

export interface CasEntry {
  /** The value key and the state key live on the same shard (see RedisBackend's routing). */
  readonly valueKey: string;
  readonly stateKey: string;
  readonly expectedVersion: number;
  readonly value: ByteEntry['value'] | null;
  readonly valueExpireAtMs: number;
  /** `<version>\n<json>`: the version is what the next compare-and-set compares. */
  readonly state: string;
  readonly stateExpireAtMs: number;
}

/** The version at the head of a stored state (`<version>\n…`), 0 for none. */
export function stateVersion(state: string | Buffer | null): number {
  if (state === null) return 0;
  const text = typeof state === 'string' ? state : state.toString('utf8', 0, Math.min(state.length, 24));
  const end = text.indexOf('\n');
  return Number(end < 0 ? text : text.slice(0, end)) || 0;
}
