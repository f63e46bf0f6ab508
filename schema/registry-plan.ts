import {
  BreakingChangeType, buildASTSchema, findBreakingChanges, isObjectType, parse, printSchema, validate,
  type GraphQLObjectType, type GraphQLSchema,
} from 'graphql';
import { ROLES, type Role } from '../auth/principal.js';
import type { PersistedQueryManifest } from './manifest.js';
import { registryVersion } from './registry-version.js';
import { subscriptionSdl } from './subscription-sdl.js';
import { composeRegistry } from './supergraph.js';
import { formatTtl, type Aggregate, type Entity, type EventSchema, type FeatureService, type FeatureView, type Materialization, type Registry, type ViewVersion } from './types.js';

/**
 * A registry plan: what changes when `candidate` replaces `current`, and
 * what that breaks (ARCHITECTURE.md, decision 11). Three checks, each for a
 * different kind of client:
 *
 * - the registry diff, change by change: views and versions added or
 *   removed, active-version switches, features, TTLs, roles, sources,
 *   windows, aggregations, event schemas and feature services. A change is
 *   breaking when it takes something away from a client the schema cannot
 *   speak for: a role that loses a view, a Feast client whose feature
 *   service loses a feature, a producer whose events stop validating, or
 *   the values already stored under a version whose layout changed in place;
 * - the composed API schema, old against new, with graphql's
 *   `findBreakingChanges` (fields removed or retyped, types removed);
 * - every persisted operation of the manifest validated against the new
 *   schema (with its subscription fields): the models that would break, by name.
 *
 * The plan is pure: no store, no network. Hot reload refuses what `plan` refuses.
 */

export type ChangeKind =
  | 'entity added' | 'entity removed' | 'entity changed'
  | 'view added' | 'view removed' | 'view changed'
  | 'active version' | 'ttl' | 'read roles' | 'source' | 'window' | 'hot tier'
  | 'version added' | 'version removed'
  | 'feature added' | 'feature removed' | 'feature retyped' | 'aggregation' | 'features reordered'
  | 'event topic added' | 'event topic removed' | 'event schema'
  | 'feature service added' | 'feature service removed' | 'feature service changed';

export interface RegistryChange {
  readonly kind: ChangeKind;
  /** What changed, e.g. `clickStats`, `clickStats@v2`, `clickStats@v2.clicks`, `topic click-events`. */
  readonly subject: string;
  /** Old → new, in words. */
  readonly detail: string;
  readonly breaking: boolean;
  /** Why it is breaking (null when it is not). */
  readonly why: string | null;
}

export interface SchemaBreak {
  /** graphql's BreakingChangeType, e.g. FIELD_REMOVED. */
  readonly type: string;
  readonly description: string;
}

export interface BrokenOperation {
  readonly name: string;
  readonly id: string;
  /** The validation errors against the candidate's schema. */
  readonly errors: readonly string[];
}

export interface RegistryPlan {
  readonly current: { readonly file: string; readonly version: string };
  readonly candidate: { readonly file: string; readonly version: string };
  readonly changes: readonly RegistryChange[];
  readonly schemaBreaks: readonly SchemaBreak[];
  /** Operations valid against the current registry that the candidate breaks. */
  readonly brokenOperations: readonly BrokenOperation[];
  readonly breaking: boolean;
}

export function planRegistryChange(current: Registry, candidate: Registry, manifest: PersistedQueryManifest): RegistryPlan {
  const changes = diffRegistries(current, candidate);
  const before = composeRegistry(current).apiSchema;
  const after = composeRegistry(candidate).apiSchema;
  const schemaBreaks = schemaBreaksOf(before, after);
  const brokenOperations = operationsBroken(current, candidate, manifest, before, after);
  return {
    current: { file: current.file, version: registryVersion(current) },
    candidate: { file: candidate.file, version: registryVersion(candidate) },
    changes,
    schemaBreaks,
    brokenOperations,
    breaking: changes.some((c) => c.breaking) || schemaBreaks.length > 0 || brokenOperations.length > 0,
  };
}

