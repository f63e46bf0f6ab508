import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import * as hdr from 'hdr-histogram-js';
import { fromRoot } from '../runtime/paths.js';
import { readManifest } from '../schema/manifest.js';
import { RedisCluster } from '../test/support/redis-cluster.js';
import { freePort, RedisProcess } from '../test/support/redis-server.js';
import { comparisonTable, markdownTable, svgChart, type BenchResult, type SystemFigures } from './report.js';
import { closedLoop, newHistogram, openLoop, percentiles, type RunResult } from './runner.js';
import { bodySource, dataSet, longTtlRegistryFile, workloads, type RequestStyle, type Workload } from './workloads.js';

/**
 * `npm run bench`: the standard benchmark. One Redis, one data set (100k
 * users, 10k items, 1k merchants, loaded by the project's own load command),
 * systems running side by side:
 *
 *   feature-gateway          this project (co-located gateway on Redis, persisted queries)
 *   feature-gateway-x2       the same with two workers
 *   feature-gateway-cluster  the same gateway on a Redis Cluster of 3 masters and 3 replicas,
 *                            loaded with the same data (W1 and W2: --cluster-workloads)
 *   raw                      a bare Node HTTP server: one Redis pipeline + JSON, no GraphQL
 *   stock                    @apollo/gateway over HTTP to @apollo/subgraph services, per-entity reads
 *
 * For each workload: closed-loop rounds (max throughput), then open-loop
 * rounds at half the raw baseline's max (latency). Rounds interleave the
 * systems (A B C A B C …) so a drift in machine speed hits all alike.
 * Results: loadtest/results/latest.{json,md,svg}. Loopback only; stops by itself.
 *
 * The Redis, helper and process harness come from test/support: the same
 * code that starts real servers for the integration tests.
 */
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '4' },
    warmup: { type: 'string', default: '1' },
    connections: { type: 'string', default: '32' },
    workloads: { type: 'string', default: 'W1,W2,W3' },
    systems: { type: 'string', default: 'feature-gateway,feature-gateway-x2,feature-gateway-cluster,raw,stock' },
    'cluster-workloads': { type: 'string', default: 'W1,W2' },
    out: { type: 'string', default: fromRoot('loadtest', 'results') },
  },
});
const rounds = positive('rounds');
const durationMs = positive('duration') * 1000;
const warmupMs = Number(args.warmup) * 1000;
const connections = positive('connections');
const chosenWorkloads = workloads.filter((w) => args.workloads!.split(',').includes(w.name));
const chosenSystems = args.systems!.split(',');

