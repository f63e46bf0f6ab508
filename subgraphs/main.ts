import { parseArgs } from 'node:util';
import { changeTopic, changeTopicPartitions } from '../eventlog/change-event.js';
import { KafkaLog } from '../eventlog/kafka-log.js';
import { loadConfig } from '../runtime/config.js';
import { log } from '../runtime/log.js';
import { runUntilSignal } from '../runtime/process.js';
import { loadRegistry } from '../schema/registry.js';
import { openStore } from '../store/bootstrap.js';
import { startSubgraph } from './server.js';

/**
 * `npm run subgraph -- --entity user [--port 4001]`: one entity subgraph in
 * its own process (the distributed shape). Store settings as for the gateway.
 */
const { values } = parseArgs({ options: { entity: { type: 'string' }, port: { type: 'string' } } });
if (!values.entity) {
  console.error('usage: npm run subgraph -- --entity <user|item|merchant|…> [--port N]');
  process.exit(2);
}
await runUntilSignal(async () => {
  const config = loadConfig({ ...process.env, ...(values.port ? { PORT: values.port } : {}) });
  const registry = loadRegistry(config.registryFile);
  const opened = await openStore(config, registry);
  // Push mutations announce their writes on feature-updates, where every gateway's subscriptions read.
  // Without Kafka there is no feed a separate gateway process could read, so none is produced.
  const changes = config.kafkaBrokers ? new KafkaLog({
    brokers: config.kafkaBrokers, clientId: `subgraph-${values.entity}-${process.pid}`, role: 'subgraph', security: config.kafkaSecurity,
    connectionTimeoutMs: config.kafkaConnectionTimeoutMs, retryMaxMs: config.kafkaRetryMaxMs,
  }) : undefined;
  try {
    await changes?.createTopics([{ topic: changeTopic, partitions: changeTopicPartitions }]);
  } catch (error) {
    await changes?.close();
    await opened.close();
    throw error;
  }
  const subgraph = await startSubgraph(config, registry, values.entity!, opened.store, changes);
  log.info({ subgraph: subgraph.name, url: subgraph.url, store: opened.store.kind, pushChanges: changes ? 'kafka' : 'none' }, 'subgraph listening');
  return {
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    stop: async () => {
      await subgraph.close();
      await changes?.close();
      await opened.close();
    },
  };
});
