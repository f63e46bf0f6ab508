import { buildSubgraphSchema } from '@apollo/subgraph';
import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import { GraphQLError, parse, type DocumentNode, type GraphQLResolveInfo, type GraphQLSchema } from 'graphql';
import { mayReadView, viewRefusalMessage } from '../auth/policy.js';
import { principalOf } from '../auth/principal.js';
import { ErrorCode } from '../runtime/errors.js';
import { entitySubgraphSdl, viewFieldsOf } from '../schema/sdl.js';
import type { Entity, Registry, ViewVersion } from '../schema/types.js';
import { activeVersionOf } from '../schema/types.js';
import type { OnlineStore, StoredFeatures } from '../store/online-store.js';
import { LoaderScope } from './loaders.js';
import { pushResolvers, type ChangeSink } from './push.js';
import { registryMetadata } from './registry-metadata.js';
import { selectedFieldNames } from './selection.js';

/**
 * One factory for every entity subgraph: the SDL and the resolvers both come
 * from the registry, so adding a view to the registry adds it to the graph.
 */
export interface EntitySubgraph {
  readonly name: string;
  readonly entity: Entity;
  readonly sdl: string;
  readonly typeDefs: DocumentNode;
  readonly schema: GraphQLSchema;
}

export interface SubgraphDeps {
  readonly store: OnlineStore;
  readonly maxBatchIds: number;
  /** PUSH_MAX_FUTURE_MS: how far ahead of now a pushed event time may be. */
  readonly pushMaxFutureMs: number;
  /** Where push mutations produce their change events (`feature-updates`); absent: no change feed. */
  readonly changes?: ChangeSink;
}

/** What an entity field resolves to; views hang off it. */
interface EntityRef {
  readonly id: string;
}

/** The GraphQL shape of one view value (features spread in, plus metadata). */
type ViewObject = Record<string, unknown> & { eventTime: string; stale: boolean };

export function buildEntitySubgraph(registry: Registry, entityName: string, deps: SubgraphDeps): EntitySubgraph {
  const entity = registry.entities.find((e) => e.name === entityName);
  if (!entity) {
    throw new Error(`no entity "${entityName}" in ${registry.file}; known: ${registry.entities.map((e) => e.name).join(', ')}`);
  }
  const sdl = entitySubgraphSdl(entity);
  const typeDefs = parse(sdl);
  const scope = new LoaderScope(deps.store);

  // Field name on the entity type → the view version it reads.
  const viewFields = viewFieldsOf(entity);
  const activeVersions = entity.views.map(activeVersionOf);

  /**
   * An entity exists when any of its views has a stored value (fresh or
   * stale); otherwise the entity field is null. The check reads only the
   * views the query selects (all active ones if it selects none), through
   * the same loaders the view fields then hit, so it costs no extra read.
   * A view that failed (its shard down, the deadline passed) does not hide
   * the entity when another view has a value: only that view's field then
   * errors. When no view has a value and one failed, whether the entity
   * exists is unknown, and the entity itself answers that failure (an Error
   * in the list fails that one item, not the list).
   */
  const resolveEntities = async (context: unknown, ids: readonly string[], info: GraphQLResolveInfo): Promise<(EntityRef | Error | null)[]> => {
    if (ids.length > deps.maxBatchIds) {
      throw new GraphQLError(`${ids.length} ids requested; at most ${deps.maxBatchIds} per batch (MAX_BATCH_IDS)`, {
        extensions: { code: ErrorCode.BatchTooLarge, max: deps.maxBatchIds },
      });
    }
    const selected = [...selectedFieldNames(info, entity.typeName)]
      .map((name) => viewFields.get(name))
      .filter((v): v is ViewVersion => v !== undefined);
    // Existence is decided by the views the caller may read: a view it may not read neither
    // costs a read nor tells it whether the entity exists.
    const principal = principalOf(context);
    const views = (selected.length > 0 ? [...new Set(selected)] : activeVersions).filter((view) => mayReadView(principal, view));
    if (views.length === 0) return ids.map((id) => ({ id }));
    const loaders = scope.for(context);
    const perView = await Promise.all(views.map((view) => loaders.forView(view).loadMany(ids)));
    return ids.map((id, i) => {
      let failure: Error | undefined;
      for (const values of perView) {
        const v = values[i];
        if (v instanceof Error) failure ??= v;
        else if (v) return { id };
      }
      return failure ?? null;
    });
  };

  const entityResolvers: Record<string, unknown> = {
    __resolveReference: async (ref: EntityRef, context: unknown, info: GraphQLResolveInfo) =>
      (await resolveEntities(context, [ref.id], info))[0] ?? null,
  };
  for (const [field, view] of viewFields) {
    entityResolvers[field] = async (parent: EntityRef, _args: unknown, context: unknown) => {
      if (!mayReadView(principalOf(context), view)) throw forbiddenView(view);
      return toViewObject(await scope.for(context).forView(view).load(parent.id));
    };
  }

  const meta = registryMetadata(registry);
  const mutations = pushResolvers(entity, {
    store: deps.store,
    limits: { maxBatchIds: deps.maxBatchIds, maxFutureMs: deps.pushMaxFutureMs },
    changes: deps.changes,
  });
  const resolvers = {
    Query: {
      [entity.singularField]: async (_: unknown, args: { id: string }, context: unknown, info: GraphQLResolveInfo) =>
        (await resolveEntities(context, [args.id], info))[0] ?? null,
      [entity.pluralField]: (_: unknown, args: { ids: string[] }, context: unknown, info: GraphQLResolveInfo) =>
        resolveEntities(context, args.ids, info),
      featureRegistry: () => meta,
    },
    ...(Object.keys(mutations).length > 0 ? { Mutation: mutations } : {}),
    [entity.typeName]: entityResolvers,
  } as unknown as GraphQLResolverMap<unknown>;

  const schema = buildSubgraphSchema({ typeDefs, resolvers });
  return { name: entity.name, entity, sdl, typeDefs, schema };
}

export function buildAllSubgraphs(registry: Registry, deps: SubgraphDeps): EntitySubgraph[] {
  return registry.entities.map((e) => buildEntitySubgraph(registry, e.name, deps));
}

/** The error on a view field its caller may not read: that field alone fails (README, "Roles"). */
export function forbiddenView(view: ViewVersion): GraphQLError {
  return new GraphQLError(viewRefusalMessage(view), {
    extensions: { code: ErrorCode.Forbidden, view: view.viewName },
  });
}

/** Missing → null; stale → eventTime and `stale: true` with every feature null (decision 3). */
function toViewObject(record: StoredFeatures | null): ViewObject | null {
  if (record === null) return null;
  const eventTime = new Date(record.eventTimeMs).toISOString();
  if (record.stale) return { eventTime, stale: true };
  return { ...record.values, eventTime, stale: false };
}
