import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from 'graphql-ws';
import { Pool } from 'undici';
import WebSocket from 'ws';
import type { OutgoingRecord } from '../eventlog/event-log.js';
import { KafkaLog } from '../eventlog/kafka-log.js';
import { fromRoot } from '../runtime/paths.js';
import { readManifest } from '../schema/manifest.js';
import { loadRegistry } from '../schema/registry.js';
import { mulberry32 } from '../store/demo-data.js';
import { groupProgress, waitForGroup } from '../test/support/event-stream.js';
import { NodeProcess, waitUntilReady } from '../test/support/gateway.js';
import { KafkaBroker } from '../test/support/kafka-broker.js';
import { freePort } from '../test/support/ports.js';
import { RedisProcess } from '../test/support/redis-server.js';
import { assertLoopback, newHistogram, percentiles, type Percentiles } from './runner.js';
import { log, runBounded, Started } from './lifecycle.js';

/**
 * `npm run bench:freshness`: how fresh the served features are, on the real
 * pipeline (a Kafka broker, a Redis, a materializer process, a gateway
 * process, all on loopback and all started here, from test/support).
 *
 * Phase 1, freshness at a steady rate: click events are produced at `--rate`
 * events/s for `--duration` s (open loop: each event has a scheduled send
 * time, and its latency is measured from that time, so a stalled producer
 * is charged to the events it delayed). Each event is the n-th of its user
 * (a pool of `--users`), so "impressions ≥ n" marks it as applied. Measured
 * per event:
 *   - produced → readable: 1 in `--sample` events is polled over HTTP (the
 *     persisted RankingFeatures operation, on the gateway's fast path) every
 *     `--poll-ms` until the user's impressions reach n;
 *   - produced → pushed: every event, from the graphql-ws subscriptions
 *     watching all users of the pool: the first payload of the user with
 *     impressions ≥ n (a change may carry several events of one batch).
 *
 * Phase 2, the materializer's throughput: with the materializer (and the
 * gateway) stopped, `--events` click events are produced as fast as
 * possible; then a materializer is started and timed until its group's
 * committed offsets reach the end of the topic.
 *
 * Results: loadtest/results/freshness.json and a markdown table on stdout.
 * Bounded (a hard stop after 5 minutes); stops all it started, also on error
 * and SIGINT.
 */
const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '500' },
    duration: { type: 'string', default: '20' },
    users: { type: 'string', default: '1000' },
    subscriptions: { type: 'string', default: '10' },
    sample: { type: 'string', default: '10' },
    'poll-ms': { type: 'string', default: '10' },
    events: { type: 'string', default: '100000' },
    out: { type: 'string', default: fromRoot('loadtest', 'results') },
  },
});

function positive(name: keyof typeof args): number {
  const n = Number(args[name]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
  return n;
}
const rate = positive('rate');
const durationS = positive('duration');
const userCount = Math.floor(positive('users'));
const subscriptionCount = Math.min(Math.floor(positive('subscriptions')), userCount);
const sampleEvery = Math.floor(positive('sample'));
const pollMs = positive('poll-ms');
const throughputEvents = Math.floor(positive('events'));
if (Math.ceil(userCount / subscriptionCount) > 1000) throw new Error('at most 1000 users per subscription (MAX_BATCH_IDS): raise --subscriptions');

/** Waiting for the last events of phase 1 to show up, at most. */
const drainMs = 20_000;
const group = 'feature-materializer';
const jvmNote = 'The Kafka broker runs with the test harness\'s JVM flags (C1 compiler only, serial GC, 512 MiB heap), which favour start-up over throughput: the figures are a floor, not what a tuned broker would give.';

const clock = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const us = (ms: number): number => Math.max(1, Math.round(ms * 1000));


// --- everything this run started, stopped on every way out ---------------------------------------

const started = new Started();
let pool: Pool | undefined;
started.onStop(() => pool?.destroy());
const spawn = started.spawn.bind(started);

async function stop(p: NodeProcess): Promise<void> {
  await p.stop();
  started.processes.delete(p);
}

/** CPU time (user + system, ms) a process has used so far, from /proc (Linux); NaN elsewhere. */
const ticksPerSecond = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();
function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
  } catch {
    return NaN;
  }
}

