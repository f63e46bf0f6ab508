import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { KafkaLog } from '../eventlog/kafka-log.js';
import { startDemoEvents } from '../materializer/demo-events.js';
import { fromRoot } from '../runtime/paths.js';
import { readManifest } from '../schema/manifest.js';
import { loadRegistry } from '../schema/registry.js';
import { demoEntityCounts, mulberry32 } from '../store/demo-data.js';
import { NodeProcess, waitUntilReady } from '../test/support/gateway.js';
import { KafkaBroker } from '../test/support/kafka-broker.js';
import { freePort } from '../test/support/ports.js';
import { RedisProcess } from '../test/support/redis-server.js';
import { assertLoopback, newHistogram, openLoop, percentiles, type BodySource, type Percentiles, type RunResult } from './runner.js';
import { bodySource, dataSet, longTtlRegistryFile, workloads } from './workloads.js';
import { log, runBounded, Started } from './lifecycle.js';

/**
 * `npm run soak -- --minutes N`: the gateway under a steady mixed load for
 * N minutes (default 10), to see whether errors, latency or memory drift.
 *
 * Starts on loopback, from test/support: a Kafka broker, a Redis loaded with
 * the benchmark's data set (the project's own load command), a materializer
 * process and a gateway process (co-located on Redis, tailing
 * `feature-updates` from Kafka). Then, all at once:
 *   - persisted W1–W3 (loadtest/workloads.ts) round-robin at `--rate` req/s,
 *     open loop (latency from each request's scheduled time);
 *   - ad-hoc analyst queries (query text, not persisted) at `--adhoc-rate`;
 *   - `--subscribers` graphql-ws connections, each watching its share of the
 *     demo users' clickStats, counting the updates they receive;
 *   - raw demo events (materializer/demo-events.ts, about the demo users)
 *     produced to Kafka at `--events` per second: the materializer turns them
 *     into feature values and change events, which reach the subscribers.
 * Every `--interval` seconds it prints and records one row: requests, error
 * rate, p50/p99, subscription updates, gateway RSS and heap (from its
 * /metrics), materializer RSS. At the end: the overall error rate, p99 of the
 * first vs the last interval, memory growth after `--warmup` intervals (last
 * − first, and the least-squares slope per minute), written to
 * loadtest/results/soak.json and soak.md. With SOAK_API_KEY set, every
 * request and WebSocket carries it as `x-api-key`.
 *
 * Bounded: a hard stop at N + 5 minutes. Stops all it started, also on error
 * and SIGINT.
 */
const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    interval: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '1' },
    rate: { type: 'string', default: '150' },
    'adhoc-rate': { type: 'string', default: '5' },
    subscribers: { type: 'string', default: '10' },
    events: { type: 'string', default: '100' },
    out: { type: 'string', default: fromRoot('loadtest', 'results') },
  },
});

