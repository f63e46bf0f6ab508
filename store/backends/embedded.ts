import { deadlineExceeded, storeReadDuration } from '../../runtime/metrics.js';
import { DeadlineExceededError, type ReadOptions, type ShardHealth } from '../online-store.js';
import { stateVersion, type ByteBackend, type ByteEntry, type CasEntry, type ShardError } from './byte-backend.js';

/** The embedded store is one "shard"; metrics and errors name it like this. */
const SHARD = '0';

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

  async getMany(keys: readonly string[], options: ReadOptions = {}): Promise<(Buffer | null | ShardError)[]> {
    // The same contract as Redis: a request already out of time reads nothing.
    if (options.deadline?.expired) {
      deadlineExceeded.inc({ store: this.kind, shard: SHARD });
      const error = new DeadlineExceededError(this.kind, SHARD, options.deadline.budgetMs);
      return keys.map(() => error);
    }
    const started = performance.now();
    const now = this.now();
    const out = keys.map((key) => {
      const entry = this.entries.get(key);
      return entry && entry.expireAtMs > now ? entry.value : null;
    });
    storeReadDuration.observe({ store: this.kind, shard: SHARD }, (performance.now() - started) / 1000);
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

  async health(): Promise<ShardHealth[]> {
    return [{ shard: SHARD, reachable: true, detail: 'in process' }];
  }

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
