/**
 * CSRF prevention on every path of the HTTP front (Apollo Server's rule, also
 * before the fast path), CORS for configured origins, and what an internal
 * error shows a client: never a stack trace or a file path unless
 * DEBUG_ERRORS is on — through Apollo, the fast path, the distributed
 * gateway's failing subgraph, graphql-ws and the HTTP front's own 500.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HeaderMap } from '@apollo/server';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { encodeChange } from '../../eventlog/change-event.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { ConfigError } from '../../runtime/errors.js';
import { createGraphQLHttpServer, listen } from '../../runtime/graphql-http.js';
import { fastPathRequests } from '../../runtime/metrics.js';
import { readManifest } from '../../schema/manifest.js';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { recordKey } from '../../store/backends/byte-backend.js';
import { freePort } from '../support/ports.js';
import { registry, startTestGateway, testConfig } from '../support/gateway.js';
import { baseUrl, get, post, type Reply } from '../support/http.js';

const NOW = Date.now();
const clickStats = activeVersionOf(registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!);
const manifest = readManifest();
const userClickRate = manifest.operations.find((o) => o.name === 'UserClickRate')!;
/** A manifest operation by hash: what the fast path answers. */
const persisted = (ids: string[]) => ({ extensions: { persistedQuery: { version: 1, sha256Hash: userClickRate.id } }, variables: { ids } });

async function fastPathServed(): Promise<number> {
  return (await fastPathRequests.get()).values.filter((v) => v.labels.outcome === 'served').reduce((sum, v) => sum + v.value, 0);
}

async function seeded(): Promise<CodecStore> {
  const store = createStore({ kind: 'embedded' }, () => NOW);
  await store.write(clickStats, [{ entityId: '1', values: { clickRate: 0.25, clicks: 5, impressions: 20 }, eventTimeMs: NOW - 1000 }]);
  return store;
}

/** Apollo Server's own refusal text (preventCsrf), to recognise it. */
const csrfMessage = /^This operation has been blocked as a potential Cross-Site Request Forgery \(CSRF\)/;

