import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { after, before, describe, test } from 'node:test';
import { readManifest } from '../../schema/manifest.js';
import { openStore, type OpenedStore } from '../../store/bootstrap.js';
import { createStore } from '../../store/create-store.js';
import { demoRows } from '../../store/demo-data.js';
import type { ViewRow } from '../../store/rows.js';
import { writeRows } from '../../store/rows.js';
import type { RunningGateway } from '../../gateway/server.js';
import { NodeProcess, registry, spawnSubgraphs, startTestGateway, testConfig, waitUntilReady } from '../support/gateway.js';
import { get, post, type Reply } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * Decision 5: co-located and distributed shapes run the same planner and
 * resolvers and return byte-identical responses. Each store is served both
 * ways from the same data and every request is compared byte for byte.
 */

const manifest = readManifest();
const byName = (name: string) => manifest.operations.find((o) => o.name === name)!;
const persisted = (name: string, variables: Record<string, unknown>) => ({
  extensions: { persistedQuery: { version: 1, sha256Hash: byName(name).id } },
  variables,
});
const items20 = Array.from({ length: 20 }, (_, i) => String(i + 1));

/** The requests compared; the first two are the must-shows. */
const requests: { name: string; body: unknown }[] = [
  { name: 'users 1-3', body: { query: '{ users(ids: ["1","2","3"]) { id clickStats { clickRate } profile { sessionLength isPremium } } }' } },
  { name: 'RankingFeatures, 1 user, 20 items', body: persisted('RankingFeatures', { user: '1', items: items20 }) },
  { name: 'FraudFeatures', body: persisted('FraudFeatures', { user: '2', merchant: '3' }) },
  { name: 'UserClickRate with a missing id', body: persisted('UserClickRate', { ids: ['4', 'missing', '5'] }) },
  { name: 'stale value', body: { query: '{ user(id: "stale-1") { id clickStats { clickRate clicks eventTime stale } profile { country stale } } }' } },
  { name: 'missing entity', body: { query: '{ user(id: "nobody") { id clickStats { clickRate } } merchant(id: "nobody") { id } }' } },
  { name: 'versions side by side', body: { query: '{ user(id: "6") { clickStats { clickRate } clickStatsV1 { clickRate } clickStatsV2 { clicks impressions } } }' } },
  { name: 'registry metadata', body: { query: '{ featureRegistry { entities { name views { name version active ttlSeconds owner features { name type } } } } }' } },
  { name: 'validation error', body: { query: '{ user(id: "1") { nope } }' } },
];

function fixtureRows(eventTimeMs: number): ViewRow[] {
  const rows = [...demoRows(registry, { eventTimeMs, counts: { user: 30, item: 30, merchant: 10 } })];
  const user = registry.entities.find((e) => e.name === 'user')!;
  const [clickStats, profile] = user.views;
  // TTL of clickStats is 60 s: 90 s old is stale but still retained by the store.
  rows.push({ view: clickStats!.versions[1]!, row: { entityId: 'stale-1', values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: eventTimeMs - 90_000 } });
  rows.push({ view: profile!.versions[0]!, row: { entityId: 'stale-1', values: { country: 'DE', sessionLength: 1, isPremium: false, embedding: [1, 2] }, eventTimeMs } });
  return rows;
}

async function compareShapes(colocated: string, distributed: string): Promise<void> {
  for (const { name, body } of requests) {
    const [a, b] = await Promise.all([post(colocated, body), post(distributed, body)]);
    assert.equal(a.status, b.status, `${name}: status`);
    assert.equal(a.text, b.text, `${name}: co-located and distributed responses differ`);
    if (name !== 'validation error') assert.equal(a.json.errors, undefined, `${name}: ${a.text}`);
  }
}

function checkMustShows(reply: Reply, rows: ViewRow[]): void {
  const value = (view: string, id: string) => rows.find((r) => r.view.viewName === view && r.view.active && r.row.entityId === id)!.row.values;
  assert.deepEqual(reply.json.data.users, ['1', '2', '3'].map((id) => ({
    id,
    clickStats: { clickRate: value('clickStats', id).clickRate },
    profile: { sessionLength: value('profile', id).sessionLength, isPremium: value('profile', id).isPremium },
  })));
}

