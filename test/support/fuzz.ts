/**
 * A seeded generator of bad input for the gateway, over HTTP and graphql-ws
 * (test/integration/bad-input-fuzz.test.ts sends it). The same seed and
 * limits always give the same cases, in the same order, so a failure is
 * replayed with FUZZ_SEED=<seed>.
 *
 * Each case says what a correct answer looks like: HTTP cases the error codes
 * allowed (or that data may come back, for the few inputs that are odd but
 * legal); ws cases the close codes allowed, or the `error` messages expected
 * on a connection that stays open.
 */
import { createHash } from 'node:crypto';
import { mulberry32 } from '../../store/demo-data.js';

export class Rng {
  private readonly next: () => number;
  constructor(readonly seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  string(length: number, alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_'): string {
    let out = '';
    for (let i = 0; i < length; i++) out += alphabet[Math.floor(this.next() * alphabet.length)];
    return out;
  }
  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = Math.floor(this.next() * 256);
    return out;
  }
}

/** The gateway settings the generator aims just past. */
export interface FuzzLimits {
  readonly maxBatchIds: number;
  readonly maxQueryDepth: number;
  readonly maxQueryNesting: number;
  readonly maxBodyBytes: number;
  readonly maxSubscriptionsPerConnection: number;
  /** Ids of manifest operations (valid hashes) and their texts. */
  readonly manifest: readonly { readonly id: string; readonly body: string }[];
}

/** Every code an answer to bad input may carry (README, "Error codes"). */
export const knownCodes = new Set([
  'BAD_REQUEST', 'BODY_TOO_LARGE', 'BATCH_TOO_LARGE', 'QUERY_TOO_DEEP', 'PERSISTED_QUERY_NOT_IN_SAFELIST', 'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_INVALID', 'GRAPHQL_PARSE_FAILED', 'GRAPHQL_VALIDATION_FAILED', 'BAD_USER_INPUT', 'OPERATION_RESOLUTION_FAILURE',
  'OPERATION_NOT_SUPPORTED', 'TOO_MANY_SUBSCRIPTIONS', 'QUERY_TOO_COSTLY', 'FORBIDDEN',
]);

export interface HttpCase {
  readonly kind: 'http';
  readonly category: string;
  readonly method: string;
  /** Path and query string, e.g. `/graphql?query=…`. */
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: Buffer;
  /** Codes one of which the answer's errors must carry; `data` allows a data answer without errors (legal but odd input). */
  readonly expect: { readonly codes: ReadonlySet<string> } | 'data-or-error';
}

export interface WsFrame {
  readonly data: Buffer;
  readonly binary: boolean;
}

export type WsExpect =
  /** The server closes the connection with one of these codes. */
  | { readonly close: readonly number[] }
  /** The connection stays open; each of these subscription ids gets an `error` message with one of the codes. */
  | { readonly errors: Readonly<Record<string, ReadonlySet<string>>> };

export interface WsCase {
  readonly kind: 'ws';
  readonly category: string;
  /** Subprotocols offered; empty: none. */
  readonly protocols: readonly string[];
  /** Send `connection_init` and wait for the ack before the frames. */
  readonly init: boolean;
  readonly frames: readonly WsFrame[];
  readonly expect: WsExpect;
}

export type FuzzCase = HttpCase | WsCase;

/** Inputs a case sends: one HTTP request; each generated ws frame (a refused handshake counts as one). */
export function inputsOf(c: FuzzCase): number {
  return c.kind === 'http' ? 1 : Math.max(1, c.frames.length);
}

const codes = (...c: string[]): { codes: ReadonlySet<string> } => ({ codes: new Set(c) });
const json = { 'content-type': 'application/json' };
const text = (s: string) => Buffer.from(s, 'utf8');

// --- GraphQL building blocks ---------------------------------------------------------------

const entities = [
  { one: 'user', many: 'users', type: 'User', fields: ['id', 'clickStats { clickRate stale }', 'profile { country isPremium }'] },
  { one: 'item', many: 'items', type: 'Item', fields: ['id', 'itemStats { ctr price }'] },
  { one: 'merchant', many: 'merchants', type: 'Merchant', fields: ['id', 'riskStats { txnCount1h chargebackRate }'] },
] as const;

function validSelection(rng: Rng): string {
  const e = rng.pick(entities);
  return `${e.one}(id: "${rng.int(1, 50)}") { ${rng.pick(e.fields)} }`;
}

function ids(rng: Rng, n: number): string[] {
  return Array.from({ length: n }, () => String(rng.int(1, 2000)));
}

/** A JSON value of any type but `allowed`. */
function wrongValue(rng: Rng, ...allowed: string[]): unknown {
  const values: [string, () => unknown][] = [
    ['number', () => rng.pick([0, -1, 42, 1.5, 1e308, -1e-308])],
    ['boolean', () => rng.chance(0.5)],
    ['string', () => rng.string(rng.int(0, 20))],
    ['array', () => [rng.int(0, 9), 'x', null]],
    ['object', () => ({ [rng.string(4)]: rng.int(0, 9) })],
  ];
  return rng.pick(values.filter(([t]) => !allowed.includes(t)))[1]();
}

