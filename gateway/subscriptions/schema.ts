import {
  GraphQLError, assertValidSchema, buildASTSchema, isObjectType, isScalarType, parse, printSchema,
  type GraphQLObjectType, type GraphQLSchema,
  type GraphQLFieldResolver, type GraphQLFormattedError, type GraphQLResolveInfo,
} from 'graphql';
import type { FeatureChange } from '../../eventlog/change-event.js';
import { ErrorCode } from '../../runtime/errors.js';
import { rejectedRequests } from '../../runtime/metrics.js';
import { entityEnumValue, liveOperationTypeNames, subscriptionSdl, subscriptionTypeNames } from '../../schema/subscription-sdl.js';
import type { Entity, Registry } from '../../schema/types.js';
import { mayReadView } from '../../auth/policy.js';
import type { Principal } from '../../auth/principal.js';
import type { ChangeHub, ChangeStream, ConnectionStreams, FeatureChangedArgs } from './hub.js';
import { parseJsonObject, parseJsonObjectLiteral, type LiveOperationArgs, type LiveOperations, type LiveOperationUpdate } from './live-operations.js';
import type { EntityQuery } from './payload.js';

/** The context of one subscription's execution, on every transport. */
export interface SubscriptionContext {
  /** The connection's principal (undefined when the gateway authenticates no one). */
  readonly principal?: Principal | undefined;
  /** The stream opened while the subscribe request was checked; reused when the transport subscribes. */
  stream?: ChangeStream;
  /** The streams of the subscription's connection. */
  readonly connection: ConnectionStreams;
  /** Per entity field (by response key): the printed gateway query for its selection. */
  readonly entityQueries: Map<string, EntityQuery>;
  /** The gateway's errors of the event being resolved, added to its result as they are (core.ts). */
  readonly eventErrors: GraphQLFormattedError[];
}

export type EntityResolver = (entity: Entity, change: FeatureChange, context: SubscriptionContext, info: GraphQLResolveInfo) => Promise<unknown>;

/**
 * The API schema plus the subscription schema generated from the registry
 * (schema/subscription-sdl.ts), with its resolvers attached. The API schema
 * is copied through its SDL: Apollo Server wraps the resolvers of the
 * gateway schema's own type objects (for its plugins), and those wrappers
 * would bypass the response-key resolver the entity fields need here.
 */
export function buildSubscriptionSchema(
  gatewaySchema: GraphQLSchema, registry: Registry, hub: ChangeHub, resolveEntity: EntityResolver, maxBatchIds: number, live?: LiveOperations,
): GraphQLSchema {
  const apiSdl = printSchema(gatewaySchema);
  const api = buildASTSchema(parse(apiSdl));
  for (const name of [...subscriptionTypeNames, ...(live ? liveOperationTypeNames : [])]) {
    if (api.getType(name)) throw new Error(`the API schema already has a type ${name}; subscriptions cannot add theirs`);
  }
  if (api.getSubscriptionType()) throw new Error('the API schema already has a subscription type');
  for (const entity of registry.entities) {
    if (!isObjectType(api.getType(entity.typeName))) throw new Error(`the API schema has no object type ${entity.typeName} for entity ${entity.name}`);
  }

  const schema = buildASTSchema(parse(`${apiSdl}\n\n${subscriptionSdl(registry, maxBatchIds, live?.operationNames)}`));
  const entityOfEnum = new Map(registry.entities.map((e) => [entityEnumValue(e.name), e.name]));
  const change = schema.getType('FeatureChange');
  const subscription = schema.getSubscriptionType();
  if (!isObjectType(change) || !subscription) throw new Error('the subscription SDL lacks FeatureChange or Subscription');

  const fields = change.getFields();
  const plain = (read: (c: FeatureChange) => unknown): GraphQLFieldResolver<FeatureChange, SubscriptionContext> => (c) => read(c);
  fields.entity!.resolve = plain((c) => entityEnumValue(c.entity));
  fields.id!.resolve = plain((c) => c.id);
  fields.view!.resolve = plain((c) => c.view);
  fields.version!.resolve = plain((c) => c.version);
  fields.eventTime!.resolve = plain((c) => c.eventTime);
  for (const entity of registry.entities) {
    fields[entity.singularField]!.resolve = (c: FeatureChange, _args, context: SubscriptionContext, info) =>
      c.entity === entity.name ? resolveEntity(entity, c, context, info) : null;
  }

  const featureChanged = subscription.getFields().featureChanged!;
  featureChanged.subscribe = (_root, raw: FeatureChangedArgs, context: SubscriptionContext) => {
    const args = { ...raw, entity: entityOfEnum.get(raw.entity) ?? raw.entity };
    return (context.stream ??= context.connection.track(hub.open(readableOnly(registry, args, context.principal), maxBatchIds)));
  };
  featureChanged.resolve = (c: unknown) => c;
  if (live) attachLiveOperations(schema, subscription, live, hub);
  assertValidSchema(schema);
  return schema;
}

/** The resolvers of `liveOperation` and its types, and JSONObject's input parsing. */
function attachLiveOperations(schema: GraphQLSchema, subscription: GraphQLObjectType, live: LiveOperations, hub: ChangeHub): void {
  const field = subscription.getFields().liveOperation!;
  field.subscribe = (_root, args: LiveOperationArgs, context: SubscriptionContext, info) => live.subscribe(args, context, info.schema, hub);
  field.resolve = (update: unknown) => update;
  const update = schema.getType('LiveOperationUpdate');
  const jsonObject = schema.getType('JSONObject');
  if (!isObjectType(update) || !isScalarType(jsonObject)) throw new Error('the subscription SDL lacks LiveOperationUpdate or JSONObject');
  const fields = update.getFields();
  fields.revision!.resolve = (u: LiveOperationUpdate) => u.revision;
  fields.result!.resolve = (u: LiveOperationUpdate) => u.result ?? null;
  fields.patch!.resolve = (u: LiveOperationUpdate) => u.patch ?? null;
  jsonObject.parseValue = parseJsonObject;
  jsonObject.parseLiteral = parseJsonObjectLiteral;
}

/**
 * The subscription's view filter narrowed to the views its principal may
 * read: an explicitly named view (in `views` or `versions`) it may not read is
 * refused (FORBIDDEN); with neither, changes of unreadable views are not
 * delivered at all, since even the fact of a change is information about the
 * value.
 */
export function readableOnly(registry: Registry, args: FeatureChangedArgs, principal: Principal | undefined): FeatureChangedArgs {
  const entity = registry.entities.find((e) => e.name === args.entity);
  if (!entity || entity.views.every((view) => mayReadView(principal, view))) return args;
  if (args.views || args.versions) {
    for (const name of [...(args.views ?? []), ...(args.versions ?? []).map((v) => v.view)]) {
      const view = entity.views.find((v) => v.name === name);
      if (view && !mayReadView(principal, view)) {
        rejectedRequests.inc({ code: ErrorCode.Forbidden });
        throw new GraphQLError(`Not allowed to read feature view ${name}: it is readable by ${view.readRoles!.join(', ')} only`, {
          extensions: { code: ErrorCode.Forbidden, view: name },
        });
      }
    }
    return args;
  }
  const views = entity.views.filter((view) => mayReadView(principal, view)).map((view) => view.name);
  if (views.length === 0) {
    rejectedRequests.inc({ code: ErrorCode.Forbidden });
    throw new GraphQLError(`Not allowed to read any feature view of ${entity.name}`, { extensions: { code: ErrorCode.Forbidden } });
  }
  return { ...args, views };
}
