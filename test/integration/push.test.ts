/**
 * The push API end to end: push mutations through a co-located gateway on
 * the embedded store and on a real Redis, read-after-write, the change event
 * a graphql-ws subscriber receives, validation that writes nothing, the
 * admin-only rule (at the subgraph itself and through the gateway), and the
 * distributed shape.
 *
 * Callers authenticate with API keys (test/support/auth.ts): admin, analyst,
 * dashboard and inference keys, anonymous callers refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { graphql } from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { principalKey, type Principal, type Role } from '../../auth/principal.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { buildEntitySubgraph } from '../../subgraphs/factory.js';
import { startSubgraph, type RunningSubgraph } from '../../subgraphs/server.js';
import { testCredentials } from '../support/auth.js';
import { registry, testConfig } from '../support/gateway.js';
import { baseUrl, get, post, type Reply } from '../support/http.js';
import { RedisProcess } from '../support/redis-server.js';
import { viewOf } from '../support/registry-text.js';
import { eventually } from '../support/wait.js';

const profile = activeVersionOf(viewOf(registry, 'profile'));
const env = () => ({ ...creds.env, MAX_BATCH_IDS: '5', PUSH_MAX_FUTURE_MS: '60000' });

const PUSH = 'mutation Push($rows: [UserProfileV1Push!]!) { pushUserProfile(rows: $rows) { view version written } }';
const READ = 'query Read($ids: [ID!]!) { users(ids: $ids) { id profile { sessionLength isPremium country embedding eventTime stale } } }';

const creds = await testCredentials(fs.mkdtempSync(path.join(os.tmpdir(), 'fg-push-')));
const admin = { 'x-api-key': creds.keys.admin };
const analyst = { 'x-api-key': creds.keys.analyst };
const row = (id: string, extra: Record<string, unknown> = {}) => ({ id, sessionLength: 300, isPremium: true, country: 'DE', embedding: [0.5, -1.25], ...extra });

function push(gateway: RunningGateway, rows: unknown[], headers: Record<string, string> = admin, query = PUSH): Promise<Reply> {
  return post(gateway.url, { query, variables: { rows } }, headers);
}

async function read(gateway: RunningGateway, ids: string[]): Promise<any[]> {
  const reply = await post(gateway.url, { query: READ, variables: { ids } }, analyst);
  assert.equal(reply.status, 200, reply.text);
  assert.equal(reply.json.errors, undefined, reply.text);
  return reply.json.data.users;
}

function onlyError(reply: Reply): any {
  assert.equal(reply.json?.errors?.length, 1, reply.text);
  return reply.json.errors[0];
}

async function metric(gateway: RunningGateway, name: string, labels: string): Promise<number> {
  const text = (await get(`${baseUrl(gateway.url)}/metrics`)).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

/** The events a subscription receives, in order. */
class Received {
  readonly events: any[] = [];
  error: unknown = undefined;
  readonly stop: () => void;

  constructor(client: Client, query: string) {
    this.stop = client.subscribe({ query }, {
      next: (value) => void this.events.push(value),
      error: (error) => void (this.error = error),
      complete: () => undefined,
    });
  }

  async first(): Promise<any> {
    return eventually(async () => {
      assert.equal(this.error, undefined, `subscription failed: ${JSON.stringify(this.error)}`);
      assert.ok(this.events.length > 0, 'no event yet');
      return this.events[0];
    }, 20_000, 20);
  }
}

