import { ErrorCode } from '../../runtime/errors.js';
import { entityOfJoinKey, feastColumnName, resolveRef } from '../../schema/feast.js';
import type { Entity, Feature, FeatureService, Registry, ViewVersion } from '../../schema/types.js';
import { findEntity } from '../../schema/types.js';
import { FeastError, plainError, typedError, validationError, valueError, type ValidationIssue } from './errors.js';

/**
 * A `POST /get-online-features` body (Feast's GetOnlineFeaturesRequest) turned
 * into a plan over the registry: which view versions to read, for which
 * entity rows, and which (view version, feature) columns to answer, in
 * order. Nothing here reads a store or knows HTTP; the gateway checks the
 * request (roles, limits) against it and the encoders write its result.
 *
 * The body, as Feast's client (`RemoteOnlineStore`) sends it:
 *   {"entities": {"user_id": ["1", 2], "item_id": [...]}, "features": ["view:feature", …]
 *    | "feature_service": "name", "full_feature_names": bool, "include_feature_view_version_metadata": bool}
 * Other fields are ignored, as Feast's server (pydantic) ignores them.
 *
 * Plans of feature services are made once, at construction; plans of
 * feature lists once per distinct list (a bounded cache), so a known request
 * costs the checks of its entity rows and a lookup.
 */
export interface FeastColumn {
  /** Feast's column name: `feature`, or with full names `view__feature` / `view@vN__feature`. */
  readonly name: string;
  readonly feature: Feature;
  /** Its view version's index in `FeastPlan.views`. */
  readonly slot: number;
  /** A Float or [Float!] feature: every number written with a decimal point or exponent. */
  readonly float: boolean;
}

export interface FeastPlan {
  /** The `operation` label of its metrics: `feast:<service>` or `feast:(features)` (bounded by the registry). */
  readonly operation: string;
  /** The feature service it answers, if any. */
  readonly service: FeatureService | null;
  /** Distinct view versions in first-requested order: one store read each. */
  readonly views: readonly ViewVersion[];
  /** Per view slot, the entity it is keyed by. */
  readonly entities: readonly Entity[];
  readonly columns: readonly FeastColumn[];
}

/** One `entities` entry: a join key and its values, each as the store id (a string). */
export interface JoinKeyColumn {
  readonly name: string;
  readonly entity: Entity;
  readonly ids: readonly string[];
}

export interface FeastRequest {
  readonly plan: FeastPlan;
  /** Entity rows: the length of every `entities` list. */
  readonly rows: number;
  /** In the order of `entities`: Feast answers these columns first. */
  readonly keys: readonly JoinKeyColumn[];
  /** Per view slot of the plan, the index in `keys` of the join key it is read for. */
  readonly keyOf: readonly number[];
  /** `include_feature_view_version_metadata`. */
  readonly versionMetadata: boolean;
}

/** Feature lists longer than this (as text) are not cached: 1024 entries × 8 KiB at most. */
const maxCachedKeyLength = 8192;

/** The label of feature-list requests: one, whatever the list, so label cardinality stays bounded. */
export const featureListOperation = 'feast:(features)';

export class FeastRequests {
  private readonly services = new Map<string, readonly [FeastPlan | FeastError, FeastPlan | FeastError]>();
  private readonly lists = new Map<string, FeastPlan>();

  constructor(private readonly registry: Registry, private readonly maxCachedLists = 1024) {
    for (const service of registry.featureServices) {
      const refs = service.features.map((f) => ({ version: f.version, feature: f.feature, pinned: f.pinned, text: f.ref }));
      this.services.set(service.name, [compile(registry, refs, false, `feast:${service.name}`, service), compile(registry, refs, true, `feast:${service.name}`, service)]);
    }
  }

  /** The plan of every feature service, with short and with full feature names (for checks at start-up). */
  servicePlans(): FeastPlan[] {
    return [...this.services.values()].flat().filter((p): p is FeastPlan => !(p instanceof FeastError));
  }

