import http from 'node:http';
import { parseArgs } from 'node:util';
import { loadConfig } from '../runtime/config.js';
import { ConfigError } from '../runtime/errors.js';
import { log } from '../runtime/log.js';
import { metricsRegistry } from '../runtime/metrics.js';
import { runUntilSignal } from '../runtime/process.js';
import { loadRegistry } from '../schema/registry.js';
import { createStore, storeUnreachable } from '../store/create-store.js';
import { sharedStoreVariables } from '../store/config.js';
import { KafkaLog } from '../eventlog/kafka-log.js';
import { backfillGroup, backfillTarget, caughtUp } from './backfill.js';
import { startMaterializer } from './run.js';

/**
 * `npm run materializer [-- --port 9464]`: consumes the registry's raw event
 * topics from Kafka (KAFKA_BROKERS) into the configured Redis store, exactly
 * once. Start several in the same MATERIALIZER_GROUP to share partitions.
 * `--port` serves /metrics and /healthz.
 *
 * `npm run materializer -- --backfill clickStats:3`: builds version 3 of
 * clickStats (newer than the active one) from the earliest offset in a group
 * of its own, logs "backfill caught up" when it has, and keeps following the
 * topic until stopped (materializer/backfill.ts has the switch-over).
 */
const { values } = parseArgs({ options: { port: { type: 'string' }, backfill: { type: 'string' } } });
await runUntilSignal(async () => {
  const config = loadConfig();
  if (!config.kafkaBrokers) throw new ConfigError('KAFKA_BROKERS', 'the materializer process reads Kafka: set KAFKA_BROKERS=host:port (npm start runs an embedded log in-process instead)');
  if (config.store.kind === 'embedded') throw new ConfigError('REDIS_URL', `the materializer process needs a shared store: set ${sharedStoreVariables}`);
  const registry = loadRegistry(config.registryFile);
  const store = createStore(config.store);
  const unreachable = await storeUnreachable(store, 10_000);
  if (unreachable) log.warn({ store: store.kind, err: unreachable.message }, 'store not reachable yet; batches fail and are retried until it is');
  const target = values.backfill ? backfillTarget(registry, values.backfill) : undefined;
  const groupId = target ? backfillGroup(config.materializerGroup, target) : config.materializerGroup;
  const eventLog = new KafkaLog({
    brokers: config.kafkaBrokers, clientId: `materializer-${process.pid}`, role: 'materializer', security: config.kafkaSecurity,
    connectionTimeoutMs: config.kafkaConnectionTimeoutMs, retryMaxMs: config.kafkaRetryMaxMs,
  });
  const running = await startMaterializer({
    registry, store, log: eventLog, groupId, instanceId: String(process.pid),
    ...(target ? { materializer: { only: (v) => v === target } } : {}),
    // Exit so the supervisor (systemd, Kubernetes, the test) restarts us; the group hands our partitions on meanwhile.
    onFatal: () => process.exit(1),
  });
  log.info({ topics: running.materializer.topics, group: groupId, brokers: config.kafkaBrokers, backfill: values.backfill ?? null }, 'materializer running');
  let watch: NodeJS.Timeout | undefined;
  if (target) {
    const brokers = config.kafkaBrokers;
    watch = setInterval(() => {
      caughtUp(brokers, groupId, running.materializer.topics, config.kafkaSecurity).then(({ caughtUp: done, lag }) => {
        if (!done) return void log.info({ backfill: values.backfill, lag }, 'backfill in progress');
        clearInterval(watch);
        log.info({ backfill: values.backfill, group: groupId },
          `backfill caught up: set activeVersion: ${target.version} for ${target.viewName} in the registry, restart the live materializers and gateways, then stop this process`);
      }).catch((error: Error) => log.warn({ err: error.message }, 'backfill progress check failed'));
    }, 2000);
  }

  let server: http.Server | undefined;
  if (values.port) {
    server = http.createServer((req, res) => {
      if (req.url === '/metrics') {
        metricsRegistry.metrics().then((body) => res.writeHead(200, { 'content-type': metricsRegistry.contentType }).end(body));
      } else if (req.url === '/healthz') res.writeHead(200).end('{"status":"ok"}');
      else res.writeHead(404).end();
    });
    server.listen(Number(values.port), config.host);
  }
  return {
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    stop: async () => {
      if (watch) clearInterval(watch);
      server?.close();
      // The batch in hand is handled and committed (or aborted, then redelivered to whoever takes the partition);
      // no new batch starts. Then the group hands our partitions on.
      await running.stop();
      log.info({ group: groupId }, 'materializer stopped: current batch committed, group left');
      await eventLog.close();
      await store.close();
    },
  };
});
