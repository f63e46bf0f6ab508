import { log } from '../runtime/log.js';
import type { Config } from '../runtime/config.js';
import type { Registry, ViewVersion } from '../schema/types.js';
import { createStore, storeUnreachable } from './create-store.js';
import type { CodecStore } from './codec-store.js';
import { demoRows } from './demo-data.js';
import { readRowsFile, writeRows } from './rows.js';

export interface OpenedStore {
  readonly store: CodecStore;
  /** Stops the demo writer (if any) and closes the store. */
  close(): Promise<void>;
}

/**
 * Opens the configured store for a serving process. The embedded store starts
 * empty, so it is seeded here: from `EMBEDDED_SEED_FILE`, or with the demo
 * data; the demo writer then keeps short-TTL views fresh. Redis is never
 * seeded implicitly: `npm run load` does that, on purpose.
 */
export async function openStore(config: Config, registry: Registry, options: { materializerInProcess?: boolean } = {}): Promise<OpenedStore> {
  const store = createStore(config.store);
  const unreachable = config.store.kind !== 'embedded' ? await storeUnreachable(store, 5000) : undefined;
  if (unreachable) {
    log.warn({ store: store.kind, err: unreachable.message }, 'store not reachable yet; serving starts unready and recovers when it answers');
  }
  if (config.embeddedSeedFile) {
    const n = await writeRows(store, readRowsFile(registry, config.embeddedSeedFile));
    log.info({ file: config.embeddedSeedFile, rows: n }, 'seeded store from file');
  } else if (config.demoSeed) {
    // Streamed views are the in-process materializer's to build (from a burst of demo events), so that
    // their values are real aggregates from the start rather than unrelated random numbers.
    const views = options.materializerInProcess ? (v: ViewVersion) => !v.materialization : undefined;
    const n = await writeRows(store, demoRows(registry, { eventTimeMs: Date.now(), ...(views ? { views } : {}) }));
    log.info({ rows: n }, 'seeded store with demo data');
  }
  let timer: NodeJS.Timeout | undefined;
  // With a materializer in this process, streamed views are its to write; the writer keeps the others fresh.
  if (config.demoWriter) timer = startDemoWriter(store, registry, config.demoWriteIntervalMs, options.materializerInProcess ?? false);
  return {
    store,
    close: async () => {
      if (timer) clearInterval(timer);
      await store.close();
    },
  };
}

/**
 * Rewrites every view whose TTL is at most an hour with new values and the
 * current event time, so demo values stay fresh and visibly change.
 */
function startDemoWriter(store: CodecStore, registry: Registry, intervalMs: number, skipMaterialized: boolean): NodeJS.Timeout {
  let generation = 0;
  const timer = setInterval(() => {
    generation++;
    writeRows(store, demoRows(registry, { eventTimeMs: Date.now(), generation, views: (v) => v.ttlSeconds <= 3600 && !(skipMaterialized && v.materialization) }))
      .then((rows) => log.debug({ rows, generation }, 'demo writer refreshed values'))
      .catch((error: Error) => log.warn({ err: error.message }, 'demo writer could not write'));
  }, intervalMs);
  timer.unref();
  return timer;
}
