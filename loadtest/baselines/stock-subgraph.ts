import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';
import { Redis } from 'ioredis';
import { parseArgs } from 'node:util';
import { loadRegistry } from '../../schema/registry.js';
import { entitySubgraphSdl, versionFieldName } from '../../schema/sdl.js';
import { activeVersionOf, type ViewVersion } from '../../schema/types.js';
import { codecFor } from '../../store/codec.js';
import { isStale } from '../../store/freshness.js';
import { storeKey } from '../../store/keys.js';

/**
 * Baseline "stock": an entity subgraph as the Apollo docs teach it —
 * buildSubgraphSchema, startStandaloneServer, default settings, and a
 * resolver per view field that reads its one value from Redis (no
 * DataLoader, no batching). Same schema, same data, same answers for the
 * benchmark's ids as the feature gateway.
 *
 *   node dist/loadtest/baselines/stock-subgraph.js --entity user --port 4301 --redis redis://127.0.0.1:6379
 */
const { values } = parseArgs({ options: { entity: { type: 'string' }, port: { type: 'string' }, redis: { type: 'string' } } });
// REGISTRY_FILE: the benchmark passes the same registry to every system.
const registry = loadRegistry(process.env.REGISTRY_FILE);
const entity = registry.entities.find((e) => e.name === values.entity);
if (!entity) throw new Error(`--entity must be one of ${registry.entities.map((e) => e.name).join(', ')}`);
const redis = new Redis(values.redis ?? 'redis://127.0.0.1:6379');

async function readView(view: ViewVersion, id: string) {
  const blob = await redis.getBuffer(storeKey(view, id));
  if (!blob) return null;
  const record = codecFor(view).decode(blob);
  const eventTime = new Date(record.eventTimeMs).toISOString();
  if (isStale(view, record.eventTimeMs, Date.now())) return { eventTime, stale: true };
  return { ...record.values, eventTime, stale: false };
}

const fields: Record<string, (parent: { id: string }) => unknown> = {
  __resolveReference: (ref: { id: string }) => ({ id: ref.id }),
};
for (const view of entity.views) {
  fields[view.name] = (parent) => readView(activeVersionOf(view), parent.id);
  for (const version of view.versions) fields[versionFieldName(version)] = (parent) => readView(version, parent.id);
}

const server = new ApolloServer({
  schema: buildSubgraphSchema({
    typeDefs: parse(entitySubgraphSdl(entity)),
    resolvers: {
      Query: {
        [entity.singularField]: (_: unknown, { id }: { id: string }) => ({ id }),
        [entity.pluralField]: (_: unknown, { ids }: { ids: string[] }) => ids.map((id) => ({ id })),
        featureRegistry: () => ({ entities: [] }),
      },
      [entity.typeName]: fields,
    } as never,
  }),
});
const { url } = await startStandaloneServer(server, { listen: { port: Number(values.port), host: '127.0.0.1' } });
console.log(JSON.stringify({ msg: 'stock subgraph listening', entity: entity.name, url }));
