import { createHash } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';
import { Cluster, type Redis } from 'ioredis';
import { log } from '../../runtime/log.js';
import { clusterKey } from '../keys.js';
import { StoreUnavailableError, type ReadOptions, type ShardHealth } from '../online-store.js';
import { ShardGuard, type BreakerOptions } from '../shard-guard.js';
import type { ByteBackend, CasEntry, RecordKey, RecordPart, ShardError, ValueEntry } from './byte-backend.js';
import { casScript, redisReason, type RedisCredentials } from './redis-shared.js';
import type { Deadline } from '../../runtime/deadline.js';

export interface RedisClusterBackendOptions extends RedisCredentials {
  /** Seed nodes, `host:port`: any reachable one tells the client the whole topology. */
  readonly nodes: readonly string[];
  /** Upper bound on one command (ioredis' commandTimeout on every node connection). */
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs?: number;
  readonly breaker?: BreakerOptions;
  /** Read from replicas (round robin over a slot's replicas); writes always go to masters. */
  readonly readFromReplicas?: boolean;
  /** How often the slot map is refreshed on a timer, besides after every redirection and node failure. */
  readonly slotsRefreshIntervalMs?: number;
}

/**
 * Replies that mean "not executed here, ask again": the slot moved (MOVED),
 * is migrating (ASK), its keys are split mid-migration (TRYAGAIN), the
 * cluster cannot serve it right now (CLUSTERDOWN), or the node does not know
 * the script yet (NOSCRIPT). Retrying them is safe for writes too.
 */
const notExecuted = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN|NOSCRIPT)\b/;

/** The shard name of failures of a slot that no node serves in the client's map. */
const NO_NODE = '(no node)';

/**
 * Redis Cluster through ioredis' Cluster client. The client owns the
 * topology: it learns the slot map from the seeds, keeps one connection per
 * node, and refreshes the map on a timer, after redirections and (here)
 * after every node failure. Reads and writes take the fast route this file
 * adds on top, then fall back on the client's own:
 *
 * 1. Each key's slot (its hash tag is the record's routing, so a value and
 *    its state share a slot: decision 0022) names the node that owns it in
 *    the client's map. A batch's keys for one node are sent as single-key
 *    commands on **that node's connection**, which autopipelines: whatever
 *    is issued for a node in one tick — this batch, other views, other
 *    requests — leaves in one write, and the next write waits for the
 *    previous reply (as on one Redis node). So a batch costs one round trip
 *    per node; its replies are read per key.
 * 2. A key whose reply says "not executed here" (MOVED, ASK, TRYAGAIN,
 *    CLUSTERDOWN, NOSCRIPT; see `notExecuted`) is sent again on its own
 *    through the Cluster client, which follows MOVED and ASK (with ASKING),
 *    waits out TRYAGAIN and CLUSTERDOWN, and loads the script. So a slot
 *    migration (resharding) costs a few keys a second round trip and fails
 *    none, and a failover is followed as soon as the map names the promoted
 *    replica.
 *
 * ioredis' own cluster pipelines and the Cluster client's autopipelining are
 * not used for step 1: they retry only when every reply of a pipeline failed
 * with the same redirection, which a batch spread over a migrating slot
 * never does (and the pipelines refuse keys of two slot groups).
 *
 * Each node is a shard of the shard guard (breaker, deadline, metrics,
 * errors naming `host:port`). A node that fails is reported per key, like a
 * hash-ring shard, and triggers a refresh of the slot map, so a promoted
 * replica is found within about one refresh after the cluster elects it.
 */
export class RedisClusterBackend implements ByteBackend {
  readonly kind = 'redis-cluster';
  private readonly cluster: Cluster;
  private readonly guard: ShardGuard;
  /** The connection of each node the client knows, by `host:port`. */
  private readonly connections = new Map<string, Redis>();
  /** Why a node last failed to connect, until its connection is ready again. */
  private readonly lastErrors = new Map<string, string>();
  private readonly casSha = createHash('sha1').update(casScript).digest('hex');
  private readonly readFromReplicas: boolean;
  private readonly commandTimeoutMs: number;
  /** Replicas per master in the slot map, as of its last refresh. */
  private readonly replicas = new Map<string, number>();
  private replicaTurn = 0;
  private lastRefreshAt = 0;
  private lastLoggedAt = 0;

