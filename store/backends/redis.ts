import { Redis, type ChainableCommander } from 'ioredis';
import type { Deadline } from '../../runtime/deadline.js';
import { redactUrl, type ClientTls } from '../../runtime/config.js';
import { log } from '../../runtime/log.js';
import { deadlineExceeded, storeCircuitState, storeErrors, storeReadDuration, storeShortCircuited } from '../../runtime/metrics.js';
import { DeadlineExceededError, StoreUnavailableError, type ReadOptions, type ShardHealth } from '../online-store.js';
import type { ByteBackend, ByteEntry, CasEntry, ShardError } from './byte-backend.js';
import { CircuitBreaker, CircuitOpenError } from './circuit-breaker.js';
import { HashRing } from './hash-ring.js';

export interface RedisBackendOptions {
  /** One URL: a single node. Several: client-side sharding over them. */
  readonly urls: readonly string[];
  /** Upper bound on one command; a hung shard fails the call after this. */
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs?: number;
  readonly breaker?: BreakerOptions;
  /** ACL user; with a password only, AUTH <password> (requirepass). A password in a URL wins for that URL. */
  readonly username?: string;
  readonly password?: string;
  /** For rediss:// URLs (ioredis does not turn TLS on by the scheme): CA, client certificate, key. */
  readonly tls?: ClientTls;
}

/** When a shard's circuit opens and how soon it is probed again (STORE_BREAKER_* in README "Configuration"). */
export interface BreakerOptions {
  /** Open when more than this percentage of the calls in the rolling window failed… */
  readonly errorPercent: number;
  /** …and the window holds at least this many calls. */
  readonly minCalls: number;
  /** After this long open, one call is let through as a probe (half-open); its success closes the circuit. */
  readonly resetMs: number;
}

/** The defaults of STORE_BREAKER_ERROR_PERCENT, STORE_BREAKER_MIN_CALLS and STORE_BREAKER_RESET_MS. */
export const defaultBreaker: BreakerOptions = { errorPercent: 50, minCalls: 10, resetMs: 2000 };

/** One shard: one ioredis client, its circuit breaker, and the label metrics and errors use. */
interface Shard {
  readonly name: string;
  readonly client: Redis;
  /** Fires the call it is given; counts its failures (see `call`). */
  readonly breaker: CircuitBreaker;
  /** Why the shard last failed to connect (e.g. WRONGPASS, a TLS error), until it is ready again. */
  connectionError?: string;
}

/** The values of `feature_store_circuit_state`. */
const circuitStates = { closed: 0, halfOpen: 1, open: 2 } as const;

/**
 * Redis, on one node or sharded over N nodes by a consistent-hash ring.
 * Every batch becomes one MGET (reads) or one pipeline (writes) per shard,
 * the shards called in parallel.
 *
 * Failure behaviour is chosen for serving: the offline queue is off, so a
 * call to a disconnected shard fails at once instead of waiting for a
 * reconnect, and `commandTimeoutMs` bounds a shard that accepts but hangs.
 * ioredis keeps reconnecting in the background, so serving recovers by
 * itself when the node comes back.
 *
 * A read answers per key: a failing shard fails only the keys it holds
 * (`getMany` never rejects for a shard). Each shard has a circuit breaker
 * (./circuit-breaker.ts): after repeated failures or timeouts its calls fail at once
 * instead of each waiting out the timeout, and after `breaker.resetMs` one
 * real call probes it; its success closes the circuit. A request's deadline
 * bounds how long the request waits for a shard, not the call itself, so the
 * breaker still learns how the call ended (decision 0016).
 */
export class RedisBackend implements ByteBackend {
  readonly kind: string;
  private readonly shards: Shard[];
  private readonly ring: HashRing<number>;
  private readonly resetMs: number;
  private readonly commandTimeoutMs: number;

  constructor(options: RedisBackendOptions) {
    this.commandTimeoutMs = options.commandTimeoutMs;
    const breaker = options.breaker ?? defaultBreaker;
    this.resetMs = breaker.resetMs;
    if (options.urls.length === 0) throw new Error('RedisBackend needs at least one URL');
    this.kind = options.urls.length === 1 ? 'redis' : 'sharded-redis';
    this.shards = options.urls.map((url) => {
      const name = shardName(url);
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
      let lastLogged = 0;
      const shard: Shard = { name, client, breaker: this.breaker(name, breaker) };
      client.on('error', (error: Error) => {
        shard.connectionError = error.message;
        // ioredis emits an error on every failed reconnect attempt; one line per 5 s per shard is enough.
        const now = Date.now();
        if (now - lastLogged > 5000) {
          lastLogged = now;
          log.warn({ store: this.kind, shard: name, err: error.message }, 'redis shard error');
        }
      });
      client.on('ready', () => {
        delete shard.connectionError;
        log.info({ store: this.kind, shard: name }, 'redis shard ready');
      });
      client.defineCommand('featureCas', { numberOfKeys: 2, lua: casScript });
      return shard;
    });
    this.ring = new HashRing(this.shards.map((s, i) => ({ id: s.name, value: i })));
  }

