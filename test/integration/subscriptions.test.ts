/**
 * GraphQL subscriptions over graphql-ws on the gateway: live feature changes
 * from the `feature-updates` topic (embedded log), the entity resolved
 * through the gateway with exactly the subscriber's selection, filters,
 * fragments, slow subscribers (bounded queues, drop-oldest), protocol
 * errors and limits, in the co-located and the distributed shape.
 *
 * A change is simulated as the materializer makes it: the new value is
 * written to the store, then its change event is produced. No assertion
 * depends on timing: events of one subscription arrive in order, so "nothing
 * else arrived" is checked when a later event of the same subscription does.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { changeTopic, encodeChange, type FeatureChange } from '../../eventlog/change-event.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { recordKey } from '../../store/backends/byte-backend.js';
import type { FeatureValues } from '../../store/codec.js';
import { startSubgraph, type RunningSubgraph } from '../../subgraphs/server.js';
import { registry, testConfig } from '../support/gateway.js';
import { baseUrl, get, gql } from '../support/http.js';

const NOW = Date.now();
const QUEUE = 64;
const env = { MAX_BATCH_IDS: '10', MAX_SUBSCRIPTIONS_PER_CONNECTION: '3', SUBSCRIPTION_QUEUE_SIZE: String(QUEUE) };

/** Polls `predicate` until it holds; fails naming `what` after a generous timeout (never a timing assertion). */
async function waitFor(predicate: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A store and an event log standing in for the materializer. */
class Feed {
  private offset = 0;
  private clock = NOW - 50_000; // event times stay fresh (clickStats TTL 60 s) and strictly increase

  constructor(readonly store: CodecStore, readonly log: EmbeddedLog) {}

  /** Writes the new value, then produces its change event. Returns the event time used. */
  async publish(entityName: string, id: string, viewName: string, values: FeatureValues): Promise<string> {
    const eventTimeMs = this.clock++;
    const view = registry.entities.find((e) => e.name === entityName)!.views.find((v) => v.name === viewName)!;
    const version = activeVersionOf(view);
    await this.store.write(version, [{ entityId: id, values, eventTimeMs }]);
    await this.log.produce([encodeChange(this.change(entityName, id, viewName, version.version, values, eventTimeMs))]);
    return new Date(eventTimeMs).toISOString();
  }

  change(entity: string, id: string, view: string, version: number, values: FeatureValues, eventTimeMs: number): FeatureChange {
    return {
      entity, id, view, version, values, eventTime: new Date(eventTimeMs).toISOString(),
      source: { topic: 'test-events', partition: 0, offset: this.offset++ },
    };
  }
}

/** One subscription through the graphql-ws client, recording what it receives. */
class Watch {
  readonly events: any[] = [];
  error: any = undefined;
  completed = false;
  readonly stop: () => void;

  constructor(client: Client, query: string, variables?: Record<string, unknown>) {
    this.stop = client.subscribe(variables ? { query, variables } : { query }, {
      next: (value) => void this.events.push(value),
      error: (error) => void (this.error = error),
      complete: () => void (this.completed = true),
    });
  }

  async waitForEvents(n: number): Promise<void> {
    await waitFor(() => this.events.length >= n || this.error !== undefined, `${n} event(s)`);
    assert.equal(this.error, undefined, `subscription failed: ${JSON.stringify(this.error)}`);
  }

  /** The errors of an `error` message (graphql-ws hands the GraphQL errors array to the sink). */
  async waitForError(): Promise<any[]> {
    await waitFor(() => this.error !== undefined || this.events.length > 0, 'an error');
    assert.equal(this.events.length, 0, `expected an error, got ${JSON.stringify(this.events)}`);
    assert.ok(Array.isArray(this.error), `expected GraphQL errors, got ${String(this.error)}`);
    return this.error;
  }
}

/** A WebSocket speaking the protocol by hand, for what the graphql-ws client would never send. */
class RawSocket {
  readonly messages: any[] = [];
  closed: { code: number; reason: string } | undefined;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.messages.push(JSON.parse(String(data))));
    ws.on('close', (code, reason) => (this.closed = { code, reason: String(reason) }));
  }

  /** `protocol` null: offer no subprotocol. */
  static async open(url: string, protocol: string | null = 'graphql-transport-ws'): Promise<RawSocket> {
    const ws = protocol === null ? new WebSocket(url) : new WebSocket(url, protocol);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return new RawSocket(ws);
  }

  send(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  async init(): Promise<void> {
    this.send({ type: 'connection_init' });
    await waitFor(() => this.messages.some((m) => m.type === 'connection_ack'), 'connection_ack');
  }

  async closedWith(): Promise<{ code: number; reason: string }> {
    await waitFor(() => this.closed !== undefined, 'the server to close the socket');
    return this.closed!;
  }

  async message(predicate: (m: any) => boolean, what: string): Promise<any> {
    await waitFor(() => this.messages.some(predicate) || this.closed !== undefined, what);
    const found = this.messages.find(predicate);
    assert.ok(found, `socket closed (${JSON.stringify(this.closed)}) before ${what}`);
    return found;
  }

  close(): void {
    this.ws.terminate();
  }
}

