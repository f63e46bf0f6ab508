import { tableFromIPC } from 'apache-arrow';
import { mulberry32 } from '../store/demo-data.js';
import type { PersistedOperation } from '../schema/manifest.js';
import { closedLoop, percentiles, type BodySource, type RunResult } from './runner.js';
import { dataSet } from './workloads.js';

/**
 * The batch-size table of `npm run bench`: one gateway answering the same
 * requests through its three read doors, side by side in one run —
 * GraphQL JSON, the same persisted operation as an Arrow IPC stream
 * (`Accept: application/vnd.apache.arrow.stream`), and the Feast-compatible
 * `POST /get-online-features` — for UserClickRate at 1, 10, 100 and 500
 * users, and the ranking vector (one user's clickStats and profile and
 * the itemStats of N items) at 20, 100 and 500 items. The three doors run
 * interleaved per round (JSON, Arrow, Feast, JSON, …) so a drift of the
 * machine hits all alike; every request of one size and round draws the
 * same ids in all three.
 */
export type Door = 'json' | 'arrow' | 'feast';
export const doors: readonly Door[] = ['json', 'arrow', 'feast'];

export interface BatchCase {
  /** `UserClickRate` or `ranking`. */
  readonly shape: 'UserClickRate' | 'ranking';
  /** Users (UserClickRate) or items (ranking) per request: the rows of the answer. */
  readonly rows: number;
}

export const batchCases: readonly BatchCase[] = [
  ...[1, 10, 100, 500].map((rows) => ({ shape: 'UserClickRate' as const, rows })),
  ...[20, 100, 500].map((rows) => ({ shape: 'ranking' as const, rows })),
];

export const arrowMediaType = 'application/vnd.apache.arrow.stream';

/** The Feast references of what the two persisted operations select (schema/operations/*.graphql). */
const userClickRateFeatures = ['clickStats:clickRate'];
const rankingFeatures = [
  'clickStats:clickRate', 'clickStats:clicks', 'clickStats:impressions',
  'profile:sessionLength', 'profile:isPremium', 'profile:country', 'profile:embedding',
  'itemStats:ctr', 'itemStats:price', 'itemStats:category',
];

const pick = (random: () => number, n: number): string => String(1 + Math.floor(random() * n));

/** The ids of one request: a user (ranking) and the rows. */
function draw(c: BatchCase, random: () => number): { user: string; rows: string[] } {
  const user = pick(random, dataSet.users);
  const rows = c.shape === 'UserClickRate'
    ? [user, ...Array.from({ length: c.rows - 1 }, () => pick(random, dataSet.users))]
    : Array.from({ length: c.rows }, () => pick(random, dataSet.items));
  return { user, rows };
}

export interface DoorRequest {
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: BodySource;
}

/**
 * How a door asks for a case. The Feast form of the ranking vector is
 * Feast's own: one entity row per item, each with the user's join key, so
 * the user's features come once per row.
 */
export function doorRequest(door: Door, c: BatchCase, manifest: readonly PersistedOperation[], seed: number): DoorRequest {
  const random = mulberry32(seed);
  const op = manifest.find((o) => o.name === (c.shape === 'UserClickRate' ? 'UserClickRate' : 'RankingFeatures'));
  if (!op) throw new Error(`the manifest has no ${c.shape} operation`);
  if (door === 'feast') {
    const features = JSON.stringify(c.shape === 'UserClickRate' ? userClickRateFeatures : rankingFeatures);
    return {
      path: '/get-online-features',
      headers: {},
      body: () => {
        const { user, rows } = draw(c, random);
        const entities = c.shape === 'UserClickRate'
          ? { user_id: rows }
          : { user_id: rows.map(() => user), item_id: rows };
        return `{"entities":${JSON.stringify(entities)},"features":${features}}`;
      },
    };
  }
  const persisted = JSON.stringify({ version: 1, sha256Hash: op.id });
  return {
    path: '/graphql',
    headers: door === 'arrow' ? { accept: arrowMediaType } : {},
    body: () => {
      const { user, rows } = draw(c, random);
      const variables = c.shape === 'UserClickRate' ? { ids: rows } : { user, items: rows };
      return `{"extensions":{"persistedQuery":${persisted}},"variables":${JSON.stringify(variables)}}`;
    },
  };
}

