import type { ApolloServer, BaseContext } from '@apollo/server';
import {
  GraphQLError, Kind, OperationTypeNode, print, visit,
  type ASTNode, type DocumentNode, type FragmentDefinitionNode, type GraphQLFieldResolver,
  type GraphQLResolveInfo, type SelectionNode, type VariableDefinitionNode,
} from 'graphql';
import type { Entity } from '../../schema/types.js';
import type { CompiledOperation } from '../../serving/compiled-operations.js';
import { graphqlData } from '../../serving/encoders/graphql-json.js';
import { primedReadsOf } from '../../serving/plan.js';
import { primedReads } from '../../subgraphs/loaders.js';
import { mayReadView } from '../../auth/policy.js';
import { principalKey } from '../../auth/principal.js';
import { trustedOperation } from '../authorization.js';
import type { EntityResolver } from './schema.js';

/**
 * The payload of a change event: the entity field of `featureChanged`
 * (`user { … }`), resolved THROUGH THE GATEWAY when the event is sent
 * (decision 0013). Its selection is printed once per subscription into
 * `query ($id: ID!) { user(id: $id) { … } }` and run with
 * `apollo.executeOperation`, so a subscriber gets exactly what it selected,
 * planned and served like any query, in either deployment shape; co-located,
 * a query that compiles is answered by its compiled plan instead.
 */

export interface EntityQuery {
  readonly query: string;
  readonly idVariable: string;
  readonly variables: readonly string[];
  /** The query's compiled plan, when the store is in-process and the query compiles. */
  compiled?: CompiledOperation;
}

/**
 * Resolves fields below the entity from the gateway's response by response
 * key (aliases included). The gateway's response already holds its nulls
 * where a field failed (propagated to the nearest nullable field), and its
 * errors travel beside the data (`eventErrors`), so nothing here raises one.
 */
export const responseKeyResolver: GraphQLFieldResolver<unknown, unknown> = (source, _args, _context, info) => {
  if (source === null || typeof source !== 'object') return undefined;
  return (source as Record<string, unknown>)[String(info.path.key)];
};

export function entityResolver(apollo: ApolloServer<BaseContext>, compile?: (name: string, query: string) => CompiledOperation | string): EntityResolver {
  return async (entity, change, context, info) => {
    const key = String(info.path.key);
    let op = context.entityQueries.get(key);
    if (!op) {
      op = entityQuery(entity, info);
      const compiled = compile && op.variables.length === 0 ? compile(`FeatureChanged${entity.typeName}`, op.query) : undefined;
      if (compiled && typeof compiled !== 'string') op.compiled = compiled;
      context.entityQueries.set(key, op);
    }
    const variables: Record<string, unknown> = { [op.idVariable]: change.id };
    for (const name of op.variables) if (Object.hasOwn(info.variableValues, name)) variables[name] = info.variableValues[name];

    // One store read per view and a precompiled writer, instead of the planner and graphql-js per event;
    // a view the subscriber may not read is answered by the generic path, with its field error.
    const readable = op.compiled?.views.every((view) => mayReadView(context.principal, view)) ?? false;
    const compiled = readable ? await op.compiled!.run(variables, undefined) : undefined;
    // The plan's data object itself: no JSON text written here to be parsed again (the transport writes it, once).
    if (compiled?.kind === 'result' && !compiled.failed) return graphqlData(compiled)[entity.singularField] ?? null;
    // The entity query is the gateway's own (no ad-hoc rights needed), read with the subscriber's principal
    // (per-view roles); when some read failed the gateway reports it from what was read, without reading again.
    const contextValue = {
      [trustedOperation]: true,
      ...(context.principal ? { [principalKey]: context.principal } : {}),
      ...(compiled?.kind === 'result' ? { [primedReads]: primedReadsOf(compiled) } : {}),
    };

    const response = await apollo.executeOperation({ query: op.query, variables }, { contextValue });
    if (response.body.kind !== 'single') throw new GraphQLError('the gateway answered with an incremental response');
    const { data, errors } = response.body.singleResult;
    // The gateway's formatted errors go to the subscriber as they are, their paths moved below this field
    // (`user.stats` → `featureChanged.user.stats`); the source locations were the entity query's, not the subscriber's.
    if (errors?.length) {
      const at = pathOf(info);
      for (const { message, path, extensions } of errors) {
        const { http: _http, ...rest } = (extensions ?? {}) as Record<string, unknown>;
        context.eventErrors.push({ message, path: [...at, ...(path ?? []).slice(1)], extensions: rest });
      }
    }
    return (data as Record<string, unknown> | null | undefined)?.[entity.singularField] ?? null;
  };
}

/** The response path of a field, as an array. */
function pathOf(info: GraphQLResolveInfo): (string | number)[] {
  const path: (string | number)[] = [];
  for (let step: GraphQLResolveInfo['path'] | undefined = info.path; step; step = step.prev) path.unshift(step.key);
  return path;
}

/** `query FeatureChangedUser($id: ID!) { user(id: $id) { <the selection> } } <its fragments>`, printed once per subscription. */
function entityQuery(entity: Entity, info: GraphQLResolveInfo): EntityQuery {
  const selections: SelectionNode[] = info.fieldNodes.flatMap((node) => node.selectionSet?.selections ?? []);
  const fragments = new Map<string, FragmentDefinitionNode>();
  const used = new Set<string>();
  const scan = (node: ASTNode): void => {
    visit(node, {
      Variable(variable) {
        used.add(variable.name.value);
      },
      FragmentSpread(spread) {
        const name = spread.name.value;
        const fragment = info.fragments[name];
        if (fragment && !fragments.has(name)) {
          fragments.set(name, fragment);
          scan(fragment);
        }
      },
    });
  };
  for (const selection of selections) scan(selection);

  let idVariable = 'id';
  for (let n = 2; used.has(idVariable); n++) idVariable = `id${n}`;
  const definitions: VariableDefinitionNode[] = (info.operation.variableDefinitions ?? []).filter((d) => used.has(d.variable.name.value));
  const name = (value: string) => ({ kind: Kind.NAME, value }) as const;
  const document: DocumentNode = {
    kind: Kind.DOCUMENT,
    definitions: [
      {
        kind: Kind.OPERATION_DEFINITION,
        operation: OperationTypeNode.QUERY,
        name: name(`FeatureChanged${entity.typeName}`),
        variableDefinitions: [
          {
            kind: Kind.VARIABLE_DEFINITION,
            variable: { kind: Kind.VARIABLE, name: name(idVariable) },
            type: { kind: Kind.NON_NULL_TYPE, type: { kind: Kind.NAMED_TYPE, name: name('ID') } },
          },
          ...definitions,
        ],
        selectionSet: {
          kind: Kind.SELECTION_SET,
          selections: [
            {
              kind: Kind.FIELD,
              name: name(entity.singularField),
              arguments: [{ kind: Kind.ARGUMENT, name: name('id'), value: { kind: Kind.VARIABLE, name: name(idVariable) } }],
              selectionSet: { kind: Kind.SELECTION_SET, selections },
            },
          ],
        },
      },
      ...fragments.values(),
    ],
  };
  return { query: print(document), idVariable, variables: definitions.map((d) => d.variable.name.value) };
}


/**
 * The subscription's view filter narrowed to the views its principal may
 * read: an explicitly named view (in `views` or `versions`) it may not read is
 * refused (FORBIDDEN); with neither, changes of unreadable views are not
 * delivered at all, since even the fact of a change is information about the
 * value.
 */

