/**
 * Hostile and broken requests over real HTTP: each one gets a clear error
 * with a documented code, and the gateway keeps serving afterwards.
 */
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { RunningGateway } from '../../gateway/server.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { registry, startTestGateway } from '../support/gateway.js';
import { baseUrl, get, gql, post, type Reply } from '../support/http.js';

const NOW = Date.now();
const clickStats = registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!.versions[1]!;
const validQuery = '{ user(id: "u1") { id clickStats { clickRate } } }';
const validData = { user: { id: 'u1', clickStats: { clickRate: 0.25 } } };
const usersQuery = 'query Users($ids: [ID!]!) { users(ids: $ids) { id } }';

/** The single error of a reply, asserting its HTTP status and code. */
function expectError(reply: Reply, status: number, code: string): { message: string; extensions: Record<string, unknown> } {
  assert.equal(reply.status, status, reply.text);
  assert.ok(Array.isArray(reply.json?.errors) && reply.json.errors.length > 0, `expected errors, got ${reply.text}`);
  assert.equal(reply.json.data, undefined, reply.text);
  const error = reply.json.errors[0];
  assert.equal(error.extensions?.code, code, reply.text);
  assert.equal(typeof error.message, 'string');
  return error;
}

/** A client error (4xx) with at least one error message in a JSON body. */
function expectClientError(reply: Reply): void {
  assert.ok(reply.status >= 400 && reply.status < 500, `expected 4xx, got ${reply.status}: ${reply.text}`);
  assert.ok(Array.isArray(reply.json?.errors) && reply.json.errors.length > 0, `expected errors, got ${reply.text}`);
  assert.ok(reply.json.errors.every((e: any) => typeof e.message === 'string' && e.message.length > 0), reply.text);
}

async function request(url: string, init: RequestInit): Promise<Reply> {
  const response = await fetch(url, init);
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** A POST without content-length: node's http client sends it with chunked transfer encoding. */
function postChunked(url: string, body: string, chunkSize = 1000): Promise<Reply & { transferEncoding: string | undefined }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('error', reject);
      res.on('end', () => {
        answered = true;
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: new Headers(), text, json, transferEncoding: sentTransferEncoding(req) });
      });
    });
    // The server may close the connection once it has answered; only an error before the answer counts.
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    for (let i = 0; i < body.length; i += chunkSize) req.write(body.slice(i, i + chunkSize));
    req.end();
  });
}

/** The transfer-encoding the client put on the wire (node writes the header itself; it is not in getHeader()). */
function sentTransferEncoding(req: http.ClientRequest): string | undefined {
  return /^transfer-encoding:\s*(\S+)\r$/im.exec((req as unknown as { _header?: string })._header ?? '')?.[1]?.toLowerCase();
}

function ids(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `id-${i}`);
}

async function seededStore(): Promise<CodecStore> {
  const store = createStore({ kind: 'embedded' }, () => NOW);
  await store.write(clickStats, [{ entityId: 'u1', values: { clickRate: 0.25, clicks: 1, impressions: 4 }, eventTimeMs: NOW - 1000 }]);
  return store;
}

async function assertStillServing(gateway: RunningGateway): Promise<void> {
  const reply = await gql(gateway.url, validQuery);
  assert.equal(reply.status, 200, reply.text);
  assert.deepEqual(reply.json, { data: validData });
  const health = await get(`${baseUrl(gateway.url)}/healthz`);
  assert.equal(health.status, 200);
}

