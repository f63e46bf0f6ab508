/**
 * Persisted operations over real HTTP (ARCHITECTURE.md, decision 4): APQ
 * registration, manifest operations by id, safelist mode, and the start-up
 * warm-up that parses and validates every manifest operation once.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ApolloServerPlugin, BaseContext } from '@apollo/server';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { readManifest, sha256Hex } from '../../schema/manifest.js';
import { withFeatureServices } from '../../schema/feature-queries.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { registry, startTestGateway, testConfig } from '../support/gateway.js';
import { gql, post, type Reply } from '../support/http.js';

const NOW = Date.now();
const manifest = readManifest();
const clickStats = registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!.versions[1]!;

function op(name: string) {
  const found = manifest.operations.find((o) => o.name === name);
  if (!found) throw new Error(`no persisted operation ${name}`);
  return found;
}

function byHash(sha256Hash: string, variables: Record<string, unknown>, query?: string): Record<string, unknown> {
  return { ...(query === undefined ? {} : { query }), extensions: { persistedQuery: { version: 1, sha256Hash } }, variables };
}

function errorCodes(reply: Reply): string[] {
  return (reply.json?.errors ?? []).map((e: any) => e.extensions?.code);
}

function assertData(reply: Reply): any {
  assert.equal(reply.status, 200, reply.text);
  assert.equal(reply.json?.errors, undefined, reply.text);
  return reply.json.data;
}

/** An ad-hoc operation that is not in the manifest (a unique name keeps it out of any other test's cache). */
const adhoc = 'query AdhocClickRate($id: ID!) { user(id: $id) { id clickStats { clickRate clicks } } }';
const adhocHash = sha256Hex(adhoc);
const adhocData = { user: { id: 'u1', clickStats: { clickRate: 0.25, clicks: 3 } } };

async function seededStore(): Promise<CodecStore> {
  const store = createStore({ kind: 'embedded' }, () => NOW);
  await store.write(clickStats, [
    { entityId: 'u1', values: { clickRate: 0.25, clicks: 3, impressions: 12 }, eventTimeMs: NOW - 1000 },
    { entityId: 'u2', values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: NOW - 1000 },
  ]);
  return store;
}