function body(value: unknown): Buffer {
  return text(JSON.stringify(value));
}

// --- HTTP --------------------------------------------------------------------------------------

type HttpGenerator = (rng: Rng, limits: FuzzLimits) => HttpCase;

const post = (category: string, payload: Buffer, expect: HttpCase['expect'], headers: Record<string, string> = json): HttpCase => ({
  kind: 'http', category, method: 'POST', path: '/graphql', headers, body: payload, expect,
});

const malformedJson: HttpGenerator = (rng) => {
  const valid = JSON.stringify({ query: `{ ${validSelection(rng)} }` });
  const variants: (() => Buffer)[] = [
    () => text(valid.slice(0, rng.int(0, valid.length - 1))), // truncated
    () => rng.bytes(rng.int(1, 300)), // binary garbage
    () => Buffer.concat([text(valid.slice(0, 5)), Buffer.from([0, 0, 0]), text(valid.slice(5))]), // NUL bytes
    () => Buffer.from(valid, 'utf16le'), // a wrong encoding
    () => Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(valid, 'utf16le')]),
    () => Buffer.concat([text('{"query": "'), Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xff]), text('"}')]).subarray(0, rng.int(12, 17)),
    () => text(`{"query": ${'9'.repeat(rng.int(400, 5000))}}`), // a huge number where a string belongs
    () => text(`{"query": 1e${rng.int(309, 99999)}}`),
    () => text('['.repeat(rng.int(1000, 20_000)) + ']'.repeat(rng.int(0, 20_000))), // deep arrays
    () => text('{"a":'.repeat(rng.int(500, 8000)) + '1' + '}'.repeat(rng.int(0, 8000))), // deep objects
    () => text(`{'query': '{ __typename }'}`),
    () => text(`{"query": "{ __typename }",}`),
    () => text(`{"query": "{ __typename }"} // comment`),
    () => text(`{"query": NaN}`),
    () => text(`{"query": "\\u00"}`),
    () => text(''),
    () => text(' '.repeat(rng.int(1, 1000))),
    () => text(rng.pick(['null', 'true', '0', '"query"', '[]', '[{}]', `[${valid}]`])),
    () => text(`{"query": "{ __typename }"}${rng.pick(['x', '{}', '[]', '\u0000'])}`),
  ];
  return post('malformed JSON', rng.pick(variants)(), codes('BAD_REQUEST'));
};

const wrongTypes: HttpGenerator = (rng) => {
  const request: Record<string, unknown> = { query: `{ ${validSelection(rng)} }` };
  const field = rng.pick(['query', 'variables', 'operationName', 'extensions']);
  request[field] = field === 'query' ? wrongValue(rng, 'string') : field === 'operationName' ? wrongValue(rng, 'string') : wrongValue(rng, 'object');
  if (field === 'query' && rng.chance(0.3)) delete request.query;
  return post(`wrong type: ${field}`, body(request), codes('BAD_REQUEST'));
};

const unknownFields: HttpGenerator = (rng) => {
  const e = rng.pick(entities);
  const name = rng.string(rng.int(1, 40), 'abcdefghijklmnopqrstuvwxyz');
  const queries = [
    `{ ${e.one}(id: "1") { id ${name}Zq } }`,
    `{ ${name}Zq }`,
    `{ ${e.one}(id: "1", ${name}Zq: 1) { id } }`,
    `{ ${e.one}(id: "1") { ... on ${name}Zq { id } } }`,
    `query($v: ${name}Zq) { ${e.one}(id: "1") { id } }`,
    `{ ${e.many}(ids: ["1"]) { id ${e.fields[1]!.split(' ')[0]} { ${name}Zq } } }`,
    `{ ${e.one}(id: "1") }`, // an object without a selection
    `{ ${e.one}(id: "1") { id { id } } }`, // a selection on a scalar
    `{ featureRegistry { entities { ${name}Zq } } }`,
  ];
  // Unknown keys in the request body are ignored by the GraphQL-over-HTTP spec; an unknown field in the query is not.
  const request: Record<string, unknown> = { query: rng.pick(queries) };
  if (rng.chance(0.3)) request[`x${name}`] = rng.int(0, 9);
  return post('unknown field', body(request), codes('GRAPHQL_VALIDATION_FAILED'));
};

