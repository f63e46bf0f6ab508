import { int, type Get } from '../runtime/config-values.js';

/**
 * The hot tier's section of the configuration (README "Hot tier"). Off by
 * default: it sees only changes that travel the change feed, so a process
 * whose store is also written around the feed (a bulk `npm run load`, a hand
 * edit in Redis) should turn it on knowingly, or bound entry age.
 */
export interface HotTierConfig {
  /** HOT_TIER_MAX_BYTES: estimated bytes of cached values; 0 turns the tier off. */
  readonly maxBytes: number;
  /** HOT_TIER_MAX_LAG_RECORDS: bypass while the feed's consumed position is further than this behind its end, on any partition. */
  readonly maxLagRecords: number;
  /** HOT_TIER_MAX_SILENCE_MS: bypass when the feed has not confirmed its position for this long (Kafka: no completed fetch). */
  readonly maxSilenceMs: number;
  /** HOT_TIER_MAX_AGE_MS: read a value again from the store after this long in memory; 0: no bound (a view's hotTier.maxAge still applies). */
  readonly maxAgeMs: number;
  /** HOT_TIER_WARM_UP_FILE: where the most recently used keys are written at shutdown and read back at start-up; unset: no warm-up. */
  readonly warmUpFile: string | null;
  /** HOT_TIER_WARM_UP_KEYS: at most this many keys in it. */
  readonly warmUpKeys: number;
}

export function hotTierConfig(get: Get): HotTierConfig {
  return {
    maxBytes: int(get, 'HOT_TIER_MAX_BYTES', 0, 0, 64 * 1024 ** 3),
    maxLagRecords: int(get, 'HOT_TIER_MAX_LAG_RECORDS', 1000, 1, 100_000_000),
    maxSilenceMs: int(get, 'HOT_TIER_MAX_SILENCE_MS', 1000, 100, 600_000),
    maxAgeMs: int(get, 'HOT_TIER_MAX_AGE_MS', 0, 0, 31 * 86_400_000),
    warmUpFile: get('HOT_TIER_WARM_UP_FILE') ?? null,
    warmUpKeys: int(get, 'HOT_TIER_WARM_UP_KEYS', 10_000, 1, 10_000_000),
  };
}