describe('persisted queries', () => {
  let store: CodecStore;

  before(async () => {
    store = await seededStore();
  });

  after(async () => {
    await store?.close();
  });

  it('the manifest holds the operations these tests rely on, and is not holding the ad-hoc one', () => {
    assert.deepEqual(manifest.operations.map((o) => o.name).sort(), ['FraudFeatures', 'RankingFeatures', 'UserClickRate']);
    assert.ok(!manifest.operations.some((o) => o.id === adhocHash));
  });

  describe('APQ (safelist off)', () => {
    let gateway: RunningGateway;

    before(async () => {
      gateway = await startTestGateway(store);
    });

    after(async () => {
      await gateway?.close();
    });

    it('round-trips an ad-hoc query: unknown hash, then registration, then hash only', async () => {
      const variables = { id: 'u1' };
      const unknown = await post(gateway.url, byHash(adhocHash, variables));
      assert.deepEqual(errorCodes(unknown), ['PERSISTED_QUERY_NOT_FOUND'], unknown.text);
      assert.equal(unknown.json.data, undefined);

      const registered = await post(gateway.url, byHash(adhocHash, variables, adhoc));
      assert.deepEqual(assertData(registered), adhocData);

      const again = await post(gateway.url, byHash(adhocHash, variables));
      assert.deepEqual(assertData(again), adhocData);
    });

    it('refuses a registration whose hash is not the SHA-256 of its query', async () => {
      const query = 'query MismatchedHash { user(id: "u1") { id } }';
      const reply = await post(gateway.url, byHash(sha256Hex(`${query} `), {}, query));
      assert.equal(reply.status, 400, reply.text);
      assert.match(reply.json.errors[0].message, /does not match/);
      const lookup = await post(gateway.url, byHash(sha256Hex(`${query} `), {}));
      assert.deepEqual(errorCodes(lookup), ['PERSISTED_QUERY_NOT_FOUND']);
    });

    it('runs a manifest operation by its id without it ever being registered', async () => {
      const { id } = op('UserClickRate');
      const data = assertData(await post(gateway.url, byHash(id, { ids: ['u2', 'u1', 'missing'] })));
      assert.deepEqual(data, {
        users: [
          { id: 'u2', clickStats: { clickRate: 0.5, stale: false } },
          { id: 'u1', clickStats: { clickRate: 0.25, stale: false } },
          null,
        ],
      });
    });

    it('still accepts ad-hoc queries in full text', async () => {
      assert.deepEqual(assertData(await gql(gateway.url, adhoc, { id: 'u1' })), adhocData);
    });
  });

  describe('safelist mode (SAFELIST=true), for callers without the analyst role', () => {
    let gateway: RunningGateway;
    let analysts: RunningGateway;

    before(async () => {
      gateway = await startTestGateway(store, { SAFELIST: 'true', ANONYMOUS_ROLES: 'inference' });
      analysts = await startTestGateway(store, { SAFELIST: 'true', ANONYMOUS_ROLES: 'analyst' });
    });

    after(async () => {
      await gateway?.close();
      await analysts?.close();
    });

    it('lets an analyst run ad-hoc queries (ARCHITECTURE.md, decision 4)', async () => {
      assert.deepEqual(assertData(await gql(analysts.url, adhoc, { id: 'u1' })), adhocData);
    });

    it('refuses an ad-hoc query with 400 PERSISTED_QUERY_NOT_IN_SAFELIST', async () => {
      const reply = await gql(gateway.url, adhoc, { id: 'u1' });
      assert.equal(reply.status, 400, reply.text);
      assert.deepEqual(errorCodes(reply), ['PERSISTED_QUERY_NOT_IN_SAFELIST']);
      assert.equal(reply.json.data, undefined);
    });

    it('refuses APQ registration of a non-manifest query, and the hash stays unknown', async () => {
      const registration = await post(gateway.url, byHash(adhocHash, { id: 'u1' }, adhoc));
      assert.equal(registration.status, 400, registration.text);
      assert.deepEqual(errorCodes(registration), ['PERSISTED_QUERY_NOT_IN_SAFELIST']);

      const lookup = await post(gateway.url, byHash(adhocHash, { id: 'u1' }));
      assert.equal(lookup.status, 400, lookup.text);
      assert.deepEqual(errorCodes(lookup), ['PERSISTED_QUERY_NOT_IN_SAFELIST']);
      assert.equal(lookup.json.data, undefined);
    });

    it('refuses a non-manifest query even when it claims a manifest hash', async () => {
      const reply = await post(gateway.url, byHash(op('UserClickRate').id, { ids: ['u1'] }, adhoc));
      assert.equal(reply.status, 400, reply.text);
      assert.deepEqual(errorCodes(reply), ['PERSISTED_QUERY_NOT_IN_SAFELIST']);
    });

    it('runs a manifest operation by its id', async () => {
      const data = assertData(await post(gateway.url, byHash(op('UserClickRate').id, { ids: ['u1'] })));
      assert.deepEqual(data, { users: [{ id: 'u1', clickStats: { clickRate: 0.25, stale: false } }] });
    });

    it('runs a manifest operation sent as its exact full text', async () => {
      const data = assertData(await gql(gateway.url, op('UserClickRate').body, { ids: ['u2'] }));
      assert.deepEqual(data, { users: [{ id: 'u2', clickStats: { clickRate: 0.5, stale: false } }] });
    });

    it('refuses a manifest operation whose text differs from the manifest body', async () => {
      const reformatted = op('UserClickRate').body.replace(/\s+/g, ' ');
      const reply = await gql(gateway.url, reformatted, { ids: ['u2'] });
      assert.equal(reply.status, 400, reply.text);
      assert.deepEqual(errorCodes(reply), ['PERSISTED_QUERY_NOT_IN_SAFELIST']);
    });
  });

  describe('warm-up at start-up', () => {
    let gateway: RunningGateway;
    const counts = { parsed: 0, validated: 0 };
    const parsedQueries: string[] = [];
    const pipeline: ApolloServerPlugin<BaseContext> = {
      async requestDidStart() {
        return {
          async parsingDidStart({ request }) {
            counts.parsed++;
            parsedQueries.push(request.query ?? '');
          },
          async validationDidStart() {
            counts.validated++;
          },
        };
      },
    };

    before(async () => {
      gateway = await startGateway({ config: testConfig(), registry, store, extraPlugins: [pipeline] });
    });

    after(async () => {
      await gateway?.close();
    });

    it('parsed and validated every manifest query while starting', () => {
      // The gateway's manifest: the file's operations and one per feature service of the registry.
      const queries = withFeatureServices(manifest, registry).operations.filter((o) => o.type === 'query');
      assert.ok(queries.some((o) => o.name === 'FeatureService_ranking'));
      assert.equal(counts.parsed, queries.length);
      assert.equal(counts.validated, queries.length);
      assert.deepEqual([...parsedQueries].sort(), queries.map((o) => o.body).sort());
    });

    it('runs each manifest operation by id with no further parse or validation', async () => {
      counts.parsed = counts.validated = 0;
      const variables: Record<string, Record<string, unknown>> = {
        UserClickRate: { ids: ['u1'] },
        RankingFeatures: { user: 'u1', items: ['i1', 'i2'] },
        FraudFeatures: { user: 'u1', merchant: 'm1' },
      };
      for (const operation of manifest.operations) {
        const reply = await post(gateway.url, byHash(operation.id, variables[operation.name] ?? {}));
        assertData(reply);
      }
      // And the same operations sent as full text hit the same parsed documents.
      assertData(await gql(gateway.url, op('UserClickRate').body, { ids: ['u2'] }));
      assert.deepEqual(counts, { parsed: 0, validated: 0 });
    });

    it('parses and validates a new ad-hoc query once, then reuses it', async () => {
      counts.parsed = counts.validated = 0;
      assert.deepEqual(assertData(await gql(gateway.url, adhoc, { id: 'u1' })), adhocData);
      assert.deepEqual(counts, { parsed: 1, validated: 1 });
      assert.deepEqual(assertData(await gql(gateway.url, adhoc, { id: 'u1' })), adhocData);
      assert.deepEqual(counts, { parsed: 1, validated: 1 });
    });
  });
});
