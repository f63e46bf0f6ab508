import { ApolloServer, type BaseContext } from '@apollo/server';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { principalFromHeaders } from '../auth/internal.js';
import type { Config } from '../runtime/config.js';
import { log } from '../runtime/log.js';
import { createGraphQLHttpServer, listen, type RunningHttpServer } from '../runtime/graphql-http.js';
import type { Registry } from '../schema/types.js';
import { storeReadiness } from '../store/health.js';
import type { OnlineStore } from '../store/online-store.js';
import { buildEntitySubgraph } from './factory.js';
import type { ChangeSink } from './push.js';

export interface RunningSubgraph extends RunningHttpServer {
  readonly name: string;
}

/**
 * One entity subgraph as its own HTTP service, for the distributed shape.
 * It is called by the gateway's planner, not by clients: no landing page,
 * no persisted queries; the gateway enforces those. `changes` is where push
 * mutations produce their change events (a KafkaLog when KAFKA_BROKERS is set).
 */
export async function startSubgraph(config: Config, registry: Registry, entityName: string, store: OnlineStore, changes?: ChangeSink): Promise<RunningSubgraph> {
  const subgraph = buildEntitySubgraph(registry, entityName, {
    store, maxBatchIds: config.maxBatchIds, pushMaxFutureMs: config.pushMaxFutureMs, ...(changes ? { changes } : {}),
  });
  const apollo = new ApolloServer<BaseContext>({
    schema: subgraph.schema,
    introspection: true,
    includeStacktraceInErrorResponses: config.debugErrors,
    // The gateway sends application/json POSTs only; CSRF prevention stays on anyway.
    plugins: [ApolloServerPluginLandingPageDisabled()],
  });
  await apollo.start();
  const ready = () => storeReadiness(store);
  // The caller's principal as the gateway signed it (auth/internal.ts): per-view read roles and the
  // push API's admin check apply here as in the co-located shape.
  if (config.internalAuthSecret === null) {
    log.warn({ subgraph: entityName }, 'INTERNAL_AUTH_SECRET is not set: the caller principal header is trusted unsigned; this port must be reachable only by the gateway');
  }
  const authenticate = async (req: { headers: Readonly<Record<string, string | string[] | undefined>> }) =>
    principalFromHeaders(req.headers, config.internalAuthSecret);
  const server = createGraphQLHttpServer({
    apollo, maxBodyBytes: config.maxBodyBytes, ready, authenticate, requestDeadlineMs: config.requestDeadlineMs, tls: config.tls, debugErrors: config.debugErrors,
  });
  const running = await listen(server, config.host, config.port);
  return {
    ...running,
    name: subgraph.name,
    close: async () => {
      // As the gateway: unready first (SHUTDOWN_READINESS_DELAY_MS), then stop listening and drain.
      running.beginDrain();
      if (config.shutdownReadinessDelayMs > 0) await new Promise((r) => setTimeout(r, config.shutdownReadinessDelayMs));
      await running.close();
      await apollo.stop();
    },
  };
}
