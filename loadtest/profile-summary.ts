import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

/**
 * Summarizes a V8 CPU profile (`.cpuprofile`, as `node --cpu-prof` or
 * `PROFILE_DIR=<dir> npm run bench` writes it): self time by function and by
 * file, the garbage collector's and idle share, and the heaviest stacks.
 *
 *   npm run profile:summary -- <file.cpuprofile | dir> [--top 25] [--requests N] [--from S] [--to S] [--timeline]
 *
 * A directory means its newest `.cpuprofile`. `--from`/`--to` (seconds since
 * the profile started) keep only the samples of that window, e.g. the load
 * without the start-up; `--timeline` prints the busy share per second, to
 * find the window. With `--requests` (how many requests the process served
 * in the window) it also prints µs of CPU per request: busy time (total minus
 * idle) divided by N.
 */
interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '25' }, requests: { type: 'string' }, stacks: { type: 'string', default: '12' },
    from: { type: 'string' }, to: { type: 'string' }, timeline: { type: 'boolean', default: false },
  },
});
const target = positionals[0];
if (!target) {
  console.error('usage: profile-summary <file.cpuprofile | dir> [--top N] [--requests N] [--stacks N]');
  process.exit(2);
}
const file = fs.statSync(target).isDirectory() ? newestProfile(target) : target;
const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
const top = Number(values.top);

function newestProfile(dir: string): string {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(dir, f));
  if (files.length === 0) throw new Error(`no .cpuprofile in ${dir}`);
  return files.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0]!;
}

// Self time per node: each sample's delta is charged to the node it landed in.
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const selfUs = new Map<number, number>();
const fromUs = values.from === undefined ? -Infinity : Number(values.from) * 1e6;
const toUs = values.to === undefined ? Infinity : Number(values.to) * 1e6;
const idleIds = new Set(profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
const perSecond: { busy: number; all: number }[] = [];
let atUs = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]!;
  const delta = profile.timeDeltas[i] ?? 0;
  atUs += delta;
  const second = Math.floor(atUs / 1e6);
  const bucket = (perSecond[second] ??= { busy: 0, all: 0 });
  bucket.all += delta;
  if (!idleIds.has(id)) bucket.busy += delta;
  if (atUs < fromUs || atUs > toUs) continue;
  selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
}
if (values.timeline) {
  console.log('## busy share per second since the profile started');
  perSecond.forEach((b, i) => b && console.log(`${String(i).padStart(4)} s ${((b.busy / b.all) * 100).toFixed(0).padStart(3)}% ${'#'.repeat(Math.round((b.busy / b.all) * 50))}`));
}
const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);

const shortUrl = (url: string): string => {
  if (!url) return '(native)';
  const i = url.indexOf('/node_modules/');
  if (i >= 0) return url.slice(i + 1);
  const d = url.indexOf('/dist/');
  if (d >= 0) return url.slice(d + 6);
  return url.replace(/^file:\/\//, '');
};
const label = (f: CallFrame): string => `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;

const special = (name: string): boolean => name === '(idle)' || name === '(garbage collector)' || name === '(program)' || name === '(root)';
const sum = (pick: (n: ProfileNode) => string): Map<string, number> => {
  const out = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const key = pick(byId.get(id)!);
    out.set(key, (out.get(key) ?? 0) + us);
  }
  return out;
};
const byFunction = sum((n) => label(n.callFrame));
const byFile = sum((n) => (special(n.callFrame.functionName) ? n.callFrame.functionName : shortUrl(n.callFrame.url)));
const idleUs = byFile.get('(idle)') ?? 0;
const gcUs = byFile.get('(garbage collector)') ?? 0;
const busyUs = totalUs - idleUs;

const pct = (us: number, of = busyUs): string => `${((us / of) * 100).toFixed(1).padStart(5)}%`;
const ms = (us: number): string => `${(us / 1000).toFixed(0).padStart(7)} ms`;
const print = (title: string, rows: Map<string, number>, n: number): void => {
  console.log(`\n## ${title} (share of busy time)`);
  for (const [key, us] of [...rows].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, n)) {
    console.log(`${pct(us)} ${ms(us)}  ${key}`);
  }
};

console.log(`profile ${file}`);
console.log(`wall ${(totalUs / 1e6).toFixed(2)} s, busy ${(busyUs / 1e6).toFixed(2)} s (${pct(busyUs, totalUs).trim()} of wall), ` +
  `GC ${(gcUs / 1e6).toFixed(2)} s (${pct(gcUs).trim()} of busy)`);
if (values.requests) {
  const n = Number(values.requests);
  console.log(`${n} requests: ${(busyUs / n).toFixed(1)} µs CPU per request, of which GC ${(gcUs / n).toFixed(1)} µs`);
}
print('self time by function', byFunction, top);
print('self time by file', byFile, top);

// Heaviest stacks: self time charged to the leaf's stack, four frames deep from the leaf, native frames kept.
const stacks = new Map<string, number>();
for (const [id, us] of selfUs) {
  const frames: string[] = [];
  for (let cur: number | undefined = id; cur !== undefined && frames.length < 5; cur = parent.get(cur)) {
    const f = byId.get(cur)!.callFrame;
    if (f.functionName === '(root)') break;
    frames.push(label(f));
  }
  if (frames.length === 0 || special(byId.get(id)!.callFrame.functionName)) continue;
  const key = frames.join('\n        ← ');
  stacks.set(key, (stacks.get(key) ?? 0) + us);
}
print('heaviest stacks (leaf first)', stacks, Number(values.stacks));
