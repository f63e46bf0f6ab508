import { Bool, DataType, Dictionary, Field, Float64, Int32, Int64, List, Message, Schema, TimestampMillisecond, Utf8 } from 'apache-arrow';
import {
  BufferRegion, DictionaryBatch as DictionaryBatchHeader, FieldNode, RecordBatch as RecordBatchHeader,
} from 'apache-arrow/ipc/metadata/message';
import type { Feature, ScalarTypeName, ViewVersion } from '../../schema/types.js';
import type { StoredFeatures } from '../../store/online-store.js';
import type { FeatureValue } from '../../store/codec.js';
import { responseErrors } from '../errors.js';
import { PartKind, idAt, readAt, rowCount, type Plan, type PlanResult } from '../plan.js';

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
  /** The schema message of an answer without errors: the same bytes for every such answer. */
  readonly schema: Uint8Array;
  /** The `field` column's dictionary batch (the root fields' response keys), framed. */
  readonly dictionary: Uint8Array;
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
      const type = kind === ColumnKind.Feature ? featureType(feature!) : kind === ColumnKind.EventTime ? timestampMs : bool;
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
  const keys = plan.roots.map((r) => r.responseKey);
  const fields = [
    new Field('field', new Dictionary(new Utf8(), new Int32(), 0), false),
    new Field('id', utf8, false),
    ...columns.map((c) => new Field(c.name, c.type, true)),
  ];
  return { plan, fields, columns, schema: schemaMessage(fields, '[]'), dictionary: dictionaryMessage(keys) };
}

/** The schema message, with the response's errors as its metadata, framed. */
function schemaMessage(fields: readonly Field[], errors: string): Uint8Array {
  const parts: Uint8Array[] = [];
  frame(parts, Message.from(new Schema(fields as Field[], new Map([['errors', errors]]))));
  return parts[0]!;
}

/** The `field` column's dictionary (the root fields' response keys) as its framed dictionary batch. */
function dictionaryMessage(rootKeys: readonly string[]): Uint8Array {
  const body = new Body();
  utf8Column(body, rootKeys);
  const parts: Uint8Array[] = [];
  body.write(parts, rootKeys.length, (batch, bodyLength) => Message.from(new DictionaryBatchHeader(batch, 0, false), bodyLength));
  return concat(parts);
}

/** Arrow types are immutable values: one of each, shared by every schema and column. */
const float64 = new Float64();
const int64 = new Int64();
const bool = new Bool();
const utf8 = new Utf8();
const timestampMs = new TimestampMillisecond('UTC');

function featureType(feature: Feature): DataType {
  const scalar = scalarType(feature.type.scalar);
  return feature.type.list ? new List(new Field('item', scalar, false)) : scalar;
}

function scalarType(scalar: ScalarTypeName): DataType {
  switch (scalar) {
    case 'Float': return float64;
    case 'Int': return int64;
    case 'Boolean': return bool;
    case 'String': return utf8;
  }
}

/**
 * The result as the bytes of one Arrow IPC stream. Throws NoArrowFormError for a plan without one.
 *
 * apache-arrow encodes each message's flatbuffer (`Message`); the buffers of each column are laid
 * out here, straight from the reads, and framed as the IPC format says (continuation marker,
 * metadata length, 8-byte padding, body, end-of-stream marker). Its stream writer, through a
 * `Data`, a `Vector` and an assembler's visit per column, measured about 35 µs per stream plus
 * 4 µs per column and batch: several times the JSON answer of a small request. The schema and
 * dictionary messages of an answer without errors are the same bytes every time: made once per
 * plan (decision 0031).
 */
export function encodeArrow(result: PlanResult): Uint8Array {
  const form = arrowForm(result.plan);
  if (typeof form === 'string') throw new NoArrowFormError(result.plan.name, form);
  const parts: Uint8Array[] = [result.failed ? schemaMessage(form.fields, JSON.stringify(responseErrors(result))) : form.schema, form.dictionary];
  for (let r = 0; r < form.plan.roots.length; r++) {
    const n = rowCount(result, r);
    const ids = new Array<string>(n);
    for (let k = 0; k < n; k++) ids[k] = idAt(result, r, k);
    const body = new Body();
    // `field`: the index of this root field's key in the dictionary, on every row.
    body.node(n, 0);
    body.buffer(undefined);
    body.buffer(new Int32Array(n).fill(r));
    utf8Column(body, ids);
    const records = new Array<StoredFeatures | null>(n);
    for (const column of form.columns) {
      const slot = column.slots[r]!;
      // Per row, the value as read: null where it is missing or failed, or where this root field does not select the column.
      for (let k = 0; k < n; k++) {
        const read = slot < 0 ? null : readAt(result, slot, ids[k]!);
        records[k] = read instanceof Error ? null : read;
      }
      writeColumn(body, column, records);
    }
    // A root field with no ids still has its (empty) batch.
    body.write(parts, n, (batch, bodyLength) => Message.from(batch, bodyLength));
  }
  parts.push(endOfStream);
  return concat(parts);
}

/** One record batch's body as the IPC format lays it out: its field nodes in pre-order, then its buffers in order. */
class Body {
  private readonly nodes: FieldNode[] = [];
  private readonly buffers: (ArrayBufferView | undefined)[] = [];

  node(length: number, nullCount: number): void {
    this.nodes.push(new FieldNode(length, nullCount));
  }

  /** A buffer; undefined for an absent one (the validity of a column without nulls). */
  buffer(view: ArrayBufferView | undefined): void {
    this.buffers.push(view);
  }