async function metric(gateway: RunningGateway, name: string, labels = ''): Promise<number> {
  const text = (await get(`${baseUrl(gateway.url)}/metrics`)).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

function wsUrl(gateway: RunningGateway): string {
  return gateway.url.replace(/^http/, 'ws');
}

function client(gateway: RunningGateway): Client {
  return createClient({ url: wsUrl(gateway), webSocketImpl: WebSocket, retryAttempts: 0 });
}

const userChange = (clickRate: number) => ({ clickRate, clicks: Math.round(clickRate * 100), impressions: 100 });

describe('subscriptions (co-located, embedded store and log)', () => {
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let gateway: RunningGateway;
  let feed: Feed;
  const clients: Client[] = [];
  const sockets: RawSocket[] = [];
  const open = (): Client => {
    const c = client(gateway);
    clients.push(c);
    return c;
  };
  const raw = async (protocol: string | null = 'graphql-transport-ws'): Promise<RawSocket> => {
    const s = await RawSocket.open(wsUrl(gateway), protocol);
    sockets.push(s);
    return s;
  };
  const active = (n: number) => waitFor(() => gateway.subscriptions!.stats().active === n, `${n} active subscription(s)`);

  before(async () => {
    store = createStore({ kind: 'embedded' }, () => NOW);
    eventLog = new EmbeddedLog();
    gateway = await startGateway({ config: testConfig(env), registry, store, eventLog });
    feed = new Feed(store, eventLog);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.dispose();
    for (const s of sockets.splice(0)) s.close();
    // Each test starts with no subscription and no connection left over.
    await waitFor(() => {
      const stats = gateway.subscriptions!.stats();
      return stats.active === 0 && stats.connections === 0;
    }, 'subscriptions of the previous test to end');
  });

  after(async () => {
    await gateway?.close();
    await eventLog?.close();
    await store?.close();
  });

  it('delivers a change of a watched user with exactly the selected fields, and nothing for other ids or entities', async () => {
    const watch = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["1", "2", "3"]) { id view user { id clickStats { clickRate } } } }');
    await active(1);
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
    const watch = new Watch(open(), 'subscription { featureChanged(entity: ITEM, ids: ["7"]) { entity id view version eventTime user { id } item { itemStats { ctr category } } merchant { id } } }');
    await active(1);
    const eventTime = await feed.publish('item', '7', 'itemStats', { ctr: 0.125, price: 3, category: 'games' });
    await watch.waitForEvents(1);
    assert.deepEqual(watch.events, [{
      data: { featureChanged: { entity: 'ITEM', id: '7', view: 'itemStats', version: 1, eventTime, user: null, item: { itemStats: { ctr: 0.125, category: 'games' } }, merchant: null } },
    }]);
  });

  it('filters by views', async () => {
    const watch = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["5"], views: ["profile"]) { view user { profile { country } } } }');
    await active(1);
    await feed.publish('user', '5', 'clickStats', userChange(0.5));
    await feed.publish('user', '5', 'profile', { sessionLength: 10, isPremium: true, country: 'DE', embedding: [1, 2] });
    await watch.waitForEvents(1);
    assert.deepEqual(watch.events, [{ data: { featureChanged: { view: 'profile', user: { profile: { country: 'DE' } } } } }]);
  });

  it('sends one event per change of what is watched: a view by name is its active version; `versions` watches exact ones', async () => {
    const c = open();
    const byName = new Watch(c, 'subscription { featureChanged(entity: USER, ids: ["6"], views: ["clickStats"]) { view version user { clickStats { clicks } } } }');
    const v1 = new Watch(c, 'subscription { featureChanged(entity: USER, ids: ["6"], versions: [{ view: "clickStats", version: 1 }]) { view version user { clickStatsV1 { clickRate } } } }');
    const both = new Watch(open(), `subscription ($v: [FeatureViewVersion!]) { featureChanged(entity: USER, ids: ["6"], views: ["profile"], versions: $v) { view version } }`,
      { v: [{ view: 'clickStats', version: 1 }, { view: 'clickStats', version: 2 }] });
    await active(3);
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
    assert.deepEqual(byName.events.map((e) => e.data.featureChanged), [
      { view: 'clickStats', version: 2, user: { clickStats: { clicks: 50 } } },
      { view: 'clickStats', version: 2, user: { clickStats: { clicks: 25 } } },
    ]);
    assert.deepEqual(v1.events, [{ data: { featureChanged: { view: 'clickStats', version: 1, user: { clickStatsV1: { clickRate: 0.5 } } } } }]);
    await both.waitForEvents(4);
    assert.deepEqual(both.events.map((e) => `${e.data.featureChanged.view}:v${e.data.featureChanged.version}`), ['clickStats:v1', 'clickStats:v2', 'profile:v1', 'clickStats:v2']);
  });

  it('rejects unknown views, views of another entity, empty or oversized id lists and bad variables with clear errors', async () => {
    const c = open();
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
      const errors = await new Watch(c, query, variables).waitForError();
      assert.equal(errors[0].extensions?.code, code, `${query}: ${JSON.stringify(errors)}`);
      assert.match(errors[0].message, message);
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
    const withStats = new Watch(open(), query, { ids: ['8'], withStats: true });
    const withoutStats = new Watch(open(), query, { ids: ['8'], withStats: false });
    await active(2);
    await store.write(activeVersionOf(registry.entities[0]!.views[1]!), [{ entityId: '8', values: { sessionLength: 1, isPremium: false, country: 'FR', embedding: [0] }, eventTimeMs: NOW - 1000 }]);
    await feed.publish('user', '8', 'clickStats', userChange(0.25));
    await withStats.waitForEvents(1);
    await withoutStats.waitForEvents(1);
    assert.deepEqual(withStats.events, [{ data: { featureChanged: { changed: '8', who: { id: '8', stats: { rate: 0.25, clicks: 25 }, v1: null, profile: { country: 'FR' } } } } }]);
    assert.deepEqual(withoutStats.events, [{ data: { featureChanged: { changed: '8', who: { id: '8', v1: null, profile: { country: 'FR' } } } } }]);
  });

  it('gives two subscribers of one user each its own shape', async () => {
    const c = open();
    const a = new Watch(c, 'subscription { featureChanged(entity: USER, ids: ["9"]) { user { clickStats { clickRate } } } }');
    const b = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["9", "10"]) { id eventTime user { __typename clickStats { impressions stale } } } }');
    await active(2);
    const eventTime = await feed.publish('user', '9', 'clickStats', userChange(0.5));
    await a.waitForEvents(1);
    await b.waitForEvents(1);
    assert.deepEqual(a.events, [{ data: { featureChanged: { user: { clickStats: { clickRate: 0.5 } } } } }]);
    assert.deepEqual(b.events, [{ data: { featureChanged: { id: '9', eventTime, user: { __typename: 'User', clickStats: { impressions: 100, stale: false } } } } }]);
  });

  it('passes the gateway\'s errors for the entity on, at their paths below the subscription field', async () => {
    const selection = '{ id stats: clickStats { clickRate } profile { country } }';
    const watch = new Watch(open(), `subscription { featureChanged(entity: USER, ids: ["13"]) { id user ${selection} } }`);
    await active(1);
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
    const event = watch.events[1];
    assert.deepEqual(event.data, { featureChanged: { id: '13', user: query.data.user } });
    assert.deepEqual(
      event.errors.map((e: any) => ({ message: e.message, path: e.path, code: e.extensions.code })),
      query.errors.map((e: any) => ({ message: e.message, path: ['featureChanged', ...e.path], code: e.extensions.code })),
    );
    assert.equal(event.errors[0].extensions.code, 'STORE_CORRUPT_VALUE');
  });

  it('skips a malformed change event, counting it, and keeps serving', async () => {
    const watch = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["11"]) { id } }');
    await active(1);
    const before = await metric(gateway, 'subscription_change_events_total', '{outcome="malformed"}');
    await eventLog.produce([{ topic: changeTopic, key: 'bad', value: 'not json' }, { topic: changeTopic, key: 'bad', value: '{"entity":"user"}' }]);
    await feed.publish('user', '11', 'clickStats', userChange(0.5));
    await watch.waitForEvents(1);
    assert.deepEqual(watch.events, [{ data: { featureChanged: { id: '11' } } }]);
    assert.equal(await metric(gateway, 'subscription_change_events_total', '{outcome="malformed"}'), before + 2);
  });

  it('keeps a subscriber that never reads bounded (newer changes replace queued ones) while a normal subscriber gets its updates', async () => {
    // A large selected value, so the stalled socket's buffers fill and its delivery blocks.
    const embedding = Array.from({ length: 20_000 }, (_, i) => i / 7);
    await feed.publish('user', 'slow', 'profile', { sessionLength: 1, isPremium: false, country: 'SE', embedding });

    const slow = await raw();
    await slow.init();
    slow.send({ id: 's', type: 'subscribe', payload: { query: 'subscription { featureChanged(entity: USER, ids: ["slow"]) { id eventTime user { profile { embedding } } } }' } });
    const normal = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["slow", "fast"]) { id eventTime } }');
    await active(2);
    slow.ws.pause(); // stops reading: TCP back-pressure reaches the server

    const droppedBefore = await metric(gateway, 'subscription_events_dropped_total') + await metric(gateway, 'subscription_events_superseded_total');
    const statsBefore = gateway.subscriptions!.stats();
    const burst = async (n: number): Promise<string> => {
      const base = NOW - 40_000;
      const records = Array.from({ length: n }, (_, i) => encodeChange(feed.change('user', 'slow', 'profile', 1, {}, base + i)));
      await eventLog.produce(records); // fanned out in one synchronous step
      return new Date(base + n - 1).toISOString();
    };

    const last = await burst(10_000);
    let stats = gateway.subscriptions!.stats();
    assert.ok(stats.deepestQueue <= QUEUE, `a queue holds ${stats.deepestQueue} events, more than ${QUEUE}`);
    // Each of the two subscriptions was idle: one event taken at once; the burst is one value, so each
    // later change replaced the queued one: one event queued, the rest superseded.
    const lost = (x: { dropped: number; superseded: number }) => x.dropped + x.superseded;
    const expectedDrops = 2 * (10_000 - 2);
    assert.ok(lost(stats) - lost(statsBefore) >= expectedDrops, `dropped or superseded ${lost(stats) - lost(statsBefore)}, expected ≥ ${expectedDrops}`);
    assert.ok((await metric(gateway, 'subscription_events_dropped_total')) + (await metric(gateway, 'subscription_events_superseded_total')) - droppedBefore >= expectedDrops);

    // Drop-oldest: the newest event of the burst reaches the normal subscriber.
    await waitFor(() => normal.events.some((e) => e.data?.featureChanged?.eventTime === last), 'the last event of the burst');
    const fastTime = await feed.publish('user', 'fast', 'clickStats', userChange(0.5));
    await waitFor(() => normal.events.at(-1)?.data?.featureChanged?.id === 'fast', 'the update of user fast');
    assert.deepEqual(normal.events.at(-1), { data: { featureChanged: { id: 'fast', eventTime: fastTime } } });
    assert.ok(normal.events.length <= 1 + QUEUE + 1, `normal subscriber got ${normal.events.length} events`);

    // A second burst while the slow client still reads nothing: still bounded.
    await burst(10_000);
    stats = gateway.subscriptions!.stats();
    assert.ok(stats.deepestQueue <= QUEUE, `a queue holds ${stats.deepestQueue} events, more than ${QUEUE}`);
    assert.ok(stats.queued <= stats.active * QUEUE);
    assert.ok(lost(stats) - lost(statsBefore) >= expectedDrops + (10_000 - 1), `dropped or superseded ${lost(stats) - lost(statsBefore)}`);
    assert.ok((await metric(gateway, 'subscription_queued_events')) <= 2 * QUEUE);
    assert.equal(slow.closed, undefined);

    // The gateway still answers queries.
    const reply = await gql(gateway.url, '{ user(id: "fast") { clickStats { clickRate } } }');
    assert.deepEqual(reply.json, { data: { user: { clickStats: { clickRate: 0.5 } } } });
  });

  it('answers protocol errors as graphql-ws documents them and stays up', async () => {
    const valid = { query: 'subscription { featureChanged(entity: USER, ids: ["1"]) { id } }' };

    let s = await raw();
    await s.init();
    s.send('{ not json');
    assert.equal((await s.closedWith()).code, 4400, 'invalid JSON');

    s = await raw();
    s.send({ id: 'x', type: 'subscribe', payload: valid });
    assert.equal((await s.closedWith()).code, 4401, 'subscribe before connection_init');

    s = await raw();
    await s.init();
    s.send({ type: 'bogus' });
    assert.equal((await s.closedWith()).code, 4400, 'unknown message type');

    s = await raw();
    await s.init();
    s.send({ id: 'n', type: 'next', payload: { data: {} } });
    assert.equal((await s.closedWith()).code, 4400, 'a server-to-client message from the client');

    s = await raw();
    await s.init();
    s.send({ type: 'connection_init' });
    assert.equal((await s.closedWith()).code, 4429, 'a second connection_init');

    s = await raw();
    await s.init();
    s.send({ id: 'a', type: 'subscribe', payload: valid });
    await active(1);
    s.send({ id: 'a', type: 'subscribe', payload: valid });
    assert.equal((await s.closedWith()).code, 4409, 'duplicate subscription id');
    await active(0);

    s = await raw(null);
    // The reason names what is served (graphql-ws alone says "Subprotocol not acceptable").
    assert.deepEqual(await s.closedWith(), { code: 4406, reason: 'Subprotocol not acceptable: speak graphql-transport-ws (graphql-ws), or use SSE or multipart HTTP' });

    await assert.rejects(RawSocket.open(`${baseUrl(gateway.url)}/elsewhere`), /404/);

    // Errors of one operation are `error` messages; the connection stays open.
    s = await raw();
    await s.init();
    const refused: [string, unknown, string, RegExp][] = [
      ['v', { query: 'subscription { featureChanged(entity: USER, ids: ["1"]) { nope } }' }, 'GRAPHQL_VALIDATION_FAILED', /Cannot query field "nope" on type "FeatureChange"/],
      ['p', { query: 'subscription { featureChanged(' }, 'GRAPHQL_PARSE_FAILED', /Syntax Error/],
      ['q', { query: '{ user(id: "1") { id } }' }, 'OPERATION_NOT_SUPPORTED', /Only subscriptions are served over WebSocket/],
      ['o', { query: 'subscription A { featureChanged(entity: USER, ids: ["1"]) { id } }', operationName: 'B' }, 'OPERATION_RESOLUTION_FAILURE', /Unknown operation named "B"/],
    ];
    for (const [id, payload, code, message] of refused) {
      s.send({ id, type: 'subscribe', payload });
      const reply = await s.message((m) => m.id === id, `the answer to ${id}`);
      assert.equal(reply.type, 'error', JSON.stringify(reply));
      assert.equal(reply.payload[0].extensions.code, code, JSON.stringify(reply));
      assert.match(reply.payload[0].message, message);
    }
    s.send({ type: 'ping' });
    await s.message((m) => m.type === 'pong', 'pong');
    assert.equal(s.closed, undefined);

    // Still serving: HTTP and a new subscription.
    const reply = await gql(gateway.url, '{ user(id: "2") { id } }');
    assert.deepEqual(reply.json, { data: { user: { id: '2' } } });
    const watch = new Watch(open(), 'subscription { featureChanged(entity: USER, ids: ["12"]) { id } }');
    await active(1);
    await feed.publish('user', '12', 'clickStats', userChange(0.5));
    await watch.waitForEvents(1);
    assert.deepEqual(watch.events, [{ data: { featureChanged: { id: '12' } } }]);
  });

  it('ends the subscriptions of a connection the server closes at once, not when its socket is finally gone', async () => {
    const s = await raw();
    await s.init();
    for (const id of ['a', 'b']) s.send({ id, type: 'subscribe', payload: { query: 'subscription { featureChanged(entity: USER, ids: ["12"]) { id } }' } });
    await active(2);
    // The client stops reading, so it never answers the close frame: ws keeps the socket open for its close
    // timeout (30 s). A message of a server-to-client type makes the server close the connection (4400).
    (s.ws as unknown as { _socket: import('node:net').Socket })._socket.pause();
    s.send({ id: 'a', type: 'next', payload: {} });
    await waitFor(() => gateway.subscriptions!.stats().active === 0, 'the subscriptions to end');
    assert.equal(gateway.subscriptions!.stats().connections, 1, 'they ended while the socket was still closing');
    assert.equal(await metric(gateway, 'subscriptions_active'), 0);
  });

  it('limits subscriptions per connection with TOO_MANY_SUBSCRIPTIONS', async () => {
    const c = open();
    const query = (id: string) => `subscription { featureChanged(entity: USER, ids: ["${id}"]) { id } }`;
    const watches = ['21', '22', '23'].map((id) => new Watch(c, query(id)));
    await active(3);
    const errors = await new Watch(c, query('24')).waitForError();
    assert.equal(errors[0].extensions.code, 'TOO_MANY_SUBSCRIPTIONS');
    assert.equal(errors[0].extensions.max, 3);
    assert.match(errors[0].message, /MAX_SUBSCRIPTIONS_PER_CONNECTION/);

    // Another connection has its own allowance; completing one frees a slot.
    const other = new Watch(open(), query('25'));
    await active(4);
    watches[0]!.stop();
    await active(3);
    const again = new Watch(c, query('24'));
    await active(4);
    await feed.publish('user', '24', 'clickStats', userChange(0.5));
    await feed.publish('user', '25', 'clickStats', userChange(0.5));
    await again.waitForEvents(1);
    await other.waitForEvents(1);
  });

  it('ends open subscriptions and stalled connections when the gateway closes', async () => {
    const other = await startGateway({ config: testConfig(env), registry, store, eventLog });
    const c = client(other);
    try {
      const watch = new Watch(c, 'subscription { featureChanged(entity: USER, ids: ["1"]) { id } }');
      const stalled = await RawSocket.open(wsUrl(other));
      await stalled.init();
      stalled.send({ id: 's', type: 'subscribe', payload: { query: 'subscription { featureChanged(entity: USER, ids: ["1"]) { id } }' } });
      await waitFor(() => other.subscriptions!.stats().active === 2, 'two subscriptions');
      stalled.ws.pause(); // will not answer the close handshake
      await other.close();
      assert.deepEqual(other.subscriptions!.stats(), { active: 0, connections: 0, queued: 0, deepestQueue: 0, queueCapacity: QUEUE, dropped: 0, superseded: 0 });
      await waitFor(() => watch.completed || watch.error !== undefined, 'the client to see the end');
      stalled.close();
    } finally {
      await c.dispose();
    }
  });

  it('applies MAX_QUERY_DEPTH to subscriptions', async () => {
    const deep = await startGateway({ config: testConfig({ ...env, MAX_QUERY_DEPTH: '3' }), registry, store, eventLog });
    try {
      const c = client(deep);
      try {
        const errors = await new Watch(c, 'subscription { featureChanged(entity: USER, ids: ["1"]) { user { clickStats { clickRate } } } }').waitForError();
        assert.equal(errors[0].extensions.code, 'QUERY_TOO_DEEP');
      } finally {
        await c.dispose();
      }
    } finally {
      await deep.close();
    }
  });
});

