import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { ApolloServer, BaseContext } from '@apollo/server';
import {
  GraphQLEnumType, GraphQLError, GraphQLID, GraphQLInputObjectType, GraphQLInt, GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, GraphQLString,
  Kind, OperationTypeNode, assertValidSchema, buildASTSchema, createSourceEventStream, getOperationAST, isObjectType, parse, print, printSchema, validate, visit,
  type ASTNode, type DocumentNode, type ExecutionArgs, type FragmentDefinitionNode, type GraphQLFieldConfigMap,
  type GraphQLFieldResolver, type GraphQLFormattedError, type GraphQLResolveInfo, type SelectionNode, type VariableDefinitionNode,
} from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { Context } from 'graphql-ws';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { ChangeFeed } from '../eventlog/change-feed.js';
import { AppliedChanges } from '../eventlog/applied-changes.js';
import { changeKey, decodeChange, parseChangeKey, type FeatureChange } from '../eventlog/change-event.js';
import type { LogRecord } from '../eventlog/event-log.js';
import type { Config } from '../runtime/config.js';
import { ErrorCode } from '../runtime/errors.js';
import { upgradeOriginAllowed, type Admission, type HttpServer } from '../runtime/graphql-http.js';
import { log as rootLog } from '../runtime/log.js';
import {
  changeFeedDuplicates, rejectedRequests, subscriptionChangeEvents, subscriptionEventsDropped, subscriptionEventsSuperseded, subscriptionQueuedEvents, subscriptionsActive,
} from '../runtime/metrics.js';
import type { Entity, FeatureView, Registry } from '../schema/types.js';
import type { OnlineStore } from '../store/online-store.js';
import { compileOperation, type CompiledOperation } from '../serving/compiled-operations.js';
import { encodeGraphQLJson } from '../serving/encoders/graphql-json.js';
import { primedReadsOf } from '../serving/plan.js';
import { primedReads } from '../subgraphs/loaders.js';
import { credentialsFromHeaders, credentialsFromPayload, type Authenticator } from '../auth/authenticator.js';
import { AccessError } from '../auth/errors.js';
import { authorize, authorizeSubscriber, kindsOf, mayReadView } from '../auth/policy.js';
import { principalKey, type Principal } from '../auth/principal.js';
import { trustedOperation } from './authorization.js';
import { operationCost, selectionDepth } from './limits.js';
import { gateSends } from './send-gate.js';
import type { LiveOperations } from './live-operations.js';

/**
 * GraphQL subscriptions of live feature changes, over graphql-ws on the
 * gateway's own HTTP server and path (`ws://host:port/graphql`, `wss://` with TLS).
 *
 * @apollo/gateway cannot execute subscriptions, so the gateway hosts them
 * itself, on a schema that is the gateway's client-facing API schema (taken
 * from ApolloGateway after it loaded, and rebuilt on every schema update)
 * plus, generated from the registry:
 *
 *     enum EntityType { USER ITEM MERCHANT }
 *     type FeatureChange { entity id view version eventTime user item merchant }
 *     input FeatureViewVersion { view version }
 *     type Subscription { featureChanged(entity: EntityType!, ids: [ID!]!, views: [String!], versions: [FeatureViewVersion!]): FeatureChange! }
 *
 * A subscription watches view versions (watchedVersions): the active version
 * of each view it names, or of every view, plus the exact versions it names.
 * The materializer writes every live version of a view from the same raw
 * event, so this is what makes one change one event.
 *
 * The change feed is the `feature-updates` topic, tailed once per gateway
 * and fanned out by (entity, id) to the matching subscriptions. The entity
 * field of an event (`user { … }`) is resolved THROUGH THE GATEWAY: its
 * selection is printed into `query ($id: ID!) { user(id: $id) { … } }` and
 * run with `apollo.executeOperation`, so a subscriber gets exactly what it
 * selected, planned and served like any query, in either deployment shape.
 *
 * Slow subscribers: each subscription has a bounded queue
 * (SUBSCRIPTION_QUEUE_SIZE). graphql-ws sends one event at a time and waits
 * for the socket to take it, so a client that stops reading stalls only its
 * own queue. A change of a value (entity, view, version) that is already
 * queued replaces the queued one in place (counted in
 * `subscription_events_superseded_total`): the entity is resolved only when
 * an event is sent, so the older event would show the same current value.
 * Hence a queue holds at most one event per watched value, and while a
 * subscription watches no more values than SUBSCRIPTION_QUEUE_SIZE, every
 * value's latest change reaches it. Past that, a full queue drops its OLDEST
 * event (`subscription_events_dropped_total`). Memory per subscription is
 * bounded either way.
 */

/** Error codes of subscriptions (besides the HTTP ones reused here: BATCH_TOO_LARGE, QUERY_TOO_DEEP, …). */
export const SubscriptionErrorCode = {
  TooManySubscriptions: 'TOO_MANY_SUBSCRIPTIONS',
  OperationNotSupported: 'OPERATION_NOT_SUPPORTED',
  BadUserInput: 'BAD_USER_INPUT',
  ParseFailed: 'GRAPHQL_PARSE_FAILED',
  ValidationFailed: 'GRAPHQL_VALIDATION_FAILED',
  OperationResolutionFailure: 'OPERATION_RESOLUTION_FAILURE',
} as const;

