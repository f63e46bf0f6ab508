import type { Deadline } from '../runtime/deadline.js';
import { log } from '../runtime/log.js';
import { deadlineExceeded, storeCircuitState, storeErrors, storeReadDuration, storeShortCircuited, type BoundHistogram } from '../runtime/metrics.js';
import { CircuitBreaker, refused, type CircuitState } from './circuit-breaker.js';
import { DeadlineExceededError, StoreUnavailableError, type ShardHealth } from './online-store.js';

/**
 * The per-shard guard every byte backend calls its engine through: one
 * implementation of the call timeout, the request deadline, the circuit
 * breaker, the per-shard metrics and the typed errors that name the shard
 * (`STORE_UNAVAILABLE`, `DEADLINE_EXCEEDED`). A backend decides what a shard
 * is (a Redis node, a cluster master, an Aerospike cluster) and asks the
 * guard for it by name; everything else here is the same for every engine.
 */

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

export interface ShardGuardOptions {
  /** The `store` label of metrics and the store named in errors, e.g. `redis-cluster`. */
  readonly store: string;
  /** STORE_TIMEOUT_MS: the longest one call to one shard may take. */
  readonly callTimeoutMs: number;
  readonly breaker?: BreakerOptions;
  /**
   * Who ends a call at `callTimeoutMs`. `client`: the engine's client does,
   * configured by the backend from this same value (ioredis' commandTimeout,
   * Aerospike's totalTimeout), so the guard adds no timer to the hot path.
   * `guard` (the default): the guard races each call against a timer, so a
   * new engine is bounded even before its client is tuned.
   */
  readonly timeoutBy?: 'client' | 'guard';
  /** Why a call failed, in words an operator can act on (the default: the error's message). */
  readonly describe?: (shard: string, error: unknown) => string;
}

/** The values of `feature_store_circuit_state`. */
const circuitStates = { closed: 0, 'half-open': 1, open: 2 } as const;

export class ShardGuard {
  private readonly shards = new Map<string, GuardedShard>();
  readonly breaker: BreakerOptions;

  constructor(readonly options: ShardGuardOptions) {
    this.breaker = options.breaker ?? defaultBreaker;
  }

  get store(): string {
    return this.options.store;
  }

  /** The guard of shard `name`, made on first use (cluster masters come and go with the topology). */
  shard(name: string): GuardedShard {
    let shard = this.shards.get(name);
    if (!shard) {
      shard = new GuardedShard(this, name);
      this.shards.set(name, shard);
    }
    return shard;
  }

  /** Shards known so far, in the order first used. */
  get names(): string[] {
    return [...this.shards.keys()];
  }

  /**
   * Forgets a shard that left the topology (a failed-over master): its
   * circuit gauge goes away with it instead of reporting "open" forever.
   */
  retire(name: string): void {
    if (!this.shards.delete(name)) return;
    storeCircuitState.remove({ store: this.store, shard: name });
  }
}

/** One shard's breaker, metrics and errors. */
export class GuardedShard {
  private readonly breaker: CircuitBreaker;
  private readonly labels: { store: string; shard: string };
  /** `feature_store_read_duration_seconds` of this shard, bound once (runtime/metrics.ts). */
  private readonly readDuration: BoundHistogram;

  constructor(private readonly guard: ShardGuard, readonly name: string) {
    this.labels = { store: guard.store, shard: name };
    this.readDuration = storeReadDuration.bind(this.labels);
    const labels = this.labels;
    const options = guard.breaker;
    storeCircuitState.set(labels, circuitStates.closed);
    // The breaker has no timer of its own: a call ends by its timeout (client's or guard's), so it
    // always learns how the call ended.
    this.breaker = new CircuitBreaker({
      ...options,
      onStateChange: (state) => {
        storeCircuitState.set(labels, circuitStates[state]);
        if (state === 'open') log.warn({ ...labels, resetMs: options.resetMs }, 'shard circuit open: its calls fail at once until a probe succeeds');
        else if (state === 'closed') log.info(labels, 'shard circuit closed: the probe call succeeded');
      },
    });
  }

