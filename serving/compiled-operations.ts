import {
  Kind, parse,
  type FieldNode, type OperationDefinitionNode, type SelectionSetNode, type TypeNode, type ValueNode,
} from 'graphql';
import type { Deadline } from '../runtime/deadline.js';
import { log } from '../runtime/log.js';
import { fastPathRequests, type BoundCounter } from '../runtime/metrics.js';
import type { PersistedQueryManifest } from '../schema/manifest.js';
import { viewFieldsOf } from '../schema/sdl.js';
import type { Entity, Registry, ViewVersion } from '../schema/types.js';
import type { OnlineStore } from '../store/online-store.js';
import { assemblePlan, executePlan, viewSelection, type Plan, type PlanResult, type RootSpec, type ViewSelection } from './plan.js';

/**
 * Persisted operations compiled, once at start-up, into a plan (plan.ts): the
 * co-located subgraphs answering a whole known operation without the query
 * planner or graphql-js execution (in the spirit of graphql-jit). Running it
 * yields the plan's typed result; an encoder (encoders/) writes it in the
 * format the client asked for.
 *
 * Only operations whose every root field is an entity lookup of this registry
 * compile; anything else takes the generic federated path, and so does any
 * request the plan is not sure about (an unexpected variable shape, a batch
 * over the limit): `run` says why it does not fit. The JSON answer is
 * byte-for-byte the generic path's: test/integration/fast-path.test.ts runs
 * every persisted operation through both, fresh, stale, missing, failing and
 * partly failing.
 */
export interface CompiledOperation {
  readonly name: string;
  readonly plan: Plan;
  /** Every view version it reads (authorization checks them before running it). */
  readonly views: readonly ViewVersion[];
  /** `feature_gateway_fast_path_requests_total` of its JSON outcomes, bound once (runtime/metrics.ts). */
  readonly served: BoundCounter;
  readonly handedOver: BoundCounter;
  /** The plan's result for these variables, or why the request does not fit the plan. */
  run(variables: unknown, operationName: unknown, deadline?: Deadline): Promise<PlanResult | Unfit>;
}

/**
 * Why a request does not fit its operation's plan. The JSON door hands such a request to the
 * generic path, which answers it in its own words (and may accept it: GraphQL coerces a lone
 * string into a list, a number into an ID); a door without a generic path refuses it with this.
 */
export type Unfit =
  | { readonly kind: 'unfit'; readonly reason: 'operationName'; readonly given: unknown }
  | { readonly kind: 'unfit'; readonly reason: 'variables' }
  | { readonly kind: 'unfit'; readonly reason: 'variable'; readonly variable: string; readonly expected: string }
  | { readonly kind: 'unfit'; readonly reason: 'batch'; readonly size: number };

const notAnObject: Unfit = { kind: 'unfit', reason: 'variables' };

export class CompiledOperations {
  private readonly byId = new Map<string, CompiledOperation>();
  /** Manifest operations that did not compile, and why. */
  private readonly notCompiled = new Map<string, string>();

  constructor(registry: Registry, manifest: PersistedQueryManifest, store: OnlineStore, maxBatchIds: number) {
    for (const op of manifest.operations) {
      const compiled = compileOperation(registry, op.name, op.body, store, maxBatchIds);
      if (typeof compiled === 'string') {
        log.info({ operation: op.name, reason: compiled }, 'persisted operation not compiled; it takes the generic path');
        this.notCompiled.set(op.id, compiled);
      } else this.byId.set(op.id, compiled);
    }
  }

  get(id: string): CompiledOperation | undefined {
    return this.byId.get(id);
  }

  /** Why the manifest operation `id` has no compiled plan (undefined: it has one, or it is not in the manifest). */
  whyNotCompiled(id: string): string | undefined {
    return this.notCompiled.get(id);
  }

  get names(): string[] {
    return [...this.byId.values()].map((o) => o.name);
  }
}

/** A root field as compiled: its plan's spec, and how its ids come from the request. */
interface CompiledRoot {
  readonly spec: RootSpec;
  readonly argument: { variable: string } | { literal: string | string[] };
  /** The Unfit of a variable of the wrong shape, made once. */
  readonly wrongShape: Unfit;
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

  const roots: CompiledRoot[] = [];
  const keys = new Set<string>();
  for (const selection of op.selectionSet.selections) {
    if (selection.kind !== Kind.FIELD) return 'fragments at the root';
    const root = compileRoot(registry, selection, variableTypes);
    if (typeof root === 'string') return root;
    if (root.spec.responseKey === '__proto__') return 'response key __proto__ at the root'; // would set the prototype of a plain object
    if (keys.has(root.spec.responseKey)) return `response key ${root.spec.responseKey} used twice`;
    keys.add(root.spec.responseKey);
    roots.push(root);
  }