  /**
   * The shard's breaker (./circuit-breaker.ts). It has no timer of its own:
   * ioredis' commandTimeout bounds every call. State changes go to
   * `feature_store_circuit_state` and the log; short-circuited calls are
   * counted in `call`.
   */
  private breaker(name: string, options: BreakerOptions): Shard['breaker'] {
    const labels = { store: this.kind, shard: name };
    storeCircuitState.set(labels, circuitStates.closed);
    return new CircuitBreaker({
      errorPercent: options.errorPercent,
      minCalls: options.minCalls,
      resetMs: options.resetMs,
      onStateChange: (state) => {
        if (state === 'open') {
          storeCircuitState.set(labels, circuitStates.open);
          log.warn({ ...labels, resetMs: options.resetMs }, 'shard circuit open: its calls fail at once until a probe succeeds');
        } else if (state === 'half-open') {
          storeCircuitState.set(labels, circuitStates.halfOpen);
        } else {
          storeCircuitState.set(labels, circuitStates.closed);
          log.info(labels, 'shard circuit closed: the probe call succeeded');
        }
      },
    });
  }

  get shardNames(): string[] {
    return this.shards.map((s) => s.name);
  }

  /** Which shard holds `key` (for tests and diagnostics). */
  shardOf(key: string): string {
    return this.shards[this.ring.nodeFor(routingKey(key))]!.name;
  }

  async getMany(keys: readonly string[], options: ReadOptions = {}): Promise<(Buffer | null | ShardError)[]> {
    const out: (Buffer | null | ShardError)[] = new Array(keys.length);
    if (keys.length === 0) return out;
    await Promise.all(
      this.groupByShard(keys).map(async (group, shardIndex) => {
        if (group.length === 0) return;
        const shard = this.shards[shardIndex]!;
        let values: (Buffer | null)[] | ShardError;
        try {
          values = await this.mget(shard, group.map((i) => keys[i]!), options.deadline);
        } catch (error) {
          if (!(error instanceof StoreUnavailableError || error instanceof DeadlineExceededError)) throw error;
          values = error;
        }
        group.forEach((keyIndex, j) => (out[keyIndex] = values instanceof Error ? values : (values[j] ?? null)));
      }),
    );
    return out;
  }

  async setMany(entries: readonly ByteEntry[]): Promise<void> {
    await this.pipelined(entries.map((e) => e.key), (pipeline, i) => {
      const entry = entries[i]!;
      pipeline.set(entry.key, entry.value, 'PXAT', entry.expireAtMs);
    });
  }

