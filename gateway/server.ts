import { ApolloServer, type ApolloServerPlugin, type BaseContext } from '@apollo/server';
import { ApolloServerPluginLandingPageLocalDefault } from '@apollo/server/plugin/landingPage/default';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import {
  ApolloGateway, LocalGraphQLDataSource, RemoteGraphQLDataSource, type GraphQLDataSource, type GraphQLDataSourceProcessOptions,
} from '@apollo/gateway';
import { getOperationAST, parse } from 'graphql';
import { Authenticator } from '../auth/authenticator.js';
import { principalHeaders } from '../auth/internal.js';
import { principalKey, principalOf } from '../auth/principal.js';
import { ChangeFeed } from '../eventlog/change-feed.js';
import type { EventLog } from '../eventlog/event-log.js';
import type { Config } from '../runtime/config.js';
import { ConfigError } from '../runtime/errors.js';
import { createGraphQLHttpServer, listen, type Admission, type ArrowPath, type FastPath, type ReadyStatus, type RunningHttpServer, type StreamDoor } from '../runtime/graphql-http.js';
import { log } from '../runtime/log.js';
import { readManifest } from '../schema/manifest.js';
import { withFeatureServices } from '../schema/feature-queries.js';
import { deadlineKey } from '../runtime/deadline.js';
import { storeReadiness } from '../store/health.js';
import { entitySubgraphSdl } from '../schema/sdl.js';
import type { Registry } from '../schema/types.js';
import type { OnlineStore } from '../store/online-store.js';
import { HotTier, loadWarmUpKeys, saveWarmUpKeys } from '../store/hot-tier.js';
import { CompiledOperations } from '../serving/compiled-operations.js';
import { buildAllSubgraphs } from '../subgraphs/factory.js';
import { composeSupergraph, type SubgraphDefinition } from '../schema/supergraph.js';
import { authorizationPlugin, gatewayAdmission, gatewayAuthentication, gatewayPrincipal, trustedOperation } from './authorization.js';
import { feastDoor } from './feast-door.js';
import { costFunction, limitsPlugin, nestingAdmission } from './limits.js';
import { PlanDoors } from './plan-doors.js';
import { metricsPlugin } from './metrics-plugin.js';
import { PersistedQueries, checkPersistedQuery } from './persisted-queries.js';
import { introspectionPlugin } from './introspection-plugin.js';
import { attachSubscriptions, type Subscriptions } from './subscriptions/index.js';
import { LiveOperations } from './subscriptions/live-operations.js';

/**
 * The gateway: Apollo Server over @apollo/gateway's query planner, in one of
 * two shapes with one code path (ARCHITECTURE.md, decision 5):
 *
 * - co-located (no SUBGRAPH_URLS): the entity subgraphs run in this process
 *   and the planner calls them directly, with no network hop;
 * - distributed: each subgraph is its own process, called over keep-alive
 *   HTTP (the gateway's default fetcher keeps connections alive).
 *
 * Either way the supergraph is composed here from the registry's SDL.
 */
export interface GatewayOptions {
  readonly config: Config;
  readonly registry: Registry;
  /** Required when co-located: the store the in-process subgraphs read. */
  readonly store?: OnlineStore;
  /** Appended to the gateway's own Apollo Server plugins (tests use it to observe the request pipeline). */
  readonly extraPlugins?: readonly ApolloServerPlugin<BaseContext>[];
  /** The change feed (`feature-updates`): when given, GraphQL subscriptions are served over graphql-ws on the same path. */
  readonly eventLog?: EventLog;
  /** The clock the hot tier judges freshness by: the store's (default Date.now; tests with a fixed-clock store pass theirs). */
  readonly clock?: () => number;
}

export interface RunningGateway extends RunningHttpServer {
  readonly apollo: ApolloServer<BaseContext>;
  /** Present when the gateway was started with an event log. */
  readonly subscriptions?: Subscriptions;
  /** The change feed this process tails (with an event log). */
  readonly feed?: ChangeFeed;
  /** The in-process cache in front of the store (HOT_TIER_MAX_BYTES > 0, co-located, with an event log). */
  readonly hotTier?: HotTier;
}