const hugeQueries: HttpGenerator = (rng, limits) => {
  const variant = rng.int(0, 4);
  if (variant === 0) {
    // A token flood past the parser's budget (20,000 tokens), under the body limit.
    const query = `{ user(id: "1") { ${'id '.repeat(rng.int(20_001, Math.max(20_001, Math.floor(limits.maxBodyBytes / 3) - 100)))}} }`;
    return post('huge query: token flood', body({ query }), codes('GRAPHQL_PARSE_FAILED'));
  }
  if (variant === 1) {
    // A body past MAX_BODY_BYTES.
    const query = `{ ${Array.from({ length: Math.ceil(limits.maxBodyBytes / 10) + rng.int(1, 2000) }, (_, i) => `a${i}: __typename`).join(' ')} }`;
    return post('huge query: over the body limit', body({ query }), codes('BODY_TOO_LARGE'));
  }
  if (variant === 2) {
    // Many aliases, one of them wrong.
    const n = rng.int(50, 800);
    const fields = Array.from({ length: n }, (_, i) => `a${i}: __typename`);
    fields[rng.int(0, n - 1)] = `bad: nope${rng.string(5)}`;
    return post('huge query: many aliases', body({ query: `{ ${fields.join(' ')} }` }), codes('GRAPHQL_VALIDATION_FAILED'));
  }
  if (variant === 3) {
    // A long string where an enum or a name belongs.
    const long = `f${rng.string(rng.int(1000, Math.floor(limits.maxBodyBytes / 2)))}`;
    return post('huge query: long name', body({ query: `{ user(id: "1") { ${long} } }` }), codes('GRAPHQL_VALIDATION_FAILED'));
  }
  // The same field many times with conflicting arguments: validation must stay bounded.
  const n = rng.int(20, 120);
  const query = `{ ${Array.from({ length: n }, (_, i) => `user(id: "${i}") { id }`).join(' ')} }`;
  return post('huge query: conflicting fields', body({ query }), codes('GRAPHQL_VALIDATION_FAILED'));
};

const deepQueries: HttpGenerator = (rng, limits) => {
  const variant = rng.int(0, 4);
  if (variant === 0) {
    // Field depth past MAX_QUERY_DEPTH through the registry's recursive-looking types.
    const extra = rng.int(1, 5);
    let inner = 'name';
    for (let i = 0; i < limits.maxQueryDepth + extra; i++) inner = `${rng.pick(['entities', 'views', 'features'])} { ${inner} }`;
    return post('deep query: fields', body({ query: `{ featureRegistry { ${inner} } }` }), codes('QUERY_TOO_DEEP', 'GRAPHQL_VALIDATION_FAILED'));
  }
  const n = rng.int(limits.maxQueryNesting + 1, 3000);
  if (variant === 1) {
    const query = `{ user(id: "1") { ${'... on User { '.repeat(n)}id${' }'.repeat(n)} } }`;
    return post('deep query: inline fragments', body({ query }), codes('QUERY_TOO_DEEP'));
  }
  if (variant === 2) {
    const query = `{ users(ids: ${'['.repeat(n)}"1"${']'.repeat(n)}) { id } }`;
    return post('deep query: nested list literal', body({ query }), codes('QUERY_TOO_DEEP'));
  }
  if (variant === 3) {
    const query = `{ user(id: "1") { ${'id { '.repeat(n)}${' }'.repeat(rng.int(0, n))}`;
    return post('deep query: unbalanced', body({ query }), codes('QUERY_TOO_DEEP'));
  }
  // Deeply nested variable values: rejected by type, never recursed into without bound.
  const depth = rng.int(100, 10_000);
  const raw = `{"query":"query Q($ids: [ID!]!) { users(ids: $ids) { id } }","variables":{"ids":${'['.repeat(depth)}"1"${']'.repeat(depth)}}}`;
  return post('deep query: nested variables', text(raw), codes('BAD_USER_INPUT'));
};

const fragmentAbuse: HttpGenerator = (rng) => {
  const n = rng.int(2, 12);
  const variant = rng.int(0, 5);
  let query: string;
  if (variant === 0) {
    query = `{ user(id: "1") { ...F0 } } ${Array.from({ length: n }, (_, i) => `fragment F${i} on User { id ...F${(i + 1) % n} }`).join(' ')}`;
  } else if (variant === 1) {
    query = `{ user(id: "1") { ...Self } } fragment Self on User { id ...Self }`;
  } else if (variant === 2) {
    query = `{ user(id: "1") { ...Missing${rng.string(4)} } }`;
  } else if (variant === 3) {
    query = `{ user(id: "1") { id } } fragment Unused on User { id }`;
  } else if (variant === 4) {
    query = `{ user(id: "1") { ...F } } fragment F on ${rng.pick(['Item', 'Merchant', 'Query', 'Nope'])} { id }`;
  } else {
    // A fan-out of fragments (each spreads the next twice) that also closes a cycle at the end.
    const k = rng.int(20, 40);
    query = `{ ...F0 } ${Array.from({ length: k }, (_, i) => `fragment F${i} on Query { ...F${i + 1} ...F${i + 1} }`).join(' ')} fragment F${k} on Query { ...F0 }`;
  }
  return post('fragment cycle or misuse', body({ query }), codes('GRAPHQL_VALIDATION_FAILED'));
};

