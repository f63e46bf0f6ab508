import { Redis, type ChainableCommander } from 'ioredis';
import { log } from '../../runtime/log.js';
import { redisKey } from '../keys.js';
import type { ReadOptions, ShardHealth } from '../online-store.js';
import { ShardGuard, type BreakerOptions, type GuardedShard } from '../shard-guard.js';
import { recordKey, type ByteBackend, type CasEntry, type RecordKey, type RecordPart, type ShardError, type ValueEntry } from './byte-backend.js';
import { HashRing } from './hash-ring.js';
import { casScript, connectionSecurity, redisReason, shardName, type RedisCredentials } from './redis-shared.js';

export interface RedisBackendOptions extends RedisCredentials {
  /** One URL: a single node. Several: client-side sharding over them (the hash ring). */
  readonly urls: readonly string[];
  /** Upper bound on one command; a hung shard fails the call after this. */
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs?: number;
  readonly breaker?: BreakerOptions;
}

/** One node: its ioredis client and its guard (breaker, metrics, errors). */
interface Node {
  readonly client: Redis;
  readonly guard: GuardedShard;
  /** Why the node last failed to connect (e.g. WRONGPASS, a TLS error), until it is ready again. */
  lastError?: string;
}

/**
 * Redis, on one node or sharded over N independent nodes by a consistent-hash
 * ring on the client. Every batch becomes one MGET (reads) or one pipeline
 * (writes) per node, the nodes called in parallel.
 *
 * The ring has no replication and no failover: a node's values are
 * unavailable while it is down, and adding a node moves ~1/N of the keys to
 * it without copying them (they read as missing until rewritten). Redis
 * Cluster (redis-cluster.ts) is the production choice; the ring is for
 * deployments that already run independent nodes.
 *
 * Failure behaviour is chosen for serving: the offline queue is off, so a
 * call to a disconnected node fails at once instead of waiting for a
 * reconnect, and `commandTimeoutMs` (ioredis' commandTimeout, so the guard
 * sets no timer) bounds a node that accepts but hangs. ioredis keeps
 * reconnecting in the background, so serving recovers by itself when the
 * node comes back. The breaker, deadline, metrics and errors are the shard
 * guard's (../shard-guard.ts).
 */
export class RedisBackend implements ByteBackend {
  readonly kind: string;
  private readonly nodes: Node[];
  private readonly ring: HashRing<number>;

  constructor(options: RedisBackendOptions) {
    if (options.urls.length === 0) throw new Error('RedisBackend needs at least one URL');
    this.kind = options.urls.length === 1 ? 'redis' : 'sharded-redis';
    const names = options.urls.map(shardName);
    const byName = new Map<string, Node>();
    const guard = new ShardGuard({
      store: this.kind,
      callTimeoutMs: options.commandTimeoutMs,
      ...(options.breaker ? { breaker: options.breaker } : {}),
      timeoutBy: 'client',
      describe: (shard, error) => redisReason(error, { status: byName.get(shard)!.client.status, lastError: byName.get(shard)!.lastError }),
    });
    this.nodes = options.urls.map((url, i) => {
      const name = names[i]!;
      const client = new Redis(url, {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: options.commandTimeoutMs,
        connectTimeout: options.connectTimeoutMs ?? 2000,
        retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
        lazyConnect: false,
        // Commands issued in one tick (the reads of several views of one request) leave in one write.
        enableAutoPipelining: true,
        ...connectionSecurity(url, options),
      });
      const node: Node = { client, guard: guard.shard(name) };
      byName.set(name, node);
      let lastLogged = 0;
      client.on('error', (error: Error) => {
        node.lastError = error.message;
        // ioredis emits an error on every failed reconnect attempt; one line per 5 s per node is enough.
        const now = Date.now();
        if (now - lastLogged > 5000) {
          lastLogged = now;
          log.warn({ store: this.kind, shard: name, err: error.message }, 'redis shard error');
        }
      });
      client.on('ready', () => {
        delete node.lastError;
        log.info({ store: this.kind, shard: name }, 'redis shard ready');
      });
      client.defineCommand('featureCas', { numberOfKeys: 2, lua: casScript });
      return node;
    });
    this.ring = new HashRing(names.map((name, i) => ({ id: name, value: i })));
  }

  get shardNames(): string[] {
    return this.nodes.map((n) => n.guard.name);
  }

  /** Which shard holds `record` (for tests and diagnostics). */
  shardOf(record: RecordKey): string {
    return this.nodes[this.ring.nodeFor(record.routing)]!.guard.name;
  }

  getMany(records: readonly RecordKey[], part: RecordPart, options: ReadOptions = {}): Promise<(Buffer | null | ShardError)[]> {
    if (records.length === 0) return Promise.resolve([]);
    // One node (the common deployment): one MGET, no grouping, no per-group promise.
    if (this.nodes.length === 1) {
      const keys = new Array<string>(records.length);
      for (let i = 0; i < records.length; i++) keys[i] = redisKey(records[i]!, part);
      return this.mget(this.nodes[0]!, keys, options);
    }
    return this.getGrouped(records, part, options);
  }

