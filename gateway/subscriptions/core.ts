import type { ApolloServer, BaseContext } from '@apollo/server';
import {
  GraphQLError, OperationTypeNode, createSourceEventStream, getOperationAST, parse, subscribe, validate,
  type DocumentNode, type ExecutionArgs, type ExecutionResult, type GraphQLFormattedError, type GraphQLSchema,
} from 'graphql';
import type { ChangeFeed } from '../../eventlog/change-feed.js';
import type { Config } from '../../runtime/config.js';
import { ErrorCode } from '../../runtime/errors.js';
import type { Admission } from '../../runtime/graphql-http.js';
import { log as rootLog } from '../../runtime/log.js';
import { rejectedRequests } from '../../runtime/metrics.js';
import type { Registry } from '../../schema/types.js';
import type { OnlineStore } from '../../store/online-store.js';
import { compileOperation } from '../../serving/compiled-operations.js';
import type { Authenticator, Credentials } from '../../auth/authenticator.js';
import { authorize, authorizeSubscriber, kindsOf } from '../../auth/policy.js';
import type { Principal } from '../../auth/principal.js';
import { operationLimitError } from '../limits.js';
import { ChangeHub, ConnectionStreams, type SubscriptionStats } from './hub.js';
import type { LiveOperations } from './live-operations.js';
import { entityResolver, responseKeyResolver } from './payload.js';
import { buildSubscriptionSchema, type SubscriptionContext } from './schema.js';

/**
 * The subscription core: everything a subscription is, whatever carries it.
 * It owns the schema (rebuilt on every gateway schema update), the change
 * hub, the checks of a subscribe request, and the drain on shutdown; it
 * knows no socket and no HTTP. A transport (use/*.ts) turns its wire into
 * `Session`s and subscribe requests, asks `prepare` for the execution
 * arguments (or the errors to answer with), runs `execute`, and writes each
 * result through its send gate. The model is graphql-ws's own `makeServer`
 * with its thin `use/` adapters.
 *
 * The checks of a subscribe request are the HTTP door's, from the same
 * functions: the principal's right to subscribe (auth/policy.ts), the
 * structural admission (nesting, persisted-query shape: `admit`), parsing,
 * validation, operation resolution, and MAX_QUERY_DEPTH, MAX_QUERY_COST and
 * MAX_BATCH_IDS (gateway/limits.ts `operationLimitError`); then the
 * subscription's own (views, versions, roles per view: hub.ts, schema.ts),
 * run by opening its source stream, so that a bad subscription is refused
 * with errors before its first event rather than failing as one.
 */

/** Where the API schema comes from: ApolloGateway (structurally, so tests may pass their own). */
export interface SchemaSource {
  readonly schema?: GraphQLSchema | undefined;
  onSchemaLoadOrUpdate(callback: (context: { apiSchema: GraphQLSchema; coreSupergraphSdl: string }) => void): () => void;
}

export type SubscriptionConfig = Pick<Config,
  'maxBatchIds' | 'maxQueryDepth' | 'maxQueryCost' | 'maxBodyBytes' | 'subscriptionQueueSize' | 'maxSubscriptionsPerConnection' |
  'subscriptionSendBufferBytes' | 'subscriptionStallTimeoutMs' | 'debugErrors'>;

export interface CoreOptions {
  readonly apollo: ApolloServer<BaseContext>;
  readonly gateway: SchemaSource;
  readonly registry: Registry;
  readonly config: SubscriptionConfig;
  /** The process's change feed (`feature-updates`); the hub reads it from when the core is made. */
  readonly feed: ChangeFeed;
  /** Checks credentials (auth/authenticator.ts); none: everyone is let in. */
  readonly authenticator?: Authenticator | undefined;
  /** Structural checks before parsing, applied to each subscribe request as to each HTTP request. */
  readonly admit?: Admission | undefined;
  /**
   * Co-located shape: the store the in-process subgraphs read. Payload queries that compile
   * (serving/compiled-operations.ts) are then answered by their compiled plan, byte-identical to
   * the planner's answer; the others, and any failure, go through the gateway.
   */
  readonly store?: OnlineStore | undefined;
  /** Live persisted operations (live-operations.ts): adds `Subscription.liveOperation`. */
  readonly live?: LiveOperations | undefined;
}

/** A subscribe request as every transport carries it (graphql-ws's payload, an HTTP body or query string). */
export interface SubscribeRequest {
  readonly query?: unknown;
  readonly operationName?: unknown;
  readonly variables?: unknown;
  readonly extensions?: unknown;
}

/** One connection of a transport: a WebSocket, or an SSE or multipart response (one subscription each). */
export interface Session {
  readonly transport: TransportName;
  readonly principal?: Principal | undefined;
  readonly streams: ConnectionStreams;
}

export type TransportName = 'graphql-ws' | 'sse' | 'multipart';

