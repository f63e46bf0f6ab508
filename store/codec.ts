import type { Feature, ViewVersion } from '../schema/types.js';

/**
 * The value codec: one feature-view value (all its features plus the event
 * time) as one compact, schema-aware binary blob (ARCHITECTURE.md, decision 2).
 *
 * Schema-aware means the registry, not the bytes, says which feature comes
 * next and what type it has, so no names or type tags are stored. Layout:
 *
 *   u8      format (1)
 *   u8      flags: bit 0 = a source position follows the values
 *   varint  event time, ms since the epoch
 *   varint  feature count (a guard against decoding with the wrong version)
 *   bytes   presence bitmap, ceil(count / 8) bytes, bit i set = feature i not null
 *   ...     each present feature in registry order:
 *             Int     zig-zag varint      Float   float64 LE
 *             Boolean u8                  String  varint byte length + UTF-8
 *             [T!]    varint length + that many T
 *   varint  partition, varint offset   (only with flag bit 0; used by the materializer)
 *
 * Protocol Buffers or Avro were considered: both would need a schema compiled
 * from the registry at run time and a per-value field tag or header; this
 * format is the same idea without the dependency and with fewer bytes.
 */

export type ScalarValue = number | boolean | string;
export type FeatureValue = ScalarValue | readonly number[] | readonly boolean[] | readonly string[];
export type FeatureValues = Record<string, FeatureValue | null>;

export interface SourcePosition {
  readonly partition: number;
  readonly offset: number;
}

export interface EncodedRecord {
  readonly values: FeatureValues;
  readonly eventTimeMs: number;
  readonly position?: SourcePosition | undefined;
}

export class CodecError extends Error {
  override name = 'CodecError';
  constructor(readonly view: string, message: string) {
    super(`${view}: ${message}`);
  }
}

export interface ViewCodec {
  encode(record: EncodedRecord): Buffer;
  decode(bytes: Uint8Array): EncodedRecord;
  /**
   * `decode` for the serving path: the values, the event time and whether the value is stale
   * (its event time before `freshFromMs`) in one object, rather than a decoded record and then
   * a second object with the freshness added. The source position is not read back.
   */
  decodeForRead(bytes: Uint8Array, freshFromMs: number): { values: FeatureValues; eventTimeMs: number; stale: boolean };
  /** Throws a CodecError naming the feature when a value does not fit its type. */
  check(values: Readonly<Record<string, unknown>>): FeatureValues;
}

const FORMAT = 1;
const FLAG_POSITION = 1;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

const codecs = new WeakMap<ViewVersion, ViewCodec>();

export function codecFor(view: ViewVersion): ViewCodec {
  let codec = codecs.get(view);
  if (!codec) {
    codec = new BinaryViewCodec(view);
    codecs.set(view, codec);
  }
  return codec;
}

class BinaryViewCodec implements ViewCodec {
  private readonly features: readonly Feature[];
  private readonly label: string;
  private readonly bitmapBytes: number;

  constructor(view: ViewVersion) {
    this.features = view.features;
    this.label = `${view.viewName} v${view.version}`;
    this.bitmapBytes = Math.ceil(view.features.length / 8);
  }

  check(values: Readonly<Record<string, unknown>>): FeatureValues {
    const out: FeatureValues = {};
    for (const key of Object.keys(values)) {
      if (!this.features.some((f) => f.name === key)) {
        throw new CodecError(this.label, `unknown feature "${key}"; known: ${this.features.map((f) => f.name).join(', ')}`);
      }
    }
    for (const feature of this.features) {
      const value = values[feature.name];
      out[feature.name] = value === undefined || value === null ? null : this.checkValue(feature, value);
    }
    return out;
  }

  private checkValue(feature: Feature, value: unknown): FeatureValue {
    if (feature.type.list) {
      if (!Array.isArray(value)) throw this.typeError(feature, value);
      for (const element of value) this.checkScalar(feature, element);
      return value as FeatureValue;
    }
    this.checkScalar(feature, value);
    return value as FeatureValue;
  }

  private checkScalar(feature: Feature, value: unknown): void {
    const ok = (() => {
      switch (feature.type.scalar) {
        case 'Int': return typeof value === 'number' && Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX;
        case 'Float': return typeof value === 'number' && Number.isFinite(value);
        case 'Boolean': return typeof value === 'boolean';
        case 'String': return typeof value === 'string';
      }
    })();
    if (!ok) throw this.typeError(feature, value);
  }

