import type { ReadOptions, ShardHealth } from '../online-store.js';
import { ShardGuard, type GuardedShard } from '../shard-guard.js';
import { stateVersion, type ByteBackend, type CasEntry, type RecordKey, type RecordPart, type ShardError, type ValueEntry } from './byte-backend.js';
import { redisKey } from '../keys.js';

/** The embedded store is one "shard"; metrics and errors name it like this. */
const SHARD = '0';

/**
 * The in-process store: a Map with absolute expiry. It is the zero-setup
 * default for `npm start` and the fast store for unit tests, and it passes
 * the same contract tests as the networked engines
 * (test/integration/store-contract.test.ts). Its calls go through the same
 * shard guard (deadline, metrics); they cannot hang, so the guard sets no
 * timer for them.
 */
export class EmbeddedBackend implements ByteBackend {
  readonly kind = 'embedded';
  private readonly entries = new Map<string, { value: Buffer; expireAtMs: number }>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly shard: GuardedShard;

  constructor(private readonly now: () => number = Date.now) {
    this.shard = new ShardGuard({ store: this.kind, callTimeoutMs: 60_000, timeoutBy: 'client' }).shard(SHARD);
    // Reads ignore expired entries; the sweep only bounds memory.
    this.sweeper = setInterval(() => this.sweep(), 10_000);
    this.sweeper.unref();
  }

  async getMany(records: readonly RecordKey[], part: RecordPart, options: ReadOptions = {}): Promise<(Buffer | null | ShardError)[]> {
    try {
      return await this.shard.call(async () => {
        const now = this.now();
        return records.map((record) => {
          const entry = this.entries.get(redisKey(record, part));
          return entry && entry.expireAtMs > now ? entry.value : null;
        });
      }, { deadline: options.deadline, read: true });
    } catch (error) {
      // The same contract as the networked engines: a request already out of time reads nothing.
      return records.map(() => error as ShardError);
    }
  }

  async setMany(entries: readonly ValueEntry[]): Promise<void> {
    for (const { record, value, expireAtMs } of entries) this.entries.set(redisKey(record, 'value'), { value, expireAtMs });
  }

  async compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]> {
    const now = this.now();
    return entries.map((e) => {
      const stateKey = redisKey(e.record, 'state');
      const current = this.entries.get(stateKey);
      const stored = current && current.expireAtMs > now ? current.value : null;
      if (stateVersion(stored) !== e.expectedVersion) return false;
      this.entries.set(stateKey, { value: Buffer.from(e.state), expireAtMs: e.stateExpireAtMs });
      if (e.value) this.entries.set(redisKey(e.record, 'value'), { value: e.value, expireAtMs: e.valueExpireAtMs });
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