describe('subscriptions (distributed shape)', () => {
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let subgraphs: RunningSubgraph[];
  let gateway: RunningGateway;

  before(async () => {
    store = createStore({ kind: 'embedded' }, () => NOW);
    eventLog = new EmbeddedLog();
    subgraphs = await Promise.all(registry.entities.map((e) => startSubgraph(testConfig(), registry, e.name, store)));
    const subgraphUrls = subgraphs.map((s) => `${s.name}=${s.url}`).join(',');
    gateway = await startGateway({ config: testConfig({ ...env, SUBGRAPH_URLS: subgraphUrls }), registry, eventLog });
  });

  after(async () => {
    await gateway?.close();
    for (const s of subgraphs ?? []) await s.close();
    await eventLog?.close();
    await store?.close();
  });

  it('delivers changes resolved through the gateway over the subgraph processes', async () => {
    const feed = new Feed(store, eventLog);
    const c = client(gateway);
    try {
      const watch = new Watch(c, 'subscription { featureChanged(entity: MERCHANT, ids: ["m-1"]) { id view merchant { id riskStats { txnCount1h chargebackRate } } } }');
      await waitFor(() => gateway.subscriptions!.stats().active === 1, 'the subscription');
      await feed.publish('merchant', 'm-2', 'riskStats', { txnCount1h: 1, amountSum1h: 1, chargebackRate: 0 });
      await feed.publish('merchant', 'm-1', 'riskStats', { txnCount1h: 42, amountSum1h: 1234.5, chargebackRate: 0.015625 });
      await watch.waitForEvents(1);
      assert.deepEqual(watch.events, [{ data: { featureChanged: { id: 'm-1', view: 'riskStats', merchant: { id: 'm-1', riskStats: { txnCount1h: 42, chargebackRate: 0.015625 } } } } }]);
    } finally {
      await c.dispose();
    }
  });
});