function positive(name: keyof typeof args, integer = false): number {
  const n = Number(args[name]);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(args[name])}`);
  return n;
}
const minutes = positive('minutes');
const intervalS = positive('interval');
const warmupIntervals = Number(args.warmup);
if (!Number.isInteger(warmupIntervals) || warmupIntervals < 0) throw new Error('--warmup must be a whole number of intervals (0 or more)');
const rate = positive('rate');
const adhocRate = positive('adhoc-rate');
const subscriberCount = positive('subscribers', true);
const eventsPerSecond = positive('events');
const intervals = Math.max(1, Math.round((minutes * 60) / intervalS));
if (intervals <= warmupIntervals) throw new Error(`--minutes ${minutes} at --interval ${intervalS} s gives ${intervals} intervals: more than --warmup ${warmupIntervals} are needed`);

const apiKey = process.env.SOAK_API_KEY || undefined;
const authHeaders: Record<string, string> = apiKey ? { 'x-api-key': apiKey } : {};

const MiB = 2 ** 20;
const clock = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


// --- everything this run started, stopped on every way out ---------------------------------------

const started = new Started();
let demoEvents: { stop(): void } | undefined;
let registryFile: string | undefined;
started.onStop(() => demoEvents?.stop());
started.onStop(() => registryFile && fs.rmSync(registryFile, { force: true }));
const spawn = started.spawn.bind(started);

async function exited(p: NodeProcess): Promise<number | null> {
  if (p.child.exitCode !== null) return p.child.exitCode;
  return new Promise((resolve) => p.child.once('exit', (code) => resolve(code)));
}

/** Resident memory of a process from /proc (Linux), in bytes; NaN elsewhere. */
function rssOf(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

async function gatewayMetrics(base: string): Promise<(name: string) => number> {
  const response = await fetch(`${base}/metrics`, { headers: authHeaders, signal: AbortSignal.timeout(10_000) });
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}`);
  const text = await response.text();
  return (name: string) => {
    let sum = 0;
    let found = false;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) {
      sum += Number(m[1]);
      found = true;
    }
    return found ? sum : NaN;
  };
}

// --- the load ---------------------------------------------------------------------------------

/** W1, W2, W3 in turn, persisted by manifest id. */
function persistedMix(seed: number): BodySource {
  const manifest = readManifest();
  const sources = workloads.map((w, i) => {
    const op = manifest.operations.find((o) => o.name === w.operation);
    if (!op) throw new Error(`the manifest has no ${w.operation} operation (workload ${w.name})`);
    return bodySource(w, op, 'persisted', seed + i);
  });
  let next = 0;
  return () => sources[next++ % sources.length]!();
}

/** What an analyst types: a query that is not in the manifest, over 25 users and a merchant. */
function adhocQueries(seed: number): BodySource {
  const random = mulberry32(seed);
  const pick = (n: number) => String(1 + Math.floor(random() * n));
  const query = 'query Analyst($ids: [ID!]!, $merchant: ID!) { users(ids: $ids) { id clickStats { clickRate clicks impressions stale } profile { country isPremium } } merchant(id: $merchant) { id riskStats { txnCount1h chargebackRate } } }';
  return () => JSON.stringify({ query, variables: { ids: Array.from({ length: 25 }, () => pick(dataSet.users)), merchant: pick(dataSet.merchants) } });
}

/** A ws WebSocket that sends the API key on the upgrade request (graphql-ws passes url and protocols only). */
class KeyedWebSocket extends WebSocket {
  constructor(address: string | URL, protocols?: string | string[]) {
    super(address, protocols, { headers: authHeaders });
  }
}

interface Subscribers {
  /** Updates received per subscriber since the last call, and reset. */
  take(): number[];
  errors: string[];
}

function subscribe(wsUrl: string): Subscribers {
  const users = demoEntityCounts.user ?? 1000;
  const per = Math.ceil(users / subscriberCount);
  const counts = new Array<number>(subscriberCount).fill(0);
  const errors: string[] = [];
  const query = 'subscription ($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids, views: ["clickStats"]) { id eventTime user { clickStats { clickRate clicks impressions } } } }';
  for (let s = 0; s < subscriberCount; s++) {
    const ids = Array.from({ length: per }, (_, i) => String(1 + ((s * per + i) % users)));
    const client = createClient({
      url: wsUrl, webSocketImpl: apiKey ? KeyedWebSocket : WebSocket, retryAttempts: 0, lazy: false,
      ...(apiKey ? { connectionParams: { apiKey } } : {}),
      on: { closed: (event) => void errors.push(`subscriber ${s} connection closed: ${(event as { code?: number }).code ?? 'unknown code'}`) },
    });
    started.clients.add(client);
    client.subscribe({ query, variables: { ids } }, {
      next: (value) => {
        if (value.errors) errors.push(`subscriber ${s}: ${JSON.stringify(value.errors).slice(0, 300)}`);
        counts[s]!++;
      },
      error: (error) => void errors.push(`subscriber ${s} failed: ${JSON.stringify(error, Object.getOwnPropertyNames(error ?? {})).slice(0, 300)}`),
      complete: () => void errors.push(`subscriber ${s}: its subscription completed`),
    });
  }
  return {
    take: () => counts.splice(0, counts.length, ...new Array<number>(subscriberCount).fill(0)),
    errors,
  };
}

