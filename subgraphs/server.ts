import { ApolloServer, type BaseContext } from '@apollo/server';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import type { Config } from '../runtime/config.js';
import { createGraphQLHttpServer, listen, type RunningHttpServer } from '../runtime/graphql-http.js';
import type { Registry } from '../schema/types.js';
import type { OnlineStore } from '../store/online-store.js';
import { buildEntitySubgraph } from './factory.js';

export interface RunningSubgraph extends RunningHttpServer {
  readonly name: string;
}

/**
 * One entity subgraph as its own HTTP service, for the distributed shape.
 * It is called by the gateway's planner, not by clients: no landing page,
 * no persisted queries; the gateway enforces those.
 */
export async function startSubgraph(config: Config, registry: Registry, entityName: string, store: OnlineStore): Promise<RunningSubgraph> {
  const subgraph = buildEntitySubgraph(registry, entityName, { store, maxBatchIds: config.maxBatchIds });
  const apollo = new ApolloServer<BaseContext>({
    schema: subgraph.schema,
    introspection: true,
    includeStacktraceInErrorResponses: config.debugErrors,
    // The gateway sends application/json POSTs only; CSRF prevention stays on anyway.
    plugins: [ApolloServerPluginLandingPageDisabled()],
  });
  await apollo.start();
  const ready = async () => {
    try {
      await store.ping();
      return { ready: true, checks: { store: `${store.kind}: reachable` } };
    } catch (error) {
      return { ready: false, checks: { store: `${store.kind}: ${(error as Error).message}` } };
    }
  };
  const running = await listen(createGraphQLHttpServer({ apollo, maxBodyBytes: config.maxBodyBytes, ready, tls: config.tls, debugErrors: config.debugErrors }), config.host, config.port);
  return {
    ...running,
    name: subgraph.name,
    close: async () => {
      await running.close();
      await apollo.stop();
    },
  };
}