export async function startGateway({ config, registry, store, extraPlugins = [], eventLog, clock }: GatewayOptions): Promise<RunningGateway> {
  const distributed = Object.keys(config.subgraphUrls).length > 0;
  if (config.hotTier.maxBytes > 0 && (distributed || !eventLog)) {
    throw new ConfigError('HOT_TIER_MAX_BYTES', distributed
      ? 'the hot tier caches the co-located subgraphs\' store reads; with SUBGRAPH_URLS this process reads no store'
      : 'the hot tier is kept coherent by the change feed: set KAFKA_BROKERS (or run co-located on the embedded store, whose pipeline runs in-process)');
  }
  // One tail of feature-updates per process: the hot tier subscribes first, the subscription hub second (eventlog/change-feed.ts).
  const feed = eventLog ? await ChangeFeed.start(eventLog) : undefined;
  const hotTier = feed && store && config.hotTier.maxBytes > 0 ? new HotTier(store, feed, config.hotTier, registry, clock) : undefined;
  try {
    return await assemble({ config, registry, store: hotTier ?? store, extraPlugins, feed, hotTier, distributed });
  } catch (error) {
    hotTier?.detach();
    await feed?.stop();
    throw error;
  }
}

async function assemble({ config, registry, store, extraPlugins, feed, hotTier, distributed }: {
  config: Config; registry: Registry; store: OnlineStore | undefined; extraPlugins: readonly ApolloServerPlugin<BaseContext>[];
  feed: ChangeFeed | undefined; hotTier: HotTier | undefined; distributed: boolean;
}): Promise<RunningGateway> {
  const services = new Map<string, GraphQLDataSource>();
  const definitions: SubgraphDefinition[] = [];

  if (distributed) {
    if (config.internalAuthSecret === null) {
      log.warn('INTERNAL_AUTH_SECRET is not set: subgraph processes trust the caller principal header unsigned; they must be reachable only by the gateway');
    }
    for (const entity of registry.entities) {
      const url = config.subgraphUrls[entity.name];
      if (!url) throw new ConfigError('SUBGRAPH_URLS', `no URL for subgraph "${entity.name}" (every entity of the registry needs one)`);
      definitions.push({ name: entity.name, typeDefs: parse(entitySubgraphSdl(entity)), url });
      services.set(entity.name, new PrincipalForwardingDataSource({ url }, config.internalAuthSecret));
    }
  } else {
    if (!store) throw new Error('a co-located gateway needs a store for its subgraphs');
    // Pushes produce their change events to the same log the subscriptions tail.
    const deps = { store, maxBatchIds: config.maxBatchIds, pushMaxFutureMs: config.pushMaxFutureMs, ...(feed ? { changes: feed.log } : {}) };
    for (const subgraph of buildAllSubgraphs(registry, deps)) {
      // The URL is never called: buildService below answers for it in-process.
      definitions.push({ name: subgraph.name, typeDefs: subgraph.typeDefs, url: `in-process://${subgraph.name}` });
      services.set(subgraph.name, new LocalGraphQLDataSource(subgraph.schema));
    }
  }

  const supergraphSdl = composeSupergraph(definitions);
  const gateway = new ApolloGateway({
    supergraphSdl,
    buildService: ({ name }) => {
      const service = services.get(name);
      if (!service) throw new Error(`no data source for subgraph ${name}`);
      return service;
    },
  });

  // Each feature service of the registry is also a persisted operation (FeatureService_<name>): safelisted, compiled, named in metrics.
  const persisted = new PersistedQueries(withFeatureServices(readManifest(config.manifestFile), registry), config.safelist);
  const authenticator = Authenticator.fromSettings(config.auth);
  let subscriptionsRef: Subscriptions | undefined;
  const apollo = new ApolloServer<BaseContext>({
    gateway,
    introspection: config.introspection,
    includeStacktraceInErrorResponses: config.debugErrors,
    persistedQueries: { cache: persisted.apqCache() },
    // Bounds the parser's work on hostile input before validation runs.
    parseOptions: { maxTokens: 20_000 },
    plugins: [
      authorizationPlugin(persisted),
      limitsPlugin(config),
      metricsPlugin((hash) => persisted.nameOf(hash)),
      // Introspection shows the Subscription type too once subscriptions are attached (below).
      introspectionPlugin(() => subscriptionsRef?.schema()),
      config.sandbox
        ? ApolloServerPluginLandingPageLocalDefault({ embed: true, includeCookies: false })
        : ApolloServerPluginLandingPageDisabled(),
      ...extraPlugins,
    ],
    logger: apolloLogger(),
  });
  await apollo.start();
  await warmUp(apollo, persisted);

  const ready = async (): Promise<ReadyStatus> => {
    const checks: Record<string, string> = { schema: 'composed' };
    let ok = true;
    if (distributed) {
      await Promise.all(
        Object.entries(config.subgraphUrls).map(async ([name, url]) => {
          const result = await probe(new URL('/readyz', url).toString());
          checks[`subgraph:${name}`] = result;
          if (result !== 'ready') ok = false;
        }),
      );
    } else {
      const readiness = await storeReadiness(store!);
      Object.assign(checks, readiness.checks);
      if (!readiness.ready) ok = false;
      // Informational: a bypassing hot tier still serves every request, from the store.
      if (hotTier) checks['hot-tier'] = hotTier.bypassing() === null ? 'serving from memory' : `bypassed (${hotTier.bypassing()}): reading the store`;
    }
    return { ready: ok, checks };
  };

  // Co-located only: the compiled operations read the store the in-process subgraphs read. FAST_PATH
  // is the JSON door's switch; Arrow answers have no other path, so the plans exist either way.
  const compiled = !distributed ? new CompiledOperations(registry, persisted.manifest, store!, config.maxBatchIds) : undefined;
  const costOf = new Map(persisted.manifest.operations.map((op) => {
    const document = parse(op.body);
    return [op.id, costFunction(document, getOperationAST(document)!)] as const;
  }));
  const doors = compiled && new PlanDoors(compiled, persisted, costOf, config);
  const fastPath: FastPath | undefined = doors && config.fastPath ? (operation, principal, deadline) => doors.json(operation, principal, deadline) : undefined;
  const arrowPath: ArrowPath = doors
    ? (operation, principal, deadline) => doors.arrow(operation, principal, deadline)
    : async () => ({ kind: 'unavailable', reason: 'the gateway runs distributed (SUBGRAPH_URLS), and Arrow answers come from a compiled plan, which reads the store in the gateway\'s process' });
  if (compiled) log.info({ operations: compiled.names, json: config.fastPath }, 'persisted operations compiled to plans (the JSON fast path when FAST_PATH, and Arrow)');

  // Before Apollo Server or the fast path sees a request (HTTP and each ws subscribe): who may send what
  // (the safelist included), then the cheap structural checks (decision 0020).
  const nesting = nestingAdmission(config.maxQueryNesting);
  const structural: Admission = (operation) => nesting(operation) ?? checkPersistedQuery(operation);
  const access = gatewayAdmission(persisted);
  const admit: Admission = (operation, principal) => access(operation, principal) ?? structural(operation, principal);
  // The Feast-compatible door: co-located with the fast path on, it reads the store as the compiled plan does; otherwise
  // through the planner, as the caller (already checked by the door, hence trusted) with the request's deadline.
  const feast = feastDoor({
    registry, maxBatchIds: config.maxBatchIds, maxQueryCost: config.maxQueryCost,
    ...(!distributed && config.fastPath ? { store: store! } : {}),
    execute: (principal, deadline) => async (query, variables) => {
      const contextValue: Record<symbol, unknown> = { [trustedOperation]: true };
      if (principal) contextValue[principalKey] = principal;
      if (deadline) contextValue[deadlineKey] = deadline;
      const result = await apollo.executeOperation({ query, variables }, { contextValue });
      if (result.body.kind !== 'single') throw new Error('the Feast door\'s federated read got an incremental result');
      return result.body.singleResult as { data?: Record<string, unknown> | null; errors?: { message: string; path?: (string | number)[]; extensions?: Record<string, unknown> }[] };
    },
  });
  log.info({ path: feast.path, reads: !distributed && config.fastPath ? 'store (as the compiled plan)' : 'federated planner', featureServices: registry.featureServices.map((s) => s.name) },
    'Feast-compatible endpoint');
  const server = createGraphQLHttpServer({
    apollo, maxBodyBytes: config.maxBodyBytes, ready, authenticate: gatewayAuthentication(authenticator), admit, fastPath, arrowPath,
    requestDeadlineMs: config.requestDeadlineMs, tls: config.tls, corsOrigins: config.corsOrigins, debugErrors: config.debugErrors,
    doors: [feast],
    // Subscriptions attach once the server exists (the WebSocket upgrade is handled on it); until then there are none.
    ...(feed ? { streams: { serve: (...args) => subscriptionsRef!.streams.serve(...args) } satisfies StreamDoor } : {}),
  });
  if (hotTier && config.hotTier.warmUpFile) {
    const keys = loadWarmUpKeys(config.hotTier.warmUpFile);
    if (keys.length > 0) {
      const started = Date.now();
      const cached = await hotTier.warmUp(keys, 10_000);
      log.info({ keys: keys.length, cached, ms: Date.now() - started }, 'hot tier warmed up with the keys most recently used by the last run');
    }
  }
  const subscriptions = feed
    ? await attachSubscriptions({
      server, apollo, gateway, registry, config, feed, authenticator, admit: structural, corsOrigins: config.corsOrigins,
      ...(!distributed && config.fastPath && store ? { store } : {}),
      live: new LiveOperations({ registry, manifest: persisted.manifest, apollo, store: !distributed && config.fastPath ? store : undefined, config }),
    })
    : undefined;
  subscriptionsRef = subscriptions;
  let running: RunningHttpServer;
  try {
    running = await listen(server, config.host, config.port);
  } catch (error) {
    await subscriptions?.close();
    throw error;
  }
  return {
    ...running,
    apollo,
    subscriptions,
    ...(feed ? { feed } : {}),
    ...(hotTier ? { hotTier } : {}),
    close: async () => {
      // Unready first, so load balancers stop sending while we still serve; then stop listening and drain
      // HTTP and WebSocket together (the HTTP server's close waits for every connection, upgraded ones too).
      running.beginDrain();
      if (config.shutdownReadinessDelayMs > 0) await new Promise((r) => setTimeout(r, config.shutdownReadinessDelayMs));
      await Promise.all([subscriptions?.close(), running.close()]);
      await apollo.stop();
      if (hotTier && config.hotTier.warmUpFile) {
        try {
          saveWarmUpKeys(config.hotTier.warmUpFile, hotTier.hotKeys(config.hotTier.warmUpKeys));
        } catch (error) {
          log.warn({ file: config.hotTier.warmUpFile, err: (error as Error).message }, 'hot tier warm-up keys not saved');
        }
      }
      hotTier?.detach();
      await feed?.stop();
    },
  };
}

