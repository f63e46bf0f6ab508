import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fromRoot } from '../runtime/paths.js';
import { assertLoopback, newHistogram, type BodySource, type RunResult, type Target } from './runner.js';

/**
 * The open-loop measurement, offered by vegeta (a Go binary that
 * scripts/ensure-vegeta.sh installs; docs/decisions/0026-open-loop-generator.md)
 * rather than by this Node process: requests at a constant rate whether or
 * not earlier ones were answered, on keep-alive connections, with a bounded
 * number of workers and connections.
 *
 * The bodies are the workload's own (the same seeded `BodySource` as the
 * closed loop), written up front as vegeta JSON targets with base64 bodies,
 * one per request of the run, so every system gets the same sequence.
 *
 * Latency is counted from each request's *scheduled* send time, as the old
 * in-process generator did (no coordinated omission): vegeta paces request
 * `seq` at `start + seq / rate`, records when it actually sent it and how
 * long the answer took, so the scheduled latency is (sent − due) + latency.
 * When all its workers are busy vegeta sends late (and, past the duration,
 * not at all): the requests it never sent are reported as `dropped`, the
 * achieved rate beside the offered one, and the generator's own lateness as
 * `sendLagMs`. Measured are the requests sent after the warm-up; unsent are
 * the requests due after it that were never sent. vegeta's own report
 * (`vegeta report -type=json`, latency from the actual send) is kept beside
 * ours in `vegeta`.
 */
export const vegetaBinary = fromRoot('infra', 'vegeta', 'target', 'bin', 'vegeta');

export interface OpenLoopOptions {
  readonly rate: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** At most this many requests outstanding (vegeta -max-workers). */
  readonly maxWorkers: number;
  /** At most this many connections to the system (vegeta -max-connections), kept alive. */
  readonly maxConnections: number;
  readonly headers?: Readonly<Record<string, string>>;
  /** Where the targets and results files go (removed afterwards). */
  readonly dir: string;
  /** Processes started here are registered, so the caller's hard stop can kill them. */
  readonly track?: (child: ChildProcess) => void;
}

export interface VegetaSummary {
  readonly requests: number;
  readonly rate: number;
  readonly throughput: number;
  readonly success: number;
  readonly latenciesMs: { readonly p50: number; readonly p90: number; readonly p95: number; readonly p99: number; readonly max: number };
  readonly statusCodes: Readonly<Record<string, number>>;
  readonly errors: readonly string[];
}

export interface OpenLoopResult extends RunResult {
  /** Requests sent per second in the measured window (vegeta sends what it can). */
  readonly achievedRate: number;
  /** How late vegeta sent requests against their schedule: p99 and max, ms. */
  readonly sendLagMs: { readonly p99: number; readonly max: number };
  /** vegeta's own report of the whole attack, warm-up included. */
  readonly vegeta: VegetaSummary;
}

let runs = 0;

export async function vegetaOpenLoop(target: Target, bodies: BodySource, options: OpenLoopOptions): Promise<OpenLoopResult> {
  assertLoopback(target.url);
  if (!fs.existsSync(vegetaBinary)) throw new Error(`${vegetaBinary} is missing: run scripts/ensure-vegeta.sh`);
  const tag = `vegeta-${process.pid}-${runs++}`;
  const targetsFile = path.join(options.dir, `${tag}.targets.jsonl`);
  const resultsFile = path.join(options.dir, `${tag}.results.bin`);
  try {
    // One target per request the run will send (and a few to spare): no body is reused.
    const totalMs = options.warmupMs + options.durationMs;
    const count = Math.ceil((options.rate * totalMs) / 1000) + 16;
    const header: Record<string, string[]> = { 'Content-Type': ['application/json'] };
    for (const [k, v] of Object.entries(options.headers ?? {})) header[k] = [v];
    const prefix = `{"method":"POST","url":${JSON.stringify(target.url)},"header":${JSON.stringify(header)},"body":"`;
    const fd = fs.openSync(targetsFile, 'w');
    try {
      let chunk: string[] = [];
      for (let i = 0; i < count; i++) {
        chunk.push(`${prefix}${Buffer.from(bodies()).toString('base64')}"}\n`);
        if (chunk.length === 4096 || i === count - 1) {
          fs.writeSync(fd, chunk.join(''));
          chunk = [];
        }
      }
    } finally {
      fs.closeSync(fd);
    }

    await run([
      'attack', '-format=json', `-targets=${targetsFile}`, `-output=${resultsFile}`,
      `-rate=${Math.round(options.rate)}/1s`, `-duration=${totalMs}ms`,
      `-workers=${Math.min(64, options.maxWorkers)}`, `-max-workers=${options.maxWorkers}`,
      `-max-connections=${options.maxConnections}`, `-connections=${options.maxConnections}`,
      '-keepalive=true', '-http2=false', '-timeout=10s', '-max-body=-1',
    ], options.track);
    const [csv, report] = await Promise.all([
      run(['encode', '-to=csv', resultsFile], options.track),
      run(['report', '-type=json', resultsFile], options.track),
    ]);
    return summarize(parseCsv(csv), JSON.parse(report) as VegetaReport, options);
  } finally {
    fs.rmSync(targetsFile, { force: true });
    fs.rmSync(resultsFile, { force: true });
  }
}

