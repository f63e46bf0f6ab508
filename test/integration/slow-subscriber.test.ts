/**
 * A graphql-ws subscriber with 400 subscriptions on one connection that
 * never reads, against a gateway process with a heavy change stream (the
 * embedded pipeline of `npm start`: demo events at 1000/s through the
 * in-process materializer): its connection's send buffer stays at
 * SUBSCRIPTION_SEND_BUFFER_BYTES with 400 senders at once (the gate pauses
 * it), the gateway (its V8 old space capped) stays up and under an RSS bound
 * while the events withheld from that client add up to several times the
 * bound, and a normal subscriber keeps getting its updates with bounded
 * delay until the stuck connection is closed. Then a client that stops
 * reading only for a while is paused, resumed and kept. That a reader that
 * stops reading is held at the bound and closed after
 * SUBSCRIPTION_STALL_TIMEOUT_MS, its subscriptions ending then, over every
 * transport: subscription-transports.test.ts.
 *
 * The embedded pipeline rather than Kafka: it makes thousands of change
 * events a second without a broker JVM on a shared 2-core machine, and the
 * send side under test is the same for both feeds.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { NodeProcess, waitUntilReady } from '../support/gateway.js';
import { freePort } from '../support/ports.js';
import { eventually } from '../support/wait.js';

const SEND_BUFFER = 16_384;
// graphql-ws's keep-alive cuts off a client that answers no ping 24 s after it connected (a ping at
// 12 s, 12 s for the pong); the gate's close comes first, a few seconds + 12 s after it connected.
const STALL_MS = 12_000;
const SUBSCRIPTIONS = 400;
const USERS = Array.from({ length: 1000 }, (_, i) => String(i + 1));
/**
 * The gateway runs with V8's old space capped at this: if what a stuck client costs were retained rather
 * than garbage (queues are bounded, withheld events die young or are collected), it would run out of
 * heap and exit; instead it must stay up, its RSS under RSS_BOUND.
 */
const OLD_SPACE_MIB = 256;
const RSS_BOUND = 448 * 1024 * 1024;

// ~8 KB per event: the same profile under 48 aliases (one store read, a large payload). Only sent
// events are resolved, so the size makes the withheld backlog large without costing the gateway more.
// Both live versions of clickStats are watched: two events per demo click, for a large backlog.
const heavy = `subscription ($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids, versions: [{ view: "clickStats", version: 1 }, { view: "clickStats", version: 2 }]) {
  id view version eventTime
  user { id clickStats { clickRate clicks impressions eventTime stale } ${Array.from({ length: 48 }, (_, i) => `p${i}: profile { sessionLength isPremium country embedding stale }`).join(' ')} }
} }`;

async function metrics(base: string): Promise<(name: string) => number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return (name: string) => {
    let sum = 0;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[1]);
    return sum;
  };
}

/** A graphql-ws client in raw protocol over `ws`, so its TCP socket can be paused. */
class RawSubscriber {
  readonly ws: WebSocket;
  nexts = 0;
  firstNextBytes = 0;
  refused: string | undefined;

  private constructor(url: string) {
    this.ws = new WebSocket(url, 'graphql-transport-ws');
  }

  /** Connects and opens `subscriptions` subscriptions of `query`; resolves once the first event arrived. */
  static async open(url: string, subscriptions: number, query: string, ids: readonly string[]): Promise<RawSubscriber> {
    const client = new RawSubscriber(url);
    await once(client.ws, 'open');
    const acked = new Promise<void>((resolve) => {
      client.ws.on('message', (data: Buffer) => {
        const message = JSON.parse(String(data)) as { type: string };
        if (message.type === 'connection_ack') resolve();
        if (message.type === 'next') {
          client.nexts++;
          if (client.firstNextBytes === 0) client.firstNextBytes = data.length;
        }
        if (message.type === 'error') client.refused ??= String(data);
      });
    });
    client.ws.send(JSON.stringify({ type: 'connection_init' }));
    await acked;
    for (let i = 0; i < subscriptions; i++) {
      client.ws.send(JSON.stringify({ id: `s${i}`, type: 'subscribe', payload: { query, variables: { ids } } }));
    }
    await eventually(async () => {
      assert.equal(client.refused, undefined, 'the subscriptions were refused');
      assert.ok(client.firstNextBytes > 0, 'the first event arrived');
    }, 30_000);
    return client;
  }