  private checkUint(what: string, value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new CodecError(this.label, `${what} must be a non-negative integer up to 2^53 - 1, got ${String(value)}`);
    }
  }

  private typeError(feature: Feature, value: unknown): CodecError {
    const expected = feature.type.scalar === 'Int' ? `${feature.typeName} (32-bit integers)` : feature.typeName;
    // JSON.stringify would print NaN and Infinity as "null" (a value that is allowed) and throw on a bigint.
    const got = typeof value === 'number' || typeof value === 'bigint' ? String(value) : JSON.stringify(value) ?? String(value);
    return new CodecError(this.label, `feature "${feature.name}" expects ${expected}, got ${got}`);
  }

  encode(record: EncodedRecord): Buffer {
    const values = this.check(record.values);
    // The varints hold non-negative integers up to 2^53 - 1; anything else would decode as a different value.
    this.checkUint('event time', record.eventTimeMs);
    if (record.position) {
      this.checkUint('source partition', record.position.partition);
      this.checkUint('source offset', record.position.offset);
    }
    const w = new Writer(64);
    w.u8(FORMAT);
    w.u8(record.position ? FLAG_POSITION : 0);
    w.uvarint(record.eventTimeMs);
    w.uvarint(this.features.length);
    const bitmapAt = w.reserve(this.bitmapBytes);
    this.features.forEach((feature, i) => {
      const value = values[feature.name];
      if (value === null || value === undefined) return;
      w.setBit(bitmapAt, i);
      if (feature.type.list) {
        const list = value as readonly ScalarValue[];
        w.uvarint(list.length);
        for (const element of list) writeScalar(w, feature.type.scalar, element);
      } else writeScalar(w, feature.type.scalar, value as ScalarValue);
    });
    if (record.position) {
      w.uvarint(record.position.partition);
      w.uvarint(record.position.offset);
    }
    return w.finish();
  }

  decode(bytes: Uint8Array): EncodedRecord {
    const values = this.decodeValues(bytes);
    const eventTimeMs = decodedEventTimeMs;
    let position: SourcePosition | undefined;
    const r = reader.reset(bytes, this.label);
    r.offset = decodedEnd;
    if (decodedFlags & FLAG_POSITION) position = { partition: r.uvarint(), offset: r.uvarint() };
    if (!r.done()) throw new CodecError(this.label, `${bytes.length - r.offset} trailing bytes`);
    r.release();
    return position ? { values, eventTimeMs, position } : { values, eventTimeMs };
  }

  decodeForRead(bytes: Uint8Array, freshFromMs: number): { values: FeatureValues; eventTimeMs: number; stale: boolean } {
    const values = this.decodeValues(bytes);
    const eventTimeMs = decodedEventTimeMs;
    const r = reader.reset(bytes, this.label);
    r.offset = decodedEnd;
    // Validated as `decode` does, so a value either one refuses, both refuse.
    if (decodedFlags & FLAG_POSITION) {
      r.uvarint();
      r.uvarint();
    }
    if (!r.done()) throw new CodecError(this.label, `${bytes.length - r.offset} trailing bytes`);
    r.release();
    return { values, eventTimeMs, stale: eventTimeMs < freshFromMs };
  }

  /** The features of a value; its event time, flags and where the features end are left in `decoded*`. */
  private decodeValues(bytes: Uint8Array): FeatureValues {
    // One shared reader, reset per value: decoding is synchronous, so it is never in use twice at once,
    // and a Reader with its DataView per value was a measurable share of the serving path's allocations.
    const r = reader.reset(bytes, this.label);
    const format = r.u8();
    if (format !== FORMAT) throw new CodecError(this.label, `unknown value format ${format} (expected ${FORMAT})`);
    const flags = r.u8();
    const eventTimeMs = r.uvarint();
    const count = r.uvarint();
    const features = this.features;
    if (count !== features.length) {
      throw new CodecError(this.label, `value holds ${count} features, the registry declares ${features.length}`);
    }
    const bitmapAt = r.skip(this.bitmapBytes);
    const values: FeatureValues = {};
    for (let i = 0; i < features.length; i++) {
      const feature = features[i]!;
      if ((bytes[bitmapAt + (i >> 3)]! & (1 << (i & 7))) === 0) {
        values[feature.name] = null;
      } else if (feature.type.list) {
        const length = r.uvarint();
        const list: ScalarValue[] = new Array(length);
        for (let k = 0; k < length; k++) list[k] = readScalar(r, feature.type.scalar);
        values[feature.name] = list as FeatureValue;
      } else values[feature.name] = readScalar(r, feature.type.scalar);
    }
    decodedEventTimeMs = eventTimeMs;
    decodedFlags = flags;
    decodedEnd = r.offset;
    r.release();
    return values;
  }
}