export interface BatchFigure {
  readonly shape: BatchCase['shape'];
  readonly rows: number;
  readonly door: Door;
  readonly requests: number;
  readonly failed: number;
  readonly throughput: number;
  readonly rowsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** Runs every case through every door, interleaved, `rounds` times; the figures pool the rounds. */
export async function runBatchSizes(
  origin: string,
  manifest: readonly PersistedOperation[],
  options: { rounds: number; connections: number; warmupMs: number; durationMs: number; log: (msg: string, extra?: Record<string, unknown>) => void },
): Promise<BatchFigure[]> {
  const figures: BatchFigure[] = [];
  for (const c of batchCases) {
    const runs = new Map<Door, RunResult[]>(doors.map((d) => [d, []]));
    for (let round = 0; round < options.rounds; round++) {
      for (const door of doors) {
        const request = doorRequest(door, c, manifest, 1000 + round);
        runs.get(door)!.push(await closedLoop({ url: origin + request.path }, request.body, {
          connections: options.connections, warmupMs: options.warmupMs, durationMs: options.durationMs, headers: request.headers,
        }));
      }
    }
    for (const door of doors) {
      const results = runs.get(door)!;
      const merged = results[0]!.histogram;
      for (const r of results.slice(1)) merged.add(r.histogram);
      const requests = results.reduce((n, r) => n + r.requests, 0);
      const seconds = results.reduce((n, r) => n + r.seconds, 0);
      const failed = results.reduce((n, r) => n + r.errors + r.non200, 0);
      const p = percentiles(merged);
      const figure: BatchFigure = {
        shape: c.shape, rows: c.rows, door, requests, failed,
        throughput: requests / seconds, rowsPerSecond: (requests * c.rows) / seconds, p50Ms: p.p50, p99Ms: p.p99,
      };
      figures.push(figure);
      options.log('batch size measured', { ...figure });
    }
  }
  return figures;
}

/** The table for latest.md and the README. */
export function batchSizeTable(figures: readonly BatchFigure[]): string {
  const lines = [
    '### Batch sizes: JSON vs Arrow vs the Feast endpoint (one gateway, closed loop)',
    '',
    '| request | rows | JSON req/s | Arrow req/s | Feast req/s | JSON rows/s | Arrow rows/s | Feast rows/s | JSON p99 ms | Arrow p99 ms | Feast p99 ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of batchCases) {
    const of = (door: Door) => figures.find((f) => f.shape === c.shape && f.rows === c.rows && f.door === door);
    const cell = (door: Door, value: (f: BatchFigure) => string) => {
      const f = of(door);
      if (!f) return '–';
      return f.failed > 0 ? `${value(f)} (${f.failed} failed)` : value(f);
    };
    const round = (n: number) => String(Math.round(n));
    lines.push(`| ${c.shape === 'UserClickRate' ? 'UserClickRate' : 'ranking vector'} | ${c.rows} | ` +
      doors.map((d) => cell(d, (f) => round(f.throughput))).join(' | ') + ' | ' +
      doors.map((d) => cell(d, (f) => round(f.rowsPerSecond))).join(' | ') + ' | ' +
      doors.map((d) => cell(d, (f) => f.p99Ms.toFixed(2))).join(' | ') + ' |');
  }
  return lines.join('\n') + '\n';
}

/** The features each door's answer is compared on: (view, feature, which root: the user or the rows). */
const compared = {
  UserClickRate: [{ view: 'clickStats', feature: 'clickRate', root: 'rows' }],
  ranking: [
    ...['clickRate', 'clicks', 'impressions'].map((feature) => ({ view: 'clickStats', feature, root: 'user' })),
    ...['sessionLength', 'isPremium', 'country', 'embedding'].map((feature) => ({ view: 'profile', feature, root: 'user' })),
    ...['ctr', 'price', 'category'].map((feature) => ({ view: 'itemStats', feature, root: 'rows' })),
  ],
} as const;

/**
 * Before measuring: the three doors give the same values for the same request (a door that
 * answered less would be measured doing less). Per row and compared feature, the GraphQL JSON
 * value, the Arrow stream's and the Feast column's must be equal (null for a missing or stale
 * value in all three). Throws naming the first disagreements.
 */
export async function checkDoorsAgree(origin: string, manifest: readonly PersistedOperation[]): Promise<void> {
  const problems: string[] = [];
  for (const c of [{ shape: 'UserClickRate', rows: 10 }, { shape: 'ranking', rows: 20 }] as const) {
    const answers = await Promise.all(doors.map(async (door) => {
      const request = doorRequest(door, c, manifest, 7);
      const response = await fetch(origin + request.path, { method: 'POST', headers: { 'content-type': 'application/json', ...request.headers }, body: request.body() });
      const bytes = new Uint8Array(await response.arrayBuffer());
      if (response.status !== 200) throw new Error(`${door} answered ${response.status} to ${c.shape} x${c.rows}: ${Buffer.from(bytes).toString('utf8').slice(0, 300)}`);
      return bytes;
    }));
    const json = JSON.parse(Buffer.from(answers[0]!).toString('utf8')) as { data: Record<string, unknown> };
    const table = tableFromIPC(answers[1]!);
    const feast = JSON.parse(Buffer.from(answers[2]!).toString('utf8')) as { metadata: { feature_names: string[] }; results: { values: unknown[]; statuses: string[] }[] };
    const rowsKey = c.shape === 'UserClickRate' ? 'users' : 'items';
    const arrowRows = (field: string): number[] => {
      const out: number[] = [];
      const column = table.getChild('field')!;
      for (let i = 0; i < table.numRows; i++) if (column.get(i) === field) out.push(i);
      return out;
    };
    const plain = (v: unknown): unknown => (v !== null && typeof v === 'object' && 'toArray' in (v as object)
      ? Array.from((v as { toArray(): ArrayLike<number> }).toArray()) : typeof v === 'bigint' ? Number(v) : v ?? null);
    for (const { view, feature, root } of compared[c.shape]) {
      const feastColumn = feast.results[feast.metadata.feature_names.indexOf(feature)];
      const arrowColumn = table.getChild(`${view}.${feature}`);
      if (!feastColumn || !arrowColumn) {
        problems.push(`${c.shape}: no ${feature} in the ${!feastColumn ? 'Feast' : 'Arrow'} answer`);
        continue;
      }
      for (let k = 0; k < c.rows; k++) {
        const entity = root === 'user' ? json.data.user : (json.data[rowsKey] as unknown[])[k];
        const fromJson = ((entity as Record<string, Record<string, unknown> | null> | null)?.[view] ?? null)?.[feature] ?? null;
        const fromArrow = plain(arrowColumn.get(arrowRows(root === 'user' ? 'user' : rowsKey)[root === 'user' ? 0 : k]!));
        const fromFeast = feastColumn.statuses[k] === 'PRESENT' ? feastColumn.values[k] : null;
        const [a, b, f] = [fromJson, fromArrow, fromFeast].map((v) => JSON.stringify(v));
        if (a !== b || a !== f) problems.push(`${c.shape} row ${k} ${view}.${feature}: JSON ${a}, Arrow ${b}, Feast ${f}`);
      }
    }
  }
  if (problems.length > 0) throw new Error(`the three doors disagree:\n${problems.slice(0, 10).join('\n')}`);
}
