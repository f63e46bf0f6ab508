import type { Deadline } from '../runtime/deadline.js';
import { viewTypeName } from '../schema/sdl.js';
import type { Entity, Feature, ViewVersion } from '../schema/types.js';
import { activeVersionOf } from '../schema/types.js';
import type { OnlineStore, ReadResult, StoredFeatures } from '../store/online-store.js';
import { readViewBatchSettled, type PrimedReads } from '../subgraphs/loaders.js';

/**
 * A plan answers a known request without the query planner: which entities it
 * looks up under which response keys, and what it selects of which feature
 * views (`Plan`); running it reads the store, one batched read per view
 * version for the distinct ids of the request, all issued together, and
 * yields a typed result (`PlanResult`) that the encoders (`encoders/`) turn
 * into bytes of one wire format each.
 *
 * The compiled persisted operations (compiled-operations.ts) are one producer
 * of plans; any other door that asks for entities' feature views by id (the
 * Feast-compatible endpoint) builds its plan with `assemblePlan` and
 * `viewSelection` and reuses `executePlan` and the encoders.
 *
 * Semantics mirrored from subgraphs/factory.ts (decision 0012): one store
 * read per view version per request; an entity exists when any of its
 * existence views (the selected ones, or every active one if none is
 * selected) has a value, fresh or stale; when none has one and one failed,
 * whether it exists is unknown and the failure is the entity's; a stale value
 * has `stale: true`, its event time and null features.
 */
export interface Plan {
  /** For metrics and logs: the manifest operation's name, say. */
  readonly name: string;
  /** Every view version the plan reads, once each; a view's index here is its slot. */
  readonly views: readonly ViewVersion[];
  readonly roots: readonly RootPlan[];
}

/** One root field: entities of one type looked up by id (a list of ids when plural, one id otherwise). */
export interface RootPlan {
  readonly responseKey: string;
  readonly entity: Entity;
  readonly plural: boolean;
  /** What is selected of each entity, in selection order. */
  readonly fields: readonly EntityFieldPlan[];
  /** Slots of the views whose values decide whether an entity exists. */
  readonly existenceSlots: readonly number[];
}

/** One selected field of an entity: its id, its type name, or a view (one shape for all: the hot loop stays monomorphic). */
export interface EntityFieldPlan {
  readonly responseKey: string;
  readonly kind: 'id' | 'typename' | 'view';
  /** For a view: what is selected of it; null otherwise. */
  readonly selection: ViewSelection | null;
  /** For a view: its slot in the plan's views; -1 otherwise. */
  readonly slot: number;
}

/** What one selected field of a view is. */
export const enum PartKind { EventTime, Stale, TypeName, Number, String, Boolean, List }

/** The fields selected of one view, as parallel arrays in selection order (loops, no closure per field). */
export interface ViewSelection {
  readonly view: ViewVersion;
  /** The view object's GraphQL type name (for `__typename`). */
  readonly typeName: string;
  readonly responseKeys: readonly string[];
  readonly kinds: readonly PartKind[];
  /** The selected field's name: the feature's for a feature, else `eventTime`, `stale` or `__typename`. */
  readonly names: readonly string[];
  /** The feature of a feature part, null for the others. */
  readonly features: readonly (Feature | null)[];
}

/** What a producer declares of one root field; `assemblePlan` gives the views their slots. */
export interface RootSpec {
  readonly responseKey: string;
  readonly entity: Entity;
  readonly plural: boolean;
  readonly fields: readonly ({ readonly responseKey: string; readonly kind: 'id' | 'typename' } | { readonly responseKey: string; readonly kind: 'view'; readonly selection: ViewSelection })[];
}