/** Where the API schema comes from: ApolloGateway (structurally, so tests may pass their own). */
export interface SchemaSource {
  readonly schema?: GraphQLSchema | undefined;
  onSchemaLoadOrUpdate(callback: (context: { apiSchema: GraphQLSchema; coreSupergraphSdl: string }) => void): () => void;
}

export interface SubscriptionsOptions {
  /** The gateway's HTTP or HTTPS server: the WebSocket upgrade (ws or wss) is handled on it. */
  readonly server: HttpServer;
  readonly apollo: ApolloServer<BaseContext>;
  readonly gateway: SchemaSource;
  readonly registry: Registry;
  readonly config: Pick<Config, 'maxBatchIds' | 'maxQueryDepth' | 'maxQueryCost' | 'maxBodyBytes' | 'subscriptionQueueSize' | 'maxSubscriptionsPerConnection' | 'subscriptionSendBufferBytes' | 'subscriptionStallTimeoutMs' | 'debugErrors'>;
  /** The process's change feed (`feature-updates`); the hub reads it from when it is attached. */
  readonly feed: ChangeFeed;
  /** Checks a connection's credentials at connection_init (auth/authenticator.ts); none: every connection is let in. */
  readonly authenticator?: Authenticator;
  /** Structural checks before parsing (nesting, persisted-query shape), applied to each subscribe message as to each HTTP request. */
  readonly admit?: Admission;
  /**
   * Co-located shape: the store the in-process subgraphs read. Payload queries that compile
   * (serving/compiled-operations.ts) are then answered by their compiled plan, byte-identical to
   * the planner's answer; the others, and any failure, go through the gateway as before.
   */
  readonly store?: OnlineStore;
  /** Default `/graphql`. */
  readonly path?: string;
  /** Browser origins allowed to open a subscription socket (CORS_ORIGINS); absent: any. */
  readonly corsOrigins?: '*' | readonly string[] | null;
  /** Live persisted operations (gateway/live-operations.ts): adds `Subscription.liveOperation`. */
  readonly live?: LiveOperations;
}

export interface SubscriptionStats {
  /** Open subscriptions. */
  readonly active: number;
  /** Open WebSocket connections. */
  readonly connections: number;
  /** Events waiting in all queues. */
  readonly queued: number;
  /** The fullest queue's length. */
  readonly deepestQueue: number;
  readonly queueCapacity: number;
  /** Events dropped from full queues of this gateway since it started. */
  readonly dropped: number;
  /** Queued events replaced by a newer change of the same value. */
  readonly superseded: number;
}

export interface Subscriptions {
  /** The client-facing schema including Subscription (what introspection should show). */
  schema(): GraphQLSchema;
  stats(): SubscriptionStats;
  close(): Promise<void>;
}

const log = rootLog.child({ component: 'subscriptions' });

/** How long a shutdown waits for subscriptions to send what they have queued (a stalled reader is not waited for). */
const drainMs = 2000;
const unwatched = { outcome: 'unwatched' } as const;

