import assert from 'node:assert/strict';
import { loadRegistry } from '../schema/registry.js';
import { findView, type ViewVersion } from '../schema/types.js';
import { codecFor, type EncodedRecord, type FeatureValues } from './codec.js';
import { mulberry32 } from './demo-data.js';

/**
 * `npm run bench:codec`: the binary value codec against JSON (what a store
 * value would be without it: `JSON.stringify({ values, eventTimeMs })` as
 * UTF-8 bytes, and `JSON.parse` back), on encode ops/s, decode ops/s and bytes
 * per value, for the shipped registry's views.
 *
 * Each measurement is warmed up, calibrated on the warm code, then timed over
 * a fixed number of iterations chosen so that one timed run lasts about
 * `targetSeconds`; the best of `rounds` runs is reported, and the JSON line
 * records the iteration counts and the shortest run. Note the binary encode also type-checks
 * every value against the registry (codec.check), which the JSON baseline
 * does not do.
 */
const targetSeconds = 0.6;
const warmupSeconds = 0.1;
const calibrationSeconds = 0.1;
const rounds = 2;

interface Case {
  readonly name: string;
  readonly view: ViewVersion;
  readonly record: EncodedRecord;
}

interface Result {
  readonly case: string;
  readonly binaryBytes: number;
  readonly jsonBytes: number;
  readonly binaryEncodeOps: number;
  readonly jsonEncodeOps: number;
  readonly binaryDecodeOps: number;
  readonly jsonDecodeOps: number;
  readonly iterations: Readonly<Record<string, number>>;
  /** The shortest timed run of the case, in seconds. */
  readonly minRunSeconds: number;
}

const random = mulberry32(42);
/** Embeddings come from float32 models: doubles with ~7 significant digits but a long JSON form. */
const embedding = (n: number): number[] => Array.from({ length: n }, () => Math.fround(random() * 2 - 1));

function versionOf(viewName: string, version?: number): ViewVersion {
  const view = findView(registry, viewName);
  if (!view) throw new Error(`no view ${viewName} in ${registry.file}`);
  const found = view.versions[(version ?? view.activeVersion) - 1];
  if (!found) throw new Error(`no version ${version} of ${viewName}`);
  return found;
}

const registry = loadRegistry();
const eventTimeMs = 1_700_000_000_123;
const cases: Case[] = [
  {
    name: 'clickStats v2',
    view: versionOf('clickStats', 2),
    record: { values: { clickRate: 0.0421875, clicks: 42, impressions: 998 }, eventTimeMs },
  },
  {
    name: 'profile v1 (8-float embedding)',
    view: versionOf('profile', 1),
    record: { values: { sessionLength: 312, isPremium: true, country: 'DE', embedding: embedding(8) }, eventTimeMs },
  },
  {
    name: 'profile v1 (64-float embedding)',
    view: versionOf('profile', 1),
    record: { values: { sessionLength: 312, isPremium: false, country: 'FR', embedding: embedding(64) }, eventTimeMs },
  },
  {
    name: 'itemStats v1',
    view: versionOf('itemStats', 1),
    record: { values: { ctr: 0.031, price: 19.99, category: 'electronics' }, eventTimeMs },
  },
];

/** Keeps results observable so the JIT cannot drop the work. */
let sink = 0;

/** Calls `op` in blocks of 1000 for `seconds`; returns the rate (ops/s). */
function runFor(op: () => number, seconds: number): number {
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let n = 0;
  let now = start;
  while (now < deadline) {
    for (let i = 0; i < 1000; i++) sink += op();
    n += 1000;
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

/** Times `iterations` calls of `op`, best of `rounds`; returns ops/s and the shortest run's length. */
function measure(op: () => number, iterations: number): { ops: number; minSeconds: number } {
  let best = 0;
  let minSeconds = Infinity;
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) sink += op();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    best = Math.max(best, iterations / seconds);
    minSeconds = Math.min(minSeconds, seconds);
  }
  return { ops: best, minSeconds };
}

/** Warm-up (JIT), then a short calibration of the warm code fixes the iteration count, then the timed runs. */
function bench(op: () => number): { ops: number; iterations: number; minSeconds: number } {
  runFor(op, warmupSeconds);
  const rate = runFor(op, calibrationSeconds);
  const iterations = Math.max(10_000, Math.ceil((rate * targetSeconds) / 10_000) * 10_000);
  return { ...measure(op, iterations), iterations };
}

function runCase(c: Case): Result {
  const codec = codecFor(c.view);
  const binary = codec.encode(c.record);
  const json = Buffer.from(JSON.stringify({ values: c.record.values, eventTimeMs: c.record.eventTimeMs }));
  // Both sides must give back what went in, or the comparison means nothing.
  assert.deepEqual(codec.decode(binary), c.record);
  assert.deepEqual(JSON.parse(json.toString('utf8')) as { values: FeatureValues; eventTimeMs: number }, c.record);

  const binaryEncode = bench(() => codec.encode(c.record).length);
  const jsonEncode = bench(() => Buffer.from(JSON.stringify({ values: c.record.values, eventTimeMs: c.record.eventTimeMs })).length);
  const binaryDecode = bench(() => codec.decode(binary).eventTimeMs);
  const jsonDecode = bench(() => (JSON.parse(json.toString('utf8')) as { eventTimeMs: number }).eventTimeMs);
  return {
    case: c.name,
    binaryBytes: binary.length,
    jsonBytes: json.length,
    binaryEncodeOps: Math.round(binaryEncode.ops),
    jsonEncodeOps: Math.round(jsonEncode.ops),
    binaryDecodeOps: Math.round(binaryDecode.ops),
    jsonDecodeOps: Math.round(jsonDecode.ops),
    iterations: {
      binaryEncode: binaryEncode.iterations, jsonEncode: jsonEncode.iterations,
      binaryDecode: binaryDecode.iterations, jsonDecode: jsonDecode.iterations,
    },
    minRunSeconds: Math.round(Math.min(binaryEncode.minSeconds, jsonEncode.minSeconds, binaryDecode.minSeconds, jsonDecode.minSeconds) * 1000) / 1000,
  };
}

function ops(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e3).toFixed(0)} k`;
}

const started = Date.now();
const results = cases.map(runCase);

const lines = [
  '| case | bytes binary | bytes JSON | size | encode binary | encode JSON | encode × | decode binary | decode JSON | decode × |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ...results.map((r) => `| ${r.case} | ${r.binaryBytes} | ${r.jsonBytes} | ${(r.binaryBytes / r.jsonBytes * 100).toFixed(0)}% | ` +
    `${ops(r.binaryEncodeOps)} | ${ops(r.jsonEncodeOps)} | ${(r.binaryEncodeOps / r.jsonEncodeOps).toFixed(2)} | ` +
    `${ops(r.binaryDecodeOps)} | ${ops(r.jsonDecodeOps)} | ${(r.binaryDecodeOps / r.jsonDecodeOps).toFixed(2)} |`),
];
console.log(`codec benchmark (ops/s, best of ${rounds} timed runs of ~${targetSeconds} s each; node ${process.version})\n`);
console.log(lines.join('\n'));
console.log('');
console.log(JSON.stringify({ bench: 'codec', node: process.version, seconds: (Date.now() - started) / 1000, results }));
if (sink === 42) console.log(''); // keeps `sink` alive
