import { tableFromIPC, type Table } from 'apache-arrow';
import type { RunningGateway } from '../../gateway/server.js';
import { activeVersionOf } from '../../schema/types.js';
import { recordKey } from '../../store/backends/byte-backend.js';
import type { RedisBackend } from '../../store/backends/redis.js';
import { createStore } from '../../store/create-store.js';
import { demoRows } from '../../store/demo-data.js';
import { writeRows } from '../../store/rows.js';
import { registry, startTestGateway } from './gateway.js';
import { RedisProcess } from './redis-server.js';
import { eventually } from './wait.js';

/**
 * Checks an Arrow answer against the GraphQL JSON answer of the same request, value for value
 * (decision 0031): rows in root-field order, one per requested id; an entity JSON gives as null
 * has every view column null; a view JSON gives as null has all its columns null; a view object's
 * features, `eventTime` and `stale` equal the columns; a stale view has null feature columns;
 * columns of views a root field does not select are null in its rows; the schema metadata's
 * `errors` equal the JSON errors (compared by path: the generic path's order follows its fetches).
 * Returns every difference found, empty when they agree.
 */
export function arrowMismatches(bytes: Uint8Array, response: { data?: Record<string, unknown> | null; errors?: unknown[] }, ids: Readonly<Record<string, readonly string[] | string>>): string[] {
  const table = tableFromIPC(bytes);
  const problems: string[] = [];
  const byPath = (errors: readonly unknown[]): unknown[] => [...errors].sort((a, b) => pathOf(a).localeCompare(pathOf(b)));
  const metadataErrors = JSON.parse(table.schema.metadata.get('errors') ?? 'null') as unknown[] | null;
  if (!Array.isArray(metadataErrors)) problems.push(`schema metadata errors is ${table.schema.metadata.get('errors')}`);
  else if (JSON.stringify(byPath(metadataErrors)) !== JSON.stringify(byPath(response.errors ?? []))) {
    problems.push(`errors differ: Arrow ${JSON.stringify(byPath(metadataErrors))}, JSON ${JSON.stringify(byPath(response.errors ?? []))}`);
  }
  const data = response.data ?? {};
  const columns = table.schema.fields.map((f) => f.name).filter((name) => name !== 'field' && name !== 'id');
  let row = 0;
  for (const [key, requested] of Object.entries(ids)) {
    const entities = typeof requested === 'string' ? [data[key]] : (data[key] as unknown[] | null) ?? requested.map(() => null);
    const requestedIds = typeof requested === 'string' ? [requested] : requested;
    if (entities.length !== requestedIds.length) problems.push(`${key}: JSON has ${entities.length} entities for ${requestedIds.length} ids`);
    for (let k = 0; k < requestedIds.length; k++, row++) {
      const at = `${key}[${k}]`;
      if (row >= table.numRows) {
        problems.push(`${at}: no row ${row} (the table has ${table.numRows})`);
        continue;
      }
      const arrowRow = table.get(row)!.toJSON() as Record<string, unknown>;
      if (arrowRow.field !== key) problems.push(`${at}: row ${row} is of root field ${String(arrowRow.field)}`);
      if (arrowRow.id !== requestedIds[k]) problems.push(`${at}: id ${String(arrowRow.id)}, requested ${requestedIds[k]}`);
      const entity = entities[k] as Record<string, unknown> | null | undefined;
      for (const column of columns) {
        const value = plain(arrowRow[column]);
        const dot = column.indexOf('.');
        const viewKey = column.slice(0, dot);
        const part = column.slice(dot + 1);
        const view = entity?.[viewKey] as Record<string, unknown> | null | undefined;
        if (!entity || !view) {
          if (value !== null) problems.push(`${at}.${column}: ${JSON.stringify(value)} where JSON has ${entity ? `${viewKey}: ${JSON.stringify(view ?? null)}` : 'no entity'}`);
          continue;
        }
        const stale = plain(arrowRow[`${viewKey}.stale`]);
        if (part === 'eventTime') {
          if (typeof value !== 'number') problems.push(`${at}.${column}: ${JSON.stringify(value)} for a value that is there`);
          else if ('eventTime' in view && Date.parse(String(view.eventTime)) !== value) problems.push(`${at}.${column}: ${new Date(value).toISOString()}, JSON ${String(view.eventTime)}`);
        } else if (part === 'stale') {
          if (typeof value !== 'boolean') problems.push(`${at}.${column}: ${JSON.stringify(value)} for a value that is there`);
          else if ('stale' in view && view.stale !== value) problems.push(`${at}.${column}: ${value}, JSON ${String(view.stale)}`);
        } else {
          if (stale === true && value !== null) problems.push(`${at}.${column}: ${JSON.stringify(value)} in a stale value`);
          // A feature this root field does not select (another one's, of a view key both use) is null.
          if (!(part in view)) {
            if (value !== null) problems.push(`${at}.${column}: ${JSON.stringify(value)}, not selected here`);
          } else if (JSON.stringify(value) !== JSON.stringify(view[part])) problems.push(`${at}.${column}: ${JSON.stringify(value)}, JSON ${JSON.stringify(view[part])}`);
        }
      }
    }
  }
  if (row !== table.numRows) problems.push(`the table has ${table.numRows} rows for ${row} requested ids`);
  return problems;
}