/** The plan's verdict in one message (what hot reload logs and refuses with). */
export function planSummary(plan: RegistryPlan): string {
  if (!plan.breaking) return `registry ${plan.current.version} → ${plan.candidate.version}: ${plan.changes.length} change(s), none breaking`;
  const parts: string[] = [];
  if (plan.brokenOperations.length > 0) {
    parts.push(`breaks persisted operation(s) ${plan.brokenOperations.map((o) => `${o.name} (${o.errors[0]})`).join('; ')}`);
  }
  for (const b of plan.schemaBreaks) parts.push(`schema: ${b.description}`);
  for (const c of plan.changes.filter((x) => x.breaking)) parts.push(`${c.kind} ${c.subject}: ${c.why}`);
  return `registry ${plan.current.version} → ${plan.candidate.version} is breaking: ${parts.join('; ')}`;
}

// ---------------------------------------------------------------------------
// The registry diff

function diffRegistries(current: Registry, candidate: Registry): RegistryChange[] {
  const out: RegistryChange[] = [];
  const add = (kind: ChangeKind, subject: string, detail: string, why: string | null = null): void => {
    out.push({ kind, subject, detail, breaking: why !== null, why });
  };

  const oldEntities = byName(current.entities);
  const newEntities = byName(candidate.entities);
  for (const [name, entity] of newEntities) {
    if (!oldEntities.has(name)) add('entity added', name, `type ${entity.typeName}, ${entity.views.length} view(s)`);
  }
  for (const [name, entity] of oldEntities) {
    const next = newEntities.get(name);
    if (!next) {
      add('entity removed', name, `type ${entity.typeName} and its views ${entity.views.map((v) => v.name).join(', ') || '(none)'}`,
        `queries of ${entity.singularField}/${entity.pluralField} stop working`);
      continue;
    }
    diffEntity(entity, next, add);
  }

  const oldViews = new Map(current.entities.flatMap((e) => e.views.map((v) => [v.name, v] as const)));
  const newViews = new Map(candidate.entities.flatMap((e) => e.views.map((v) => [v.name, v] as const)));
  for (const [name, view] of newViews) {
    if (!oldViews.has(name)) add('view added', name, `on ${view.entityName}, versions ${view.versions.map((v) => `v${v.version}`).join(', ')}, active v${view.activeVersion}`);
  }
  for (const [name, view] of oldViews) {
    const next = newViews.get(name);
    if (!next) add('view removed', name, `on ${view.entityName} with every version`, 'clients selecting it lose the field; its stored values are no longer served');
    else diffView(view, next, add);
  }

  diffEvents(current.events, candidate.events, add);
  diffFeatureServices(current.featureServices, candidate.featureServices, add);
  return out;
}

type Add = (kind: ChangeKind, subject: string, detail: string, why?: string | null) => void;

function diffEntity(a: Entity, b: Entity, add: Add): void {
  if (a.typeName !== b.typeName) add('entity changed', a.name, `type ${a.typeName} → ${b.typeName}`, `clients naming type ${a.typeName} break`);
  if (a.pluralField !== b.pluralField) add('entity changed', a.name, `plural field ${a.pluralField} → ${b.pluralField}`, `queries of ${a.pluralField} stop working`);
  if (a.feastJoinKey !== b.feastJoinKey) add('entity changed', a.name, `Feast join key ${a.feastJoinKey} → ${b.feastJoinKey}`, `Feast clients sending ${a.feastJoinKey} are refused`);
  if (a.description !== b.description) add('entity changed', a.name, 'description');
}

