import type { Deadline } from '../runtime/deadline.js';
import type { ViewVersion } from '../schema/types.js';
import type { FeatureValues, SourcePosition } from './codec.js';

/**
 * The seam between serving and storage. Designed for Redis, Redis Cluster
 * and Aerospike alike: every call works on one feature-view version and a
 * batch of entities, so an adapter can turn it into one multi-get or
 * pipeline per shard (ARCHITECTURE.md, decision 2).
 */
export interface OnlineStore {
  /** e.g. `embedded`, `redis`, `sharded-redis`: the `store` label of metrics. */
  readonly kind: string;
  /**
   * Values of `view` for `ids`, in the order of `ids`: per id the value, null
   * where none is stored, or the error that kept it from being read (its
   * shard unavailable, the request's deadline passed, a corrupt value). One
   * failing shard fails only the ids whose values live on it. The serving
   * path reads through this.
   */
  readSettled(view: ViewVersion, ids: readonly string[], options?: ReadOptions): Promise<ReadResult[]>;
  /** `readSettled`, all or nothing: rejects with the first per-id error (for tools, the materializer and tests). */
  read(view: ViewVersion, ids: readonly string[], options?: ReadOptions): Promise<(StoredFeatures | null)[]>;
  /** Upserts rows; each expires from the store at eventTime + retention (see `expiryOf`). */
  write(view: ViewVersion, rows: readonly FeatureRow[]): Promise<void>;
  /** Resolves when every shard answers; rejects with StoreUnavailableError otherwise. */
  ping(): Promise<void>;
  /** One entry per shard: whether it answers a ping now, and the state of its circuit breaker (for /readyz). */
  health(): Promise<ShardHealth[]>;
  close(): Promise<void>;
}

export interface ReadOptions {
  /** Store calls wait at most until this (the request's REQUEST_DEADLINE_MS). */
  readonly deadline?: Deadline;
}

/** Why one id of a batch read has no answer. */
export type ReadError = StoreUnavailableError | DeadlineExceededError | CorruptValueError;
export type ReadResult = StoredFeatures | null | ReadError;

export interface ShardHealth {
  readonly shard: string;
  readonly reachable: boolean;
  /** e.g. `reachable, circuit closed` or `unavailable: connect ECONNREFUSED…, circuit open`. */
  readonly detail: string;
}

/**
 * What the materializer needs on top of reads and writes: each value's
 * window state, read and replaced by compare-and-set, atomically with the
 * value (ARCHITECTURE.md, decision 6).
 */
export interface MaterializedStore extends OnlineStore {
  readStates(view: ViewVersion, ids: readonly string[]): Promise<(MaterializedState | null)[]>;
  /** One answer per row: true if written, false if the state changed since it was read (re-read and retry). */
  writeMaterialized(view: ViewVersion, rows: readonly MaterializedWrite[]): Promise<boolean[]>;
}

export interface MaterializedState {
  /** Incremented by every write; the compare-and-set compares it. */
  readonly version: number;
  /** The window state, JSON (materializer/windows.ts). */
  readonly state: string;
}

export interface MaterializedWrite {
  readonly entityId: string;
  readonly expectedVersion: number;
  readonly state: string;
  /** Absolute expiry of the state (it must outlive its window). */
  readonly stateExpireAtMs: number;
  /** The new value; null writes the state alone. */
  readonly value: { readonly values: FeatureValues; readonly eventTimeMs: number; readonly position: SourcePosition } | null;
}

export interface FeatureRow {
  readonly entityId: string;
  readonly values: FeatureValues;
  readonly eventTimeMs: number;
  readonly position?: SourcePosition;
}

/** A value as read, with its freshness decided at read time. */
export interface StoredFeatures {
  readonly values: FeatureValues;
  readonly eventTimeMs: number;
  /** Older than the view's TTL: served with null features (decision 3). */
  readonly stale: boolean;
}

/** A store, or one shard of it, did not answer in time or refused the call. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
  constructor(
    readonly store: string,
    readonly shard: string,
    readonly reason: string,
  ) {
    super(`online store ${store} shard ${shard} is unavailable: ${reason}`);
  }
}

/**
 * The request's deadline (REQUEST_DEADLINE_MS) passed before this shard
 * answered: the request answers with what it has and this error for the rest.
 */
export class DeadlineExceededError extends Error {
  override name = 'DeadlineExceededError';
  constructor(
    readonly store: string,
    readonly shard: string,
    readonly budgetMs: number,
  ) {
    super(`online store ${store} shard ${shard} did not answer within the request deadline of ${budgetMs} ms`);
  }
}

/** A stored value could not be decoded with the registry's schema for it. */
export class CorruptValueError extends Error {
  override name = 'CorruptValueError';
  constructor(readonly key: string, readonly reason: string) {
    super(`stored value ${key} cannot be decoded: ${reason}`);
  }
}
