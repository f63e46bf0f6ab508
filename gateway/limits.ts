import type { ApolloServerPlugin, BaseContext } from '@apollo/server';
import {
  GraphQLError, Kind, visit,
  type DocumentNode, type FieldNode, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionSetNode, type ValueNode,
} from 'graphql';
import { ErrorCode } from '../runtime/errors.js';
import type { Admission, Refusal } from '../runtime/graphql-http.js';
import { rejectedRequests } from '../runtime/metrics.js';
import { subscriptionTransports } from '../runtime/negotiation.js';

export interface Limits {
  readonly maxQueryDepth: number;
  readonly maxBatchIds: number;
  readonly maxQueryCost: number;
}

/**
 * Refuses a query text nested deeper than `maxNesting` brackets before
 * anything parses it: graphql-js and the query planner recurse once per
 * level, and some thousand nested inline fragments or list values overflow
 * the stack (a 500). MAX_QUERY_DEPTH cannot catch these: it counts fields.
 */
export function nestingAdmission(maxNesting: number): Admission {
  return (operation) => {
    if (typeof operation.query !== 'string') return undefined;
    const nesting = queryNesting(operation.query, maxNesting);
    if (nesting <= maxNesting) return undefined;
    return {
      status: 400,
      code: ErrorCode.QueryTooDeep,
      message: `The query nests brackets deeper than ${maxNesting} levels (MAX_QUERY_NESTING)`,
    };
  };
}

/**
 * The deepest nesting of `{`, `[` and `(` in GraphQL source text, outside
 * strings and comments; stops counting once past `stopAbove`.
 */
export function queryNesting(text: string, stopAbove = Infinity): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b || c === 0x28) {
      depth++;
      if (depth > max) max = depth;
      if (max > stopAbove) return max;
    } else if (c === 0x7d || c === 0x5d || c === 0x29) {
      if (depth > 0) depth--;
    } else if (c === 0x23) {
      // A comment runs to the end of the line.
      while (i < text.length && text.charCodeAt(i) !== 0x0a && text.charCodeAt(i) !== 0x0d) i++;
    } else if (c === 0x22) {
      if (text.startsWith('"""', i)) {
        // Block strings escape only \"""; an unterminated one is the parser's to report.
        let close = text.indexOf('"""', i + 3);
        while (close > 0 && text.charCodeAt(close - 1) === 0x5c) close = text.indexOf('"""', close + 3);
        i = close < 0 ? text.length : close + 2;
      } else {
        for (i++; i < text.length; i++) {
          const s = text.charCodeAt(i);
          if (s === 0x5c) i++;
          else if (s === 0x22 || s === 0x0a || s === 0x0d) break;
        }
      }
    }
  }
  return max;
}

/**
 * Refuses operations that are too deep or ask for too many entities at once,
 * after validation and before planning, with documented error codes. A
 * validation rule was considered, but Apollo Server rewrites the code of
 * every validation error to GRAPHQL_VALIDATION_FAILED; an error thrown from
 * `didResolveOperation` keeps its code and HTTP status.
 *
 * It also refuses a request that names no operation the API serves (an
 * unknown `operationName`, several operations and no name, an operation
 * type the schema has no root type for, a subscription over HTTP): the gateway's executor would otherwise fail on
 * them with an uncoded 500.
 */
export function limitsPlugin(limits: Limits): ApolloServerPlugin<BaseContext> {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ document, operation, request, schema }) {
          if (!operation) throw unresolvedOperation(request.operationName);
          if (!schema.getRootType(operation.operation)) {
            rejectedRequests.inc({ code: ErrorCode.OperationNotSupported });
            const message = operation.operation === 'subscription'
              ? `Subscriptions are served on this path over ${subscriptionTransports}; this request asked for none of them`
              : `This API serves no ${operation.operation} operations; it answers queries`;
            throw new GraphQLError(message, { extensions: { code: ErrorCode.OperationNotSupported, http: { status: 400 } } });
          }
          const refusal = operationLimitError(document, operation, request.variables ?? {}, limits);
          if (refusal) throw refusal;
        },
      };
    },
  };
}

/**
 * MAX_QUERY_DEPTH, MAX_QUERY_COST and MAX_BATCH_IDS of a resolved operation:
 * the one check of these limits every GraphQL door applies (HTTP queries here,
 * subscriptions on every transport), with one wording. Counted when refused.
 */
export function operationLimitError(document: DocumentNode, operation: OperationDefinitionNode, variables: Record<string, unknown>, limits: Limits): GraphQLError | undefined {
  const depth = selectionDepth(operation.selectionSet, fragmentsOf(document), new Set());
  if (depth > limits.maxQueryDepth) {
    rejectedRequests.inc({ code: ErrorCode.QueryTooDeep });
    return new GraphQLError(`Query depth ${depth} exceeds the limit of ${limits.maxQueryDepth} (MAX_QUERY_DEPTH)`, {
      extensions: { code: ErrorCode.QueryTooDeep, max: limits.maxQueryDepth, http: { status: 400 } },
    });
  }
  const cost = operationCost(document, operation, variables);
  if (cost > limits.maxQueryCost) return queryTooCostly(cost, limits.maxQueryCost);
  const largest = largestList(document, operation, variables);
  if (largest > limits.maxBatchIds) return batchTooLargeError(largest, limits.maxBatchIds);
  return undefined;
}

