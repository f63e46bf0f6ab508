import { GraphQLError } from 'graphql';
import { hasRole, principalOf } from '../auth/principal.js';
import { encodeChange, pushSourceTopic, type FeatureChange } from '../eventlog/change-event.js';
import type { EventLog } from '../eventlog/event-log.js';
import { ErrorCode } from '../runtime/errors.js';
import { log as rootLog } from '../runtime/log.js';
import { pushedRows } from '../runtime/metrics.js';
import { pushFieldsOf } from '../schema/sdl.js';
import type { Entity, ViewVersion } from '../schema/types.js';
import { formatTtl } from '../schema/types.js';
import { CodecError, codecFor, type FeatureValues } from '../store/codec.js';
import type { FeatureRow, OnlineStore } from '../store/online-store.js';
import { toGraphQLError } from './loaders.js';

/**
 * The push API: services write feature values of a view directly, like
 * Feast's push (docs/decisions/0015-push-api.md). GraphQL's input types
 * already reject a missing feature or a wrong scalar type; this module adds
 * what types cannot say, checks the whole call before writing any of it,
 * writes through the online store (awaited, so a read right after sees the
 * values) and then produces one change event per row for subscribers.
 */

/** Where push change events go: the gateway's event log when co-located, Kafka for a subgraph process. */
export type ChangeSink = Pick<EventLog, 'produce'>;

export interface PushLimits {
  /** Rows per call (MAX_BATCH_IDS, as for reads). */
  readonly maxBatchIds: number;
  /** How far a row's event time may be ahead of the server's clock (PUSH_MAX_FUTURE_MS). */
  readonly maxFutureMs: number;
}

/** One row as the mutation receives it: `id`, optional `eventTime`, and the version's features. */
export type PushRowInput = Readonly<Record<string, unknown>>;

/** A push call broke a rule; nothing of it was written. `row` is the index in `rows`, `field` the input field at fault. */
export class PushError extends Error {
  override name = 'PushError';
  constructor(
    readonly code: typeof ErrorCode.PushInvalid | typeof ErrorCode.BatchTooLarge,
    readonly view: string,
    readonly row: number | null,
    readonly field: string | null,
    readonly reason: string,
  ) {
    super(`push to ${view}: ${row === null ? '' : `rows[${row}]${field ? `.${field}` : ''}: `}${reason}`);
  }
}

/** ISO-8601 date and time with an explicit zone: a zone-less time would be read in the server's zone. */
const isoDateTime = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|([+-])(\d{2}):(\d{2}))$/;