describe('CSRF prevention', () => {
  let store: CodecStore;
  let gateway: RunningGateway;
  before(async () => {
    store = await seeded();
    gateway = await startTestGateway(store);
  });
  after(async () => {
    await gateway?.close();
    await store?.close();
  });

  /** What Apollo Server itself answers for the same request, through its integration API. */
  async function apolloAnswer(method: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; body: string }> {
    const response = await gateway.apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest: { method, headers: new HeaderMap(Object.entries(headers)), search: '', body },
      context: async () => ({}),
    });
    assert.equal(response.body.kind, 'complete');
    return { status: response.status ?? 200, body: response.body.kind === 'complete' ? response.body.string : '' };
  }

  it('refuses a JSON body sent as a simple content type, byte for byte as Apollo Server does, and the fast path never sees it', async () => {
    const body = JSON.stringify(persisted(['1']));
    const servedBefore = await fastPathServed();
    for (const contentType of ['text/plain; x=json', 'text/plain', 'TEXT/Plain;charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=json']) {
      const reply = await post(gateway.url, body, { 'content-type': contentType });
      assert.equal(reply.status, 400, `${contentType}: ${reply.text}`);
      assert.match(reply.json.errors[0].message, csrfMessage, contentType);
      assert.equal(reply.json.errors[0].extensions.code, 'BAD_REQUEST');
      const apollo = await apolloAnswer('POST', { 'content-type': contentType }, body);
      assert.deepEqual({ status: reply.status, body: reply.text }, apollo, `${contentType}: differs from Apollo Server's answer`);
    }
    assert.equal(await fastPathServed(), servedBefore, 'the fast path answered a CSRF-suspect request');
  });

  it('refuses a POST without a content type, and a GET without a preflight header', async () => {
    const noType = await fetch(gateway.url, { method: 'POST', body: new Uint8Array(Buffer.from(JSON.stringify(persisted(['1'])))) });
    const text = await noType.text();
    assert.equal(noType.status, 400, text);
    assert.match(JSON.parse(text).errors[0].message, csrfMessage);

    const search = `?query=${encodeURIComponent('{ user(id: "1") { clickStats { clickRate } } }')}`;
    const plainGet = await get(`${gateway.url}${search}`);
    assert.equal(plainGet.status, 400, plainGet.text);
    assert.match(plainGet.json.errors[0].message, csrfMessage);
    const preflighted = await get(`${gateway.url}${search}`, { 'apollo-require-preflight': 'true' });
    assert.equal(preflighted.status, 200, preflighted.text);
    assert.deepEqual(preflighted.json, { data: { user: { clickStats: { clickRate: 0.25 } } } });
  });

  it('lets a simple content type through with apollo-require-preflight or x-apollo-operation-name, but never parses it as JSON', async () => {
    const servedBefore = await fastPathServed();
    for (const header of ['apollo-require-preflight', 'x-apollo-operation-name']) {
      const reply = await post(gateway.url, JSON.stringify(persisted(['1'])), { 'content-type': 'text/plain; x=json', [header]: 'UserClickRate' });
      assert.equal(reply.status, 400, reply.text);
      assert.doesNotMatch(reply.json.errors[0].message, csrfMessage, header);
      assert.match(reply.json.errors[0].message, /^POST body missing, invalid Content-Type/);
    }
    assert.equal(await fastPathServed(), servedBefore);
  });

  it('does not take a media type that merely contains "json" for JSON', async () => {
    const reply = await post(gateway.url, JSON.stringify(persisted(['1'])), { 'content-type': 'application/vnd.example+json' });
    assert.equal(reply.status, 400, reply.text);
    assert.match(reply.json.errors[0].message, /^POST body missing, invalid Content-Type/);
  });

  it('answers application/json (with parameters, any case) on the fast path as before', async () => {
    const servedBefore = await fastPathServed();
    const reply = await post(gateway.url, JSON.stringify(persisted(['1'])), { 'content-type': 'Application/JSON; charset=utf-8' });
    assert.equal(reply.status, 200, reply.text);
    assert.deepEqual(reply.json.data.users.map((u: any) => u?.clickStats?.clickRate), [0.25]);
    assert.equal(await fastPathServed(), servedBefore + 1);
  });
});