export async function attachSubscriptions(options: SubscriptionsOptions): Promise<Subscriptions> {
  const { server, apollo, gateway, registry, config, feed, authenticator, admit } = options;
  /** Each connection's principal, decided at connection_init. */
  const principals = new WeakMap<object, Principal>();
  const path = options.path ?? '/graphql';
  const hub = new ChangeHub(registry, config.subscriptionQueueSize);
  const { store } = options;
  const compile = store ? (name: string, query: string) => compileOperation(registry, name, query, store, config.maxBatchIds) : undefined;
  const resolveEntity = entityResolver(apollo, compile);

  if (!gateway.schema) throw new Error('subscriptions need the gateway schema: attach them after apollo.start()');
  let schema = buildSubscriptionSchema(gateway.schema, registry, hub, resolveEntity, config.maxBatchIds, options.live);
  const stopWatchingSchema = gateway.onSchemaLoadOrUpdate(({ apiSchema }) => {
    try {
      schema = buildSubscriptionSchema(apiSchema, registry, hub, resolveEntity, config.maxBatchIds, options.live);
    } catch (error) {
      log.error({ err: (error as Error).message }, 'subscription schema not rebuilt after a schema update; keeping the previous one');
    }
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxBodyBytes });
  /** Each connection's change streams, ended when it starts to close. */
  const connections = new WeakMap<WebSocket, ConnectionStreams>();
  /** Open connections' graphql-ws contexts: a shutdown waits for their subscriptions to complete. */
  const contexts = new Set<Context<Record<string, unknown>>>();
  const disposer = useServer<Record<string, unknown>>(
    {
      isProd: !config.debugErrors,
      onConnect: async (ctx) => {
        contexts.add(ctx);
        if (!authenticator) return true;
        const { request, socket } = ctx.extra as unknown as { request: http.IncomingMessage; socket: WebSocket };
        try {
          // Browsers cannot set headers on a WebSocket: credentials come in the connection_init payload, else the upgrade's headers.
          const credentials = credentialsFromPayload(ctx.connectionParams) ?? credentialsFromHeaders(request.headers);
          const principal = await authenticator.authenticate(credentials, request.socket.remoteAddress);
          const refusal = authorizeSubscriber(principal);
          if (refusal) throw refusal;
          principals.set(ctx, principal);
          return true;
        } catch (error) {
          if (!(error instanceof AccessError)) throw error;
          rejectedRequests.inc({ code: error.code });
          // 4401/4403/4429 with the reason, where graphql-ws alone would say only "Forbidden".
          socket.close(closeCodeOf(error), closeReason(error.message));
          return false;
        }
      },
      onClose: (ctx) => void contexts.delete(ctx),
      onSubscribe: async (ctx, _id, payload) => {
        const refuse = (code: string, message: string, extensions: Record<string, unknown> = {}): GraphQLError[] => {
          rejectedRequests.inc({ code });
          return [new GraphQLError(message, { extensions: { code, ...extensions } })];
        };
        const principal = principals.get(ctx);
        if (authenticator) {
          // Checked per subscription too, as each HTTP request is (the roles could be narrower than the connection's use).
          const denied = authorizeSubscriber(principal);
          if (denied) return refuse(denied.code, denied.message);
        }
        const refusal = admit?.(payload, principal);
        if (refusal) return refuse(refusal.code, refusal.message);
        // graphql-ws registers the subscription before this hook: the count includes this one.
        if (Object.keys(ctx.subscriptions).length > config.maxSubscriptionsPerConnection) {
          return refuse(
            SubscriptionErrorCode.TooManySubscriptions,
            `This connection already has ${config.maxSubscriptionsPerConnection} subscriptions, the most allowed ` +
              '(MAX_SUBSCRIPTIONS_PER_CONNECTION); complete one first or open another connection',
            { max: config.maxSubscriptionsPerConnection },
          );
        }

        let document: DocumentNode;
        try {
          document = parse(payload.query, { maxTokens: 20_000 });
        } catch (error) {
          return [withCode(error, SubscriptionErrorCode.ParseFailed)];
        }
        const current = schema;
        const invalid = validate(current, document);
        if (invalid.length > 0) return invalid.map((e) => withCode(e, SubscriptionErrorCode.ValidationFailed));
        const operation = getOperationAST(document, payload.operationName ?? undefined);
        if (!operation) {
          return refuse(
            SubscriptionErrorCode.OperationResolutionFailure,
            payload.operationName ? `Unknown operation named "${payload.operationName}".` : 'Must provide operation name if query contains multiple operations.',
          );
        }
        if (operation.operation !== OperationTypeNode.SUBSCRIPTION) {
          return refuse(
            SubscriptionErrorCode.OperationNotSupported,
            `Only subscriptions are served over WebSocket; send ${operation.operation} operations to POST /graphql`,
          );
        }
        // What it subscribes to: feature changes (any selection), or live persisted operations alone (open to inference too).
        for (const kind of authenticator ? kindsOf(document, operation, false) : []) {
          const denied = authorize(principal, kind);
          if (denied) return refuse(denied.code, denied.message);
        }
        const fragments = new Map<string, FragmentDefinitionNode>();
        for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
        const depth = selectionDepth(operation.selectionSet, fragments, new Set());
        if (depth > config.maxQueryDepth) {
          return refuse(ErrorCode.QueryTooDeep, `Query depth ${depth} exceeds the limit of ${config.maxQueryDepth} (MAX_QUERY_DEPTH)`, {
            max: config.maxQueryDepth,
          });
        }

        const cost = operationCost(document, operation, payload.variables ?? {});
        if (cost > config.maxQueryCost) {
          return refuse(ErrorCode.QueryTooCostly, `Query cost ${cost} (entities × features requested) exceeds the limit of ${config.maxQueryCost} (MAX_QUERY_COST)`, {
            cost, max: config.maxQueryCost,
          });
        }

        const connection = connections.get((ctx.extra as unknown as { socket: WebSocket }).socket)!;
        const contextValue: SubscriptionContext = { entityQueries: new Map(), principal, connection };
        const args: ExecutionArgs = {
          schema: current,
          document,
          operationName: payload.operationName ?? undefined,
          variableValues: payload.variables ?? undefined,
          contextValue,
          fieldResolver: responseKeyResolver,
        };
        // Variables and arguments are checked here, so a bad subscription gets an `error`
        // message (not a `next` with errors). The stream this opens is kept in the context
        // and handed back when graphql-ws subscribes with these args.
        const source = await createSourceEventStream(args);
        if (!(Symbol.asyncIterator in source)) {
          return (source.errors ?? [new GraphQLError('subscription failed')]).map((e) => withCode(e, SubscriptionErrorCode.BadUserInput));
        }
        return args;
      },
      onError: (_ctx, id, _payload, errors) => {
        log.debug({ id, errors: errors.map((e) => e.message) }, 'subscription refused or failed');
      },
    },
    wss,
  );

  let closing: Promise<void> | null = null;
  const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const { pathname } = new URL(req.url ?? '/', 'http://localhost');
    if (pathname !== path || closing) {
      socket.end(`HTTP/1.1 ${closing ? '503 Service Unavailable' : '404 Not Found'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    if (options.corsOrigins !== undefined && !upgradeOriginAllowed(options.corsOrigins, req)) {
      rejectedRequests.inc({ code: ErrorCode.CorsOriginDenied });
      const body = JSON.stringify({ errors: [{ message: `Origin ${JSON.stringify(req.headers.origin)} may not open subscriptions (CORS_ORIGINS)`, extensions: { code: ErrorCode.CorsOriginDenied } }] });
      socket.end(`HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (client) => {
      refuseServerMessages(client);
      const streams = new ConnectionStreams();
      connections.set(client, streams);
      endStreamsWhenClosing(client, streams);
      gateSends(client, { maxBufferedBytes: config.subscriptionSendBufferBytes, stallTimeoutMs: config.subscriptionStallTimeoutMs });
      wss.emit('connection', client, req);
    });
  };
  server.on('upgrade', onUpgrade);

  const unsubscribe = feed.subscribe((record) => hub.onRecord(record));

  return {
    schema: () => schema,
    stats: () => hub.stats(wss.clients.size),
    close: () =>
      (closing ??= (async () => {
        server.off('upgrade', onUpgrade);
        stopWatchingSchema();
        unsubscribe();
        // No change event comes in any more: each subscription sends what it has queued, then completes
        // (graphql-ws sends `complete` and forgets it once the socket took the message).
        const queued = hub.stats(0).queued;
        hub.finishAll();
        const drained = () => hub.streams.size === 0 && [...contexts].every((ctx) => Object.keys(ctx.subscriptions).length === 0);
        const deadline = Date.now() + drainMs;
        while (!drained() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        log.info({ queued, undelivered: hub.stats(0).queued, unfinished: hub.streams.size }, 'subscriptions drained');
        // Clients get 1001 "Going away"; one that does not answer the close handshake
        // (e.g. it stopped reading) is cut off after a second rather than ws's 30 s.
        const cutOff = setTimeout(() => {
          for (const client of wss.clients) client.terminate();
        }, 1000);
        try {
          await disposer.dispose();
        } finally {
          clearTimeout(cutOff);
        }
        hub.closeAll();
      })()),
  };
}

// --- the schema -----------------------------------------------------------------------------

interface SubscriptionContext {
  /** The connection's principal (undefined when the gateway authenticates no one). */
  readonly principal?: Principal | undefined;
  /** The stream opened while the subscribe message was checked; reused when graphql-ws subscribes. */
  stream?: ChangeStream;
  /** The streams of the subscription's connection. */
  readonly connection: ConnectionStreams;
  /** Per entity field (by response key): the printed gateway query for its selection. */
  readonly entityQueries: Map<string, EntityQuery>;
}

type EntityResolver = (entity: Entity, change: FeatureChange, context: SubscriptionContext, info: GraphQLResolveInfo) => Promise<unknown>;

export interface FeatureChangedArgs {
  readonly entity: string;
  readonly ids: readonly string[];
  /** Views whose ACTIVE version is watched. */
  readonly views?: readonly string[] | null;
  /** Exact view versions watched, besides `views`. */
  readonly versions?: readonly WatchedVersion[] | null;
}

export interface WatchedVersion {
  readonly view: string;
  readonly version: number;
}

/** GraphQL enum value of an entity name: `user` → `USER`, `adCampaign` → `AD_CAMPAIGN`. */
export function entityEnumValue(entityName: string): string {
  return entityName.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

const reservedChangeFields = new Set(['entity', 'id', 'view', 'version', 'eventTime']);

/**
 * The API schema plus EntityType, FeatureChange and Subscription, all
 * generated from the registry. The API schema is copied through its SDL
 * first: Apollo Server wraps the resolvers of the gateway schema's own type
 * objects (for its plugins), and those wrappers would bypass the
 * response-key resolver the entity fields need here.
 */
function buildSubscriptionSchema(
  gatewaySchema: GraphQLSchema, registry: Registry, hub: ChangeHub, resolveEntity: EntityResolver, maxBatchIds: number, live?: LiveOperations,
): GraphQLSchema {
  const apiSchema = buildASTSchema(parse(printSchema(gatewaySchema)));
  for (const name of ['EntityType', 'FeatureChange', 'FeatureViewVersion', 'Subscription']) {
    if (apiSchema.getType(name)) throw new Error(`the API schema already has a type ${name}; subscriptions cannot add theirs`);
  }
  if (apiSchema.getSubscriptionType()) throw new Error('the API schema already has a subscription type');

  const entityType = new GraphQLEnumType({
    name: 'EntityType',
    description: 'An entity type of the feature registry.',
    values: Object.fromEntries(registry.entities.map((e) => [entityEnumValue(e.name), { value: e.name, description: e.description }])),
  });

  const changeFields: GraphQLFieldConfigMap<FeatureChange, SubscriptionContext> = {
    entity: { type: new GraphQLNonNull(entityType), description: 'The entity type whose feature value changed.', resolve: (c) => c.entity },
    id: { type: new GraphQLNonNull(GraphQLID), description: "The entity's id.", resolve: (c) => c.id },
    view: { type: new GraphQLNonNull(GraphQLString), description: 'The feature view whose value changed, by its registry name (e.g. `clickStats`).', resolve: (c) => c.view },
    version: { type: new GraphQLNonNull(GraphQLInt), description: 'The version of the feature view that changed.', resolve: (c) => c.version },
    eventTime: {
      type: new GraphQLNonNull(GraphQLString),
      description: 'Event time (ISO-8601, UTC) of the newest event folded into the new value.',
      resolve: (c) => c.eventTime,
    },
  };
  for (const entity of registry.entities) {
    if (reservedChangeFields.has(entity.singularField) || changeFields[entity.singularField]) {
      throw new Error(`entity ${entity.name}: its field name "${entity.singularField}" clashes with a field of FeatureChange`);
    }
    const type = apiSchema.getType(entity.typeName);
    if (!isObjectType(type)) throw new Error(`the API schema has no object type ${entity.typeName} for entity ${entity.name}`);
    changeFields[entity.singularField] = {
      type,
      description:
        `The changed ${entity.name} when \`entity\` is ${entityEnumValue(entity.name)}, otherwise null: the fields selected here, ` +
        `read through the gateway as \`${entity.singularField}(id:)\` would answer them when the event is sent ` +
        `(so a view value may already be newer than this event).`,
      resolve: (change, _args, context, info) => (change.entity === entity.name ? resolveEntity(entity, change, context, info) : null),
    };
  }
  const versionType = new GraphQLInputObjectType({
    name: 'FeatureViewVersion',
    description: 'One version of a feature view, to watch that version rather than the active one.',
    fields: {
      view: { type: new GraphQLNonNull(GraphQLString), description: 'The feature view, by its registry name (e.g. `clickStats`).' },
      version: { type: new GraphQLNonNull(GraphQLInt), description: 'Its version (1 to the newest in the registry).' },
    },
  });

  const changeType = new GraphQLObjectType<FeatureChange, SubscriptionContext>({
    name: 'FeatureChange',
    description: 'A feature-view value of one entity changed (an event of the `feature-updates` topic).',
    fields: changeFields,
  });

  const subscriptionType = new GraphQLObjectType<unknown, SubscriptionContext>({
    name: 'Subscription',
    fields: {
      featureChanged: {
        type: new GraphQLNonNull(changeType),
        description:
          'Live changes of feature values: one event per change of a watched view version of an entity of `entity` whose id is in `ids`. ' +
          'Watched are the ACTIVE version of each view in `views` (of every view of the entity when neither `views` nor `versions` ' +
          'is given) and each view version in `versions`; changes of other versions (e.g. one being backfilled) are not sent, so ' +
          'one change of what is watched gives one event. A subscriber that falls behind gets one event per changed value ' +
          '(a newer change replaces a queued one; the entity is read when the event is sent); past SUBSCRIPTION_QUEUE_SIZE ' +
          'distinct values queued, the oldest queued event is dropped.',
        args: {
          entity: { type: new GraphQLNonNull(entityType), description: 'The entity type to watch.' },
          ids: { type: new GraphQLNonNull(new GraphQLList(new GraphQLNonNull(GraphQLID))), description: `Ids of the entities to watch (1 to MAX_BATCH_IDS, now ${maxBatchIds}).` },
          views: {
            type: new GraphQLList(new GraphQLNonNull(GraphQLString)),
            description: 'Watch the active version of these feature views of `entity` (registry names). With neither `views` nor `versions`: the active version of every view.',
          },
          versions: {
            type: new GraphQLList(new GraphQLNonNull(versionType)),
            description: 'Watch these exact view versions of `entity`, e.g. `[{ view: "clickStats", version: 1 }]` (select `clickStatsV1` to read it).',
          },
        },
        subscribe: (_root, args: FeatureChangedArgs, context) =>
          (context.stream ??= context.connection.track(hub.open(readableOnly(registry, args, context.principal), maxBatchIds))),
        resolve: (change: unknown) => change,
      },
      ...live?.fields(apiSchema, hub),
    },
  });

  const base = apiSchema.toConfig();
  const schema = new GraphQLSchema({ ...base, subscription: subscriptionType, types: [...base.types, entityType, versionType, changeType, subscriptionType] });
  assertValidSchema(schema);
  return schema;
}

// --- resolving the entity through the gateway -------------------------------------------------

interface EntityQuery {
  readonly query: string;
  readonly idVariable: string;
  readonly variables: readonly string[];
  /** The query's compiled plan, when the store is in-process and the query compiles. */
  compiled?: CompiledOperation;
}

const fieldErrors = Symbol('fieldErrors');
type WithFieldErrors = { [fieldErrors]?: Map<string, GraphQLError> };

/**
 * Resolves fields below the entity from the gateway's response by response
 * key (aliases included), and raises the gateway's error of a field where
 * the gateway reported one, so its path and message reach the subscriber.
 */
const responseKeyResolver: GraphQLFieldResolver<unknown, unknown> = (source, _args, _context, info) => {
  if (source === null || typeof source !== 'object') return undefined;
  const key = String(info.path.key);
  const error = (source as WithFieldErrors)[fieldErrors]?.get(key);
  if (error) throw error;
  return (source as Record<string, unknown>)[key];
};

function entityResolver(apollo: ApolloServer<BaseContext>, compile?: (name: string, query: string) => CompiledOperation | string): EntityResolver {
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
    if (compiled?.kind === 'result' && !compiled.failed) return (JSON.parse(encodeGraphQLJson(compiled)) as { data: Record<string, unknown> }).data[entity.singularField] ?? null;
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
    const value = (data as Record<string, unknown> | null | undefined)?.[entity.singularField] ?? null;
    let fieldLevel: GraphQLError | undefined;
    for (const formatted of errors ?? []) {
      const error = toGraphQLError(formatted);
      const path = formatted.path ?? [];
      if (path.length > 1 && value !== null && typeof value === 'object') markError(value, path.slice(1), error);
      else fieldLevel ??= error;
    }
    if (fieldLevel) throw fieldLevel;
    return value;
  };
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

/** Records `error` on the object holding the field at `path` (or its nearest ancestor present in `root`). */
function markError(root: object, path: readonly (string | number)[], error: GraphQLError): void {
  let holder: Record<string | number, unknown> = root as Record<string, unknown>;
  let field: string | undefined;
  let fieldHolder: Record<string, unknown> | undefined;
  for (const step of path) {
    if (!Array.isArray(holder) && typeof step === 'string') {
      fieldHolder = holder as Record<string, unknown>;
      field = step;
    }
    const next = holder[step];
    if (next === null || typeof next !== 'object') break;
    holder = next as Record<string | number, unknown>;
  }
  if (!fieldHolder || field === undefined) return;
  const marked = fieldHolder as WithFieldErrors;
  (marked[fieldErrors] ??= new Map()).set(field, marked[fieldErrors]?.get(field) ?? error);
}

/**
 * The subscription's view filter narrowed to the views its principal may
 * read: an explicitly named view (in `views` or `versions`) it may not read is
 * refused (FORBIDDEN); with neither, changes of unreadable views are not
 * delivered at all, since even the fact of a change is information about the
 * value.
 */
function readableOnly(registry: Registry, args: FeatureChangedArgs, principal: Principal | undefined): FeatureChangedArgs {
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

function closeCodeOf(error: AccessError): number {
  if (error.status === 401) return 4401;
  if (error.status === 429) return 4429;
  return 4403;
}

/** A WebSocket close reason is at most 123 bytes. */
function closeReason(message: string): string {
  let reason = message;
  while (Buffer.byteLength(reason) > 123) reason = reason.slice(0, -2) + '…';
  return reason;
}

function toGraphQLError(formatted: GraphQLFormattedError): GraphQLError {
  const { http: _http, ...extensions } = (formatted.extensions ?? {}) as Record<string, unknown>;
  return new GraphQLError(formatted.message, { extensions });
}

function withCode(error: unknown, code: string): GraphQLError {
  if (!(error instanceof GraphQLError)) return new GraphQLError(String((error as Error)?.message ?? error), { extensions: { code } });
  if (error.extensions.code) return error;
  return new GraphQLError(error.message, {
    nodes: error.nodes, source: error.source, positions: error.positions, path: error.path, originalError: error.originalError,
    extensions: { ...error.extensions, code },
  });
}

// --- the change feed and its fan-out --------------------------------------------------------------

/** Routes each change of the feed to the subscriptions watching its (entity, id). */
export class ChangeHub {
  private readonly byEntity = new Map<string, Map<string, Set<ChangeStream>>>();
  private readonly views = new Map<string, ReadonlySet<string>>();
  /** View name → its entity's name (view names are unique across entities in a registry). */
  private readonly entityOfView = new Map<string, string>();
  /** Changes fanned out so far, to ignore one that comes again. */
  private readonly applied = new AppliedChanges();
  readonly streams = new Set<ChangeStream>();
  dropped = 0;
  superseded = 0;

  constructor(private readonly registry: Registry, private readonly queueCapacity: number) {
    for (const entity of registry.entities) {
      this.views.set(entity.name, new Set(entity.views.map((v) => v.name)));
      for (const v of entity.views) this.entityOfView.set(v.name, entity.name);
    }
  }

  /** Opens a stream for validated `featureChanged` arguments; throws a GraphQLError for bad ones. */
  open(args: FeatureChangedArgs, maxBatchIds: number): ChangeStream {
    const entity = this.registry.entities.find((e) => e.name === args.entity);
    if (!entity) throw userError(`Unknown entity type ${args.entity}`);
    if (args.ids.length === 0) throw userError('`ids` must name at least one entity');
    if (args.ids.length > maxBatchIds) {
      rejectedRequests.inc({ code: ErrorCode.BatchTooLarge });
      throw new GraphQLError(`\`ids\` holds ${args.ids.length} items; at most ${maxBatchIds} are allowed per subscription (MAX_BATCH_IDS)`, {
        extensions: { code: ErrorCode.BatchTooLarge, max: maxBatchIds },
      });
    }
    const stream = new ChangeStream(entity.name, new Set(args.ids), watchedVersions(entity, args), this.queueCapacity, this);
    this.streams.add(stream);
    let byId = this.byEntity.get(entity.name);
    if (!byId) this.byEntity.set(entity.name, (byId = new Map()));
    for (const id of stream.ids) {
      let watchers = byId.get(id);
      if (!watchers) byId.set(id, (watchers = new Set()));
      watchers.add(stream);
    }
    subscriptionsActive.inc();
    return stream;
  }

  /** Called by a stream when it ends. */
  remove(stream: ChangeStream): void {
    if (!this.streams.delete(stream)) return;
    subscriptionsActive.dec();
    const byId = this.byEntity.get(stream.entity);
    for (const id of stream.ids) {
      const watchers = byId?.get(id);
      watchers?.delete(stream);
      if (watchers?.size === 0) byId!.delete(id);
    }
  }

  /** One record of the feed. Never throws: the log calls it synchronously, possibly inside a producer. */
  onRecord(record: LogRecord): void {
    // Most changes are of ids nobody watches. The record key names the value (`view:vN:id`), so
    // those are told apart without parsing the JSON payload (under a change stream that parse was
    // the largest cost of a gateway with no subscriber at all). A key of another shape is decoded.
    const named = record.key === null ? null : parseChangeKey(record.key);
    const entity = named && this.entityOfView.get(named.view);
    if (entity && !this.byEntity.get(entity)?.has(named!.id)) {
      subscriptionChangeEvents.inc(unwatched);
      return;
    }
    let change: FeatureChange;
    try {
      change = decodeChange(record);
    } catch (error) {
      subscriptionChangeEvents.inc({ outcome: 'malformed' });
      log.warn({ err: (error as Error).message, topic: record.topic, partition: record.partition, offset: record.offset }, 'malformed change event skipped');
      return;
    }
    if (!this.views.get(change.entity)?.has(change.view)) {
      subscriptionChangeEvents.inc({ outcome: 'unknown' });
      log.debug({ entity: change.entity, view: change.view }, 'change event of an entity or view this registry does not know; skipped');
      return;
    }
    // Committed once by the materializer; ignored here all the same if it comes again (eventlog/applied-changes.ts).
    if (!this.applied.admit(changeKey(change), change.source)) {
      changeFeedDuplicates.inc({ reader: 'subscriptions' });
      return;
    }
    subscriptionChangeEvents.inc({ outcome: 'accepted' });
    const watchers = this.byEntity.get(change.entity)?.get(change.id);
    if (!watchers) return;
    for (const stream of watchers) {
      try {
        stream.offer(change);
      } catch (error) {
        log.error({ err: (error as Error).message }, 'fan-out to a subscription failed');
      }
    }
  }

  stats(connections: number): SubscriptionStats {
    let queued = 0;
    let deepestQueue = 0;
    for (const s of this.streams) {
      queued += s.length;
      deepestQueue = Math.max(deepestQueue, s.length);
    }
    return { active: this.streams.size, connections, queued, deepestQueue, queueCapacity: this.queueCapacity, dropped: this.dropped, superseded: this.superseded };
  }

  closeAll(): void {
    for (const stream of [...this.streams]) stream.close();
  }

  /** Ends every stream once its queue is sent (see ChangeStream.finish). */
  finishAll(): void {
    for (const stream of [...this.streams]) stream.finish();
  }
}

function userError(message: string, extensions: Record<string, unknown> = {}): GraphQLError {
  rejectedRequests.inc({ code: SubscriptionErrorCode.BadUserInput });
  return new GraphQLError(message, { extensions: { code: SubscriptionErrorCode.BadUserInput, ...extensions } });
}

/** View name → the versions a subscription watches of it. */
export type Watched = ReadonlyMap<string, ReadonlySet<number>>;

/**
 * The one rule of what a subscription watches: the ACTIVE version of each
 * view in `views` (of every view of the entity when neither `views` nor
 * `versions` is given), and each exact version in `versions`. The
 * materializer writes every live version of a view from the same raw event
 * (clickStats v1 and v2), so watching a view by name must mean one version
 * of it, or one change would be sent once per version. Throws a
 * BAD_USER_INPUT GraphQLError naming what is wrong.
 */
export function watchedVersions(entity: Entity, args: Pick<FeatureChangedArgs, 'views' | 'versions'>): Watched {
  const watched = new Map<string, Set<number>>();
  const watch = (view: string, version: number): void => {
    let versions = watched.get(view);
    if (!versions) watched.set(view, (versions = new Set()));
    versions.add(version);
  };
  const find = (names: readonly string[]): FeatureView[] => {
    const unknown = [...new Set(names.filter((name) => !entity.views.some((v) => v.name === name)))];
    if (unknown.length > 0) {
      throw userError(
        `Unknown feature view${unknown.length > 1 ? 's' : ''} ${unknown.map((v) => `"${v}"`).join(', ')} for entity ${entity.name}; ` +
          `its views are: ${entity.views.map((v) => v.name).join(', ') || 'none'}`,
      );
    }
    return names.map((name) => entity.views.find((v) => v.name === name)!);
  };
  if (args.views) {
    if (args.views.length === 0) throw userError('`views` must name at least one view of the entity; leave it out to watch all of them');
    for (const view of find(args.views)) watch(view.name, view.activeVersion);
  }
  if (args.versions) {
    if (args.versions.length === 0) {
      throw userError('`versions` must name at least one view version, e.g. [{ view: "clickStats", version: 1 }]; leave it out to watch active versions only');
    }
    const views = find(args.versions.map((v) => v.view));
    args.versions.forEach(({ version }, i) => {
      const view = views[i]!;
      if (!view.versions.some((v) => v.version === version)) {
        throw userError(
          `Feature view ${view.name} has no version ${version}; its versions are ${view.versions.map((v) => v.version).join(', ')} (active: ${view.activeVersion})`,
          { view: view.name, version },
        );
      }
      watch(view.name, version);
    });
  }
  if (!args.views && !args.versions) for (const view of entity.views) watch(view.name, view.activeVersion);
  return watched;
}

/**
 * The source stream of one subscription: a ring buffer of at most
 * `capacity` changes, at most one per value (entity id, view, version): a
 * newer change of a queued value takes its place. A change of another value
 * that arrives while the buffer is full pushes out the oldest queued one
 * (counted as dropped).
 */
/** What a stream reports to: drop counters, and removal when it closes (the ChangeHub). */
export interface QueueOwner {
  dropped: number;
  superseded: number;
  remove(stream: ChangeStream): void;
}

function valueKey(change: FeatureChange): string {
  return `${change.id}\u0000${change.view}\u0000${change.version}`;
}

export class ChangeStream implements AsyncIterableIterator<FeatureChange> {
  private readonly ring: (FeatureChange | undefined)[];
  /** Queued value → its slot in `ring`. */
  private readonly slots = new Map<string, number>();
  private head = 0;
  private size = 0;
  private waiting: ((result: IteratorResult<FeatureChange>) => void) | null = null;
  private closed = false;
  /** Finishing: no new changes are queued; the stream ends once the queue is empty. */
  private finishing = false;

  constructor(
    readonly entity: string,
    readonly ids: ReadonlySet<string>,
    private readonly watched: Watched,
    private readonly capacity: number,
    private readonly hub: QueueOwner,
  ) {
    this.ring = new Array<FeatureChange | undefined>(capacity);
  }

  get length(): number {
    return this.size;
  }

  get done(): boolean {
    return this.closed;
  }

  offer(change: FeatureChange): void {
    if (this.closed || this.finishing || !this.watched.get(change.view)?.has(change.version)) return;
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve({ value: change, done: false });
      return;
    }
    const key = valueKey(change);
    const slot = this.slots.get(key);
    if (slot !== undefined) {
      this.ring[slot] = change;
      this.hub.superseded++;
      subscriptionEventsSuperseded.inc();
      return;
    }
    if (this.size === this.capacity) {
      this.slots.delete(valueKey(this.ring[this.head]!));
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.size--;
      this.hub.dropped++;
      subscriptionEventsDropped.inc();
      subscriptionQueuedEvents.dec();
    }
    const at = (this.head + this.size) % this.capacity;
    this.ring[at] = change;
    this.slots.set(key, at);
    this.size++;
    subscriptionQueuedEvents.inc();
  }

  next(): Promise<IteratorResult<FeatureChange>> {
    if (this.size > 0) {
      const value = this.ring[this.head]!;
      this.slots.delete(valueKey(value));
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.size--;
      subscriptionQueuedEvents.dec();
      return Promise.resolve({ value, done: false });
    }
    if (this.finishing) this.close();
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  return(): Promise<IteratorResult<FeatureChange>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(): Promise<IteratorResult<FeatureChange>> {
    return this.return();
  }

  /** Ends the stream once what is queued has been taken (graphql-ws then sends `complete`); at once if nothing is. */
  finish(): void {
    this.finishing = true;
    if (this.size === 0) this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    subscriptionQueuedEvents.dec(this.size);
    this.ring.fill(undefined);
    this.slots.clear();
    this.size = 0;
    this.waiting?.({ value: undefined, done: true });
    this.waiting = null;
    this.hub.remove(this);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<FeatureChange> {
    return this;
  }
}

/**
 * The change streams of one connection, so that they end when the connection
 * starts to close rather than when its socket is gone. graphql-ws ends a
 * connection's subscriptions on the socket's `close` event, which comes after
 * the close handshake: up to ws's 30 s for a client that answers no close
 * frame, a second and more (the cut-off timer, on a busy event loop) for one
 * closed as too slow. Until then its subscriptions would stay in the hub, take
 * every change of their ids, resolve payloads nobody is sent (graphql-ws drops
 * sends on a closing socket) and count in `subscriptions_active`.
 */
export class ConnectionStreams {
  private readonly streams = new Set<ChangeStream>();
  private ended = false;

  /** Adds a stream just opened for the connection; one opened once the connection is closing ends at once. */
  track(stream: ChangeStream): ChangeStream {
    if (this.ended) {
      stream.close();
      return stream;
    }
    for (const s of this.streams) if (s.done) this.streams.delete(s);
    this.streams.add(stream);
    return stream;
  }

  /** The connection is closing: every stream ends now (graphql-ws then completes its subscription). */
  end(): void {
    this.ended = true;
    for (const stream of this.streams) stream.close();
    this.streams.clear();
  }
}

/** Ends the connection's streams when its closing begins: close() or terminate() (ours, graphql-ws's, or ws's on a close frame), or the socket closing. */
function endStreamsWhenClosing(client: WebSocket, streams: ConnectionStreams): void {
  const close = client.close.bind(client);
  const terminate = client.terminate.bind(client);
  client.close = ((code?: number, reason?: string | Buffer) => {
    streams.end();
    close(code, reason);
  }) as typeof client.close;
  client.terminate = (() => {
    streams.end();
    terminate();
  }) as typeof client.terminate;
  client.once('close', () => streams.end());
}

// --- protocol hygiene ---------------------------------------------------------------------------

const serverToClientTypes = new Set(['connection_ack', 'next', 'error']);

/**
 * graphql-ws answers a client message of a server-to-client type (`next`,
 * `error`, `connection_ack`) with 4500 Internal Server Error and a stack
 * trace on stderr; the protocol says 4400 for a message the receiver does
 * not expect. This answers those with 4400 before graphql-ws sees them.
 */
function refuseServerMessages(client: WebSocket): void {
  const emit = client.emit.bind(client);
  client.emit = ((event: string | symbol, ...args: unknown[]): boolean => {
    if (event === 'message' && isServerToClientMessage(args[0] as RawData)) {
      client.close(4400, 'Invalid message received');
      return true;
    }
    return emit(event, ...args);
  }) as typeof client.emit;
}

function isServerToClientMessage(data: RawData): boolean {
  try {
    const message = JSON.parse(String(data)) as { type?: unknown } | null;
    return typeof message === 'object' && message !== null && typeof message.type === 'string' && serverToClientTypes.has(message.type);
  } catch {
    return false; // graphql-ws closes with 4400 itself
  }
}