/** Milliseconds since the epoch of a strict ISO-8601 date-time, or null when it is not one (or not a real date, like Feb 30). */
export function parseEventTime(text: string): number | null {
  const m = isoDateTime.exec(text);
  if (!m) return null;
  const [year, month, day, hour, minute] = [1, 2, 3, 4, 5].map((i) => Number(m[i]));
  const second = m[6] === undefined ? 0 : Number(m[6]);
  const ms = m[7] === undefined ? 0 : Math.floor(Number(`0.${m[7]}`) * 1000);
  if (month! < 1 || month! > 12 || day! < 1 || hour! > 23 || minute! > 59 || second > 59) return null;
  const local = Date.UTC(year!, month! - 1, day!, hour, minute, second, ms);
  // Date.UTC rolls Feb 30 over into March: a changed day means the date does not exist.
  if (new Date(local).getUTCDate() !== day) return null;
  let offsetMinutes = 0;
  if (m[8] !== 'Z') {
    const [oh, om] = [Number(m[10]), Number(m[11])];
    if (oh > 23 || om > 59) return null;
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const at = local - offsetMinutes * 60_000;
  return at >= 0 ? at : null;
}

/**
 * Checks a whole push call and returns the rows to write, or throws a
 * PushError naming the first row and field at fault. Nothing is written
 * before this returns, so a rejected call writes nothing.
 */
export function validatePush(view: ViewVersion, rows: readonly PushRowInput[], nowMs: number, limits: PushLimits): FeatureRow[] {
  const label = `${view.viewName} v${view.version}`;
  const fail = (row: number | null, field: string | null, reason: string, code: PushError['code'] = ErrorCode.PushInvalid): never => {
    throw new PushError(code, label, row, field, reason);
  };
  if (!Array.isArray(rows) || rows.length === 0) fail(null, null, '`rows` must hold at least one row');
  if (rows.length > limits.maxBatchIds) {
    fail(null, null, `${rows.length} rows; at most ${limits.maxBatchIds} per call (MAX_BATCH_IDS)`, ErrorCode.BatchTooLarge);
  }
  const codec = codecFor(view);
  const known = new Set(['id', 'eventTime', ...view.features.map((f) => f.name)]);
  const ttlMs = view.ttlSeconds * 1000;
  const firstRowOf = new Map<string, number>();
  const out: FeatureRow[] = [];

  rows.forEach((row, i) => {
    if (typeof row !== 'object' || row === null || Array.isArray(row)) fail(i, null, 'must be an object');
    const unknown = Object.keys(row).find((key) => !known.has(key));
    if (unknown !== undefined) fail(i, unknown, `not a feature of ${label}; its features are ${view.features.map((f) => f.name).join(', ')}`);

    const id = row.id;
    if (typeof id !== 'string' || id.trim() === '') fail(i, 'id', `must be a non-empty id, got ${JSON.stringify(id)}`);
    const entityId = id as string;
    const seen = firstRowOf.get(entityId);
    if (seen !== undefined) fail(i, 'id', `id ${JSON.stringify(entityId)} is also in rows[${seen}]; a call holds at most one value per id`);
    firstRowOf.set(entityId, i);

    let eventTimeMs = nowMs;
    if (row.eventTime !== undefined && row.eventTime !== null) {
      const parsed = typeof row.eventTime === 'string' ? parseEventTime(row.eventTime) : null;
      if (parsed === null) {
        fail(i, 'eventTime', `must be an ISO-8601 date-time with a zone, e.g. 2026-11-26T12:00:00Z; got ${JSON.stringify(row.eventTime)}`);
      }
      eventTimeMs = parsed!;
      if (eventTimeMs > nowMs + limits.maxFutureMs) {
        fail(i, 'eventTime', `${row.eventTime} is more than ${limits.maxFutureMs} ms ahead of the server's clock (${new Date(nowMs).toISOString()}; PUSH_MAX_FUTURE_MS)`);
      }
      if (nowMs - eventTimeMs > ttlMs) {
        fail(i, 'eventTime', `${row.eventTime} is older than the view's TTL (${formatTtl(view.ttlSeconds)}): the value would only ever be served as stale`);
      }
    }

    const values: FeatureValues = {};
    for (const feature of view.features) {
      const value = row[feature.name];
      if (value === undefined || value === null) fail(i, feature.name, 'is required: a push replaces the whole stored value');
      if (feature.type.list && Array.isArray(value) && value.length === 0) fail(i, feature.name, `must be a non-empty list (${feature.typeName})`);
      try {
        // check() answers every feature of the view (null for absent ones): keep this one's.
        values[feature.name] = codec.check({ [feature.name]: value })[feature.name]!;
      } catch (error) {
        if (!(error instanceof CodecError)) throw error;
        // The codec names the view first; the row and field are named here instead.
        fail(i, feature.name, error.message.slice(error.view.length + 2));
      }
    }
    out.push({ entityId, values, eventTimeMs });
  });
  return out;
}

export interface PushDeps {
  readonly store: OnlineStore;
  readonly limits: PushLimits;
  /** Absent: no change feed in this deployment (no subscriptions to notify). */
  readonly changes?: ChangeSink | undefined;
  readonly now?: () => number;
}

export interface PushResult {
  readonly view: string;
  readonly version: number;
  readonly written: number;
}

const log = rootLog.child({ component: 'push' });

/** The Mutation resolvers of an entity's pushable views (empty when it has none). */
export function pushResolvers(entity: Entity, deps: PushDeps): Record<string, (root: unknown, args: { rows: PushRowInput[] }, context: unknown) => Promise<PushResult>> {
  const now = deps.now ?? Date.now;
  const resolvers: Record<string, (root: unknown, args: { rows: PushRowInput[] }, context: unknown) => Promise<PushResult>> = {};
  for (const [field, view] of pushFieldsOf(entity)) {
    const label = `${view.viewName}:v${view.version}`;
    resolvers[field] = async (_root, args, context) => {
      const count = Array.isArray(args.rows) ? args.rows.length : 0;
      const principal = principalOf(context);
      // The gateway's policy refuses non-admin mutations earlier; this is the subgraph's own defence.
      if (!hasRole(principal, 'admin')) {
        pushedRows.inc({ view: label, outcome: 'forbidden' }, count);
        throw new GraphQLError(`${field} needs the admin role; ${principal ? `principal "${principal.id}" has ${[...principal.roles].join(', ') || 'no roles'}` : 'the request is not authenticated'}`, {
          extensions: { code: ErrorCode.Forbidden, field, requiredRole: 'admin' },
        });
      }
      let rows: FeatureRow[];
      try {
        rows = validatePush(view, args.rows, now(), deps.limits);
      } catch (error) {
        if (!(error instanceof PushError)) throw error;
        pushedRows.inc({ view: label, outcome: 'invalid' }, count);
        throw new GraphQLError(error.message, {
          extensions: {
            code: error.code, view: view.viewName, version: view.version,
            ...(error.row === null ? {} : { row: error.row }), ...(error.field === null ? {} : { field: error.field }),
            ...(error.code === ErrorCode.BatchTooLarge ? { max: deps.limits.maxBatchIds } : {}),
          },
        });
      }
      try {
        await deps.store.write(view, rows);
      } catch (error) {
        pushedRows.inc({ view: label, outcome: 'store_error' }, count);
        throw toGraphQLError(error);
      }
      if (deps.changes) {
        try {
          await deps.changes.produce(rows.map((row) => encodeChange(changeOf(entity, view, row))));
        } catch (error) {
          pushedRows.inc({ view: label, outcome: 'unpublished' }, count);
          log.error({ view: label, rows: count, principal: principal!.id, err: (error as Error).message }, 'push written but its change events were not produced');
          throw new GraphQLError(
            `${count} row(s) of ${view.viewName} v${view.version} were written, but their change events could not be produced ` +
              `(${(error as Error).message}); subscribers were not notified. Pushing the same rows again is safe.`,
            { extensions: { code: ErrorCode.PushNotPublished, view: view.viewName, version: view.version, written: count } },
          );
        }
      }
      pushedRows.inc({ view: label, outcome: 'written' }, count);
      // A write by a person or service outside the pipeline: worth one line for the audit trail.
      log.info({ view: label, rows: count, principal: principal!.id, via: principal!.via }, 'push written');
      return { view: view.viewName, version: view.version, written: count };
    };
  }
  return resolvers;
}

/** The change event of a pushed row. A push has no source event, so its source is the push itself, at its event time. */
function changeOf(entity: Entity, view: ViewVersion, row: FeatureRow): FeatureChange {
  return {
    entity: entity.name,
    id: row.entityId,
    view: view.viewName,
    version: view.version,
    values: row.values,
    eventTime: new Date(row.eventTimeMs).toISOString(),
    source: { topic: pushSourceTopic, partition: 0, offset: row.eventTimeMs },
  };
}