  /** Frames the message `header` makes of the batch into `parts`, then the body: each buffer at an offset that is a multiple of 8, padding zeroed. */
  write(parts: Uint8Array[], length: number, header: (batch: RecordBatchHeader, bodyLength: number) => Message): void {
    const regions = new Array<BufferRegion>(this.buffers.length);
    let size = 0;
    for (let i = 0; i < this.buffers.length; i++) {
      const padded = ((this.buffers[i]?.byteLength ?? 0) + 7) & ~7;
      regions[i] = new BufferRegion(size, padded);
      size += padded;
    }
    frame(parts, header(new RecordBatchHeader(length, this.nodes, regions, null), size));
    const body = new Uint8Array(size);
    for (let i = 0; i < this.buffers.length; i++) {
      const b = this.buffers[i];
      if (b) body.set(b instanceof Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.byteLength), regions[i]!.offset);
    }
    parts.push(body);
  }
}

/** An encapsulated message's metadata: continuation marker, length, the flatbuffer, padded to 8 bytes. */
function frame(parts: Uint8Array[], message: Message): void {
  const flatbuffer = Message.encode(message);
  const size = (flatbuffer.byteLength + 8 + 7) & ~7;
  const head = new Uint8Array(size);
  const view = new DataView(head.buffer);
  view.setInt32(0, -1, true);
  view.setInt32(4, size - 8, true);
  head.set(flatbuffer, 8);
  parts.push(head);
}

const endOfStream = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (let i = 0; i < parts.length; i++) size += parts[i]!.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    out.set(parts[i]!, at);
    at += parts[i]!.byteLength;
  }
  return out;
}

function writeColumn(body: Body, column: Column, records: readonly (StoredFeatures | null)[]): void {
  const n = records.length;
  switch (column.kind) {
    case ColumnKind.EventTime: {
      const times = new Array<number | null>(n);
      for (let k = 0; k < n; k++) times[k] = records[k]?.eventTimeMs ?? null;
      return int64Column(body, times);
    }
    case ColumnKind.Stale: {
      const stale = new Array<boolean | null>(n);
      for (let k = 0; k < n; k++) stale[k] = records[k]?.stale ?? null;
      return boolColumn(body, stale);
    }
    case ColumnKind.Feature: {
      const feature = column.feature!;
      const values = new Array<FeatureValue | null>(n);
      for (let k = 0; k < n; k++) {
        const record = records[k];
        // A stale value is served with null features (decision 3).
        values[k] = record && !record.stale ? (record.values[feature.name] ?? null) : null;
      }
      if (feature.type.list) return listColumn(body, feature.type.scalar, values as (readonly unknown[] | null)[]);
      return scalarColumn(body, feature.type.scalar, values);
    }
  }
}

function scalarColumn(body: Body, scalar: ScalarTypeName, values: readonly unknown[]): void {
  switch (scalar) {
    case 'Float': return float64Column(body, values as (number | null)[]);
    case 'Int': return int64Column(body, values as (number | null)[]);
    case 'Boolean': return boolColumn(body, values as (boolean | null)[]);
    case 'String': return utf8Column(body, values as (string | null)[]);
  }
}

/** A column's field node and validity buffer: a bitmap (bit set: not null), absent when nothing is null. */
function validity(body: Body, values: readonly unknown[]): void {
  let nullCount = 0;
  for (let k = 0; k < values.length; k++) if (values[k] === null) nullCount++;
  body.node(values.length, nullCount);
  if (nullCount === 0) return body.buffer(undefined);
  const bitmap = new Uint8Array((values.length + 7) >> 3);
  for (let k = 0; k < values.length; k++) if (values[k] !== null) bitmap[k >> 3]! |= 1 << (k & 7);
  body.buffer(bitmap);
}

function float64Column(body: Body, values: readonly (number | null)[]): void {
  validity(body, values);
  const data = new Float64Array(values.length);
  for (let k = 0; k < values.length; k++) data[k] = values[k] ?? 0;
  body.buffer(data);
}

/**
 * 64-bit integers (Int64 features, millisecond timestamps) without a BigInt per value: each is
 * an integer within ±2^53 (a 32-bit Int, an event time in ms), written as its two 32-bit halves.
 */
function int64Column(body: Body, values: readonly (number | null)[]): void {
  validity(body, values);
  const halves = new Int32Array(2 * values.length);
  for (let k = 0; k < values.length; k++) {
    const v = values[k] ?? 0;
    const high = Math.floor(v / 4294967296);
    halves[2 * k] = v - high * 4294967296; // the low half, 0..2^32-1, stored as its 32 bits
    halves[2 * k + 1] = high;
  }
  body.buffer(halves);
}

function boolColumn(body: Body, values: readonly (boolean | null)[]): void {
  validity(body, values);
  const data = new Uint8Array((values.length + 7) >> 3);
  for (let k = 0; k < values.length; k++) if (values[k] === true) data[k >> 3]! |= 1 << (k & 7);
  body.buffer(data);
}

/** UTF-8 strings: offsets and one buffer, written with Buffer.write (no encoder object per value). */
function utf8Column(body: Body, values: readonly (string | null)[]): void {
  validity(body, values);
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
  body.buffer(offsets);
  body.buffer(bytes);
}

/** A list: its validity and offsets, then its items as a column of their own (never null: `[T!]`). */
function listColumn(body: Body, scalar: ScalarTypeName, values: readonly (readonly unknown[] | null)[]): void {
  validity(body, values);
  const offsets = new Int32Array(values.length + 1);
  const items: unknown[] = [];
  for (let k = 0; k < values.length; k++) {
    const list = values[k];
    if (list) for (let i = 0; i < list.length; i++) items.push(list[i]);
    offsets[k + 1] = items.length;
  }
  body.buffer(offsets);
  scalarColumn(body, scalar, items);
}