describe('CORS', () => {
  const allowed = 'https://app.example.com';
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let listed: RunningGateway;
  let none: RunningGateway;
  let any: RunningGateway;
  before(async () => {
    store = await seeded();
    eventLog = new EmbeddedLog();
    listed = await startGateway({ config: testConfig({ CORS_ORIGINS: `${allowed}, http://localhost:3000` }), registry, store, eventLog });
    none = await startGateway({ config: testConfig(), registry, store, eventLog });
    any = await startTestGateway(store, { CORS_ORIGINS: '*' });
  });
  after(async () => {
    for (const g of [listed, none, any]) await g?.close();
    await eventLog?.close();
    await store?.close();
  });

  /** Opens a WebSocket to the gateway as a browser page of `origin` would (undefined: not a browser); the HTTP status of a refusal. */
  const upgrade = (gateway: RunningGateway, origin: string | undefined): Promise<'open' | number> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(gateway.url.replace(/^http/, 'ws'), 'graphql-transport-ws', origin === undefined ? {} : { origin });
      ws.once('open', () => {
        ws.terminate();
        resolve('open');
      });
      ws.once('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.once('error', reject);
    });

  it('lets WebSockets open from listed origins, the gateway\'s own origin and non-browsers; refuses other sites with 403', async () => {
    const own = (g: RunningGateway) => baseUrl(g.url).replace('/graphql', '');
    assert.equal(await upgrade(listed, allowed), 'open');
    assert.equal(await upgrade(listed, undefined), 'open');
    assert.equal(await upgrade(listed, own(listed)), 'open');
    assert.equal(await upgrade(listed, 'https://evil.example.net'), 403);
    // Without CORS_ORIGINS only the gateway's own pages (Sandbox) and non-browsers may.
    assert.equal(await upgrade(none, own(none)), 'open');
    assert.equal(await upgrade(none, undefined), 'open');
    assert.equal(await upgrade(none, allowed), 403);
  });

  const preflight = (url: string, origin: string) =>
    fetch(url, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization' } });

  it('answers a preflight from a listed origin with the methods and headers it may use, and no credentials', async () => {
    const r = await preflight(listed.url, allowed);
    assert.equal(r.status, 204);
    assert.equal(r.headers.get('access-control-allow-origin'), allowed);
    assert.equal(r.headers.get('vary'), 'Origin');
    assert.deepEqual(r.headers.get('access-control-allow-methods')?.split(', ').sort(), ['GET', 'OPTIONS', 'POST']);
    assert.deepEqual(r.headers.get('access-control-allow-headers')?.split(', ').sort(),
      ['apollo-require-preflight', 'authorization', 'content-type', 'x-api-key', 'x-apollo-operation-name']);
    assert.equal(r.headers.get('access-control-allow-credentials'), null);
  });

  it('refuses a preflight from another origin with CORS_ORIGIN_DENIED and no allow-origin', async () => {
    const r = await preflight(listed.url, 'https://evil.example.net');
    assert.equal(r.status, 403);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
    const body = await r.json() as any;
    assert.equal(body.errors[0].extensions.code, 'CORS_ORIGIN_DENIED');
    assert.match(body.errors[0].message, /evil\.example\.net/);
  });

  it('marks answers for a listed origin (fast and generic path alike); answers others without CORS headers', async () => {
    const fast = await post(listed.url, persisted(['1']), { origin: allowed });
    const generic = await post(listed.url, { query: '{ user(id: "1") { clickStats { clickRate } } }' }, { origin: 'http://localhost:3000' });
    assert.equal(fast.status, 200, fast.text);
    assert.equal(fast.headers.get('access-control-allow-origin'), allowed);
    assert.equal(generic.headers.get('access-control-allow-origin'), 'http://localhost:3000');
    for (const r of [fast, generic]) assert.equal(r.headers.get('vary'), 'Origin');
    const other = await post(listed.url, persisted(['1']), { origin: 'https://evil.example.net' });
    assert.equal(other.status, 200);
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  });

  it('sends no CORS headers at all by default, and allow-origin * with CORS_ORIGINS=*', async () => {
    const r = await preflight(none.url, allowed);
    assert.notEqual(r.status, 204);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
    const q = await post(none.url, persisted(['1']), { origin: allowed });
    assert.deepEqual([...q.headers.keys()].filter((k) => k.startsWith('access-control-')), []);
    const star = await preflight(any.url, 'https://whoever.example');
    assert.equal(star.status, 204);
    assert.equal(star.headers.get('access-control-allow-origin'), '*');
  });

  it('refuses CORS_ORIGINS entries that are not origins, at start-up', () => {
    for (const bad of ['app.example.com', 'https://app.example.com/', 'https://app.example.com/path', 'ftp://x.example', 'https://a.example,']) {
      if (bad.endsWith(',')) {
        assert.deepEqual(testConfig({ CORS_ORIGINS: bad }).corsOrigins, ['https://a.example']);
        continue;
      }
      assert.throws(() => testConfig({ CORS_ORIGINS: bad }), (e: unknown) => e instanceof ConfigError && e.variable === 'CORS_ORIGINS', bad);
    }
    assert.equal(testConfig({}).corsOrigins, null);
  });
});

/** Whether a reply leaks an implementation detail: a stack trace or a path of this deployment. */
function leaks(text: string): boolean {
  return /stacktrace|\.[jt]s:\d+|node_modules|\/work\/|file:\/\//.test(text);
}