  /** The serving path's read: on one node each key is `fv:<view>:v<version>:` + id, nothing per id but the key. */
  getValues(view: { readonly viewName: string; readonly version: number }, ids: readonly string[], options: ReadOptions = {}): Promise<(Buffer | null | ShardError)[]> {
    if (this.nodes.length !== 1) return this.getMany(ids.map((id) => recordKey(view, id)), 'value', options);
    if (ids.length === 0) return Promise.resolve([]);
    // redisKey(recordKey(view, id), 'value'), with the part that is the same for every id made once.
    const prefix = `fv:${view.viewName}:v${view.version}:`;
    const keys = new Array<string>(ids.length);
    for (let i = 0; i < ids.length; i++) keys[i] = prefix + ids[i]!;
    const node = this.nodes[0]!;
    // The guard's promise itself (MGET answers one Buffer or null per key; a failure rejects with
    // the shard's error, which the codec store gives every id): no promise layer of our own.
    return node.guard.call(() => node.client.mgetBuffer(keys), { deadline: options.deadline, read: true });
  }

  private async getGrouped(records: readonly RecordKey[], part: RecordPart, options: ReadOptions): Promise<(Buffer | null | ShardError)[]> {
    const out: (Buffer | null | ShardError)[] = new Array(records.length);
    await Promise.all(
      this.groupByNode(records).map(async (group, nodeIndex) => {
        if (group.length === 0) return;
        const values = await this.mget(this.nodes[nodeIndex]!, group.map((i) => redisKey(records[i]!, part)), options);
        group.forEach((recordIndex, j) => (out[recordIndex] = values[j]!));
      }),
    );
    return out;
  }

  /** One MGET of `keys` on `node`: the values in that order, or the shard's error for each. It never rejects. */
  private mget(node: Node, keys: readonly string[], options: ReadOptions): Promise<(Buffer | null | ShardError)[]> {
    const n = keys.length;
    return node.guard.call(() => node.client.mgetBuffer(keys as string[]), { deadline: options.deadline, read: true }).then(
      (values) => {
        for (let j = 0; j < n; j++) if (values[j] === undefined) values[j] = null;
        return values;
      },
      (error: ShardError) => new Array<ShardError>(n).fill(error),
    );
  }

  async setMany(entries: readonly ValueEntry[]): Promise<void> {
    await this.pipelined(entries.map((e) => e.record), (pipeline, i) => {
      const entry = entries[i]!;
      pipeline.set(redisKey(entry.record, 'value'), entry.value, 'PXAT', entry.expireAtMs);
    });
  }

  async compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]> {
    const replies = await this.pipelined(entries.map((e) => e.record), (pipeline, i) => {
      const e = entries[i]!;
      // EVALSHA of the script ioredis defined on every client (it loads it on first use).
      (pipeline as unknown as CasPipeline).featureCas(redisKey(e.record, 'state'), redisKey(e.record, 'value'), String(e.expectedVersion), e.state, String(e.stateExpireAtMs), e.value ?? '', String(e.valueExpireAtMs));
    });
    return replies.map((reply) => reply === 1);
  }

  /**
   * One pipeline per node for the commands that `add` queues, one per record
   * (routed like the record), sent to the nodes in parallel; the replies in
   * the order of `records`. Any failed reply fails the call, naming its node.
   */
  private async pipelined(records: readonly RecordKey[], add: (pipeline: ChainableCommander, index: number) => void): Promise<unknown[]> {
    const out: unknown[] = new Array(records.length);
    if (records.length === 0) return out;
    await Promise.all(
      this.groupByNode(records).map(async (group, nodeIndex) => {
        if (group.length === 0) return;
        const node = this.nodes[nodeIndex]!;
        const pipeline = node.client.pipeline();
        for (const i of group) add(pipeline, i);
        const results = await node.guard.call(() => pipeline.exec());
        group.forEach((recordIndex, j) => {
          const [error, reply] = results?.[j] ?? [new Error('no reply')];
          if (error) throw node.guard.unavailable(error);
          out[recordIndex] = reply;
        });
      }),
    );
    return out;
  }

  /** Past the circuit breaker: readiness asks each node itself, open circuit or not. */
  async ping(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.client.ping().catch((error: unknown) => {
      throw node.guard.unavailable(error);
    })));
  }

  async health(): Promise<ShardHealth[]> {
    return Promise.all(this.nodes.map((node) => node.guard.health(() => node.client.ping())));
  }

  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.client.quit().catch(() => n.client.disconnect())));
  }

  /**
   * Indexes of `records` per node; one array per node, empty where it holds
   * none. The ring hashes the record's routing, so a value and its state
   * share a node.
   */
  private groupByNode(records: readonly RecordKey[]): number[][] {
    const groups: number[][] = this.nodes.map(() => []);
    if (this.nodes.length === 1) {
      groups[0] = records.map((_, i) => i);
      return groups;
    }
    records.forEach((record, i) => groups[this.ring.nodeFor(record.routing)]!.push(i));
    return groups;
  }
}

/** The pipeline method `defineCommand` adds for the compare-and-set script. */
interface CasPipeline {
  featureCas(...args: (string | Buffer)[]): unknown;
}
