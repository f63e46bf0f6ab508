import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningGateway } from '../../gateway/server.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway } from '../../gateway/server.js';
import { fastPathRequests, hotTierLookups } from '../../runtime/metrics.js';
import { readManifest } from '../../schema/manifest.js';
import type { ViewVersion } from '../../schema/types.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { demoRows } from '../../store/demo-data.js';
import { StoreUnavailableError, type OnlineStore, type ReadOptions, type ReadResult } from '../../store/online-store.js';
import { writeRows } from '../../store/rows.js';
import { registry, startTestGateway, testConfig } from '../support/gateway.js';
import { post, type Reply } from '../support/http.js';

/**
 * The differential test of the fast path: every persisted operation, with
 * fresh, stale, missing and failing values and with bad variables, through
 * the compiled plan and through the generic federated path (FAST_PATH=false)
 * on the same store. Status, headers and body must be identical byte for
 * byte, and the fast path must really have served the cases it claims.
 *
 * Both paths also run with the hot tier on (store/hot-tier.ts, an embedded
 * change feed): every answer, the first (read from the store) and the second
 * (served from memory), must be the same bytes as without it.
 */
const NOW = Date.parse('2026-11-26T12:00:00.000Z');

/**
 * A store that can be told to fail, as a dead Redis shard would: every id
 * (`failing`), or only the ids `failsId` picks (one shard of several), each
 * failed id answering a per-id StoreUnavailableError like the real backend.
 */
class SwitchableStore implements OnlineStore {
  failing = false;
  failsId: ((id: string) => boolean) | undefined;
  reads = 0;
  constructor(private readonly inner: OnlineStore) {}
  get kind(): string {
    return this.inner.kind;
  }
  async readSettled(view: ViewVersion, ids: readonly string[], options?: ReadOptions): Promise<ReadResult[]> {
    this.reads++;
    const fails = this.failing ? () => true : this.failsId;
    if (!fails) return this.inner.readSettled(view, ids, options);
    const error = new StoreUnavailableError('redis', '127.0.0.1:6390', 'Connection is closed.');
    const values = await this.inner.readSettled(view, ids, options);
    return ids.map((id, i) => (fails(id) ? error : values[i]!));
  }
  read: OnlineStore['read'] = (view, ids, options) => this.inner.read(view, ids, options);
  write: OnlineStore['write'] = (view, rows) => this.inner.write(view, rows);
  ping = (): Promise<void> => this.inner.ping();
  health: OnlineStore['health'] = () => this.inner.health();
  close = (): Promise<void> => this.inner.close();
}

const manifest = readManifest();
const idOf = (name: string): string => manifest.operations.find((o) => o.name === name)!.id;
const bodyOf = (name: string): string => manifest.operations.find((o) => o.name === name)!.body;

/** Variables per operation: fresh, stale, missing and mixed. Users 1-20 fresh, 21-25 stale, 26+ missing. */
const cases: Record<string, Record<string, unknown>[]> = {
  UserClickRate: [
    { ids: ['1', '2', '3'] },
    { ids: ['21', '22'] },
    { ids: ['404', '405'] },
    { ids: ['1', '21', '404', '1', '21'] },
    { ids: [] },
    { ids: ['profile-only'] },
  ],
  RankingFeatures: [
    { user: '1', items: Array.from({ length: 20 }, (_, i) => String(i + 1)) },
    { user: '21', items: ['21', '22', '404', '1'] },
    { user: '404', items: ['404'] },
    { user: 'profile-only', items: [] },
  ],
  FraudFeatures: [
    { user: '1', merchant: '1' },
    { user: '22', merchant: '21' },
    { user: '404', merchant: '404' },
  ],
};

/** Requests the fast path must hand to the generic path (which then answers with its errors). */
const badVariables: Record<string, unknown>[] = [
  {},
  { ids: null },
  { ids: 5 },
  { ids: '1' },
  { ids: [1, 2] },
  { ids: [{}] },
  { ids: Array.from({ length: 21 }, (_, i) => String(i)) }, // over MAX_BATCH_IDS=20
  { user: 7, items: [] },
];

