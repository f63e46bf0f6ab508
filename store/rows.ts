import fs from 'node:fs';
import readline from 'node:readline';
import type { Registry, ViewVersion } from '../schema/types.js';
import { findEntity } from '../schema/types.js';
import { CodecError, codecFor } from './codec.js';
import type { FeatureRow, OnlineStore } from './online-store.js';

/**
 * Rows as users hand them to `npm run load -- --file rows.jsonl`, one JSON
 * object per line:
 *
 *   {"entity":"user","id":"42","view":"clickStats","version":2,
 *    "eventTime":"2026-11-26T12:00:00Z","values":{"clickRate":0.1,"clicks":3,"impressions":30}}
 *
 * `version` defaults to the active one; `eventTime` is ISO-8601 or ms since the epoch.
 */
export interface ViewRow {
  readonly view: ViewVersion;
  readonly row: FeatureRow;
}

export class RowError extends Error {
  override name = 'RowError';
  constructor(readonly file: string, readonly line: number, reason: string) {
    super(`${file}:${line}: ${reason}`);
  }
}

/** ISO-8601 with a date, a time and a zone (`Z` or ±hh:mm): what `Date.parse` reads the same everywhere. */
const isoWithZone = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * An event time as ms since the epoch: a non-negative integer, or an
 * ISO-8601 string with a zone. Anything else (Date.parse alone accepts "-5"
 * or "1" as dates in 2001) is undefined.
 */
export function eventTimeOf(value: unknown): number | undefined {
  const ms = typeof value === 'number' ? value : typeof value === 'string' && isoWithZone.test(value) ? Date.parse(value) : NaN;
  return Number.isSafeInteger(ms) && ms >= 0 ? ms : undefined;
}

export function parseRow(registry: Registry, text: string, file: string, line: number): ViewRow {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new RowError(file, line, `not valid JSON (${(error as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new RowError(file, line, 'expected a JSON object');
  const r = raw as Record<string, unknown>;
  const entity = typeof r.entity === 'string' ? findEntity(registry, r.entity) : undefined;
  if (!entity) throw new RowError(file, line, `"entity" must be one of ${registry.entities.map((e) => e.name).join(', ')}, got ${JSON.stringify(r.entity)}`);
  if (typeof r.id !== 'string' || r.id.length === 0) throw new RowError(file, line, `"id" must be a non-empty string, got ${JSON.stringify(r.id)}`);
  const view = entity.views.find((v) => v.name === r.view);
  if (!view) throw new RowError(file, line, `"view" must be a view of ${entity.name} (${entity.views.map((v) => v.name).join(', ')}), got ${JSON.stringify(r.view)}`);
  const versionNumber = r.version === undefined ? view.activeVersion : r.version;
  const version = typeof versionNumber === 'number' ? view.versions[versionNumber - 1] : undefined;
  if (!version) throw new RowError(file, line, `"version" must be 1..${view.versions.length} for ${view.name}, got ${JSON.stringify(r.version)}`);
  const eventTimeMs = eventTimeOf(r.eventTime);
  if (eventTimeMs === undefined) {
    throw new RowError(file, line, `"eventTime" must be ISO-8601 or ms since the epoch, got ${JSON.stringify(r.eventTime)}`);
  }
  if (typeof r.values !== 'object' || r.values === null || Array.isArray(r.values)) throw new RowError(file, line, '"values" must be an object');
  try {
    const values = codecFor(version).check(r.values as Record<string, unknown>);
    return { view: version, row: { entityId: r.id, values, eventTimeMs } };
  } catch (error) {
    if (error instanceof CodecError) throw new RowError(file, line, error.message);
    throw error;
  }
}

export async function* readRowsFile(registry: Registry, file: string): AsyncGenerator<ViewRow> {
  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  let line = 0;
  for await (const text of lines) {
    line++;
    if (text.trim() === '') continue;
    yield parseRow(registry, text, file, line);
  }
}

/** Writes rows in batches of `batchSize` per view version; returns how many were written. */
export async function writeRows(store: OnlineStore, rows: AsyncIterable<ViewRow> | Iterable<ViewRow>, batchSize = 1000): Promise<number> {
  const pending = new Map<ViewVersion, FeatureRow[]>();
  let written = 0;
  const flush = async (view: ViewVersion, batch: FeatureRow[]): Promise<void> => {
    await store.write(view, batch);
    written += batch.length;
  };
  for await (const { view, row } of rows) {
    let batch = pending.get(view);
    if (!batch) pending.set(view, (batch = []));
    batch.push(row);
    if (batch.length >= batchSize) {
      pending.set(view, []);
      await flush(view, batch);
    }
  }
  for (const [view, batch] of pending) if (batch.length > 0) await flush(view, batch);
  return written;
}