describe('no stack traces reach clients unless DEBUG_ERRORS', () => {
  const corrupt = async (store: CodecStore) =>
    store.backend.setMany([{ record: recordKey(clickStats, '66'), value: Buffer.from('not a value'), expireAtMs: NOW + 60_000 }]);

  for (const debug of [false, true]) {
    describe(`DEBUG_ERRORS=${debug}`, () => {
      let store: CodecStore;
      let eventLog: EmbeddedLog;
      let gateway: RunningGateway;
      before(async () => {
        store = await seeded();
        await corrupt(store);
        eventLog = new EmbeddedLog();
        gateway = await startGateway({ config: testConfig({ DEBUG_ERRORS: String(debug) }), registry, store, eventLog });
      });
      after(async () => {
        await gateway?.close();
        await eventLog?.close();
        await store?.close();
      });

      const check = (reply: Reply, what: string): void => {
        assert.ok(reply.json?.errors?.length > 0, `${what}: expected errors, got ${reply.text}`);
        assert.equal(leaks(reply.text), debug, `${what}: ${debug ? 'no stack trace with DEBUG_ERRORS' : 'leaks'}: ${reply.text}`);
      };

      it('a corrupt stored value, on the generic path and on the fast path', async () => {
        const generic = await post(gateway.url, { query: '{ user(id: "66") { clickStats { clickRate } } }' });
        check(generic, 'generic path');
        assert.equal(generic.json.errors[0].extensions.code, 'STORE_CORRUPT_VALUE');
        const fast = await post(gateway.url, persisted(['66']));
        check(fast, 'fast path');
        assert.equal(fast.json.errors[0].extensions.code, 'STORE_CORRUPT_VALUE');
      });

      it('an internal error of a subscription\'s entity, over graphql-ws', async () => {
        const client = createClient({ url: gateway.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
        const events: any[] = [];
        let failure: unknown;
        const stop = client.subscribe({ query: 'subscription { featureChanged(entity: USER, ids: ["66"]) { id user { clickStats { clickRate } } } }' }, {
          next: (value) => void events.push(value),
          error: (error) => void (failure = error),
          complete: () => undefined,
        });
        try {
          await until(() => gateway.subscriptions!.stats().active === 1 || failure !== undefined);
          await eventLog.produce([encodeChange({
            entity: 'user', id: '66', view: 'clickStats', version: clickStats.version, values: {}, eventTime: new Date(NOW - 500).toISOString(),
            source: { topic: 'test-events', partition: 0, offset: 0 },
          })]);
          await until(() => events.length > 0 || failure !== undefined);
          assert.equal(failure, undefined, String(failure));
          const text = JSON.stringify(events[0]);
          assert.equal(events[0].errors?.[0]?.extensions?.code, 'STORE_CORRUPT_VALUE', text);
          assert.equal(leaks(text), debug, text);
        } finally {
          stop();
          await client.dispose();
        }
      });

      it('a subgraph that cannot be reached (distributed gateway)', async () => {
        const dead = `http://127.0.0.1:${await freePort()}/graphql`;
        const distributed = await startGateway({
          config: testConfig({ DEBUG_ERRORS: String(debug), SUBGRAPH_URLS: registry.entities.map((e) => `${e.name}=${dead}`).join(',') }),
          registry,
        });
        try {
          const reply = await post(distributed.url, { query: '{ user(id: "1") { clickStats { clickRate } } }' });
          check(reply, 'failing subgraph');
        } finally {
          await distributed.close();
        }
      });

      it('an unexpected error in the HTTP front itself (its 500 fallback)', async () => {
        const server = createGraphQLHttpServer({
          apollo: gateway.apollo, maxBodyBytes: 4096, debugErrors: debug,
          ready: async () => ({ ready: true, checks: {} }),
          admit: () => { throw new Error('admission exploded'); },
        });
        const running = await listen(server, '127.0.0.1', 0);
        try {
          const reply = await post(running.url, { query: '{ __typename }' });
          assert.equal(reply.status, 500);
          assert.deepEqual(reply.json.errors[0].message, 'internal server error');
          assert.equal(reply.json.errors[0].extensions.code, 'INTERNAL_SERVER_ERROR');
          check(reply, '500 fallback');
          assert.equal(reply.text.includes('admission exploded'), debug, reply.text);
        } finally {
          await running.close();
        }
      });

      it('the health endpoints stay as they were', async () => {
        assert.equal((await get(`${baseUrl(gateway.url)}/healthz`)).status, 200);
      });
    });
  }
});

async function until(predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