  const plan = assemblePlan(name, roots.map((r) => r.spec));
  const plural = plan.roots.map((r) => r.plural);
  return {
    name,
    plan,
    views: plan.views,
    served: fastPathRequests.bind({ operation: name, outcome: 'served', format: 'json' }),
    handedOver: fastPathRequests.bind({ operation: name, outcome: 'generic', format: 'json' }),
    // Not async: the one async layer is executePlan's (a promise layer fewer per request, decision 0027).
    run(variables, operationName, deadline) {
      if (operationName !== undefined && operationName !== null && operationName !== name) return Promise.resolve({ kind: 'unfit', reason: 'operationName', given: operationName });
      const vars = (variables ?? {}) as Record<string, unknown>;
      if (typeof vars !== 'object' || Array.isArray(vars)) return Promise.resolve(notAnObject);

      // Coerce arguments exactly as far as the generic path would accept them without an error.
      const idsOf = new Array<readonly string[] | string>(roots.length);
      for (let r = 0; r < roots.length; r++) {
        const root = roots[r]!;
        const value = 'variable' in root.argument ? vars[root.argument.variable] : root.argument.literal;
        if (plural[r]) {
          if (!Array.isArray(value)) return Promise.resolve(root.wrongShape);
          if (value.length > maxBatchIds) return Promise.resolve({ kind: 'unfit', reason: 'batch', size: value.length });
          for (let k = 0; k < value.length; k++) if (typeof value[k] !== 'string') return Promise.resolve(root.wrongShape);
          idsOf[r] = value as string[];
        } else {
          if (typeof value !== 'string') return Promise.resolve(root.wrongShape);
          idsOf[r] = value;
        }
      }
      return executePlan(plan, idsOf, store, deadline);
    },
  };
}

function compileRoot(registry: Registry, field: FieldNode, variableTypes: Map<string, string>): CompiledRoot | string {
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
  const fields: RootSpec['fields'][number][] = [];
  const keys = new Set<string>();
  for (const s of field.selectionSet.selections) {
    if (s.kind !== Kind.FIELD || s.arguments?.length || s.directives?.length) return `unsupported selection under ${name}`;
    const key = s.alias?.value ?? s.name.value;
    if (key === '__proto__') return `response key __proto__ under ${name}`; // would set the prototype of a plain object
    if (keys.has(key)) return `response key ${key} used twice under ${name}`;
    keys.add(key);
    if (s.name.value === 'id' && !s.selectionSet) fields.push({ responseKey: key, kind: 'id' });
    else if (s.name.value === '__typename') fields.push({ responseKey: key, kind: 'typename' });
    else {
      const view = viewFields.get(s.name.value);
      if (!view) return `unknown field ${s.name.value} on ${entity.typeName}`;
      const selection = compileView(entity, view, s.selectionSet);
      if (typeof selection === 'string') return selection;
      fields.push({ responseKey: key, kind: 'view', selection });
    }
  }
  const variable = 'variable' in argument ? argument.variable : argName;
  return {
    spec: { responseKey: field.alias?.value ?? name, entity, plural, fields },
    argument,
    wrongShape: { kind: 'unfit', reason: 'variable', variable, expected: expectedType },
  };
}

function compileArgument(value: ValueNode, variableTypes: Map<string, string>, expectedType: string, plural: boolean): CompiledRoot['argument'] | string {
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

function compileView(entity: Entity, view: ViewVersion, selectionSet: SelectionSetNode | undefined): ViewSelection | string {
  if (!selectionSet) return `${view.viewName} has no selection`;
  const parts: { responseKey: string; name: string }[] = [];
  for (const s of selectionSet.selections) {
    if (s.kind !== Kind.FIELD || s.arguments?.length || s.directives?.length || s.selectionSet) return `unsupported selection in ${view.viewName}`;
    parts.push({ responseKey: s.alias?.value ?? s.name.value, name: s.name.value });
  }
  return viewSelection(entity, view, parts);
}

function typeString(type: TypeNode): string {
  switch (type.kind) {
    case Kind.NON_NULL_TYPE: return `${typeString(type.type)}!`;
    case Kind.LIST_TYPE: return `[${typeString(type.type)}]`;
    case Kind.NAMED_TYPE: return type.name.value;
  }
}
