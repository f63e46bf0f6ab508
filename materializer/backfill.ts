import { Kafka, logLevel } from 'kafkajs';
import type { Registry, ViewVersion } from '../schema/types.js';
import { ConfigError } from '../runtime/errors.js';
import type { KafkaSecurity } from '../runtime/config.js';
import { kafkaSecurityOptions } from '../eventlog/kafka-log.js';

/**
 * Backfill: build a new version of a view from the earliest offset, beside
 * the live one, then switch to it.
 *
 * The live materializer writes only versions up to the active one, so a
 * version newer than the active one belongs to its backfill alone: a
 * consumer group of its own (`<group>.backfill.<view>.v<n>`) reads every raw
 * event from the beginning into that version's keys, while serving and the
 * live versions carry on untouched. Once the backfill has caught up it keeps
 * following the topic; the operator then sets `activeVersion: n` in the
 * registry and restarts the live materializers and gateways. From then on
 * both write version n: each stored state records the last offset applied per
 * partition, so whichever reaches an event first applies it and the other
 * skips it. The backfill process can then be stopped.
 *
 * Why the switch must wait for the catch-up: a live materializer starting on
 * version n at its committed offset L would mark events after L applied, and
 * events the backfill had not reached below L would then be skipped as old.
 */
export function backfillTarget(registry: Registry, spec: string): ViewVersion {
  const m = /^(\w+):v?(\d+)$/.exec(spec);
  if (!m) throw new ConfigError('--backfill', `expected <view>:<version>, e.g. clickStats:3, got ${JSON.stringify(spec)}`);
  const view = registry.entities.flatMap((e) => e.views).find((v) => v.name === m[1]);
  if (!view) throw new ConfigError('--backfill', `no view ${m[1]} in ${registry.file}`);
  const version = view.versions[Number(m[2]) - 1];
  if (!version) throw new ConfigError('--backfill', `${view.name} has versions 1..${view.versions.length}, not ${m[2]}`);
  if (!version.materialization) throw new ConfigError('--backfill', `${view.name} has no source to rebuild it from`);
  if (version.version <= view.activeVersion) {
    throw new ConfigError('--backfill', `${view.name} v${version.version} is live (the active version is ${view.activeVersion}); backfill a version newer than the active one`);
  }
  return version;
}

export function backfillGroup(liveGroup: string, version: ViewVersion): string {
  return `${liveGroup}.backfill.${version.viewName}.v${version.version}`;
}

/**
 * Whether `group` has caught up: for every partition of `topics` its committed
 * offset has reached the partition's end as it was when this was asked.
 */
export async function caughtUp(brokers: readonly string[], group: string, topics: readonly string[], security?: KafkaSecurity): Promise<{ caughtUp: boolean; lag: number }> {
  const admin = new Kafka({ clientId: `${group}-lag`, brokers: [...brokers], logLevel: logLevel.NOTHING, ...kafkaSecurityOptions(security) }).admin();
  await admin.connect();
  try {
    let lag = 0;
    for (const topic of topics) {
      const ends = await admin.fetchTopicOffsets(topic);
      const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
      for (const end of ends) {
        const at = Number(committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
        lag += Math.max(0, Number(end.high) - Math.max(0, at));
      }
    }
    return { caughtUp: lag === 0, lag };
  } finally {
    await admin.disconnect();
  }
}