/** An `operationName` that names no operation of the document, or none given for several (counted). */
export function unresolvedOperation(operationName: unknown): GraphQLError {
  rejectedRequests.inc({ code: ErrorCode.OperationResolutionFailure });
  const message = operationName
    ? `Unknown operation named "${String(operationName)}".`
    : 'Must provide operation name if query contains multiple operations.';
  return new GraphQLError(message, { extensions: { code: ErrorCode.OperationResolutionFailure, http: { status: 400 } } });
}

/** A list argument over MAX_BATCH_IDS, as a GraphQL error (counted). */
export function batchTooLargeError(largest: number, max: number): GraphQLError {
  rejectedRequests.inc({ code: ErrorCode.BatchTooLarge });
  const refusal = batchTooLarge('A list argument holds', largest, max);
  return new GraphQLError(refusal.message, { extensions: { code: refusal.code, max, http: { status: refusal.status } } });
}

export function queryTooCostly(cost: number, max: number): GraphQLError {
  rejectedRequests.inc({ code: ErrorCode.QueryTooCostly });
  const refusal = tooCostly(cost, max);
  return new GraphQLError(refusal.message, { extensions: { code: refusal.code, cost, max, http: { status: refusal.status } } });
}

/**
 * MAX_BATCH_IDS and MAX_QUERY_COST as refusals, in one wording for every door (GraphQL above,
 * the Feast endpoint with its entity rows × features). `what` says what holds the ids.
 */
export function batchTooLarge(what: string, items: number, max: number): Refusal {
  return { status: 400, code: ErrorCode.BatchTooLarge, message: `${what} ${items} items; at most ${max} are allowed per batch (MAX_BATCH_IDS)` };
}

export function tooCostly(cost: number, max: number): Refusal {
  return {
    status: 400, code: ErrorCode.QueryTooCostly,
    message: `Query cost ${cost} (entities × features requested) exceeds the limit of ${max} (MAX_QUERY_COST); ask for fewer ids or fields per request`,
  };
}

/**
 * What an operation costs the store and the encoder: for each root field, the
 * entities it asks for (the longest list among its arguments, else 1) times
 * the leaf fields it selects (features and metadata; fragments expanded, each
 * occurrence counted, so aliases cost too). Introspection costs nothing here;
 * its size is fixed by the schema. Each fragment is counted once and its
 * count reused, so fragments spreading fragments twice over cost linear time
 * to measure, however large the count they add up to.
 */
export function operationCost(document: DocumentNode, operation: OperationDefinitionNode, variables: Record<string, unknown>): number {
  return costFunction(document, operation)(variables);
}

/**
 * The cost of an operation as a function of its variables: the document is
 * walked once, so a persisted operation's cost is a few lookups per request.
 */
export function costFunction(document: DocumentNode, operation: OperationDefinitionNode): (variables: Record<string, unknown>) => number {
  const fragments = fragmentsOf(document);
  const defaults = new Map<string, ValueNode>();
  for (const def of operation.variableDefinitions ?? []) if (def.defaultValue) defaults.set(def.variable.name.value, def.defaultValue);
  const leaves = memoized(fragments, (set, recurse) => {
    let n = 0;
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) n += s.selectionSet ? recurse(s.selectionSet) : s.name.value === '__typename' ? 0 : 1;
      else if (s.kind === Kind.INLINE_FRAGMENT) n += recurse(s.selectionSet);
      else n += recurse(s.name.value);
    }
    return n;
  });
  // Each root field node and how many times it occurs once fragments are expanded. Counted per
  // fragment once (memoized), so fragments on Query spreading each other twice over stay linear.
  const done = new Map<string, Map<FieldNode, number>>();
  const occurrences = (set: SelectionSetNode, active: Set<string>): Map<FieldNode, number> => {
    const out = new Map<FieldNode, number>();
    const add = (from: Map<FieldNode, number>): void => {
      for (const [field, n] of from) out.set(field, (out.get(field) ?? 0) + n);
    };
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) {
        if (!s.name.value.startsWith('__')) out.set(s, (out.get(s) ?? 0) + 1);
      } else if (s.kind === Kind.INLINE_FRAGMENT) add(occurrences(s.selectionSet, active));
      else {
        const name = s.name.value;
        let known = done.get(name);
        if (!known) {
          const fragment = fragments.get(name);
          if (!fragment || active.has(name)) continue;
          active.add(name);
          known = occurrences(fragment.selectionSet, active);
          active.delete(name);
          done.set(name, known);
        }
        add(known);
      }
    }
    return out;
  };
  const roots = [...occurrences(operation.selectionSet, new Set())].map(([field, times]) => ({
    times,
    lists: (field.arguments ?? []).map((a) => a.value),
    leaves: Math.max(1, field.selectionSet ? leaves(field.selectionSet) : 1),
  }));
  return (variables) => {
    let cost = 0;
    for (const root of roots) {
      let entities = 1;
      for (const value of root.lists) entities = Math.max(entities, listLength(value, variables, defaults));
      cost += root.times * entities * root.leaves;
    }
    return cost;
  };
}

