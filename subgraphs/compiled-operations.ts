import {
  Kind, parse,
  type FieldNode, type OperationDefinitionNode, type SelectionSetNode, type TypeNode, type ValueNode,
} from 'graphql';
import type { Deadline } from '../runtime/deadline.js';
import { log } from '../runtime/log.js';
import { fastPathRequests, type BoundCounter } from '../runtime/metrics.js';
import type { PersistedQueryManifest } from '../schema/manifest.js';
import { viewFieldsOf, viewTypeName } from '../schema/sdl.js';
import type { Entity, Feature, Registry, ViewVersion } from '../schema/types.js';
import { activeVersionOf } from '../schema/types.js';
import type { FeatureValue } from '../store/codec.js';
import type { OnlineStore, ReadResult, StoredFeatures } from '../store/online-store.js';
import { readViewBatchSettled, type PrimedReads } from './loaders.js';

/**
 * Persisted operations compiled, once at start-up, into a plan that reads the
 * store and builds the response as plain objects of fixed shape, written by one
 * JSON.stringify — the co-located subgraphs answering a whole known operation
 * without the query planner or graphql-js execution (in the spirit of
 * graphql-jit). Text concatenated field by field was tried first and measured
 * slower: its rope of small strings costs more to build and flatten than V8's
 * native serializer writing into one buffer (decision 0027).
 *
 * Only operations whose every root field is an entity lookup of this registry
 * compile; anything else, and any request the plan is not sure about (an
 * unexpected variable shape, a batch over the limit, any id whose read
 * failed) is handed to the generic federated path. The result is
 * byte-for-byte the generic path's: test/integration/fast-path.test.ts runs
 * every persisted operation through both, fresh, stale, missing, failing and
 * partly failing.
 *
 * Semantics mirrored from subgraphs/factory.ts: one store read per view
 * version per request; an entity is null when none of its selected views
 * (all active views if none is selected) has a value; a stale value has
 * `stale: true`, its `eventTime` and null features.
 */
export interface CompiledOperation {
  readonly name: string;
  /** Every view version it reads (authorization checks them before running it). */
  readonly views: readonly ViewVersion[];
  /** `feature_gateway_fast_path_requests_total` of its outcomes, bound once (runtime/metrics.ts). */
  readonly served: BoundCounter;
  readonly handedOver: BoundCounter;
  /** The response body (as Apollo Server would write it), or a hand-over to the generic path. */
  run(variables: unknown, operationName: unknown, deadline?: Deadline): Promise<CompiledResult>;
}

/**
 * `generic`: take the generic path. `reads` is set when some read failed:
 * everything this plan read, per-id errors included, so the generic path
 * answers the partial result from it without reading again (see
 * `primedReads` in loaders.ts). The error shapes (paths, order, codes) are
 * thereby the generic path's own, by construction.
 */
export type CompiledResult = { readonly kind: 'answered'; readonly body: string } | { readonly kind: 'generic'; readonly reads?: PrimedReads };

const generic: CompiledResult = { kind: 'generic' };

export class CompiledOperations {
  private readonly byId = new Map<string, CompiledOperation>();

  constructor(registry: Registry, manifest: PersistedQueryManifest, store: OnlineStore, maxBatchIds: number) {
    for (const op of manifest.operations) {
      const compiled = compileOperation(registry, op.name, op.body, store, maxBatchIds);
      if (typeof compiled === 'string') log.info({ operation: op.name, reason: compiled }, 'persisted operation not compiled; it takes the generic path');
      else this.byId.set(op.id, compiled);
    }
  }

  get(id: string): CompiledOperation | undefined {
    return this.byId.get(id);
  }

  get names(): string[] {
    return [...this.byId.values()].map((o) => o.name);
  }
}

/** The response object of one view, or `null` when the value is missing. */
type ViewWriter = (record: StoredFeatures | null) => Record<string, unknown> | null;

interface EntityField {
  readonly responseKey: string;
  readonly kind: 'id' | 'typename' | 'view';
  readonly view?: ViewVersion;
  /** Where the view's reads are in the request's reads (its index in the operation's views). */
  slot: number;
  readonly write?: ViewWriter;
}

interface RootField {
  readonly responseKey: string;
  readonly entity: Entity;
  readonly plural: boolean;
  readonly argument: { variable: string } | { literal: string | string[] };
  readonly fields: readonly EntityField[];
  /** The views whose values decide whether the entity exists. */
  readonly existenceViews: readonly ViewVersion[];
  /** Their slots in the operation's views, set once the operation's views are known. */
  existenceSlots: number[];
}

