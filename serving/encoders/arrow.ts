import {
  Bool, Data, DataType, Dictionary, Field, Float64, Int32, Int64, List, RecordBatch, RecordBatchStreamWriter, Schema, Struct,
  TimestampMillisecond, Utf8, makeData, makeVector, type Vector,
} from 'apache-arrow';
import type { Feature, ScalarTypeName, ViewVersion } from '../../schema/types.js';
import type { StoredFeatures } from '../../store/online-store.js';
import type { FeatureValue } from '../../store/codec.js';
import { responseErrors } from '../errors.js';
import { PartKind, idAt, readAt, rowCount, type Plan, type PlanResult } from '../plan.js';

/** The media type of an Arrow IPC stream. */
export const ARROW_STREAM = 'application/vnd.apache.arrow.stream';

/**
 * A plan's result as an Arrow IPC stream (`application/vnd.apache.arrow.stream`), decision 0031.
 *
 * One stream, one schema, **one record batch per root field** in the plan's order, **one row
 * per requested id** in request order (duplicates included). An IPC stream has a single
 * schema, so the schema is the union of every root field's columns:
 *
 *   field                    dictionary<int32, utf8>, not null: the row's root field (response key)
 *   id                       utf8, not null: the id requested
 *   <view>.<feature>         one per selected feature, typed from the registry (below)
 *   <view>.eventTime         timestamp[ms, tz=UTC]
 *   <view>.stale             bool
 *
 * `<view>` and `<feature>` are response keys (aliases included). Every selected view has its
 * `eventTime` and `stale` columns whether or not the operation selects them: without them a
 * row of nulls could be a missing value or a stale one. A column a root field does not select
 * is null in its batch. Nulls: a missing, stale or failed value has null features; a missing or
 * failed one also a null `eventTime` and `stale`. An entity the JSON answer gives as null (no
 * value in any of its views) is a row whose view columns are all null.
 *
 * Types: Float → float64, Int → int64 (the registry's Int is 32-bit, store/codec.ts refuses
 * anything else, so every value is exact), Boolean → bool, String → utf8, `[T!]` → list<T>
 * with non-null items (`[Float!]` is list<float64>: the stored values are doubles and float32
 * would not equal the JSON answer).
 *
 * Errors: the schema's metadata key `errors` holds the GraphQL errors list of the response as
 * JSON (`[]` when none), the same errors (message, path, extensions with code and shard) as the
 * JSON answer of the same request; the failed rows' values are null.
 *
 * It takes the plan's typed result, not GraphQL JSON: any producer of a `PlanResult` (the
 * compiled persisted operations, the Feast-compatible endpoint) is encoded by it.
 */

/** A plan has no Arrow form (two of its columns would share a name with different meanings). */
export class NoArrowFormError extends Error {
  override name = 'NoArrowFormError';
  constructor(readonly plan: string, readonly reason: string) {
    super(`operation ${plan} has no Arrow form: ${reason}`);
  }
}

/** What one column holds. */
const enum ColumnKind { Feature, EventTime, Stale }

interface Column {
  readonly name: string;
  readonly kind: ColumnKind;
  /** Its meaning, for merging columns of root fields that select the same view field: view, version and feature. */
  readonly meaning: string;
  readonly type: DataType;
  /** For a feature column: the feature's name (its key in the stored values) and type. */
  readonly feature: Feature | null;
  /** Per root field: the slot of the view it reads, or -1 where that root field does not select it. */
  readonly slots: number[];
}

/** A plan's Arrow schema and columns, made once per plan. */
export interface ArrowForm {
  readonly plan: Plan;
  readonly fields: readonly Field[];
  readonly columns: readonly Column[];
  /** The `field` column's dictionary: the root fields' response keys. */
  readonly rootKeys: Vector<Utf8>;
}

const forms = new WeakMap<Plan, ArrowForm | string>();

/** The plan's Arrow form, or why it has none (made once per plan). */
export function arrowForm(plan: Plan): ArrowForm | string {
  let form = forms.get(plan);
  if (form === undefined) {
    form = makeForm(plan);
    forms.set(plan, form);
  }
  return form;
}

