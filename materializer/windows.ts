import type { Aggregate, Materialization, Measure, ViewVersion } from '../schema/types.js';
import type { FeatureValues } from '../store/codec.js';
import type { EventValue, ValidEvent } from './events.js';

/**
 * Windowed aggregation of one feature view for one entity, in event time.
 *
 * Events fall into buckets `slide` wide (tumbling windows: slide = size).
 * The value is read "as of" the entity's newest event: the buckets of the
 * last `size`, i.e. those starting after bucket(maxTs) − size. An event older
 * than its partition's stream time − allowedLateness is late: it is not
 * applied and is reported.
 * Buckets that can no longer be in a window or receive an on-time event are
 * evicted, so the state stays bounded by size/slide buckets.
 *
 * The state is plain JSON and is stored next to the value, never only in
 * memory (ARCHITECTURE.md, decision 6): it carries, per source partition,
 * the offset of the last event applied, so applying an event twice is
 * impossible — a replayed event is recognised and skipped.
 */

/**
 * A measure as accumulated: the registry's measures, plus the count behind an
 * `avg`, which counts only the events that carry the averaged field.
 */
type AccMeasure = Measure | { readonly fn: 'count'; readonly of: string; readonly where: string | null };

/** Accumulator of one measure in one bucket. */
type Acc = number | null | LastAcc;
/** `last`: the value with the greatest (ts, partition, offset). */
type LastAcc = [value: EventValue, ts: number, partition: number, offset: number] | null;

interface Bucket {
  start: number;
  acc: Acc[];
}

export interface WindowState {
  /** "topic/partition" → offset of the last event applied (or judged late). */
  offsets: Record<string, number>;
  /** Newest event time applied; null before the first event. */
  maxTs: number | null;
  buckets: Bucket[];
  /** Offsets ("topic/partition/offset") of recent late events, so a replay can re-send them to the DLQ. */
  recentLate: string[];
  /** Source position ("topic/partition/offset") tagged on the last change event emitted. */
  lastChange: string | null;
}

export type ApplyOutcome = 'applied' | 'late' | 'duplicate';

export interface SourcePositionOf {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
}

const recentLateLimit = 256;

export function emptyState(): WindowState {
  return { offsets: {}, maxTs: null, buckets: [], recentLate: [], lastChange: null };
}

/** A compiled view version: its distinct measures and how each feature is computed from them. */
export class ViewAggregator {
  private readonly measures: AccMeasure[] = [];
  private readonly features: { name: string; compute: (acc: readonly Acc[]) => number | EventValue | null; integer: boolean }[];
  readonly spec: Materialization;

  constructor(readonly view: ViewVersion) {
    if (!view.materialization) throw new Error(`${view.viewName} v${view.version} is not materialized (no source)`);
    this.spec = view.materialization;
    this.features = view.features.map((f) => ({
      name: f.name,
      compute: this.compile(f.aggregate!),
      integer: f.type.scalar === 'Int',
    }));
  }

  /**
   * Applies one event unless it was applied before or is late. Mutates `state`.
   * `streamTimeMs` is the source partition's stream time before this event
   * (the newest event time seen in that partition): lateness is judged against
   * the partition's own order, so it does not depend on how far other
   * partitions feeding the same entity have got, and a redelivered batch is
   * judged exactly as before.
   */
  apply(state: WindowState, event: ValidEvent, position: SourcePositionOf, streamTimeMs: number | null): ApplyOutcome {
    const tp = `${position.topic}/${position.partition}`;
    const last = state.offsets[tp];
    if (last !== undefined && position.offset <= last) return 'duplicate';
    state.offsets[tp] = position.offset;
    const { windowMs, slideMs, allowedLatenessMs } = this.spec;
    if (streamTimeMs !== null && event.ts < streamTimeMs - allowedLatenessMs) {
      state.recentLate.push(`${tp}/${position.offset}`);
      if (state.recentLate.length > recentLateLimit) state.recentLate.splice(0, state.recentLate.length - recentLateLimit);
      return 'late';
    }
    const start = Math.floor(event.ts / slideMs) * slideMs;
    let bucket = state.buckets.find((b) => b.start === start);
    if (!bucket) {
      bucket = { start, acc: this.measures.map((m) => (m.fn === 'count' || m.fn === 'sum' ? 0 : null)) };
      state.buckets.push(bucket);
      state.buckets.sort((a, b) => a.start - b.start);
    }
    this.measures.forEach((m, i) => {
      if (m.where !== null && event.fields[m.where] !== true) return;
      const acc = bucket!.acc;
      if (m.fn === 'count') {
        if ('of' in m && event.fields[m.of] === undefined) return;
        acc[i] = (acc[i] as number) + 1;
        return;
      }
      const v = event.fields[m.of];
      if (v === undefined) return;
      switch (m.fn) {
        case 'sum': acc[i] = (acc[i] as number) + (v as number); break;
        case 'min': acc[i] = acc[i] === null ? (v as number) : Math.min(acc[i] as number, v as number); break;
        case 'max': acc[i] = acc[i] === null ? (v as number) : Math.max(acc[i] as number, v as number); break;
        case 'last': {
          const cur = acc[i] as LastAcc;
          if (cur === null || later([event.ts, position.partition, position.offset], [cur[1], cur[2], cur[3]])) {
            acc[i] = [v, event.ts, position.partition, position.offset];
          }
        }
      }
    });
    if (state.maxTs === null || event.ts > state.maxTs) state.maxTs = event.ts;
    const horizon = state.maxTs - windowMs - allowedLatenessMs;
    state.buckets = state.buckets.filter((b) => b.start + slideMs > horizon);
    return 'applied';
  }

