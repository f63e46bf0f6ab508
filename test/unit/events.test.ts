import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { EventFieldType, EventSchema } from '../../schema/types.js';
import { InvalidEventError, validateEvent } from '../../materializer/events.js';

/**
 * validateEvent: every field type, every way an event can be wrong, and the
 * reason text a producer's owner reads in the dead-letter queue (it names the
 * field).
 */
const field = (name: string, type: EventFieldType, optional = false) => ({ name, type, optional, description: '' });

const schema: EventSchema = {
  topic: 'orders', description: 'test', key: 'user', timestamp: 'at', partitions: 3,
  fields: [
    field('user', 'String'),
    field('qty', 'Int'),
    field('price', 'Float'),
    field('paid', 'Boolean'),
    field('at', 'Timestamp'),
    field('note', 'String', true),
    field('retries', 'Int', true),
    field('discount', 'Float', true),
    field('gift', 'Boolean', true),
    field('shippedAt', 'Timestamp', true),
  ],
};

const base = { user: 'u1', qty: 2, price: 9.5, paid: true, at: 1_700_000_000_000 };

const bytes = (body: unknown): Buffer => Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
const validate = (body: unknown) => validateEvent(schema, bytes(body));

/** Asserts the event is rejected with an InvalidEventError whose message matches. */
function rejects(body: unknown, message: RegExp): InvalidEventError {
  let caught: unknown;
  try {
    validate(body);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof InvalidEventError, `expected an InvalidEventError for ${typeof body === 'string' ? body : JSON.stringify(body)}, got ${String(caught)}`);
  assert.equal(caught.name, 'InvalidEventError');
  assert.match(caught.message, message);
  return caught;
}

describe('validateEvent: valid events', () => {
  test('every field type; ts is the timestamp field in ms', () => {
    const event = validate({ ...base, note: 'hi', retries: 0, discount: -0.5, gift: false, shippedAt: 1_700_000_100_000 });
    assert.deepEqual(event, {
      fields: { user: 'u1', qty: 2, price: 9.5, paid: true, at: 1_700_000_000_000, note: 'hi', retries: 0, discount: -0.5, gift: false, shippedAt: 1_700_000_100_000 },
      ts: 1_700_000_000_000,
    });
  });

  test('optional fields may be absent or null; then they are not in fields', () => {
    for (const body of [base, { ...base, note: null, retries: null, discount: null, gift: null, shippedAt: null }]) {
      const event = validate(body);
      assert.deepEqual(event.fields, base);
      for (const name of ['note', 'retries', 'discount', 'gift', 'shippedAt']) assert.equal(name in event.fields, false, name);
    }
  });

  test('extra fields are ignored', () => {
    const event = validate({ ...base, unknown: { nested: [1, 2] }, qtyy: 'typo', __proto__x: 1 });
    assert.deepEqual(event.fields, base);
  });

  test('Int accepts negatives, zero, the largest safe integer, and 3.0 (JSON has one number type)', () => {
    for (const qty of [-7, 0, Number.MAX_SAFE_INTEGER]) assert.equal(validate({ ...base, qty }).fields.qty, qty);
    assert.equal(validateEvent(schema, Buffer.from('{"user":"u1","qty":3.0,"price":1,"paid":false,"at":0}')).fields.qty, 3);
  });

  test('Float accepts integers, negatives and tiny or huge finite numbers', () => {
    for (const price of [0, 3, -2.25, 1e-300, 1.7976931348623157e308]) assert.equal(validate({ ...base, price }).fields.price, price);
  });

  test('Timestamp as ms since the epoch, including 0', () => {
    assert.equal(validate({ ...base, at: 0 }).ts, 0);
    assert.equal(validate({ ...base, at: 1_700_000_000_123 }).ts, 1_700_000_000_123);
  });

  test('Timestamp as ISO-8601 with Z or an offset, normalized to ms', () => {
    const cases: [string, number][] = [
      ['2024-01-01T00:00:00Z', Date.UTC(2024, 0, 1)],
      ['2024-01-01T00:00:00.250Z', Date.UTC(2024, 0, 1, 0, 0, 0, 250)],
      ['2024-01-01T02:00:00+02:00', Date.UTC(2024, 0, 1)],
      ['2023-12-31T19:30:00-04:30', Date.UTC(2024, 0, 1)],
      ['2024-02-29T12:00Z', Date.UTC(2024, 1, 29, 12)],
      ['1970-01-01T00:00:00Z', 0],
    ];
    for (const [text, ms] of cases) {
      const event = validate({ ...base, at: text, shippedAt: text });
      assert.equal(event.ts, ms, text);
      assert.equal(event.fields.at, ms, text);
      assert.equal(event.fields.shippedAt, ms, `${text} (optional Timestamp)`);
    }
  });
});

