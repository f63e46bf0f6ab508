import type { ApolloServerPlugin, BaseContext } from '@apollo/server';
import {
  GraphQLError, Kind, visit,
  type DocumentNode, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionSetNode, type ValueNode,
} from 'graphql';
import { ErrorCode } from '../runtime/errors.js';
import { rejectedRequests } from '../runtime/metrics.js';

export interface Limits {
  readonly maxQueryDepth: number;
  readonly maxBatchIds: number;
}

/**
 * Refuses operations that are too deep or ask for too many entities at once,
 * after validation and before planning, with documented error codes. A
 * validation rule was considered, but Apollo Server rewrites the code of
 * every validation error to GRAPHQL_VALIDATION_FAILED; an error thrown from
 * `didResolveOperation` keeps its code and HTTP status.
 */
export function limitsPlugin(limits: Limits): ApolloServerPlugin<BaseContext> {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ document, operation, request }) {
          if (!operation) return;
          const fragments = fragmentsOf(document);
          const depth = selectionDepth(operation.selectionSet, fragments, new Set());
          if (depth > limits.maxQueryDepth) {
            rejectedRequests.inc({ code: ErrorCode.QueryTooDeep });
            throw new GraphQLError(`Query depth ${depth} exceeds the limit of ${limits.maxQueryDepth} (MAX_QUERY_DEPTH)`, {
              extensions: { code: ErrorCode.QueryTooDeep, max: limits.maxQueryDepth, http: { status: 400 } },
            });
          }
          const largest = largestList(document, operation, request.variables ?? {});
          if (largest > limits.maxBatchIds) {
            rejectedRequests.inc({ code: ErrorCode.BatchTooLarge });
            throw new GraphQLError(`A list argument holds ${largest} items; at most ${limits.maxBatchIds} are allowed per batch (MAX_BATCH_IDS)`, {
              extensions: { code: ErrorCode.BatchTooLarge, max: limits.maxBatchIds, http: { status: 400 } },
            });
          }
        },
      };
    },
  };
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
 */
export function selectionDepth(set: SelectionSetNode | undefined, fragments: Map<string, FragmentDefinitionNode>, active: Set<string>): number {
  if (!set) return 0;
  let max = 0;
  for (const s of set.selections) {
    let d = 0;
    if (s.kind === Kind.FIELD) {
      if (s.name.value.startsWith('__')) continue;
      d = 1 + selectionDepth(s.selectionSet, fragments, active);
    } else if (s.kind === Kind.INLINE_FRAGMENT) {
      d = selectionDepth(s.selectionSet, fragments, active);
    } else {
      const name = s.name.value;
      const fragment = fragments.get(name);
      if (!fragment || active.has(name)) continue;
      active.add(name);
      d = selectionDepth(fragment.selectionSet, fragments, active);
      active.delete(name);
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
