/**
 * The time a request may take, from the moment it arrived. It travels in the
 * GraphQL request context under `deadlineKey`, so every store call of the
 * request (the compiled fast path's and the DataLoaders' alike) waits at most
 * until it, whatever the per-call STORE_TIMEOUT_MS allows.
 */
export const deadlineKey = Symbol('requestDeadline');

export class Deadline {
  /** On the monotonic clock (`performance.now()`): wall-clock steps cannot move it. */
  private constructor(
    private readonly atMs: number,
    /** The budget the request started with (REQUEST_DEADLINE_MS), for error messages. */
    readonly budgetMs: number,
  ) {}

  static after(budgetMs: number): Deadline {
    return new Deadline(performance.now() + budgetMs, budgetMs);
  }

  get remainingMs(): number {
    return this.atMs - performance.now();
  }

  get expired(): boolean {
    return this.remainingMs <= 0;
  }

  /**
   * `promise`, or a rejection with `onExpire()` once the deadline passes,
   * whichever comes first. The promise itself is not cancelled: whoever
   * started it still sees (and records) its outcome.
   */
  race<T>(promise: Promise<T>, onExpire: () => Error): Promise<T> {
    const remaining = this.remainingMs;
    if (remaining <= 0) return Promise.reject(onExpire());
    let timer: NodeJS.Timeout | undefined;
    const expiry = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(onExpire()), remaining);
    });
    return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
  }
}

/** The deadline a request context carries, if any. */
export function deadlineOf(context: unknown): Deadline | undefined {
  if (typeof context !== 'object' || context === null) return undefined;
  const value = (context as { [deadlineKey]?: unknown })[deadlineKey];
  return value instanceof Deadline ? value : undefined;
}
