import assert from 'node:assert/strict';
import { readManifest } from '../schema/manifest.js';
import { loadRegistry } from '../schema/registry.js';
import { activeVersionOf, type ViewVersion } from '../schema/types.js';
import { isStale } from '../store/freshness.js';
import { demoRows, mulberry32 } from '../store/demo-data.js';
import type { OnlineStore, ReadResult, StoredFeatures } from '../store/online-store.js';
import { compileOperation, type CompiledOperation } from '../serving/compiled-operations.js';
import { encodeGraphQLJson } from '../serving/encoders/graphql-json.js';
import { dataSet, workloads } from './workloads.js';

/**
 * `npm run bench:fragments`: would cached pre-serialized fragments beat the
 * compiled plan's way of writing a response? The question of issue 10: the
 * response of an unchanged read is identical bytes, so a hot tier could keep
 * each view value's JSON text (`{"clickRate":0.42,"stale":false}`) beside the
 * value and a persisted operation could be answered by concatenating them.
 *
 * Both sides start from values already in memory (a hot tier's hits: no store
 * round trip, which would dwarf either), for W1 and W2 over the bench's data
 * set (100k users, 10k items: the fragments' map is as large and as
 * cache-unfriendly as the hot tier's), ids drawn as the bench draws them:
 *
 *   plan       the compiled plan as served: plain objects, one JSON.stringify
 *   fragments  per (view, id) a cached entry {eventTimeMs, JSON text} (a map per
 *              view keyed by id, as the values' maps: the same lookups); the
 *              staleness rule checked at read as the tier does, the response
 *              concatenated from the fragments with the ids and keys around them
 *
 * Each side ends with `Buffer.from(body)`, the UTF-8 bytes the socket gets
 * (flattening a concatenated string is part of its cost). The two bodies are
 * checked byte for byte first. Best of 3 timed runs of ~0.5 s after a warm-up.
 */
const registry = loadRegistry();
const manifest = readManifest();
const eventTimeMs = Date.now();

// The bench's data set, decoded, in one map per view version: a hot tier that holds everything.
const values = new Map<ViewVersion, Map<string, StoredFeatures>>();
for (const { view, row } of demoRows(registry, { counts: { user: dataSet.users, item: dataSet.items, merchant: dataSet.merchants }, eventTimeMs, views: (v) => v.version === activeVersionOfName(v.viewName) })) {
  let byId = values.get(view);
  if (!byId) values.set(view, (byId = new Map()));
  byId.set(row.entityId, { values: row.values, eventTimeMs: row.eventTimeMs, stale: false });
}
function activeVersionOfName(name: string): number {
  for (const e of registry.entities) for (const v of e.views) if (v.name === name) return activeVersionOf(v).version;
  return -1;
}

/** An OnlineStore answering from those maps, as a hot tier's hits do (a resolved promise per read). */
const memory: OnlineStore = {
  kind: 'memory',
  readSettled: async (view, ids) => ids.map((id) => values.get(view)?.get(id) ?? null) as ReadResult[],
  read: async (view, ids) => ids.map((id) => values.get(view)?.get(id) ?? null),
  write: async () => undefined,
  ping: async () => undefined,
  health: async () => [],
  close: async () => undefined,
};

const view = (name: string): ViewVersion => [...values.keys()].find((v) => v.viewName === name)!;
const [clickStats, profile, itemStats] = [view('clickStats'), view('profile'), view('itemStats')];

/** Per (view, id): the value's event time and its fragment as the plan writes it, fresh. */
interface Fragment {
  readonly eventTimeMs: number;
  readonly json: string;
}
const w1Fields = ['clickRate', 'stale'];
const w2Click = ['clickRate', 'clicks', 'impressions', 'eventTime', 'stale'];
const w2Profile = ['sessionLength', 'isPremium', 'country', 'embedding', 'stale'];
const w2Item = ['ctr', 'price', 'category', 'eventTime', 'stale'];
function fragmentText(record: StoredFeatures, fields: readonly string[]): string {
  const out: Record<string, unknown> = {};
  for (const f of fields) out[f] = f === 'stale' ? false : f === 'eventTime' ? new Date(record.eventTimeMs).toISOString() : record.values[f] ?? null;
  return JSON.stringify(out);
}

/**
 * The fragments of one view version for one selection (W1 selects fewer clickStats fields than W2:
 * a fragment belongs to a (view, selection)), keyed by id like the values' maps, so both sides pay
 * the same lookups; and the fragment of an id, with the staleness rule applied at read.
 */
class Fragments {
  private readonly byId: Map<string, Fragment>;
  constructor(private readonly view: ViewVersion, private readonly fields: readonly string[]) {
    this.byId = new Map([...values.get(view)!].map(([id, record]) => [id, { eventTimeMs: record.eventTimeMs, json: fragmentText(record, fields) }]));
  }

