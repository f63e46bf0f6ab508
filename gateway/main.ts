import cluster from 'node:cluster';
import { loadConfig } from '../runtime/config.js';
import { ConfigError } from '../runtime/errors.js';
import { log } from '../runtime/log.js';
import { runUntilSignal } from '../runtime/process.js';
import { loadRegistry } from '../schema/registry.js';
import { openStore, type OpenedStore } from '../store/bootstrap.js';
import type { EventLog } from '../eventlog/event-log.js';
import { EmbeddedLog } from '../eventlog/embedded-log.js';
import { KafkaLog } from '../eventlog/kafka-log.js';
import { startDemoEvents } from '../materializer/demo-events.js';
import { startMaterializer, type RunningMaterializer } from '../materializer/run.js';
import { startGateway } from './server.js';
import { sharedStoreVariables } from '../store/config.js';

/**
 * `npm start`: the gateway. Without SUBGRAPH_URLS the subgraphs run in this
 * process on the configured store (embedded and seeded with demo data by
 * default); with SUBGRAPH_URLS it plans over the subgraph processes.
 *
 * WORKERS=N (N > 1) runs N identical gateway processes sharing the port
 * through node:cluster; the gateway is stateless, so this is plain
 * replication. It needs a shared store: the embedded one lives inside one
 * process.
 */
const config = loadConfig();
if (config.workers > 1 && cluster.isPrimary) {
  if (config.store.kind === 'embedded' && Object.keys(config.subgraphUrls).length === 0) {
    throw new ConfigError('WORKERS', `several workers need a shared store: set ${sharedStoreVariables} (the embedded store lives in one process)`);
  }
  await runUntilSignal(async () => {
    const workers = Array.from({ length: config.workers }, () => cluster.fork());
    let stopping = false;
    cluster.on('exit', (worker, code, signal) => {
      if (stopping) return;
      // A worker that dies is replaced; the others keep serving meanwhile.
      log.error({ worker: worker.process.pid, code, signal }, 'gateway worker exited; starting a new one');
      cluster.fork();
    });
    log.info({ workers: workers.length, port: config.port }, 'gateway primary started its workers');
    return {
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      stop: async () => {
        stopping = true;
        // Each worker drains on its own (same SHUTDOWN_TIMEOUT_MS); a worker that failed to drain fails the primary's exit too.
        const codes = await Promise.all(Object.values(cluster.workers ?? {}).map((w) => new Promise<number | null>((resolve) => {
          if (!w || w.isDead()) return resolve(0);
          w.once('exit', (code) => resolve(code));
          w.process.kill('SIGTERM');
        })));
        const failed = codes.filter((c) => c !== 0).length;
        if (failed > 0) throw new Error(`${failed} of ${codes.length} gateway workers did not shut down cleanly`);
      },
    };
  });
} else {
  await runUntilSignal(async () => {
    const registry = loadRegistry(config.registryFile);
    const distributed = Object.keys(config.subgraphUrls).length > 0;
    // The change feed for subscriptions: Kafka's feature-updates topic when KAFKA_BROKERS is set (a
    // separate `npm run materializer` writes it); otherwise, co-located on the embedded store, an
    // embedded log with the materializer and a demo event stream in this very process.
    const embeddedPipeline = !config.kafkaBrokers && !distributed && config.store.kind === 'embedded';
    const opened: OpenedStore | undefined = distributed ? undefined : await openStore(config, registry, { materializerInProcess: embeddedPipeline });
    const eventLog: EventLog | undefined = config.kafkaBrokers
      ? new KafkaLog({
        brokers: config.kafkaBrokers, clientId: `gateway-${process.pid}`, role: 'gateway', security: config.kafkaSecurity,
        connectionTimeoutMs: config.kafkaConnectionTimeoutMs, retryMaxMs: config.kafkaRetryMaxMs,
      })
      : embeddedPipeline ? new EmbeddedLog() : undefined;
    let materializer: RunningMaterializer | undefined;
    let demoEvents: ReturnType<typeof startDemoEvents> | undefined;
    if (embeddedPipeline && eventLog && opened) {
      materializer = await startMaterializer({ registry, store: opened.store, log: eventLog, groupId: config.materializerGroup, instanceId: String(process.pid) });
      if (config.demoEventsPerSecond > 0) {
        demoEvents = startDemoEvents(eventLog, registry, config.demoEventsPerSecond, { burst: config.demoSeed ? 20_000 : 0 });
        await demoEvents.started;
      }
    }
    const gateway = await startGateway({ config, registry, store: opened?.store, eventLog });
    log.info(
      {
        url: gateway.url, shape: distributed ? 'distributed' : 'co-located', store: opened?.store.kind ?? 'in subgraphs', safelist: config.safelist,
        subscriptions: eventLog ? `${eventLog.kind} change feed` : 'off (set KAFKA_BROKERS)', materializer: materializer ? 'in-process (embedded log)' : 'none in this process',
      },
      'feature gateway listening',
    );
    if (cluster.isPrimary && (process.stdout.isTTY || process.env.npm_lifecycle_event === 'start')) {
      console.error(`\n  Feature gateway ready at ${gateway.url}  (open it in a browser for Apollo Sandbox)\n`);
    }
    return {
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      stop: async () => {
        demoEvents?.stop();
        // Readiness 503, stop listening, drain in-flight requests and subscriptions (gateway/server.ts), then the rest.
        await gateway.close();
        await materializer?.stop();
        await eventLog?.close();
        await opened?.close();
      },
    };
  });
}
