import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningGateway } from '../../gateway/server.js';
import { startGateway } from '../../gateway/server.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { registry, testConfig } from '../support/gateway.js';
import { gql } from '../support/http.js';

/** Sandbox learns the schema by introspection over HTTP: it must see the Subscription the gateway hosts. */
describe('introspection shows the subscriptions', () => {
  let store: CodecStore;
  let log: EmbeddedLog;
  let open: RunningGateway;
  let closed: RunningGateway;

  before(async () => {
    store = createStore({ kind: 'embedded' });
    log = new EmbeddedLog();
    open = await startGateway({ config: testConfig(), registry, store, eventLog: log });
    closed = await startGateway({ config: testConfig({ INTROSPECTION: 'false' }), registry, store, eventLog: log });
  });

  after(async () => {
    await open.close();
    await closed.close();
    await log.close();
    await store.close();
  });

  test('__schema lists Subscription.featureChanged and liveOperation and their argument types, each described', async () => {
    const reply = await gql(open.url, '{ __schema { subscriptionType { fields { name args { name } } } } __type(name: "EntityType") { enumValues { name } } ' +
      'version: __type(name: "FeatureViewVersion") { kind inputFields { name type { kind ofType { name } } } } }');
    assert.equal(reply.status, 200, reply.text);
    assert.deepEqual(reply.json.data.__schema.subscriptionType.fields, [
      { name: 'featureChanged', args: [{ name: 'entity' }, { name: 'ids' }, { name: 'views' }, { name: 'versions' }] },
      { name: 'liveOperation', args: [{ name: 'operation' }, { name: 'variables' }] },
    ]);
    // Analysts read the descriptions in Sandbox: every type, field and argument of live operations has one.
    const live = await gql(open.url, '{ __schema { subscriptionType { fields { name description args { description } } } } ' +
      'update: __type(name: "LiveOperationUpdate") { description fields { description } } json: __type(name: "JSON") { description } object: __type(name: "JSONObject") { description } }');
    const field = live.json.data.__schema.subscriptionType.fields.find((f: { name: string }) => f.name === 'liveOperation');
    for (const described of [field, ...field.args, live.json.data.update, ...live.json.data.update.fields, live.json.data.json, live.json.data.object]) {
      assert.ok(typeof described.description === 'string' && described.description.length > 20, JSON.stringify(described));
    }
    assert.deepEqual(reply.json.data.__type.enumValues.map((v: { name: string }) => v.name), ['USER', 'ITEM', 'MERCHANT']);
    assert.deepEqual(reply.json.data.version, {
      kind: 'INPUT_OBJECT',
      inputFields: [{ name: 'view', type: { kind: 'NON_NULL', ofType: { name: 'String' } } }, { name: 'version', type: { kind: 'NON_NULL', ofType: { name: 'Int' } } }],
    });
  });

  test('a query mixing introspection and data still runs through the planner', async () => {
    const reply = await gql(open.url, '{ __typename user(id: "nobody") { id } }');
    assert.deepEqual(reply.json, { data: { __typename: 'Query', user: null } });
  });

  test('INTROSPECTION=false still refuses it', async () => {
    const reply = await gql(closed.url, '{ __schema { subscriptionType { name } } }');
    assert.equal(reply.status, 400);
    assert.equal(reply.json.errors[0].extensions.code, 'GRAPHQL_VALIDATION_FAILED');
  });
});
