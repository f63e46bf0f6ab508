import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { fromRoot } from '../../runtime/paths.js';
import { activeVersionOf, findEntity, findView, type Registry } from '../../schema/types.js';
import { demoRows, mulberry32 } from '../../store/demo-data.js';
import type { BodySource } from '../runner.js';
import type { Workload } from '../workloads.js';

/**
 * The benchmark's Feast baseline: Feast's Python feature server (`feast serve`,
 * pinned feast[redis] in a virtual environment made by scripts/ensure-feast.sh)
 * on the same Redis as the gateway, holding the same demo rows written through
 * Feast's own writer (FeatureStore.write_to_online_store: Feast's key layout,
 * next to the gateway's keys), answering W1 and W2 at /get-online-features.
 * The Feast repository and loader are loadtest/baselines/feast/feast_baseline.py.
 */
const script = fromRoot('loadtest', 'baselines', 'feast', 'feast_baseline.py');
const run = promisify(execFile);

/** The views Feast serves (their active versions); each is keyed by its entity's Feast join key in the registry (`feastJoinKey`). */
const feastViews = ['clickStats', 'profile', 'itemStats'] as const;

/** entity name → Feast join key, for the entities of Feast's views. */
function joinKeysOf(registry: Registry): Record<string, string> {
  const keys: Record<string, string> = {};
  for (const name of feastViews) {
    const entity = findEntity(registry, findView(registry, name)!.entityName)!;
    keys[entity.name] = entity.feastJoinKey;
  }
  return keys;
}

export interface FeastBaseline {
  /** `/get-online-features` of the server. */
  readonly url: string;
  readonly workers: number;
  readonly version: string;
  readonly process: ChildProcess;
}

export interface FeastStart {
  readonly registry: Registry;
  readonly redisUrl: string;
  readonly counts: Readonly<Record<string, number>>;
  readonly eventTimeMs: number;
  readonly port: number;
  readonly workers: number;
  /** A scratch directory for the Feast repository and the rows file (the caller removes it). */
  readonly dir: string;
  readonly log: (msg: string, extra?: Record<string, unknown>) => void;
}

/**
 * Installs Feast when needed and starts it; `skipped` (with the reason) when this machine cannot
 * (no Python 3, or the install fails): the bench then runs without Feast and says so.
 */
export async function startFeast(options: FeastStart): Promise<FeastBaseline | { skipped: string }> {
  let python: string;
  try {
    const { stdout } = await run(fromRoot('scripts', 'ensure-feast.sh'), [], { maxBuffer: 1 << 20 });
    python = stdout.trim().split('\n').pop()!;
  } catch (error) {
    return { skipped: `Feast could not be installed (${(error as Error).message.split('\n')[0]})` };
  }
  const repo = path.join(options.dir, 'feast-repo');
  const redis = new URL(options.redisUrl);
  const joinKeys = JSON.stringify(joinKeysOf(options.registry));
  await run(python, [script, 'setup', '--dir', repo, '--redis', `${redis.hostname}:${redis.port}`, '--join-keys', joinKeys]);
  const rowsFile = path.join(options.dir, 'feast-rows.jsonl');
  writeRows(options, rowsFile);
  const t0 = performance.now();
  await run(python, [script, 'load', '--dir', repo, '--rows', rowsFile, '--join-keys', joinKeys], { maxBuffer: 1 << 20 });
  options.log('loaded the data set through Feast', { seconds: Math.round((performance.now() - t0) / 1000) });
  const { stdout: version } = await run(python, ['-c', 'import feast; print(feast.__version__)']);
  const feast = path.join(path.dirname(python), 'feast');
  const child = spawn(feast, ['-c', repo, 'serve', '-h', '127.0.0.1', '-p', String(options.port), '--workers', String(options.workers), '--no-access-log',
    // No worker restarts mid-run (the default recycles a worker every ~1,000 requests).
    '--max-requests', '0'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FEAST_USAGE: 'False' } });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-4000); });
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal === null) options.log('feast serve exited', { code, stderr });
  });
  return { url: `http://127.0.0.1:${options.port}/get-online-features`, workers: options.workers, version: version.trim(), process: child };
}

/** The demo rows of Feast's views, as the gateway's loader writes them (same registry, counts, event time). */
function writeRows(options: FeastStart, file: string): void {
  const out = fs.openSync(file, 'w');
  try {
    const active = new Set<string>();
    for (const e of options.registry.entities) for (const v of e.views) if ((feastViews as readonly string[]).includes(v.name)) active.add(`${v.name}:${activeVersionOf(v).version}`);
    let chunk = '';
    for (const { view, row } of demoRows(options.registry, { counts: options.counts, eventTimeMs: options.eventTimeMs, views: (v) => active.has(`${v.viewName}:${v.version}`) })) {
      chunk += JSON.stringify({ entity: view.entityName, id: row.entityId, view: view.viewName, eventTime: row.eventTimeMs, values: row.values }) + '\n';
      if (chunk.length > 1 << 20) {
        fs.writeSync(out, chunk);
        chunk = '';
      }
    }
    fs.writeSync(out, chunk);
  } finally {
    fs.closeSync(out);
  }
}

