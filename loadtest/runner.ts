import * as hdr from 'hdr-histogram-js';
import { Pool } from 'undici';

/**
 * The two ways of offering load in-process, both measuring with an HDR
 * histogram in microseconds and excluding a warm-up:
 *
 * - closed loop: N connections, each sending its next request as soon as
 *   the previous one is answered: the maximum throughput;
 * - open loop: requests scheduled at a constant rate whether or not earlier
 *   ones were answered, latency measured from the *scheduled* send time, so
 *   a stall is charged to every request it delayed (no coordinated omission).
 *   It spins a core near every due time, so `npm run bench` measures its
 *   open-loop latency with vegeta instead (loadtest/vegeta.ts, decision
 *   0026); this one serves the soak, whose low rates (150 req/s) it meets
 *   cheaply and whose per-interval rows and auth headers it already has.
 *
 * undici's Pool is the HTTP client: keep-alive connections and little
 * per-request overhead, which matters when client and server share 2 cores.
 */

export interface Target {
  /** Full URL of the endpoint requests are POSTed to; loopback only. */
  readonly url: string;
}

/** A request body factory: the workload decides the ids of each request. */
export type BodySource = () => string;

export interface RunResult {
  readonly mode: 'closed' | 'open';
  readonly requests: number;
  readonly errors: number;
  readonly non200: number;
  /** Responses whose GraphQL body carried `errors`. */
  readonly graphqlErrors: number;
  readonly seconds: number;
  readonly throughput: number;
  readonly offeredRate?: number;
  /** Open loop: sends skipped because `maxOutstanding` requests were already waiting (counted in errors too). */
  readonly dropped?: number;
  readonly histogram: hdr.Histogram;
}

export function newHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

export function assertLoopback(url: string): void {
  const host = new URL(url).hostname;
  if (!(host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host))) {
    throw new Error(`load tests target loopback only; refusing ${url}`);
  }
}

interface Outcome {
  ok: boolean;
  status: number;
  graphqlError: boolean;
}

class Sender {
  readonly pool: Pool;
  private readonly path: string;
  private readonly headers: Record<string, string>;

  constructor(url: string, connections: number, headers: Readonly<Record<string, string>> = {}) {
    assertLoopback(url);
    this.headers = { ...headers, 'content-type': 'application/json' };
    const u = new URL(url);
    this.pool = new Pool(u.origin, { connections, pipelining: 1, keepAliveTimeout: 60_000 });
    this.path = u.pathname;
  }

  async send(body: string): Promise<Outcome> {
    try {
      const response = await this.pool.request({
        method: 'POST',
        path: this.path,
        headers: this.headers,
        body,
      });
      const text = await response.body.text();
      // A cheap check: a GraphQL error response carries a top-level "errors" key.
      return { ok: response.statusCode === 200, status: response.statusCode, graphqlError: text.includes('"errors":') };
    } catch {
      return { ok: false, status: 0, graphqlError: false };
    }
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

export async function closedLoop(
  target: Target,
  bodies: BodySource,
  options: { connections: number; warmupMs: number; durationMs: number; headers?: Readonly<Record<string, string>> },
): Promise<RunResult> {
  const sender = new Sender(target.url, options.connections, options.headers);
  const histogram = newHistogram();
  const start = performance.now();
  const measureFrom = start + options.warmupMs;
  const end = measureFrom + options.durationMs;
  let requests = 0;
  let errors = 0;
  let non200 = 0;
  let graphqlErrors = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const sent = performance.now();
      if (sent >= end) return;
      const outcome = await sender.send(bodies());
      const done = performance.now();
      if (sent < measureFrom || done > end) continue;
      requests++;
      histogram.recordValue(Math.max(1, Math.round((done - sent) * 1000)));
      tally(outcome);
    }
  };
  const tally = (o: Outcome): void => {
    if (o.status === 0) errors++;
    else if (!o.ok) non200++;
    if (o.graphqlError) graphqlErrors++;
  };
  await Promise.all(Array.from({ length: options.connections }, worker));
  await sender.close();
  const seconds = options.durationMs / 1000;
  return { mode: 'closed', requests, errors, non200, graphqlErrors, seconds, throughput: requests / seconds, histogram };
}

export async function openLoop(
  target: Target,
  bodies: BodySource,
  options: { rate: number; maxConnections: number; maxOutstanding: number; warmupMs: number; durationMs: number; headers?: Readonly<Record<string, string>> },
): Promise<RunResult> {
  const sender = new Sender(target.url, options.maxConnections, options.headers);
  const histogram = newHistogram();
  const intervalMs = 1000 / options.rate;
  const start = performance.now();
  const measureFrom = start + options.warmupMs;
  const end = measureFrom + options.durationMs;
  let scheduled = 0;
  let requests = 0;
  let errors = 0;
  let non200 = 0;
  let graphqlErrors = 0;
  let dropped = 0;
  const inFlight = new Set<Promise<void>>();

  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      // Send every request whose scheduled time has come, each timed from that time.
      while (start + scheduled * intervalMs <= now) {
        const due = start + scheduled * intervalMs;
        scheduled++;
        if (due >= end) {
          resolve();
          return;
        }
        if (inFlight.size >= options.maxOutstanding) {
          // The system is far behind: do not queue without bound; count it as dropped.
          if (due >= measureFrom) dropped++;
          continue;
        }
        const p = sender.send(bodies()).then((o) => {
          const done = performance.now();
          if (due >= measureFrom) {
            requests++;
            histogram.recordValue(Math.max(1, Math.round((done - due) * 1000)));
            if (o.status === 0) errors++;
            else if (!o.ok) non200++;
            if (o.graphqlError) graphqlErrors++;
          }
        });
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      // Spin (setImmediate) only when the next send is due within ~1.5 ms; otherwise sleep.
      // Node timers have 1 ms granularity, so sleeping through a due time would charge
      // the generator's own lateness to the server.
      const wait = start + scheduled * intervalMs - performance.now();
      if (wait > 1.5) setTimeout(tick, Math.floor(wait - 1));
      else setImmediate(tick);
    };
    tick();
  });
  // Requests still in flight at the end are waited for (bounded by the server's answer or the pool's timeout).
  await Promise.all(inFlight);
  await sender.close();
  const seconds = options.durationMs / 1000;
  return { mode: 'open', requests, errors: errors + dropped, dropped, non200, graphqlErrors, seconds, throughput: requests / seconds, offeredRate: options.rate, histogram };
}

export interface Percentiles {
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** Percentiles in milliseconds. */
export function percentiles(h: hdr.Histogram): Percentiles {
  const ms = (us: number): number => Math.round(us) / 1000;
  return {
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
  };
}
