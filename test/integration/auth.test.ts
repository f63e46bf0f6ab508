/**
 * Authentication and authorization end to end (README, "Security"): every
 * role × operation kind (persisted query, ad-hoc query, introspection,
 * push), credentials by API key and by JWT (HS256 and RS256 through a local
 * JWKS), per-view read roles as field errors, per-principal rate limits and
 * query cost, and the principal's trip to subgraph processes (signed) in the
 * distributed shape. Subscriptions (who may subscribe, restricted views in
 * payloads and filters) are in subscription-transports.test.ts, over every
 * transport; the graphql-ws upgrade's own credentials stay here.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { principalHeaders } from '../../auth/internal.js';
import type { Role } from '../../auth/principal.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { readManifest } from '../../schema/manifest.js';
import { activeVersionOf, findView } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { startSubgraph, type RunningSubgraph } from '../../subgraphs/server.js';
import { testCredentials, type TestCredentials } from '../support/auth.js';
import { registry, testConfig } from '../support/gateway.js';
import { baseUrl, get, post, type Reply } from '../support/http.js';
import { eventually } from '../support/wait.js';

type Who = Role | 'anonymous';
const WHO: readonly Who[] = ['inference', 'analyst', 'dashboard', 'admin', 'anonymous'];

const manifest = readManifest();
const userClickRate = manifest.operations.find((o) => o.name === 'UserClickRate')!;
const persistedBody = (ids: string[]) => ({ extensions: { persistedQuery: { version: 1, sha256Hash: userClickRate.id } }, variables: { ids } });
const adhocQuery = 'query { user(id: "u1") { id clickStats { clickRate } } }';
const restrictedQuery = 'query { user(id: "u1") { id clickStats { clickRate } riskProfile { riskScore flagged } } }';

const codes = (reply: Reply): string[] => (reply.json?.errors ?? []).map((e: any) => e.extensions?.code);

async function seed(store: CodecStore): Promise<void> {
  const now = Date.now();
  await store.write(activeVersionOf(findView(registry, 'clickStats')!), [{ entityId: 'u1', values: { clickRate: 0.25, clicks: 1, impressions: 4 }, eventTimeMs: now }]);
  await store.write(activeVersionOf(findView(registry, 'riskProfile')!), [{ entityId: 'u1', values: { riskScore: 0.9, flagged: true }, eventTimeMs: now }]);
}

/** A graphql-ws connection by hand: what it was answered at connection_init. */
class Socket {
  readonly messages: any[] = [];
  closed: { code: number; reason: string } | undefined;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.messages.push(JSON.parse(String(data))));
    ws.on('close', (code, reason) => (this.closed = { code, reason: String(reason) }));
  }

  static async connect(url: string, payload: Record<string, unknown> | undefined, headers: Record<string, string> = {}): Promise<Socket> {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws', { headers });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const socket = new Socket(ws);
    ws.send(JSON.stringify({ type: 'connection_init', ...(payload ? { payload } : {}) }));
    await eventually(async () => assert.ok(socket.closed || socket.messages.some((m) => m.type === 'connection_ack'), 'ack or close'));
    return socket;
  }

  get acknowledged(): boolean {
    return this.messages.some((m) => m.type === 'connection_ack');
  }

  close(): void {
    this.ws.terminate();
  }
}