  async compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]> {
    const replies = await this.pipelined(entries.map((e) => e.stateKey), (pipeline, i) => {
      const e = entries[i]!;
      // EVALSHA of the script ioredis defined on every client (it loads it on first use).
      (pipeline as unknown as CasPipeline).featureCas(e.stateKey, e.valueKey, String(e.expectedVersion), e.state, String(e.stateExpireAtMs), e.value ?? '', String(e.valueExpireAtMs));
    });
    return replies.map((reply) => reply === 1);
  }

  /**
   * One pipeline per shard for the commands that `add` queues, one per key
   * (routed like the key), sent to the shards in parallel; the replies in the
   * order of `keys`. Any failed reply fails the call, naming its shard.
   */
  private async pipelined(keys: readonly string[], add: (pipeline: ChainableCommander, index: number) => void): Promise<unknown[]> {
    const out: unknown[] = new Array(keys.length);
    if (keys.length === 0) return out;
    await Promise.all(
      this.groupByShard(keys).map(async (group, shardIndex) => {
        if (group.length === 0) return;
        const shard = this.shards[shardIndex]!;
        const pipeline = shard.client.pipeline();
        for (const i of group) add(pipeline, i);
        const results = await this.call(shard, () => pipeline.exec());
        group.forEach((keyIndex, j) => {
          const [error, reply] = results?.[j] ?? [new Error('no reply')];
          if (error) throw this.unavailable(shard, error);
          out[keyIndex] = reply;
        });
      }),
    );
    return out;
  }

  /** Past the circuit breaker: readiness asks each shard itself, open circuit or not. */
  async ping(): Promise<void> {
    await Promise.all(this.shards.map((shard) => shard.client.ping().catch((error: unknown) => {
      throw this.unavailable(shard, error);
    })));
  }

  async health(): Promise<ShardHealth[]> {
    return Promise.all(this.shards.map(async (shard): Promise<ShardHealth> => {
      const circuit = (): string => `circuit ${shard.breaker.state}`;
      try {
        await shard.client.ping();
        return { shard: shard.name, reachable: true, detail: `reachable, ${circuit()}` };
      } catch (error) {
        return { shard: shard.name, reachable: false, detail: `unavailable: ${this.unavailable(shard, error).reason}, ${circuit()}` };
      }
    }));
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => {
      return s.client.quit().catch(() => s.client.disconnect());
    }));
  }

  private async mget(shard: Shard, keys: readonly string[], deadline?: Deadline): Promise<(Buffer | null)[]> {
    const started = performance.now();
    const values = await this.call(shard, () => shard.client.mgetBuffer(...keys), deadline);
    storeReadDuration.observe({ store: this.kind, shard: shard.name }, (performance.now() - started) / 1000);
    return values;
  }

  /**
   * One call to one shard through its circuit breaker. With a deadline the
   * caller stops waiting when it passes (DeadlineExceededError); the call
   * itself runs on to its own end (at most commandTimeoutMs), so the breaker
   * counts the shard's real outcome rather than the request's lack of time.
   */
  private async call<T>(shard: Shard, fn: () => Promise<T>, deadline?: Deadline): Promise<T> {
    if (deadline?.expired) throw this.deadlineExceeded(shard, deadline);
    const attempt = shard.breaker.fire(fn).catch((error: unknown) => {
      if (error instanceof CircuitOpenError) {
        storeShortCircuited.inc({ store: this.kind, shard: shard.name });
        throw new StoreUnavailableError(this.kind, shard.name, `circuit open after repeated failures; probed again within ${this.resetMs} ms`);
      }
      throw this.unavailable(shard, error);
    });
    // A call ends by its own commandTimeout: a deadline further away than that can never fire, so
    // the timer and race it would cost on every call are skipped (the common case on the hot path).
    if (!deadline || deadline.remainingMs > this.commandTimeoutMs) return attempt;
    // Past the deadline nobody awaits `attempt`; its failure is already counted (breaker, storeErrors).
    attempt.catch(() => undefined);
    return deadline.race(attempt, () => this.deadlineExceeded(shard, deadline));
  }

  private deadlineExceeded(shard: Shard, deadline: Deadline): DeadlineExceededError {
    deadlineExceeded.inc({ store: this.kind, shard: shard.name });
    return new DeadlineExceededError(this.kind, shard.name, deadline.budgetMs);
  }

  private unavailable(shard: Shard, error: unknown): StoreUnavailableError {
    storeErrors.inc({ store: this.kind, shard: shard.name });
    let reason = error instanceof Error ? error.message : String(error);
    // ioredis says only "Stream isn't writeable" while it cannot connect; the cause (bad credentials,
    // a TLS failure) is what an operator needs in the error and in /readyz.
    if (shard.client.status !== 'ready' && shard.connectionError) reason += ` (last connection error: ${shard.connectionError})`;
    return new StoreUnavailableError(this.kind, shard.name, reason);
  }

  /**
   * Indexes of `keys` per shard; one array per shard, empty where it holds none.
   * A key is routed by what follows its first ':' so that a value
   * (`fv:view:v1:id`) and its materializer state (`fvs:view:v1:id`) share a shard.
   */
  private groupByShard(keys: readonly string[]): number[][] {
    const groups: number[][] = this.shards.map(() => []);
    if (this.shards.length === 1) {
      groups[0] = keys.map((_, i) => i);
      return groups;
    }
    keys.forEach((key, i) => groups[this.ring.nodeFor(routingKey(key))]!.push(i));
    return groups;
  }
}

/** The pipeline method `defineCommand` adds for the compare-and-set script. */
interface CasPipeline {
  featureCas(...args: string[] | (string | Buffer)[]): unknown;
}

function routingKey(key: string): string {
  return key.slice(key.indexOf(':') + 1);
}

/**
 * Compare-and-set of a materialized value and its state, atomic on the
 * server. KEYS: state, value. ARGV: expected version, new state, state expiry
 * (ms), new value ('' = keep), value expiry (ms). The version is the state's
 * first line.
 */
const casScript = `
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = tonumber(string.match(current, '^(%d+)')) or 0 end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PXAT', ARGV[5]) end
return 1`;

/** Credentials and TLS for one shard's URL: the shared ones, unless the URL carries its own. */
function connectionSecurity(url: string, options: RedisBackendOptions): { username?: string; password?: string; tls?: ClientTls } {
  const parsed = new URL(url);
  const out: { username?: string; password?: string; tls?: ClientTls } = {};
  if (!parsed.password) {
    if (options.username !== undefined) out.username = options.username;
    if (options.password !== undefined) out.password = options.password;
  }
  if (parsed.protocol === 'rediss:') out.tls = { ...options.tls };
  return out;
}

function shardName(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '6379'}`;
  } catch {
    throw new Error(`not a Redis URL: ${JSON.stringify(redactUrl(url))} (expected redis://host:port)`);
  }
}
