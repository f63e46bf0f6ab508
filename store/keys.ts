import type { ViewVersion } from '../schema/types.js';
import { recordKey, type RecordKey, type RecordPart } from './backends/byte-backend.js';

/**
 * Key names of a record's parts on Redis (ARCHITECTURE.md, "Names"), and the
 * name errors and logs give a record on any engine.
 */
const prefixes: Record<RecordPart, string> = { value: 'fv:', state: 'fvs:' };

/** One Redis node or the hash ring: `fv:<view>:v<version>:<id>`, the state `fvs:…`. */
export function redisKey(record: RecordKey, part: RecordPart): string {
  return prefixes[part] + record.routing;
}

/**
 * Redis Cluster: `fv:{<view>:v<version>:<id>}`, the state `fvs:{…}`. The hash
 * tag (the text between the first `{` and the next `}`) is the record's
 * routing, so both parts hash to one slot whatever the id holds: an id with a
 * `}` ends the tag early, but at the same place in both keys (decision 0022).
 */
export function clusterKey(record: RecordKey, part: RecordPart): string {
  return `${prefixes[part]}{${record.routing}}`;
}

/** The value's key on one Redis node: `fv:<view>:v<version>:<id>` (the baselines and tests read it directly). */
export function storeKey(view: ViewVersion, entityId: string): string {
  return redisKey(recordKey(view, entityId), 'value');
}
