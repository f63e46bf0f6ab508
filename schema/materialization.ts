import type { Aggregate, EventField, EventFieldType, EventSchema, Feature, Materialization, Measure } from './types.js';

/**
 * The registry's streaming half: raw event topics with their schemas, and
 * how a view is computed from one (entity key, window, lateness, and an
 * aggregate per feature). Checked here for everything that would otherwise
 * fail at run time: unknown topics and fields, a `where` that is not a
 * Boolean, a sum over a String, a result type that does not fit the feature.
 */

type Path = (string | number)[];
type Report = (path: Path, message: string, expected: string) => void;

export interface RawEvent {
  topic: string; description: string; key: string; timestamp: string; partitions?: number;
  fields: { name: string; type: string; optional?: boolean; description?: string }[];
}
export interface RawMeasure { fn: string; of?: string; where?: string }
export interface RawAggregate extends RawMeasure { numerator?: RawMeasure; denominator?: RawMeasure }
export interface RawMaterializedView {
  source?: string; entityKey?: string; window?: { size: string | number; slide?: string | number }; allowedLateness?: string | number;
}

const eventFieldTypes: readonly EventFieldType[] = ['String', 'Int', 'Float', 'Boolean', 'Timestamp'];
/** Kafka's rule (at most 249 characters), less the 4 of the ".dlq" suffix its dead-letter topic adds. */
const topicName = /^[a-zA-Z0-9._-]{1,245}$/;
const durationPattern = /^(0|[1-9][0-9]*)(ms|s|m|h|d)$/;
const durationUnitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export function parseEvents(raw: readonly RawEvent[] | undefined, at: Report): EventSchema[] {
  const seen = new Map<string, number>();
  return (raw ?? []).map((e, i) => {
    const path = ['events', i];
    if (!topicName.test(e.topic) || e.topic === '.' || e.topic === '..') at([...path, 'topic'], `"${e.topic}" is not a valid Kafka topic name`, '1 to 245 letters, digits, ".", "_" and "-" (249 with the .dlq suffix), not "." or ".."');
    if (e.topic.endsWith('.dlq') || e.topic === 'feature-updates') at([...path, 'topic'], `topic "${e.topic}" is reserved`, 'a name not ending in .dlq and not feature-updates');
    const first = seen.get(e.topic);
    if (first !== undefined) at([...path, 'topic'], `duplicate event topic "${e.topic}" (first declared at index ${first})`, 'each topic declared once');
    else seen.set(e.topic, i);
    const names = new Set<string>();
    const fields: EventField[] = e.fields.map((f, k) => {
      if (names.has(f.name)) at([...path, 'fields', k, 'name'], `duplicate field "${f.name}"`, 'each field named once');
      names.add(f.name);
      const type = eventFieldTypes.find((t) => t === f.type);
      if (!type) at([...path, 'fields', k, 'type'], `unknown event field type "${f.type}"`, `one of ${eventFieldTypes.join(', ')}`);
      return { name: f.name, type: type ?? 'String', optional: f.optional ?? false, description: f.description ?? '' };
    });
    const key = fields.find((f) => f.name === e.key);
    if (!key) at([...path, 'key'], `key field "${e.key}" is not a field of ${e.topic}`, `one of ${fields.map((f) => f.name).join(', ')}`);
    else if (key.optional) at([...path, 'key'], `key field "${e.key}" is optional`, 'a required field');
    const ts = fields.find((f) => f.name === e.timestamp);
    if (!ts || ts.type !== 'Timestamp' || ts.optional) {
      at([...path, 'timestamp'], `timestamp field "${e.timestamp}" must be a required field of type Timestamp`, 'a required Timestamp field');
    }
    return { topic: e.topic, description: e.description, key: e.key, timestamp: e.timestamp, partitions: e.partitions ?? 3, fields };
  });
}

/** The view's materialization, or null for a batch-loaded view (which then must not declare aggregates). */
export function parseMaterialization(raw: RawMaterializedView, events: readonly EventSchema[], path: Path, at: Report): Materialization | null {
  if (raw.source === undefined) {
    for (const key of ['entityKey', 'window', 'allowedLateness'] as const) {
      if (raw[key] !== undefined) at([...path, key], `"${key}" without "source"`, 'a source topic for a materialized view, or no streaming settings');
    }
    return null;
  }
  const event = events.find((e) => e.topic === raw.source);
  if (!event) {
    at([...path, 'source'], `source "${raw.source}" is not a declared event topic`, `one of: ${events.map((e) => e.topic).join(', ') || '(none declared under events)'}`);
    return null;
  }
  const entityKey = event.fields.find((f) => f.name === raw.entityKey);
  if (!raw.entityKey || !entityKey) {
    at([...path, 'entityKey'], `entityKey ${JSON.stringify(raw.entityKey)} is not a field of ${event.topic}`, `one of ${event.fields.map((f) => f.name).join(', ')}`);
  } else if (entityKey.optional || (entityKey.type !== 'String' && entityKey.type !== 'Int')) {
    at([...path, 'entityKey'], `entityKey "${raw.entityKey}" must be a required String or Int field`, 'a required String or Int field');
  }
  if (!raw.window) {
    at(path, 'a materialized view needs a window', 'window: { size: 10m, slide: 1m } (slide omitted: tumbling)');
    return null;
  }
  const windowMs = parseDuration(raw.window.size, [...path, 'window', 'size'], at, false);
  const slideMs = raw.window.slide === undefined ? windowMs : parseDuration(raw.window.slide, [...path, 'window', 'slide'], at, false);
  if (windowMs > 0 && slideMs > 0 && (slideMs > windowMs || windowMs % slideMs !== 0)) {
    at([...path, 'window', 'slide'], `slide must divide the window size (${windowMs} ms)`, 'a slide that divides the size, e.g. size 10m with slide 1m');
  }
  const allowedLatenessMs = raw.allowedLateness === undefined ? 0 : parseDuration(raw.allowedLateness, [...path, 'allowedLateness'], at, true);
  return { source: event.topic, entityKey: raw.entityKey ?? '', windowMs, slideMs, allowedLatenessMs };
}

