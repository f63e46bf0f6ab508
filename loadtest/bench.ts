import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import * as hdr from 'hdr-histogram-js';
import { fromRoot } from '../runtime/paths.js';
import { KafkaLog } from '../eventlog/kafka-log.js';
import { readManifest, type PersistedOperation } from '../schema/manifest.js';
import { loadRegistry } from '../schema/registry.js';
import { KafkaBroker } from '../test/support/kafka-broker.js';
import { RedisCluster } from '../test/support/redis-cluster.js';
import { freePort } from '../test/support/ports.js';
import { RedisProcess } from '../test/support/redis-server.js';
import { checkFeastAgrees, feastBodies, feastWorkloads, startFeast, type FeastBaseline } from './baselines/feast.js';
import { batchSizeTable, checkDoorsAgree, runBatchSizes, type BatchFigure } from './batch-sizes.js';
import { startChangeStream } from './change-stream.js';
import { comparisonTable, markdownTable, svgChart, type BenchResult, type ChangeStreamSummary, type HotTierFigures, type SystemFigures } from './report.js';
import { closedLoop, newHistogram, percentiles, type BodySource, type RunResult } from './runner.js';
import { vegetaOpenLoop, type OpenLoopResult } from './vegeta.js';
import { bodySource, dataSet, longTtlRegistryFile, userZipf, workloads, type RequestStyle, type Workload } from './workloads.js';

/**
 * `npm run bench`: the standard benchmark. One Redis, one data set (100k
 * users, 10k items, 1k merchants, loaded by the project's own load command),
 * one Kafka broker (KRaft) and one materializer process writing that Redis
 * (the change stream of W4), systems running side by side:
 *
 *   feature-gateway          this project (co-located gateway on Redis, persisted queries), hot tier off
 *   feature-gateway-hot      the same with the in-process hot tier on (HOT_TIER_MAX_BYTES), kept
 *                            coherent by the feature-updates feed; its hit ratio from /metrics
 *   feature-gateway-x2       the same with two workers
 *   feature-gateway-cluster  the same gateway on a Redis Cluster of 3 masters and 3 replicas,
 *                            loaded with the same data (W1 and W2: --cluster-workloads)
 *   raw                      a bare Node HTTP server: one Redis pipeline + JSON, no GraphQL
 *   stock                    @apollo/gateway over HTTP to @apollo/subgraph services, per-entity reads
 *   feast                    Feast's Python feature server (`feast serve`, --feast-workers worker
 *                            processes) on the same Redis, the same rows written by Feast's own
 *                            writer in Feast's key layout; W1 and W2 at /get-online-features
 *                            (loadtest/baselines/feast.ts). A machine without Python 3 skips it with a line.
 *
 * Every gateway gets KAFKA_BROKERS, so each tails `feature-updates` as in production.
 *
 * For each workload: closed-loop rounds (max throughput), then open-loop
 * rounds at half the raw baseline's max (latency), offered by vegeta, a
 * separate native process (loadtest/vegeta.ts). Rounds interleave the
 * systems (A B C A B C …) so a drift in machine speed hits all alike. W4
 * (skewed reads) runs last, with a background stream of click events
 * (`--change-rate`/s, Zipf users) through Kafka and the materializer during
 * all of its rounds, for the systems of `--w4-systems`.
 * Results: loadtest/results/latest.{json,md,svg}. Loopback only; stops by itself.
 *
 * The Redis, Redis Cluster and Kafka broker harness come from test/support:
 * the same code that starts real servers for the integration tests (too big
 * to move; loadtest/freshness.ts does the same).
 */
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    connections: { type: 'string', default: '32' },
    workloads: { type: 'string', default: 'W1,W2,W3,W4' },
    systems: { type: 'string', default: 'feature-gateway,feature-gateway-hot,feature-gateway-x2,feature-gateway-cluster,raw,stock,feast' },
    // Feast's uvicorn worker processes: one per core, as Feast's docs advise for production.
    'feast-workers': { type: 'string', default: String(os.cpus().length) },
    'cluster-workloads': { type: 'string', default: 'W1,W2' },
    // W4 measures the hot tier under invalidation: the one-process gateway with it on and off, against raw.
    'w4-systems': { type: 'string', default: 'feature-gateway,feature-gateway-hot,raw' },
    'change-rate': { type: 'string', default: '1000' },
    // The batch-size table (JSON vs Arrow vs the Feast endpoint on feature-gateway): "off" skips it.
    'batch-sizes': { type: 'string', default: 'on' },
    'batch-rounds': { type: 'string', default: '2' },
    out: { type: 'string', default: fromRoot('loadtest', 'results') },
  },
});
const rounds = positive('rounds');
const durationMs = positive('duration') * 1000;
const warmupMs = Number(args.warmup) * 1000;
const connections = positive('connections');
// In `workloads` order: W4, whose change stream alters the stored values, always runs last.
const chosenWorkloads = workloads.filter((w) => args.workloads!.split(',').includes(w.name));
const chosenSystems = args.systems!.split(',');
const w4Systems = args['w4-systems']!.split(',');
const changeRate = positive('change-rate');
const feastWorkers = positive('feast-workers');
/** The hot tier's size for feature-gateway-hot: 256 MiB holds the whole data set. */
const hotTierBytes = 268_435_456;

