import type { ReadResult, StoredFeatures } from '../../store/online-store.js';
import { isoTime } from '../encoders/graphql-json.js';
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
 * would come back an INT64; a `[1.0, 2]` list would not convert at all). Every column is one
 * JSON.stringify, except a Float column holding an integral value, written number by number.
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
  // Per view slot, once per distinct id (rows repeating an id share its answer): the record (null:
  // none, stale or failed), the status and the JSON of the event time; then each row's, by `rowAt`.
  const slots = plan.views.length;
  const records = new Array<(StoredFeatures | null)[]>(slots);
  const statusesOf = new Array<string[]>(slots);
  const statusJson = new Array<string>(slots);
  const timesJson = new Array<string>(slots);
  let errors: ErrorEntry[] | undefined;
  for (let slot = 0; slot < slots; slot++) {
    const answers = reads.results[slot]!;
    const at = reads.rowAt[slot]!;
    const n = answers.length;
    const recs = new Array<StoredFeatures | null>(n);
    const statuses = new Array<string>(n);
    const times = new Array<string>(n);
    for (let d = 0; d < n; d++) {
      const answer: ReadResult | Error = answers[d]!;
      if (answer === null) {
        recs[d] = null;
        statuses[d] = 'NOT_FOUND';
        times[d] = epoch;
      } else if (answer instanceof Error) {
        recs[d] = null;
        statuses[d] = 'INVALID';
        times[d] = epoch;
      } else {
        recs[d] = answer.stale ? null : answer;
        statuses[d] = answer.stale ? 'OUTSIDE_MAX_AGE' : 'PRESENT';
        times[d] = feastTime(answer.eventTimeMs);
      }
    }
    // Arrays and one JSON.stringify each, not `+=` per row: a rope of small pieces costs more to
    // flatten when the body is joined than it saves (decision 0027).
    const rowStatuses = new Array<string>(rows);
    const rowTimes = new Array<string>(rows);
    for (let r = 0; r < rows; r++) {
      const d = at[r]!;
      rowStatuses[r] = statuses[d]!;
      rowTimes[r] = times[d]!;
      if (statuses[d] === 'INVALID') (errors ??= []).push({ slot, error: answers[d] as Error, id: request.keys[request.keyOf[slot]!]!.ids[r]! });
    }
    records[slot] = recs;
    statusesOf[slot] = statuses;
    statusJson[slot] = JSON.stringify(rowStatuses);
    timesJson[slot] = JSON.stringify(rowTimes);
  }

  for (const column of plan.columns) {
    names.push(column.name);
    const recs = records[column.slot]!;
    const at = reads.rowAt[column.slot]!;
    const feature = column.feature.name;
    let nulls = false;
    let values: string;
    const out = new Array<unknown>(rows);
    // A Float column JSON.stringify cannot write: some value integral (`1` for 1.0) or not finite.
    let integral = false;
    for (let r = 0; r < rows; r++) {
      const rec = recs[at[r]!]!;
      const v = rec === null ? null : rec.values[feature] ?? null;
      if (v === null && rec !== null) nulls = true;
      if (column.float && v !== null && !integral) integral = Array.isArray(v) ? !(v as readonly number[]).every(writesAsFloat) : !writesAsFloat(v as number);
      out[r] = v;
    }
    if (integral) {
      // Number by number, each distinct answer once, joined (flat strings, no rope).
      const texts = new Array<string>(recs.length);
      for (let d = 0; d < recs.length; d++) {
        const v = recs[d]?.values[feature] ?? null;
        texts[d] = v === null ? 'null' : Array.isArray(v) ? floatList(v as readonly number[]) : floatText(v as number);
      }
      const parts = new Array<string>(rows);
      for (let r = 0; r < rows; r++) parts[r] = texts[at[r]!]!;
      values = `[${parts.join(',')}]`;
    } else values = JSON.stringify(out);
    let statuses = statusJson[column.slot]!;
    if (nulls) {
      // A value that is stored but has this feature null: NULL_VALUE in this column only.
      const own = new Array<string>(rows);
      const base = statusesOf[column.slot]!;
      for (let r = 0; r < rows; r++) {
        const rec = recs[at[r]!]!;
        own[r] = rec !== null && (rec.values[feature] ?? null) === null ? 'NULL_VALUE' : base[at[r]!]!;
      }
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
const epochJson = `"${epoch}"`;

/** `[item,item,…]` with `n` items. */
function repeated(item: string, n: number): string {
  return n === 0 ? '[]' : `[${`${item},`.repeat(n - 1)}${item}]`;
}

/**
 * RFC 3339 UTC with `Z`; milliseconds only when there are some, as Feast writes a Timestamp. From
 * the GraphQL path's own `eventTime` writer (no Date per value: it was most of this encoder's time).
 */
export function feastTime(ms: number): string {
  const iso = isoTime(ms);
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
  const parts = new Array<string>(list.length);
  for (let i = 0; i < list.length; i++) parts[i] = floatText(list[i]!);
  return `[${parts.join(',')}]`;
}

/** JSON.stringify writes this number as a float token already (a fraction, or an exponent). */
function writesAsFloat(v: number): boolean {
  return Number.isFinite(v) && (!Number.isInteger(v) || Math.abs(v) >= 1e21);
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