function diffView(a: FeatureView, b: FeatureView, add: Add): void {
  const name = a.name;
  if (a.entityName !== b.entityName) add('view changed', name, `entity ${a.entityName} → ${b.entityName}`, `the view leaves type ${a.entityName}`);
  if (a.owner !== b.owner) add('view changed', name, `owner ${a.owner} → ${b.owner}`);
  if (a.description !== b.description) add('view changed', name, 'description');
  if (a.tags.join(',') !== b.tags.join(',')) add('view changed', name, `tags [${a.tags.join(', ')}] → [${b.tags.join(', ')}]`);
  if (a.ttlSeconds !== b.ttlSeconds) {
    add('ttl', name, `${formatTtl(a.ttlSeconds)} → ${formatTtl(b.ttlSeconds)}${b.ttlSeconds < a.ttlSeconds ? ' (values turn stale sooner)' : ''}`);
  }
  if ((a.source ?? '') !== (b.source ?? '')) {
    add('source', name, `${a.source ?? 'batch'} → ${b.source ?? 'batch'}`,
      'values stored so far were computed from the old source; publish a new version and backfill it instead');
  } else if (a.materialization && b.materialization && materializationText(a.materialization) !== materializationText(b.materialization)) {
    add('window', name, `${materializationText(a.materialization)} → ${materializationText(b.materialization)}`,
      'window state and values stored so far use the old window; publish a new version and backfill it instead');
  }
  if (hotTierText(a) !== hotTierText(b)) add('hot tier', name, `${hotTierText(a)} → ${hotTierText(b)}`);
  diffReadRoles(a, b, add);

  const oldVersions = new Map(a.versions.map((v) => [v.version, v]));
  const newVersions = new Map(b.versions.map((v) => [v.version, v]));
  for (const [n, v] of newVersions) {
    if (!oldVersions.has(n)) add('version added', `${name}@v${n}`, `features ${v.features.map((f) => `${f.name}: ${f.typeName}`).join(', ')}`);
  }
  for (const [n, v] of oldVersions) {
    const next = newVersions.get(n);
    if (!next) add('version removed', `${name}@v${n}`, `features ${v.features.map((f) => f.name).join(', ')}`, `clients of ${name}V${n} lose the field; its stored values are no longer served`);
    else diffVersion(v, next, add);
  }
  if (a.activeVersion !== b.activeVersion) {
    add('active version', name, `v${a.activeVersion} → v${b.activeVersion}: ${name} now reads ${name}@v${b.activeVersion}`);
  }
}

function diffReadRoles(a: FeatureView, b: FeatureView, add: Add): void {
  const readers = (roles: readonly Role[] | null): Set<Role> => new Set(roles === null ? ROLES : [...roles, 'admin']);
  const text = (roles: readonly Role[] | null): string => (roles === null ? 'anyone allowed to run the operation' : roles.join(', '));
  if (text(a.readRoles) === text(b.readRoles)) return;
  const before = readers(a.readRoles);
  const after = readers(b.readRoles);
  const lost = [...before].filter((r) => !after.has(r));
  add('read roles', a.name, `${text(a.readRoles)} → ${text(b.readRoles)}`, lost.length > 0 ? `callers with role ${lost.join(', ')} can no longer read it` : null);
}

function diffVersion(a: ViewVersion, b: ViewVersion, add: Add): void {
  const subject = `${a.viewName}@v${a.version}`;
  // The codec writes features by position in the version (store/codec.ts): any
  // change of the list re-reads the bytes already stored under this version wrong.
  const inPlace = `values stored under ${subject} keep the old layout; publish v${a.version + 1} (e.g. with a backfill) and switch to it instead`;
  const oldFeatures = byName(a.features);
  const newFeatures = byName(b.features);
  for (const [n, f] of newFeatures) if (!oldFeatures.has(n)) add('feature added', `${subject}.${n}`, `${f.typeName} added to a published version`, inPlace);
  for (const [n, f] of oldFeatures) {
    const next = newFeatures.get(n);
    if (!next) {
      add('feature removed', `${subject}.${n}`, `${f.typeName} removed`, inPlace);
      continue;
    }
    if (f.typeName !== next.typeName) add('feature retyped', `${subject}.${n}`, `${f.typeName} → ${next.typeName}`, inPlace);
    if (aggregateText(f.aggregate) !== aggregateText(next.aggregate)) {
      add('aggregation', `${subject}.${n}`, `${aggregateText(f.aggregate)} → ${aggregateText(next.aggregate)}`,
        `values stored under ${subject} were computed the old way; publish v${a.version + 1} and backfill it instead`);
    }
  }
  const common = (list: readonly { name: string }[], other: Map<string, unknown>): string =>
    list.filter((f) => other.has(f.name)).map((f) => f.name).join(',');
  if (common(a.features, newFeatures) !== common(b.features, oldFeatures)) {
    add('features reordered', subject, `${a.features.map((f) => f.name).join(', ')} → ${b.features.map((f) => f.name).join(', ')}`, inPlace);
  }
}