const w2Features = [
  'clickStats:clickRate', 'clickStats:clicks', 'clickStats:impressions',
  'profile:sessionLength', 'profile:isPremium', 'profile:country', 'profile:embedding',
  'itemStats:ctr', 'itemStats:price', 'itemStats:category',
];

/**
 * Feast's request for a workload: the same ids as the gateway's (same variables from the same
 * seed). W1: the users' clickRate. W2: Feast's way to fetch a ranking vector, 20 entity rows of
 * (user_id, item_id) with the features of clickStats, profile and itemStats.
 */
export function feastBodies(workload: Workload, seed: number, registry: Registry): BodySource {
  const random = mulberry32(seed);
  const keys = joinKeysOf(registry);
  if (workload.name === 'W1') {
    return () => {
      const { ids } = workload.variables(random) as { ids: string[] };
      return JSON.stringify({ entities: { [keys.user!]: ids }, features: ['clickStats:clickRate'], full_feature_names: true });
    };
  }
  if (workload.name === 'W2') {
    return () => {
      const { user, items } = workload.variables(random) as { user: string; items: string[] };
      return JSON.stringify({ entities: { [keys.user!]: items.map(() => user), [keys.item!]: items }, features: w2Features, full_feature_names: true });
    };
  }
  throw new Error(`the Feast baseline has no request for ${workload.name}`);
}

/** The workloads Feast answers. */
export const feastWorkloads = ['W1', 'W2'] as const;

/** (entity, id, view, feature) → value: what an answer says, whatever its shape. */
type Facts = Map<string, unknown>;

/** The facts of a Feast answer (full feature names); an error when a value is not PRESENT. */
function feastFacts(answer: unknown, registry: Registry): Facts {
  const a = answer as { metadata: { feature_names: string[] }; results: { values: unknown[]; statuses: string[] }[] };
  const names = a.metadata.feature_names;
  const joinKeys = joinKeysOf(registry);
  const keyColumns = new Map<string, unknown[]>();
  names.forEach((n, i) => {
    const entity = Object.keys(joinKeys).find((e) => joinKeys[e] === n);
    if (entity) keyColumns.set(entity, a.results[i]!.values);
  });
  const facts: Facts = new Map();
  names.forEach((n, i) => {
    const [view, feature] = n.split('__') as [string, string];
    if (!feature) return;
    const entity = findView(registry, view)!.entityName;
    const ids = keyColumns.get(entity)!;
    a.results[i]!.values.forEach((value, row) => {
      const status = a.results[i]!.statuses[row];
      if (status !== 'PRESENT') throw new Error(`Feast: ${n} of ${entity} ${String(ids[row])} is ${status}`);
      facts.set(`${entity}:${String(ids[row])}:${view}:${feature}`, value);
    });
  });
  return facts;
}

/** The facts of the gateway's answer to the same workload: entities carry `id`, views their features. */
function gatewayFacts(answer: unknown): Facts {
  const facts: Facts = new Map();
  const data = (answer as { data: Record<string, unknown> }).data;
  const entityOf = (field: string): string => (field.startsWith('user') ? 'user' : field.startsWith('item') ? 'item' : field.replace(/s$/, ''));
  for (const [field, value] of Object.entries(data)) {
    for (const e of (Array.isArray(value) ? value : [value]) as Record<string, unknown>[]) {
      for (const [view, features] of Object.entries(e)) {
        if (view === 'id' || features === null || typeof features !== 'object') continue;
        for (const [feature, v] of Object.entries(features as Record<string, unknown>)) {
          if (feature !== 'stale' && feature !== 'eventTime') facts.set(`${entityOf(field)}:${String(e.id)}:${view}:${feature}`, v);
        }
      }
    }
  }
  return facts;
}

/**
 * The same values, or an error naming the first difference. Feast writes Int64 as JSON numbers
 * or strings depending on the path, and doubles through Python's repr, so numbers compare as
 * numbers (a relative 1e-12: both hold the same doubles).
 */
export function checkFeastAgrees(feastAnswer: unknown, gatewayAnswer: unknown, registry: Registry): void {
  const ours = gatewayFacts(gatewayAnswer);
  const theirs = feastFacts(feastAnswer, registry);
  const same = (a: unknown, b: unknown): boolean => {
    if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
    if (typeof a === 'number' || typeof b === 'number') {
      const [x, y] = [Number(a), Number(b)];
      return x === y || Math.abs(x - y) <= 1e-12 * Math.max(Math.abs(x), Math.abs(y));
    }
    return a === b;
  };
  for (const [fact, value] of ours) {
    if (!theirs.has(fact)) throw new Error(`Feast's answer has no ${fact}`);
    if (!same(theirs.get(fact), value)) throw new Error(`Feast answers ${fact} = ${JSON.stringify(theirs.get(fact))}, the gateway ${JSON.stringify(value)}`);
  }
  if (theirs.size !== ours.size) throw new Error(`Feast answers ${theirs.size} values, the gateway ${ours.size}`);
}