describe('authentication and authorization (co-located gateway)', () => {
  let dir: string;
  let creds: TestCredentials;
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let gateway: RunningGateway;
  const headersOf = (who: Who): Record<string, string> => (who === 'anonymous' ? {} : { 'x-api-key': creds.keys[who] });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-auth-'));
    creds = await testCredentials(dir);
    store = createStore({ kind: 'embedded' });
    await seed(store);
    eventLog = new EmbeddedLog();
    gateway = await startGateway({ config: testConfig(creds.env), registry, store, eventLog });
  });

  after(async () => {
    await gateway?.close();
    await eventLog?.close();
    await store?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('every role × operation kind', () => {
    const expected: Record<'persisted' | 'ad-hoc' | 'introspection' | 'push', Record<Who, number>> = {
      push: { inference: 403, analyst: 403, dashboard: 403, admin: 200, anonymous: 401 },
      persisted: { inference: 200, analyst: 200, dashboard: 403, admin: 200, anonymous: 401 },
      'ad-hoc': { inference: 403, analyst: 200, dashboard: 403, admin: 200, anonymous: 401 },
      introspection: { inference: 403, analyst: 200, dashboard: 403, admin: 200, anonymous: 401 },
    };
    const send = {
      persisted: (who: Who) => post(gateway.url, persistedBody(['u1']), headersOf(who)),
      'ad-hoc': (who: Who) => post(gateway.url, { query: adhocQuery }, headersOf(who)),
      introspection: (who: Who) => post(gateway.url, { query: '{ __schema { queryType { name } } }' }, headersOf(who)),
      push: (who: Who) => post(gateway.url, {
        query: 'mutation Push($rows: [UserProfileV1Push!]!) { pushUserProfile(rows: $rows) { written } }',
        variables: { rows: [{ id: `pushed-by-${who}`, sessionLength: 1, isPremium: false, country: 'NL', embedding: [1] }] },
      }, headersOf(who)),
    };
    for (const kind of ['persisted', 'ad-hoc', 'introspection', 'push'] as const) {
      for (const who of WHO) {
        const status = expected[kind][who];
        it(`${kind} query as ${who} → ${status}`, async () => {
          const reply = await send[kind](who);
          assert.equal(reply.status, status, reply.text);
          if (status === 200) {
            assert.equal(reply.json.errors, undefined, reply.text);
            assert.ok(reply.json.data, reply.text);
          } else {
            assert.deepEqual(codes(reply), [status === 401 ? 'UNAUTHENTICATED' : 'FORBIDDEN'], reply.text);
            assert.equal(reply.json.data ?? null, null);
          }
          if (kind === 'push') {
            const [stored] = await store.read(activeVersionOf(findView(registry, 'profile')!), [`pushed-by-${who}`]);
            assert.equal(stored?.values.country ?? null, status === 200 ? 'NL' : null, 'written exactly when allowed');
          }
        });
      }
    }

    it('an inference key cannot run an ad-hoc query, and is told it may run persisted operations only', async () => {
      const reply = await send['ad-hoc']('inference');
      assert.equal(reply.status, 403);
      assert.match(reply.json.errors[0].message, /outside the persisted-query manifest: principal "inference-service" has role\(s\) inference; ad-hoc queries need analyst or admin/);
    });

    // Which roles may subscribe, over every transport: subscription-transports.test.ts.
    it('a subscription takes its credentials from the upgrade request headers when connection_init carries none', async () => {
      const socket = await Socket.connect(gateway.url, undefined, { 'x-api-key': creds.keys.dashboard });
      try {
        assert.ok(socket.acknowledged);
      } finally {
        socket.close();
      }
    });

    const sandbox: Record<Who, number> = { inference: 403, analyst: 200, dashboard: 403, admin: 200, anonymous: 401 };
    for (const who of WHO) {
      it(`the Sandbox landing page as ${who} → ${sandbox[who]}`, async () => {
        const reply = await get(gateway.url, { accept: 'text/html', ...headersOf(who) });
        assert.equal(reply.status, sandbox[who], reply.text.slice(0, 200));
        if (sandbox[who] === 200) assert.match(reply.text, /<html/i);
      });
    }
  });

  describe('per-view read roles', () => {
    it('a view restricted to admin is an error on that field alone for an analyst; the rest resolves', async () => {
      const reply = await post(gateway.url, { query: restrictedQuery }, headersOf('analyst'));
      assert.equal(reply.status, 200, reply.text);
      assert.deepEqual(reply.json.data, { user: { id: 'u1', clickStats: { clickRate: 0.25 }, riskProfile: null } });
      assert.equal(reply.json.errors.length, 1, reply.text);
      assert.deepEqual(reply.json.errors[0].path, ['user', 'riskProfile']);
      assert.equal(reply.json.errors[0].extensions.code, 'FORBIDDEN');
      assert.match(reply.json.errors[0].message, /riskProfile: it is readable by admin only/);
    });

    it('an admin reads it', async () => {
      const reply = await post(gateway.url, { query: restrictedQuery }, headersOf('admin'));
      assert.deepEqual(reply.json, { data: { user: { id: 'u1', clickStats: { clickRate: 0.25 }, riskProfile: { riskScore: 0.9, flagged: true } } } });
    });

    // In subscription payloads and `views`/`versions`, over every transport: subscription-transports.test.ts.
    it('the restricted view alone, for an analyst: the entity resolves and only the field errors (no existence leak)', async () => {
      const reply = await post(gateway.url, { query: 'query { users(ids: ["u1", "nobody"]) { id riskProfile { riskScore } } }' }, headersOf('analyst'));
      assert.deepEqual(reply.json.data, { users: [{ id: 'u1', riskProfile: null }, { id: 'nobody', riskProfile: null }] });
      assert.deepEqual(codes(reply), ['FORBIDDEN', 'FORBIDDEN']);
    });

  });

  describe('credentials', () => {
    it('an API key as a bearer token', async () => {
      const reply = await post(gateway.url, { query: adhocQuery }, { authorization: `Bearer ${creds.keys.analyst}` });
      assert.equal(reply.status, 200, reply.text);
    });

    it('an unknown API key → 401 UNAUTHENTICATED with a WWW-Authenticate challenge', async () => {
      const reply = await post(gateway.url, persistedBody(['u1']), { 'x-api-key': 'fgk_not-a-key' });
      assert.equal(reply.status, 401);
      assert.deepEqual(codes(reply), ['UNAUTHENTICATED']);
      assert.match(reply.headers.get('www-authenticate') ?? '', /Bearer/);
    });

    it('two credentials at once → 401', async () => {
      const token = await creds.hs256({ sub: 'svc', roles: ['analyst'] });
      const reply = await post(gateway.url, { query: adhocQuery }, { 'x-api-key': creds.keys.analyst, authorization: `Bearer ${token}` });
      assert.equal(reply.status, 401);
      assert.match(reply.json.errors[0].message, /send one credential/);
    });

    it('a malformed authorization header → 401', async () => {
      const reply = await post(gateway.url, { query: adhocQuery }, { authorization: 'Basic dXNlcjpwYXNz' });
      assert.equal(reply.status, 401);
      assert.match(reply.json.errors[0].message, /expected "Bearer <token>"/);
    });

    it('HS256 JWT with roles [analyst] runs ad-hoc queries', async () => {
      const token = await creds.hs256({ sub: 'notebook-42', roles: ['analyst'] });
      const reply = await post(gateway.url, { query: adhocQuery }, { authorization: `Bearer ${token}` });
      assert.equal(reply.status, 200, reply.text);
    });

    it('RS256 JWT (local JWKS) with roles "inference" (space-separated) runs persisted queries only', async () => {
      const token = await creds.rs256({ sub: 'ranker', roles: 'inference other-systems-role' });
      assert.equal((await post(gateway.url, persistedBody(['u1']), { authorization: `Bearer ${token}` })).status, 200);
      const adhoc = await post(gateway.url, { query: adhocQuery }, { authorization: `Bearer ${token}` });
      assert.equal(adhoc.status, 403);
      assert.match(adhoc.json.errors[0].message, /"ranker"/);
    });

    const rejected: [string, () => Promise<string>, RegExp][] = [
      ['expired', () => creds.hs256({ sub: 's', roles: ['analyst'] }, { expiresIn: Math.floor(Date.now() / 1000) - 60 }), /expired/],
      ['signed with another secret', () => creds.hs256({ sub: 's', roles: ['analyst'] }, { secret: 'another-secret-of-at-least-thirty-two-bytes' }), /signature/],
      ['signed by an unknown key id', () => creds.rs256({ sub: 's', roles: ['analyst'] }, { kid: 'rotated-away' }), /no key of the JWKS/],
      ['unsigned (alg none)', async () => `${b64({ alg: 'none' })}.${b64({ sub: 's', roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 60 })}.`, /not accepted|well-formed/],
      ['without a subject', () => creds.hs256({ roles: ['analyst'] }), /sub/],
      ['garbage', async () => 'not.a.jwt', /well-formed/],
    ];
    for (const [what, token, message] of rejected) {
      it(`a JWT ${what} → 401`, async () => {
        const reply = await post(gateway.url, { query: adhocQuery }, { authorization: `Bearer ${await token()}` });
        assert.equal(reply.status, 401, reply.text);
        assert.deepEqual(codes(reply), ['UNAUTHENTICATED']);
        assert.match(reply.json.errors[0].message, message);
      });
    }
  });

  describe('per-principal rate limit', () => {
    it('a key over its requests per second gets 429 RATE_LIMITED with Retry-After; others are unaffected', async () => {
      const before = await rejected(gateway, 'RATE_LIMITED');
      const replies = await Promise.all([1, 2, 3, 4].map(() => post(gateway.url, persistedBody(['u1']), { 'x-api-key': creds.keys.limited })));
      const statuses = replies.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 200, 429, 429]);
      const limited = replies.find((r) => r.status === 429)!;
      assert.deepEqual(codes(limited), ['RATE_LIMITED']);
      assert.equal(limited.headers.get('retry-after'), '1');
      assert.equal((await post(gateway.url, persistedBody(['u1']), headersOf('inference'))).status, 200);
      assert.equal(await rejected(gateway, 'RATE_LIMITED'), before + 2);
      await eventually(async () => assert.equal((await post(gateway.url, persistedBody(['u1']), { 'x-api-key': creds.keys.limited })).status, 200), 5000, 250);
    });
  });
});