  /** The TCP socket under the WebSocket: paused, it reads nothing, not the events, not the pings. */
  get socket(): Socket {
    return (this.ws as unknown as { _socket: Socket })._socket;
  }
}

describe('a subscriber that never reads', () => {
  let gateway: NodeProcess;
  let base: string;
  let normal: Client;
  let stuck: RawSubscriber | undefined;
  let slow: RawSubscriber | undefined;

  before(async () => {
    const port = await freePort();
    gateway = NodeProcess.spawn('gateway/main.js', [], {
      PORT: String(port), LOG_LEVEL: 'warn', DEMO_SEED: 'true', DEMO_WRITER: 'false', DEMO_EVENTS_PER_SECOND: '1000',
      SUBSCRIPTION_SEND_BUFFER_BYTES: String(SEND_BUFFER), SUBSCRIPTION_STALL_TIMEOUT_MS: String(STALL_MS),
      MAX_SUBSCRIPTIONS_PER_CONNECTION: String(SUBSCRIPTIONS), MAX_QUERY_COST: '100000000', NODE_OPTIONS: `--max-old-space-size=${OLD_SPACE_MIB}`,
    });
    base = `http://127.0.0.1:${port}`;
    await waitUntilReady(`${base}/readyz`, gateway, 60_000);
  });

  after(async () => {
    await normal?.dispose();
    stuck?.ws.terminate();
    slow?.ws.terminate();
    await gateway?.stop();
  });

  it('holds its send buffer at the bound with 400 subscriptions sending, keeps memory bounded and serves the others until it is closed', async () => {
    const wsUrl = `${base.replace('http', 'ws')}/graphql`;

    // The normal subscriber: 20 users' clickStats, with their receipt times.
    const received: { at: number; lagMs: number }[] = [];
    let normalError: unknown;
    normal = createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0 });
    normal.subscribe(
      { query: 'subscription ($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids, views: ["clickStats"]) { id eventTime user { clickStats { clicks } } } }', variables: { ids: USERS.slice(0, 20) } },
      {
        next: (value: any) => {
          const eventTime = Date.parse(value?.data?.featureChanged?.eventTime);
          received.push({ at: Date.now(), lagMs: Date.now() - eventTime });
        },
        error: (error) => void (normalError = error),
        complete: () => undefined,
      },
    );

    // The stuck subscriber: 400 subscriptions to all 1000 users, every view; after its first event it reads nothing.
    stuck = await RawSubscriber.open(wsUrl, SUBSCRIPTIONS, heavy, USERS);
    const { socket } = stuck;
    const firstNextBytes = stuck.firstNextBytes;
    socket.pause();

    // The gate pauses its sends once the kernel's buffers are full.
    await eventually(async () => assert.equal((await metrics(base))('subscription_connections_send_paused'), 1), 30_000);
    const start = await metrics(base);
    const withheldAtStart = start('subscription_events_dropped_total') + start('subscription_events_superseded_total');
    const rssAtStart = start('process_resident_memory_bytes');
    const receivedAtStart = received.length;
    let maxRss = rssAtStart;
    let maxBuffered = 0;
    let withheld = 0;
    let stalledClosed = 0;
    const stuckFrom = Date.now();
    // Sampled until the gate closes the stuck connection (about STALL_MS after it paused).
    while (stalledClosed === 0) {
      await new Promise((r) => setTimeout(r, 250));
      const m = await metrics(base);
      maxRss = Math.max(maxRss, m('process_resident_memory_bytes'));
      maxBuffered = Math.max(maxBuffered, m('subscription_send_buffered_bytes'));
      withheld = m('subscription_events_dropped_total') + m('subscription_events_superseded_total') + m('subscription_queued_events') - withheldAtStart;
      stalledClosed = m('subscription_connections_stalled_closed_total');
      assert.ok(Date.now() < stuckFrom + STALL_MS + 30_000, `the stuck connection was not closed within ${STALL_MS / 1000 + 30} s\n${gateway.output.slice(-2000)}`);
    }
    const stuckUntil = Date.now();

    // Send buffer, with 400 subscriptions sending: at most the bound plus the message that crossed it (without the gate: one per subscription).
    assert.ok(maxBuffered <= SEND_BUFFER + 2 * firstNextBytes, `send buffers held ${maxBuffered} bytes; bound ${SEND_BUFFER} + one message of ~${firstNextBytes}`);
    // Memory: bounded, while what the stuck client would have been sent is far larger.
    const wouldBeBacklog = withheld * firstNextBytes;
    const growth = maxRss - rssAtStart;
    console.log(`stuck for ${stuckUntil - stuckFrom} ms: ${withheld} events withheld (~${Math.round(wouldBeBacklog / 2 ** 20)} MiB at ${firstNextBytes} B each); ` +
      `gateway RSS grew ${Math.round(growth / 2 ** 20)} MiB (max ${Math.round(maxRss / 2 ** 20)} MiB); max send buffer ${maxBuffered} B`);
    assert.equal(gateway.child.exitCode, null, `the gateway exited:\n${gateway.output.slice(-2000)}`);
    assert.ok(maxRss < RSS_BOUND, `gateway RSS reached ${maxRss} bytes (bound ${RSS_BOUND})`);
    assert.ok(wouldBeBacklog > 3 * RSS_BOUND, `the would-be backlog (${wouldBeBacklog} bytes) should dwarf the memory bound`);

    // The normal subscriber kept getting updates throughout, with bounded delay.
    assert.equal(normalError, undefined);
    const during = received.slice(receivedAtStart);
    assert.ok(during.length >= 10, `the normal subscriber got ${during.length} updates while the other one was stuck`);
    let previous = stuckFrom;
    let maxGap = 0;
    for (const r of during) {
      maxGap = Math.max(maxGap, r.at - previous);
      previous = r.at;
    }
    assert.ok(maxGap < 5_000, `the normal subscriber went ${maxGap} ms without an update`);
    const lags = during.map((r) => r.lagMs).sort((a, b) => a - b);
    const p95 = lags[Math.floor(lags.length * 0.95)]!;
    assert.ok(p95 < 10_000, `95th percentile delay from event to the normal subscriber: ${p95} ms`);

  });

  it('pauses a client that stops reading for a while, resumes it when it reads again, and keeps it', async () => {
    stuck?.ws.terminate(); // closed by the gate already, unless the test before failed
    await eventually(async () => assert.equal((await metrics(base))('subscription_connections_send_paused'), 0), 15_000);
    const before = await metrics(base);
    slow = await RawSubscriber.open(`${base.replace('http', 'ws')}/graphql`, 20, heavy, USERS);
    slow.socket.pause();
    await eventually(async () => assert.equal((await metrics(base))('subscription_connections_send_paused'), 1), 30_000);
    // Well under SUBSCRIPTION_STALL_TIMEOUT_MS, then it reads again.
    await new Promise((r) => setTimeout(r, 1500));
    const nextsBeforeResume = slow.nexts;
    slow.socket.resume();

    // The gate hands its held messages to the socket once the buffer drained: no longer paused.
    await eventually(async () => assert.equal((await metrics(base))('subscription_connections_send_paused'), 0), 30_000);
    // And the events keep coming after that.
    const nextsAtResume = slow.nexts;
    assert.ok(nextsAtResume > nextsBeforeResume, 'it read what was buffered');
    await eventually(async () => assert.ok(slow!.nexts > nextsAtResume + 500, `${slow!.nexts - nextsAtResume} events since the gate resumed`), 30_000);
    // Still open past the stall timeout: the pause ended in time, so no close.
    await new Promise((r) => setTimeout(r, STALL_MS + 2000));
    assert.equal(slow.ws.readyState, WebSocket.OPEN);
    const after = await metrics(base);
    assert.ok(after('subscription_send_pauses_total') > before('subscription_send_pauses_total'));
    assert.equal(after('subscription_connections_stalled_closed_total'), before('subscription_connections_stalled_closed_total'));
  });
});