/** What a transport tells the core, so that a shutdown knows when everything queued was sent. */
export interface Transport {
  readonly name: string;
  /** Open connections. */
  connections(): number;
  /** Subscriptions still sending (not yet completed on the wire). */
  sending(): number;
  /** Stop taking connections; end the open ones (after what they had queued was sent). */
  close(): Promise<void>;
}

/** How long a shutdown waits for subscriptions to send what they have queued (a stalled reader is not waited for). */
const drainMs = 2000;
const log = rootLog.child({ component: 'subscriptions' });

export class SubscriptionCore {
  readonly config: SubscriptionConfig;
  private readonly hub: ChangeHub;
  private current: GraphQLSchema;
  private readonly transports: Transport[] = [];
  private readonly stopWatchingSchema: () => void;
  private readonly unsubscribe: () => void;
  private closing: Promise<void> | null = null;

  constructor(private readonly options: CoreOptions) {
    const { apollo, gateway, registry, config, store } = options;
    this.config = config;
    this.hub = new ChangeHub(registry, config.subscriptionQueueSize);
    const compile = store ? (name: string, query: string) => compileOperation(registry, name, query, store, config.maxBatchIds) : undefined;
    const resolveEntity = entityResolver(apollo, compile);
    if (!gateway.schema) throw new Error('subscriptions need the gateway schema: attach them after apollo.start()');
    this.current = buildSubscriptionSchema(gateway.schema, registry, this.hub, resolveEntity, config.maxBatchIds, options.live);
    this.stopWatchingSchema = gateway.onSchemaLoadOrUpdate(({ apiSchema }) => {
      try {
        this.current = buildSubscriptionSchema(apiSchema, registry, this.hub, resolveEntity, config.maxBatchIds, options.live);
      } catch (error) {
        log.error({ err: (error as Error).message }, 'subscription schema not rebuilt after a schema update; keeping the previous one');
      }
    });
    this.unsubscribe = options.feed.subscribe((record) => this.hub.onRecord(record));
  }

  /** The client-facing schema including Subscription (what introspection shows). */
  schema(): GraphQLSchema {
    return this.current;
  }

  get isClosing(): boolean {
    return this.closing !== null;
  }

  register(transport: Transport): void {
    this.transports.push(transport);
  }

  /**
   * The principal behind `credentials`, allowed to subscribe. Throws the
   * AccessError (401, 403, 429) to answer with; undefined when no one is authenticated.
   */
  async authenticate(credentials: Credentials, clientAddress: string | undefined): Promise<Principal | undefined> {
    const { authenticator } = this.options;
    if (!authenticator) return undefined;
    const principal = await authenticator.authenticate(credentials, clientAddress);
    // Whoever may subscribe to anything (feature changes, or live persisted operations); what is checked by kind once parsed.
    const refusal = authorizeSubscriber(principal);
    if (refusal) throw refusal;
    return principal;
  }

  /**
   * The execution arguments of a subscribe request, its source stream already
   * open (in the context), or the errors to refuse it with. `open`: the
   * session's subscriptions including this one.
   */
  async prepare(session: Session, request: SubscribeRequest, open: number): Promise<ExecutionArgs | GraphQLError[]> {
    const { config, admit, authenticator } = this.options;
    const refuse = (code: string, message: string, extensions: Record<string, unknown> = {}): GraphQLError[] => {
      rejectedRequests.inc({ code });
      return [new GraphQLError(message, { extensions: { code, ...extensions } })];
    };
    const { principal } = session;
    if (authenticator) {
      // Checked per subscription too, as each HTTP request is (the roles could be narrower than the connection's use).
      const denied = authorizeSubscriber(principal);
      if (denied) return refuse(denied.code, denied.message);
    }
    if (typeof request.query !== 'string') return refuse(ErrorCode.BadRequest, 'A subscribe request needs `query`: the subscription document as a string');
    if (request.operationName != null && typeof request.operationName !== 'string') return refuse(ErrorCode.BadRequest, '`operationName` must be a string');
    const variables = request.variables ?? {};
    if (typeof variables !== 'object' || variables === null || Array.isArray(variables)) return refuse(ErrorCode.BadRequest, '`variables` must be an object');
    const refusal = admit?.(request, principal);
    if (refusal) return refuse(refusal.code, refusal.message);
    if (open > config.maxSubscriptionsPerConnection) {
      return refuse(
        ErrorCode.TooManySubscriptions,
        `This connection already has ${config.maxSubscriptionsPerConnection} subscriptions, the most allowed ` +
          '(MAX_SUBSCRIPTIONS_PER_CONNECTION); complete one first or open another connection',
        { max: config.maxSubscriptionsPerConnection },
      );
    }

    let document: DocumentNode;
    try {
      document = parse(request.query, { maxTokens: 20_000 });
    } catch (error) {
      return [withCode(error, ErrorCode.ParseFailed)];
    }
    const schema = this.current;
    const invalid = validate(schema, document);
    if (invalid.length > 0) return invalid.map((e) => withCode(e, ErrorCode.ValidationFailed));
    const operationName = (request.operationName as string | null | undefined) ?? undefined;
    const operation = getOperationAST(document, operationName);
    if (!operation) {
      return refuse(
        ErrorCode.OperationResolutionFailure,
        operationName ? `Unknown operation named "${operationName}".` : 'Must provide operation name if query contains multiple operations.',
      );
    }
    if (operation.operation !== OperationTypeNode.SUBSCRIPTION) {
      return refuse(
        ErrorCode.OperationNotSupported,
        `Only subscriptions are served over ${transportLabel[session.transport]}; send ${operation.operation} operations to POST /graphql as JSON`,
      );
    }
    // What it subscribes to: feature changes (any selection), or live persisted operations alone (open to inference too).
    for (const kind of authenticator ? kindsOf(document, operation, false) : []) {
      const denied = authorize(principal, kind);
      if (denied) return refuse(denied.code, denied.message);
    }
    const overLimit = operationLimitError(document, operation, variables as Record<string, unknown>, config);
    if (overLimit) return [withoutHttp(overLimit)];

    const contextValue: SubscriptionContext = { entityQueries: new Map(), eventErrors: [], principal, connection: session.streams };
    const args: ExecutionArgs = {
      schema, document, operationName, variableValues: variables as Record<string, unknown>, contextValue, fieldResolver: responseKeyResolver,
    };
    // Variables and arguments are checked here, so a bad subscription gets errors (not a first event
    // with errors). The stream this opens is kept in the context and handed back by `execute`.
    const source = await createSourceEventStream(args);
    if (!(Symbol.asyncIterator in source)) {
      return (source.errors ?? [new GraphQLError('subscription failed')]).map((e) => withCode(e, ErrorCode.BadUserInput));
    }
    return args;
  }

