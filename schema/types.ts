import type { Role } from '../auth/principal.js';

/**
 * The resolved feature registry: what every other part of the system derives
 * its SDL, store keys, codecs and TTLs from (ARCHITECTURE.md, decision 1).
 */

export type ScalarTypeName = 'Int' | 'Float' | 'Boolean' | 'String';

export interface FeatureType {
  readonly scalar: ScalarTypeName;
  /** A non-empty list of non-null scalars, written `[Float!]` in the registry. */
  readonly list: boolean;
}

export interface Feature {
  readonly name: string;
  readonly type: FeatureType;
  /** The type as written in the registry and in the SDL, e.g. `Float` or `[Float!]`. */
  readonly typeName: string;
  readonly description: string;
  /** How the materializer computes it from its view's source events; null for views loaded in batch. */
  readonly aggregate: Aggregate | null;
}

/** A primitive accumulator over the events of a window. */
export type Measure =
  | { readonly fn: 'count'; readonly where: string | null }
  | { readonly fn: 'sum' | 'min' | 'max' | 'last'; readonly of: string; readonly where: string | null };

/** A feature's aggregation: a measure, an average, or the ratio of two measures (clickRate = clicks / impressions). */
export type Aggregate =
  | Measure
  | { readonly fn: 'avg'; readonly of: string; readonly where: string | null }
  | { readonly fn: 'ratio'; readonly numerator: Measure; readonly denominator: Measure };

export type EventFieldType = 'String' | 'Int' | 'Float' | 'Boolean' | 'Timestamp';

export interface EventField {
  readonly name: string;
  readonly type: EventFieldType;
  readonly optional: boolean;
  readonly description: string;
}

/** A raw event topic and the schema every event on it must satisfy. */
export interface EventSchema {
  readonly topic: string;
  readonly description: string;
  /** The field producers key (partition) by. */
  readonly key: string;
  /** The event-time field (type Timestamp: ms since the epoch, or ISO-8601). */
  readonly timestamp: string;
  readonly partitions: number;
  readonly fields: readonly EventField[];
}

/** How a view is computed from a raw event topic (views without it are loaded in batch). */
export interface Materialization {
  readonly source: string;
  /** The event field holding the entity id. */
  readonly entityKey: string;
  readonly windowMs: number;
  /** Sliding windows advance by `slideMs`; tumbling ones have slideMs === windowMs. */
  readonly slideMs: number;
  /** Events up to this much older than the entity's newest event still count; older ones are late. */
  readonly allowedLatenessMs: number;
}

/** One version of a feature view: the unit that is stored, encoded and served. */
export interface ViewVersion {
  readonly viewName: string;
  readonly entityName: string;
  readonly version: number;
  readonly active: boolean;
  readonly ttlSeconds: number;
  readonly features: readonly Feature[];
  readonly materialization: Materialization | null;
  /** Roles that may read this view; null: anyone allowed to run the operation (see FeatureView.readRoles). */
  readonly readRoles: readonly Role[] | null;
  /** How the hot tier may hold its values (store/hot-tier.ts). */
  readonly hotTier: HotTierPolicy;
}

/** A view's say in the hot tier: opt out, or bound how long a cached value is trusted. */
export interface HotTierPolicy {
  readonly enabled: boolean;
  /** Read again from the store after this long in memory; null: until a change event or its TTL. */
  readonly maxAgeMs: number | null;
}

export interface FeatureView {
  readonly name: string;
  readonly entityName: string;
  readonly description: string;
  readonly owner: string;
  readonly tags: readonly string[];
  readonly ttlSeconds: number;
  /** The raw event topic the view is materialized from, when it has one. */
  readonly source: string | null;
  readonly materialization: Materialization | null;
  readonly activeVersion: number;
  /**
   * Roles that may read the view, every version of it; null when the registry
   * names none. A caller without one gets an error on the view's field alone.
   */
  readonly readRoles: readonly Role[] | null;
  /** Versions 1..n in order. */
  readonly versions: readonly ViewVersion[];
}

export interface Entity {
  readonly name: string;
  /** The GraphQL object type, e.g. `User`. */
  readonly typeName: string;
  /** Root field names, e.g. `user` and `users`. */
  readonly singularField: string;
  readonly pluralField: string;
  readonly description: string;
  /** The name Feast's clients give this entity's key in `entities` (registry `feastJoinKey`, default `<entity>_id`). */
  readonly feastJoinKey: string;
  readonly views: readonly FeatureView[];
}

/** One feature of a feature service: a version of a view and one of its features. */
export interface ServiceFeature {
  /** The reference as the registry writes it, e.g. `clickStats:clickRate` or `clickStats@v1` (every feature of v1). */
  readonly ref: string;
  readonly version: ViewVersion;
  readonly feature: Feature;
  /** The version was named (`@vN`), not taken as the active one. */
  readonly pinned: boolean;
}

/**
 * A named bundle of features, as Feast's FeatureService: served by the
 * Feast-compatible endpoint (`feature_service`) and, from GraphQL, as a
 * generated persisted operation (schema/feature-service-operations.ts).
 */
export interface FeatureService {
  readonly name: string;
  readonly description: string;
  readonly owner: string;
  /** In the registry's order, whole-view references expanded. */
  readonly features: readonly ServiceFeature[];
}

export interface Registry {
  /** The file the registry was read from (for messages). */
  readonly file: string;
  readonly entities: readonly Entity[];
  readonly events: readonly EventSchema[];
  readonly featureServices: readonly FeatureService[];
}

export function activeVersionOf(view: FeatureView): ViewVersion {
  const found = view.versions[view.activeVersion - 1];
  if (!found) throw new Error(`feature view ${view.name} has no version ${view.activeVersion}`);
  return found;
}

export function findEntity(registry: Registry, name: string): Entity | undefined {
  return registry.entities.find((e) => e.name === name);
}

export function findView(registry: Registry, viewName: string): FeatureView | undefined {
  for (const entity of registry.entities) {
    const view = entity.views.find((v) => v.name === viewName);
    if (view) return view;
  }
  return undefined;
}

export function formatTtl(seconds: number): string {
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}
