import type { DeadlineExceededError, ReadOptions, ShardHealth, StoreUnavailableError } from '../online-store.js';

/**
 * The raw layer under the codec store, implemented once per engine: bytes in,
 * bytes out, absolute expiry. Key layout above the engine, encoding and
 * freshness live in `codec-store.ts` and are therefore the same for every
 * engine. A new engine is one file implementing this, registered in
 * `create-store.ts`, and passing test/integration/store-contract.test.ts.
 *
 * ## What lives together
 *
 * Every stored thing is a *part* of one *record*: the value of one view
 * version of one entity, and the materializer's window state of that value.
 * The two parts of a record are always read, written and compared-and-set
 * on the same shard, because `compareAndSet` replaces both atomically and an
 * engine can only do that where both live. Each engine routes by
 * `RecordKey.routing`, identical for both parts:
 *
 * - Redis (one node, or the client-side hash ring): keys `fv:<routing>` and
 *   `fvs:<routing>`; the ring hashes `<routing>`.
 * - Redis Cluster: keys `fv:{<routing>}` and `fvs:{<routing>}`; the hash tag
 *   puts both in one slot (decision 0022).
 * - Aerospike: one record whose user key is `<routing>`, the parts in bins.
 * - Embedded: one process, one map; routing is moot.
 */
export interface ByteBackend {
  /** e.g. `embedded`, `redis`, `sharded-redis`, `redis-cluster`, `aerospike`: the `store` label of metrics. */
  readonly kind: string;
  /**
   * One answer per record, in the order of `records`: the part's bytes, null
   * where absent or expired, or the error of the shard that holds it. It
   * never rejects for a shard failure, so one failing shard fails only its
   * own records. The codec store checks the answer's length and types
   * (backend-answers.ts) before it attaches a single value to an id.
   */
  getMany(records: readonly RecordKey[], part: RecordPart, options?: ReadOptions): Promise<(Buffer | null | ShardError)[]>;
  /**
   * Optional: `getMany` of the `value` parts of one view version's records, addressed by entity
   * id. The serving path reads through it where an engine has it, sparing a RecordKey, its
   * routing string and a key string per id; the answers and their contract are `getMany`'s,
   * except that where every id would carry the same shard error (one shard holds them all) it
   * may reject with that error instead: the codec store gives it to every id.
   */
  getValues?(view: { readonly viewName: string; readonly version: number }, ids: readonly string[], options?: ReadOptions): Promise<(Buffer | null | ShardError)[]>;
  /** Writes values (the `value` part only; a record's state is untouched). Rejects if any write failed. */
  setMany(entries: readonly ValueEntry[]): Promise<void>;
  /**
   * For each entry, atomically on the server: if the version at the head of
   * the stored state (see `stateVersion`; absent state = version 0) equals
   * `expectedVersion`, write the state and (when given) the value, and answer
   * true; otherwise write nothing and answer false. One answer per entry, in
   * order. The materializer's optimistic concurrency and exactly-once guard
   * rest on this.
   */
  compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]>;
  /** Resolves when every shard answers; rejects with StoreUnavailableError otherwise. */
  ping(): Promise<void>;
  health(): Promise<ShardHealth[]>;
  close(): Promise<void>;
}

/** The address of one record: a view version of one entity. */
export interface RecordKey {
  readonly view: string;
  readonly version: number;
  readonly entityId: string;
  /** `<view>:v<version>:<entityId>`: what both parts of the record are routed by. */
  readonly routing: string;
}

/** The value of a record, or the materializer's window state beside it. */
export type RecordPart = 'value' | 'state';

/** What one shard answers instead of values when it cannot read. */
export type ShardError = StoreUnavailableError | DeadlineExceededError;

export interface ValueEntry {
  readonly record: RecordKey;
  readonly value: Buffer;
  /** Absolute expiry, ms since the epoch. */
  readonly expireAtMs: number;
}

export interface CasEntry {
  readonly record: RecordKey;
  readonly expectedVersion: number;
  /** The new value; null keeps the stored one. */
  readonly value: Buffer | null;
  readonly valueExpireAtMs: number;
  /** `<version>\n<json>`: the version is what the next compare-and-set compares. */
  readonly state: string;
  readonly stateExpireAtMs: number;
}

export function recordKey(view: { readonly viewName: string; readonly version: number }, entityId: string): RecordKey {
  return { view: view.viewName, version: view.version, entityId, routing: `${view.viewName}:v${view.version}:${entityId}` };
}

/** The version at the head of a stored state (`<version>\n…`), 0 for none. */
export function stateVersion(state: string | Buffer | null): number {
  if (state === null) return 0;
  const text = typeof state === 'string' ? state : state.toString('utf8', 0, Math.min(state.length, 24));
  const end = text.indexOf('\n');
  return Number(end < 0 ? text : text.slice(0, end)) || 0;
}
