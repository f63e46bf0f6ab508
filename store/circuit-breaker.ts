/**
 * A circuit breaker for one shard: counts the outcomes of its calls over a
 * rolling window; when more than `errorPercent` of at least `minCalls` calls
 * failed, it opens and refuses calls at once (CircuitOpenError) instead of
 * letting each wait out its timeout. After `resetMs` open, one call is let
 * through as a probe (half-open): its success closes the circuit and clears
 * the window, its failure opens it again.
 *
 * Written here rather than taken from opossum, which this project used first:
 * opossum's per-call bookkeeping (events, a semaphore, several clock reads,
 * status buckets) measured ~9 µs of CPU per store call on the serving path
 * (same-run CPU profiles, `PROFILE_DIR` with `npm run bench`), about 7% of a
 * whole persisted request. This needs two counters and one clock read.
 */
export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  readonly errorPercent: number;
  readonly minCalls: number;
  readonly resetMs: number;
  /** The rolling window, in `buckets` slices (10 s in 10 by default). */
  readonly windowMs?: number;
  readonly buckets?: number;
  readonly now?: () => number;
  readonly onStateChange?: (state: CircuitState) => void;
}

/** A call refused because the circuit is open (or a probe is already out). */
export class CircuitOpenError extends Error {
  override name = 'CircuitOpenError';
  constructor() {
    super('circuit open');
  }
}

/** What `admit` answers. */
export type Ticket = 0 | 1 | 2;
export const refused: Ticket = 0;
const normalCall: Ticket = 1;
const probeCall: Ticket = 2;

export class CircuitBreaker {
  private current: CircuitState = 'closed';
  private openedAt = 0;
  private probing = false;
  private readonly successes: number[];
  private readonly failures: number[];
  private slot = 0;
  private slotStartedAt: number;
  private readonly slotMs: number;
  private readonly now: () => number;

  constructor(private readonly options: CircuitBreakerOptions) {
    const buckets = options.buckets ?? 10;
    this.successes = new Array<number>(buckets).fill(0);
    this.failures = new Array<number>(buckets).fill(0);
    this.slotMs = (options.windowMs ?? 10_000) / buckets;
    this.now = options.now ?? Date.now;
    this.slotStartedAt = this.now();
  }

  get state(): CircuitState {
    return this.current;
  }

  /** Runs `fn` unless the circuit refuses it, and counts how it ended. */
  fire<T>(fn: () => Promise<T>): Promise<T> {
    const ticket = this.admit();
    if (ticket === refused) return Promise.reject(new CircuitOpenError());
    const probe = ticket === probeCall;
    let call: Promise<T>;
    try {
      call = fn();
    } catch (error) {
      call = Promise.reject(error);
    }
    return call.then(
      (value) => {
        this.settled(true, probe);
        return value;
      },
      (error: unknown) => {
        this.settled(false, probe);
        throw error;
      },
    );
  }

  /**
   * `fire` in two halves, for a caller that already chains its own handlers on the call (the shard
   * guard) and so saves a promise per call: whether a call may go out now (`refused`, a normal
   * call, or the half-open probe); then `record` how an admitted call ended, exactly once.
   */
  admit(): Ticket {
    if (this.current === 'closed') return normalCall;
    if (this.current === 'open' && !this.probing && this.now() - this.openedAt >= this.options.resetMs) {
      this.probing = true;
      this.moveTo('half-open');
      return probeCall;
    }
    return refused;
  }

  record(ticket: Ticket, ok: boolean): void {
    if (ticket !== refused) this.settled(ok, ticket === probeCall);
  }

  private settled(ok: boolean, probe: boolean): void {
    const now = this.now();
    if (probe) {
      this.probing = false;
      if (ok) {
        this.successes.fill(0);
        this.failures.fill(0);
        this.moveTo('closed');
      } else {
        this.openedAt = now;
        this.moveTo('open');
      }
      return;
    }
    this.rotate(now);
    if (ok) {
      this.successes[this.slot]!++;
      return;
    }
    this.failures[this.slot]!++;
    if (this.current !== 'closed') return;
    let failed = 0;
    let calls = 0;
    for (let i = 0; i < this.failures.length; i++) {
      failed += this.failures[i]!;
      calls += this.failures[i]! + this.successes[i]!;
    }
    if (calls >= this.options.minCalls && (failed / calls) * 100 > this.options.errorPercent) {
      this.openedAt = now;
      this.moveTo('open');
    }
  }

  /** Moves to the window slice of `now`, clearing the slices it passes over. */
  private rotate(now: number): void {
    const elapsed = Math.floor((now - this.slotStartedAt) / this.slotMs);
    if (elapsed <= 0) return;
    for (let i = 0; i < Math.min(elapsed, this.failures.length); i++) {
      this.slot = (this.slot + 1) % this.failures.length;
      this.successes[this.slot] = 0;
      this.failures[this.slot] = 0;
    }
    this.slotStartedAt += elapsed * this.slotMs;
  }

  private moveTo(state: CircuitState): void {
    if (this.current === state) return;
    this.current = state;
    this.options.onStateChange?.(state);
  }
}