describe('validateEvent: invalid events', () => {
  test('not JSON', () => {
    for (const text of ['{not json', '', '{"user":"u1",}', 'undefined']) rejects(text, /^not valid JSON: /);
    // Bytes that are not UTF-8 decode to U+FFFD and are not JSON either.
    assert.throws(() => validateEvent(schema, Buffer.from([0xff, 0xfe, 0x7b])), (e: unknown) => e instanceof InvalidEventError && /^not valid JSON/.test(e.message));
  });

  test('not an object', () => {
    rejects('[]', /^expected a JSON object, got an array$/);
    rejects(`[${JSON.stringify(base)}]`, /got an array/);
    rejects('42', /^expected a JSON object, got number$/);
    rejects('"text"', /^expected a JSON object, got string$/);
    rejects('true', /^expected a JSON object, got boolean$/);
    rejects('null', /^expected a JSON object, got null$/);
  });

  test('a missing required field is named with its type; null counts as missing', () => {
    const types: Record<string, string> = { user: 'String', qty: 'Int', price: 'Float', paid: 'Boolean', at: 'Timestamp' };
    for (const name of Object.keys(base)) {
      const without: Record<string, unknown> = { ...base };
      delete without[name];
      rejects(without, new RegExp(`^missing required field "${name}" \\(${types[name]}\\)$`));
      rejects({ ...base, [name]: null }, new RegExp(`^missing required field "${name}"`));
    }
    rejects({}, /^missing required field "user"/);
  });

  const wrong: [field: string, value: unknown, expected: RegExp, shown: string][] = [
    ['user', 42, /a non-empty String/, 'got 42'],
    ['user', '', /a non-empty String/, 'got ""'],
    ['user', true, /a non-empty String/, 'got true'],
    ['user', ['u1'], /a non-empty String/, 'got ["u1"]'],
    ['user', { id: 'u1' }, /a non-empty String/, 'got {"id":"u1"}'],
    ['note', '', /a non-empty String/, 'got ""'],
    ['note', 7, /a non-empty String/, 'got 7'],
    ['qty', '2', /an Int/, 'got "2"'],
    ['qty', 2.5, /an Int/, 'got 2.5'],
    ['qty', 2 ** 53, /an Int/, `got ${2 ** 53}`],
    ['qty', true, /an Int/, 'got true'],
    ['retries', 0.1, /an Int/, 'got 0.1'],
    ['price', '9.5', /a Float/, 'got "9.5"'],
    ['price', false, /a Float/, 'got false'],
    ['price', 'NaN', /a Float/, 'got "NaN"'],
    ['discount', {}, /a Float/, 'got {}'],
    ['paid', 'true', /a Boolean/, 'got "true"'],
    ['paid', 1, /a Boolean/, 'got 1'],
    ['gift', 0, /a Boolean/, 'got 0'],
    ['at', -1, /a Timestamp/, 'got -1'],
    ['at', 1.5, /a Timestamp/, 'got 1.5'],
    ['at', 2 ** 53, /a Timestamp/, `got ${2 ** 53}`],
    ['at', 'yesterday', /a Timestamp/, 'got "yesterday"'],
    ['at', '1700000000000', /a Timestamp/, 'got "1700000000000"'],
    ['at', '2024-13-01T00:00:00Z', /a Timestamp/, 'got "2024-13-01T00:00:00Z"'],
    ['at', '2024-01-01T25:00:00Z', /a Timestamp/, 'got "2024-01-01T25:00:00Z"'],
    ['at', '2024-01-01Tnoon', /a Timestamp/, 'got "2024-01-01Tnoon"'],
    ['at', '2024-01-01', /a Timestamp/, 'got "2024-01-01"'],
    ['at', 'Mon, 01 Jan 2024 00:00:00 GMT', /a Timestamp/, 'got "Mon, 01 Jan 2024 00:00:00 GMT"'],
    ['at', '1969-12-31T23:59:59Z', /a Timestamp/, 'got "1969-12-31T23:59:59Z"'],
    ['at', true, /a Timestamp/, 'got true'],
    ['shippedAt', 'soon', /a Timestamp/, 'got "soon"'],
  ];
  for (const [name, value, expected, shown] of wrong) {
    test(`field "${name}" = ${JSON.stringify(value)} is rejected, naming the field and the value`, () => {
      const error = rejects({ ...base, [name]: value }, new RegExp(`^field "${name}" must be `));
      assert.match(error.message, expected);
      assert.ok(error.message.endsWith(shown), `${error.message} should end with ${shown}`);
    });
  }

  test('1e400 parses to Infinity: neither a Float nor an Int nor a Timestamp', () => {
    assert.equal(JSON.parse('1e400'), Infinity);
    const body = (name: string, literal: string) => JSON.stringify(base).replace(/}$/, `,"${name}":${literal}}`).replace(`"${name}":${JSON.stringify((base as Record<string, unknown>)[name])},`, '');
    rejects(body('price', '1e400'), /^field "price" must be a Float, got Infinity$/);
    rejects(body('price', '-1e400'), /^field "price" must be a Float, got -Infinity$/);
    rejects(body('qty', '1e400'), /^field "qty" must be an Int, got Infinity$/);
    rejects(body('at', '1e400'), /^field "at" must be a Timestamp/);
    rejects(body('discount', '1e400'), /^field "discount" must be a Float, got Infinity$/);
  });

  test('an ISO timestamp without a zone is rejected: it would mean the host\'s local time', () => {
    rejects({ ...base, at: '2024-01-01T00:00:00' }, /^field "at" must be a Timestamp \(ms since the epoch, or ISO-8601 with Z or an offset\), got "2024-01-01T00:00:00"$/);
    rejects({ ...base, at: '2024-01-01T00:00:00.000' }, /^field "at" must be a Timestamp/);
  });

  test('an ISO date the month does not have is rejected, not rolled over', () => {
    for (const text of ['2024-02-30T00:00:00Z', '2023-02-29T00:00:00Z', '2024-04-31T00:00:00Z', '2024-01-00T00:00:00Z', '2024-00-10T00:00:00Z']) {
      rejects({ ...base, at: text }, /^field "at" must be a Timestamp/);
    }
    assert.equal(validate({ ...base, at: '2024-12-31T23:59:59Z' }).ts, Date.UTC(2024, 11, 31, 23, 59, 59));
  });

  test('a long bad string is shortened in the message', () => {
    const error = rejects({ ...base, qty: 'x'.repeat(200) }, /^field "qty" must be an Int, got "x+…"$/);
    assert.ok(error.message.length < 120, error.message);
  });

  test('the first problem in schema order is reported', () => {
    rejects({ ...base, user: '', qty: 'two' }, /^field "user"/);
    rejects({ qty: 'two' }, /^missing required field "user"/);
  });
});