function diffEvents(a: readonly EventSchema[], b: readonly EventSchema[], add: Add): void {
  const oldTopics = new Map(a.map((e) => [e.topic, e]));
  const newTopics = new Map(b.map((e) => [e.topic, e]));
  for (const [topic, e] of newTopics) if (!oldTopics.has(topic)) add('event topic added', `topic ${topic}`, `${e.fields.length} field(s), ${e.partitions} partition(s)`);
  for (const [topic, e] of oldTopics) {
    const next = newTopics.get(topic);
    const subject = `topic ${topic}`;
    if (!next) {
      add('event topic removed', subject, `${e.fields.length} field(s)`);
      continue;
    }
    if (e.key !== next.key) add('event schema', subject, `key ${e.key} → ${next.key}`, 'events are partitioned by another field: entity state moves between partitions');
    if (e.timestamp !== next.timestamp) add('event schema', subject, `timestamp ${e.timestamp} → ${next.timestamp}`);
    if (e.partitions !== next.partitions) add('event schema', subject, `partitions ${e.partitions} → ${next.partitions}`);
    const oldFields = byName(e.fields);
    const newFields = byName(next.fields);
    for (const [n, f] of newFields) {
      if (oldFields.has(n)) continue;
      add('event schema', `${subject}.${n}`, `${f.optional ? 'optional' : 'required'} ${f.type} added`,
        f.optional ? null : 'events that producers send today lack it and go to the dead-letter topic');
    }
    for (const [n, f] of oldFields) {
      const nf = newFields.get(n);
      if (!nf) add('event schema', `${subject}.${n}`, `${f.type} removed`);
      else if (nf.type !== f.type) add('event schema', `${subject}.${n}`, `${f.type} → ${nf.type}`, `events with a ${f.type} ${n} go to the dead-letter topic`);
      else if (f.optional && !nf.optional) add('event schema', `${subject}.${n}`, 'optional → required', 'events without it go to the dead-letter topic');
    }
  }
}

function diffFeatureServices(a: readonly FeatureService[], b: readonly FeatureService[], add: Add): void {
  const oldServices = byName(a);
  const newServices = byName(b);
  for (const [n, s] of newServices) if (!oldServices.has(n)) add('feature service added', n, `${s.features.length} feature(s)`);
  for (const [n, s] of oldServices) {
    const next = newServices.get(n);
    if (!next) {
      add('feature service removed', n, `${s.features.length} feature(s)`, `Feast clients asking for feature_service ${n} are refused`);
      continue;
    }
    // Its clients know features by view and name (Feast's `clickStats__clickRate`): losing one breaks them,
    // reading it from another version (an active-version switch, a re-pinned ref) does not.
    const features = (service: FeatureService): Map<string, number> =>
      new Map(service.features.map((f) => [`${f.version.viewName}:${f.feature.name}`, f.version.version]));
    const before = features(s);
    const after = features(next);
    const lost = [...before.keys()].filter((r) => !after.has(r));
    const gained = [...after.keys()].filter((r) => !before.has(r));
    const moved = [...before].filter(([r, v]) => after.has(r) && after.get(r) !== v).map(([r, v]) => `${r} v${v} → v${after.get(r)}`);
    if (lost.length > 0 || gained.length > 0 || moved.length > 0) {
      const detail = [gained.length ? `+ ${gained.join(', ')}` : '', lost.length ? `- ${lost.join(', ')}` : '', moved.length ? `reads ${moved.join(', ')}` : ''];
      add('feature service changed', n, detail.filter(Boolean).join('; '), lost.length > 0 ? `its clients stop receiving ${lost.join(', ')}` : null);
    }
  }
}

// ---------------------------------------------------------------------------
// The composed schema and the persisted operations

/**
 * graphql's breaking changes of the API schema, except one kind that is not
 * a break by itself: an active-version switch retypes the view's field from
 * one version's object type to the other's (`User.clickStats` from
 * `UserClickStatsV2` to `UserClickStatsV3`). What breaks there is any field
 * of the old type the new one lacks or types differently, so that is what
 * is compared, field by field.
 */