/** Compiles one operation, or returns why it cannot be. */
export function compileOperation(registry: Registry, name: string, body: string, store: OnlineStore, maxBatchIds: number): CompiledOperation | string {
  const document = parse(body);
  if (document.definitions.length !== 1) return 'fragments or several definitions';
  const op = document.definitions[0] as OperationDefinitionNode;
  if (op.kind !== Kind.OPERATION_DEFINITION || op.operation !== 'query') return 'not a query';
  if (op.directives?.length) return 'operation directives';
  const variableTypes = new Map<string, string>();
  for (const v of op.variableDefinitions ?? []) {
    if (v.defaultValue || v.directives?.length) return `variable $${v.variable.name.value} has a default or directives`;
    variableTypes.set(v.variable.name.value, typeString(v.type));
  }

  const roots: RootField[] = [];
  const keys = new Set<string>();
  for (const selection of op.selectionSet.selections) {
    if (selection.kind !== Kind.FIELD) return 'fragments at the root';
    const root = compileRoot(registry, selection, variableTypes);
    if (typeof root === 'string') return root;
    if (root.responseKey === '__proto__') return 'response key __proto__ at the root'; // would set the prototype of a plain object
    if (keys.has(root.responseKey)) return `response key ${root.responseKey} used twice`;
    keys.add(root.responseKey);
    roots.push(root);
  }

  const allViews = [...new Set(roots.flatMap((r) => r.existenceViews))];
  for (const root of roots) {
    root.existenceSlots = root.existenceViews.map((v) => allViews.indexOf(v));
    for (const field of root.fields) if (field.view) field.slot = allViews.indexOf(field.view);
  }
  const viewCount = allViews.length;
  return {
    name,
    views: allViews,
    served: fastPathRequests.bind({ operation: name, outcome: 'served' }),
    handedOver: fastPathRequests.bind({ operation: name, outcome: 'generic' }),
    async run(variables, operationName, deadline) {
      if (operationName !== undefined && operationName !== null && operationName !== name) return generic;
      const vars = (variables ?? {}) as Record<string, unknown>;
      if (typeof vars !== 'object' || Array.isArray(vars)) return generic;

      // Coerce arguments exactly as far as the generic path would accept them without an error.
      const idsOf = new Array<readonly string[] | string>(roots.length);
      for (let r = 0; r < roots.length; r++) {
        const root = roots[r]!;
        const value = 'variable' in root.argument ? vars[root.argument.variable] : root.argument.literal;
        if (root.plural) {
          if (!Array.isArray(value) || value.length > maxBatchIds) return generic;
          for (let k = 0; k < value.length; k++) if (typeof value[k] !== 'string') return generic;
          idsOf[r] = value as string[];
        } else {
          if (typeof value !== 'string') return generic;
          idsOf[r] = value;
        }
      }

      // One read per view version for the distinct ids of the request, all issued at once.
      // Per view: its distinct ids in first-seen order and where each one's answer is.
      const viewIds = new Array<string[]>(viewCount);
      const positions = new Array<Map<string, number>>(viewCount);
      for (let v = 0; v < viewCount; v++) {
        viewIds[v] = [];
        positions[v] = new Map();
      }
      for (let r = 0; r < roots.length; r++) {
        const ids = idsOf[r]!;
        const slots = roots[r]!.existenceSlots;
        for (let j = 0; j < slots.length; j++) {
          const distinct = viewIds[slots[j]!]!;
          const at = positions[slots[j]!]!;
          if (typeof ids === 'string') {
            if (!at.has(ids)) at.set(ids, distinct.push(ids) - 1);
          } else {
            for (let k = 0; k < ids.length; k++) if (!at.has(ids[k]!)) at.set(ids[k]!, distinct.push(ids[k]!) - 1);
          }
        }
      }
      const reads = new Array<Promise<(ReadResult | Error)[]> | ReadResult[]>(viewCount);
      for (let v = 0; v < viewCount; v++) {
        // As the generic path's DataLoaders: no ids, no store call.
        reads[v] = viewIds[v]!.length === 0 ? [] : readViewBatchSettled(store, allViews[v]!, viewIds[v]!, deadline);
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
      if (failed) {
        // The generic path reports the failed ids in its own words, from these reads, without reading again.
        const primed = new Map<ViewVersion, Map<string, ReadResult | Error>>();
        allViews.forEach((view, v) => {
          const byId = new Map<string, ReadResult | Error>();
          for (const [id, k] of positions[v]!) byId.set(id, results[v]![k]!);
          primed.set(view, byId);
        });
        return { kind: 'generic', reads: primed };
      }
      const found: Found = { results: results as (StoredFeatures | null)[][], positions };

      // The response as plain objects and one JSON.stringify: V8 writes numbers and strings straight
      // into one flat buffer, where concatenating the text piece by piece built a rope of a few
      // hundred parts that had to be flattened before it could be sent (decision 0027). It is
      // what Apollo Server writes for the same result: JSON.stringify of it and a newline.
      const data: Record<string, unknown> = {};
      for (let r = 0; r < roots.length; r++) {
        const root = roots[r]!;
        const ids = idsOf[r]!;
        if (typeof ids === 'string') data[root.responseKey] = entityObject(root, ids, found);
        else {
          const list = new Array<Record<string, unknown> | null>(ids.length);
          for (let k = 0; k < ids.length; k++) list[k] = entityObject(root, ids[k]!, found);
          data[root.responseKey] = list;
        }
      }
      return { kind: 'answered', body: JSON.stringify({ data }) + '\n' };
    },
  };
}

/** What one request read: per view slot, the answers and where each id's answer is. */
interface Found {
  readonly results: readonly (readonly (StoredFeatures | null)[])[];
  readonly positions: readonly Map<string, number>[];
}

/** The value of `id` in view slot `slot` (null: none stored). */
function valueAt(found: Found, slot: number, id: string): StoredFeatures | null {
  return found.results[slot]![found.positions[slot]!.get(id)!] ?? null;
}

function entityObject(root: RootField, id: string, found: Found): Record<string, unknown> | null {
  let exists = false;
  const slots = root.existenceSlots;
  for (let j = 0; j < slots.length; j++) {
    if (valueAt(found, slots[j]!, id) !== null) {
      exists = true;
      break;
    }
  }
  if (!exists) return null;
  const out: Record<string, unknown> = {};
  const fields = root.fields;
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i]!;
    if (field.kind === 'id') out[field.responseKey] = id;
    else if (field.kind === 'typename') out[field.responseKey] = root.entity.typeName;
    else out[field.responseKey] = field.write!(valueAt(found, field.slot, id));
  }
  return out;
}