function makeForm(plan: Plan): ArrowForm | string {
  const columns: Column[] = [];
  const byName = new Map<string, Column>();
  const add = (r: number, name: string, kind: ColumnKind, view: ViewVersion, slot: number, feature: Feature | null): string | undefined => {
    const meaning = `${view.viewName}:v${view.version}:${kind === ColumnKind.Feature ? `feature ${feature!.name}` : kind === ColumnKind.EventTime ? 'eventTime' : 'stale'}`;
    let column = byName.get(name);
    if (!column) {
      const type = kind === ColumnKind.Feature ? featureType(feature!) : kind === ColumnKind.EventTime ? new TimestampMillisecond('UTC') : new Bool();
      column = { name, kind, meaning, type, feature, slots: plan.roots.map(() => -1) };
      byName.set(name, column);
      columns.push(column);
    } else if (column.meaning !== meaning || column.slots[r] !== -1) {
      return `column ${name} would hold both ${column.meaning} and ${meaning}`;
    }
    column.slots[r] = slot;
    return undefined;
  };
  if (plan.roots.length === 0) return 'it has no root field';
  for (let r = 0; r < plan.roots.length; r++) {
    const root = plan.roots[r]!;
    let views = 0;
    for (const field of root.fields) {
      if (field.kind !== 'view') continue;
      views++;
      const selection = field.selection!;
      for (let i = 0; i < selection.kinds.length; i++) {
        const kind = selection.kinds[i]!;
        if (kind === PartKind.EventTime || kind === PartKind.Stale || kind === PartKind.TypeName) continue;
        const problem = add(r, `${field.responseKey}.${selection.responseKeys[i]}`, ColumnKind.Feature, selection.view, field.slot, selection.features[i]!);
        if (problem) return problem;
      }
      const problem = add(r, `${field.responseKey}.eventTime`, ColumnKind.EventTime, selection.view, field.slot, null)
        ?? add(r, `${field.responseKey}.stale`, ColumnKind.Stale, selection.view, field.slot, null);
      if (problem) return problem;
    }
    // With no view selected a row would say nothing but its id: whether the entity exists is not a column.
    if (views === 0) return `root field ${root.responseKey} selects no feature view`;
  }
  for (const reserved of ['field', 'id']) if (byName.has(reserved)) return `column ${reserved} is reserved`;
  const keys = plan.roots.map((r) => r.responseKey);
  const fields = [
    new Field('field', new Dictionary(new Utf8(), new Int32(), 0), false),
    new Field('id', new Utf8(), false),
    ...columns.map((c) => new Field(c.name, c.type, true)),
  ];
  return { plan, fields, columns, rootKeys: makeVector(utf8Data(keys)) };
}

function featureType(feature: Feature): DataType {
  const scalar = scalarType(feature.type.scalar);
  return feature.type.list ? new List(new Field('item', scalar, false)) : scalar;
}

function scalarType(scalar: ScalarTypeName): DataType {
  switch (scalar) {
    case 'Float': return new Float64();
    case 'Int': return new Int64();
    case 'Boolean': return new Bool();
    case 'String': return new Utf8();
  }
}

/** The result as the bytes of one Arrow IPC stream. Throws NoArrowFormError for a plan without one. */
export function encodeArrow(result: PlanResult): Uint8Array {
  const form = arrowForm(result.plan);
  if (typeof form === 'string') throw new NoArrowFormError(result.plan.name, form);
  const schema = new Schema(form.fields as Field[], new Map([['errors', JSON.stringify(responseErrors(result))]]));
  const type = new Struct(schema.fields);
  const batches: RecordBatch[] = [];
  for (let r = 0; r < form.plan.roots.length; r++) {
    const n = rowCount(result, r);
    const ids = new Array<string>(n);
    for (let k = 0; k < n; k++) ids[k] = idAt(result, r, k);
    const children: Data[] = [
      makeData({ type: schema.fields[0]!.type as Dictionary<Utf8, Int32>, length: n, nullCount: 0, data: new Int32Array(n).fill(r), dictionary: form.rootKeys }),
      utf8Data(ids),
    ];
    for (const column of form.columns) {
      const slot = column.slots[r]!;
      // Per row, the value as read: null where it is missing or failed, or where this root field does not select the column.
      const records = new Array<StoredFeatures | null>(n);
      for (let k = 0; k < n; k++) {
        const read = slot < 0 ? null : readAt(result, slot, ids[k]!);
        records[k] = read instanceof Error ? null : read;
      }
      children.push(columnData(column, records));
    }
    batches.push(new RecordBatch(schema, makeData({ type, length: n, nullCount: 0, children })));
  }
  // An empty batch list would write a schema and no batch; a root field with no ids still has its (empty) batch.
  return RecordBatchStreamWriter.writeAll(batches).toUint8Array(true);
}

