import type { ReadResult, StoredFeatures } from '../../store/online-store.js';
import { toGraphQLError } from '../../subgraphs/loaders.js';
import type { FeastReads } from './read.js';
import type { FeastRequest } from './request.js';

/**
 * Feast's `/get-online-features` JSON of a request's reads, as Feast 0.67's
 * feature server writes it (feature_server_utils.convert_response_to_dict) and
 * its RemoteOnlineStore client reads it:
 *
 *   {"results": [{"values": […], "statuses": […], "event_timestamps": […]}, …],
 *    "metadata": {"feature_names": […], "feature_view_metadata"?: [{name, version}]}}
 *
 * one result per column, join keys first (their values as the entity ids,
 * strings; PRESENT; the epoch as event time), then the features in the
 * order asked, one entry per entity row:
 *
 * - a fresh value: the value, `PRESENT`, its event time;
 * - a stored value with this feature null: `null`, `NULL_VALUE`, its event time;
 * - a stale value (older than the view's TTL): `null`, `OUTSIDE_MAX_AGE`, its event time —
 *   never the old value (ARCHITECTURE.md, decision 3);
 * - no value: `null`, `NOT_FOUND`, the epoch (`1970-01-01T00:00:00Z`, as Feast writes an unset time);
 * - a failed read (shard down, deadline): `null`, `INVALID`, the epoch, and an entry in a top-level
 *   `errors` list (`message`, `extensions` with the GraphQL path's code and shard, the view and the
 *   ids): the rest of the answer is served, as GraphQL serves partial results. Feast's client ignores
 *   the list and maps the status to FieldStatus.INVALID.
 *
 * Times are RFC 3339 in UTC with `Z`, milliseconds only when not zero (Feast's precision rule).
 * The client infers each value's type from its JSON token (python_values_to_proto_values), so a
 * Float feature is always written with a decimal point or an exponent (`1.0`, never `1`, which
 * would come back an INT64; a `[1.0, 2]` list would not convert at all). Only Float columns are
 * written number by number; every other column is one JSON.stringify.
 */
export function encodeFeast(request: FeastRequest, reads: FeastReads): string {
  const { plan, rows, keys } = request;
  const names: string[] = [];
  const results: string[] = [];
  if (keys.length > 0) {
    const present = repeated('"PRESENT"', rows);
    const epochs = repeated(epochJson, rows);
    for (const key of keys) {
      names.push(key.name);
      results.push(`{"values":${JSON.stringify(key.ids)},"statuses":${present},"event_timestamps":${epochs}}`);
    }
  }
  // Per view slot: each row's record (null: none or failed), its statuses and event times, once.
  const slots = plan.views.length;
  const records = new Array<(StoredFeatures | null)[]>(slots);
  const statusesOf = new Array<string[]>(slots);
  const statusJson = new Array<string>(slots);
  const timesJson = new Array<string>(slots);
  let errors: ErrorEntry[] | undefined;
  for (let slot = 0; slot < slots; slot++) {
    const answers = reads.results[slot]!;
    const at = reads.rowAt[slot]!;
    const recs = new Array<StoredFeatures | null>(rows);
    const statuses = new Array<string>(rows);
    const times = new Array<string>(rows);
    for (let r = 0; r < rows; r++) {
      const answer: ReadResult | Error = answers[at[r]!]!;
      if (answer === null) {
        recs[r] = null;
        statuses[r] = 'NOT_FOUND';
        times[r] = epoch;
      } else if (answer instanceof Error) {
        recs[r] = null;
        statuses[r] = 'INVALID';
        times[r] = epoch;
        (errors ??= []).push({ slot, error: answer, id: request.keys[request.keyOf[slot]!]!.ids[r]! });
      } else {
        recs[r] = answer.stale ? null : answer;
        statuses[r] = answer.stale ? 'OUTSIDE_MAX_AGE' : 'PRESENT';
        times[r] = feastTime(answer.eventTimeMs);
      }
    }
    records[slot] = recs;
    statusesOf[slot] = statuses;
    statusJson[slot] = JSON.stringify(statuses);
    timesJson[slot] = JSON.stringify(times);
  }

  for (const column of plan.columns) {
    names.push(column.name);
    const recs = records[column.slot]!;
    const feature = column.feature.name;
    let nulls = false;
    let values: string;
    if (column.float) {
      values = '[';
      for (let r = 0; r < rows; r++) {
        const v = recs[r]?.values[feature] ?? null;
        if (v === null && recs[r] !== null) nulls = true;
        if (r > 0) values += ',';
        values += v === null ? 'null' : Array.isArray(v) ? floatList(v as readonly number[]) : floatText(v as number);
      }
      values += ']';
    } else {
      const out = new Array<unknown>(rows);
      for (let r = 0; r < rows; r++) {
        const v = recs[r]?.values[feature] ?? null;
        if (v === null && recs[r] !== null) nulls = true;
        out[r] = v;
      }
      values = JSON.stringify(out);
    }
    let statuses = statusJson[column.slot]!;
    if (nulls) {
      // A value that is stored but has this feature null: NULL_VALUE in this column only.
      const own = statusesOf[column.slot]!.slice();
      for (let r = 0; r < rows; r++) if (recs[r] !== null && (recs[r]!.values[feature] ?? null) === null) own[r] = 'NULL_VALUE';
      statuses = JSON.stringify(own);
    }
    results.push(`{"values":${values},"statuses":${statuses},"event_timestamps":${timesJson[column.slot]!}}`);
  }

  let metadata = `{"feature_names":${JSON.stringify(names)}`;
  if (request.versionMetadata) {
    metadata += `,"feature_view_metadata":${JSON.stringify(plan.views.map((v) => ({ name: v.viewName, version: v.version })))}`;
  }
  metadata += '}';
  const body = `{"results":[${results.join(',')}],"metadata":${metadata}`;
  return errors ? `${body},"errors":${errorsJson(request, errors)}}` : `${body}}`;
}