const fragmentFanOut: HttpGenerator = (rng) => {
  // Legal, and exponential in a naive walker: F0 spreads F1 twice, F1 spreads F2 twice, … (answered, quickly).
  const k = rng.int(20, 40);
  const query = `{ user(id: "1") { ...F0 } } ${Array.from({ length: k }, (_, i) => `fragment F${i} on User { ...F${i + 1} ...F${i + 1} }`).join(' ')} fragment F${k} on User { id }`;
  return post('fragment fan-out', body({ query }), 'data-or-error');
};

const directiveAbuse: HttpGenerator = (rng) => {
  const variant = rng.int(0, 5);
  const queries = [
    () => `{ __typename @nope${rng.string(3)} }`,
    () => `{ __typename @skip(if: true) @skip(if: false) }`,
    () => `{ __typename @include(if: ${rng.pick(['"yes"', '1', 'null', '[true]', '{a: 1}'])}) }`,
    () => `{ __typename @skip }`,
    () => `query Q @skip(if: true) { __typename }`,
    () => `{ __typename ${'@skip(if: false) '.repeat(rng.int(2, 300))}}`,
  ];
  return post('directive abuse', body({ query: queries[variant]!() }), codes('GRAPHQL_VALIDATION_FAILED', 'GRAPHQL_PARSE_FAILED'));
};

const wrongVariables: HttpGenerator = (rng) => {
  const variant = rng.int(0, 5);
  if (variant === 0) {
    const value = rng.pick<unknown>([[{}], true, 5.5, null, { id: '1' }, [['1']], [null], [true], [1.5], {}]);
    return post('variable of the wrong type', body({ query: 'query Q($ids: [ID!]!) { users(ids: $ids) { id } }', variables: { ids: value } }), codes('BAD_USER_INPUT'));
  }
  if (variant === 1) return post('variable missing', body({ query: 'query Q($id: ID!) { user(id: $id) { id } }', variables: {} }), codes('BAD_USER_INPUT'));
  if (variant === 2) return post('variable undeclared', body({ query: '{ user(id: $id) { id } }', variables: { id: '1' } }), codes('GRAPHQL_VALIDATION_FAILED'));
  if (variant === 3) {
    return post('variable of an unknown type', body({ query: `query Q($id: ${rng.pick(['Nope', 'User', 'Int!!', '[ID'])}) { user(id: $id) { id } }`, variables: { id: '1' } }), codes('GRAPHQL_VALIDATION_FAILED', 'GRAPHQL_PARSE_FAILED'));
  }
  if (variant === 4) {
    return post('variable used as the wrong type', body({ query: 'query Q($id: Int) { user(id: $id) { id } }', variables: { id: 1 } }), codes('GRAPHQL_VALIDATION_FAILED'));
  }
  return post('variable default of the wrong type', body({ query: 'query Q($id: ID! = {a: 1}) { user(id: $id) { id } }' }), codes('GRAPHQL_VALIDATION_FAILED'));
};

const batchOverLimit: HttpGenerator = (rng, limits) => {
  const list = ids(rng, limits.maxBatchIds + rng.int(1, limits.maxBatchIds * 4));
  const e = rng.pick(entities);
  const variant = rng.int(0, 3);
  const request =
    variant === 0 ? { query: `{ ${e.many}(ids: ${JSON.stringify(list)}) { id } }` }
    : variant === 1 ? { query: `query Q($ids: [ID!]!) { ${e.many}(ids: $ids) { id } }`, variables: { ids: list } }
    : variant === 2 ? { query: `query Q($ids: [ID!]! = ${JSON.stringify(list)}) { ${e.many}(ids: $ids) { id } }` }
    : { query: `query Q($ids: [ID!]!) { ...B } fragment B on Query { ${e.many}(ids: $ids) { id } }`, variables: { ids: list } };
  return post('ids over MAX_BATCH_IDS', body(request), codes('BATCH_TOO_LARGE'));
};

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

