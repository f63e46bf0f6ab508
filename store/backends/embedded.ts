import { storeReadDuration } from '../../runtime/metrics.js';
import { stateVersion, type ByteBackend, type ByteEntry, type CasEntry } from './byte-backend.js';

/**
 * The in-process store: a Map with absolute expiry. It is the zero-setup
 * default for `npm start` and the fast store for unit tests, and it passes
 * the same contract tests as Redis (test/integration/store-contract.test.ts).
 */
export class EmbeddedBackend implements ByteBackend {
  readonly kind = 'embedded';
  private readonly entries = new Map<string, { value: Buffer; expireAtMs: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly now: () => number = Date.now) {
    // Reads ignore expired entries; the sweep only bounds memory.
    this.sweeper = setInterval(() => this.sweep(), 10_000);
    this.sweeper.unref();
  }

  async getMany(keys: readonly string[]): Promise<(Buffer | null)[]> {
    const started = performance.now();
    const now = this.now();
    const out = keys.map((key) => {
      const entry = this.entries.get(key);
      return entry && entry.expireAtMs > now ? entry.value : null;
    });
    storeReadDuration.observe({ store: this.kind, shard: '0' }, (performance.now() - started) / 1000);
    return out;
  }

  async setMany(entries: readonly ByteEntry[]): Promise<void> {
    for (const { key, value, expireAtMs } of entries) this.entries.set(key, { value, expireAtMs });
  }

  async compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]> {
    const now = this.now();
    return entries.map((e) => {
      const current = this.entries.get(e.stateKey);
      const stored = current && current.expireAtMs > now ? current.value : null;
      if (stateVersion(stored) !== e.expectedVersion) return false;
      this.entries.set(e.stateKey, { value: Buffer.from(e.state), expireAtMs: e.stateExpireAtMs });
      if (e.value) this.entries.set(e.valueKey, { value: e.value, expireAtMs: e.valueExpireAtMs });
      return true;
    });
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) if (entry.expireAtMs <= now) this.entries.delete(key);
  }
}