function schemaBreaksOf(before: GraphQLSchema, after: GraphQLSchema): SchemaBreak[] {
  const breaks: SchemaBreak[] = [];
  for (const change of findBreakingChanges(before, after)) {
    const switched = change.type === BreakingChangeType.FIELD_CHANGED_KIND ? retypedObjectField(change.description, before, after) : null;
    if (!switched) {
      breaks.push({ type: change.type, description: change.description });
      continue;
    }
    const { field, from, to } = switched;
    const newFields = to.getFields();
    for (const [name, old] of Object.entries(from.getFields())) {
      const now = newFields[name];
      if (!now) breaks.push({ type: BreakingChangeType.FIELD_REMOVED, description: `${field}.${name} was removed (${field} now reads ${to.name}, which has no ${name}).` });
      else if (!outputTypeStillFits(String(old.type), String(now.type))) {
        breaks.push({ type: BreakingChangeType.FIELD_CHANGED_KIND, description: `${field}.${name} changed type from ${String(old.type)} to ${String(now.type)} (${field} now reads ${to.name}).` });
      }
    }
  }
  return breaks;
}

/** `User.clickStats changed type from UserClickStatsV2 to UserClickStatsV3.`, when both are object types, nullable alike. */
function retypedObjectField(description: string, before: GraphQLSchema, after: GraphQLSchema): { field: string; from: GraphQLObjectType; to: GraphQLObjectType } | null {
  const m = /^(\w+\.\w+) changed type from (\w+) to (\w+)\.$/.exec(description);
  if (!m) return null;
  const from = before.getType(m[2]!);
  const to = after.getType(m[3]!);
  if (!isObjectType(from) || !isObjectType(to)) return null;
  return { field: m[1]!, from, to };
}

/** An output field may keep its type or become non-null; anything else breaks a selection of it. */
function outputTypeStillFits(before: string, after: string): boolean {
  return before === after || `${before}!` === after;
}

function operationsBroken(
  current: Registry, candidate: Registry, manifest: PersistedQueryManifest, before: GraphQLSchema, after: GraphQLSchema,
): BrokenOperation[] {
  const oldSchema = withSubscriptions(before, current);
  const newSchema = withSubscriptions(after, candidate);
  const broken: BrokenOperation[] = [];
  // Only the manifest's own operations: a feature service's generated operation
  // is generated again from the candidate (it always validates), and what its
  // clients can lose — a feature — is the feature-service diff's to report.
  for (const op of manifest.operations) {
    const document = parse(op.body);
    if (validate(oldSchema, document).length > 0) continue; // already invalid today: not this change's doing
    const errors = validate(newSchema, document);
    if (errors.length > 0) broken.push({ name: op.name, id: op.id, errors: errors.map((e) => e.message) });
  }
  return broken;
}

function withSubscriptions(api: GraphQLSchema, registry: Registry): GraphQLSchema {
  return buildASTSchema(parse(`${printSchema(api)}\n${subscriptionSdl(registry, 1)}`));
}

// ---------------------------------------------------------------------------

function byName<T extends { readonly name: string }>(list: readonly T[]): Map<string, T> {
  return new Map(list.map((x) => [x.name, x]));
}

function materializationText(m: Materialization): string {
  const d = (ms: number): string => (ms % 1000 === 0 && ms > 0 ? formatTtl(ms / 1000) : `${ms}ms`);
  return `key ${m.entityKey}, window ${d(m.windowMs)}${m.slideMs === m.windowMs ? '' : ` sliding ${d(m.slideMs)}`}, lateness ${d(m.allowedLatenessMs)}`;
}

/** Every version of a view has the view's hot-tier policy. */
function hotTierText(view: FeatureView): string {
  const policy = view.versions[0]!.hotTier;
  if (!policy.enabled) return 'off';
  return policy.maxAgeMs === null ? 'on' : `on, max age ${policy.maxAgeMs}ms`;
}

function aggregateText(a: Aggregate | null): string {
  if (a === null) return 'none (batch)';
  if (a.fn === 'ratio') return `ratio(${aggregateText(a.numerator)}, ${aggregateText(a.denominator)})`;
  const where = a.where ? ` where ${a.where}` : '';
  return a.fn === 'count' ? `count${where}` : `${a.fn}(${a.of})${where}`;
}