/**
 * Runs each manifest operation once so Apollo Server's document store holds
 * it parsed and validated and the gateway's plan cache holds its plan: the
 * first real request then starts at execution (decision 4).
 */
async function warmUp(apollo: ApolloServer<BaseContext>, persisted: PersistedQueries): Promise<void> {
  for (const request of persisted.warmupRequests()) {
    const result = await apollo.executeOperation(request, { contextValue: { [principalKey]: gatewayPrincipal, [trustedOperation]: true } });
    if (result.body.kind === 'single' && result.body.singleResult.errors?.some((e) => e.extensions?.code === 'GRAPHQL_VALIDATION_FAILED')) {
      throw new Error(`persisted operation does not validate against the supergraph: ${JSON.stringify(result.body.singleResult.errors)}`);
    }
  }
  log.info({ operations: persisted.manifest.operations.length }, 'persisted operations parsed, validated and planned');
}

async function probe(url: string): Promise<string> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
    return response.ok ? 'ready' : `unready (HTTP ${response.status})`;
  } catch (error) {
    return `unreachable: ${(error as Error).message}`;
  }
}

/** Hands the caller's principal to a subgraph process, signed (auth/internal.ts). */
class PrincipalForwardingDataSource extends RemoteGraphQLDataSource<BaseContext> {
  constructor(options: { url: string }, private readonly secret: string | null) {
    super(options);
  }

  override willSendRequest({ request, context }: GraphQLDataSourceProcessOptions<BaseContext>): void {
    const principal = principalOf(context);
    if (!principal) return;
    for (const [name, value] of Object.entries(principalHeaders(principal, this.secret))) request.http?.headers.set(name, value);
  }
}

/** Apollo's logger interface over our JSON-lines logger. */
function apolloLogger() {
  const child = log.child({ component: 'apollo' });
  return {
    debug: (m: unknown) => child.debug(String(m)),
    info: (m: unknown) => child.info(String(m)),
    warn: (m: unknown) => child.warn(String(m)),
    error: (m: unknown) => child.error(String(m)),
  };
}
