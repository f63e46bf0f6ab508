import { readManifest } from '../../schema/manifest.js';
import { post, type Reply } from './http.js';
import { eventually } from './wait.js';

/**
 * Continuous concurrent load on a gateway for the fault tests: `workers`
 * clients, each sending the next request as soon as the last one answered,
 * over random batches of users, half persisted (UserClickRate), half ad hoc
 * (clickStats and profile). Every reply is kept with when it was sent.
 */
export const persistedId = readManifest().operations.find((o) => o.name === 'UserClickRate')!.id;
export const adhocQuery = 'query Adhoc($ids: [ID!]!) { users(ids: $ids) { id clickStats { clickRate stale } profile { country } } }';

export interface Sample {
  readonly startedAt: number;
  readonly ms: number;
  readonly kind: 'persisted' | 'adhoc';
  readonly ids: string[];
  readonly reply: Reply;
}

export class Load {
  readonly samples: Sample[] = [];
  private running = true;
  private readonly loops: Promise<void>[];
  failures: unknown[] = [];

  /** Users are `<idPrefix>1` … `<idPrefix><users>` (the demo data's "1"…, the event streams' "u1"…). */
  constructor(private readonly url: string, options: { readonly users: number; readonly workers: number; readonly batch?: number; readonly idPrefix?: string }) {
    this.loops = Array.from({ length: options.workers }, (_, w) => this.loop(w, options.users, options.batch ?? 8, options.idPrefix ?? ''));
  }

  private async loop(worker: number, users: number, batch: number, prefix: string): Promise<void> {
    let n = 0;
    while (this.running) {
      const ids = Array.from({ length: batch }, () => `${prefix}${1 + Math.floor(Math.random() * users)}`);
      const kind = (worker + n++) % 2 === 0 ? 'persisted' : 'adhoc';
      const body = kind === 'persisted'
        ? { extensions: { persistedQuery: { version: 1, sha256Hash: persistedId } }, variables: { ids } }
        : { query: adhocQuery, variables: { ids } };
      const startedAt = performance.now();
      try {
        const reply = await post(this.url, body);
        this.samples.push({ startedAt, ms: performance.now() - startedAt, kind, ids, reply });
      } catch (error) {
        this.failures.push(error);
      }
    }
  }

  /** Samples of requests started at or after `t` (performance.now()). */
  since(t: number): Sample[] {
    return this.samples.filter((s) => s.startedAt >= t);
  }

  /** Waits until at least `minSamples` requests started from now on have answered; returns them. */
  async steady(minSamples: number, timeoutMs = 30_000): Promise<Sample[]> {
    const from = performance.now();
    return eventually(async () => {
      const samples = this.since(from);
      if (samples.length < minSamples) throw new Error(`only ${samples.length} replies so far`);
      return samples;
    }, timeoutMs, 100);
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}
