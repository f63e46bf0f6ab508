import type { Client } from 'graphql-ws';
import type { KafkaLog } from '../eventlog/kafka-log.js';
import { NodeProcess } from '../test/support/gateway.js';
import type { KafkaBroker } from '../test/support/kafka-broker.js';
import type { RedisProcess } from '../test/support/redis-server.js';

/** One JSON line on stderr (stdout carries the report). */
export function log(msg: string, extra: Record<string, unknown> = {}): void {
  console.error(JSON.stringify({ time: new Date().toISOString(), msg, ...extra }));
}

/**
 * Everything a load script started, so that every way out (success, failure,
 * a signal, the time bound) stops all of it, once: hooks first (generators,
 * pools, temporary files), then clients, processes, Kafka clients, and last
 * the broker and Redis.
 */
export class Started {
  broker: KafkaBroker | undefined;
  redis: RedisProcess | undefined;
  readonly processes = new Set<NodeProcess>();
  readonly logs = new Set<KafkaLog>();
  readonly clients = new Set<Client>();
  private readonly hooks: (() => unknown)[] = [];
  private stopping: Promise<void> | undefined;

  /** Runs first on stop; its failure does not keep the rest from stopping. */
  onStop(hook: () => unknown): void {
    this.hooks.push(hook);
  }

  /** A process of this project (`dist/…`), logging at warn unless `env` says otherwise. */
  spawn(script: string, argv: string[], env: Record<string, string>): NodeProcess {
    const p = NodeProcess.spawn(script, argv, { LOG_LEVEL: 'warn', ...env });
    this.processes.add(p);
    return p;
  }

  stopAll(): Promise<void> {
    return (this.stopping ??= (async () => {
      for (const hook of this.hooks) await Promise.resolve().then(hook).catch(() => undefined);
      for (const c of this.clients) await Promise.resolve(c.dispose()).catch(() => undefined);
      await Promise.allSettled([...this.processes].map((p) => p.stop()));
      for (const l of this.logs) await l.close().catch(() => undefined);
      await Promise.allSettled([this.broker?.destroy(), this.redis?.destroy()]);
    })());
  }
}

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
  readonly started: Started;
}

export function runBounded(run: BoundedRun): void {
  let exiting = false;
  const exitAfterCleanup = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // A second bound on the clean-up itself; the broker harness SIGKILLs its JVM on exit anyway.
    setTimeout(() => process.exit(code), 20_000).unref();
    void run.started.stopAll().finally(() => process.exit(code));
  };
  process.on('SIGINT', () => {
    log('interrupted; stopping everything');
    exitAfterCleanup(130);
  });
  process.on('SIGTERM', () => exitAfterCleanup(143));
  setTimeout(() => {
    log(`${run.boundMessage}; stopping`);
    exitAfterCleanup(1);
  }, run.boundMs).unref();
  run.main().then(
    () => exitAfterCleanup(0),
    (error: Error) => {
      log(`${run.name} failed`, { err: error.message });
      exitAfterCleanup(1);
    },
  );
}
