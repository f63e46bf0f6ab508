import type { EventSchema } from '../schema/types.js';

/**
 * Validation of raw events against the schema the registry declares for
 * their topic. A hand-written check rather than ajv over a generated JSON
 * schema: the five field types are checked in a few lines, Timestamp (ms or
 * ISO-8601) is normalized to ms on the way, and the reason names the field in
 * the words a producer's owner will read in the dead-letter queue.
 */
export type EventValue = string | number | boolean;

export interface ValidEvent {
  readonly fields: Readonly<Record<string, EventValue | undefined>>;
  /** Event time, ms since the epoch. */
  readonly ts: number;
}

export class InvalidEventError extends Error {
  override name = 'InvalidEventError';
}

export function validateEvent(schema: EventSchema, bytes: Buffer): ValidEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new InvalidEventError(`not valid JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidEventError(`expected a JSON object, got ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed}`);
  }
  const raw = parsed as Record<string, unknown>;
  const fields: Record<string, EventValue | undefined> = {};
  for (const field of schema.fields) {
    const value = raw[field.name];
    if (value === undefined || value === null) {
      if (!field.optional) throw new InvalidEventError(`missing required field "${field.name}" (${field.type})`);
      continue;
    }
    switch (field.type) {
      case 'String':
        if (typeof value !== 'string' || value.length === 0) throw typeError(field.name, 'a non-empty String', value);
        fields[field.name] = value;
        break;
      case 'Int':
        if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw typeError(field.name, 'an Int', value);
        fields[field.name] = value;
        break;
      case 'Float':
        if (typeof value !== 'number' || !Number.isFinite(value)) throw typeError(field.name, 'a Float', value);
        fields[field.name] = value;
        break;
      case 'Boolean':
        if (typeof value !== 'boolean') throw typeError(field.name, 'a Boolean', value);
        fields[field.name] = value;
        break;
      case 'Timestamp': {
        const ms = typeof value === 'number' ? value : typeof value === 'string' ? isoMs(value) : NaN;
        if (!Number.isSafeInteger(ms) || ms < 0) throw typeError(field.name, 'a Timestamp (ms since the epoch, or ISO-8601 with Z or an offset)', value);
        fields[field.name] = ms;
        break;
      }
    }
  }
  return { fields, ts: fields[schema.timestamp] as number };
}

/**
 * ISO-8601 date-time to ms, NaN unless it has a zone (Z or ±hh:mm): without
 * one, Date.parse reads local time, and the same event would get another
 * event time on a host in another time zone. NaN too for a day the month
 * lacks (Date.parse turns 2024-02-30 into 1 March).
 */
const isoDateTime = /^(\d{4})-(\d\d)-(\d\d)T\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$/i;

function isoMs(text: string): number {
  const m = isoDateTime.exec(text);
  if (!m) return NaN;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (month < 1 || month > 12 || day < 1 || day > new Date(Date.UTC(year, month, 0)).getUTCDate()) return NaN;
  return Date.parse(text);
}

function typeError(field: string, expected: string, got: unknown): InvalidEventError {
  const shown = typeof got === 'string' ? JSON.stringify(got.length > 60 ? `${got.slice(0, 60)}…` : got) : typeof got === 'object' ? JSON.stringify(got)?.slice(0, 60) : String(got);
  return new InvalidEventError(`field "${field}" must be ${expected}, got ${shown}`);
}
