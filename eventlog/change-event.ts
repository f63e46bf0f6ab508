import type { FeatureValues } from '../store/codec.js';
import type { LogRecord, OutgoingRecord } from './event-log.js';

/**
 * A change event on `feature-updates`: a feature-view value of one entity
 * changed. Produced by the materializer in the same transaction as the
 * consumer offsets of the events that caused it; consumed by every gateway
 * replica for GraphQL subscriptions. `source` names the last event folded in,
 * so (view, version, id, source) identifies a change exactly once.
 */
export const changeTopic = 'feature-updates';
/**
 * The `source.topic` of a change made by the push API (subgraphs/push.ts),
 * which has no source event; its offset is the pushed value's event time in
 * ms, so a retried push of the same row is the same change. The colon makes
 * it a name no Kafka topic can have.
 */
export const pushSourceTopic = 'push:graphql';
/** Partitions of the change topic, when the materializer or a gateway creates it. */
export const changeTopicPartitions = 3;

export interface FeatureChange {
  readonly entity: string;
  readonly id: string;
  readonly view: string;
  readonly version: number;
  /** The new value. No gateway reader uses it (a subscriber's payload is read when sent); kept for the checks of the log against the store (decision 0032). */
  readonly values: FeatureValues;
  /** ISO-8601: event time of the value. */
  readonly eventTime: string;
  readonly source: { readonly topic: string; readonly partition: number; readonly offset: number };
}

export class ChangeEventError extends Error {
  override name = 'ChangeEventError';
}

export function changeKey(change: Pick<FeatureChange, 'view' | 'version' | 'id'>): string {
  return `${change.view}:v${change.version}:${change.id}`;
}

/** The (view, version, id) a change's key names (`changeKey`), or null when it is not of that shape. */
export function parseChangeKey(key: string): { view: string; version: number; id: string } | null {
  const m = /^([^:]+):v(\d+):(.+)$/s.exec(key);
  if (!m) return null;
  return { view: m[1]!, version: Number(m[2]), id: m[3]! };
}

export function encodeChange(change: FeatureChange): OutgoingRecord {
  return {
    topic: changeTopic,
    key: changeKey(change),
    value: JSON.stringify(change),
    headers: { 'source-topic': change.source.topic, 'source-partition': String(change.source.partition), 'source-offset': String(change.source.offset) },
  };
}

export function decodeChange(record: Pick<LogRecord, 'value'>): FeatureChange {
  let parsed: unknown;
  try {
    parsed = JSON.parse(record.value.toString('utf8'));
  } catch (error) {
    throw new ChangeEventError(`change event is not JSON: ${(error as Error).message}`);
  }
  const c = parsed as Partial<FeatureChange>;
  if (typeof c !== 'object' || c === null || typeof c.entity !== 'string' || typeof c.id !== 'string' || typeof c.view !== 'string' ||
      typeof c.version !== 'number' || typeof c.values !== 'object' || c.values === null || typeof c.eventTime !== 'string' ||
      typeof c.source !== 'object' || c.source === null) {
    throw new ChangeEventError('change event lacks entity, id, view, version, values, eventTime or source');
  }
  return c as FeatureChange;
}
