/**
 * The raw key-value layer under the codec store: bytes in, bytes out,
 * absolute expiry. An adapter implements this once per engine; key layout,
 * encoding and freshness live above it in `codec-store.ts` and are therefore
 * the same for every engine.
 */
export interface ByteBackend {
  readonly kind: string;
  /** One value per key, in order; null where absent or expired. */
  getMany(keys: readonly string[]): Promise<(Buffer | null)[]>;
  setMany(entries: readonly ByteEntry[]): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface ByteEntry {
  readonly key: string;
  readonly value: Buffer;
  /** Absolute expiry, ms since the epoch. */
  readonly expireAtMs: number;
}
