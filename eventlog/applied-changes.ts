import { LRUCache } from 'lru-cache';
import type { FeatureChange } from './change-event.js';

/**
 * What a reader of the change feed has applied, so that it can ignore a
 * change it gets a second time. The materializer commits each change once
 * (eventlog/partition-leases.ts), but a reader does not depend on it: a
 * change topic written by an older version, a retried push or a producer
 * bug must not show a dashboard an old value again or count a change twice.
 *
 * A change is named by its value key (`view:vN:id`) and its source
 * position (the last raw event folded in). A value's changes from one
 * source partition are committed in source-offset order, so the highest
 * offset applied per (value key, source topic, source partition) is all it
 * takes: a change at or below it was applied already. Changes from
 * different source partitions (itemStats folds events of every partition)
 * are never compared with each other.
 *
 * Bounded: the least recently changed entries are forgotten beyond
 * `maxEntries`, and a duplicate of a forgotten one is applied again — for
 * the hot tier one more store read, for a subscriber the same value again.
 */
export class AppliedChanges {
  private readonly highest: LRUCache<string, number>;

  constructor(maxEntries = 65_536) {
    this.highest = new LRUCache<string, number>({ max: maxEntries });
  }

  /** True when the change is new (and remembers it); false when it, or a later change of the same source partition, was applied. */
  admit(valueKey: string, source: FeatureChange['source']): boolean {
    const key = `${valueKey}\u0000${source.topic}/${source.partition}`;
    const seen = this.highest.get(key);
    if (seen !== undefined && source.offset <= seen) return false;
    this.highest.set(key, source.offset);
    return true;
  }
}

/** The source position a change event carries in its headers (eventlog/change-event.ts), or null without one. */
export function sourceOfHeaders(headers: Readonly<Record<string, string>>): FeatureChange['source'] | null {
  const { 'source-topic': topic, 'source-partition': partitionText, 'source-offset': offsetText } = headers;
  if (topic === undefined || partitionText === undefined || offsetText === undefined) return null;
  const partition = Number(partitionText);
  const offset = Number(offsetText);
  return Number.isInteger(partition) && Number.isFinite(offset) ? { topic, partition, offset } : null;
}
