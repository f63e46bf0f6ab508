import {
  Kind, parse,
  type FieldNode, type OperationDefinitionNode, type SelectionSetNode, type TypeNode, type ValueNode,
} from 'graphql';
import type { Deadline } from '../runtime/deadline.js';
import { log } from '../runtime/log.js';
import type { PersistedQueryManifest } from '../schema/manifest.js';
import { viewFieldsOf, viewTypeName } from '../schema/sdl.js';
import type { Entity, Feature, Registry, ViewVersion } from '../schema/types.js';
import { activeVersionOf } from '../schema/types.js';
import type { FeatureValue } from '../store/codec.js';
import type { OnlineStore, ReadResult, StoredFeatures } from '../store/online-store.js';
import { readViewBatch, type PrimedReads } from './loaders.js';

/**
 * Persisted operations compiled, once at start-up, into a plan that reads the
 * store and writes the response JSON directly — the co-located subgraphs
 * answering a whole known operation without the query planner, graphql-js
 * execution or an intermediate result object (in the spirit of graphql-jit).
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

/** A writer of one view object, or `null` when the value is missing. */
type ViewWriter = (record: StoredFeatures | null) => string;

interface EntityField {
  readonly responseKey: string;
  /** `"responseKey":`, written once here rather than per entity. */
  readonly keyJson: string;
  readonly kind: 'id' | 'typename' | 'view';
  readonly view?: ViewVersion;
  readonly write?: ViewWriter;
}

interface RootField {
  readonly responseKey: string;
  /** `"responseKey":` */
  readonly keyJson: string;
  readonly entity: Entity;
  readonly plural: boolean;
  readonly argument: { variable: string } | { literal: string | string[] };
  readonly fields: readonly EntityField[];
  readonly typenameJson: string;
  /** The views whose values decide whether the entity exists. */
  readonly existenceViews: readonly ViewVersion[];
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
    if (keys.has(root.responseKey)) return `response key ${root.responseKey} used twice`;
    keys.add(root.responseKey);
    roots.push(root);
  }

  const allViews = [...new Set(roots.flatMap((r) => r.existenceViews))];
  return {
    name,
    views: allViews,
    async run(variables, operationName, deadline) {
      if (operationName !== undefined && operationName !== null && operationName !== name) return generic;
      const vars = (variables ?? {}) as Record<string, unknown>;
      if (typeof vars !== 'object' || Array.isArray(vars)) return generic;

      // Coerce arguments exactly as far as the generic path would accept them without an error.
      const idsOf: (string[] | string)[] = [];
      for (const root of roots) {
        const value = 'variable' in root.argument ? vars[root.argument.variable] : root.argument.literal;
        if (root.plural) {
          if (!Array.isArray(value) || value.length > maxBatchIds || !value.every((id) => typeof id === 'string')) return generic;
          idsOf.push(value as string[]);
        } else {
          if (typeof value !== 'string') return generic;
          idsOf.push(value);
        }
      }

      // One read per view version for all ids of the request, all issued at once.
      const wanted = new Map<ViewVersion, Map<string, number>>();
      for (const view of allViews) wanted.set(view, new Map());
      roots.forEach((root, i) => {
        const ids = idsOf[i]!;
        for (const view of root.existenceViews) {
          const index = wanted.get(view)!;
          for (const id of typeof ids === 'string' ? [ids] : ids) if (!index.has(id)) index.set(id, index.size);
        }
      });
      let failed = false;
      const results = await Promise.all(allViews.map(async (view): Promise<(ReadResult | Error)[]> => {
        const ids = [...wanted.get(view)!.keys()];
        if (ids.length === 0) return []; // as the generic path's DataLoaders: no ids, no store call
        let read: (ReadResult | Error)[];
        try {
          read = await readViewBatch(store, view, ids, deadline);
        } catch (error) {
          // Not a per-id failure but the whole read's: every id of the view carries it.
          read = ids.map(() => (error instanceof Error ? error : new Error(String(error))));
        }
        if (!failed && read.some((r) => r instanceof Error)) failed = true;
        return read;
      }));
      if (failed) {
        // The generic path reports the failed ids in its own words, from these reads, without reading again.
        const reads = new Map<ViewVersion, Map<string, ReadResult | Error>>();
        allViews.forEach((view, i) => {
          const byId = new Map<string, ReadResult | Error>();
          for (const [id, k] of wanted.get(view)!) byId.set(id, results[i]![k]!);
          reads.set(view, byId);
        });
        return { kind: 'generic', reads };
      }
      const byView = new Map<ViewVersion, { results: (StoredFeatures | null)[]; index: Map<string, number> }>();
      allViews.forEach((view, i) => byView.set(view, { results: results[i] as (StoredFeatures | null)[], index: wanted.get(view)! }));
      const value = (view: ViewVersion, id: string): StoredFeatures | null => {
        const v = byView.get(view)!;
        return v.results[v.index.get(id)!] ?? null;
      };

      let out = '{"data":{';
      roots.forEach((root, i) => {
        if (i > 0) out += ',';
        out += root.keyJson;
        const ids = idsOf[i]!;
        if (typeof ids === 'string') out += writeEntity(root, ids, value);
        else {
          out += '[';
          ids.forEach((id, k) => {
            if (k > 0) out += ',';
            out += writeEntity(root, id, value);
          });
          out += ']';
        }
      });
      return { kind: 'answered', body: out + '}}\n' };
    },
  };
}