/** How many items an argument passes: a list literal, or a variable's list (its default when absent). */
function listLength(value: ValueNode, variables: Record<string, unknown>, defaults: ReadonlyMap<string, ValueNode>): number {
  if (value.kind === Kind.LIST) return value.values.length;
  if (value.kind !== Kind.VARIABLE) return 0;
  const name = value.name.value;
  if (Object.hasOwn(variables, name)) return Array.isArray(variables[name]) ? (variables[name] as unknown[]).length : 0;
  const fallback = defaults.get(name);
  return fallback?.kind === Kind.LIST ? fallback.values.length : 0;
}

/**
 * A sum over a selection set whose fragment spreads are evaluated once per
 * fragment name. A fragment that (invalidly) reaches itself counts 0 there.
 */
function memoized(
  fragments: Map<string, FragmentDefinitionNode>,
  sum: (set: SelectionSetNode, recurse: (target: SelectionSetNode | string) => number) => number,
): (set: SelectionSetNode) => number {
  const done = new Map<string, number>();
  const active = new Set<string>();
  const recurse = (target: SelectionSetNode | string): number => {
    if (typeof target !== 'string') return sum(target, recurse);
    const known = done.get(target);
    if (known !== undefined) return known;
    const fragment = fragments.get(target);
    if (!fragment || active.has(target)) return 0;
    active.add(target);
    const n = sum(fragment.selectionSet, recurse);
    active.delete(target);
    done.set(target, n);
    return n;
  };
  return (set) => sum(set, recurse);
}

function fragmentsOf(document: DocumentNode): Map<string, FragmentDefinitionNode> {
  const out = new Map<string, FragmentDefinitionNode>();
  for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) out.set(def.name.value, def);
  return out;
}

/**
 * Depth in fields, fragments expanded. Introspection (`__schema`, `__type`)
 * is not counted: its depth is fixed by the spec, and Sandbox needs it.
 * Validation has already rejected fragment cycles; `active` guards anyway.
 * Each fragment's depth is computed once (`memo`): a fragment spread twice
 * by a fragment spread twice … would otherwise cost 2^n walks, and a 1 kB
 * query could hold the event loop for minutes.
 */
export function selectionDepth(
  set: SelectionSetNode | undefined,
  fragments: Map<string, FragmentDefinitionNode>,
  active: Set<string>,
  memo: Map<string, number> = new Map(),
): number {
  if (!set) return 0;
  let max = 0;
  for (const s of set.selections) {
    let d = 0;
    if (s.kind === Kind.FIELD) {
      if (s.name.value.startsWith('__')) continue;
      d = 1 + selectionDepth(s.selectionSet, fragments, active, memo);
    } else if (s.kind === Kind.INLINE_FRAGMENT) {
      d = selectionDepth(s.selectionSet, fragments, active, memo);
    } else {
      const name = s.name.value;
      const known = memo.get(name);
      if (known !== undefined) {
        d = known;
      } else {
        const fragment = fragments.get(name);
        if (!fragment || active.has(name)) continue;
        active.add(name);
        d = selectionDepth(fragment.selectionSet, fragments, active, memo);
        active.delete(name);
        memo.set(name, d);
      }
    }
    if (d > max) max = d;
  }
  return max;
}

/** The longest list passed to any argument, literal or by variable, in the operation or its fragments. */
function largestList(document: DocumentNode, operation: OperationDefinitionNode, variables: Record<string, unknown>): number {
  let largest = 0;
  const consider = (n: number): void => {
    if (n > largest) largest = n;
  };
  // A variable the request leaves out takes its default value, which can be a list too.
  const defaults = new Map<string, ValueNode>();
  for (const def of operation.variableDefinitions ?? []) if (def.defaultValue) defaults.set(def.variable.name.value, def.defaultValue);
  const scan = (node: OperationDefinitionNode | FragmentDefinitionNode): void => {
    visit(node, {
      Argument(arg) {
        if (arg.value.kind === Kind.LIST) consider(arg.value.values.length);
        if (arg.value.kind === Kind.VARIABLE) {
          const name = arg.value.name.value;
          if (Object.hasOwn(variables, name)) {
            const value = variables[name];
            if (Array.isArray(value)) consider(value.length);
          } else {
            const fallback = defaults.get(name);
            if (fallback?.kind === Kind.LIST) consider(fallback.values.length);
          }
        }
      },
    });
  };
  scan(operation);
  for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) scan(def);
  return largest;
}