describe('query cost limit (MAX_QUERY_COST)', () => {
  let store: CodecStore;
  let gateway: RunningGateway;
  before(async () => {
    store = createStore({ kind: 'embedded' });
    await seed(store);
    gateway = await startGateway({ config: testConfig({ MAX_QUERY_COST: '5' }), registry, store });
  });
  after(async () => {
    await gateway?.close();
    await store?.close();
  });

  it('a persisted operation over the cost is refused (the fast path hands it over) with 400 QUERY_TOO_COSTLY', async () => {
    // UserClickRate selects 3 leaves (id, clickRate, stale) per user: 2 users cost 6.
    const reply = await post(gateway.url, persistedBody(['u1', 'u2']));
    assert.equal(reply.status, 400, reply.text);
    assert.deepEqual(codes(reply), ['QUERY_TOO_COSTLY']);
    assert.equal(reply.json.errors[0].extensions.cost, 6);
    assert.equal((await post(gateway.url, persistedBody(['u1']))).status, 200);
  });

  it('aliases and fragments count every occurrence', async () => {
    const query = 'query { a: user(id: "u1") { ...F } b: user(id: "u1") { ...F } } fragment F on User { clickStats { clickRate clicks impressions } }';
    const reply = await post(gateway.url, { query });
    assert.equal(reply.status, 400);
    assert.equal(reply.json.errors[0].extensions.cost, 6);
  });

  it('fragments spreading fragments twice over are measured in linear time', async () => {
    const levels = 40;
    const fragments = Array.from({ length: levels }, (_, i) =>
      i === levels - 1 ? `fragment F${i} on UserClickStatsV2 { clickRate }` : `fragment F${i} on UserClickStatsV2 { ...F${i + 1} ...F${i + 1} }`);
    const query = `query { user(id: "u1") { clickStats { ...F0 } } } ${fragments.join(' ')}`;
    const reply = await post(gateway.url, { query });
    assert.equal(reply.status, 400, reply.text.slice(0, 300));
    assert.deepEqual(codes(reply), ['QUERY_TOO_COSTLY']);
  });
});