function compileRoot(registry: Registry, field: FieldNode, variableTypes: Map<string, string>): RootField | string {
  const name = field.name.value;
  const entity = registry.entities.find((e) => e.singularField === name || e.pluralField === name);
  if (!entity) return `root field ${name} is not an entity lookup`;
  if (field.directives?.length) return `directives on ${name}`;
  const plural = entity.pluralField === name;
  const argName = plural ? 'ids' : 'id';
  const expectedType = plural ? '[ID!]!' : 'ID!';
  if (field.arguments?.length !== 1 || field.arguments[0]!.name.value !== argName) return `${name} must have exactly the argument ${argName}`;
  const argument = compileArgument(field.arguments[0]!.value, variableTypes, expectedType, plural);
  if (typeof argument === 'string') return argument;
  if (!field.selectionSet) return `${name} has no selection`;

  const viewFields = viewFieldsOf(entity);
  const fields: EntityField[] = [];
  const keys = new Set<string>();
  for (const s of field.selectionSet.selections) {
    if (s.kind !== Kind.FIELD || s.arguments?.length || s.directives?.length) return `unsupported selection under ${name}`;
    const key = s.alias?.value ?? s.name.value;
    if (key === '__proto__') return `response key __proto__ under ${name}`; // would set the prototype of a plain object
    if (keys.has(key)) return `response key ${key} used twice under ${name}`;
    keys.add(key);
    if (s.name.value === 'id' && !s.selectionSet) fields.push({ responseKey: key, kind: 'id', slot: -1 });
    else if (s.name.value === '__typename') fields.push({ responseKey: key, kind: 'typename', slot: -1 });
    else {
      const view = viewFields.get(s.name.value);
      if (!view) return `unknown field ${s.name.value} on ${entity.typeName}`;
      const write = compileView(entity, view, s.selectionSet);
      if (typeof write === 'string') return write;
      fields.push({ responseKey: key, kind: 'view', view, slot: -1, write });
    }
  }
  const selected = [...new Set(fields.filter((f) => f.view).map((f) => f.view!))];
  return {
    responseKey: field.alias?.value ?? name,
    entity,
    plural,
    argument,
    fields,
    existenceViews: selected.length > 0 ? selected : entity.views.map(activeVersionOf),
    existenceSlots: [],
  };
}