/** The plan of these root fields: every view they select (or need for existence) gets one slot. */
export function assemblePlan(name: string, specs: readonly RootSpec[]): Plan {
  const existence = specs.map((spec) => {
    const selected = [...new Set(spec.fields.flatMap((f) => (f.kind === 'view' ? [f.selection.view] : [])))];
    return selected.length > 0 ? selected : spec.entity.views.map(activeVersionOf);
  });
  const views = [...new Set(existence.flat())];
  const roots = specs.map((spec, r): RootPlan => ({
    responseKey: spec.responseKey,
    entity: spec.entity,
    plural: spec.plural,
    fields: spec.fields.map((f): EntityFieldPlan => (f.kind === 'view'
      ? { responseKey: f.responseKey, kind: 'view', selection: f.selection, slot: views.indexOf(f.selection.view) }
      : { responseKey: f.responseKey, kind: f.kind, selection: null, slot: -1 })),
    existenceSlots: existence[r]!.map((v) => views.indexOf(v)),
  }));
  return { name, views, roots };
}

/**
 * The selection of `parts` (response key and field name: a feature, `eventTime`, `stale` or
 * `__typename`) of a view, or why it cannot be.
 */
export function viewSelection(entity: Entity, view: ViewVersion, parts: readonly { readonly responseKey: string; readonly name: string }[]): ViewSelection | string {
  if (parts.length === 0) return `${view.viewName} has no selection`;
  const responseKeys: string[] = [];
  const kinds: PartKind[] = [];
  const names: string[] = [];
  const features: (Feature | null)[] = [];
  const keys = new Set<string>();
  for (const { responseKey, name } of parts) {
    if (responseKey === '__proto__') return `response key __proto__ in ${view.viewName}`; // would set the prototype of a plain object
    if (keys.has(responseKey)) return `response key used twice in ${view.viewName}`;
    keys.add(responseKey);
    let kind: PartKind;
    let feature: Feature | null = null;
    if (name === 'eventTime') kind = PartKind.EventTime;
    else if (name === 'stale') kind = PartKind.Stale;
    else if (name === '__typename') kind = PartKind.TypeName;
    else {
      feature = view.features.find((f) => f.name === name) ?? null;
      if (!feature) return `unknown feature ${name} of ${view.viewName} v${view.version}`;
      kind = featureKind(feature);
    }
    responseKeys.push(responseKey);
    kinds.push(kind);
    names.push(name);
    features.push(feature);
  }
  return { view, typeName: viewTypeName(entity, view), responseKeys, kinds, names, features };
}

function featureKind(feature: Feature): PartKind {
  if (feature.type.list) return PartKind.List;
  switch (feature.type.scalar) {
    case 'String': return PartKind.String;
    case 'Boolean': return PartKind.Boolean;
    default: return PartKind.Number;
  }
}

/**
 * What running a plan read for one request: the typed result every encoder takes.
 *
 * Row `k` of root `r` is the entity `idAt(result, r, k)`; the answer of its view in slot `s` is
 * `readAt(result, s, id)`: its value (`StoredFeatures`, `stale` decided at read), null when none
 * is stored, or the error that kept it from being read. `entityOutcome` applies the existence
 * rule. Kept as the reads themselves (no per-row objects): the JSON encoder, on the hot path,
 * walks them as it did before the plan had a typed result (decision 0027).
 */
export interface PlanResult {
  readonly kind: 'result';
  readonly plan: Plan;
  /** Per root (`plan.roots[r]`), the ids requested in request order: a list for a plural root, the one id of a singular one. */
  readonly ids: readonly (readonly string[] | string)[];
  /** Per view slot, the answers of its distinct ids. */
  readonly reads: readonly (readonly (ReadResult | Error)[])[];
  /** Per view slot, where each id's answer is in `reads`. */
  readonly positions: readonly ReadonlyMap<string, number>[];
  /** Whether any read failed (some answer is an Error). */
  readonly failed: boolean;
}

/** How many rows root `r` has. */
export function rowCount(result: PlanResult, r: number): number {
  const ids = result.ids[r]!;
  return typeof ids === 'string' ? 1 : ids.length;
}

