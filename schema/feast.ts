import type { Entity, Feature, FeatureService, FeatureView, Registry, ServiceFeature, ViewVersion } from './types.js';
import { activeVersionOf, findView } from './types.js';

/**
 * The registry's Feast names (README, "Coming from Feast"): how Feast's
 * client names what the registry holds, so its requests resolve onto the
 * same views and versions the GraphQL graph serves.
 *
 * - An entity's join key: `feastJoinKey` in the registry, default `<entity>_id`
 *   (`user` → `user_id`).
 * - A feature reference, Feast's own syntax (feast/utils.py,
 *   `_parse_feature_or_view_ref`): `view:feature` (the active version),
 *   `view@vN:feature` (version N), `view@latest:feature` (the active one).
 *   As in Feast, a suffix after `@` that is neither `vN` nor `latest` is part
 *   of the view's name (which then does not exist).
 * - A feature service: a named list of such references, declared in the
 *   registry (`featureServices:`); an entry may also name a whole view
 *   (`view` or `view@vN`), meaning each of its features.
 */

/** A reference as written, split: `version` null means the active one. */
export interface ParsedRef {
  readonly view: string;
  readonly version: number | null;
  /** Null for a whole-view reference (`view`, `view@v2`). */
  readonly feature: string | null;
}

export function parseRef(text: string): ParsedRef {
  const colon = text.indexOf(':');
  const viewPart = colon < 0 ? text : text.slice(0, colon);
  const feature = colon < 0 ? null : text.slice(colon + 1);
  const at = viewPart.indexOf('@');
  if (at < 0) return { view: viewPart, version: null, feature };
  const suffix = viewPart.slice(at + 1);
  if (suffix === '' || suffix.toLowerCase() === 'latest') return { view: viewPart.slice(0, at), version: null, feature };
  const pinned = /^[vV](\d+)$/.exec(suffix);
  if (!pinned) return { view: viewPart, version: null, feature };
  return { view: viewPart.slice(0, at), version: Number(pinned[1]), feature };
}

/** Why a reference does not resolve, in the terms Feast's errors use. */
export type RefProblem =
  | { readonly kind: 'syntax'; readonly message: string }
  | { readonly kind: 'view'; readonly view: string; readonly message: string }
  | { readonly kind: 'version'; readonly view: string; readonly version: number; readonly message: string }
  | { readonly kind: 'feature'; readonly view: string; readonly feature: string; readonly message: string };

/** One resolved `(view version, feature)` column. */
export interface ResolvedRef {
  readonly view: FeatureView;
  readonly version: ViewVersion;
  readonly feature: Feature;
  /** The version was given (`@vN`): Feast then names the column `view@vN__feature`. */
  readonly pinned: boolean;
}

/**
 * Resolves a reference against the registry: the features it names (one,
 * or every feature of the version for a whole-view reference when
 * `wholeViews` allows it), or what is wrong with it.
 */
export function resolveRef(registry: Registry, text: string, wholeViews = false): ResolvedRef[] | RefProblem {
  const ref = parseRef(text);
  if (ref.feature === null && !wholeViews) {
    return { kind: 'syntax', message: `Invalid feature reference '${text}'. Expected format: '<feature_view>:<feature>' or '<feature_view>@<version>:<feature>'` };
  }
  if (ref.feature === '') return { kind: 'syntax', message: `Invalid feature reference '${text}': no feature after ':'` };
  const view = findView(registry, ref.view);
  if (!view) return { kind: 'view', view: ref.view, message: `Feature view ${ref.view} does not exist` };
  let version: ViewVersion;
  if (ref.version === null) version = activeVersionOf(view);
  else {
    const found = view.versions[ref.version - 1];
    if (!found) return { kind: 'version', view: view.name, version: ref.version, message: `Version ${ref.version} of feature view ${view.name} does not exist (it has v1 to v${view.versions.length})` };
    version = found;
  }
  const pinned = ref.version !== null;
  if (ref.feature === null) return version.features.map((feature) => ({ view, version, feature, pinned }));
  const feature = version.features.find((f) => f.name === ref.feature);
  if (!feature) {
    return {
      kind: 'feature', view: view.name, feature: ref.feature,
      message: `Feature ${ref.feature} not found in feature view ${view.name} v${version.version} (its features: ${version.features.map((f) => f.name).join(', ')})`,
    };
  }
  return [{ view, version, feature, pinned }];
}

/** The default join key of an entity that names none: `<entity>_id`. */
export function defaultJoinKey(entityName: string): string {
  return `${entityName}_id`;
}

/** The entity whose Feast join key this is. */
export function entityOfJoinKey(registry: Registry, joinKey: string): Entity | undefined {
  return registry.entities.find((e) => e.feastJoinKey === joinKey);
}

export function findFeatureService(registry: Registry, name: string): FeatureService | undefined {
  return registry.featureServices.find((s) => s.name === name);
}

/** Feast's column name of a feature: `feature`, or with full names `view__feature` (`view@vN__feature` when pinned). */
export function feastColumnName(ref: Pick<ServiceFeature, 'version' | 'feature' | 'pinned'>, fullFeatureNames: boolean): string {
  if (!fullFeatureNames) return ref.feature.name;
  return ref.pinned ? `${ref.version.viewName}@v${ref.version.version}__${ref.feature.name}` : `${ref.version.viewName}__${ref.feature.name}`;
}