/** Share of one core each process used between `start()` and `stop()`, in percent. */
function cpuMeter(pids: Record<string, number | undefined>): { stop(): Record<string, number> } {
  const t0 = clock();
  const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuMs(pid)]));
  return {
    stop: () => {
      const wall = clock() - t0;
      return Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, Math.round(((cpuMs(pid) - before[name]!) / wall) * 100)]));
    },
  };
}

// --- phase 1: freshness at a steady rate -----------------------------------------------------

interface Pending {
  readonly n: number;
  readonly t0: number;
}

interface FreshnessFigures {
  readonly events: number;
  readonly achievedRate: number;
  readonly producerMaxLagMs: number;
  readonly readable: Percentiles & { samples: number; missed: number; polls: number; errors: number };
  readonly pushed: Percentiles & { events: number; missed: number; payloads: number };
  readonly gateway: { subscriptionEventsDropped: number; fastPathServed: number };
  /** Percent of one core per process while events were produced and drained. */
  readonly cpuPercent: Record<string, number>;
}

async function freshness(brokers: string[], redisUrl: string, producer: KafkaLog, materializer: NodeProcess): Promise<FreshnessFigures> {
  const port = await freePort();
  const gateway = spawn('gateway/main.js', [], {
    PORT: String(port), KAFKA_BROKERS: brokers.join(','), REDIS_URL: redisUrl, FAST_PATH: 'true', MAX_SUBSCRIPTIONS_PER_CONNECTION: String(subscriptionCount + 1),
  });
  const base = `http://127.0.0.1:${port}`;
  assertLoopback(base);
  await waitUntilReady(`${base}/readyz`, gateway, 60_000);
  log('gateway ready', { url: `${base}/graphql` });

  const users = Array.from({ length: userCount }, (_, i) => `fu-${i}`);
  const produced = new Map<string, number>(users.map((u) => [u, 0]));
  const pending = new Map<string, Pending[]>(users.map((u) => [u, []]));
  const pushed = newHistogram();
  const readable = newHistogram();
  let payloads = 0;

  // The subscribers: one connection, the pool split over several subscriptions, plus a warm-up user.
  const client = createClient({ url: `ws://127.0.0.1:${port}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0 });
  started.clients.add(client);
  let subscriptionError: unknown;
  let warmSeen = 0;
  const query = 'subscription ($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids, views: ["clickStats"]) { id user { clickStats { impressions } } } }';
  const onPayload = (value: any): void => {
    const now = clock();
    const change = value?.data?.featureChanged;
    const id: string | undefined = change?.id;
    const impressions: number = change?.user?.clickStats?.impressions ?? 0;
    if (id === 'fw-0') {
      warmSeen++;
      return;
    }
    payloads++;
    const queue = id === undefined ? undefined : pending.get(id);
    while (queue && queue.length > 0 && queue[0]!.n <= impressions) pushed.recordValue(us(now - queue.shift()!.t0));
  };
  const per = Math.ceil(userCount / subscriptionCount);
  for (const ids of [['fw-0'], ...Array.from({ length: subscriptionCount }, (_, i) => users.slice(i * per, (i + 1) * per)).filter((ids) => ids.length > 0)]) {
    client.subscribe({ query, variables: { ids } }, { next: onPayload, error: (e) => void (subscriptionError = e), complete: () => undefined });
  }

  // Warm-up: until a change makes it all the way (the gateway's tail starts at the topic's end,
  // the materializer may still be joining its group), then a few seconds at a tenth of the rate.
  const click = (userId: string, ts: number, random: () => number): OutgoingRecord => ({
    topic: 'click-events', key: userId,
    value: JSON.stringify({ userId, adId: `fi-${Math.floor(random() * 1000)}`, clicked: random() < 0.1, ts: Math.round(ts), price: 9.99, category: 'books' }),
  });
  const random = mulberry32(7);
  const warmDeadline = Date.now() + 60_000;
  while (warmSeen === 0) {
    if (subscriptionError) throw new Error(`subscription failed: ${JSON.stringify(subscriptionError)}`);
    if (Date.now() > warmDeadline) throw new Error(`no change reached the subscriber within 60 s\n${gateway.output.slice(-2000)}`);
    await producer.produce([click('fw-0', Date.now(), random)]);
    for (let i = 0; i < 20 && warmSeen === 0; i++) await sleep(100);
  }
  for (let i = 0; i < 30; i++) {
    await producer.produce(Array.from({ length: Math.max(1, Math.round(rate / 100)) }, () => click('fw-0', Date.now(), random)));
    await sleep(100);
  }
  log('pipeline warm; measuring', { rate, durationS, users: userCount, subscriptions: subscriptionCount, sampleEvery, pollMs });

  // HTTP reads: the persisted RankingFeatures operation (fast path), by its manifest id.
  const op = readManifest().operations.find((o) => o.name === 'RankingFeatures');
  if (!op) throw new Error('the manifest has no RankingFeatures operation');
  pool = new Pool(base, { connections: 32, pipelining: 1, keepAliveTimeout: 60_000 });
  const httpPool = pool;
  let polls = 0;
  let pollErrors = 0;
  let readableMissed = 0;
  const readImpressions = async (user: string): Promise<number> => {
    polls++;
    const response = await httpPool.request({
      method: 'POST', path: '/graphql', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ operationName: op.name, variables: { user, items: [] }, extensions: { persistedQuery: { version: 1, sha256Hash: op.id } } }),
    });
    const body = (await response.body.json()) as any;
    if (response.statusCode !== 200 || body.errors) {
      pollErrors++;
      return -1;
    }
    return body.data?.user?.clickStats?.impressions ?? 0;
  };
  const poll = async (user: string, n: number, t0: number): Promise<void> => {
    for (;;) {
      const m = await readImpressions(user).catch(() => {
        pollErrors++;
        return -1;
      });
      const now = clock();
      if (m >= n) return void readable.recordValue(us(now - t0));
      if (now > t0 + drainMs) return void readableMissed++;
      await sleep(pollMs);
    }
  };
  const polling: Promise<void>[] = [];

  // The open-loop producer: event i is due at start + i/rate; whatever is due is sent in one batch.
  const total = Math.round(rate * durationS);
  const cpu = cpuMeter({ gateway: gateway.child.pid, materializer: materializer.child.pid, kafka: started.broker?.pid, redis: started.redis?.pid, client: process.pid });
  const start = clock() + 10;
  let sent = 0;
  let maxLag = 0;
  while (sent < total) {
    const now = clock();
    const due = Math.min(total, Math.floor(((now - start) * rate) / 1000) + 1);
    if (due <= sent) {
      await sleep(Math.max(1, start + (sent * 1000) / rate - now));
      continue;
    }
    const batch: OutgoingRecord[] = [];
    for (; sent < due; sent++) {
      const t0 = start + (sent * 1000) / rate;
      const user = users[Math.floor(random() * userCount)]!;
      const n = produced.get(user)! + 1;
      produced.set(user, n);
      pending.get(user)!.push({ n, t0 });
      batch.push(click(user, t0, random));
      if (sent % sampleEvery === 0) polling.push(poll(user, n, t0));
    }
    maxLag = Math.max(maxLag, clock() - (start + ((sent - 1) * 1000) / rate));
    await producer.produce(batch);
  }
  const elapsed = (clock() - start) / 1000;
  log('produced', { events: total, seconds: Math.round(elapsed * 10) / 10, producerMaxLagMs: Math.round(maxLag) });

  const drainDeadline = Date.now() + drainMs;
  const waiting = () => [...pending.values()].reduce((s, q) => s + q.length, 0);
  while (waiting() > 0 && Date.now() < drainDeadline && !subscriptionError) await sleep(50);
  await Promise.all(polling);
  const cpuPercent = cpu.stop();
  if (subscriptionError) throw new Error(`subscription failed: ${JSON.stringify(subscriptionError)}`);

  const metrics = await (await fetch(`${base}/metrics`)).text();
  const metric = (re: RegExp): number => [...metrics.matchAll(re)].reduce((s, m) => s + Number(m[1]), 0);
  const gatewayFigures = {
    subscriptionEventsDropped: metric(/^subscription_events_dropped_total(?:\{[^}]*\})? (\S+)$/gm),
    fastPathServed: metric(/^feature_gateway_fast_path_requests_total\{[^}]*outcome="served"[^}]*\} (\S+)$/gm),
  };
  await client.dispose();
  started.clients.delete(client);
  await httpPool.close();
  pool = undefined;
  await stop(gateway);

  return {
    events: total,
    achievedRate: total / elapsed,
    producerMaxLagMs: maxLag,
    readable: { ...percentiles(readable), samples: readable.totalCount, missed: readableMissed, polls, errors: pollErrors },
    pushed: { ...percentiles(pushed), events: pushed.totalCount, missed: waiting(), payloads },
    gateway: gatewayFigures,
    cpuPercent,
  };
}

// --- phase 2: the materializer's throughput ---------------------------------------------------

interface ThroughputFigures {
  readonly events: number;
  readonly produceSeconds: number;
  /** From spawning the process until the group committed the end of the topic. */
  readonly totalSeconds: number;
  readonly eventsPerSecond: number;
  /** From the group's first commit after the start to the end: without process start-up and group join. */
  readonly steadyEventsPerSecond: number;
  readonly complete: boolean;
}

async function throughput(brokers: string[], redisUrl: string, producer: KafkaLog): Promise<ThroughputFigures> {
  const random = mulberry32(11);
  const produceStart = clock();
  const base = Date.now();
  for (let i = 0; i < throughputEvents; i += 5000) {
    const batch: OutgoingRecord[] = [];
    for (let j = i; j < Math.min(throughputEvents, i + 5000); j++) {
      const userId = `tu-${Math.floor(random() * 10_000)}`;
      batch.push({ topic: 'click-events', key: userId, value: JSON.stringify({ userId, adId: `ti-${Math.floor(random() * 1000)}`, clicked: random() < 0.1, ts: base + Math.floor(j / 10), price: 9.99, category: 'toys' }) });
    }
    await producer.produce(batch);
  }
  const produceSeconds = (clock() - produceStart) / 1000;
  const before = await groupProgress(brokers, group, ['click-events']);
  log('produced the backlog; starting the materializer', { events: throughputEvents, seconds: Math.round(produceSeconds * 10) / 10, committed: before.committed, end: before.end });

  const t0 = clock();
  const materializer = spawn('materializer/main.js', [], { KAFKA_BROKERS: brokers.join(','), REDIS_URL: redisUrl });
  let first: { at: number; committed: number } | undefined;
  let last = { at: t0, committed: before.committed };
  let complete = true;
  await waitForGroup(brokers, group, ['click-events'], 120_000, (committed) => {
    const at = clock();
    if (!first && committed > before.committed) first = { at, committed };
    last = { at, committed };
    if (materializer.child.exitCode !== null) throw new Error(`the materializer exited (${materializer.child.exitCode}):\n${materializer.output.slice(-2000)}`);
  }).catch((error: Error) => {
    if (materializer.child.exitCode !== null) throw error;
    complete = false;
    log('the backlog was not fully consumed in time; reporting the part that was', { err: error.message });
  });
  await stop(materializer);
  const done = last.committed - before.committed;
  const totalSeconds = (last.at - t0) / 1000;
  return {
    events: done,
    produceSeconds,
    totalSeconds,
    eventsPerSecond: done / totalSeconds,
    steadyEventsPerSecond: first && last.at > first.at ? (last.committed - first.committed) / ((last.at - first.at) / 1000) : NaN,
    complete,
  };
}

// --- the run ------------------------------------------------------------------------------------

function table(result: { machine: Record<string, unknown>; freshness: FreshnessFigures; throughput: ThroughputFigures }): string {
  const f = result.freshness;
  const t = result.throughput;
  const ms = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
  const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
  return [
    `Freshness at ${int(f.achievedRate)} events/s for ${durationS} s (${int(f.events)} click events over ${userCount} users; ${result.machine.cpus} cores, ${result.machine.model})`,
    '',
    '| measure | p50 ms | p99 ms | max ms | measured events | missed |',
    '|---|---:|---:|---:|---:|---:|',
    `| produced → readable through the gateway (HTTP, 1 in ${sampleEvery}, polled every ${pollMs} ms) | ${ms(f.readable.p50)} | ${ms(f.readable.p99)} | ${ms(f.readable.max)} | ${int(f.readable.samples)} | ${f.readable.missed} |`,
    `| produced → pushed to the graphql-ws subscriber | ${ms(f.pushed.p50)} | ${ms(f.pushed.p99)} | ${ms(f.pushed.max)} | ${int(f.pushed.events)} | ${f.pushed.missed} |`,
    '',
    '| materializer throughput (one process, backlog of click events) | value |',
    '|---|---:|',
    `| events consumed${t.complete ? '' : ' (timed out: partial)'} | ${int(t.events)} |`,
    `| events/s, from process start to the last commit | ${int(t.eventsPerSecond)} |`,
    `| events/s, from its first commit to its last | ${int(t.steadyEventsPerSecond)} |`,
    '',
    `Latencies are from each event's scheduled send time (open loop; producer max lag ${ms(f.producerMaxLagMs)} ms). ` +
      `Subscription events dropped by the gateway: ${f.gateway.subscriptionEventsDropped}; HTTP polls: ${int(f.readable.polls)} (${f.readable.errors} errors). ` +
      `Each click event changes clickStats v1 and v2 (two change events on feature-updates); the subscriber names the view, so it gets the active version's alone (decision 0032).`,
    `CPU while measuring, % of one core (${result.machine.cpus} cores = ${Number(result.machine.cpus) * 100}%): ` +
      Object.entries(f.cpuPercent).map(([name, pct]) => `${name} ${Number.isFinite(pct) ? pct : 'n/a'}`).join(', ') + '.',
    `Note: ${jvmNote}`,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  log('starting Kafka and Redis');
  const [broker, redis] = await Promise.all([KafkaBroker.start(), RedisProcess.start()]);
  started.broker = broker;
  started.redis = redis;
  const brokers = broker.brokers;
  const registry = loadRegistry();
  const producer = new KafkaLog({ brokers, clientId: 'freshness-bench' });
  started.logs.add(producer);
  await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
  const materializer = spawn('materializer/main.js', [], { KAFKA_BROKERS: brokers.join(','), REDIS_URL: redis.url });

  const fresh = await freshness(brokers, redis.url, producer, materializer);
  await stop(materializer);
  const through = await throughput(brokers, redis.url, producer);

  const result = {
    startedAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', node: process.version, memoryGiB: Math.round(os.totalmem() / 2 ** 30) },
    settings: { rate, durationS, users: userCount, subscriptions: subscriptionCount, sampleEvery, pollMs, throughputEvents },
    note: jvmNote,
    freshness: fresh,
    throughput: through,
  };
  fs.mkdirSync(args.out!, { recursive: true });
  const file = path.join(args.out!, 'freshness.json');
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  console.log(table(result));
  log('wrote results', { file });
}

runBounded({ name: 'benchmark', boundMs: 5 * 60_000, boundMessage: 'benchmark exceeded its 5-minute bound', main, started });
