import type { ViewVersion } from '../schema/types.js';
import { checkCasAnswers, checkReadAnswers } from './backend-answers.js';
import { recordKey, stateVersion, type ByteBackend, type CasEntry, type RecordKey, type ShardError, type ValueEntry } from './backends/byte-backend.js';
import { CodecError, codecFor } from './codec.js';
import { expiryOf } from './freshness.js';
import { redisKey } from './keys.js';
import {
  CorruptValueError, DeadlineExceededError, StoreUnavailableError, type FeatureRow, type MaterializedState, type MaterializedStore, type MaterializedWrite,
  type ReadOptions, type ReadResult, type ShardHealth, type StoredFeatures,
} from './online-store.js';

/**
 * The one OnlineStore implementation over any ByteBackend: key naming, the
 * value codec, expiry at write and freshness at read are decided here once,
 * so every engine behaves alike and the contract tests hold for all.
 */
export class CodecStore implements MaterializedStore {
  constructor(
    readonly backend: ByteBackend,
    private readonly now: () => number = Date.now,
  ) {}

  get kind(): string {
    return this.backend.kind;
  }

  async readSettled(view: ViewVersion, ids: readonly string[], options: ReadOptions = {}): Promise<ReadResult[]> {
    // The serving path's read: plain loops into preallocated arrays, one object per id (its value).
    const n = ids.length;
    let answers: unknown;
    if (this.backend.getValues) {
      try {
        answers = await this.backend.getValues(view, ids, options);
      } catch (error) {
        // Its one shard failed (see ByteBackend.getValues): every id carries that shard's error.
        if (!(error instanceof StoreUnavailableError || error instanceof DeadlineExceededError)) throw error;
        answers = new Array<ShardError>(n).fill(error);
      }
    } else {
      const records = new Array<RecordKey>(n);
      for (let i = 0; i < n; i++) records[i] = recordKey(view, ids[i]!);
      answers = await this.backend.getMany(records, 'value', options);
    }
    const blobs = checkReadAnswers(this.kind, 'getMany', answers, n);
    const codec = codecFor(view);
    // isStale(view, t, now) is now - t > ttl: the same as t < now - ttl for integer milliseconds.
    const freshFromMs = this.now() - view.ttlSeconds * 1000;
    const out = new Array<ReadResult>(n);
    for (let i = 0; i < n; i++) {
      const blob = blobs[i]!;
      if (blob === null || blob instanceof Error) {
        out[i] = blob;
        continue;
      }
      try {
        out[i] = codec.decodeForRead(blob, freshFromMs);
      } catch (error) {
        // Only this id's field fails; the rest of the batch is served.
        out[i] = new CorruptValueError(redisKey(recordKey(view, ids[i]!), 'value'), error instanceof Error ? error.message : String(error));
      }
    }
    return out;
  }

  async read(view: ViewVersion, ids: readonly string[], options: ReadOptions = {}): Promise<(StoredFeatures | null)[]> {
    return allOrThrow(await this.readSettled(view, ids, options));
  }

  async write(view: ViewVersion, rows: readonly FeatureRow[]): Promise<void> {
    const codec = codecFor(view);
    const now = this.now();
    const entries: ValueEntry[] = [];
    for (const row of rows) {
      if (!Number.isSafeInteger(row.eventTimeMs) || row.eventTimeMs < 0) {
        throw new CodecError(`${view.viewName} v${view.version}`, `entity ${row.entityId}: event time must be a non-negative integer of ms, got ${row.eventTimeMs}`);
      }
      const expireAtMs = expiryOf(view, row.eventTimeMs);
      // Already past retention: storing it would only make it readable as "stale" for no one.
      if (expireAtMs <= now) continue;
      entries.push({
        record: recordKey(view, row.entityId),
        value: codec.encode({ values: row.values, eventTimeMs: row.eventTimeMs, position: row.position }),
        expireAtMs,
      });
    }
    await this.backend.setMany(entries);
  }

  async readStates(view: ViewVersion, ids: readonly string[]): Promise<(MaterializedState | null)[]> {
    // The materializer's compare-and-set needs every state or none: any failed shard fails the batch.
    const records = ids.map((id) => recordKey(view, id));
    const blobs = allOrThrow(checkReadAnswers(this.kind, 'getMany', await this.backend.getMany(records, 'state'), records.length));
    return blobs.map((blob) => {
      if (blob === null) return null;
      const text = blob.toString('utf8');
      const end = text.indexOf('\n');
      return { version: stateVersion(text), state: text.slice(end + 1) };
    });
  }

  async writeMaterialized(view: ViewVersion, rows: readonly MaterializedWrite[]): Promise<boolean[]> {
    const codec = codecFor(view);
    const entries: CasEntry[] = rows.map((row) => ({
      record: recordKey(view, row.entityId),
      expectedVersion: row.expectedVersion,
      state: `${row.expectedVersion + 1}\n${row.state}`,
      stateExpireAtMs: row.stateExpireAtMs,
      value: row.value ? codec.encode(row.value) : null,
      valueExpireAtMs: row.value ? expiryOf(view, row.value.eventTimeMs) : 0,
    }));
    return checkCasAnswers(this.kind, await this.backend.compareAndSet(entries), entries.length);
  }

  ping(): Promise<void> {
    return this.backend.ping();
  }

  health(): Promise<ShardHealth[]> {
    return this.backend.health();
  }

  close(): Promise<void> {
    return this.backend.close();
  }
}

/** The values of a settled read, or the first per-key error thrown. */
function allOrThrow<T>(results: readonly (T | Error)[]): Exclude<T, Error>[] {
  for (const r of results) if (r instanceof Error) throw r;
  return results as Exclude<T, Error>[];
}
