import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ViewVersion } from '../../schema/types.js';
import { readManifest } from '../../schema/manifest.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { demoRows } from '../../store/demo-data.js';
import type { OnlineStore, ReadOptions, ReadResult } from '../../store/online-store.js';
import { writeRows } from '../../store/rows.js';
import type { RunningGateway } from '../../gateway/server.js';
import { registry, startTestGateway } from '../support/gateway.js';
import { gql, post } from '../support/http.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * Decision 2: one store call per feature view per request, however many
 * fields, aliases and root fields of the request resolve that view.
 */

/** Counts reads per view version on the way to a real store. */
class CountingStore implements OnlineStore {
  readonly reads: { view: string; ids: readonly string[] }[] = [];
  constructor(private readonly inner: OnlineStore) {}
  get kind(): string {
    return this.inner.kind;
  }
  readSettled(view: ViewVersion, ids: readonly string[], options?: ReadOptions): Promise<ReadResult[]> {
    this.reads.push({ view: `${view.viewName}:v${view.version}`, ids });
    return this.inner.readSettled(view, ids, options);
  }
  read: OnlineStore['read'] = (view, ids, options) => this.inner.read(view, ids, options);
  write: OnlineStore['write'] = (view, rows) => this.inner.write(view, rows);
  ping = (): Promise<void> => this.inner.ping();
  health: OnlineStore['health'] = () => this.inner.health();
  close = (): Promise<void> => this.inner.close();
  readsOf(view: string): number {
    return this.reads.filter((r) => r.view === view).length;
  }
}

const manyResolutions = `{
  a: user(id: "1") { id clickStats { clickRate } profile { country } }
  b: user(id: "2") { clickStats { clickRate clicks } }
  users(ids: ["3", "4", "5", "1"]) {
    clickStats { clickRate }
    again: clickStats { impressions }
    clickStatsV2 { clicks }
    profile { isPremium }
  }
}`;

describe('batching: one store call per view per request', () => {
  let inner: CodecStore;
  let store: CountingStore;
  let gateway: RunningGateway;

  before(async () => {
    inner = createStore({ kind: 'embedded' });
    await writeRows(inner, demoRows(registry, { eventTimeMs: Date.now(), counts: { user: 50, item: 50, merchant: 10 } }));
    store = new CountingStore(inner);
    gateway = await startTestGateway(store);
  });

  after(async () => {
    await gateway.close();
    await inner.close();
  });

  test('aliases, several root fields and the active/versioned field of one view share one read', async () => {
    store.reads.length = 0;
    const reply = await gql(gateway.url, manyResolutions);
    assert.equal(reply.status, 200, reply.text);
    assert.equal(reply.json.errors, undefined);
    assert.equal(reply.json.data.users.length, 4);
    assert.equal(store.readsOf('clickStats:v2'), 1);
    assert.equal(store.readsOf('profile:v1'), 1);
    assert.equal(store.reads.length, 2, JSON.stringify(store.reads));
    const clickIds = store.reads.find((r) => r.view === 'clickStats:v2')!.ids;
    assert.deepEqual([...clickIds].sort(), ['1', '2', '3', '4', '5'], 'each id read once');
  });

  test('RankingFeatures for one user and 20 items: one read each of clickStats, profile and itemStats', async () => {
    store.reads.length = 0;
    const op = readManifest().operations.find((o) => o.name === 'RankingFeatures')!;
    const items = Array.from({ length: 20 }, (_, i) => String(i + 1));
    const reply = await post(gateway.url, { extensions: { persistedQuery: { version: 1, sha256Hash: op.id } }, variables: { user: '7', items } });
    assert.equal(reply.json.errors, undefined, reply.text);
    assert.equal(reply.json.data.items.length, 20);
    assert.deepEqual(store.reads.map((r) => r.view).sort(), ['clickStats:v2', 'itemStats:v1', 'profile:v1']);
    assert.equal(store.reads.find((r) => r.view === 'itemStats:v1')!.ids.length, 20);
  });

  test('two requests do not share loaders: each makes its own read', async () => {
    store.reads.length = 0;
    await gql(gateway.url, '{ user(id: "1") { clickStats { clickRate } } }');
    await gql(gateway.url, '{ user(id: "1") { clickStats { clickRate } } }');
    assert.equal(store.readsOf('clickStats:v2'), 2);
  });
});

describe('batching on real Redis: counted by the server', () => {
  let redis: RedisProcess;
  let store: CodecStore;
  let gateway: RunningGateway;

  before(async () => {
    redis = await RedisProcess.start();
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 1000 });
    await eventually(() => store.ping(), 10_000, 50);
    await writeRows(store, demoRows(registry, { eventTimeMs: Date.now(), counts: { user: 50, item: 50, merchant: 10 } }));
    gateway = await startTestGateway(store);
  });

  after(async () => {
    await gateway.close();
    await store.close();
    await redis.destroy();
  });

  test('the request above costs Redis exactly two MGETs and nothing else', async () => {
    await redis.resetStats();
    const reply = await gql(gateway.url, manyResolutions);
    assert.equal(reply.json.errors, undefined, reply.text);
    const calls = await redis.commandCalls();
    // INFO itself is counted after the snapshot it returns; nothing but MGET served the request.
    assert.deepEqual(Object.keys(calls).filter((c) => c !== 'config' && c !== 'info'), ['mget']);
    assert.equal(calls.mget, 2);
  });
});