  get circuit(): CircuitState {
    return this.breaker.state;
  }

  /**
   * One call to this shard: refused at once when the request's deadline has
   * passed or the circuit is open; otherwise run through the breaker, bounded
   * by the call timeout. With a deadline the caller stops waiting when it
   * passes (DeadlineExceededError), but the call runs on to its own end, so
   * the breaker counts the shard's real outcome rather than the request's
   * lack of time (decision 0016). `read: true` records the call's duration in
   * `feature_store_read_duration_seconds`. Any failure becomes a
   * StoreUnavailableError naming the shard.
   */
  call<T>(fn: () => Promise<T>, options: { readonly deadline?: Deadline | undefined; readonly read?: boolean } = {}): Promise<T> {
    const { deadline } = options;
    if (deadline?.expired) return Promise.reject(this.deadlineExceeded(deadline));
    // The breaker's two halves around one chain of our own (rather than `fire` and a second `then`).
    const ticket = this.breaker.admit();
    if (ticket === refused) {
      storeShortCircuited.inc(this.labels);
      return Promise.reject(new StoreUnavailableError(this.guard.store, this.name, `circuit open after repeated failures; probed again within ${this.guard.breaker.resetMs} ms`));
    }
    const read = options.read === true;
    const started = read ? performance.now() : 0;
    const timeoutMs = this.guard.options.callTimeoutMs;
    let call: Promise<T>;
    try {
      call = this.guard.options.timeoutBy === 'client' ? fn() : withTimeout(fn, timeoutMs);
    } catch (error) {
      call = Promise.reject(error);
    }
    const attempt = call.then(
      (value) => {
        this.breaker.record(ticket, true);
        if (read) this.readDuration.observe((performance.now() - started) / 1000);
        return value;
      },
      (error: unknown) => {
        this.breaker.record(ticket, false);
        throw this.unavailable(error);
      },
    );
    // A call ends by its own timeout: a deadline further away than that can never fire, so the timer
    // and race it would cost on every call are skipped (the common case on the hot path).
    if (!deadline || deadline.remainingMs > timeoutMs) return attempt;
    // Past the deadline nobody awaits `attempt`; its failure is already counted (breaker, storeErrors).
    attempt.catch(() => undefined);
    return deadline.race(attempt, () => this.deadlineExceeded(deadline));
  }

  /** The error for a failed call, counted in `feature_store_errors_total`; a StoreUnavailableError passes as it is. */
  unavailable(error: unknown): StoreUnavailableError {
    storeErrors.inc(this.labels);
    return error instanceof StoreUnavailableError ? error : new StoreUnavailableError(this.guard.store, this.name, this.describe(error));
  }

  deadlineExceeded(deadline: Deadline): DeadlineExceededError {
    deadlineExceeded.inc(this.labels);
    return new DeadlineExceededError(this.guard.store, this.name, deadline.budgetMs);
  }

  /**
   * For /readyz: `probe` (a ping past the breaker: readiness asks the shard
   * itself, open circuit or not), bounded by the call timeout, and the state
   * of the circuit.
   */
  async health(probe: () => Promise<unknown>, reachableDetail = 'reachable'): Promise<ShardHealth> {
    const circuit = `circuit ${this.breaker.state}`;
    try {
      await withTimeout(probe, this.guard.options.callTimeoutMs);
      return { shard: this.name, reachable: true, detail: `${reachableDetail}, ${circuit}` };
    } catch (error) {
      return { shard: this.name, reachable: false, detail: `unavailable: ${this.describe(error)}, ${circuit}` };
    }
  }

  /** The reason an operator reads for `error`, without counting it as a failed call. */
  describe(error: unknown): string {
    if (error instanceof StoreUnavailableError) return error.reason;
    const describe = this.guard.options.describe;
    return describe ? describe(this.name, error) : error instanceof Error ? error.message : String(error);
  }
}

/** `fn()`, or a rejection once `ms` have passed; the timer is cleared either way. */
function withTimeout<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  let call: Promise<T>;
  try {
    call = fn();
  } catch (error) {
    call = Promise.reject(error);
  }
  return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
}