function compileArgument(value: ValueNode, variableTypes: Map<string, string>, expectedType: string, plural: boolean): RootField['argument'] | string {
  if (value.kind === Kind.VARIABLE) {
    const type = variableTypes.get(value.name.value);
    if (type !== expectedType) return `$${value.name.value} is ${type ?? 'undeclared'}, expected ${expectedType}`;
    return { variable: value.name.value };
  }
  if (!plural && value.kind === Kind.STRING) return { literal: value.value };
  if (plural && value.kind === Kind.LIST && value.values.every((v) => v.kind === Kind.STRING)) {
    return { literal: value.values.map((v) => (v as { value: string }).value) };
  }
  return 'argument is neither a variable nor a string literal';
}

function compileView(entity: Entity, view: ViewVersion, selectionSet: SelectionSetNode | undefined): ViewWriter | string {
  if (!selectionSet) return `${view.viewName} has no selection`;
  // Each selected field as its response key and a kind: the builder below is one loop over a
  // switch, no closure per field.
  const responseKeys: string[] = [];
  const kinds: PartKind[] = [];
  const features: string[] = [];
  const keys = new Set<string>();
  const typeName = viewTypeName(entity, view);
  for (const s of selectionSet.selections) {
    if (s.kind !== Kind.FIELD || s.arguments?.length || s.directives?.length || s.selectionSet) return `unsupported selection in ${view.viewName}`;
    const key = s.alias?.value ?? s.name.value;
    if (key === '__proto__') return `response key __proto__ in ${view.viewName}`; // would set the prototype of a plain object
    if (keys.has(key)) return `response key used twice in ${view.viewName}`;
    keys.add(key);
    const name = s.name.value;
    let kind: PartKind;
    if (name === 'eventTime') kind = PartKind.EventTime;
    else if (name === 'stale') kind = PartKind.Stale;
    else if (name === '__typename') kind = PartKind.TypeName;
    else {
      const feature = view.features.find((f) => f.name === name);
      if (!feature) return `unknown feature ${name} of ${view.viewName} v${view.version}`;
      kind = featureKind(feature);
    }
    responseKeys.push(key);
    kinds.push(kind);
    features.push(name);
  }
  if (responseKeys.length === 0) return `${view.viewName} has no selection`;
  const n = responseKeys.length;
  return (record) => {
    if (record === null) return null;
    const stale = record.stale;
    const values = record.values;
    // Properties in the same order every time: one hidden class per view selection.
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      switch (kinds[i]!) {
        case PartKind.EventTime: out[responseKeys[i]!] = isoTime(record.eventTimeMs); break;
        case PartKind.Stale: out[responseKeys[i]!] = stale; break;
        case PartKind.TypeName: out[responseKeys[i]!] = typeName; break;
        // Int and Float are finite numbers (the codec refuses others): JSON.stringify writes them as Apollo does.
        default: out[responseKeys[i]!] = stale ? null : values[features[i]!] ?? null;
      }
    }
    return out;
  };
}

/** What one selected field of a view writes. */
const enum PartKind { EventTime, Stale, TypeName, Number, String, Boolean, List }

function featureKind(feature: Feature): PartKind {
  if (feature.type.list) return PartKind.List;
  switch (feature.type.scalar) {
    case 'String': return PartKind.String;
    case 'Boolean': return PartKind.Boolean;
    default: return PartKind.Number;
  }
}

/**
 * `Date.toISOString()` of an event time, as the generic path's DateTime serializes it, without a
 * Date per value: the date part is made once per day (one entry, kept), the time of day from
 * tables. Outside 0000–9999 (where the ISO form changes shape) and for anything odd it is
 * toISOString itself.
 */
export function isoTime(ms: number): string {
  if (!(ms >= 0 && ms < 253402300800000) || !Number.isInteger(ms)) return new Date(ms).toISOString();
  const day = Math.floor(ms / 86_400_000);
  if (day !== isoDay) {
    isoDay = day;
    isoDatePrefix = new Date(day * 86_400_000).toISOString().slice(0, 11);
  }
  let rest = ms - day * 86_400_000;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const sec = Math.floor(rest / 1000);
  return isoDatePrefix + twoDigits[h]! + ':' + twoDigits[m]! + ':' + twoDigits[sec]! + '.' + threeDigits[rest - sec * 1000]! + 'Z';
}
let isoDay = -1;
let isoDatePrefix = '';
const twoDigits = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));
const threeDigits = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

function typeString(type: TypeNode): string {
  switch (type.kind) {
    case Kind.NON_NULL_TYPE: return `${typeString(type.type)}!`;
    case Kind.LIST_TYPE: return `[${typeString(type.type)}]`;
    case Kind.NAMED_TYPE: return type.name.value;
  }
}
