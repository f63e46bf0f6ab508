import type { Feature, Registry, ViewVersion } from '../schema/types.js';
import { hash32 } from './backends/hash-ring.js';
import type { FeatureValue, FeatureValues } from './codec.js';
import type { ViewRow } from './rows.js';

/**
 * Deterministic demo data for any registry: ids "1".."n" per entity and a
 * value for every view version, drawn by feature type from a PRNG seeded by
 * (view, version, id, generation). The same arguments always give the same
 * rows, so separate processes seeded alike serve identical values.
 */
export const demoEntityCounts: Readonly<Record<string, number>> = { user: 1000, item: 1000, merchant: 100 };

export interface DemoOptions {
  readonly counts?: Readonly<Record<string, number>>;
  readonly eventTimeMs: number;
  /** Bump to get new values for the same ids (the demo writer does). */
  readonly generation?: number;
  /** Only these views (all when absent). */
  readonly views?: (view: ViewVersion) => boolean;
}

export function* demoRows(registry: Registry, options: DemoOptions): Generator<ViewRow> {
  const counts = options.counts ?? demoEntityCounts;
  for (const entity of registry.entities) {
    const count = counts[entity.name] ?? 1000;
    for (const view of entity.views) {
      for (const version of view.versions) {
        if (options.views && !options.views(version)) continue;
        for (let id = 1; id <= count; id++) {
          const random = mulberry32(hash32(`${version.viewName}:${version.version}:${id}:${options.generation ?? 0}`));
          yield { view: version, row: { entityId: String(id), values: demoValues(version.features, random), eventTimeMs: options.eventTimeMs } };
        }
      }
    }
  }
}

const words = ['electronics', 'books', 'garden', 'toys', 'fashion', 'sports', 'DE', 'FR', 'US', 'JP', 'BR', 'IN'];

function demoValues(features: readonly Feature[], random: () => number): FeatureValues {
  const values: FeatureValues = {};
  for (const feature of features) {
    const one = (): number | boolean | string => {
      switch (feature.type.scalar) {
        case 'Int': return Math.floor(random() * 1000);
        case 'Float': return Math.round(random() * 1e6) / 1e6;
        case 'Boolean': return random() < 0.2;
        case 'String': return words[Math.floor(random() * words.length)]!;
      }
    };
    values[feature.name] = (feature.type.list ? Array.from({ length: 8 }, one) : one()) as FeatureValue;
  }
  return values;
}

/** A small, fast, seedable PRNG (public domain); Math.random cannot be seeded. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
