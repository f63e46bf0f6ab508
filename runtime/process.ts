import { log } from './log.js';

/**
 * Runs a process's `start` and keeps it up until SIGINT or SIGTERM, then
 * calls the returned stop function and exits 0 (1 if start or stop fail,
 * with the error logged as one JSON line).
 */
export async function runUntilSignal(start: () => Promise<() => Promise<void>>): Promise<void> {
  let stop: () => Promise<void>;
  try {
    stop = await start();
  } catch (error) {
    log.fatal({ err: (error as Error).message, kind: (error as Error).name }, 'failed to start');
    process.exit(1);
  }
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error('shutdown took over 10 s; exiting');
      process.exit(1);
    }, 10_000);
    force.unref();
    stop().then(
      () => process.exit(0),
      (error: Error) => {
        log.error({ err: error.message }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}