// --- the run ------------------------------------------------------------------------------------

interface IntervalRow {
  readonly index: number;
  readonly endSeconds: number;
  readonly requests: number;
  readonly errors: number;
  readonly errorRate: number;
  /** Failed requests by kind: no answer (or dropped by the open loop), an HTTP status other than 200, a 200 with GraphQL errors. */
  readonly errorKinds: { readonly transport: number; readonly non200: number; readonly graphql: number };
  /** Store calls the gateway saw fail this interval (feature_store_errors_total). */
  readonly storeErrors: number;
  readonly persisted: Percentiles & { requests: number; errors: number };
  readonly adhoc: Percentiles & { requests: number; errors: number };
  /** Both kinds of request together. */
  readonly p50: number;
  readonly p99: number;
  readonly subscriptionUpdates: number;
  /** The subscriber that got the fewest updates this interval. */
  readonly subscriptionUpdatesMin: number;
  readonly subscriptionEventsDropped: number;
  readonly gatewayRssMiB: number;
  readonly gatewayHeapUsedMiB: number;
  /** The lowest heap sampled in the interval (every 5 s): the floor after collections, where a leak shows. */
  readonly gatewayHeapFloorMiB: number;
  readonly materializerRssMiB: number;
}

function failures(r: RunResult): number {
  // Transport errors and open-loop drops, non-200 answers, and 200s that carry GraphQL errors.
  return r.errors + r.non200 + r.graphqlErrors;
}

