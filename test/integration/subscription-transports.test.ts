/**
 * What `featureChanged` means, whatever the transport: the same tests run
 * over graphql-ws, graphql-sse (distinct connections) and multipart HTTP
 * (Apollo Client), each driven by its published client
 * (test/support/subscription-clients.ts) against a real gateway on the
 * embedded store and log: exactly the selected fields, filters, one event
 * per change, refusals with their error codes, fragments, errors at their
 * paths, limits, roles, a subscriber that stops reading, and the drain when
 * the gateway closes. Protocol details of one transport (graphql-ws close
 * codes, connection_init, subscriptions per connection) stay in
 * subscriptions.test.ts.
 *
 * A change is simulated as the materializer makes it: the new value is
 * written to the store, then its change event is produced. No assertion
 * depends on timing: events of one subscription arrive in order, so "nothing
 * else arrived" is checked when a later event of the same subscription does.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Role } from '../../auth/principal.js';
import { encodeChange } from '../../eventlog/change-event.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { activeVersionOf, findView } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { recordKey } from '../../store/backends/byte-backend.js';
import { testCredentials, type TestCredentials } from '../support/auth.js';
import { TestFeed } from '../support/change-feed.js';
import { registry, testConfig } from '../support/gateway.js';
import { baseUrl, get, gql } from '../support/http.js';
import {
  TRANSPORTS, describeEnding, endingCode, endingMessage, openStalledReader, subscriptionClient, waitFor,
  type LiveSubscription, type StalledReader, type SubscriptionClient, type Transport,
} from '../support/subscription-clients.js';

const NOW = Date.now();
const env = { MAX_BATCH_IDS: '10', SUBSCRIPTION_QUEUE_SIZE: '64' };

async function metric(gateway: RunningGateway, name: string, labels = ''): Promise<number> {
  const text = (await get(`${baseUrl(gateway.url)}/metrics`)).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

/** Waits until the gateway counts `n` active subscriptions; fails at once, saying how, if one of `watched` ends first. */
async function activeSubscriptions(gateway: RunningGateway, n: number, ...watched: LiveSubscription[]): Promise<void> {
  await waitFor(() => gateway.subscriptions!.stats().active === n || watched.some((w) => w.ending), `${n} active subscription(s)`);
  const ended = watched.find((w) => w.ending);
  if (ended) throw new Error(`a subscription ended before it was active: ${describeEnding(ended.ending)}`);
}

/**
 * A reader that stops reading after its first event (test/support/subscription-clients.ts), with `publish` repeated
 * until that event came: its subscription opens some time after its request, and a change before that is not its.
 */
async function openStalled(transport: Transport, url: string, query: string, publish: () => Promise<unknown>): Promise<StalledReader> {
  const opening = openStalledReader(transport, { url }, query);
  let settled = false;
  opening.then(() => (settled = true), () => (settled = true));
  while (!settled) {
    await publish();
    await new Promise((r) => setTimeout(r, 50));
  }
  return opening; // openStalledReader gives up, saying why, after a generous timeout
}

/** Opened clients of one describe, closed after each test. */
class Clients {
  private readonly open: SubscriptionClient[] = [];
  constructor(private readonly transport: Transport) {}

  client(gateway: RunningGateway, headers?: Record<string, string>): SubscriptionClient {
    const c = subscriptionClient(this.transport, { url: gateway.url, ...(headers ? { headers } : {}) });
    this.open.push(c);
    return c;
  }

  async closeAll(): Promise<void> {
    for (const c of this.open.splice(0)) await c.close();
  }
}

const userChange = (clickRate: number) => ({ clickRate, clicks: Math.round(clickRate * 100), impressions: 100 });