/** A feature's aggregate, checked against the source event's fields and the feature's own type. */
export function parseAggregate(raw: RawAggregate | undefined, feature: Pick<Feature, 'name' | 'type' | 'typeName'>, materialization: Materialization | null,
  events: readonly EventSchema[], path: Path, at: Report): Aggregate | null {
  if (!materialization) {
    if (raw) at([...path, 'aggregate'], `feature "${feature.name}" has an aggregate but its view has no source`, 'a source on the view, or no aggregate');
    return null;
  }
  if (!raw) {
    at(path, `feature "${feature.name}" of a materialized view has no aggregate`, 'aggregate: { fn: count | sum | min | max | last | avg | ratio, … }');
    return null;
  }
  const event = events.find((e) => e.topic === materialization.source)!;
  const field = (name: string | undefined, p: Path, numeric: boolean): EventField | undefined => {
    const f = event.fields.find((x) => x.name === name);
    if (!f) at(p, `${JSON.stringify(name)} is not a field of ${event.topic}`, `one of ${event.fields.map((x) => x.name).join(', ')}`);
    else if (numeric && f.type !== 'Int' && f.type !== 'Float') at(p, `"${name}" is ${f.type}, not a number`, 'an Int or Float field');
    return f;
  };
  const measure = (m: RawMeasure, p: Path): Measure | null => {
    if (m.where !== undefined) {
      const w = field(m.where, [...p, 'where'], false);
      if (w && w.type !== 'Boolean') at([...p, 'where'], `"${m.where}" is ${w.type}, not Boolean`, 'a Boolean field');
    }
    const where = m.where ?? null;
    switch (m.fn) {
      case 'count':
        if (m.of !== undefined) at([...p, 'of'], 'count takes no "of"', 'count, optionally with where');
        return { fn: 'count', where };
      case 'sum': case 'min': case 'max': case 'last':
        field(m.of, [...p, 'of'], m.fn !== 'last');
        return { fn: m.fn, of: m.of ?? '', where };
      default:
        at([...p, 'fn'], `"${m.fn}" cannot be a ratio's part`, 'count, sum, min, max or last');
        return null;
    }
  };
  const p = [...path, 'aggregate'];
  const resultType = (): string | null => {
    switch (raw.fn) {
      case 'count': return 'Int';
      case 'avg': case 'ratio': return 'Float';
      case 'sum': case 'min': case 'max': {
        const f = event.fields.find((x) => x.name === raw.of);
        return f?.type === 'Int' ? 'Int|Float' : 'Float';
      }
      case 'last': {
        const f = event.fields.find((x) => x.name === raw.of);
        return f ? (f.type === 'Timestamp' ? 'Int|Float' : f.type) : null;
      }
      default: return null;
    }
  };
  let aggregate: Aggregate | null;
  if (raw.fn === 'ratio') {
    if (!raw.numerator || !raw.denominator) {
      at(p, 'ratio needs numerator and denominator', 'ratio: { numerator: { fn: … }, denominator: { fn: … } }');
      return null;
    }
    const numerator = measure(raw.numerator, [...p, 'numerator']);
    const denominator = measure(raw.denominator, [...p, 'denominator']);
    aggregate = numerator && denominator ? { fn: 'ratio', numerator, denominator } : null;
  } else if (raw.fn === 'avg') {
    field(raw.of, [...p, 'of'], true);
    aggregate = { fn: 'avg', of: raw.of ?? '', where: raw.where ?? null };
  } else aggregate = measure(raw, p);
  const produced = resultType();
  if (produced && !feature.type.list && !produced.split('|').includes(feature.type.scalar)) {
    at([...p, 'fn'], `${raw.fn} produces ${produced.replace('|', ' or ')}, but feature "${feature.name}" is ${feature.typeName}`, `a feature type of ${produced.replace('|', ' or ')}`);
  }
  if (feature.type.list) at([...path, 'type'], `a materialized feature cannot be a list (${feature.typeName})`, 'a scalar type');
  return aggregate;
}

/** The longest TTL or duration the registry takes (a year and a day: longer is almost surely a typo). */
export const maxDurationDays = 366;

/** Durations as in TTLs, plus `ms` and (where allowed) zero. */
export function parseDuration(text: string | number, path: Path, at: Report, allowZero: boolean): number {
  let ms: number | null = null;
  if (typeof text === 'number') ms = Number.isInteger(text) && text >= 0 ? text * 1000 : null;
  else {
    const m = durationPattern.exec(text);
    if (m) ms = Number(m[1]) * durationUnitMs[m[2] as keyof typeof durationUnitMs];
  }
  const tooLong = ms !== null && ms > maxDurationDays * durationUnitMs.d;
  if (ms === null || (!allowZero && ms === 0) || tooLong) {
    at(path, `bad duration ${JSON.stringify(text)}${tooLong ? `: longer than the limit of ${maxDurationDays}d` : ''}`,
      `a ${allowZero ? 'non-negative' : 'positive'} duration of at most ${maxDurationDays}d, such as 500ms, 30s, 10m, 1h, 7d`);
    return allowZero ? 0 : 60_000;
  }
  return ms;
}
