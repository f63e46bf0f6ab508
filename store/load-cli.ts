import { parseArgs } from 'node:util';
import { loadConfig } from '../runtime/config.js';
import { loadRegistry } from '../schema/registry.js';
import { createStore, storeUnreachable } from './create-store.js';
import { sharedStoreVariables } from './config.js';
import { demoEntityCounts, demoRows } from './demo-data.js';
import { eventTimeOf, readRowsFile, writeRows } from './rows.js';

/**
 * `npm run load -- --demo [--users N] [--items N] [--merchants N]`
 * `npm run load -- --file rows.jsonl`
 *
 * Loads demo data or a JSON Lines file (format in store/rows.ts) into the
 * shared store the configuration names (Redis, Redis Cluster, Aerospike). Prints one JSON line with
 * the row count; exits 1 with `file:line: reason` on the first bad row.
 */
const usage = 'usage: npm run load -- (--demo [--users N] [--items N] [--merchants N] [--event-time ISO-8601|ms] | --file rows.jsonl)';
const { values } = parseCommandLine();

/** The arguments, or a clear error and exit 1 (never a stack trace) for an unknown or malformed one. */
function parseCommandLine() {
  try {
    return parseArgs({
      options: {
        demo: { type: 'boolean' },
        file: { type: 'string' },
        users: { type: 'string' },
        items: { type: 'string' },
        merchants: { type: 'string' },
        // The demo rows' event time (default: now), so that two stores can be loaded with identical values.
        'event-time': { type: 'string' },
      },
    });
  } catch (error) {
    fail(`${(error as Error).message}\n${usage}`);
  }
}

function eventTime(): number {
  const text = values['event-time'];
  if (text === undefined) return Date.now();
  const ms = eventTimeOf(/^\d+$/.test(text) ? Number(text) : text);
  if (ms === undefined) fail(`--event-time must be ISO-8601 with a zone or ms since the epoch, got ${JSON.stringify(text)}`);
  return ms;
}

function count(name: 'users' | 'items' | 'merchants', fallback: number): number {
  const text = values[name];
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) fail(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}

function fail(message: string): never {
  console.error(JSON.stringify({ level: 'error', msg: message }));
  process.exit(1);
}

if (Boolean(values.demo) === Boolean(values.file)) fail(usage);
if (values.file && values['event-time'] !== undefined) fail(`--event-time is for --demo (a rows file carries its own event times)\n${usage}`);
const config = loadConfig();
if (config.store.kind === 'embedded') {
  fail(`the embedded store lives inside the serving process; set ${sharedStoreVariables} to load into a shared store`);
}
const registry = loadRegistry(config.registryFile);
const store = createStore(config.store);
try {
  const unreachable = await storeUnreachable(store, 5000);
  if (unreachable) fail(`store ${store.kind} is not reachable: ${unreachable.message}`);
  const started = Date.now();
  const rows = values.file
    ? readRowsFile(registry, values.file)
    : demoRows(registry, {
        eventTimeMs: eventTime(),
        counts: {
          user: count('users', demoEntityCounts.user!),
          item: count('items', demoEntityCounts.item!),
          merchant: count('merchants', demoEntityCounts.merchant!),
        },
      });
  const written = await writeRows(store, rows);
  console.log(JSON.stringify({ level: 'info', msg: 'loaded rows', rows: written, store: store.kind, ms: Date.now() - started }));
} catch (error) {
  fail((error as Error).message);
} finally {
  await store.close();
}