for (const transport of TRANSPORTS) {
  describe(`featureChanged over ${transport} (co-located, embedded store and log)`, () => {
    let store: CodecStore;
    let eventLog: EmbeddedLog;
    let gateway: RunningGateway;
    let feed: TestFeed;
    const clients = new Clients(transport);
    const subscribe = (query: string, variables?: Record<string, unknown>) => clients.client(gateway).subscribe(query, variables);
    const active = (n: number, ...watched: LiveSubscription[]) => activeSubscriptions(gateway, n, ...watched);

    before(async () => {
      store = createStore({ kind: 'embedded' }, () => NOW);
      eventLog = new EmbeddedLog();
      gateway = await startGateway({ config: testConfig(env), registry, store, eventLog });
      feed = new TestFeed(registry, store, eventLog, NOW);
    });

    afterEach(async () => {
      await clients.closeAll();
      // Each test starts with no subscription and no connection left over.
      await waitFor(() => {
        const stats = gateway.subscriptions!.stats();
        return stats.active === 0 && stats.connections === 0;
      }, 'subscriptions of the previous test to end');
    });

    after(async () => {
      await clients.closeAll();
      await gateway?.close();
      await eventLog?.close();
      await store?.close();
    });

    it('delivers a change of a watched user with exactly the selected fields, and nothing for other ids or entities', async () => {
      const watch = subscribe('subscription { featureChanged(entity: USER, ids: ["1", "2", "3"]) { id view user { id clickStats { clickRate } } } }');
      await active(1, watch);
      await feed.publish('user', '4', 'clickStats', userChange(0.25));
      await feed.publish('item', '1', 'itemStats', { ctr: 0.5, price: 9.5, category: 'books' });
      await feed.publish('user', '2', 'clickStats', userChange(0.5));
      await watch.waitForEvents(1);
      // In order per subscription: user 4 and item 1 came first and would have arrived first.
      assert.deepEqual(watch.events, [{ data: { featureChanged: { id: '2', view: 'clickStats', user: { id: '2', clickStats: { clickRate: 0.5 } } } } }]);

      await feed.publish('user', '3', 'clickStats', userChange(0.75));
      await watch.waitForEvents(2);
      assert.deepEqual(watch.events[1], { data: { featureChanged: { id: '3', view: 'clickStats', user: { id: '3', clickStats: { clickRate: 0.75 } } } } });
    });

    it('carries entity, version and event time; the other entity fields are null', async () => {
      const watch = subscribe('subscription { featureChanged(entity: ITEM, ids: ["7"]) { entity id view version eventTime user { id } item { itemStats { ctr category } } merchant { id } } }');
      await active(1, watch);
      const eventTime = await feed.publish('item', '7', 'itemStats', { ctr: 0.125, price: 3, category: 'games' });
      await watch.waitForEvents(1);
      assert.deepEqual(watch.events, [{
        data: { featureChanged: { entity: 'ITEM', id: '7', view: 'itemStats', version: 1, eventTime, user: null, item: { itemStats: { ctr: 0.125, category: 'games' } }, merchant: null } },
      }]);
    });

    it('filters by views', async () => {
      const watch = subscribe('subscription { featureChanged(entity: USER, ids: ["5"], views: ["profile"]) { view user { profile { country } } } }');
      await active(1, watch);
      await feed.publish('user', '5', 'clickStats', userChange(0.5));
      await feed.publish('user', '5', 'profile', { sessionLength: 10, isPremium: true, country: 'DE', embedding: [1, 2] });
      await watch.waitForEvents(1);
      assert.deepEqual(watch.events, [{ data: { featureChanged: { view: 'profile', user: { profile: { country: 'DE' } } } } }]);
    });

    it('sends one event per change of what is watched: a view by name is its active version; `versions` watches exact ones', async () => {
      const c = clients.client(gateway);
      const byName = c.subscribe('subscription { featureChanged(entity: USER, ids: ["6"], views: ["clickStats"]) { view version user { clickStats { clicks } } } }');
      const v1 = c.subscribe('subscription { featureChanged(entity: USER, ids: ["6"], versions: [{ view: "clickStats", version: 1 }]) { view version user { clickStatsV1 { clickRate } } } }');
      const both = subscribe(`subscription ($v: [FeatureViewVersion!]) { featureChanged(entity: USER, ids: ["6"], views: ["profile"], versions: $v) { view version } }`,
        { v: [{ view: 'clickStats', version: 1 }, { view: 'clickStats', version: 2 }] });
      await active(3, byName, v1, both);
      // One raw event, as the materializer handles it: both live versions of clickStats change, from the same source event.
      const clickStats = registry.entities[0]!.views.find((v) => v.name === 'clickStats')!;
      const eventTimeMs = NOW - 2000;
      await store.write(clickStats.versions[0]!, [{ entityId: '6', values: { clickRate: 0.5 }, eventTimeMs }]);
      await store.write(clickStats.versions[1]!, [{ entityId: '6', values: userChange(0.5), eventTimeMs }]);
      const source = { topic: 'click-events', partition: 0, offset: 7 };
      await eventLog.produce([1, 2].map((version) => encodeChange({
        ...feed.change('user', '6', 'clickStats', version, version === 1 ? { clickRate: 0.5 } : userChange(0.5), eventTimeMs), source,
      })));
      await feed.publish('user', '6', 'profile', { sessionLength: 3, isPremium: false, country: 'PT', embedding: [3] });
      await byName.waitForEvents(1);
      await v1.waitForEvents(1);
      await both.waitForEvents(3);
      // A later change shows what arrived before it: nothing more of clickStats for the first two.
      await feed.publish('user', '6', 'clickStats', userChange(0.25));
      await byName.waitForEvents(2);
      assert.deepEqual(byName.events.map((e) => e.data!.featureChanged), [
        { view: 'clickStats', version: 2, user: { clickStats: { clicks: 50 } } },
        { view: 'clickStats', version: 2, user: { clickStats: { clicks: 25 } } },
      ]);
      assert.deepEqual(v1.events, [{ data: { featureChanged: { view: 'clickStats', version: 1, user: { clickStatsV1: { clickRate: 0.5 } } } } }]);
      await both.waitForEvents(4);
      assert.deepEqual(both.events.map((e) => {
        const change = e.data!.featureChanged as { view: string; version: number };
        return `${change.view}:v${change.version}`;
      }), ['clickStats:v1', 'clickStats:v2', 'profile:v1', 'clickStats:v2']);
    });

    it('rejects unknown views, views of another entity, empty or oversized id lists and bad variables with clear errors', async () => {
      const c = clients.client(gateway);
      const cases: { query: string; variables?: Record<string, unknown>; code: string; message: RegExp }[] = [
        { query: 'subscription { featureChanged(entity: USER, ids: ["1"], views: ["nope"]) { id } }', code: 'BAD_USER_INPUT', message: /Unknown feature view "nope" for entity user; its views are: clickStats, profile/ },
        { query: 'subscription { featureChanged(entity: USER, ids: ["1"], views: ["itemStats"]) { id } }', code: 'BAD_USER_INPUT', message: /Unknown feature view "itemStats" for entity user/ },
        { query: 'subscription { featureChanged(entity: USER, ids: []) { id } }', code: 'BAD_USER_INPUT', message: /at least one/ },
        { query: 'subscription { featureChanged(entity: USER, ids: ["1"], views: []) { id } }', code: 'BAD_USER_INPUT', message: /leave it out to watch all/ },
        { query: 'subscription { featureChanged(entity: USER, ids: ["1"], versions: []) { id } }', code: 'BAD_USER_INPUT', message: /`versions` must name at least one view version/ },
        { query: 'subscription { featureChanged(entity: USER, ids: ["1"], versions: [{ view: "clickStats", version: 3 }]) { id } }', code: 'BAD_USER_INPUT', message: /^Feature view clickStats has no version 3; its versions are 1, 2 \(active: 2\)$/ },
        { query: 'subscription { featureChanged(entity: USER, ids: ["1"], versions: [{ view: "itemStats", version: 1 }]) { id } }', code: 'BAD_USER_INPUT', message: /Unknown feature view "itemStats" for entity user/ },
        { query: 'subscription { featureChanged(entity: USER, ids: ["1"], versions: [{ view: "clickStats" }]) { id } }', code: 'GRAPHQL_VALIDATION_FAILED', message: /Field "FeatureViewVersion.version" of required type "Int!" was not provided/ },
        { query: 'subscription ($v: [FeatureViewVersion!]) { featureChanged(entity: USER, ids: ["1"], versions: $v) { id } }', variables: { v: [{ view: 'clickStats', version: 'two' }] }, code: 'BAD_USER_INPUT', message: /\$v.*Int cannot represent/ },
        {
          query: 'subscription ($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids) { id } }',
          variables: { ids: Array.from({ length: 11 }, (_, i) => String(i)) },
          code: 'BATCH_TOO_LARGE',
          message: /11 items; at most 10/,
        },
        { query: 'subscription ($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids) { id } }', variables: { ids: [{}] }, code: 'BAD_USER_INPUT', message: /\$ids/ },
        { query: 'subscription ($e: EntityType!) { featureChanged(entity: $e, ids: ["1"]) { id } }', variables: { e: 'SHOP' }, code: 'BAD_USER_INPUT', message: /\$e/ },
      ];
      for (const { query, variables, code, message } of cases) {
        const errors = await c.subscribe(query, variables).refused();
        assert.equal(errors[0]!.extensions?.code, code, `${query}: ${JSON.stringify(errors)}`);
        assert.match(errors[0]!.message, message);
      }
      assert.equal(gateway.subscriptions!.stats().active, 0);
    });

    it('resolves fragments, inline fragments, aliases and @include with variables in the selection', async () => {
      const query = `
        subscription Watch($ids: [ID!]!, $withStats: Boolean!) {
          featureChanged(entity: USER, ids: $ids) { ...Change }
        }
        fragment Change on FeatureChange { changed: id who: user { ...UserBits ... on User { profile { country } } } }
        fragment UserBits on User { id stats: clickStats @include(if: $withStats) { rate: clickRate clicks } v1: clickStatsV1 { clickRate } }`;
      const withStats = subscribe(query, { ids: ['8'], withStats: true });
      const withoutStats = subscribe(query, { ids: ['8'], withStats: false });
      await active(2, withStats, withoutStats);
      await store.write(activeVersionOf(registry.entities[0]!.views[1]!), [{ entityId: '8', values: { sessionLength: 1, isPremium: false, country: 'FR', embedding: [0] }, eventTimeMs: NOW - 1000 }]);
      await feed.publish('user', '8', 'clickStats', userChange(0.25));
      await withStats.waitForEvents(1);
      await withoutStats.waitForEvents(1);
      assert.deepEqual(withStats.events, [{ data: { featureChanged: { changed: '8', who: { id: '8', stats: { rate: 0.25, clicks: 25 }, v1: null, profile: { country: 'FR' } } } } }]);
      assert.deepEqual(withoutStats.events, [{ data: { featureChanged: { changed: '8', who: { id: '8', v1: null, profile: { country: 'FR' } } } } }]);
    });

    it('gives two subscribers of one user each its own shape', async () => {
      const a = subscribe('subscription { featureChanged(entity: USER, ids: ["9"]) { user { clickStats { clickRate } } } }');
      const b = subscribe('subscription { featureChanged(entity: USER, ids: ["9", "10"]) { id eventTime user { __typename clickStats { impressions stale } } } }');
      await active(2, a, b);
      const eventTime = await feed.publish('user', '9', 'clickStats', userChange(0.5));
      await a.waitForEvents(1);
      await b.waitForEvents(1);
      assert.deepEqual(a.events, [{ data: { featureChanged: { user: { clickStats: { clickRate: 0.5 } } } } }]);
      assert.deepEqual(b.events, [{ data: { featureChanged: { id: '9', eventTime, user: { __typename: 'User', clickStats: { impressions: 100, stale: false } } } } }]);
    });

    it('passes the gateway\'s errors for the entity on, at their paths below the subscription field', async () => {
      const selection = '{ id stats: clickStats { clickRate } profile { country } }';
      const watch = subscribe(`subscription { featureChanged(entity: USER, ids: ["13"]) { id user ${selection} } }`);
      await active(1, watch);
      await feed.publish('user', '13', 'profile', { sessionLength: 1, isPremium: true, country: 'NL', embedding: [1] });
      await watch.waitForEvents(1);
      assert.deepEqual(watch.events[0], { data: { featureChanged: { id: '13', user: { id: '13', stats: null, profile: { country: 'NL' } } } } });

      // A stored value that does not decode: the subscriber gets what a query of the same selection gets.
      const clickStats = activeVersionOf(registry.entities[0]!.views[0]!);
      await store.backend.setMany([{ record: recordKey(clickStats, '13'), value: Buffer.from('not a value'), expireAtMs: NOW + 60_000 }]);
      await eventLog.produce([encodeChange(feed.change('user', '13', 'clickStats', clickStats.version, {}, NOW - 1000))]);
      await watch.waitForEvents(2);
      const query = (await gql(gateway.url, `{ user(id: "13") ${selection} }`)).json;
      assert.ok(query.errors?.length > 0, JSON.stringify(query));
      const event = watch.events[1]!;
      assert.deepEqual(event.data, { featureChanged: { id: '13', user: query.data.user } });
      assert.deepEqual(
        event.errors!.map((e) => ({ message: e.message, path: e.path, code: e.extensions!.code })),
        query.errors.map((e: any) => ({ message: e.message, path: ['featureChanged', ...e.path], code: e.extensions.code })),
      );
      assert.equal(event.errors![0]!.extensions!.code, 'STORE_CORRUPT_VALUE');
    });

    it('keeps a persisted operation live: its full result first, then a JSON Patch of what changed', async () => {
      await feed.publish('user', '21', 'clickStats', userChange(0.1));
      const live = subscribe('subscription ($v: JSONObject) { liveOperation(operation: "UserClickRate", variables: $v) { revision result patch } }', { v: { ids: ['21'] } });
      await live.waitForEvents(1);
      const first = (live.events[0]!.data as any).liveOperation;
      assert.equal(first.revision, 0);
      assert.deepEqual(first.result, { data: { users: [{ id: '21', clickStats: { clickRate: 0.1, stale: false } }] } });
      await feed.publish('user', '21', 'clickStats', userChange(0.2));
      await live.waitForEvents(2);
      const second = (live.events[1]!.data as any).liveOperation;
      assert.equal(second.revision, 1);
      assert.equal(second.result, null);
      assert.ok(second.patch.some((op: any) => op.op === 'replace' && op.path.endsWith('/clickRate') && op.value === 0.2), JSON.stringify(second.patch));
    });

    it('applies MAX_QUERY_DEPTH to subscriptions', async () => {
      const deep = await startGateway({ config: testConfig({ ...env, MAX_QUERY_DEPTH: '3' }), registry, store, eventLog });
      try {
        const errors = await clients.client(deep).subscribe('subscription { featureChanged(entity: USER, ids: ["1"]) { user { clickStats { clickRate } } } }').refused();
        assert.equal(errors[0]!.extensions?.code, 'QUERY_TOO_DEEP');
      } finally {
        await clients.closeAll();
        await deep.close();
      }
    });

    it('ends open subscriptions, a reader that stopped reading among them, when the gateway closes', async () => {
      const other = await startGateway({ config: testConfig(env), registry, store, eventLog });
      let stalled: StalledReader | undefined;
      let closed = false;
      try {
        const query = 'subscription { featureChanged(entity: USER, ids: ["14"]) { id } }';
        const watch = clients.client(other).subscribe(query);
        await activeSubscriptions(other, 1, watch);
        // It reads its first event, then stops reading: it will not read what closes it either.
        stalled = await openStalled(transport, other.url, query, () => feed.publish('user', '14', 'clickStats', userChange(0.5)));
        await watch.waitForEvents(1);
        await other.close();
        closed = true;
        assert.deepEqual(other.subscriptions!.stats(), { active: 0, connections: 0, queued: 0, deepestQueue: 0, queueCapacity: 64, dropped: 0, superseded: 0 });
        const ending = await watch.ended();
        assert.equal(ending.kind, 'complete', describeEnding(ending));
      } finally {
        stalled?.destroy();
        await clients.closeAll();
        if (!closed) await other.close();
      }
    });
  });

  describe(`featureChanged over ${transport}: who may subscribe, and per-view read roles`, () => {
    type Who = Role | 'anonymous';
    let dir: string;
    let creds: TestCredentials;
    let store: CodecStore;
    let eventLog: EmbeddedLog;
    let gateway: RunningGateway;
    let offset = 0;
    const clients = new Clients(transport);
    const as = (who: Who): SubscriptionClient => clients.client(gateway, who === 'anonymous' ? undefined : { 'x-api-key': creds.keys[who] });

    /** A change event as the materializer would produce it. */
    const publishChange = async (id: string) => {
      await eventLog.produce([encodeChange({
        entity: 'user', id, view: 'clickStats', version: 2, values: { clickRate: 0.25, clicks: 1, impressions: 4 },
        eventTime: new Date().toISOString(), source: { topic: 'test', partition: 0, offset: offset++ },
      })]);
    };

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-sub-auth-'));
      creds = await testCredentials(dir);
      store = createStore({ kind: 'embedded' });
      const now = Date.now();
      await store.write(activeVersionOf(findView(registry, 'clickStats')!), [{ entityId: 'u1', values: { clickRate: 0.25, clicks: 1, impressions: 4 }, eventTimeMs: now }]);
      await store.write(activeVersionOf(findView(registry, 'riskProfile')!), [{ entityId: 'u1', values: { riskScore: 0.9, flagged: true }, eventTimeMs: now }]);
      eventLog = new EmbeddedLog();
      gateway = await startGateway({ config: testConfig(creds.env), registry, store, eventLog });
    });

    afterEach(async () => {
      await clients.closeAll();
      await waitFor(() => gateway.subscriptions!.stats().active === 0, 'subscriptions of the previous test to end');
    });

    after(async () => {
      await clients.closeAll();
      await gateway?.close();
      await eventLog?.close();
      await store?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    const subscription = 'subscription { featureChanged(entity: USER, ids: ["u1"]) { id view user { clickStats { clickRate } } } }';
    const subscribes: Record<Who, boolean> = { inference: false, analyst: true, dashboard: true, admin: true, anonymous: false };
    for (const who of ['inference', 'analyst', 'dashboard', 'admin', 'anonymous'] as const) {
      const refusal = who === 'anonymous' ? 'UNAUTHENTICATED' : 'FORBIDDEN';
      it(`subscription as ${who} → ${subscribes[who] ? 'delivered' : refusal}`, async () => {
        const watch = as(who).subscribe(subscription);
        if (!subscribes[who]) {
          const ending = await watch.ended();
          assert.equal(endingCode(ending), refusal, describeEnding(ending));
          assert.match(endingMessage(ending), who === 'anonymous' ? /Credentials required/ : /Not allowed to subscribe/);
          assert.deepEqual(watch.events, []);
          return;
        }
        await activeSubscriptions(gateway, 1, watch);
        await publishChange('u1');
        await watch.waitForEvents(1);
        assert.deepEqual(watch.events, [{ data: { featureChanged: { id: 'u1', view: 'clickStats', user: { clickStats: { clickRate: 0.25 } } } } }]);
      });
    }

    it('in a subscription payload, the restricted field errors alone for a dashboard', async () => {
      const watch = as('dashboard').subscribe('subscription { featureChanged(entity: USER, ids: ["u2"]) { id user { clickStats { clickRate } riskProfile { riskScore } } } }');
      await activeSubscriptions(gateway, 1, watch);
      await store.write(activeVersionOf(findView(registry, 'clickStats')!), [{ entityId: 'u2', values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: Date.now() }]);
      await publishChange('u2');
      await watch.waitForEvents(1);
      const [event] = watch.events;
      assert.deepEqual(event!.data, { featureChanged: { id: 'u2', user: { clickStats: { clickRate: 0.5 }, riskProfile: null } } });
      assert.deepEqual(event!.errors!.map((e) => [e.path!.join('.'), e.extensions!.code]), [['featureChanged.user.riskProfile', 'FORBIDDEN']]);
    });

    it('a dashboard naming the restricted view in `views` or `versions` is refused', async () => {
      const c = as('dashboard');
      for (const query of [
        'subscription { featureChanged(entity: USER, ids: ["u1"], views: ["riskProfile"]) { id } }',
        'subscription { featureChanged(entity: USER, ids: ["u1"], versions: [{ view: "riskProfile", version: 1 }]) { id } }',
      ]) {
        const errors = await c.subscribe(query).refused();
        assert.equal(errors[0]!.extensions?.code, 'FORBIDDEN', JSON.stringify(errors));
        assert.match(errors[0]!.message, /riskProfile: it is readable by admin only/);
      }
    });
  });

  describe(`featureChanged over ${transport}: a subscriber that stops reading`, () => {
    const SEND_BUFFER = 16_384;
    // Under graphql-ws's keep-alive (a ping at 12 s, 12 s for the pong), so the gate's close comes first.
    const STALL_MS = 3_000;
    let store: CodecStore;
    let eventLog: EmbeddedLog;
    let gateway: RunningGateway;
    let feed: TestFeed;
    const clients = new Clients(transport);
    let stalled: StalledReader | undefined;

    before(async () => {
      store = createStore({ kind: 'embedded' }, () => NOW);
      eventLog = new EmbeddedLog();
      gateway = await startGateway({
        config: testConfig({ ...env, SUBSCRIPTION_SEND_BUFFER_BYTES: String(SEND_BUFFER), SUBSCRIPTION_STALL_TIMEOUT_MS: String(STALL_MS) }),
        registry, store, eventLog,
      });
      feed = new TestFeed(registry, store, eventLog, NOW);
    });

    after(async () => {
      stalled?.destroy();
      await clients.closeAll();
      await gateway?.close();
      await eventLog?.close();
      await store?.close();
    });

    it('is held at the send-buffer bound and closed after the stall timeout, while a normal subscriber keeps getting its updates', async () => {
      // A large selected value (~400 KB an event), so the paused socket's kernel buffers fill after a few events.
      const profile = { sessionLength: 1, isPremium: false, country: 'SE', embedding: Array.from({ length: 20_000 }, (_, i) => i / 7) };
      const normal = clients.client(gateway).subscribe('subscription { featureChanged(entity: USER, ids: ["fast"]) { id eventTime } }');
      await activeSubscriptions(gateway, 1, normal);
      stalled = await openStalled(transport, gateway.url, 'subscription { featureChanged(entity: USER, ids: ["slow"]) { id eventTime user { profile { embedding } } } }',
        () => feed.publish('user', 'slow', 'profile', profile));
      await activeSubscriptions(gateway, 1 + stalled.subscriptions, normal);
      const stalledBefore = await metric(gateway, 'subscription_connections_stalled_closed_total');

      // Changes keep coming until the gate pauses the connection's sends; the buffered bytes are sampled meanwhile.
      let maxBuffered = 0;
      const sample = async () => {
        maxBuffered = Math.max(maxBuffered, await metric(gateway, 'subscription_send_buffered_bytes'));
        return metric(gateway, 'subscription_connections_send_paused');
      };
      const pauseDeadline = Date.now() + 30_000;
      while ((await sample()) !== 1) {
        assert.ok(Date.now() < pauseDeadline, 'timed out waiting for the gate to pause the connection that stopped reading');
        await feed.publish('user', 'slow', 'profile', profile);
        await new Promise((r) => setTimeout(r, 10));
      }

      // While it is paused the other subscriber is served.
      const fastTime = await feed.publish('user', 'fast', 'clickStats', userChange(0.5));
      await normal.waitForEvents(1);
      assert.deepEqual(normal.events.at(-1), { data: { featureChanged: { id: 'fast', eventTime: fastTime } } });

      // Closed after the stall timeout; its subscription ends then, not once its socket is gone.
      const closeDeadline = Date.now() + STALL_MS + 30_000;
      while ((await metric(gateway, 'subscription_connections_stalled_closed_total')) === stalledBefore) {
        assert.ok(Date.now() < closeDeadline, `timed out waiting for the stalled connection to be closed (${STALL_MS} ms stall timeout)`);
        await feed.publish('user', 'slow', 'profile', profile);
        await sample();
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(gateway.subscriptions!.stats().active, 1, 'the stalled subscriptions ended when their connection was closed');
      assert.equal(await metric(gateway, 'subscription_connections_send_paused'), 0);
      // At most the bound plus the message that crossed it.
      assert.ok(maxBuffered <= SEND_BUFFER + 2 * stalled.firstEventBytes, `send buffers held ${maxBuffered} bytes; bound ${SEND_BUFFER} + one message of ~${stalled.firstEventBytes}`);

      // Once it reads again it sees the end: graphql-ws's close 4413 (or 1006 when cut off first); over HTTP the response ended.
      stalled.resume();
      const how = await stalled.ended;
      if (transport === 'graphql-ws') assert.match(how, /^close (4413|1006)$/);

      const later = await feed.publish('user', 'fast', 'clickStats', userChange(0.25));
      await normal.waitForEvents(2);
      assert.deepEqual(normal.events.at(-1), { data: { featureChanged: { id: 'fast', eventTime: later } } });
    });
  });
}