function columnData(column: Column, records: readonly (StoredFeatures | null)[]): Data {
  switch (column.kind) {
    case ColumnKind.EventTime: {
      const times = new Array<number | null>(records.length);
      for (let k = 0; k < records.length; k++) times[k] = records[k]?.eventTimeMs ?? null;
      return int64Data(new TimestampMillisecond('UTC'), times);
    }
    case ColumnKind.Stale: {
      const stale = new Array<boolean | null>(records.length);
      for (let k = 0; k < records.length; k++) stale[k] = records[k]?.stale ?? null;
      return boolData(stale);
    }
    case ColumnKind.Feature: {
      const feature = column.feature!;
      const values = new Array<FeatureValue | null>(records.length);
      for (let k = 0; k < records.length; k++) {
        const record = records[k];
        // A stale value is served with null features (decision 3).
        values[k] = record && !record.stale ? (record.values[feature.name] ?? null) : null;
      }
      if (feature.type.list) return listData(column.type as List, feature.type.scalar, values as (readonly unknown[] | null)[]);
      return scalarData(feature.type.scalar, values);
    }
  }
}

function scalarData(scalar: ScalarTypeName, values: readonly unknown[]): Data {
  switch (scalar) {
    case 'Float': return float64Data(values as (number | null)[]);
    case 'Int': return int64Data(new Int64(), values as (number | null)[]);
    case 'Boolean': return boolData(values as (boolean | null)[]);
    case 'String': return utf8Data(values as (string | null)[]);
  }
}

/** The validity bitmap of `values` (bit set: not null) and its null count; no bitmap when nothing is null. */
function validity(values: readonly unknown[]): { nullBitmap: Uint8Array | undefined; nullCount: number } {
  let nullCount = 0;
  for (let k = 0; k < values.length; k++) if (values[k] === null) nullCount++;
  if (nullCount === 0) return { nullBitmap: undefined, nullCount };
  const nullBitmap = new Uint8Array((values.length + 7) >> 3);
  for (let k = 0; k < values.length; k++) if (values[k] !== null) nullBitmap[k >> 3]! |= 1 << (k & 7);
  return { nullBitmap, nullCount };
}

function float64Data(values: readonly (number | null)[]): Data {
  const data = new Float64Array(values.length);
  for (let k = 0; k < values.length; k++) data[k] = values[k] ?? 0;
  return makeData({ type: new Float64(), length: values.length, data, ...validity(values) });
}

/**
 * 64-bit integers (Int64 features, millisecond timestamps) without a BigInt per value: each is
 * an integer within ±2^53 (a 32-bit Int, an event time in ms), written as its two 32-bit halves.
 */
function int64Data(type: Int64 | TimestampMillisecond, values: readonly (number | null)[]): Data {
  const data = new BigInt64Array(values.length);
  const halves = new Int32Array(data.buffer);
  for (let k = 0; k < values.length; k++) {
    const v = values[k] ?? 0;
    const high = Math.floor(v / 4294967296);
    halves[2 * k] = v - high * 4294967296; // the low half, 0..2^32-1, stored as its 32 bits
    halves[2 * k + 1] = high;
  }
  const props = { length: values.length, data, ...validity(values) };
  return type instanceof Int64 ? makeData({ type, ...props }) : makeData({ type, ...props });
}

function boolData(values: readonly (boolean | null)[]): Data {
  const data = new Uint8Array((values.length + 7) >> 3);
  for (let k = 0; k < values.length; k++) if (values[k] === true) data[k >> 3]! |= 1 << (k & 7);
  return makeData({ type: new Bool(), length: values.length, data, ...validity(values) });
}

/** UTF-8 strings: offsets and one buffer, written with Buffer.write (no encoder object per value). */
function utf8Data(values: readonly (string | null)[]): Data<Utf8> {
  const offsets = new Int32Array(values.length + 1);
  let total = 0;
  for (let k = 0; k < values.length; k++) {
    const v = values[k];
    if (v !== null && v !== undefined) total += Buffer.byteLength(v, 'utf8');
    offsets[k + 1] = total;
  }
  const bytes = Buffer.allocUnsafe(total);
  for (let k = 0; k < values.length; k++) {
    const v = values[k];
    if (v !== null && v !== undefined) bytes.write(v, offsets[k]!, 'utf8');
  }
  return makeData({ type: new Utf8(), length: values.length, valueOffsets: offsets, data: bytes, ...validity(values) });
}

function listData(type: List, scalar: ScalarTypeName, values: readonly (readonly unknown[] | null)[]): Data {
  const offsets = new Int32Array(values.length + 1);
  const items: unknown[] = [];
  for (let k = 0; k < values.length; k++) {
    const list = values[k];
    if (list) for (let i = 0; i < list.length; i++) items.push(list[i]);
    offsets[k + 1] = items.length;
  }
  return makeData({ type, length: values.length, valueOffsets: offsets, child: scalarData(scalar, items), ...validity(values) });
}
