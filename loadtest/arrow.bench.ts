import { readManifest } from '../schema/manifest.js';
import { loadRegistry } from '../schema/registry.js';
import { compileOperation } from '../serving/compiled-operations.js';
import { encodeArrow } from '../serving/encoders/arrow.js';
import { encodeGraphQLJson } from '../serving/encoders/graphql-json.js';
import type { PlanResult } from '../serving/plan.js';
import { createStore } from '../store/create-store.js';
import { demoRows } from '../store/demo-data.js';
import { writeRows } from '../store/rows.js';

/**
 * `npm run bench:arrow`: what encoding one plan result costs as GraphQL JSON (one
 * JSON.stringify and the UTF-8 bytes the socket gets) and as an Arrow IPC stream, for 1, 100
 * and 500 ids of UserClickRate (one view, two features) and of RankingFeatures' items (plus one
 * user with two views). The plan runs once per size on the embedded store; only the encoders
 * are timed, each on the same result. Best of 5 rounds of about 0.3 s after a warm-up.
 */
const registry = loadRegistry();
const manifest = readManifest();
const store = createStore({ kind: 'embedded' });
await writeRows(store, demoRows(registry, { eventTimeMs: Date.now(), counts: { user: 500, item: 500, merchant: 1 } }));

async function resultOf(name: string, variables: Record<string, unknown>): Promise<PlanResult> {
  const op = manifest.operations.find((o) => o.name === name)!;
  const compiled = compileOperation(registry, name, op.body, store, 1000);
  if (typeof compiled === 'string') throw new Error(`${name} does not compile: ${compiled}`);
  const result = await compiled.run(variables, undefined);
  if (result.kind !== 'result' || result.failed) throw new Error(`${name}: no complete result`);
  return result;
}

function nsPer(encode: () => number): { ns: number; bytes: number } {
  let bytes = 0;
  const once = (n: number): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) bytes = encode();
    return Number(process.hrtime.bigint() - t0) / n;
  };
  once(200);
  const n = Math.max(50, Math.round(0.3e9 / once(100)));
  let best = Infinity;
  for (let round = 0; round < 5; round++) best = Math.min(best, once(n));
  return { ns: Math.round(best), bytes };
}

const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => String(i + 1));
const rows: Record<string, unknown>[] = [];
for (const n of [1, 100, 500]) {
  for (const [name, variables] of [['UserClickRate', { ids: ids(n) }], ['RankingFeatures', { user: '1', items: ids(n) }]] as const) {
    const result = await resultOf(name, variables);
    const json = nsPer(() => Buffer.from(encodeGraphQLJson(result)).length);
    const arrow = nsPer(() => encodeArrow(result).length);
    rows.push({ operation: name, ids: n, jsonUs: json.ns / 1000, jsonBytes: json.bytes, arrowUs: arrow.ns / 1000, arrowBytes: arrow.bytes });
  }
}
console.log('| operation | ids | JSON µs | JSON bytes | Arrow µs | Arrow bytes | Arrow / JSON time |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.operation} | ${r.ids} | ${(r.jsonUs as number).toFixed(1)} | ${r.jsonBytes} | ${(r.arrowUs as number).toFixed(1)} | ${r.arrowBytes} | ${((r.arrowUs as number) / (r.jsonUs as number)).toFixed(2)}× |`);
}
console.log(JSON.stringify({ bench: 'arrow', node: process.version, rows }));
await store.close();