  /** The features as of the entity's newest event; null before any event. */
  value(state: WindowState): { values: FeatureValues; eventTimeMs: number } | null {
    if (state.maxTs === null) return null;
    const current = Math.floor(state.maxTs / this.spec.slideMs) * this.spec.slideMs;
    const inWindow = state.buckets.filter((b) => b.start > current - this.spec.windowMs && b.start <= current);
    const merged = this.measures.map((m, i) => mergeAcc(m, inWindow.map((b) => b.acc[i] ?? null)));
    const values: FeatureValues = {};
    for (const f of this.features) {
      const v = f.compute(merged);
      values[f.name] = v === null ? null : f.integer && typeof v === 'number' ? Math.round(v) : v;
    }
    return { values, eventTimeMs: state.maxTs };
  }

  private indexOf(measure: AccMeasure): number {
    const key = JSON.stringify(measure);
    let i = this.measures.findIndex((m) => JSON.stringify(m) === key);
    if (i < 0) i = this.measures.push(measure) - 1;
    return i;
  }

  private compile(aggregate: Aggregate): (acc: readonly Acc[]) => number | EventValue | null {
    switch (aggregate.fn) {
      case 'avg': {
        const sum = this.indexOf({ fn: 'sum', of: aggregate.of, where: aggregate.where });
        // Events without the (optional) field add nothing to the sum, so they must not add to the count either.
        const count = this.indexOf({ fn: 'count', of: aggregate.of, where: aggregate.where });
        return (acc) => ((acc[count] as number) > 0 ? (acc[sum] as number) / (acc[count] as number) : null);
      }
      case 'ratio': {
        const n = this.indexOf(aggregate.numerator);
        const d = this.indexOf(aggregate.denominator);
        return (acc) => {
          const den = scalarOf(acc[d]);
          const num = scalarOf(acc[n]);
          return typeof den === 'number' && den !== 0 && typeof num === 'number' ? num / den : null;
        };
      }
      default: {
        const i = this.indexOf(aggregate);
        return (acc) => scalarOf(acc[i]);
      }
    }
  }
}

function scalarOf(acc: Acc | undefined): number | EventValue | null {
  if (acc === undefined || acc === null) return null;
  return Array.isArray(acc) ? acc[0] : acc;
}

function mergeAcc(m: AccMeasure, accs: readonly Acc[]): Acc {
  switch (m.fn) {
    case 'count': case 'sum': return accs.reduce<number>((s, a) => s + (a as number), 0);
    case 'min': return accs.reduce<number | null>((s, a) => (a === null ? s : s === null ? (a as number) : Math.min(s, a as number)), null);
    case 'max': return accs.reduce<number | null>((s, a) => (a === null ? s : s === null ? (a as number) : Math.max(s, a as number)), null);
    case 'last': return accs.reduce<LastAcc>((s, a) => {
      const x = a as LastAcc;
      if (x === null) return s;
      return s === null || later([x[1], x[2], x[3]], [s[1], s[2], s[3]]) ? x : s;
    }, null);
  }
}

function later(a: readonly [number, number, number], b: readonly [number, number, number]): boolean {
  return a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] > b[1] : a[2] > b[2];
}

export function entityIdOf(spec: Materialization, event: ValidEvent): string | null {
  const v = event.fields[spec.entityKey];
  return v === undefined ? null : String(v);
}