function writeEntity(root: RootField, id: string, value: (view: ViewVersion, id: string) => StoredFeatures | null): string {
  let exists = false;
  for (const view of root.existenceViews) {
    if (value(view, id) !== null) {
      exists = true;
      break;
    }
  }
  if (!exists) return 'null';
  let out = '{';
  const fields = root.fields;
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i]!;
    if (i > 0) out += ',';
    out += field.keyJson;
    if (field.kind === 'id') out += JSON.stringify(id);
    else if (field.kind === 'typename') out += root.typenameJson;
    else out += field.write!(value(field.view!, id));
  }
  return out + '}';
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
    if (keys.has(key)) return `response key ${key} used twice under ${name}`;
    keys.add(key);
    const keyJson = `${JSON.stringify(key)}:`;
    if (s.name.value === 'id' && !s.selectionSet) fields.push({ responseKey: key, keyJson, kind: 'id' });
    else if (s.name.value === '__typename') fields.push({ responseKey: key, keyJson, kind: 'typename' });
    else {
      const view = viewFields.get(s.name.value);
      if (!view) return `unknown field ${s.name.value} on ${entity.typeName}`;
      const write = compileView(entity, view, s.selectionSet);
      if (typeof write === 'string') return write;
      fields.push({ responseKey: key, keyJson, kind: 'view', view, write });
    }
  }
  const selected = [...new Set(fields.filter((f) => f.view).map((f) => f.view!))];
  return {
    responseKey: field.alias?.value ?? name,
    keyJson: `${JSON.stringify(field.alias?.value ?? name)}:`,
    entity,
    plural,
    argument,
    fields,
    typenameJson: JSON.stringify(entity.typeName),
    existenceViews: selected.length > 0 ? selected : entity.views.map(activeVersionOf),
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
  type Part = { key: string; write: (r: StoredFeatures) => string };
  const parts: Part[] = [];
  const keys = new Set<string>();
  const typeName = JSON.stringify(viewTypeName(entity, view));
  for (const s of selectionSet.selections) {
    if (s.kind !== Kind.FIELD || s.arguments?.length || s.directives?.length || s.selectionSet) return `unsupported selection in ${view.viewName}`;
    const key = JSON.stringify(s.alias?.value ?? s.name.value) + ':';
    if (keys.has(key)) return `response key used twice in ${view.viewName}`;
    keys.add(key);
    const name = s.name.value;
    if (name === 'eventTime') parts.push({ key, write: (r) => `"${new Date(r.eventTimeMs).toISOString()}"` });
    else if (name === 'stale') parts.push({ key, write: (r) => (r.stale ? 'true' : 'false') });
    else if (name === '__typename') parts.push({ key, write: () => typeName });
    else {
      const feature = view.features.find((f) => f.name === name);
      if (!feature) return `unknown feature ${name} of ${view.viewName} v${view.version}`;
      const serialize = serializerFor(feature);
      parts.push({ key, write: (r) => (r.stale ? 'null' : serialize(r.values[name] ?? null)) });
    }
  }
  return (record) => {
    if (record === null) return 'null';
    let out = '{';
    for (let i = 0; i < parts.length; i++) {
      if (i > 0) out += ',';
      out += parts[i]!.key + parts[i]!.write(record);
    }
    return out + '}';
  };
}

/** JSON for one feature value of a known type: what JSON.stringify would write, without the type dispatch. */
function serializerFor(feature: Feature): (value: FeatureValue | null) => string {
  const scalar: (v: unknown) => string =
    feature.type.scalar === 'String' ? (v) => JSON.stringify(v)
    : feature.type.scalar === 'Boolean' ? (v) => (v ? 'true' : 'false')
    : (v) => String(v); // Int and Float: finite numbers (the codec refuses others), written as JSON writes them
  if (!feature.type.list) return (v) => (v === null ? 'null' : scalar(v));
  return (v) => (v === null ? 'null' : `[${(v as readonly unknown[]).map(scalar).join(',')}]`);
}

function typeString(type: TypeNode): string {
  switch (type.kind) {
    case Kind.NON_NULL_TYPE: return `${typeString(type.type)}!`;
    case Kind.LIST_TYPE: return `[${typeString(type.type)}]`;
    case Kind.NAMED_TYPE: return type.name.value;
  }
}