describe('fast path equals the generic federated path byte for byte', () => {
  let inner: CodecStore;
  let store: SwitchableStore;
  let fast: RunningGateway;
  let generic: RunningGateway;
  let fastHot: RunningGateway;
  let genericHot: RunningGateway;
  const feeds: EmbeddedLog[] = [];

  before(async () => {
    inner = createStore({ kind: 'embedded' }, () => NOW);
    await writeRows(inner, demoRows(registry, { eventTimeMs: NOW - 5_000, counts: { user: 20, item: 20, merchant: 20 } }));
    // Ids 21-25 are stale: users written 90 s ago (clickStats, TTL 60 s, is stale; profile, 7 d, is not),
    // items and merchants 1 h 59 m ago (TTL 1 h; the store keeps them until 2 h).
    const older = (ageMs: number, entity: string) =>
      [...demoRows(registry, { eventTimeMs: NOW - ageMs, counts: { user: 25, item: 25, merchant: 25 } })]
        .filter((r) => r.view.entityName === entity && Number(r.row.entityId) > 20);
    await writeRows(inner, [...older(90_000, 'user'), ...older(7_140_000, 'item'), ...older(7_140_000, 'merchant')]);
    const profile = registry.entities[0]!.views.find((v) => v.name === 'profile')!.versions[0]!;
    await inner.write(profile, [{ entityId: 'profile-only', values: { sessionLength: 1, isPremium: true, country: 'DE', embedding: [0.5, -1e-7, 1e21] }, eventTimeMs: NOW - 1000 }]);
    store = new SwitchableStore(inner);
    fast = await startTestGateway(store, { FAST_PATH: 'true', MAX_BATCH_IDS: '20' });
    generic = await startTestGateway(store, { FAST_PATH: 'false', MAX_BATCH_IDS: '20' });
    const hot = (fastPath: string) => {
      const eventLog = new EmbeddedLog();
      feeds.push(eventLog);
      // The hot tier judges freshness by the store's (fixed) clock.
      return startGateway({ config: testConfig({ FAST_PATH: fastPath, MAX_BATCH_IDS: '20', HOT_TIER_MAX_BYTES: '16777216' }), registry, store, eventLog, clock: () => NOW });
    };
    fastHot = await hot('true');
    genericHot = await hot('false');
  });

  after(async () => {
    await fast.close();
    await generic.close();
    await fastHot.close();
    await genericHot.close();
    for (const log of feeds) await log.close();
    await inner.close();
  });

  async function both(body: unknown, headers: Record<string, string> = {}): Promise<[Reply, Reply]> {
    return [await post(fast.url, body, headers), await post(generic.url, body, headers)];
  }

  function assertSame(a: Reply, b: Reply, label: string): void {
    assert.equal(a.status, b.status, `${label}: status`);
    assert.equal(a.headers.get('content-type'), b.headers.get('content-type'), `${label}: content-type`);
    assert.equal(a.headers.get('cache-control'), b.headers.get('cache-control'), `${label}: cache-control`);
    assert.equal(a.text, b.text, `${label}: body`);
  }

  /** The same request through both hot gateways twice (the store's answer, then memory's): each must equal `expected`. */
  async function assertSameHot(body: unknown, expected: Reply, label: string, headers: Record<string, string> = {}): Promise<void> {
    for (const round of ['from the store', 'from memory']) {
      const [f, g] = [await post(fastHot.url, body, headers), await post(genericHot.url, body, headers)];
      assertSame(f, expected, `${label}, hot tier, fast path, ${round}`);
      assertSame(g, expected, `${label}, hot tier, generic path, ${round}`);
    }
  }

  async function hits(): Promise<number> {
    return (await hotTierLookups.get()).values.filter((v) => v.labels.outcome === 'hit').reduce((n, v) => n + v.value, 0);
  }

  async function served(name: string): Promise<number> {
    const metric = await fastPathRequests.get();
    return metric.values.find((v) => v.labels.operation === name && v.labels.outcome === 'served')?.value ?? 0;
  }

  for (const [name, variableSets] of Object.entries(cases)) {
    test(`${name}: fresh, stale, missing and mixed values`, async () => {
      for (const variables of variableSets) {
        const before = await served(name);
        const [a, b] = await both({ extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables });
        assertSame(a, b, `${name} ${JSON.stringify(variables)}`);
        assert.equal(a.json.errors, undefined, a.text);
        assert.equal(await served(name), before + 1, `${name} ${JSON.stringify(variables)} was not served by the fast path`);
        const hitsBefore = await hits();
        await assertSameHot({ extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables }, a, `${name} ${JSON.stringify(variables)}`);
        assert.equal(await served(name), before + 3, `${name} ${JSON.stringify(variables)} was not served by the hot fast path`);
        if (Object.values(variables).flat().length > 0) assert.ok((await hits()) > hitsBefore, `${name} ${JSON.stringify(variables)}: nothing was served from memory`);
      }
    });

    test(`${name}: sent as query text, and with operationName`, async () => {
      const variables = variableSets[0]!;
      const before = await served(name);
      const [a, b] = await both({ query: bodyOf(name), variables, operationName: name });
      assertSame(a, b, `${name} as text`);
      await assertSameHot({ query: bodyOf(name), variables, operationName: name }, a, `${name} as text`);
      assert.equal(await served(name), before + 3, 'the fast path served it, with the hot tier twice');
    });
  }

  test('the data really covers fresh, stale and missing values', async () => {
    const reply = await post(fast.url, { extensions: { persistedQuery: { version: 1, sha256Hash: idOf('RankingFeatures') } }, variables: { user: '21', items: ['21', '404', '1'] } });
    const { user, items } = reply.json.data;
    assert.equal(user.clickStats.stale, true);
    assert.equal(user.clickStats.clickRate, null);
    assert.equal(items[0].itemStats.stale, true);
    assert.equal(items[1], null);
    assert.equal(items[2].itemStats.stale, false);
    assert.equal(typeof items[2].itemStats.ctr, 'number');
  });

  test('bad variables are handed to the generic path and answered identically', async () => {
    for (const variables of badVariables) {
      for (const name of ['UserClickRate', 'RankingFeatures']) {
        const before = await served(name);
        const [a, b] = await both({ extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables });
        assertSame(a, b, `${name} ${JSON.stringify(variables)}`);
        await assertSameHot({ extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables }, a, `${name} ${JSON.stringify(variables)}`);
        assert.equal(await served(name), before, `${name} ${JSON.stringify(variables)} must not be served by the fast path`);
      }
    }
  });

  test('a mismatched operationName and a non-JSON Accept take the generic path', async () => {
    const body = { extensions: { persistedQuery: { version: 1, sha256Hash: idOf('UserClickRate') } }, variables: { ids: ['1'] } };
    const [a, b] = await both({ ...body, operationName: 'Other' });
    assertSame(a, b, 'operationName mismatch');
    const [c, d] = await both(body, { accept: 'application/graphql-response+json' });
    assertSame(c, d, 'graphql-response+json');
    assert.match(c.headers.get('content-type') ?? '', /graphql-response\+json/);
  });

  test('a failing store: both paths answer with the same STORE_UNAVAILABLE error', async () => {
    store.failing = true;
    try {
      for (const name of Object.keys(cases)) {
        const body = { extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables: cases[name]![0] };
        store.reads = 0;
        const a = await post(fast.url, body);
        const fastReads = store.reads;
        store.reads = 0;
        const b = await post(generic.url, body);
        assertSame(a, b, `${name} with the store down`);
        assert.equal(a.json.errors[0].extensions.code, 'STORE_UNAVAILABLE');
        // The hand-over carries what was read: the generic path does not ask the dead store again.
        assert.equal(fastReads, store.reads, `${name}: the fast path read the failing store ${fastReads} times, the generic path ${store.reads}`);
      }
    } finally {
      store.failing = false;
    }
  });

  test('one shard failing: both paths answer the same partial data, errors only on the failed ids', async () => {
    // Odd-numbered ids live on the "dead shard"; ids without a number (profile-only, 404…) on live ones.
    store.failsId = (id) => Number(id) % 2 === 1;
    try {
      for (const [name, variableSets] of Object.entries(cases)) {
        for (const variables of variableSets) {
          const label = `${name} ${JSON.stringify(variables)}`;
          const body = { extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables };
          const before = await served(name);
          store.reads = 0;
          const a = await post(fast.url, body);
          const fastReads = store.reads;
          store.reads = 0;
          const b = await post(generic.url, body);
          assertSame(a, b, label);
          assert.equal(fastReads, store.reads, `${label}: the fast path read ${fastReads} times, the generic path ${store.reads}`);
          const ids = Object.values(variables).flat() as string[];
          const failing = ids.filter((id) => Number(id) % 2 === 1);
          if (failing.length === 0) {
            assert.equal(a.json.errors, undefined, `${label}: ${a.text}`);
            assert.equal(await served(name), before + 1, `${label}: nothing failed, so the fast path answers`);
            continue;
          }
          assert.equal(await served(name), before, `${label}: a partial failure is answered by the generic path`);
          assert.ok(a.json.errors.length > 0, a.text);
          for (const error of a.json.errors) {
            assert.equal(error.extensions.code, 'STORE_UNAVAILABLE', a.text);
            assert.equal(error.extensions.shard, '127.0.0.1:6390', a.text);
          }
          assert.notEqual(a.json.data, null, `${label}: the ids on live shards are still answered: ${a.text}`);
        }
      }
      // The values of ids on live shards are all there, next to the errors.
      const reply = await post(fast.url, { extensions: { persistedQuery: { version: 1, sha256Hash: idOf('UserClickRate') } }, variables: { ids: ['1', '2', '3', '4'] } });
      const users = reply.json.data.users;
      assert.equal(users[0], null);
      assert.equal(typeof users[1].clickStats.clickRate, 'number', reply.text);
      assert.equal(users[2], null);
      assert.equal(typeof users[3].clickStats.clickRate, 'number', reply.text);
      assert.deepEqual(reply.json.errors.map((e: { path: unknown[] }) => e.path), [['users', 0], ['users', 2]], reply.text);
    } finally {
      store.failsId = undefined;
    }
  });
});