describe('bad input', () => {
  let store: CodecStore;

  before(async () => {
    store = await seededStore();
  });

  after(async () => {
    await store?.close();
  });

  describe('with MAX_BATCH_IDS=10 and MAX_QUERY_DEPTH=3', () => {
    let gateway: RunningGateway;

    before(async () => {
      gateway = await startTestGateway(store, { MAX_BATCH_IDS: '10', MAX_QUERY_DEPTH: '3' });
    });

    after(async () => {
      await gateway?.close();
    });

    it('serves a valid query before any bad input', async () => {
      await assertStillServing(gateway);
    });

    describe('malformed bodies', () => {
      it('answers malformed JSON with 400 BAD_REQUEST naming JSON', async () => {
        const error = expectError(await post(gateway.url, '{"query": "{ user(id: \\"u1\\") { id } }"'), 400, 'BAD_REQUEST');
        assert.match(error.message, /JSON/);
      });

      it('answers a JSON array body (batching) with a 4xx error', async () => {
        expectClientError(await post(gateway.url, '[]'));
        expectClientError(await post(gateway.url, JSON.stringify([{ query: validQuery }, { query: validQuery }])));
      });

      it('answers an empty object with a 4xx error', async () => {
        expectClientError(await post(gateway.url, '{}'));
      });

      it('answers JSON scalars and a query that is not a string with a 4xx error', async () => {
        expectClientError(await post(gateway.url, 'null'));
        expectClientError(await post(gateway.url, '42'));
        expectClientError(await post(gateway.url, '"{ user(id: \\"u1\\") { id } }"'));
        expectClientError(await post(gateway.url, { query: 42 }));
        expectClientError(await post(gateway.url, { query: validQuery, variables: 'not an object' }));
      });

      it('answers non-JSON content types with a 4xx error', async () => {
        const body = JSON.stringify({ query: validQuery });
        expectClientError(await post(gateway.url, body, { 'content-type': 'text/plain' }));
        expectClientError(await post(gateway.url, body, { 'content-type': 'text/plain', 'apollo-require-preflight': 'true' }));
        expectClientError(await post(gateway.url, validQuery, { 'content-type': 'application/graphql' }));
        expectClientError(await post(gateway.url, 'query=%7B__typename%7D', { 'content-type': 'application/x-www-form-urlencoded' }));
        expectClientError(await request(gateway.url, { method: 'POST', body }));
      });

      it('answers an empty body with a 4xx error', async () => {
        expectClientError(await post(gateway.url, ''));
      });
    });

    describe('invalid operations', () => {
      it('refuses an unknown field with 400 GRAPHQL_VALIDATION_FAILED naming it', async () => {
        const error = expectError(await gql(gateway.url, '{ user(id: "u1") { id noSuchFeature } }'), 400, 'GRAPHQL_VALIDATION_FAILED');
        assert.match(error.message, /noSuchFeature/);
      });

      it('refuses variables of the wrong type with 400 BAD_USER_INPUT', async () => {
        for (const value of [[{}], true, 5.5, null, { id: '1' }, [['1']], [null]]) {
          const error = expectError(await gql(gateway.url, usersQuery, { ids: value }), 400, 'BAD_USER_INPUT');
          assert.match(error.message, /\$ids/);
        }
        // A missing required variable too.
        expectError(await gql(gateway.url, usersQuery, {}), 400, 'BAD_USER_INPUT');
      });

      it('coerces a single id to a list of one, as the GraphQL spec requires (ids: 5 → ["5"])', async () => {
        const reply = await gql(gateway.url, usersQuery, { ids: 5 });
        assert.equal(reply.status, 200, reply.text);
        assert.deepEqual(reply.json, { data: { users: [null] } });
        const known = await gql(gateway.url, usersQuery, { ids: 'u1' });
        assert.deepEqual(known.json, { data: { users: [{ id: 'u1' }] } });
      });

      it('refuses a syntax error with 400 GRAPHQL_PARSE_FAILED', async () => {
        const error = expectError(await gql(gateway.url, '{ user(id: "u1") { id '), 400, 'GRAPHQL_PARSE_FAILED');
        assert.match(error.message, /Syntax Error/);
      });

      it('refuses a fragment cycle with a validation error', async () => {
        const reply = await gql(
          gateway.url,
          'query Cycle { user(id: "u1") { ...A } } fragment A on User { id ...B } fragment B on User { clickStats { stale } ...A }',
        );
        const error = expectError(reply, 400, 'GRAPHQL_VALIDATION_FAILED');
        assert.match(error.message, /Cannot spread fragment "A" within itself/);
      });

      it('refuses a self-referencing fragment with a validation error', async () => {
        const reply = await gql(gateway.url, '{ user(id: "u1") { ...Self } } fragment Self on User { id ...Self }');
        expectError(reply, 400, 'GRAPHQL_VALIDATION_FAILED');
      });

      it('answers a huge query of tens of thousands of tokens with a parse error about tokens', async () => {
        const query = `{ user(id: "u1") { ${'id '.repeat(40_000)}} }`;
        const error = expectError(await gql(gateway.url, query), 400, 'GRAPHQL_PARSE_FAILED');
        assert.match(error.message, /tokens/);
      });
    });

    describe('methods', () => {
      it('refuses a mutation sent by GET with a 4xx error', async () => {
        // A real mutation of the schema (the push API), so only the method can be what refuses it.
        const mutation = 'mutation { pushUserProfile(rows: [{ id: "get-1", sessionLength: 1, isPremium: true, country: "DE", embedding: [1] }]) { written } }';
        const url = `${gateway.url}?query=${encodeURIComponent(mutation)}`;
        const reply = await get(url, { 'apollo-require-preflight': 'true' });
        expectClientError(reply);
        assert.equal(reply.status, 405);
        assert.match(reply.json.errors[0].message, /GET requests only support query operations/);
      });

      it('answers a GET query that passes the CSRF check, and refuses one that does not', async () => {
        const url = `${gateway.url}?query=${encodeURIComponent(validQuery)}`;
        const ok = await get(url, { 'apollo-require-preflight': 'true' });
        assert.equal(ok.status, 200, ok.text);
        assert.deepEqual(ok.json, { data: validData });
        expectClientError(await get(url));
      });

      it('answers a GET with a malformed extensions parameter with a 4xx error', async () => {
        const reply = await get(`${gateway.url}?extensions=${encodeURIComponent('{not json')}`, { 'apollo-require-preflight': 'true' });
        expectClientError(reply);
      });

      it('refuses unsupported methods with a 4xx', async () => {
        const body = JSON.stringify({ query: validQuery });
        for (const method of ['PUT', 'PATCH', 'DELETE']) {
          const reply = await request(gateway.url, { method, headers: { 'content-type': 'application/json' }, body: method === 'DELETE' ? null : body });
          expectClientError(reply);
        }
        const health = await request(`${baseUrl(gateway.url)}/healthz`, { method: 'POST', body: '{}' });
        assert.equal(health.status, 405);
        const unknown = await get(`${baseUrl(gateway.url)}/nope`);
        assert.equal(unknown.status, 404);
      });
    });

    describe('batch limit', () => {
      it('refuses 11 ids in a literal list with 400 BATCH_TOO_LARGE', async () => {
        const error = expectError(await gql(gateway.url, `{ users(ids: ${JSON.stringify(ids(11))}) { id } }`), 400, 'BATCH_TOO_LARGE');
        assert.equal(error.extensions.max, 10);
        assert.match(error.message, /MAX_BATCH_IDS/);
      });

      it('refuses 11 ids passed in a variable with 400 BATCH_TOO_LARGE', async () => {
        expectError(await gql(gateway.url, usersQuery, { ids: ids(11) }), 400, 'BATCH_TOO_LARGE');
      });

      it('refuses 11 ids in a variable used inside a fragment with 400 BATCH_TOO_LARGE', async () => {
        const query = 'query Q($ids: [ID!]!) { ...Batch } fragment Batch on Query { items(ids: $ids) { id } }';
        expectError(await gql(gateway.url, query, { ids: ids(11) }), 400, 'BATCH_TOO_LARGE');
      });

      it("refuses 11 ids in a variable's default value with 400 BATCH_TOO_LARGE", async () => {
        const query = `query Q($ids: [ID!]! = ${JSON.stringify(ids(11))}) { users(ids: $ids) { id } }`;
        expectError(await gql(gateway.url, query), 400, 'BATCH_TOO_LARGE');
        // A variable sent by the client overrides its default.
        const reply = await gql(gateway.url, query, { ids: ['u1'] });
        assert.deepEqual(reply.json, { data: { users: [{ id: 'u1' }] } });
      });

      it('lets 10 ids through, literal and by variable', async () => {
        const list = [...ids(9), 'u1'];
        const literal = await gql(gateway.url, `{ users(ids: ${JSON.stringify(list)}) { id } }`);
        assert.equal(literal.status, 200, literal.text);
        assert.deepEqual(literal.json, { data: { users: [...Array(9).fill(null), { id: 'u1' }] } });
        const byVariable = await gql(gateway.url, usersQuery, { ids: list });
        assert.deepEqual(byVariable.json, literal.json);
      });
    });

    describe('depth limit', () => {
      it('lets a query of depth 3 through', async () => {
        const reply = await gql(gateway.url, '{ users(ids: ["u1"]) { clickStats { clickRate } } }');
        assert.equal(reply.status, 200, reply.text);
        assert.deepEqual(reply.json, { data: { users: [{ clickStats: { clickRate: 0.25 } }] } });
      });

      it('refuses a query of depth 4 with 400 QUERY_TOO_DEEP', async () => {
        const error = expectError(await gql(gateway.url, '{ featureRegistry { entities { views { name } } } }'), 400, 'QUERY_TOO_DEEP');
        assert.equal(error.extensions.max, 3);
        assert.match(error.message, /MAX_QUERY_DEPTH/);
        expectError(await gql(gateway.url, '{ featureRegistry { entities { views { features { name } } } } }'), 400, 'QUERY_TOO_DEEP');
      });

      it('counts depth through fragments and inline fragments', async () => {
        const named = '{ featureRegistry { ...E } } fragment E on FeatureRegistry { entities { views { name } } }';
        expectError(await gql(gateway.url, named), 400, 'QUERY_TOO_DEEP');
        const inline = '{ featureRegistry { ... on FeatureRegistry { entities { ... { views { name } } } } } }';
        expectError(await gql(gateway.url, inline), 400, 'QUERY_TOO_DEEP');
      });

      it('does not count introspection fields toward depth', async () => {
        const reply = await gql(gateway.url, '{ __schema { types { name fields { name type { name ofType { name ofType { name } } } } } } }');
        assert.equal(reply.status, 200, reply.text);
        assert.equal(reply.json.errors, undefined, reply.text);
        assert.ok(reply.json.data.__schema.types.length > 0);
        const typeReply = await gql(gateway.url, '{ __type(name: "User") { fields { name type { name ofType { name } } } } }');
        assert.equal(typeReply.status, 200, typeReply.text);
        assert.ok(typeReply.json.data.__type.fields.some((f: any) => f.name === 'clickStats'));
      });
    });

    it('is still serving after all of the above', async () => {
      await assertStillServing(gateway);
      const ready = await get(`${baseUrl(gateway.url)}/readyz`);
      assert.equal(ready.status, 200);
    });
  });

  describe('with MAX_BODY_BYTES=2048', () => {
    let gateway: RunningGateway;
    const bigBody = JSON.stringify({ query: validQuery, variables: { pad: 'x'.repeat(10 * 1024) } });

    before(async () => {
      gateway = await startTestGateway(store, { MAX_BODY_BYTES: '2048' });
    });

    after(async () => {
      await gateway?.close();
    });

    it('accepts a body under the limit', async () => {
      const body = JSON.stringify({ query: validQuery, variables: { pad: 'x'.repeat(1500) } });
      assert.ok(Buffer.byteLength(body) < 2048);
      const reply = await post(gateway.url, body);
      assert.equal(reply.status, 200, reply.text);
      assert.deepEqual(reply.json, { data: validData });
    });

    it('refuses a 10 kB body with a content-length with 413 BODY_TOO_LARGE', async () => {
      const error = expectError(await post(gateway.url, bigBody), 413, 'BODY_TOO_LARGE');
      assert.match(error.message, /2048 bytes/);
    });

    it('refuses a 10 kB chunked body (no content-length) with 413 BODY_TOO_LARGE', async () => {
      const reply = await postChunked(gateway.url, bigBody);
      assert.equal(reply.transferEncoding, 'chunked');
      expectError(reply, 413, 'BODY_TOO_LARGE');
    });

    it('accepts a small chunked body', async () => {
      const reply = await postChunked(gateway.url, JSON.stringify({ query: validQuery }), 10);
      assert.equal(reply.status, 200, reply.text);
      assert.deepEqual(reply.json, { data: validData });
    });

    it('refuses a body over the limit on a GET too (declared content-length)', async () => {
      const reply = await new Promise<Reply>((resolve, reject) => {
        const req = http.request(`${gateway.url}?query=${encodeURIComponent(validQuery)}`, {
          method: 'GET',
          headers: { 'content-length': String(bigBody.length), 'apollo-require-preflight': 'true' },
          agent: false,
        }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: new Headers(), text, json: JSON.parse(text) }));
        });
        req.on('error', reject);
        req.end(bigBody);
      });
      expectError(reply, 413, 'BODY_TOO_LARGE');
    });

    it('is still serving after refusing large bodies', async () => {
      await assertStillServing(gateway);
    });
  });
});