  /** The request a parsed JSON body asks for; throws FeastError (422, 404) saying what is wrong. */
  parse(body: unknown): FeastRequest {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw validationError([{ type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', input: body ?? null }]);
    }
    const b = body as Record<string, unknown>;
    const issues: ValidationIssue[] = [];
    // Field by field as pydantic validates GetOnlineFeaturesRequest: every shape problem at once.
    const entities = b.entities;
    if (entities === undefined) issues.push({ type: 'missing', loc: ['body', 'entities'], msg: 'Field required', input: body });
    else if (typeof entities !== 'object' || entities === null || Array.isArray(entities)) {
      issues.push({ type: 'dict_type', loc: ['body', 'entities'], msg: 'Input should be a valid dictionary', input: entities });
    } else {
      for (const [key, values] of Object.entries(entities)) {
        if (!Array.isArray(values)) issues.push({ type: 'list_type', loc: ['body', 'entities', key], msg: 'Input should be a valid list', input: values });
      }
    }
    const service = b.feature_service;
    if (service !== undefined && service !== null && typeof service !== 'string') {
      issues.push({ type: 'string_type', loc: ['body', 'feature_service'], msg: 'Input should be a valid string', input: service });
    }
    const features = b.features === undefined ? [] : b.features;
    if (!Array.isArray(features)) issues.push({ type: 'list_type', loc: ['body', 'features'], msg: 'Input should be a valid list', input: features });
    else {
      for (let i = 0; i < features.length; i++) {
        if (typeof features[i] !== 'string') issues.push({ type: 'string_type', loc: ['body', 'features', i], msg: 'Input should be a valid string', input: features[i] });
      }
    }
    const fullFeatureNames = lenientBool(b, 'full_feature_names', issues);
    const versionMetadata = lenientBool(b, 'include_feature_view_version_metadata', issues);
    if (issues.length > 0) throw validationError(issues);

    const refs = features as string[];
    let plan: FeastPlan | FeastError;
    if (typeof service === 'string') {
      if (refs.length > 0) {
        throw valueError(['body'], 'Value error, give either features or feature_service, not both', { features: refs, feature_service: service });
      }
      const plans = this.services.get(service);
      if (!plans) throw typedError(404, ErrorCode.NotFound, 'FeatureServiceNotFoundException', `Feature service ${service} does not exist`);
      plan = plans[fullFeatureNames ? 1 : 0];
    } else {
      if (refs.length === 0) {
        throw valueError(['body', 'features'], 'Value error, No features specified for retrieval: give features (["view:feature", …]) or feature_service', refs);
      }
      plan = this.listPlan(refs, fullFeatureNames);
    }
    if (plan instanceof FeastError) throw plan;
    return this.withRows(plan, entities as Record<string, unknown[]>, versionMetadata);
  }

  private listPlan(refs: readonly string[], fullFeatureNames: boolean): FeastPlan {
    const key = (fullFeatureNames ? '1' : '0') + refs.join('\n');
    const cached = this.lists.get(key);
    if (cached) return cached;
    const resolved = refs.map((text, i) => {
      const r = resolveRef(this.registry, text);
      if (Array.isArray(r)) return { ...r[0]!, text };
      switch (r.kind) {
        case 'syntax': throw valueError(['body', 'features', i], `Value error, ${r.message}`, text);
        case 'view': throw typedError(404, ErrorCode.NotFound, 'FeatureViewNotFoundException', r.message);
        case 'version': throw typedError(404, ErrorCode.NotFound, 'FeatureViewVersionNotFound', r.message);
        case 'feature': throw plainError(404, ErrorCode.NotFound, r.message);
      }
    });
    const plan = compile(this.registry, resolved, fullFeatureNames, featureListOperation, null);
    if (plan instanceof FeastError) throw plan;
    // Bounded in entries (cleared when full, like the media-type memo) and in size: a client inventing
    // long lists cannot make it hold MAX_BODY_BYTES per entry; such lists are planned per request.
    if (key.length > maxCachedKeyLength) return plan;
    if (this.lists.size >= this.maxCachedLists) this.lists.clear();
    this.lists.set(key, plan);
    return plan;
  }

  /** The entity rows of a request, checked against the plan: known join keys, equal lengths, string or integer values, every view's key given. */
  private withRows(plan: FeastPlan, entities: Record<string, unknown[]>, versionMetadata: boolean): FeastRequest {
    const keys: JoinKeyColumn[] = [];
    let rows = -1;
    for (const name in entities) {
      const values = entities[name]!;
      const entity = entityOfJoinKey(this.registry, name);
      if (!entity) {
        const known = this.registry.entities.map((e) => `${e.feastJoinKey} (${e.name})`).join(', ');
        throw valueError(['body', 'entities', name], `Value error, unknown join key "${name}"; the registry's join keys are ${known}`, name);
      }
      if (rows === -1) rows = values.length;
      else if (values.length !== rows) {
        const lengths = [...keys.map((k) => `${k.name} has ${k.ids.length}`), `${name} has ${values.length}`].join(', ');
        throw valueError(['body', 'entities'], `Value error, All entity rows must have the same columns: every join key needs one value per row (${lengths})`, Object.keys(entities));
      }
      const ids = new Array<string>(values.length);
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (typeof v === 'string') ids[i] = v;
        else if (typeof v === 'number' && Number.isSafeInteger(v)) ids[i] = String(v);
        else throw valueError(['body', 'entities', name, i], 'Value error, an entity value must be a string or an integer (the entity\'s id)', v ?? null);
      }
      keys.push({ name, entity, ids });
    }
    const keyOf = plan.entities.map((entity, slot) => {
      const k = keys.findIndex((key) => key.entity === entity);
      if (k < 0) {
        throw valueError(['body', 'entities'],
          `Value error, feature view ${plan.views[slot]!.viewName} is keyed by ${entity.feastJoinKey} (entity ${entity.name}), which entities does not give`, Object.keys(entities));
      }
      return k;
    });
    return { plan, rows: Math.max(rows, 0), keys, keyOf, versionMetadata };
  }
}

interface Ref {
  readonly version: ViewVersion;
  readonly feature: Feature;
  readonly pinned: boolean;
  readonly text: string;
}

/** The plan of resolved references, or Feast's FeatureNameCollisionError when two answer under one name. */
function compile(registry: Registry, refs: readonly Ref[], fullFeatureNames: boolean, operation: string, service: FeatureService | null): FeastPlan | FeastError {
  const views: ViewVersion[] = [];
  const columns: FeastColumn[] = [];
  const names = new Map<string, Ref>();
  const collided = new Set<string>();
  for (const ref of refs) {
    let slot = views.indexOf(ref.version);
    if (slot < 0) slot = views.push(ref.version) - 1;
    const name = feastColumnName(ref, fullFeatureNames);
    if (names.has(name)) collided.add(name);
    names.set(name, ref);
    columns.push({ name, feature: ref.feature, slot, float: ref.feature.type.scalar === 'Float' });
  }
  if (collided.size > 0) {
    // Feast's own message (feast/errors.py FeatureNameCollisionError), so the client raises that class with it.
    const advice = fullFeatureNames
      ? "To resolve this collision, please ensure that the feature views or their own features have different names. If you're intentionally joining the same feature view twice on different sets of entities, please rename one of the feature views with '.with_name'."
      : "To resolve this collision, either use the full feature name by setting 'full_feature_names=True', or ensure that the features in question have different names.";
    return typedError(422, ErrorCode.BadRequest, 'FeatureNameCollisionError', `Duplicate features named ${[...collided].join(', ')} found.\n${advice}`);
  }
  return { operation, service, views, entities: views.map((v) => findEntity(registry, v.entityName)!), columns };
}

/**
 * A bool as pydantic's lax mode reads it (what Feast's server accepts): true/false, 0/1, and the
 * strings yes/no, on/off, true/false, t/f, y/n, 1/0 in any case. Absent: false (null is an error, as there).
 */
function lenientBool(body: Record<string, unknown>, field: string, issues: ValidationIssue[]): boolean {
  const v = body[field];
  if (v === undefined) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number' && (v === 0 || v === 1)) return v === 1;
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (trueWords.has(s)) return true;
    if (falseWords.has(s)) return false;
  }
  const parsing = typeof v === 'string' || typeof v === 'number';
  issues.push({
    type: parsing ? 'bool_parsing' : 'bool_type', loc: ['body', field],
    msg: parsing ? 'Input should be a valid boolean, unable to interpret input' : 'Input should be a valid boolean', input: v,
  });
  return false;
}
const trueWords = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const falseWords = new Set(['0', 'off', 'f', 'false', 'n', 'no']);