  constructor(options: RedisClusterBackendOptions) {
    if (options.nodes.length === 0) throw new Error('RedisClusterBackend needs at least one seed node');
    this.readFromReplicas = options.readFromReplicas ?? false;
    this.commandTimeoutMs = options.commandTimeoutMs;
    this.guard = new ShardGuard({
      store: this.kind,
      callTimeoutMs: options.commandTimeoutMs,
      ...(options.breaker ? { breaker: options.breaker } : {}),
      timeoutBy: 'client',
      describe: (shard, error) => redisReason(error, { status: this.connections.get(shard)?.status ?? 'end', lastError: this.lastErrors.get(shard) }),
    });
    this.cluster = new Cluster(options.nodes.map(seed), {
      // Before the slot map is known, and for a node that is gone, calls fail at once rather than queue.
      enableOfflineQueue: false,
      scaleReads: this.readFromReplicas ? 'slave' : 'master',
      slotsRefreshInterval: options.slotsRefreshIntervalMs ?? 2000,
      slotsRefreshTimeout: Math.max(1000, options.commandTimeoutMs),
      maxRedirections: 16,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 50,
      clusterRetryStrategy: (attempt) => Math.min(100 * attempt, 2000),
      redisOptions: {
        // The node connections' own autopipelining batches step 1 (see above).
        enableAutoPipelining: true,
        commandTimeout: options.commandTimeoutMs,
        connectTimeout: options.connectTimeoutMs ?? 2000,
        maxRetriesPerRequest: 0,
        ...(options.username !== undefined ? { username: options.username } : {}),
        ...(options.password !== undefined ? { password: options.password } : {}),
        ...(options.tls ? { tls: { ...options.tls } } : {}),
      },
    });
    this.cluster.defineCommand('featureCas', { numberOfKeys: 2, lua: casScript });
    this.cluster.on('+node', (redis: Redis) => {
      const key = nodeKeyOf(redis);
      this.connections.set(key, redis);
      redis.on('ready', () => this.lastErrors.delete(key));
    });
    this.cluster.on('-node', (redis: Redis) => {
      const key = nodeKeyOf(redis);
      if (this.connections.get(key) === redis) this.connections.delete(key);
    });
    this.cluster.on('node error', (error: Error, key: string) => {
      this.lastErrors.set(key, error.message);
      this.logThrottled({ shard: key, err: error.message }, 'redis cluster node error');
    });
    this.cluster.on('error', (error: Error) => this.logThrottled({ err: error.message }, 'redis cluster error'));
    this.cluster.on('refresh', () => this.onRefresh());
    this.cluster.on('ready', () => log.info({ store: this.kind, masters: this.owners(0).size }, 'redis cluster ready'));
  }

  /** The node (`host:port`) that serves reads of `record` now, per the client's slot map (for tests and diagnostics). */
  shardOf(record: RecordKey, part: RecordPart = 'value'): string {
    return this.nodeFor(calculateSlot(clusterKey(record, part)), false);
  }

  async getMany(records: readonly RecordKey[], part: RecordPart, options: ReadOptions = {}): Promise<(Buffer | null | ShardError)[]> {
    const out: (Buffer | null | ShardError)[] = new Array(records.length);
    if (records.length === 0) return out;
    const keys = records.map((r) => clusterKey(r, part));
    const retry: number[] = [];
    await Promise.all([...this.groupByNode(keys, this.readFromReplicas)].map(async ([node, indexes]) => {
      let replies: [Error | null, unknown][] | ShardError;
      try {
        replies = await this.onNode(node, indexes.map((i) => keys[i]!), (c, key) => c.getBuffer(key), options.deadline, true);
      } catch (error) {
        replies = error as ShardError;
      }
      indexes.forEach((keyIndex, j) => {
        if (replies instanceof Error) {
          out[keyIndex] = replies;
          return;
        }
        const [error, value] = replies[j]!;
        if (error) retry.push(keyIndex);
        else out[keyIndex] = (value as Buffer | null) ?? null;
      });
    }));
    await Promise.all(retry.map(async (i) => {
      try {
        out[i] = await this.redirected(keys[i]!, () => this.cluster.getBuffer(keys[i]!), options.deadline, true);
      } catch (error) {
        out[i] = error as ShardError;
      }
    }));
    return out;
  }

  async setMany(entries: readonly ValueEntry[]): Promise<void> {
    const keys = entries.map((e) => clusterKey(e.record, 'value'));
    await this.writeAll(
      keys,
      (c, key, i) => c.set(key, entries[i]!.value, 'PXAT', entries[i]!.expireAtMs),
      (key, i) => this.cluster.set(key, entries[i]!.value, 'PXAT', entries[i]!.expireAtMs),
    );
  }