/** Least-squares slope of y over x. */
function slope(points: readonly { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  return sxx === 0 ? NaN : points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx;
}

const round = (n: number, digits = 1): number => (Number.isFinite(n) ? Math.round(n * 10 ** digits) / 10 ** digits : n);

function printRow(r: IntervalRow): void {
  console.log(
    `[${String(r.index).padStart(3)}] t=${String(Math.round(r.endSeconds)).padStart(5)}s  req ${String(r.requests).padStart(6)}  err ${(r.errorRate * 100).toFixed(2)}% (store ${r.storeErrors})  ` +
      `p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  sub updates ${r.subscriptionUpdates} (min/subscriber ${r.subscriptionUpdatesMin})  ` +
      `gateway RSS ${r.gatewayRssMiB} MiB heap ${r.gatewayHeapUsedMiB} MiB (floor ${r.gatewayHeapFloorMiB})  materializer RSS ${r.materializerRssMiB} MiB`,
  );
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  registryFile = longTtlRegistryFile('soak');
  const env = { REGISTRY_FILE: registryFile };

  log('starting Kafka and Redis');
  const [broker, redis] = await Promise.all([KafkaBroker.start(), RedisProcess.start()]);
  started.broker = broker;
  started.redis = redis;
  const brokers = broker.brokers.join(',');
  const registry = loadRegistry(registryFile);

  log('loading the data set', dataSet);
  const loader = spawn('store/load-cli.js', ['--demo', '--users', String(dataSet.users), '--items', String(dataSet.items), '--merchants', String(dataSet.merchants)], { ...env, REDIS_URL: redis.url });
  const loadCode = await exited(loader);
  started.processes.delete(loader);
  if (loadCode !== 0) throw new Error(`the data load failed (exit ${loadCode}):\n${loader.output.slice(-2000)}`);

  const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'soak-producer' });
  started.logs.add(producer);
  await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
  const materializer = spawn('materializer/main.js', [], { ...env, KAFKA_BROKERS: brokers, REDIS_URL: redis.url });
  const port = await freePort();
  const gateway = spawn('gateway/main.js', [], {
    ...env, PORT: String(port), REDIS_URL: redis.url, KAFKA_BROKERS: brokers, FAST_PATH: 'true',
  });
  const base = `http://127.0.0.1:${port}`;
  assertLoopback(base);
  await waitUntilReady(`${base}/readyz`, gateway, 90_000);
  log('gateway ready', { url: `${base}/graphql`, auth: apiKey ? 'x-api-key from SOAK_API_KEY' : 'none' });

  const subscribers = subscribe(`ws://127.0.0.1:${port}/graphql`);
  const events = startDemoEvents(producer, registry, eventsPerSecond, { seed: 42 });
  demoEvents = events;
  await events.started;
  // Until a change reaches the subscribers: the materializer may still be joining its group.
  const firstUpdateBy = Date.now() + 90_000;
  let warmUpdates = 0;
  while (warmUpdates === 0) {
    if (subscribers.errors.length > 0) throw new Error(`subscribers failed: ${subscribers.errors.slice(0, 5).join('; ')}`);
    if (Date.now() > firstUpdateBy) throw new Error(`no change reached a subscriber within 90 s\n${gateway.output.slice(-2000)}\n${materializer.output.slice(-2000)}`);
    await sleep(500);
    warmUpdates += subscribers.take().reduce((a, b) => a + b, 0);
  }
  log('pipeline warm; soaking', { minutes, intervalS, intervals, warmupIntervals, rate, adhocRate, subscribers: subscriberCount, eventsPerSecond });

  const target = { url: `${base}/graphql` };
  const persisted = persistedMix(1);
  const adhoc = adhocQueries(2);
  const all = { persisted: newHistogram(), adhoc: newHistogram() };
  const rows: IntervalRow[] = [];
  const t0 = clock();
  let heapFloor = Infinity;
  let sampleFailures = 0;
  const sampler = setInterval(() => {
    gatewayMetrics(base).then(
      (m) => void (heapFloor = Math.min(heapFloor, m('nodejs_heap_size_used_bytes'))),
      () => void sampleFailures++,
    );
  }, 5000);
  let storeErrorsBefore = (await gatewayMetrics(base))('feature_store_errors_total') || 0;
  for (let i = 1; i <= intervals; i++) {
    heapFloor = Infinity;
    const [p, a] = await Promise.all([
      openLoop(target, persisted, { rate, maxConnections: 32, maxOutstanding: 2000, warmupMs: 0, durationMs: intervalS * 1000, headers: authHeaders }),
      openLoop(target, adhoc, { rate: adhocRate, maxConnections: 4, maxOutstanding: 200, warmupMs: 0, durationMs: intervalS * 1000, headers: authHeaders }),
    ]);
    all.persisted.add(p.histogram);
    all.adhoc.add(a.histogram);
    const both = newHistogram();
    both.add(p.histogram);
    both.add(a.histogram);
    const m = await gatewayMetrics(base);
    const updates = subscribers.take();
    const requests = p.requests + a.requests + (p.dropped ?? 0) + (a.dropped ?? 0);
    const errors = failures(p) + failures(a);
    const bothP = percentiles(both);
    const storeErrors = m('feature_store_errors_total') || 0;
    const heapUsed = m('nodejs_heap_size_used_bytes');
    const row: IntervalRow = {
      index: i,
      endSeconds: (clock() - t0) / 1000,
      requests,
      errors,
      errorRate: requests > 0 ? errors / requests : 0,
      errorKinds: { transport: p.errors + a.errors, non200: p.non200 + a.non200, graphql: p.graphqlErrors + a.graphqlErrors },
      storeErrors: storeErrors - storeErrorsBefore,
      persisted: { ...percentiles(p.histogram), requests: p.requests, errors: failures(p) },
      adhoc: { ...percentiles(a.histogram), requests: a.requests, errors: failures(a) },
      p50: bothP.p50,
      p99: bothP.p99,
      subscriptionUpdates: updates.reduce((s, n) => s + n, 0),
      subscriptionUpdatesMin: Math.min(...updates),
      subscriptionEventsDropped: m('subscription_events_dropped_total'),
      gatewayRssMiB: round(m('process_resident_memory_bytes') / MiB),
      gatewayHeapUsedMiB: round(heapUsed / MiB),
      gatewayHeapFloorMiB: round(Math.min(heapFloor, heapUsed) / MiB),
      materializerRssMiB: round(rssOf(materializer.child.pid) / MiB),
    };
    storeErrorsBefore = storeErrors;
    rows.push(row);
    printRow(row);
    for (const [name, proc] of [['gateway', gateway], ['materializer', materializer]] as const) {
      if (proc.child.exitCode !== null) throw new Error(`the ${name} exited (${proc.child.exitCode}) during the soak:\n${proc.output.slice(-2000)}`);
    }
  }

  clearInterval(sampler);
  const measured = rows.slice(warmupIntervals);
  const first = measured[0]!;
  const last = measured[measured.length - 1]!;
  const perMinute = (key: 'gatewayRssMiB' | 'gatewayHeapFloorMiB' | 'materializerRssMiB') => round(slope(measured.map((r) => ({ x: r.endSeconds / 60, y: r[key] }))), 2);
  const totalRequests = rows.reduce((s, r) => s + r.requests, 0);
  const totalErrors = rows.reduce((s, r) => s + r.errors, 0);
  const summary = {
    requests: totalRequests,
    errors: totalErrors,
    errorRate: totalRequests > 0 ? totalErrors / totalRequests : 0,
    persisted: { ...percentiles(all.persisted), requests: all.persisted.totalCount },
    adhoc: { ...percentiles(all.adhoc), requests: all.adhoc.totalCount },
    errorKinds: {
      transport: rows.reduce((n, r) => n + r.errorKinds.transport, 0),
      non200: rows.reduce((n, r) => n + r.errorKinds.non200, 0),
      graphql: rows.reduce((n, r) => n + r.errorKinds.graphql, 0),
    },
    storeErrors: rows.reduce((n, r) => n + r.storeErrors, 0),
    /** The first interval after the warm-up, and the last. */
    p99FirstMs: first.p99,
    p99LastMs: last.p99,
    p99Intervals: { first: first.index, last: last.index },
    memorySampleFailures: sampleFailures,
    subscriptionUpdates: rows.reduce((s, r) => s + r.subscriptionUpdates, 0),
    intervalsWithASilentSubscriber: rows.filter((r) => r.subscriptionUpdatesMin === 0).length,
    subscriberErrors: subscribers.errors.slice(0, 20),
    memory: {
      afterWarmup: `interval ${first.index} to ${last.index}`,
      gatewayRssGrowthMiB: round(last.gatewayRssMiB - first.gatewayRssMiB),
      gatewayRssSlopeMiBPerMinute: perMinute('gatewayRssMiB'),
      gatewayHeapFloorGrowthMiB: round(last.gatewayHeapFloorMiB - first.gatewayHeapFloorMiB),
      gatewayHeapFloorSlopeMiBPerMinute: perMinute('gatewayHeapFloorMiB'),
      materializerRssGrowthMiB: round(last.materializerRssMiB - first.materializerRssMiB),
      materializerRssSlopeMiBPerMinute: perMinute('materializerRssMiB'),
    },
  };
  const result = {
    startedAt,
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', node: process.version, memoryGiB: Math.round(os.totalmem() / 2 ** 30) },
    settings: { minutes, intervalS, warmupIntervals, rate, adhocRate, subscribers: subscriberCount, eventsPerSecond, auth: Boolean(apiKey), changeFeed: 'Kafka + materializer process' },
    summary,
    intervals: rows,
  };
  fs.mkdirSync(args.out!, { recursive: true });
  const json = path.join(args.out!, 'soak.json');
  const md = path.join(args.out!, 'soak.md');
  fs.writeFileSync(json, JSON.stringify(result, null, 2) + '\n');
  fs.writeFileSync(md, markdown(result));
  console.log('\n' + markdown(result));
  log('wrote results', { json, md });
}

