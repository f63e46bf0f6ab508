/**
 * The co-located gateway over real HTTP on the embedded store: stored values
 * come back exactly, persisted operations, view versions side by side,
 * staleness and missing values (decision 3), the registry query, Sandbox,
 * introspection, health and metrics.
 *
 * The store runs on a fixed clock, so freshness never depends on how fast
 * the test runs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { RunningGateway } from '../../gateway/server.js';
import { readManifest } from '../../schema/manifest.js';
import type { ViewVersion } from '../../schema/types.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import type { FeatureRow } from '../../store/online-store.js';
import { registry, startTestGateway } from '../support/gateway.js';
import { baseUrl, get, gql, post, type Reply } from '../support/http.js';

const NOW = Date.now();
const FRESH = NOW - 5_000;
const STALE = NOW - 90_000; // clickStats has a 60 s TTL

function version(entityName: string, viewName: string, n: number): ViewVersion {
  const entity = registry.entities.find((e) => e.name === entityName);
  const view = entity?.views.find((v) => v.name === viewName);
  const found = view?.versions[n - 1];
  if (!found) throw new Error(`registry has no ${entityName}.${viewName} v${n}`);
  return found;
}

const clickStatsV1 = version('user', 'clickStats', 1);
const clickStatsV2 = version('user', 'clickStats', 2);
const profile = version('user', 'profile', 1);
const itemStats = version('item', 'itemStats', 1);
const riskStats = version('merchant', 'riskStats', 1);

const users = {
  '1': { clickV1: 0.5, click: { clickRate: 0.25, clicks: 5, impressions: 20 }, profile: { sessionLength: 300, isPremium: true, country: 'DE', embedding: [0.5, -1.25, 2] } },
  '2': { clickV1: 0.75, click: { clickRate: 0.125, clicks: 1, impressions: 8 }, profile: { sessionLength: 45, isPremium: false, country: 'FR', embedding: [1, 2] } },
  '3': { clickV1: 0.0625, click: { clickRate: 0, clicks: 0, impressions: 7 }, profile: { sessionLength: 1200, isPremium: true, country: 'US', embedding: [-3.5] } },
} as const;
const itemIds = Array.from({ length: 20 }, (_, i) => `item-${i + 1}`);
const itemValues = (id: string) => {
  const n = Number(id.slice('item-'.length));
  return { ctr: n / 64, price: 10 + n * 0.5, category: n % 2 === 0 ? 'books' : 'games' };
};
const merchant = { txnCount1h: 42, amountSum1h: 1234.5, chargebackRate: 0.015625 };

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function assertOk(reply: Reply): any {
  assert.equal(reply.status, 200, reply.text);
  assert.equal(reply.json?.errors, undefined, reply.text);
  return reply.json.data;
}

function operation(name: string) {
  const op = readManifest().operations.find((o) => o.name === name);
  if (!op) throw new Error(`no persisted operation ${name}`);
  return op;
}

async function seed(store: CodecStore): Promise<void> {
  const rows = (entries: [string, Record<string, unknown>][], eventTimeMs = FRESH): FeatureRow[] =>
    entries.map(([entityId, values]) => ({ entityId, values: values as FeatureRow['values'], eventTimeMs }));
  const ids = Object.keys(users) as (keyof typeof users)[];
  await store.write(clickStatsV1, rows(ids.map((id) => [id, { clickRate: users[id].clickV1 }])));
  await store.write(clickStatsV2, rows(ids.map((id) => [id, users[id].click])));
  await store.write(profile, rows(ids.map((id) => [id, users[id].profile])));
  await store.write(itemStats, rows(itemIds.map((id) => [id, itemValues(id)])));
  await store.write(riskStats, rows([['m-1', merchant]]));
  // A user whose click stats are past their TTL but whose profile is fresh.
  await store.write(clickStatsV2, rows([['stale-user', { clickRate: 0.9, clicks: 9, impressions: 10 }]], STALE));
  await store.write(profile, rows([['stale-user', { sessionLength: 77, isPremium: false, country: 'NL', embedding: [1] }]]));
  // A user with a profile and no click stats at all.
  await store.write(profile, rows([['profile-only', { sessionLength: 5, isPremium: true, country: 'SE', embedding: [0] }]]));
}

describe('gateway queries (co-located, embedded store)', () => {
  let store: CodecStore;
  let gateway: RunningGateway;

  before(async () => {
    store = createStore({ kind: 'embedded' }, () => NOW);
    await seed(store);
    gateway = await startTestGateway(store);
  });

  after(async () => {
    await gateway?.close();
    await store?.close();
  });

  it('returns the stored values of a batch of users, in the order asked', async () => {
    const data = assertOk(
      await gql(gateway.url, '{ users(ids: ["1", "2", "3"]) { id clickStats { clickRate } profile { sessionLength isPremium } } }'),
    );
    assert.deepEqual(data, {
      users: (['1', '2', '3'] as const).map((id) => ({
        id,
        clickStats: { clickRate: users[id].click.clickRate },
        profile: { sessionLength: users[id].profile.sessionLength, isPremium: users[id].profile.isPremium },
      })),
    });
  });

  it('answers RankingFeatures (persisted body) for one user and 20 items, items in the order asked', async () => {
    const items = [...itemIds].reverse();
    const data = assertOk(await post(gateway.url, { query: operation('RankingFeatures').body, variables: { user: '1', items } }));
    assert.deepEqual(data.user, {
      id: '1',
      clickStats: { ...users['1'].click, eventTime: iso(FRESH), stale: false },
      profile: { ...users['1'].profile, stale: false },
    });
    assert.equal(data.items.length, 20);
    assert.deepEqual(
      data.items,
      items.map((id) => ({ id, itemStats: { ...itemValues(id), eventTime: iso(FRESH), stale: false } })),
    );
  });

  it('answers FraudFeatures with the user and the merchant', async () => {
    const data = assertOk(await post(gateway.url, { query: operation('FraudFeatures').body, variables: { user: '2', merchant: 'm-1' } }));
    const p = users['2'].profile;
    assert.deepEqual(data, {
      user: {
        id: '2',
        clickStats: { clickRate: users['2'].click.clickRate, stale: false },
        profile: { country: p.country, isPremium: p.isPremium, sessionLength: p.sessionLength, stale: false },
      },
      merchant: { id: 'm-1', riskStats: { ...merchant, eventTime: iso(FRESH), stale: false } },
    });
  });

  it('serves clickStats v1 and v2 side by side; the unversioned field is the active v2', async () => {
    const data = assertOk(
      await gql(
        gateway.url,
        `{ users(ids: ["1", "3"]) {
            id
            clickStats { clickRate clicks impressions eventTime stale }
            clickStatsV1 { clickRate eventTime stale }
            clickStatsV2 { clickRate clicks impressions eventTime stale }
        } }`,
      ),
    );
    for (const [i, id] of (['1', '3'] as const).entries()) {
      const user = data.users[i];
      assert.equal(user.id, id);
      assert.deepEqual(user.clickStatsV1, { clickRate: users[id].clickV1, eventTime: iso(FRESH), stale: false });
      assert.deepEqual(user.clickStatsV2, { ...users[id].click, eventTime: iso(FRESH), stale: false });
      assert.deepEqual(user.clickStats, user.clickStatsV2);
      assert.notEqual(user.clickStatsV1.clickRate, user.clickStatsV2.clickRate);
    }
  });

  it('marks a value past its TTL stale with null features and its event time; a fresh view of the same user is served', async () => {
    const data = assertOk(
      await gql(
        gateway.url,
        '{ user(id: "stale-user") { id clickStats { clickRate clicks impressions eventTime stale } profile { sessionLength country stale } } }',
      ),
    );
    assert.deepEqual(data.user, {
      id: 'stale-user',
      clickStats: { clickRate: null, clicks: null, impressions: null, eventTime: iso(STALE), stale: true },
      profile: { sessionLength: 77, country: 'NL', stale: false },
    });
  });

  it('answers an unknown entity with null and no error', async () => {
    const reply = await gql(gateway.url, '{ user(id: "nope") { id clickStats { clickRate } } }');
    assert.deepEqual(assertOk(reply), { user: null });
  });

  it('puts null at the position of an unknown id in a batch', async () => {
    const data = assertOk(await gql(gateway.url, '{ users(ids: ["1", "nope"]) { id clickStats { clickRate } } }'));
    assert.deepEqual(data, { users: [{ id: '1', clickStats: { clickRate: users['1'].click.clickRate } }, null] });
  });

  it('keeps an entity that has some views but lacks the one asked, with that view null', async () => {
    const data = assertOk(await gql(gateway.url, '{ user(id: "profile-only") { id clickStats { clickRate stale } profile { country } } }'));
    assert.deepEqual(data, { user: { id: 'profile-only', clickStats: null, profile: { country: 'SE' } } });
  });

  it('answers the featureRegistry query from the registry', async () => {
    const data = assertOk(
      await gql(gateway.url, '{ featureRegistry { entities { name views { name version active ttlSeconds owner features { name type } } } } }'),
    );
    const expected = registry.entities.map((entity) => ({
      name: entity.name,
      views: entity.views.flatMap((view) =>
        view.versions.map((v) => ({
          name: view.name,
          version: v.version,
          active: v.active,
          ttlSeconds: view.ttlSeconds,
          owner: view.owner,
          features: v.features.map((f) => ({ name: f.name, type: f.typeName })),
        })),
      ),
    }));
    assert.deepEqual(data.featureRegistry.entities, expected);
    // Spot checks against registry.yaml itself, so the test is not only the registry compared with itself.
    const user = data.featureRegistry.entities.find((e: any) => e.name === 'user');
    const clickStats = user.views.filter((v: any) => v.name === 'clickStats');
    assert.deepEqual(clickStats.map((v: any) => [v.version, v.active, v.ttlSeconds, v.owner]), [
      [1, false, 60, 'ranking-team@example.com'],
      [2, true, 60, 'ranking-team@example.com'],
    ]);
    assert.deepEqual(user.views.find((v: any) => v.name === 'profile').features.find((f: any) => f.name === 'embedding'), {
      name: 'embedding',
      type: '[Float!]',
    });
    assert.deepEqual(data.featureRegistry.entities.map((e: any) => e.name), ['user', 'item', 'merchant']);
  });

  it('serves the Apollo Sandbox landing page to a browser', async () => {
    const reply = await get(gateway.url, { accept: 'text/html' });
    assert.equal(reply.status, 200);
    assert.match(reply.headers.get('content-type') ?? '', /text\/html/);
    assert.match(reply.text, /embeddable-sandbox/i);
  });

  it('allows introspection by default', async () => {
    const data = assertOk(await gql(gateway.url, '{ __schema { queryType { name } } }'));
    assert.deepEqual(data, { __schema: { queryType: { name: 'Query' } } });
  });

  it('answers /healthz and /readyz', async () => {
    const health = await get(`${baseUrl(gateway.url)}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: 'ok' });
    const ready = await get(`${baseUrl(gateway.url)}/readyz`);
    assert.equal(ready.status, 200, ready.text);
    assert.equal(ready.json.ready, true);
    assert.match(ready.json.checks.store, /^embedded: reachable/);
  });

  it('exposes request, store and freshness metrics on /metrics', async () => {
    const op = operation('UserClickRate');
    assertOk(await post(gateway.url, { extensions: { persistedQuery: { version: 1, sha256Hash: op.id } }, variables: { ids: ['1', '2', '3'] } }));
    // One stale value and one missing value, so both counters have a sample.
    assertOk(await gql(gateway.url, '{ users(ids: ["stale-user", "nope"]) { id clickStats { stale } } }'));

    const reply = await get(`${baseUrl(gateway.url)}/metrics`);
    assert.equal(reply.status, 200);
    assert.match(reply.headers.get('content-type') ?? '', /text\/plain/);
    const text = reply.text;
    assert.match(text, /^feature_gateway_request_duration_seconds_count\{operation="UserClickRate"\} [1-9]\d*$/m);
    assert.match(text, /^feature_gateway_request_duration_seconds_bucket\{.*operation="UserClickRate".*\} \d+$/m);
    assert.match(text, /^feature_store_batch_size_count\{view="clickStats:v2"\} [1-9]\d*$/m);
    assert.match(text, /^feature_values_stale_total\{view="clickStats:v2"\} [1-9]\d*$/m);
    assert.match(text, /^feature_values_missing_total\{view="clickStats:v2"\} [1-9]\d*$/m);
    assert.match(text, /^feature_store_read_duration_seconds_count\{store="embedded",shard="0"\} [1-9]\d*$/m);
    assert.match(text, /^process_cpu_user_seconds_total \S+$/m);
    assert.match(text, /^process_cpu_seconds_total \S+$/m);
  });

  describe('with SANDBOX=false and INTROSPECTION=false', () => {
    let locked: RunningGateway;

    before(async () => {
      locked = await startTestGateway(store, { SANDBOX: 'false', INTROSPECTION: 'false' });
    });

    after(async () => {
      await locked?.close();
    });

    it('does not serve the Sandbox landing page', async () => {
      const reply = await get(locked.url, { accept: 'text/html' });
      assert.doesNotMatch(reply.headers.get('content-type') ?? '', /text\/html/);
      assert.doesNotMatch(reply.text, /sandbox/i);
      assert.notEqual(reply.status, 200);
    });

    it('refuses introspection with an error', async () => {
      const reply = await gql(locked.url, '{ __schema { queryType { name } } }');
      assert.equal(reply.status, 400, reply.text);
      assert.equal(reply.json.data, undefined);
      assert.equal(reply.json.errors.length, 1);
      assert.match(reply.json.errors[0].message, /introspection/i);
      assert.equal(reply.json.errors[0].extensions.code, 'GRAPHQL_VALIDATION_FAILED');
      assert.equal(reply.json.errors[0].extensions.validationErrorCode, 'INTROSPECTION_DISABLED');
    });

    it('still serves data queries', async () => {
      const data = assertOk(await gql(locked.url, '{ user(id: "1") { clickStats { clickRate } } }'));
      assert.deepEqual(data, { user: { clickStats: { clickRate: users['1'].click.clickRate } } });
    });
  });
});