for (const kind of ['embedded', 'redis'] as const) {
  describe(`push API through a co-located gateway (${kind} store)`, () => {
    let redis: RedisProcess | undefined;
    let store: CodecStore;
    let eventLog: EmbeddedLog;
    let gateway: RunningGateway;

    before(async () => {
      if (kind === 'redis') redis = await RedisProcess.start();
      store = createStore(redis ? { kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 } : { kind: 'embedded' });
      // Connected before the first push: with no offline queue a command sent while connecting fails.
      await eventually(() => store.ping());
      eventLog = new EmbeddedLog();
      gateway = await startGateway({ config: testConfig(env()), registry, store, eventLog });
    });

    after(async () => {
      await gateway?.close();
      await eventLog?.close();
      await store?.close();
      await redis?.stop();
    });

    it('an admin push is returned by the very next query (read-after-write), and a second push replaces it', async () => {
      const before = await metric(gateway, 'feature_push_rows_total', '{view="profile:v1",outcome="written"}');
      const eventTime = new Date(Date.now() - 60_000).toISOString();
      const reply = await push(gateway, [row('raw-1'), row('raw-2', { eventTime, country: 'FR', embedding: [3] })]);
      assert.equal(reply.status, 200, reply.text);
      assert.deepEqual(reply.json, { data: { pushUserProfile: { view: 'profile', version: 1, written: 2 } } });

      const [first, second] = await read(gateway, ['raw-1', 'raw-2']);
      assert.deepEqual({ ...first.profile, eventTime: undefined }, { sessionLength: 300, isPremium: true, country: 'DE', embedding: [0.5, -1.25], eventTime: undefined, stale: false });
      assert.ok(Math.abs(Date.parse(first.profile.eventTime) - Date.now()) < 60_000, `default eventTime is now, got ${first.profile.eventTime}`);
      assert.deepEqual(second, { id: 'raw-2', profile: { sessionLength: 300, isPremium: true, country: 'FR', embedding: [3], eventTime, stale: false } });

      // The versioned field writes the same version; the next read sees the replacement at once.
      const again = await push(gateway, [row('raw-1', { sessionLength: 7, isPremium: false })], admin,
        'mutation ($rows: [UserProfileV1Push!]!) { pushUserProfileV1(rows: $rows) { view version written } }');
      assert.deepEqual(again.json, { data: { pushUserProfileV1: { view: 'profile', version: 1, written: 1 } } }, again.text);
      const [replaced] = await read(gateway, ['raw-1']);
      assert.equal(replaced.profile.sessionLength, 7);
      assert.equal(replaced.profile.isPremium, false);
      assert.equal(await metric(gateway, 'feature_push_rows_total', '{view="profile:v1",outcome="written"}'), before + 3);
    });

    it('a featureChanged subscriber receives the pushed change; a rejected push sends none', async () => {
      const client = createClient({ url: gateway.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0, connectionParams: { 'x-api-key': creds.keys.dashboard } });
      try {
        const received = new Received(client, 'subscription { featureChanged(entity: USER, ids: ["sub-1"], views: ["profile"]) { id view version eventTime user { profile { country embedding } } } }');
        await eventually(async () => assert.equal(gateway.subscriptions!.stats().active, 1));

        // Rejected (duplicate id): nothing written, so no event; the first event must be the next push's.
        const rejected = await push(gateway, [row('sub-1', { country: 'XX' }), row('sub-1')]);
        assert.equal(onlyError(rejected).extensions.code, 'PUSH_INVALID', rejected.text);
        const eventTime = new Date(Date.now() - 1000).toISOString();
        const accepted = await push(gateway, [row('sub-1', { country: 'NL', embedding: [9], eventTime })]);
        assert.equal(accepted.json?.data?.pushUserProfile?.written, 1, accepted.text);

        assert.deepEqual(await received.first(), {
          data: { featureChanged: { id: 'sub-1', view: 'profile', version: 1, eventTime, user: { profile: { country: 'NL', embedding: [9] } } } },
        });
        received.stop();
      } finally {
        await client.dispose();
      }
    });

    it('wrong types fail GraphQL validation and write nothing', async () => {
      const cases: { rows: unknown[]; message: RegExp }[] = [
        { rows: [row('typed-1'), row('typed-2', { sessionLength: 'long' })], message: /sessionLength.*Int cannot represent/s },
        { rows: [row('typed-1'), { id: 'typed-2', sessionLength: 1, isPremium: true, embedding: [1] }], message: /country.*required/s },
        { rows: [row('typed-1', { embedding: ['x'] })], message: /embedding/ },
        { rows: [row('typed-1', { clicks: 3 })], message: /"clicks" is not defined by type "UserProfileV1Push"/ },
        { rows: [row('typed-1', { sessionLength: 2 ** 31 })], message: /Int cannot represent non 32-bit signed integer/ },
      ];
      for (const { rows, message } of cases) {
        const reply = await push(gateway, rows);
        assert.equal(reply.status, 400, reply.text);
        const error = onlyError(reply);
        assert.equal(error.extensions.code, 'BAD_USER_INPUT', reply.text);
        assert.match(error.message, message);
      }
      const literal = await post(gateway.url, { query: 'mutation { pushUserProfile(rows: [{ id: "typed-1", sessionLength: 1.5, isPremium: true, country: "DE", embedding: [1] }]) { written } }' }, admin);
      assert.equal(literal.status, 400, literal.text);
      assert.equal(onlyError(literal).extensions.code, 'GRAPHQL_VALIDATION_FAILED');
      assert.deepEqual(await read(gateway, ['typed-1', 'typed-2']), [null, null]);
    });

    it('rules beyond the types are PUSH_INVALID naming the row and field, and a rejected call writes nothing', async () => {
      const future = new Date(Date.now() + 3_600_000).toISOString();
      const cases: { rows: unknown[]; row: number; field: string; message: RegExp }[] = [
        { rows: [row('rule-1'), row('rule-1')], row: 1, field: 'id', message: /id "rule-1" is also in rows\[0\]/ },
        { rows: [row('rule-1'), row('')], row: 1, field: 'id', message: /non-empty id/ },
        { rows: [row('rule-1'), row('rule-2', { embedding: [] })], row: 1, field: 'embedding', message: /non-empty list/ },
        { rows: [row('rule-1'), row('rule-2', { eventTime: 'yesterday' })], row: 1, field: 'eventTime', message: /ISO-8601/ },
        { rows: [row('rule-1', { eventTime: future })], row: 0, field: 'eventTime', message: /ahead of the server's clock .*PUSH_MAX_FUTURE_MS/ },
        { rows: [row('rule-1', { eventTime: '2020-01-01T00:00:00Z' })], row: 0, field: 'eventTime', message: /older than the view's TTL \(7d\)/ },
      ];
      const invalidBefore = await metric(gateway, 'feature_push_rows_total', '{view="profile:v1",outcome="invalid"}');
      let rows = 0;
      for (const c of cases) {
        const reply = await push(gateway, c.rows);
        assert.equal(reply.status, 200, reply.text);
        assert.equal(reply.json.data, null, reply.text);
        const error = onlyError(reply);
        assert.deepEqual(error.path, ['pushUserProfile']);
        assert.deepEqual(error.extensions, { code: 'PUSH_INVALID', view: 'profile', version: 1, row: c.row, field: c.field, serviceName: 'user' }, reply.text);
        assert.match(error.message, c.message);
        rows += c.rows.length;
      }
      assert.deepEqual(await read(gateway, ['rule-1', 'rule-2']), [null, null]);
      assert.equal(await metric(gateway, 'feature_push_rows_total', '{view="profile:v1",outcome="invalid"}'), invalidBefore + rows);

      const tooMany = await push(gateway, Array.from({ length: 6 }, (_, i) => row(`rule-many-${i}`)));
      assert.equal(onlyError(tooMany).extensions.code, 'BATCH_TOO_LARGE', tooMany.text);
      assert.deepEqual(await read(gateway, ['rule-many-0']), [null]);
    });

    it('an analyst, a dashboard and an inference key cannot push (403 FORBIDDEN), nor can an anonymous caller (401); nothing written', async () => {
      for (const role of ['analyst', 'dashboard', 'inference'] as const) {
        const reply = await push(gateway, [row('forbidden-1')], { 'x-api-key': creds.keys[role] });
        assert.equal(reply.status, 403, reply.text);
        assert.equal(reply.json.data, undefined, reply.text);
        const error = onlyError(reply);
        assert.equal(error.extensions.code, 'FORBIDDEN', reply.text);
        // An analyst's mutation is parsed and refused as a push; the others' never get past admission.
        assert.match(error.message, role === 'analyst' ? /Not allowed to push feature values.*"analyst-service".*needs one of admin/ : /pushes \(mutations\) need admin/);
      }
      const anonymous = await push(gateway, [row('forbidden-1')], {});
      assert.equal(anonymous.status, 401, anonymous.text);
      assert.equal(onlyError(anonymous).extensions.code, 'UNAUTHENTICATED');
      assert.deepEqual(await read(gateway, ['forbidden-1']), [null]);
    });

    it('streamed views have no push mutation; introspection shows the pushable one', async () => {
      const reply = await post(gateway.url, { query: 'mutation { pushUserClickStats(rows: [{ id: "1" }]) { written } }' }, admin);
      assert.equal(reply.status, 400, reply.text);
      assert.match(onlyError(reply).message, /Cannot query field "pushUserClickStats" on type "Mutation"/);

      const schema = await post(gateway.url, { query: '{ __schema { mutationType { fields { name description } } } }' }, analyst);
      const fields = schema.json?.data?.__schema?.mutationType?.fields ?? [];
      assert.deepEqual(fields.map((f: any) => f.name), ['pushUserProfile', 'pushUserProfileV1', 'pushUserRiskProfile', 'pushUserRiskProfileV1'], schema.text);
      assert.match(fields[0].description, /Requires the admin role/);
    });
  });
}

describe('push API: the subgraph itself refuses non-admins', () => {
  let store: CodecStore;
  before(() => {
    store = createStore({ kind: 'embedded' });
  });
  after(() => store?.close());

  const execute = (roles: Role[] | null, id: string) => {
    const subgraph = buildEntitySubgraph(registry, 'user', { store, maxBatchIds: 5, pushMaxFutureMs: 60_000 });
    const contextValue = roles === null ? {} : { [principalKey]: { id: 't', roles: new Set(roles), via: 'internal' } satisfies Principal };
    return graphql({
      schema: subgraph.schema,
      source: 'mutation ($rows: [UserProfileV1Push!]!) { pushUserProfile(rows: $rows) { written } }',
      variableValues: { rows: [row(id)] },
      contextValue,
    });
  };

  it('admin writes; analyst, other roles and no principal get FORBIDDEN and write nothing', async () => {
    assert.deepEqual(JSON.parse(JSON.stringify(await execute(['admin'], 'direct-admin'))), { data: { pushUserProfile: { written: 1 } } });
    assert.deepEqual(JSON.parse(JSON.stringify(await execute(['analyst', 'admin'], 'direct-both'))), { data: { pushUserProfile: { written: 1 } } });
    for (const roles of [['analyst'], ['inference', 'dashboard'], [], null] as (Role[] | null)[]) {
      const result = await execute(roles, 'direct-refused');
      assert.equal(result.data, null);
      assert.equal(result.errors?.[0]?.extensions.code, 'FORBIDDEN', JSON.stringify(result.errors));
    }
    const stored = await store.read(profile, ['direct-admin', 'direct-both', 'direct-refused']);
    assert.deepEqual(stored.map((s) => s?.values.country ?? null), ['DE', 'DE', null]);
  });
});

describe('push API (distributed shape, Redis)', () => {
  let redis: RedisProcess;
  let store: CodecStore;
  let subgraphs: RunningSubgraph[] = [];
  let gateway: RunningGateway;

  before(async () => {
    redis = await RedisProcess.start();
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
    await eventually(() => store.ping());
    subgraphs = await Promise.all(registry.entities.map((e) => startSubgraph(testConfig(env()), registry, e.name, store)));
    const subgraphUrls = subgraphs.map((s) => `${s.name}=${s.url}`).join(',');
    gateway = await startGateway({ config: testConfig({ ...env(), SUBGRAPH_URLS: subgraphUrls }), registry });
  });

  after(async () => {
    await gateway?.close();
    for (const s of subgraphs) await s.close();
    await store?.close();
    await redis?.stop();
  });

  it('an admin push crosses the process boundary with its signed principal; an analyst is refused', async () => {
    const reply = await push(gateway, [row('dist-1')]);
    assert.deepEqual(reply.json, { data: { pushUserProfile: { view: 'profile', version: 1, written: 1 } } }, reply.text);
    assert.equal((await read(gateway, ['dist-1']))[0].profile.country, 'DE');
    const refused = await push(gateway, [row('dist-2')], analyst);
    assert.equal(refused.status, 403, refused.text);
    assert.deepEqual(await read(gateway, ['dist-2']), [null]);
  });
});