  async compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]> {
    // Routed by the state key; the value key has the same hash tag, so the script touches one slot.
    const keys = entries.map((e) => clusterKey(e.record, 'state'));
    const args = (i: number): (string | Buffer)[] => {
      const e = entries[i]!;
      return [keys[i]!, clusterKey(e.record, 'value'), String(e.expectedVersion), e.state, String(e.stateExpireAtMs), e.value ?? '', String(e.valueExpireAtMs)];
    };
    const replies = await this.writeAll(
      keys,
      (c, _key, i) => c.evalsha(this.casSha, 2, ...args(i)),
      (_key, i) => (this.cluster as unknown as CasCommand).featureCas(...args(i)),
      true,
    );
    return replies.map((reply) => reply === 1);
  }

  /** Every master answers (past the breaker: readiness asks the nodes themselves). */
  async ping(): Promise<void> {
    const masters = [...this.owners(0).keys()];
    if (masters.length === 0) throw this.noSlotMap();
    await Promise.all(masters.map(async (node) => {
      const connection = this.connections.get(node);
      try {
        if (!connection) throw new Error('not connected');
        await connection.ping();
      } catch (error) {
        throw this.guard.shard(node).unavailable(error);
      }
    }));
  }

  /** One line per master: reachable or not, how many slots it serves, its circuit; and slots no node serves. */
  async health(): Promise<ShardHealth[]> {
    const masters = this.owners(0);
    if (masters.size === 0) return [{ shard: 'cluster', reachable: false, detail: `unavailable: ${this.noSlotMap().reason}` }];
    const out = await Promise.all([...masters].map(([node, slots]) => this.guard.shard(node).health(async () => {
      const connection = this.connections.get(node);
      if (!connection) throw new Error('not connected');
      await connection.ping();
    }, `reachable, master of ${slots} slots`)));
    const served = [...masters.values()].reduce((a, b) => a + b, 0);
    if (served < 16384) out.push({ shard: 'slots', reachable: false, detail: `${16384 - served} of 16384 slots have no master in the slot map` });
    return out;
  }

  async close(): Promise<void> {
    await this.cluster.quit().catch(() => this.cluster.disconnect());
  }

  /**
   * `send`'s commands on `node`'s connection (one write, see the class
   * comment), through the node's guard. Replies that say "not executed here" are left for the
   * caller to retry; any other failed reply fails the whole call (and counts
   * against the node's breaker), since on a GET, SET or the script only a
   * broken connection or a broken node produces one.
   *
   * With `durable`, the commands are followed by `WAIT 1` in the same write:
   * its reply comes once a replica has acknowledged everything before it,
   * still in the same round trip. Redis Cluster replicates asynchronously, so without it a
   * compare-and-set acknowledged by a master that dies the next moment is
   * lost at failover while the materializer has already committed the
   * offsets of its events — exactly once would become at most once. A master
   * with no replica in the slot map is not waited for; one whose replicas do
   * not acknowledge within half the call timeout fails the call, so the batch
   * is retried rather than committed.
   */
  private async onNode(
    node: string,
    keys: readonly string[],
    send: (connection: Redis, key: string, index: number) => Promise<unknown>,
    deadline: Deadline | undefined,
    read: boolean,
    durable = false,
  ): Promise<[Error | null, unknown][]> {
    if (node === NO_NODE) {
      this.refreshSoon();
      throw new StoreUnavailableError(this.kind, NO_NODE, `no master serves these keys' slots in the client's slot map (cluster ${this.cluster.status}); refreshing it`);
    }
    const shard = this.guard.shard(node);
    const waitFor = durable && this.hasReplica(node) ? Math.max(1, Math.floor(this.commandTimeoutMs / 2)) : 0;
    try {
      return await shard.call(async () => {
        const connection = this.connections.get(node);
        if (!connection) throw new Error('not connected: the node left the client\'s pool (down, or failed over)');
        // Issued in one go on an autopipelining connection: they leave in one write, with the commands of
        // every other request of this tick for this node (see the class comment).
        const settle = (p: Promise<unknown>): Promise<[Error | null, unknown]> => p.then((v) => [null, v], (e: Error) => [e, undefined]);
        const calls = keys.map((key, i) => settle(send(connection, key, i)));
        if (waitFor > 0) calls.push(settle(connection.wait(1, waitFor)));
        const replies = await Promise.all(calls);
        if (waitFor > 0) {
          const [error, acknowledged] = replies.pop()!;
          if (error) throw error;
          if (acknowledged === 0) throw new Error(`no replica acknowledged the write within ${waitFor} ms (WAIT 1)`);
        }
        for (const [error] of replies) if (error && !notExecuted.test(error.message)) throw error;
        if (replies.some(([error]) => error)) this.refreshSoon();
        return replies;
      }, { deadline, read });
    } catch (error) {
      this.refreshSoon();
      throw error;
    }
  }

  /** Whether the slot map lists a replica of `master` (kept per refresh of the map). */
  private hasReplica(master: string): boolean {
    if (this.replicas.size === 0) this.onRefresh();
    return (this.replicas.get(master) ?? 0) > 0;
  }

  /**
   * One key again, through the Cluster client's own routing and redirection
   * handling, guarded under the node that serves its slot in the map now.
   * (A compare-and-set sent this way is not followed by `WAIT`: it happens
   * only while a slot migrates, and the window it leaves is documented in
   * decision 0022.)
   */
  private async redirected<T>(key: string, send: () => Promise<T>, deadline: Deadline | undefined, read: boolean): Promise<T> {
    const node = this.nodeFor(calculateSlot(key), read && this.readFromReplicas);
    return this.guard.shard(node).call(send, { deadline, read });
  }

  /** Writes every key (one pipeline per master, then the redirected ones singly); rejects if any failed. */
  private async writeAll(
    keys: readonly string[],
    send: (connection: Redis, key: string, index: number) => Promise<unknown>,
    single: (key: string, index: number) => Promise<unknown>,
    durable = false,
  ): Promise<unknown[]> {
    const out: unknown[] = new Array(keys.length);
    if (keys.length === 0) return out;
    const retry: number[] = [];
    await Promise.all([...this.groupByNode(keys, false)].map(async ([node, indexes]) => {
      const replies = await this.onNode(node, indexes.map((i) => keys[i]!), (c, key, j) => send(c, key, indexes[j]!), undefined, false, durable);
      indexes.forEach((keyIndex, j) => {
        const [error, value] = replies[j] ?? [new Error('no reply')];
        if (error) retry.push(keyIndex);
        else out[keyIndex] = value;
      });
    }));
    await Promise.all(retry.map(async (i) => {
      out[i] = await this.redirected(keys[i]!, () => single(keys[i]!, i), undefined, false);
    }));
    return out;
  }

  /** Indexes of `keys` per node that serves them (the slot's master, or a replica for reads from replicas). */
  private groupByNode(keys: readonly string[], replicas: boolean): Map<string, number[]> {
    const groups = new Map<string, number[]>();
    keys.forEach((key, i) => {
      const node = this.nodeFor(calculateSlot(key), replicas);
      const group = groups.get(node);
      if (group) group.push(i);
      else groups.set(node, [i]);
    });
    return groups;
  }

  private nodeFor(slot: number, replica: boolean): string {
    const owners = this.cluster.slots[slot];
    if (!owners || owners.length === 0) return NO_NODE;
    if (replica && owners.length > 1) return owners[1 + (this.replicaTurn++ % (owners.length - 1))]!;
    return owners[0]!;
  }

  /** Nodes at `position` of the slot map's entries (0: masters) with the number of slots each serves. */
  private owners(position: number): Map<string, number> {
    const out = new Map<string, number>();
    for (let slot = 0; slot < 16384; slot++) {
      const node = this.cluster.slots[slot]?.[position];
      if (node) out.set(node, (out.get(node) ?? 0) + 1);
    }
    return out;
  }

  /**
   * After each refresh of the slot map: how many replicas each master has
   * (for `WAIT`), and a node no longer in the map (a failed-over master)
   * takes its circuit gauge with it.
   */
  private onRefresh(): void {
    const current = new Set<string>();
    this.replicas.clear();
    for (let slot = 0; slot < 16384; slot++) {
      const owners = this.cluster.slots[slot] ?? [];
      for (const node of owners) current.add(node);
      if (owners[0] !== undefined) this.replicas.set(owners[0], Math.max(this.replicas.get(owners[0]) ?? 0, owners.length - 1));
    }
    for (const name of this.guard.names) if (name !== NO_NODE && !current.has(name)) this.guard.retire(name);
  }

  /** A refresh of the slot map now, at most one per 100 ms: a failed node's successor is found by the next one. */
  private refreshSoon(): void {
    const now = Date.now();
    if (now - this.lastRefreshAt < 100) return;
    this.lastRefreshAt = now;
    this.cluster.refreshSlotsCache();
  }

  private noSlotMap(): StoreUnavailableError {
    return new StoreUnavailableError(this.kind, 'cluster', `no slot map yet: the cluster client is ${this.cluster.status}${this.lastErrors.size > 0 ? ` (last node error: ${[...this.lastErrors.values()].at(-1)})` : ''}`);
  }

  /** ioredis reports every failed reconnect; one line per 5 s is enough. */
  private logThrottled(fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if (now - this.lastLoggedAt < 5000) return;
    this.lastLoggedAt = now;
    log.warn({ store: this.kind, ...fields }, msg);
  }
}

/** The command `defineCommand` adds to the Cluster client for the compare-and-set script. */
interface CasCommand {
  featureCas(...args: (string | Buffer)[]): Promise<unknown>;
}

function seed(hostPort: string): { host: string; port: number } {
  const at = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
}

function nodeKeyOf(redis: Redis): string {
  return `${redis.options.host}:${redis.options.port}`;
}