/** A decoded value as JSON would hold it: int64 as a number, a list as an array, a timestamp as ms. */
function plain(value: unknown): unknown {
  if (value === undefined) return null;
  if (typeof value === 'bigint') return Number(value);
  if (value !== null && typeof value === 'object' && Symbol.iterator in value && typeof value !== 'string') return Array.from(value as Iterable<unknown>, plain);
  return value;
}

function pathOf(error: unknown): string {
  return JSON.stringify((error as { path?: unknown }).path ?? null);
}

export function decodeArrow(bytes: Uint8Array): Table {
  return tableFromIPC(bytes);
}

/**
 * A real gateway (in this process, co-located) over two real `redis-server` shards behind the
 * client-side hash ring, with data of every kind a response can hold: users, items and merchants
 * 1–20 fresh, 21–25 stale (`writeStale`, to be called shortly before they are read: the store
 * expires a stale value one TTL later), the user `profile-only` with a profile alone, anything
 * else missing. `shards[1]` can be killed or hung to fail the values that live on it, and
 * `failsOn` says which those are.
 */
export interface ArrowFixture {
  readonly gateway: RunningGateway;
  readonly shards: readonly RedisProcess[];
  /** Whether the value of `view` for `id` lives on `shards[1]`. */
  onSecondShard(viewName: string, id: string): boolean;
  writeStale(): Promise<void>;
  close(): Promise<void>;
}

export async function startArrowFixture(env: Record<string, string> = {}, storeTimeoutMs = 2000): Promise<ArrowFixture> {
  const shards = [await RedisProcess.start(), await RedisProcess.start()];
  const urls = shards.map((s) => s.url);
  const writer = createStore({ kind: 'redis', urls, commandTimeoutMs: 2000 });
  // The breaker never opens here: a failed value's message stays the shard's own from one request to the next.
  const store = createStore({ kind: 'redis', urls, commandTimeoutMs: storeTimeoutMs, breaker: { errorPercent: 99, minCalls: 100_000, resetMs: 600_000 } });
  await eventually(() => writer.ping());
  await eventually(() => store.ping());
  const now = Date.now();
  await writeRows(writer, demoRows(registry, { eventTimeMs: now - 1000, counts: { user: 20, item: 20, merchant: 20 } }));
  const profile = activeVersionOf(registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'profile')!);
  await writer.write(profile, [{ entityId: 'profile-only', values: { sessionLength: 1, isPremium: true, country: 'DE', embedding: [0.5, -1e-7, 1e21] }, eventTimeMs: now - 1000 }]);
  const gateway = await startTestGateway(store, { MAX_BATCH_IDS: '20', ...env });
  const router = writer.backend as RedisBackend;
  return {
    gateway,
    shards,
    onSecondShard: (viewName, id) => {
      const view = activeVersionOf(registry.entities.flatMap((e) => e.views).find((v) => v.name === viewName)!);
      return router.shardOf(recordKey(view, id)) === shards[1]!.address;
    },
    writeStale: async () => {
      // Past each view's TTL by a few seconds: stale now, kept by the store for about one TTL more.
      const rows = [...demoRows(registry, { eventTimeMs: 0, counts: { user: 25, item: 25, merchant: 25 } })].filter((r) => Number(r.row.entityId) > 20);
      await writeRows(writer, rows.map((r) => ({ ...r, row: { ...r.row, eventTimeMs: Date.now() - r.view.ttlSeconds * 1000 - 10_000 } })));
    },
    close: async () => {
      await gateway.close();
      await store.close();
      await writer.close();
      for (const s of shards) await s.destroy();
    },
  };
}