const epoch = '1970-01-01T00:00:00Z';
const epochJson = JSON.stringify(epoch);

/** `[item,item,…]` with `n` items. */
function repeated(item: string, n: number): string {
  return n === 0 ? '[]' : `[${`${item},`.repeat(n - 1)}${item}]`;
}

/** RFC 3339 UTC with `Z`; milliseconds only when there are some, as Feast writes a Timestamp. */
export function feastTime(ms: number): string {
  const iso = new Date(ms).toISOString();
  return ms % 1000 === 0 ? iso.slice(0, -5) + 'Z' : iso;
}

/**
 * A Float as a JSON number token that reads back as a float: an integral value gets `.0`
 * (`1` → `1.0`, `-0` → `-0.0`); large and small ones keep JS's exponent (`1e+21`, `1e-7`),
 * which Python reads as float too. Not finite (the codec stores none): Feast's string forms.
 */
export function floatText(v: number): string {
  if (Number.isInteger(v)) {
    if (Object.is(v, -0)) return '-0.0';
    const s = String(v);
    return s.includes('e') ? s : `${s}.0`;
  }
  if (Number.isFinite(v)) return String(v);
  return Number.isNaN(v) ? '"NaN"' : v > 0 ? '"Infinity"' : '"-Infinity"';
}

function floatList(list: readonly number[]): string {
  let out = '[';
  for (let i = 0; i < list.length; i++) out += (i > 0 ? ',' : '') + floatText(list[i]!);
  return out + ']';
}

interface ErrorEntry {
  readonly slot: number;
  readonly error: Error;
  readonly id: string;
}

/**
 * One entry per view and error message, with the ids it failed, in the GraphQL path's terms
 * (loaders.toGraphQLError: STORE_UNAVAILABLE, DEADLINE_EXCEEDED, STORE_CORRUPT_VALUE, the shard).
 */
function errorsJson(request: FeastRequest, entries: readonly ErrorEntry[]): string {
  const grouped = new Map<string, { message: string; extensions: Record<string, unknown>; ids: Set<string> }>();
  for (const { slot, error, id } of entries) {
    const view = request.plan.views[slot]!;
    const key = `${slot}\n${error.message}`;
    let group = grouped.get(key);
    if (!group) {
      const graphqlError = toGraphQLError(error);
      group = {
        message: graphqlError.message,
        extensions: { ...graphqlError.extensions, view: `${view.viewName}:v${view.version}`, join_key: request.keys[request.keyOf[slot]!]!.name },
        ids: new Set(),
      };
      grouped.set(key, group);
    }
    group.ids.add(id);
  }
  return JSON.stringify([...grouped.values()].map((g) => ({ message: g.message, extensions: { ...g.extensions, ids: [...g.ids] } })));
}
