/**
 * How a long-running load script ends: `main` runs under a hard time bound;
 * on success, failure, SIGINT, SIGTERM or the bound, everything the script
 * started is stopped (`stopAll`, itself bounded to 20 s) before the process
 * exits with 0, 1, 130 or 143.
 */
export interface BoundedRun {
  readonly name: string;
  readonly boundMs: number;
  /** Logged when the bound passes, e.g. "benchmark exceeded its 5-minute bound". */
  readonly boundMessage: string;
  main(): Promise<void>;
  stopAll(): Promise<void>;
  log(msg: string, extra?: Record<string, unknown>): void;
}

export function runBounded(run: BoundedRun): void {
  let exiting = false;
  const exitAfterCleanup = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // A second bound on the clean-up itself; the broker harness SIGKILLs its JVM on exit anyway.
    setTimeout(() => process.exit(code), 20_000).unref();
    void run.stopAll().finally(() => process.exit(code));
  };
  process.on('SIGINT', () => {
    run.log('interrupted; stopping everything');
    exitAfterCleanup(130);
  });
  process.on('SIGTERM', () => exitAfterCleanup(143));
  setTimeout(() => {
    run.log(`${run.boundMessage}; stopping`);
    exitAfterCleanup(1);
  }, run.boundMs).unref();
  run.main().then(
    () => exitAfterCleanup(0),
    (error: Error) => {
      run.log(`${run.name} failed`, { err: error.message });
      exitAfterCleanup(1);
    },
  );
}