function writeScalar(w: Writer, scalar: Feature['type']['scalar'], value: ScalarValue): void {
  switch (scalar) {
    case 'Int': w.uvarint((((value as number) << 1) ^ ((value as number) >> 31)) >>> 0); break;
    case 'Float': w.f64(value as number); break;
    case 'Boolean': w.u8(value ? 1 : 0); break;
    case 'String': w.string(value as string); break;
  }
}

function readScalar(r: Reader, scalar: Feature['type']['scalar']): ScalarValue {
  switch (scalar) {
    case 'Int': { const z = r.uvarint(); return (z >>> 1) ^ -(z & 1); }
    case 'Float': return r.f64();
    case 'Boolean': return r.u8() !== 0;
    case 'String': return r.string();
  }
}

/** A growable byte buffer; varints use arithmetic so values up to 2^53 survive. */
class Writer {
  private buf: Buffer;
  private at = 0;
  constructor(capacity: number) { this.buf = Buffer.allocUnsafe(capacity); }

  private ensure(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }
  u8(v: number): void { this.ensure(1); this.buf[this.at++] = v; }
  uvarint(v: number): void {
    this.ensure(8);
    while (v >= 0x80) {
      this.buf[this.at++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.at++] = v;
  }
  f64(v: number): void { this.ensure(8); this.buf.writeDoubleLE(v, this.at); this.at += 8; }
  string(s: string): void {
    const length = Buffer.byteLength(s);
    this.uvarint(length);
    this.ensure(length);
    this.buf.write(s, this.at, 'utf8');
    this.at += length;
  }
  reserve(n: number): number { this.ensure(n); this.buf.fill(0, this.at, this.at + n); const at = this.at; this.at += n; return at; }
  setBit(at: number, i: number): void { this.buf[at + (i >> 3)]! |= 1 << (i & 7); }
  finish(): Buffer { return Buffer.from(this.buf.subarray(0, this.at)); }
}

/**
 * Reads one value's bytes. A single instance serves every decode (see `decode`); floats go
 * through an 8-byte scratch buffer instead of a DataView over each value.
 */
class Reader {
  offset = 0;
  private bytes: Uint8Array = new Uint8Array(0);
  private label = '';
  private readonly scratch = new Uint8Array(8);
  private readonly scratchView = new DataView(this.scratch.buffer);

  reset(bytes: Uint8Array, label: string): this {
    this.bytes = bytes;
    this.label = label;
    this.offset = 0;
    return this;
  }
  /** Drops the reference to the last value, so the reader does not keep it alive. */
  release(): void { this.bytes = empty; }
  private need(n: number): void {
    if (this.offset + n > this.bytes.length) throw new CodecError(this.label, `value truncated at byte ${this.offset} (needs ${n} more)`);
  }
  u8(): number { this.need(1); return this.bytes[this.offset++]!; }
  uvarint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 0x80;
    }
    throw new CodecError(this.label, `varint too long at byte ${this.offset}`);
  }
  f64(): number {
    this.need(8);
    const b = this.bytes;
    const s = this.scratch;
    const at = this.offset;
    for (let i = 0; i < 8; i++) s[i] = b[at + i]!;
    this.offset = at + 8;
    return this.scratchView.getFloat64(0, true);
  }
  string(): string {
    const length = this.uvarint();
    this.need(length);
    const b = this.bytes;
    const start = this.offset;
    this.offset += length;
    // A Buffer (what every backend hands over) decodes a slice without a view object.
    return Buffer.isBuffer(b) ? b.toString('utf8', start, start + length) : Buffer.from(b.buffer, b.byteOffset + start, length).toString('utf8');
  }
  skip(n: number): number { this.need(n); const at = this.offset; this.offset += n; return at; }
  done(): boolean { return this.offset === this.bytes.length; }
}

const empty = new Uint8Array(0);
// What `decodeValues` read besides the features, for its two callers (synchronous, never nested).
let decodedEventTimeMs = 0;
let decodedFlags = 0;
let decodedEnd = 0;
const reader = new Reader();