const persistedHashes: HttpGenerator = (rng, limits) => {
  const pq = (sha256Hash: unknown, version: unknown = 1) => ({ persistedQuery: { version, sha256Hash } });
  const manifest = rng.pick(limits.manifest);
  const variant = rng.int(0, 8);
  switch (variant) {
    case 0: return post('persisted: wrong length', body({ extensions: pq(rng.string(rng.int(0, 63), '0123456789abcdef')) }), codes('PERSISTED_QUERY_INVALID'));
    case 1: return post('persisted: not hex', body({ extensions: pq(rng.string(64, 'ghijklmnopqrstuvwxyzGHIJ-_+/')) }), codes('PERSISTED_QUERY_INVALID'));
    case 2: return post('persisted: upper-case hex', body({ extensions: pq(manifest.id.toUpperCase()) }), codes('PERSISTED_QUERY_INVALID'));
    case 3: return post('persisted: unknown sha', body({ extensions: pq(sha256(rng.string(16))) }), codes('PERSISTED_QUERY_NOT_FOUND'));
    case 4: return post('persisted: hash and another query', body({ query: `{ ${validSelection(rng)} }`, extensions: pq(manifest.id) }), codes('PERSISTED_QUERY_INVALID'));
    case 5: return post('persisted: wrong version', body({ extensions: pq(manifest.id, wrongValue(rng)) }), codes('PERSISTED_QUERY_INVALID'));
    case 6: return post('persisted: hash of the wrong type', body({ extensions: pq(wrongValue(rng, 'string')) }), codes('PERSISTED_QUERY_INVALID'));
    case 7: return post('persisted: extension not an object', body({ extensions: { persistedQuery: rng.pick<unknown>(['x', 1, true, []]) } }), codes('PERSISTED_QUERY_INVALID'));
    default: {
      // A manifest operation with bad variables or operation name (the compiled fast path must refuse these alike).
      const bad = rng.pick<Record<string, unknown>>([
        { variables: { ids: [{}] } }, { variables: {} }, { variables: { user: ['1'], merchant: 1.5 } }, { operationName: `Nope${rng.string(3)}` },
        { variables: { ids: ids(rng, limits.maxBatchIds + 1), items: ids(rng, limits.maxBatchIds + 1), user: '1' } },
      ]);
      return post('persisted: manifest operation, bad request', body({ extensions: pq(manifest.id), ...bad }), codes('BAD_USER_INPUT', 'OPERATION_RESOLUTION_FAILURE', 'BATCH_TOO_LARGE'));
    }
  }
};

const operations: HttpGenerator = (rng) => {
  const variant = rng.int(0, 4);
  const requests = [
    { query: 'query A { __typename } query B { __typename }' },
    { query: `query A { ${validSelection(rng)} }`, operationName: `B${rng.string(3)}` },
    { query: `mutation { ${rng.string(5, 'abcdef')} }` },
    { query: 'subscription { featureChanged(entity: USER, ids: ["1"]) { id } }' },
    { query: '{ __typename }', operationName: 'A' },
  ];
  return post('operation resolution', body(requests[variant]), codes('OPERATION_RESOLUTION_FAILURE', 'OPERATION_NOT_SUPPORTED', 'GRAPHQL_VALIDATION_FAILED'));
};

const methodsAndHeaders: HttpGenerator = (rng) => {
  const valid = body({ query: `{ ${validSelection(rng)} }` });
  const variant = rng.int(0, 6);
  if (variant === 0) {
    return { kind: 'http', category: 'wrong method', method: rng.pick(['PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE']), path: '/graphql', headers: json, body: valid, expect: codes('BAD_REQUEST') };
  }
  if (variant === 1) {
    const type = rng.pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/html', 'application/xml', 'image/png']);
    return post('wrong content type', valid, codes('BAD_REQUEST'), { 'content-type': type });
  }
  if (variant === 2) return post('no content type', valid, codes('BAD_REQUEST'), {});
  if (variant === 3) {
    // Apollo answers 406 when the client accepts nothing it can send.
    return post('unacceptable accept', valid, codes('BAD_REQUEST'), { ...json, accept: rng.pick(['text/html', 'application/xml', 'image/*', 'text/event-stream']) });
  }
  if (variant === 4) {
    // A JSON content type with a body that is not JSON.
    return post('json content type, form body', text(`query=${encodeURIComponent('{ __typename }')}`), codes('BAD_REQUEST'), { 'content-type': rng.pick(['application/json', 'application/json; charset=utf-8', 'application/graphql+json']) });
  }
  if (variant === 5) return post('application/graphql body', text('{ __typename }'), codes('BAD_REQUEST'), { 'content-type': 'application/graphql' });
  // Junk headers next to a bad body: the answer must still be the body's error.
  return post('junk headers', text('{"query": '), codes('BAD_REQUEST'), { ...json, 'x-apollo-operation-name': rng.string(50), 'apollo-require-preflight': rng.string(3), 'accept-encoding': 'br;q=2, *;q=-1' });
};