function positive(name: 'rounds' | 'duration' | 'connections' | 'change-rate' | 'feast-workers' | 'batch-rounds'): number {
  const n = Number(args[name]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
  return n;
}

interface System {
  readonly name: string;
  readonly url: string;
  readonly style: RequestStyle;
  readonly processes: ChildProcess[];
  /** The workloads it runs (all when absent; W4 only for `--w4-systems`). */
  readonly workloads?: readonly string[];
  /** Its own request bodies for a workload (default: `bodySource` in its `style`). */
  readonly bodies?: (workload: Workload, operation: PersistedOperation, seed: number) => BodySource;
  /** Headers sent with every request of the open loop (closed loop: content-type only). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Its Prometheus endpoint, scraped around each measured run for the hot tier's lookups. */
  readonly hotTierMetricsUrl?: string;
}

/** What a system can answer (its own list), and of that what it runs in this bench (W4: `--w4-systems`). */
const canRun = (s: System, w: Workload): boolean => !s.workloads || s.workloads.includes(w.name);
const runsWorkload = (s: System, w: Workload): boolean => canRun(s, w) && (w.name !== 'W4' || w4Systems.includes(s.name));
const bodiesOf = (s: System, w: Workload, op: PersistedOperation, seed: number): BodySource =>
  s.bodies ? s.bodies(w, op, seed) : bodySource(w, op, s.style, seed);

const children: ChildProcess[] = [];
function node(script: string, argv: string[], env: Record<string, string> = {}): ChildProcess {
  const nodeArgs = script === 'gateway/main.js' && process.env.PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROFILE_DIR}`] : [];
  const child = spawn(process.execPath, [...nodeArgs, fromRoot('dist', script), ...argv], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(child);
  return child;
}

async function waitFor(url: string, body?: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url, body ? { method: 'POST', headers: { 'content-type': 'application/json' }, body } : {});
      if (r.status === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not come up within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function log(msg: string, extra: Record<string, unknown> = {}): void {
  console.error(JSON.stringify({ time: new Date().toISOString(), msg, ...extra }));
}

async function main(): Promise<void> {
  const benchStart = performance.now();
  const manifest = readManifest();
  // Every system gets the same registry, with TTLs raised so the loaded values stay fresh.
  const registryFile = longTtlRegistryFile('bench');
  process.env.REGISTRY_FILE = registryFile;
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-bench-'));
  const [redis, broker] = await Promise.all([RedisProcess.start(), KafkaBroker.start()]);
  let cluster: RedisCluster | undefined;
  const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'bench-change-stream' });
  try {
    const kafka = { KAFKA_BROKERS: broker.brokers.join(',') };
    await producer.createTopics(loadRegistry(registryFile).events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
    // The materializer joins its group now, so it is consuming when W4's stream starts.
    const materializerPort = await freePort();
    node('materializer/main.js', ['--port', String(materializerPort)], { REDIS_URL: redis.url, ...kafka });
    const materializerMetrics = `http://127.0.0.1:${materializerPort}/metrics`;
    await waitFor(materializerMetrics.replace('/metrics', '/healthz'));
    // One event time for every store loaded, so that they hold identical values.
    const eventTime = String(Date.now());
    const load = (store: Record<string, string>) => new Promise<void>((resolve, reject) => {
      const loader = node('store/load-cli.js', ['--demo', '--users', String(dataSet.users), '--items', String(dataSet.items), '--merchants', String(dataSet.merchants),
        '--event-time', eventTime], { ...store, LOG_LEVEL: 'info' });
      loader.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`load failed with exit code ${code}`))));
    });
    log('loading data set', dataSet);
    // Feast loads the same rows through its own writer meanwhile (Python, another core).
    const feastStart = chosenSystems.includes('feast')
      ? startFeast({ registry: loadRegistry(registryFile), redisUrl: redis.url, counts: { user: dataSet.users, item: dataSet.items, merchant: dataSet.merchants },
        eventTimeMs: Number(eventTime), port: await freePort(), workers: feastWorkers, dir: tmpDir, log })
      : undefined;
    await load({ REDIS_URL: redis.url });
    const feastStarted = await feastStart;
    if (feastStarted && 'process' in feastStarted) children.push(feastStarted.process);
    if (chosenSystems.includes('feature-gateway-cluster')) {
      cluster = await RedisCluster.start({ masters: 3, replicasPerMaster: 1 });
      log('loading data set into the Redis Cluster', { nodes: cluster.seeds });
      await load({ REDIS_CLUSTER_NODES: cluster.seeds });
    }

    const systems: System[] = [];
    // feature-gateway: one process, hot tier off; -hot: the same with it on; -x2: two node:cluster workers on the same port.
    for (const [name, workers, hotBytes] of [['feature-gateway', 1, 0], ['feature-gateway-hot', 1, hotTierBytes], ['feature-gateway-x2', 2, 0]] as const) {
      if (!chosenSystems.includes(name)) continue;
      const port = await freePort();
      const hot: Record<string, string> = hotBytes > 0 ? { HOT_TIER_MAX_BYTES: String(hotBytes), HOT_TIER_WARM_UP_FILE: warmUpFile(tmpDir), HOT_TIER_WARM_UP_KEYS: String(10_000_000) } : {};
      node('gateway/main.js', [], { PORT: String(port), REDIS_URL: redis.url, WORKERS: String(workers), ...hot, ...kafka });
      const url = `http://127.0.0.1:${port}/graphql`;
      await waitFor(url.replace('/graphql', '/readyz'));
      if (hotBytes > 0) {
        const text = await (await fetch(url.replace('/graphql', '/metrics'))).text();
        log('hot tier warmed up', { system: name, bytes: sumMetric(text, /^feature_hot_tier_bytes\{([^}]*)\} (\S+)$/gm, () => true) });
      }
      systems.push({ name, url, style: 'persisted', processes: [], ...(hotBytes > 0 ? { hotTierMetricsUrl: url.replace('/graphql', '/metrics') } : {}) });
    }
    if (cluster) {
      const port = await freePort();
      // The feed describes the single Redis the materializer writes; this system does not run W4.
      node('gateway/main.js', [], { PORT: String(port), REDIS_CLUSTER_NODES: cluster.seeds, ...kafka });
      const url = `http://127.0.0.1:${port}/graphql`;
      await waitFor(url.replace('/graphql', '/readyz'));
      systems.push({ name: 'feature-gateway-cluster', url, style: 'persisted', processes: [], workloads: args['cluster-workloads']!.split(',') });
    }
    if (chosenSystems.includes('raw')) {
      const port = await freePort();
      node('loadtest/baselines/raw-server.js', ['--port', String(port), '--redis', redis.url]);
      const url = `http://127.0.0.1:${port}/graphql`;
      await waitFor(`http://127.0.0.1:${port}/healthz`);
      systems.push({ name: 'raw', url, style: 'persisted', processes: [] });
    }
    if (chosenSystems.includes('stock')) {
      const subgraphs: string[] = [];
      for (const entity of ['user', 'item', 'merchant']) {
        const port = await freePort();
        node('loadtest/baselines/stock-subgraph.js', ['--entity', entity, '--port', String(port), '--redis', redis.url]);
        await waitFor(`http://127.0.0.1:${port}/`, '{"query":"{ __typename }"}');
        subgraphs.push(`${entity}=http://127.0.0.1:${port}/`);
      }
      const port = await freePort();
      node('loadtest/baselines/stock-gateway.js', ['--port', String(port), '--subgraphs', subgraphs.join(',')]);
      const url = `http://127.0.0.1:${port}/`;
      await waitFor(url, '{"query":"{ __typename }"}');
      systems.push({ name: 'stock', url, style: 'text', processes: [] });
    }
    let feast: FeastBaseline | undefined;
    if (feastStarted && 'skipped' in feastStarted) log('feast baseline skipped', { reason: feastStarted.skipped });
    else if (feastStarted) {
      feast = feastStarted;
      await waitFor(feast.url.replace('/get-online-features', '/health'));
      log('feast serving', { version: feast.version, workers: feast.workers });
      const feastRegistry = loadRegistry(registryFile);
      systems.push({ name: 'feast', url: feast.url, style: 'persisted', processes: [], workloads: feastWorkloads, bodies: (w, _op, seed) => feastBodies(w, seed, feastRegistry) });
    }

    // Every workload is checked here, W4 included: its answers change once its stream runs (W4
    // runs last, see below), but here no event has been produced yet, so all must still agree.
    await checkSameAnswers(systems, manifest);

    const figures: SystemFigures[] = [];
    let changeStream: ChangeStreamSummary | undefined;
    for (const workload of chosenWorkloads) {
      const op = manifest.operations.find((o) => o.name === workload.operation)!;
      const running = systems.filter((s) => runsWorkload(s, workload));
      if (running.length === 0) continue;
      const stream = workload.name === 'W4' ? await startW4Stream(producer, materializerMetrics) : undefined;
      const closed = await interleaved(running, workload, op, (system, seed) =>
        closedLoop({ url: system.url }, bodiesOf(system, workload, op, seed), { connections, warmupMs, durationMs }));
      figures.push(...closed);
      const rawMax = closed.find((f) => f.system === 'raw')?.throughput ?? closed[0]!.throughput;
      const rate = Math.max(10, Math.round(rawMax / 2));
      const open = await interleaved(running, workload, op, (system, seed) =>
        vegetaOpenLoop({ url: system.url }, bodiesOf(system, workload, op, seed), {
          rate, warmupMs, durationMs, maxWorkers: Math.max(100, Math.min(rate, 1000)), maxConnections: 256,
          dir: tmpDir, track: (child) => void children.push(child), ...(system.headers ? { headers: system.headers } : {}),
        }));
      figures.push(...open);
      if (stream) changeStream = await stream.stop();
    }

    // After W4: its stream has stopped, and the table reads values it no longer changes.
    const gateway = systems.find((s) => s.name === 'feature-gateway');
    let batchSizes: BatchFigure[] | undefined;
    if (args['batch-sizes'] !== 'off' && gateway) {
      const origin = new URL(gateway.url).origin;
      await checkDoorsAgree(origin, manifest.operations);
      log('JSON, Arrow and the Feast endpoint give the same values', { system: gateway.name });
      batchSizes = await runBatchSizes(origin, manifest.operations, { rounds: positive('batch-rounds'), connections, warmupMs, durationMs, log });
    }

    const durationSeconds = Math.round((performance.now() - benchStart) / 1000);
    const result: BenchResult = {
      startedAt: new Date().toISOString(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', node: process.version, memoryGiB: Math.round(os.totalmem() / 2 ** 30) },
      settings: {
        rounds, durationMs, warmupMs, connections, dataSet, systems: systems.map((s) => s.name), workloads: chosenWorkloads.map((w) => `${w.name}: ${w.description}`),
        w4Systems: systems.filter((s) => w4Systems.includes(s.name)).map((s) => s.name), changeRate, hotTierBytes, openLoop: 'vegeta v12.13.0',
        ...(feast ? { feast: { version: feast.version, workers: feast.workers, server: 'feast serve (uvicorn)', onlineStore: 'redis, the same server' } } : {}),
      },
      figures,
      ...(changeStream ? { changeStream } : {}),
      ...(batchSizes ? { batchSizes } : {}),
      durationSeconds,
    };
    fs.mkdirSync(args.out!, { recursive: true });
    const subjects = ['feature-gateway', 'feature-gateway-hot'].filter((b) => systems.some((s) => s.name === b));
    const table = markdownTable(result, subjects, ['raw', 'stock', 'feast'].filter((b) => systems.some((s) => s.name === b))) +
      (cluster ? '\n' + comparisonTable(result, 'feature-gateway-cluster', 'feature-gateway', 'Redis Cluster (3 masters, 3 replicas) against one Redis node, same gateway and data') : '') +
      (batchSizes ? '\n' + batchSizeTable(batchSizes) : '');
    fs.writeFileSync(path.join(args.out!, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    fs.writeFileSync(path.join(args.out!, 'latest.md'), table);
    fs.writeFileSync(path.join(args.out!, 'latest.svg'), svgChart(result, systems.map((s) => s.name)));
    console.log(table);
    log('wrote results', { dir: args.out, durationSeconds });
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await producer.close().catch(() => undefined);
    await broker.destroy();
    await redis.destroy();
    await cluster?.destroy();
    fs.rmSync(registryFile, { force: true });
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

/**
 * feature-gateway-hot starts as a gateway restarted after a long run would: with the warm-up file
 * its predecessor saved at shutdown (HOT_TIER_WARM_UP_FILE), here every key W1–W3 read (the
 * active versions of clickStats, profile, itemStats and riskStats for the whole data set: 211k
 * values, which fit its 256 MiB). So W1–W3 measure the tier's steady state, not how fast a cold
 * one fills over a few seconds of uniform ids; W4 measures it under invalidation.
 */
function warmUpFile(dir: string): string {
  const file = path.join(dir, 'hot-tier-warm-up.json');
  const registry = loadRegistry(process.env.REGISTRY_FILE);
  const counts: Record<string, number> = { user: dataSet.users, item: dataSet.items, merchant: dataSet.merchants };
  const keys: string[] = [];
  for (const entity of registry.entities) {
    for (const view of entity.views) {
      if (!['clickStats', 'profile', 'itemStats', 'riskStats'].includes(view.name)) continue;
      for (let id = 1; id <= counts[entity.name]!; id++) keys.push(`${view.name}:v${view.activeVersion}:${id}`);
    }
  }
  fs.writeFileSync(file, JSON.stringify({ version: 1, keys }) + '\n');
  return file;
}

/**
 * W4's background stream: `--change-rate` click events/s for Zipf-drawn users (the same law as
 * W4's reads, another seed), from a few seconds before its first round until after its last, so
 * every system's W4 rounds run under it alike. `stop()` reports the rate achieved and what the
 * materializer applied meanwhile (its /metrics).
 */
async function startW4Stream(producer: KafkaLog, materializerMetrics: string): Promise<{ stop(): Promise<ChangeStreamSummary> }> {
  const applied = async (): Promise<number | null> => {
    const text = await (await fetch(materializerMetrics)).text();
    return sumMetric(text, /^materializer_events_total\{([^}]*)\} (\S+)$/gm, (labels) => /view="clickStats[^"]*"/.test(labels) && labels.includes('outcome="applied"'));
  };
  const stream = startChangeStream(producer, { perSecond: changeRate, users: userZipf, items: dataSet.items, seed: 4242 });
  // Warm: the first events reach the materializer and the feed before anything is measured.
  await new Promise((r) => setTimeout(r, 3000));
  const applied0 = await applied();
  const t0 = performance.now();
  log('W4 change stream running', { targetRate: changeRate, produced: stream.produced(), appliedSoFar: applied0 });
  return {
    async stop() {
      const figures = await stream.stop();
      const applied1 = await applied();
      const seconds = (performance.now() - t0) / 1000;
      const summary = { ...figures, appliedPerSecond: applied0 === null || applied1 === null ? null : (applied1 - applied0) / seconds };
      log('W4 change stream stopped', { ...summary });
      return summary;
    },
  };
}

/** The sum of the samples of a Prometheus text exposition whose labels pass `keep`; null when none matched. */
function sumMetric(text: string, line: RegExp, keep: (labels: string) => boolean): number | null {
  let sum: number | null = null;
  for (const m of text.matchAll(line)) if (keep(m[1]!)) sum = (sum ?? 0) + Number(m[2]);
  return sum;
}

/** The hot tier's lookups by outcome so far, from the gateway's /metrics; null: no such metric (no hot tier in this build). */
async function hotTierLookups(metricsUrl: string): Promise<{ hit: number; miss: number; bypass: number } | null> {
  const text = await (await fetch(metricsUrl)).text();
  const line = /^feature_hot_tier_lookups_total\{([^}]*)\} (\S+)$/gm;
  const of = (outcome: string) => sumMetric(text, line, (labels) => labels.includes(`outcome="${outcome}"`));
  const [hit, miss, bypass] = [of('hit'), of('miss'), of('bypass')];
  if (hit === null && miss === null && bypass === null) return null;
  return { hit: hit ?? 0, miss: miss ?? 0, bypass: bypass ?? 0 };
}

/** Runs `run` for each system, round after round (A B C A B C …), and merges each system's rounds. */
async function interleaved(
  systems: readonly System[],
  workload: Workload,
  op: { name: string },
  run: (system: System, seed: number) => Promise<RunResult | OpenLoopResult>,
): Promise<SystemFigures[]> {
  interface Merged {
    result: RunResult; histogram: hdr.Histogram; requests: number; errors: number; non200: number; graphqlErrors: number; seconds: number;
    sendLagMs?: { p99: number; max: number }; hot?: { hits: number; misses: number; bypass: number; seen: boolean };
  }
  const merged = new Map<string, Merged>();
  for (let round = 0; round < rounds; round++) {
    for (const system of systems) {
      // The hot tier's lookups: a delta over this run only (the other systems' runs lie between).
      const hotBefore = system.hotTierMetricsUrl ? await hotTierLookups(system.hotTierMetricsUrl) : undefined;
      // The same seed for every system in a round: the same sequence of ids.
      const result = await run(system, 1000 + round);
      const hotAfter = system.hotTierMetricsUrl ? await hotTierLookups(system.hotTierMetricsUrl) : undefined;
      const open = 'achievedRate' in result ? result : undefined;
      log('run', {
        workload: workload.name, op: op.name, system: system.name, round, mode: result.mode, requests: result.requests, throughput: Math.round(result.throughput),
        p99: percentiles(result.histogram).p99, errors: result.errors + result.non200,
        ...(open ? { offered: open.offeredRate, achieved: Math.round(open.achievedRate), sendLagP99Ms: open.sendLagMs.p99, vegetaP99Ms: open.vegeta.latenciesMs.p99 } : {}),
        ...(hotAfter && hotBefore ? { hotHits: hotAfter.hit - hotBefore.hit, hotMisses: hotAfter.miss - hotBefore.miss, hotBypass: hotAfter.bypass - hotBefore.bypass } : {}),
      });
      const m: Merged = merged.get(system.name) ?? { result, histogram: newHistogram(), requests: 0, errors: 0, non200: 0, graphqlErrors: 0, seconds: 0 };
      m.histogram.add(result.histogram);
      m.requests += result.requests;
      m.errors += result.errors;
      m.non200 += result.non200;
      m.graphqlErrors += result.graphqlErrors;
      m.seconds += result.seconds;
      if (open) m.sendLagMs = { p99: Math.max(m.sendLagMs?.p99 ?? 0, open.sendLagMs.p99), max: Math.max(m.sendLagMs?.max ?? 0, open.sendLagMs.max) };
      if (system.hotTierMetricsUrl) {
        const h = (m.hot ??= { hits: 0, misses: 0, bypass: 0, seen: false });
        if (hotBefore && hotAfter) {
          h.seen = true;
          h.hits += hotAfter.hit - hotBefore.hit;
          h.misses += hotAfter.miss - hotBefore.miss;
          h.bypass += hotAfter.bypass - hotBefore.bypass;
        }
      }
      merged.set(system.name, m);
    }
  }
  return systems.map((system) => {
    const m = merged.get(system.name)!;
    const lookups = m.hot ? m.hot.hits + m.hot.misses + m.hot.bypass : 0;
    const hotTier: HotTierFigures | undefined = m.hot
      ? { hits: m.hot.hits, misses: m.hot.misses, bypass: m.hot.bypass, ratio: m.hot.seen && lookups > 0 ? m.hot.hits / lookups : null }
      : undefined;
    return {
      system: system.name,
      workload: workload.name,
      mode: m.result.mode,
      requests: m.requests,
      errors: m.errors,
      non200: m.non200,
      graphqlErrors: m.graphqlErrors,
      throughput: m.requests / m.seconds,
      ...(m.result.offeredRate !== undefined ? { offeredRate: m.result.offeredRate, achievedRate: m.requests / m.seconds } : {}),
      ...(m.sendLagMs ? { sendLagMs: m.sendLagMs } : {}),
      ...(hotTier ? { hotTier } : {}),
      ...percentiles(m.histogram),
    };
  });
}

/** Every system must answer the same request with the same data, or the comparison means nothing. */
async function checkSameAnswers(systems: readonly System[], manifest: ReturnType<typeof readManifest>): Promise<void> {
  for (const workload of chosenWorkloads) {
    const op = manifest.operations.find((o) => o.name === workload.operation)!;
    const answering = systems.filter((s) => canRun(s, workload));
    if (answering.length < 2) continue;
    const answers = await Promise.all(answering.map(async (s) => {
      const body = bodiesOf(s, workload, op, 7)();
      const r = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      if (r.status !== 200) throw new Error(`${workload.name}: ${s.name} answered ${r.status}: ${(await r.text()).slice(0, 500)}`);
      return { system: s.name, json: (await r.json()) as unknown };
    }));
    // Feast answers in its own shape: the same values, compared fact by fact with the gateway's.
    const feastAnswer = answers.find((a) => a.system === 'feast');
    if (feastAnswer) {
      answers.splice(answers.indexOf(feastAnswer), 1);
      checkFeastAgrees(feastAnswer.json, answers[0]!.json, loadRegistry(process.env.REGISTRY_FILE));
    }
    for (const a of answers.slice(1)) {
      if (!isDeepStrictEqual(a.json, answers[0]!.json)) {
        throw new Error(`${workload.name}: ${a.system} answers differently from ${answers[0]!.system}:\n${JSON.stringify(a.json)}\n${JSON.stringify(answers[0]!.json)}`);
      }
    }
  }
  log('all systems give the same answers', { systems: systems.map((s) => s.name) });
}

const stopAll = (): void => {
  for (const c of children) c.kill('SIGKILL');
};
process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});
// A hard bound on the whole run: the benchmark always stops by itself.
setTimeout(() => {
  log('benchmark exceeded its 15-minute bound; stopping');
  stopAll();
  process.exit(1);
}, 15 * 60_000).unref();

main().catch((error: Error) => {
  log('benchmark failed', { err: error.message });
  stopAll();
  process.exit(1);
});