  of(id: string): string {
    const entry = this.byId.get(id);
    if (!entry) return 'null';
    // A stale value is served as null features, stale: true (built on demand; none is stale here).
    if (isStale(this.view, entry.eventTimeMs, eventTimeMs)) return JSON.stringify(Object.fromEntries(this.fields.map((f) => [f, f === 'stale' ? true : null])));
    return entry.json;
  }
}
const w1Clicks = new Fragments(clickStats, w1Fields);
const w2Clicks = new Fragments(clickStats, w2Click);
const w2Profiles = new Fragments(profile, w2Profile);
const w2Items = new Fragments(itemStats, w2Item);

function w1ByFragments(ids: readonly string[]): string {
  let body = '{"data":{"users":[';
  for (let i = 0; i < ids.length; i++) {
    const f = w1Clicks.of(ids[i]!);
    body += (i ? ',' : '') + (f === 'null' ? 'null' : `{"id":${JSON.stringify(ids[i])},"clickStats":${f}}`);
  }
  return body + ']}}\n';
}

function w2ByFragments(user: string, items: readonly string[]): string {
  const c = w2Clicks.of(user);
  const p = w2Profiles.of(user);
  let body = c === 'null' && p === 'null' ? '{"data":{"user":null,"items":[' : `{"data":{"user":{"id":${JSON.stringify(user)},"clickStats":${c},"profile":${p}},"items":[`;
  for (let i = 0; i < items.length; i++) {
    const f = w2Items.of(items[i]!);
    body += (i ? ',' : '') + (f === 'null' ? 'null' : `{"id":${JSON.stringify(items[i])},"itemStats":${f}}`);
  }
  return body + ']}}\n';
}

function plan(name: string): CompiledOperation {
  const op = manifest.operations.find((o) => o.name === name)!;
  const compiled = compileOperation(registry, op.name, op.body, memory, 1000);
  if (typeof compiled === 'string') throw new Error(`${name} does not compile: ${compiled}`);
  return compiled;
}

interface Side {
  readonly name: string;
  run(variables: Record<string, unknown>): Promise<string> | string;
}

async function measure(workload: (typeof workloads)[number], sides: readonly Side[]): Promise<Record<string, number>> {
  const random = mulberry32(99);
  const requests = Array.from({ length: 50_000 }, () => workload.variables(random));
  // Same bytes, or the comparison means nothing.
  for (const vars of requests.slice(0, 200)) {
    const bodies = await Promise.all(sides.map((s) => s.run(vars)));
    for (const b of bodies.slice(1)) assert.equal(b, bodies[0], `${workload.name}: the sides disagree on ${JSON.stringify(vars)}`);
  }
  const nsPerRequest: Record<string, number> = {};
  for (const side of sides) {
    const once = async (n: number): Promise<number> => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) Buffer.from(await side.run(requests[i % requests.length]!));
      return Number(process.hrtime.bigint() - t0) / n;
    };
    await once(20_000);
    let best = Infinity;
    for (let round = 0; round < 3; round++) best = Math.min(best, await once(Math.max(20_000, Math.round(0.5e9 / (await once(5_000))))));
    nsPerRequest[side.name] = Math.round(best);
  }
  return nsPerRequest;
}

const w1 = plan('UserClickRate');
const w2 = plan('RankingFeatures');
const answered = async (op: CompiledOperation, vars: Record<string, unknown>): Promise<string> => {
  const r = await op.run(vars, undefined);
  if (r.kind !== 'result' || r.failed) throw new Error(`${op.name} handed over to the generic path`);
  return encodeGraphQLJson(r);
};
const results = {
  W1: await measure(workloads.find((w) => w.name === 'W1')!, [
    { name: 'plan', run: (v) => answered(w1, v) },
    { name: 'fragments', run: (v) => w1ByFragments(v.ids as string[]) },
  ]),
  W2: await measure(workloads.find((w) => w.name === 'W2')!, [
    { name: 'plan', run: (v) => answered(w2, v) },
    { name: 'fragments', run: (v) => w2ByFragments(v.user as string, v.items as string[]) },
  ]),
};
console.log('| workload | plan (objects + JSON.stringify) ns/request | fragments ns/request | fragments / plan |');
console.log('|---|---:|---:|---:|');
for (const [w, r] of Object.entries(results)) console.log(`| ${w} | ${r.plan} | ${r.fragments} | ${(r.fragments! / r.plan!).toFixed(2)}× |`);
console.log(JSON.stringify({ bench: 'fragments', node: process.version, results }));