function positive(name: 'rounds' | 'duration' | 'connections'): number {
  const n = Number(args[name]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
  return n;
}

interface System {
  readonly name: string;
  readonly url: string;
  readonly style: RequestStyle;
  readonly processes: ChildProcess[];
  /** The workloads it runs (all when absent). */
  readonly workloads?: readonly string[];
}

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
  const manifest = readManifest();
  // Every system gets the same registry, with TTLs raised so the loaded values stay fresh.
  const registryFile = longTtlRegistryFile('bench');
  process.env.REGISTRY_FILE = registryFile;
  const redis = await RedisProcess.start();
  let cluster: RedisCluster | undefined;
  try {
    // One event time for every store loaded, so that they hold identical values.
    const eventTime = String(Date.now());
    const load = (store: Record<string, string>) => new Promise<void>((resolve, reject) => {
      const loader = node('store/load-cli.js', ['--demo', '--users', String(dataSet.users), '--items', String(dataSet.items), '--merchants', String(dataSet.merchants),
        '--event-time', eventTime], { ...store, LOG_LEVEL: 'info' });
      loader.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`load failed with exit code ${code}`))));
    });
    log('loading data set', dataSet);
    await load({ REDIS_URL: redis.url });
    if (chosenSystems.includes('feature-gateway-cluster')) {
      cluster = await RedisCluster.start({ masters: 3, replicasPerMaster: 1 });
      log('loading data set into the Redis Cluster', { nodes: cluster.seeds });
      await load({ REDIS_CLUSTER_NODES: cluster.seeds });
    }

    const systems: System[] = [];
    // feature-gateway: one process; feature-gateway-x2: two node:cluster workers on the same port.
    for (const [name, workers] of [['feature-gateway', 1], ['feature-gateway-x2', 2]] as const) {
      if (!chosenSystems.includes(name)) continue;
      const port = await freePort();
      node('gateway/main.js', [], { PORT: String(port), REDIS_URL: redis.url, WORKERS: String(workers) });
      const url = `http://127.0.0.1:${port}/graphql`;
      await waitFor(url.replace('/graphql', '/readyz'));
      systems.push({ name, url, style: 'persisted', processes: [] });
    }
    if (cluster) {
      const port = await freePort();
      node('gateway/main.js', [], { PORT: String(port), REDIS_CLUSTER_NODES: cluster.seeds });
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

    await checkSameAnswers(systems, manifest);

    const figures: SystemFigures[] = [];
    for (const workload of chosenWorkloads) {
      const op = manifest.operations.find((o) => o.name === workload.operation)!;
      const running = systems.filter((s) => !s.workloads || s.workloads.includes(workload.name));
      const closed = await interleaved(running, workload, op, (system, seed) =>
        closedLoop({ url: system.url }, bodySource(workload, op, system.style, seed), { connections, warmupMs, durationMs }));
      figures.push(...closed);
      const rawMax = closed.find((f) => f.system === 'raw')?.throughput ?? closed[0]!.throughput;
      const rate = Math.max(10, Math.round(rawMax / 2));
      const open = await interleaved(running, workload, op, (system, seed) =>
        openLoop({ url: system.url }, bodySource(workload, op, system.style, seed), {
          rate, maxConnections: 256, maxOutstanding: Math.max(100, Math.min(rate, 1000)), warmupMs, durationMs,
        }));
      figures.push(...open);
    }

    const result: BenchResult = {
      startedAt: new Date().toISOString(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', node: process.version, memoryGiB: Math.round(os.totalmem() / 2 ** 30) },
      settings: { rounds, durationMs, warmupMs, connections, dataSet, systems: systems.map((s) => s.name), workloads: chosenWorkloads.map((w) => `${w.name}: ${w.description}`) },
      figures,
    };
    fs.mkdirSync(args.out!, { recursive: true });
    const table = markdownTable(result, 'feature-gateway', ['raw', 'stock'].filter((b) => systems.some((s) => s.name === b))) +
      (cluster ? '\n' + comparisonTable(result, 'feature-gateway-cluster', 'feature-gateway', 'Redis Cluster (3 masters, 3 replicas) against one Redis node, same gateway and data') : '');
    fs.writeFileSync(path.join(args.out!, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    fs.writeFileSync(path.join(args.out!, 'latest.md'), table);
    fs.writeFileSync(path.join(args.out!, 'latest.svg'), svgChart(result, systems.map((s) => s.name)));
    console.log(table);
    log('wrote results', { dir: args.out });
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await redis.destroy();
    await cluster?.destroy();
    fs.rmSync(registryFile, { force: true });
  }
}

/** Runs `run` for each system, round after round (A B C A B C …), and merges each system's rounds. */
async function interleaved(
  systems: readonly System[],
  workload: Workload,
  op: { name: string },
  run: (system: System, seed: number) => Promise<RunResult>,
): Promise<SystemFigures[]> {
  const merged = new Map<string, { result: RunResult; histogram: hdr.Histogram; requests: number; errors: number; non200: number; graphqlErrors: number; seconds: number }>();
  for (let round = 0; round < rounds; round++) {
    for (const system of systems) {
      // The same seed for every system in a round: the same sequence of ids.
      const result = await run(system, 1000 + round);
      log('run', { workload: workload.name, op: op.name, system: system.name, round, mode: result.mode, requests: result.requests, throughput: Math.round(result.throughput), p99: percentiles(result.histogram).p99, errors: result.errors + result.non200 });
      const m = merged.get(system.name) ?? { result, histogram: newHistogram(), requests: 0, errors: 0, non200: 0, graphqlErrors: 0, seconds: 0 };
      m.histogram.add(result.histogram);
      m.requests += result.requests;
      m.errors += result.errors;
      m.non200 += result.non200;
      m.graphqlErrors += result.graphqlErrors;
      m.seconds += result.seconds;
      merged.set(system.name, m);
    }
  }
  return systems.map((system) => {
    const m = merged.get(system.name)!;
    return {
      system: system.name,
      workload: workload.name,
      mode: m.result.mode,
      requests: m.requests,
      errors: m.errors,
      non200: m.non200,
      graphqlErrors: m.graphqlErrors,
      throughput: m.requests / m.seconds,
      ...(m.result.offeredRate !== undefined ? { offeredRate: m.result.offeredRate } : {}),
      ...percentiles(m.histogram),
    };
  });
}

/** Every system must answer the same request with the same data, or the comparison means nothing. */
async function checkSameAnswers(systems: readonly System[], manifest: ReturnType<typeof readManifest>): Promise<void> {
  for (const workload of chosenWorkloads) {
    const op = manifest.operations.find((o) => o.name === workload.operation)!;
    const answers = await Promise.all(systems.map(async (s) => {
      const body = bodySource(workload, op, s.style, 7)();
      const r = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { system: s.name, json: (await r.json()) as unknown };
    }));
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
