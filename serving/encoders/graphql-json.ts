import { PartKind, readAt, type PlanResult, type RootPlan, type ViewSelection } from '../plan.js';
import type { StoredFeatures } from '../../store/online-store.js';

/**
 * A plan's result as the GraphQL JSON response body the generic federated path writes for the
 * same request, byte for byte (test/integration/fast-path.test.ts compares them): plain objects
 * of fixed shape written by one JSON.stringify and a newline, which is what Apollo Server
 * writes. V8 writes numbers and strings straight into one flat buffer, where text
 * concatenated piece by piece built a rope of a few hundred parts that had to be flattened
 * before it could be sent (decision 0027).
 *
 * Only for a result with no failed read: a partly failed one is the generic path's to answer,
 * from the result's reads (`primedReadsOf`), so its errors are the generic path's own.
 */
export function encodeGraphQLJson(result: PlanResult): string {
  return JSON.stringify({ data: graphqlData(result) }) + '\n';
}

/** The response's `data` object. */
export function graphqlData(result: PlanResult): Record<string, unknown> {
  if (result.failed) throw new Error(`${result.plan.name}: a partly failed result has no GraphQL JSON form here; the generic path answers it`);
  const roots = result.plan.roots;
  const data: Record<string, unknown> = {};
  for (let r = 0; r < roots.length; r++) {
    const root = roots[r]!;
    const ids = result.ids[r]!;
    if (typeof ids === 'string') data[root.responseKey] = entityObject(result, root, ids);
    else {
      const list = new Array<Record<string, unknown> | null>(ids.length);
      for (let k = 0; k < ids.length; k++) list[k] = entityObject(result, root, ids[k]!);
      data[root.responseKey] = list;
    }
  }
  return data;
}

/** One entity's object, or null when none of its existence views has a value (no read failed). */
function entityObject(result: PlanResult, root: RootPlan, id: string): Record<string, unknown> | null {
  let exists = false;
  const slots = root.existenceSlots;
  for (let j = 0; j < slots.length; j++) {
    if (readAt(result, slots[j]!, id) !== null) {
      exists = true;
      break;
    }
  }
  if (!exists) return null;
  const out: Record<string, unknown> = {};
  const fields = root.fields;
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i]!;
    if (field.kind === 'id') out[field.responseKey] = id;
    else if (field.kind === 'typename') out[field.responseKey] = root.entity.typeName;
    else out[field.responseKey] = viewObject(field.selection!, readAt(result, field.slot, id) as StoredFeatures | null);
  }
  return out;
}

/** The response object of one view, or null when the value is missing. */
function viewObject(selection: ViewSelection, record: StoredFeatures | null): Record<string, unknown> | null {
  if (record === null) return null;
  const stale = record.stale;
  const values = record.values;
  const { responseKeys, kinds, names } = selection;
  const n = responseKeys.length;
  // Properties in the same order every time: one hidden class per view selection.
  const out: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    switch (kinds[i]!) {
      case PartKind.EventTime: out[responseKeys[i]!] = isoTime(record.eventTimeMs); break;
      case PartKind.Stale: out[responseKeys[i]!] = stale; break;
      case PartKind.TypeName: out[responseKeys[i]!] = selection.typeName; break;
      // Int and Float are finite numbers (the codec refuses others): JSON.stringify writes them as Apollo does.
      default: out[responseKeys[i]!] = stale ? null : values[names[i]!] ?? null;
    }
  }
  return out;
}

/**
 * `Date.toISOString()` of an event time, as the generic path's DateTime serializes it, without a
 * Date per value: the date part is made once per day (one entry, kept), the time of day from
 * tables. Outside 0000–9999 (where the ISO form changes shape) and for anything odd it is
 * toISOString itself.
 */
export function isoTime(ms: number): string {
  if (!(ms >= 0 && ms < 253402300800000) || !Number.isInteger(ms)) return new Date(ms).toISOString();
  const day = Math.floor(ms / 86_400_000);
  if (day !== isoDay) {
    isoDay = day;
    isoDatePrefix = new Date(day * 86_400_000).toISOString().slice(0, 11);
  }
  let rest = ms - day * 86_400_000;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const sec = Math.floor(rest / 1000);
  return isoDatePrefix + twoDigits[h]! + ':' + twoDigits[m]! + ':' + twoDigits[sec]! + '.' + threeDigits[rest - sec * 1000]! + 'Z';
}
let isoDay = -1;
let isoDatePrefix = '';
const twoDigits = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));
const threeDigits = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));