  /**
   * The results of prepared arguments: one per change event, each read when it is sent, with the
   * gateway's own errors of the event's entity added as the gateway formatted them (payload.ts).
   */
  async execute(args: ExecutionArgs): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
    const results = (await subscribe(args)) as AsyncIterableIterator<ExecutionResult> | ExecutionResult;
    if (!(Symbol.asyncIterator in results)) return results;
    const { eventErrors } = args.contextValue as SubscriptionContext;
    const withGatewayErrors = (step: IteratorResult<ExecutionResult>): IteratorResult<ExecutionResult> => {
      if (step.done || eventErrors.length === 0) return step;
      const forwarded = eventErrors.splice(0).map((error) => new ForwardedError(error));
      return { done: false, value: { ...step.value, errors: [...(step.value.errors ?? []), ...(forwarded as unknown as GraphQLError[])] } };
    };
    const iterator: AsyncIterableIterator<ExecutionResult> = {
      next: async () => withGatewayErrors(await results.next()),
      return: async () => (await results.return?.()) ?? { done: true, value: undefined },
      throw: async (error?: unknown) => (await results.throw?.(error)) ?? { done: true, value: undefined },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  stats(): SubscriptionStats {
    return this.hub.stats(this.transports.reduce((n, t) => n + t.connections(), 0));
  }

  /**
   * No change event comes in any more; each subscription sends what it has
   * queued and completes (for at most `drainMs`); then every transport ends
   * its connections.
   */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      this.stopWatchingSchema();
      this.unsubscribe();
      const queued = this.hub.stats(0).queued;
      this.hub.finishAll();
      const drained = () => this.hub.streams.size === 0 && this.transports.every((t) => t.sending() === 0);
      const deadline = Date.now() + drainMs;
      while (!drained() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      log.info({ queued, undelivered: this.hub.stats(0).queued, unfinished: this.hub.streams.size }, 'subscriptions drained');
      await Promise.all(this.transports.map((t) => t.close()));
      this.hub.closeAll();
    })());
  }
}

/**
 * An error the gateway already formatted, passed on as it is: transports serialize a result's errors
 * with `toJSON` (graphql-ws) or JSON.stringify, and both write exactly these fields.
 */
class ForwardedError {
  constructor(private readonly formatted: GraphQLFormattedError) {}
  get message(): string {
    return this.formatted.message;
  }
  toJSON(): GraphQLFormattedError {
    return this.formatted;
  }
}

const transportLabel: Record<TransportName, string> = { 'graphql-ws': 'WebSocket', sse: 'SSE', multipart: 'multipart HTTP' };

function withCode(error: unknown, code: string): GraphQLError {
  if (!(error instanceof GraphQLError)) return new GraphQLError(String((error as Error)?.message ?? error), { extensions: { code } });
  if (error.extensions.code) return error;
  return new GraphQLError(error.message, {
    nodes: error.nodes, source: error.source, positions: error.positions, path: error.path, originalError: error.originalError,
    extensions: { ...error.extensions, code },
  });
}

/** The HTTP door's errors carry their status for Apollo Server; a subscription's do not need it. */
function withoutHttp(error: GraphQLError): GraphQLError {
  const { http: _http, ...extensions } = error.extensions;
  return new GraphQLError(error.message, { extensions });
}