/** The id of row `k` of root `r`. */
export function idAt(result: PlanResult, r: number, k: number): string {
  const ids = result.ids[r]!;
  return typeof ids === 'string' ? ids : ids[k]!;
}

/** The answer of `id` in view slot `slot`: its value, null (none stored) or its error. */
export function readAt(result: PlanResult, slot: number, id: string): StoredFeatures | null | Error {
  return (result.reads[slot]![result.positions[slot]!.get(id)!] as StoredFeatures | null | Error | undefined) ?? null;
}

/**
 * The existence rule (subgraphs/factory.ts): true when some existence view of the entity has a
 * value; otherwise the first failure among them (whether it exists is unknown), or null.
 */
export function entityOutcome(result: PlanResult, root: RootPlan, id: string): true | null | Error {
  let failure: Error | null = null;
  const slots = root.existenceSlots;
  for (let j = 0; j < slots.length; j++) {
    const read = readAt(result, slots[j]!, id);
    if (read instanceof Error) failure ??= read;
    else if (read !== null) return true;
  }
  return failure;
}

/**
 * Runs `plan` for one request: `ids` per root as `PlanResult.ids`. One read per view version of
 * the distinct ids, in first-seen order, all issued at once; per-id failures are part of the
 * result, never a rejection.
 */
export async function executePlan(plan: Plan, ids: readonly (readonly string[] | string)[], store: OnlineStore, deadline?: Deadline): Promise<PlanResult> {
  const roots = plan.roots;
  const viewCount = plan.views.length;
  // Per view: its distinct ids in first-seen order and where each one's answer is.
  const viewIds = new Array<string[]>(viewCount);
  const positions = new Array<Map<string, number>>(viewCount);
  for (let v = 0; v < viewCount; v++) {
    viewIds[v] = [];
    positions[v] = new Map();
  }
  for (let r = 0; r < roots.length; r++) {
    const rootIds = ids[r]!;
    const slots = roots[r]!.existenceSlots;
    for (let j = 0; j < slots.length; j++) {
      const distinct = viewIds[slots[j]!]!;
      const at = positions[slots[j]!]!;
      if (typeof rootIds === 'string') {
        if (!at.has(rootIds)) at.set(rootIds, distinct.push(rootIds) - 1);
      } else {
        for (let k = 0; k < rootIds.length; k++) if (!at.has(rootIds[k]!)) at.set(rootIds[k]!, distinct.push(rootIds[k]!) - 1);
      }
    }
  }
  const reads = new Array<Promise<(ReadResult | Error)[]> | ReadResult[]>(viewCount);
  for (let v = 0; v < viewCount; v++) {
    // As the generic path's DataLoaders: no ids, no store call.
    reads[v] = viewIds[v]!.length === 0 ? [] : readViewBatchSettled(store, plan.views[v]!, viewIds[v]!, deadline);
  }
  const results = viewCount === 1 ? [await reads[0]!] : await Promise.all(reads);
  let failed = false;
  for (let v = 0; v < viewCount && !failed; v++) {
    const read = results[v]!;
    for (let k = 0; k < read.length; k++) {
      if (read[k] instanceof Error) {
        failed = true;
        break;
      }
    }
  }
  return { kind: 'result', plan, ids, reads: results, positions, failed };
}

/**
 * Everything a result read, per view version and id, failures included: the generic path's
 * loaders start primed with it (subgraphs/loaders.ts), so a partly failed request handed over
 * to it is answered in its own words without asking the store again.
 */
export function primedReadsOf(result: PlanResult): PrimedReads {
  const primed = new Map<ViewVersion, Map<string, ReadResult | Error>>();
  result.plan.views.forEach((view, v) => {
    const byId = new Map<string, ReadResult | Error>();
    for (const [id, k] of result.positions[v]!) byId.set(id, result.reads[v]![k]!);
    primed.set(view, byId);
  });
  return primed;
}
