import type { Registry } from '../schema/types.js';
import type { MaterializedStore } from '../store/online-store.js';
import { changeTopic, changeTopicPartitions } from '../eventlog/change-event.js';
import type { EventLog, TransactionalConsumer } from '../eventlog/event-log.js';
import { Materializer, type MaterializerOptions } from './processor.js';

export interface RunningMaterializer {
  readonly materializer: Materializer;
  stop(): Promise<void>;
}

/**
 * Wires a Materializer to an event log: creates the topics it reads and
 * writes (raw topics as the registry sizes them, their dead-letter topics,
 * the change topic) and starts a transactional consumer in `groupId`.
 * Several processes in one group share the partitions.
 */
export async function startMaterializer(options: {
  registry: Registry;
  store: MaterializedStore;
  log: EventLog;
  groupId: string;
  instanceId: string;
  materializer?: MaterializerOptions;
  onFatal?: (error: Error) => void;
}): Promise<RunningMaterializer> {
  const { registry, store, log } = options;
  const materializer = new Materializer(registry, store, options.materializer);
  const topics = registry.events.filter((e) => materializer.topics.includes(e.topic));
  await log.createTopics([
    ...topics.map((e) => ({ topic: e.topic, partitions: e.partitions })),
    ...topics.map((e) => ({ topic: `${e.topic}.dlq`, partitions: 1 })),
    { topic: changeTopic, partitions: changeTopicPartitions },
  ]);
  const consumer: TransactionalConsumer = log.consumer({
    groupId: options.groupId,
    topics: materializer.topics,
    handler: materializer.handle,
    instanceId: options.instanceId,
    fromBeginning: true,
    ...(options.onFatal ? { onFatal: options.onFatal } : {}),
  });
  await consumer.start();
  return { materializer, stop: () => consumer.stop() };
}