describe('co-located and distributed shapes on Redis', () => {
  let redis: RedisProcess;
  let rows: ViewRow[];
  let colocated: RunningGateway;
  let colocatedStore: ReturnType<typeof createStore>;
  let subgraphs: NodeProcess[] = [];
  let gatewayProcess: NodeProcess;
  let distributedUrl: string;

  before(async () => {
    redis = await RedisProcess.start();
    rows = fixtureRows(Date.now() - 5000);
    colocatedStore = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 1000 });
    await eventually(() => colocatedStore.ping());
    await writeRows(colocatedStore, rows);
    colocated = await startTestGateway(colocatedStore);

    const spawned = await spawnSubgraphs({ REDIS_URL: redis.url });
    subgraphs = spawned.processes;
    const port = await freePort();
    gatewayProcess = NodeProcess.spawn('gateway/main.js', [], { PORT: String(port), SUBGRAPH_URLS: spawned.subgraphUrls });
    distributedUrl = `http://127.0.0.1:${port}/graphql`;
    await waitUntilReady(distributedUrl.replace('/graphql', '/readyz'), gatewayProcess);
  });

  after(async () => {
    await gatewayProcess?.stop();
    await Promise.all(subgraphs.map((p) => p.stop()));
    await colocated?.close();
    await colocatedStore?.close();
    await redis?.destroy();
  });

  test('every request gives byte-identical responses in both shapes', async () => {
    await compareShapes(colocated.url, distributedUrl);
  });

  test('the stored values come back', async () => {
    checkMustShows(await post(distributedUrl, requests[0]!.body), rows);
    const ranking = await post(distributedUrl, requests[1]!.body);
    assert.equal(ranking.json.data.items.length, 20);
    assert.deepEqual(ranking.json.data.items.map((i: { id: string }) => i.id), items20);
  });

  test('the distributed gateway reports each subgraph in /readyz', async () => {
    const ready = await get(distributedUrl.replace('/graphql', '/readyz'));
    assert.equal(ready.status, 200);
    assert.deepEqual(Object.keys(ready.json.checks).sort(), ['schema', 'subgraph:item', 'subgraph:merchant', 'subgraph:user']);
  });
});

describe('co-located and distributed shapes on the embedded store', () => {
  let seedFile: string;
  let rows: ViewRow[];
  let opened: OpenedStore;
  let colocated: RunningGateway;
  let subgraphs: NodeProcess[] = [];
  let distributed: RunningGateway;

  before(async () => {
    // Each process has its own embedded store; seeding all from one file gives them the same data.
    rows = fixtureRows(Date.now() - 5000);
    seedFile = path.join(fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-seed-')), 'rows.jsonl');
    fs.writeFileSync(seedFile, rows.map(({ view, row }) =>
      JSON.stringify({ entity: view.entityName, id: row.entityId, view: view.viewName, version: view.version, eventTime: row.eventTimeMs, values: row.values }),
    ).join('\n') + '\n');
    opened = await openStore(testConfig({ EMBEDDED_SEED_FILE: seedFile }), registry);
    colocated = await startTestGateway(opened.store);
    const spawned = await spawnSubgraphs({ EMBEDDED_SEED_FILE: seedFile });
    subgraphs = spawned.processes;
    distributed = await startTestGateway(undefined, { SUBGRAPH_URLS: spawned.subgraphUrls });
  });

  after(async () => {
    await distributed?.close();
    await Promise.all(subgraphs.map((p) => p.stop()));
    await colocated?.close();
    await opened?.close();
  });

  test('every request gives byte-identical responses in both shapes', async () => {
    await compareShapes(colocated.url, distributed.url);
  });

  test('the stored values come back', async () => {
    checkMustShows(await post(colocated.url, requests[0]!.body), rows);
  });
});