const badGet: HttpGenerator = (rng, limits) => {
  const pre = { 'apollo-require-preflight': 'true' };
  const q = (s: string) => encodeURIComponent(s);
  const variants: [string, string, HttpCase['expect'], Record<string, string>][] = [
    ['GET: mutation', `query=${q('mutation { pushUserProfile(rows: []) { written } }')}`, codes('BAD_REQUEST'), pre],
    ['GET: no CSRF header', `query=${q(`{ ${validSelection(rng)} }`)}`, codes('BAD_REQUEST'), {}],
    ['GET: variables not JSON', `query=${q('{ __typename }')}&variables=${q(`{${rng.string(5)}`)}`, codes('BAD_REQUEST'), pre],
    ['GET: variables not an object', `query=${q('{ __typename }')}&variables=${q(JSON.stringify(wrongValue(rng, 'object')))}`, codes('BAD_REQUEST'), pre],
    ['GET: extensions not JSON', `extensions=${q(`{${rng.string(5)}`)}`, codes('BAD_REQUEST'), pre],
    ['GET: query twice', `query=${q('{ __typename }')}&query=${q('{ __typename }')}`, codes('BAD_REQUEST'), pre],
    ['GET: empty query', rng.pick(['query=', '', 'operationName=A', 'variables=%7B%7D']), codes('BAD_REQUEST'), pre],
    ['GET: broken escapes', `query=${rng.pick(['%', '%E0%A4%A', '%FF%FE', '%00', '%7B%7D%'])}`, codes('GRAPHQL_PARSE_FAILED', 'BAD_REQUEST'), pre],
    ['GET: bad persisted hash', `extensions=${q(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: rng.string(rng.int(1, 70)) } }))}`, codes('PERSISTED_QUERY_INVALID'), pre],
    ['GET: deep query', `query=${q(`{ users(ids: ${'['.repeat(limits.maxQueryNesting + rng.int(1, 500))}"1"]) { id } }`)}`, codes('QUERY_TOO_DEEP'), pre],
    ['GET: unknown field', `query=${q(`{ nope${rng.string(4)} }`)}`, codes('GRAPHQL_VALIDATION_FAILED'), pre],
  ];
  const [category, search, expect, headers] = rng.pick(variants);
  return { kind: 'http', category, method: 'GET', path: search ? `/graphql?${search}` : '/graphql', headers, expect };
};

/** Odd but legal: each must be answered without a 5xx (data or a coded error). */
const oddButLegal: HttpGenerator = (rng) => {
  const variants: (() => Buffer)[] = [
    () => body({ query: `{ ${validSelection(rng)} }`, [`unknown${rng.string(3)}`]: wrongValue(rng) }),
    () => body({ query: `{ user(id: "${rng.string(rng.int(0, 2000), 'abc\u0000\u00e9\ud83d\ude00"\\')}") { id } }` }),
    () => body({ query: `{ ${validSelection(rng)} }`, variables: { unused: JSON.parse('['.repeat(1000) + ']'.repeat(1000)) } }),
    () => body({ query: `{ ${validSelection(rng)} }`, variables: null, operationName: null, extensions: null }),
    () => body({ query: `# ${rng.string(200)}\n{ ${validSelection(rng)} }` }),
    () => body({ query: `{ users(ids: ${rng.pick(['5', '"x"', '[]'])}) { id } }` }),
  ];
  return post('odd but legal', rng.pick(variants)(), 'data-or-error');
};

const httpGenerators: readonly [HttpGenerator, number][] = [
  [malformedJson, 14], [wrongTypes, 8], [unknownFields, 8], [hugeQueries, 5], [deepQueries, 8], [fragmentAbuse, 7], [fragmentFanOut, 1],
  [directiveAbuse, 6], [wrongVariables, 8], [batchOverLimit, 6], [persistedHashes, 10], [operations, 5], [methodsAndHeaders, 8], [badGet, 8],
  [oddButLegal, 3],
];

export function generateHttpCases(rng: Rng, limits: FuzzLimits, count: number): HttpCase[] {
  const total = httpGenerators.reduce((n, [, w]) => n + w, 0);
  const out: HttpCase[] = [];
  for (let i = 0; i < count; i++) {
    let r = rng.float() * total;
    const generator = httpGenerators.find(([, w]) => (r -= w) < 0)?.[0] ?? malformedJson;
    out.push(generator(rng, limits));
  }
  return out;
}

// --- graphql-ws --------------------------------------------------------------------------------

const wsProtocol = 'graphql-transport-ws';
const frame = (message: unknown): WsFrame => ({ data: text(typeof message === 'string' ? message : JSON.stringify(message)), binary: false });
const validSubscription = (rng: Rng) => ({ query: `subscription { featureChanged(entity: ${rng.pick(['USER', 'ITEM', 'MERCHANT'])}, ids: ["${rng.int(1, 99)}"]) { id view } }` });

type WsGenerator = (rng: Rng, limits: FuzzLimits) => WsCase;

const ws = (category: string, init: boolean, frames: WsFrame[], expect: WsExpect, protocols: string[] = [wsProtocol]): WsCase => ({
  kind: 'ws', category, protocols, init, frames, expect,
});

const wsProtocolErrors: WsGenerator = (rng, limits) => {
  const variant = rng.int(0, 13);
  switch (variant) {
    case 0: return ws('ws: not JSON', rng.chance(0.5), [frame(rng.pick(['{ not json', '', 'null', '[]', '42', '"x"', rng.string(50)]))], { close: [4400] });
    case 1: return ws('ws: binary frame', rng.chance(0.5), [{ data: Buffer.concat([Buffer.from([0xff, 0xfe]), rng.bytes(rng.int(0, 200))]), binary: true }], { close: [4400] });
    case 2: return ws('ws: unknown message type', true, [frame({ type: rng.pick(['bogus', 'start', 'stop', 'connection_terminate', 'data', '', 'SUBSCRIBE']), id: '1', payload: {} })], { close: [4400] });
    case 3: return ws('ws: subscribe before connection_init', false, [frame({ id: '1', type: 'subscribe', payload: validSubscription(rng) })], { close: [4401] });
    case 4: return ws('ws: double connection_init', true, [frame({ type: 'connection_init', payload: rng.pick([undefined, {}, { a: 1 }]) })], { close: [4429] });
    case 5: return ws('ws: connection_init payload not an object', false, [frame({ type: 'connection_init', payload: wrongValue(rng, 'object', 'array') })], { close: [4400] });
    case 6: {
      // Malformed subscribe messages: graphql-ws validates their shape.
      const bad = rng.pick<Record<string, unknown>>([
        { type: 'subscribe', payload: validSubscription(rng) }, // no id
        { type: 'subscribe', id: wrongValue(rng, 'string'), payload: validSubscription(rng) },
        { type: 'subscribe', id: '', payload: validSubscription(rng) },
        { type: 'subscribe', id: '1' },
        // graphql-ws takes an array for an object (typeof 'object'), so arrays are left out here.
        { type: 'subscribe', id: '1', payload: wrongValue(rng, 'object', 'array') },
        { type: 'subscribe', id: '1', payload: { query: wrongValue(rng, 'string') } },
        { type: 'subscribe', id: '1', payload: { ...validSubscription(rng), variables: wrongValue(rng, 'object', 'array') } },
        { type: 'subscribe', id: '1', payload: { ...validSubscription(rng), operationName: wrongValue(rng, 'string') } },
        { type: 'subscribe', id: '1', payload: { ...validSubscription(rng), extensions: wrongValue(rng, 'object', 'array') } },
      ]);
      return ws('ws: malformed subscribe', true, [frame(bad)], { close: [4400] });
    }
    case 7: {
      const sub = validSubscription(rng);
      return ws('ws: duplicate subscription id', true, [frame({ id: 'dup', type: 'subscribe', payload: sub }), frame({ id: 'dup', type: 'subscribe', payload: sub })], { close: [4409] });
    }
    case 8: return ws('ws: server-to-client message', true, [frame({ type: rng.pick(['next', 'error', 'connection_ack']), id: '1', payload: {} })], { close: [4400] });
    case 9: {
      // graphql-ws ignores a complete for an id it does not know; the connection stays usable.
      const frames = Array.from({ length: rng.int(1, 5) }, () => frame({ type: 'complete', id: rng.string(rng.int(1, 30)) }));
      return ws('ws: complete for unknown ids', true, frames, { errors: {} });
    }
    case 10: {
      const size = limits.maxBodyBytes + rng.int(1, 4096);
      const payload = { ...validSubscription(rng), variables: { pad: 'x'.repeat(size) } };
      return ws('ws: oversized message', rng.chance(0.5), [frame({ id: '1', type: 'subscribe', payload })], { close: [1009] });
    }
    case 11: return ws('ws: no subprotocol', false, [], { close: [4406] }, rng.pick([[], ['graphql-ws'], ['nope', 'soap']]));
    case 12: return ws('ws: complete without id', true, [frame({ type: 'complete' })], { close: [4400] });
    default: return ws('ws: ping with a bad payload', true, [frame({ type: 'ping', payload: wrongValue(rng, 'object', 'array') })], { close: [4400] });
  }
};

const wsBadDocuments: WsGenerator = (rng, limits) => {
  const n = rng.int(1, Math.min(4, limits.maxSubscriptionsPerConnection));
  const frames: WsFrame[] = [];
  const errors: Record<string, ReadonlySet<string>> = {};
  for (let i = 0; i < n; i++) {
    const id = `s${i}-${rng.string(4)}`;
    const variants: [Record<string, unknown>, string[]][] = [
      [{ query: `subscription { featureChanged(entity: USER, ids: ["1"]) { nope${rng.string(3)} } }` }, ['GRAPHQL_VALIDATION_FAILED']],
      [{ query: `subscription { featureChanged(entity: USER, ids: ["1"]) { ${'id '.repeat(rng.int(0, 3))}` }, ['GRAPHQL_PARSE_FAILED']],
      [{ query: `{ ${validSelection(rng)} }` }, ['OPERATION_NOT_SUPPORTED']],
      [{ query: 'mutation { x }' }, ['GRAPHQL_VALIDATION_FAILED', 'OPERATION_NOT_SUPPORTED']],
      [{ query: 'subscription A { featureChanged(entity: USER, ids: ["1"]) { id } }', operationName: `B${rng.string(2)}` }, ['OPERATION_RESOLUTION_FAILURE']],
      [{ query: 'subscription { featureChanged(entity: NOPE, ids: ["1"]) { id } }' }, ['GRAPHQL_VALIDATION_FAILED']],
      [{ query: `subscription { featureChanged(entity: USER, ids: ${JSON.stringify(ids(rng, limits.maxBatchIds + rng.int(1, 50)))}) { id } }` }, ['BATCH_TOO_LARGE']],
      [{ query: 'subscription { featureChanged(entity: USER, ids: []) { id } }' }, ['BAD_USER_INPUT']],
      [{ query: `subscription { featureChanged(entity: USER, ids: ["1"], views: ["nope${rng.string(3)}"]) { id } }` }, ['BAD_USER_INPUT']],
      [{ query: `subscription { featureChanged(entity: USER, ids: ["1"], versions: [{ view: "clickStats", version: ${rng.pick([0, -1, 3, 2 ** 31 - 1])} }]) { id } }` }, ['BAD_USER_INPUT']],
      [{ query: 'subscription S($v: [FeatureViewVersion!]) { featureChanged(entity: USER, ids: ["1"], versions: $v) { id } }', variables: { v: rng.pick([[], [{ view: 'clickStats' }], [{ view: 1, version: 1 }], 'x']) } }, ['BAD_USER_INPUT']],
      [{ query: 'subscription S($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids) { id } }', variables: { ids: wrongValue(rng, 'string', 'number', 'array') } }, ['BAD_USER_INPUT']],
      [{ query: 'subscription S($ids: [ID!]!) { featureChanged(entity: USER, ids: $ids) { id } }', variables: {} }, ['BAD_USER_INPUT']],
      [{ query: `subscription { ...F } fragment F on Subscription { featureChanged(entity: USER, ids: ["1"]) { user { ...G } } } fragment G on User { id ...G }` }, ['GRAPHQL_VALIDATION_FAILED']],
      [{ query: `subscription { featureChanged(entity: USER, ids: ["1"]) { user { ${'... on User { '.repeat(limits.maxQueryNesting + rng.int(1, 2000))}id } } }` }, ['QUERY_TOO_DEEP']],
      [{ query: `subscription { featureChanged(entity: USER, ids: ["1"]) { ${'id '.repeat(20_001)} } }` }, ['GRAPHQL_PARSE_FAILED']],
      [{ ...validSubscription(rng), extensions: { persistedQuery: { version: 1, sha256Hash: rng.string(64, '0123456789abcdef') } } }, ['PERSISTED_QUERY_INVALID']],
    ];
    const [payload, allowed] = rng.pick(variants);
    frames.push(frame({ id, type: 'subscribe', payload }));
    errors[id] = new Set(allowed);
  }
  return ws('ws: invalid subscription document', true, frames, { errors });
};

const wsTooMany: WsGenerator = (rng, limits) => {
  const max = limits.maxSubscriptionsPerConnection;
  const extra = rng.int(1, 4);
  const frames: WsFrame[] = [];
  const errors: Record<string, ReadonlySet<string>> = {};
  for (let i = 0; i < max + extra; i++) {
    frames.push(frame({ id: `m${i}`, type: 'subscribe', payload: validSubscription(rng) }));
    if (i >= max) errors[`m${i}`] = new Set(['TOO_MANY_SUBSCRIPTIONS']);
  }
  return ws('ws: subscriptions over the limit', true, frames, { errors });
};

const wsGenerators: readonly [WsGenerator, number][] = [[wsProtocolErrors, 14], [wsBadDocuments, 8], [wsTooMany, 2]];

export function generateWsCases(rng: Rng, limits: FuzzLimits, count: number): WsCase[] {
  const total = wsGenerators.reduce((n, [, w]) => n + w, 0);
  const out: WsCase[] = [];
  for (let i = 0; i < count; i++) {
    let r = rng.float() * total;
    const generator = wsGenerators.find(([, w]) => (r -= w) < 0)?.[0] ?? wsProtocolErrors;
    out.push(generator(rng, limits));
  }
  return out;
}

/** A short, printable description of a case for failure messages. */
export function describeCase(c: FuzzCase): string {
  const preview = (b: Buffer) => {
    const s = JSON.stringify(b.subarray(0, 160).toString('latin1'));
    return b.length > 160 ? `${s}… (${b.length} bytes)` : s;
  };
  if (c.kind === 'http') return `${c.category}: ${c.method} ${c.path.slice(0, 160)} ${JSON.stringify(c.headers)} ${c.body ? preview(c.body) : ''}`;
  return `${c.category}: protocols ${JSON.stringify(c.protocols)}, init ${c.init}, frames ${c.frames.map((f) => (f.binary ? 'binary ' : '') + preview(f.data)).join(' | ')}`;
}
