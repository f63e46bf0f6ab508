/**
 * GraphQL subscriptions on the gateway, what is particular to graphql-ws and
 * to the change feed: malformed change events, bounded queues (drop-oldest),
 * graphql-ws's protocol errors and close codes, subscriptions per
 * connection, and the distributed shape. What a subscription delivers and
 * refuses whatever the transport (selection, filters, fragments, errors,
 * limits, a reader that stops reading, the drain on close) is in
 * subscription-transports.test.ts, over graphql-ws, SSE and multipart.
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
import { changeTopic, encodeChange } from '../../eventlog/change-event.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { startSubgraph, type RunningSubgraph } from '../../subgraphs/server.js';
import { TestFeed } from '../support/change-feed.js';
import { waitFor } from '../support/subscription-clients.js';
import { registry, testConfig } from '../support/gateway.js';
import { baseUrl, get, gql } from '../support/http.js';

const NOW = Date.now();
const QUEUE = 64;
const env = { MAX_BATCH_IDS: '10', MAX_SUBSCRIPTIONS_PER_CONNECTION: '3', SUBSCRIPTION_QUEUE_SIZE: String(QUEUE) };

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
  let feed: TestFeed;
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
    feed = new TestFeed(registry, store, eventLog, NOW);
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

    // Still serving: HTTP (a user this test wrote: the tests that wrote others moved to subscription-transports) and a new subscription.
    await feed.publish('user', '2', 'clickStats', userChange(0.5));
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
    const feed = new TestFeed(registry, store, eventLog, NOW);
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