interface VegetaReport {
  latencies: { '50th': number; '90th': number; '95th': number; '99th': number; max: number };
  requests: number;
  rate: number;
  throughput: number;
  success: number;
  status_codes: Record<string, number>;
  errors: string[] | null;
}

function summarize(rows: readonly string[][], report: VegetaReport, options: OpenLoopOptions): OpenLoopResult {
  const intervalNs = 1e9 / Math.round(options.rate);
  // The attack's start: request 0 is due at once (vegeta's constant pacer), so its send time.
  let startNs = Number.POSITIVE_INFINITY;
  for (const r of rows) if (Number(r[8]) === 0) startNs = Number(r[0]);
  if (!Number.isFinite(startNs)) startNs = rows.reduce((min, r) => Math.min(min, Number(r[0])), Number.POSITIVE_INFINITY);
  const measureFromNs = options.warmupMs * 1e6;
  // The last slot races the attack's end (vegeta may stop before sending it): measured and expected alike end one interval early.
  const endNs = (options.warmupMs + options.durationMs) * 1e6 - intervalNs;
  const expected = Math.ceil(endNs / intervalNs) - Math.ceil(measureFromNs / intervalNs);
  const histogram = newHistogram();
  const lag = newHistogram();
  let requests = 0;
  let errors = 0;
  let non200 = 0;
  let graphqlErrors = 0;
  let sentOfWindow = 0;
  for (const r of rows) {
    const dueNs = Number(r[8]) * intervalNs;
    const sentNs = Number(r[0]) - startNs;
    if (dueNs >= measureFromNs && dueNs < endNs) sentOfWindow++;
    // Measured: every request sent in the window, timed from its due time. (By due time alone, a
    // system so slow that vegeta never got past the warm-up's requests would have no figures.)
    if (sentNs < measureFromNs || sentNs >= endNs) continue;
    const lateNs = Math.max(0, sentNs - dueNs);
    const latencyNs = Number(r[2]);
    requests++;
    histogram.recordValue(Math.max(1, Math.round((lateNs + latencyNs) / 1000)));
    lag.recordValue(Math.max(1, Math.round(lateNs / 1000)));
    const code = Number(r[1]);
    if (code === 0) errors++;
    else if (code !== 200) non200++;
    if (r[6] && Buffer.from(r[6], 'base64').includes('"errors":')) graphqlErrors++;
  }
  const seconds = (endNs - measureFromNs) / 1e9;
  const dropped = Math.max(0, expected - sentOfWindow);
  const ms = (ns: number): number => Math.round(ns / 1000) / 1000;
  return {
    mode: 'open', requests, errors: errors + dropped, dropped, non200, graphqlErrors, seconds, throughput: requests / seconds,
    offeredRate: Math.round(options.rate), achievedRate: requests / seconds, histogram,
    sendLagMs: { p99: lag.getValueAtPercentile(99) / 1000, max: lag.maxValue / 1000 },
    vegeta: {
      requests: report.requests, rate: report.rate, throughput: report.throughput, success: report.success,
      latenciesMs: { p50: ms(report.latencies['50th']), p90: ms(report.latencies['90th']), p95: ms(report.latencies['95th']), p99: ms(report.latencies['99th']), max: ms(report.latencies.max) },
      statusCodes: report.status_codes, errors: (report.errors ?? []).slice(0, 5),
    },
  };
}

/** Runs vegeta to its end; its stdout, or an error with its stderr. */
function run(argv: string[], track?: (child: ChildProcess) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(vegetaBinary, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    track?.(child);
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new Error(`vegeta ${argv[0]} failed (${code ?? signal}): ${err.slice(-2000)}`));
    });
  });
}

/** RFC 4180 CSV as Go's encoding/csv writes it (quoted fields, "" for a quote, no header). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"' && field === '') {
      // A quoted field: up to the closing quote, "" standing for one quote.
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q < 0) throw new Error('vegeta CSV: unterminated quoted field');
        field += text.slice(i, q);
        if (text[q + 1] === '"') {
          field += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      continue;
    }
    if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else if (c !== '\r') {
      // Plain run of characters up to the next separator.
      let j = i;
      while (j < text.length && text[j] !== ',' && text[j] !== '\n' && text[j] !== '\r') j++;
      field += text.slice(i, j);
      i = j;
      continue;
    }
    i++;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}