describe('distributed shape: the principal travels to subgraph processes, signed', () => {
  const secret = 'internal-secret-for-the-test-0123456789';
  let store: CodecStore;
  let subgraphs: RunningSubgraph[];
  let gateway: RunningGateway;
  let dir: string;
  let creds: TestCredentials;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-auth-'));
    creds = await testCredentials(dir);
    store = createStore({ kind: 'embedded' });
    await seed(store);
    const env = { ...creds.env, INTERNAL_AUTH_SECRET: secret };
    subgraphs = await Promise.all(registry.entities.map((e) => startSubgraph(testConfig(env), registry, e.name, store)));
    gateway = await startGateway({ config: testConfig({ ...env, SUBGRAPH_URLS: subgraphs.map((s) => `${s.name}=${s.url}`).join(',') }), registry });
  });
  after(async () => {
    await gateway?.close();
    for (const s of subgraphs ?? []) await s.close();
    await store?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('per-view roles hold through the gateway: analyst gets the field error, admin the value', async () => {
    const analyst = await post(gateway.url, { query: restrictedQuery }, { 'x-api-key': creds.keys.analyst });
    assert.deepEqual(analyst.json.data, { user: { id: 'u1', clickStats: { clickRate: 0.25 }, riskProfile: null } });
    assert.deepEqual(codes(analyst), ['FORBIDDEN']);
    const admin = await post(gateway.url, { query: restrictedQuery }, { 'x-api-key': creds.keys.admin });
    assert.deepEqual(admin.json, { data: { user: { id: 'u1', clickStats: { clickRate: 0.25 }, riskProfile: { riskScore: 0.9, flagged: true } } } });
  });

  it('a subgraph ignores a principal header that is not signed with the secret', async () => {
    const user = subgraphs.find((s) => s.name === 'user')!;
    const admin = { id: 'mallory', roles: new Set(['admin'] as const), via: 'api-key' as const };
    const forged = principalHeaders(admin, 'a-guessed-secret');
    const unsigned = principalHeaders(admin, null);
    for (const headers of [forged, unsigned]) {
      const reply = await post(user.url, { query: restrictedQuery }, headers);
      assert.deepEqual(codes(reply), ['FORBIDDEN'], reply.text);
    }
    const signed = await post(user.url, { query: restrictedQuery }, principalHeaders(admin, secret));
    assert.equal(signed.json.errors, undefined, signed.text);
    assert.deepEqual(signed.json.data.user.riskProfile, { riskScore: 0.9, flagged: true });
  });
});

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

async function rejected(gateway: RunningGateway, code: string): Promise<number> {
  const text = (await get(`${baseUrl(gateway.url)}/metrics`)).text;
  const line = text.split('\n').find((l) => l.startsWith('feature_gateway_rejected_requests_total{') && l.includes(`code="${code}"`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}