function markdown(result: { startedAt: string; machine: Record<string, unknown>; settings: Record<string, unknown>; summary: any; intervals: IntervalRow[] }): string {
  const s = result.summary;
  const m = s.memory;
  const pct = (n: number) => `${(n * 100).toFixed(3)}%`;
  return [
    `# Soak: ${minutes} min, started ${result.startedAt}`,
    '',
    `${result.machine.cpus} cores (${result.machine.model}), Node ${result.machine.node}. Load: persisted W1–W3 at ${rate} req/s and ad-hoc analyst queries ` +
      `at ${adhocRate} req/s (both open loop), ${subscriberCount} graphql-ws subscribers, ${eventsPerSecond} raw events/s through Kafka and the materializer. ` +
      `Memory after ${warmupIntervals} warm-up interval(s) of ${intervalS} s.`,
    '',
    '| summary | value |',
    '|---|---:|',
    `| requests | ${s.requests} |`,
    `| error rate | ${pct(s.errorRate)} (${s.errors}: ${s.errorKinds.transport} without an answer or dropped, ${s.errorKinds.non200} non-200, ${s.errorKinds.graphql} with GraphQL errors; store errors seen by the gateway: ${s.storeErrors}) |`,
    `| persisted p50 / p99 ms | ${s.persisted.p50} / ${s.persisted.p99} |`,
    `| ad-hoc p50 / p99 ms | ${s.adhoc.p50} / ${s.adhoc.p99} |`,
    `| p99 ms, interval ${s.p99Intervals.first} (first after warm-up) → ${s.p99Intervals.last} (last) | ${s.p99FirstMs} → ${s.p99LastMs} |`,
    `| subscription updates | ${s.subscriptionUpdates} (intervals with a subscriber that got none: ${s.intervalsWithASilentSubscriber}) |`,
    `| gateway RSS growth, MiB (slope MiB/min) | ${m.gatewayRssGrowthMiB} (${m.gatewayRssSlopeMiBPerMinute}) |`,
    `| gateway heap floor growth, MiB (slope MiB/min) | ${m.gatewayHeapFloorGrowthMiB} (${m.gatewayHeapFloorSlopeMiBPerMinute}) |`,
    `| materializer RSS growth, MiB (slope MiB/min) | ${m.materializerRssGrowthMiB} (${m.materializerRssSlopeMiBPerMinute}) |`,
    '',
    '| # | end s | requests | error rate | p50 ms | p99 ms | sub updates | gateway RSS MiB | gateway heap MiB (floor) | materializer RSS MiB |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...result.intervals.map((r) =>
      `| ${r.index}${r.index <= warmupIntervals ? ' (warm-up)' : ''} | ${Math.round(r.endSeconds)} | ${r.requests} | ${pct(r.errorRate)} | ${r.p50} | ${r.p99} | ${r.subscriptionUpdates} | ${r.gatewayRssMiB} | ${r.gatewayHeapUsedMiB} (${r.gatewayHeapFloorMiB}) | ${r.materializerRssMiB} |`),
    '',
    ...(s.subscriberErrors.length > 0 ? ['Subscriber errors:', '', ...s.subscriberErrors.map((e: string) => `- ${e}`), ''] : []),
  ].join('\n');
}

runBounded({ name: 'soak', boundMs: (minutes + 5) * 60_000, boundMessage: `soak exceeded its bound of ${minutes} + 5 minutes`, main, started });
