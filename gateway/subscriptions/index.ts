import type { ApolloServer, BaseContext } from '@apollo/server';
import type { GraphQLSchema } from 'graphql';
import type { ChangeFeed } from '../../eventlog/change-feed.js';
import type { Admission, HttpServer, StreamDoor } from '../../runtime/graphql-http.js';
import type { Registry } from '../../schema/types.js';
import type { OnlineStore } from '../../store/online-store.js';
import type { Authenticator } from '../../auth/authenticator.js';
import { SubscriptionCore, type SchemaSource, type SubscriptionConfig } from './core.js';
import type { SubscriptionStats } from './hub.js';
import type { LiveOperations } from './live-operations.js';
import { useHttpStreams } from './use/http-stream.js';
import { multipartFraming } from './use/multipart.js';
import { sseFraming } from './use/sse.js';
import { useWebSocket } from './use/ws.js';

/**
 * GraphQL subscriptions of live feature changes on the gateway's own HTTP
 * server and path, over every transport it serves: graphql-ws (use/ws.ts),
 * SSE (use/sse.ts) and multipart HTTP (use/multipart.ts), all on one core
 * (core.ts) that knows no transport.
 *
 * @apollo/gateway cannot execute subscriptions, so the gateway hosts them
 * itself, on its client-facing API schema (taken from ApolloGateway after it
 * loaded, rebuilt on every schema update) plus the subscription schema
 * generated from the registry (schema/subscription-sdl.ts).
 */

export type { SchemaSource } from './core.js';
export type { SubscriptionStats } from './hub.js';

export interface SubscriptionsOptions {
  /** The gateway's HTTP or HTTPS server: the WebSocket upgrade (ws or wss) is handled on it. */
  readonly server: HttpServer;
  readonly apollo: ApolloServer<BaseContext>;
  readonly gateway: SchemaSource;
  readonly registry: Registry;
  readonly config: SubscriptionConfig;
  readonly feed: ChangeFeed;
  readonly authenticator?: Authenticator;
  readonly admit?: Admission;
  readonly store?: OnlineStore;
  /** Default `/graphql`. */
  readonly path?: string;
  /** Browser origins allowed to open a subscription socket (CORS_ORIGINS); absent: any. */
  readonly corsOrigins?: '*' | readonly string[] | null;
  /** Live persisted operations (live-operations.ts): adds `Subscription.liveOperation`. */
  readonly live?: LiveOperations;
}

export interface Subscriptions {
  /** The client-facing schema including Subscription (what introspection should show). */
  schema(): GraphQLSchema;
  stats(): SubscriptionStats;
  /** SSE and multipart subscriptions: the HTTP front hands them here (runtime/graphql-http.ts `streams`). */
  readonly streams: StreamDoor;
  close(): Promise<void>;
}

export async function attachSubscriptions(options: SubscriptionsOptions): Promise<Subscriptions> {
  const core = new SubscriptionCore(options);
  core.register(useWebSocket(core, options));
  const http = useHttpStreams(core);
  core.register(http);
  const framings = { sse: sseFraming, multipart: multipartFraming } as const;
  return {
    schema: () => core.schema(),
    stats: () => core.stats(),
    streams: { serve: (req, res, operation, principal, transport) => http.serve(req, res, operation, principal, framings[transport]) },
    close: () => core.close(),
  };
}
