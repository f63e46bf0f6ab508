import { log } from './log.js';

/** A started process: how to stop it, and how long stopping may take (SHUTDOWN_TIMEOUT_MS). */
export interface Running {
  stop(): Promise<void>;
  readonly shutdownTimeoutMs: number;
}

/**
 * Runs a process's `start` and keeps it up until SIGINT or SIGTERM, then
 * calls its `stop` (which drains: see README, "Shutdown") and exits 0; 1 if
 * start or stop fail, with the error logged as one JSON line, or if stop
 * takes longer than `shutdownTimeoutMs`: a supervisor's patience ends too
 * (Kubernetes' grace period), and an exit we log beats a SIGKILL we don't.
 */
export async function runUntilSignal(start: () => Promise<Running>): Promise<void> {
  let running: Running;
  try {
    running = await start();
  } catch (error) {
    log.fatal({ err: (error as Error).message, kind: (error as Error).name }, 'failed to start');
    process.exit(1);
  }
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return void log.info({ signal }, 'already shutting down');
    stopping = true;
    const started = Date.now();
    log.info({ signal, timeoutMs: running.shutdownTimeoutMs }, 'shutting down');
    const force = setTimeout(() => {
      log.error({ timeoutMs: running.shutdownTimeoutMs }, `shutdown took over ${running.shutdownTimeoutMs} ms (SHUTDOWN_TIMEOUT_MS); exiting with what is still draining`);
      process.exit(1);
    }, running.shutdownTimeoutMs);
    force.unref();
    running.stop().then(
      () => {
        log.info({ tookMs: Date.now() - started }, 'shut down');
        process.exit(0);
      },
      (error: Error) => {
        log.error({ err: error.message, kind: error.name }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}
