/**
 * Which requests the subscription transports take, and what a client that
 * asks for something not served is told: every refusal names what is served.
 * The transports themselves, driven by their published clients, are tested in
 * subscription-transports.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { registry, testConfig } from '../support/gateway.js';
import { post } from '../support/http.js';

const subscription = 'subscription { featureChanged(entity: USER, ids: ["1"]) { id } }';
const query = '{ user(id: "1") { id } }';
const transports = /graphql-ws .*SSE .*text\/event-stream.*multipart HTTP .*subscriptionSpec/;

describe('subscription transports: what is served, and what a client asking for anything else is told', () => {
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let gateway: RunningGateway;
  let feedless: RunningGateway;

  before(async () => {
    store = createStore({ kind: 'embedded' }, () => Date.now());
    eventLog = new EmbeddedLog();
    gateway = await startGateway({ config: testConfig({}), registry, store, eventLog });
    feedless = await startGateway({ config: testConfig({}), registry, store });
  });

  after(async () => {
    await gateway?.close();
    await feedless?.close();
    await eventLog?.close();
    await store?.close();
  });

  it('a subscription sent as a plain JSON request is refused naming the transports', async () => {
    const reply = await post(gateway.url, { query: subscription });
    assert.equal(reply.status, 400);
    assert.equal(reply.json.errors[0].extensions.code, 'OPERATION_NOT_SUPPORTED');
    assert.match(reply.json.errors[0].message, transports);
  });

  it('a query asking for a stream is answered as JSON where the Accept allows it, else 406 naming types and transports', async () => {
    const json = await post(gateway.url, { query }, { accept: 'text/event-stream, application/json;q=0.5' });
    assert.equal(json.status, 200);
    assert.match(json.headers.get('content-type') ?? '', /application\/json/);
    assert.deepEqual(json.json.data, { user: null });

    const only = await post(gateway.url, { query }, { accept: 'text/event-stream' });
    assert.equal(only.status, 406);
    assert.equal(only.json.errors[0].extensions.code, 'BAD_REQUEST');
    assert.match(only.json.errors[0].message, /application\/json/);
    assert.match(only.json.errors[0].message, transports);
  });

  it('multipart/mixed without subscriptionSpec (incremental delivery of queries) is not taken for a subscription', async () => {
    const reply = await post(gateway.url, { query }, { accept: 'multipart/mixed;deferSpec=20220824, application/json' });
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.json.data, { user: null });
  });

  it('graphql-sse\'s single-connection mode (a PUT reserving a stream) gets a 405 naming the modes served', async () => {
    const response = await fetch(gateway.url, { method: 'PUT' });
    assert.equal(response.status, 405);
    assert.equal(response.headers.get('allow'), 'GET, POST');
    const body = (await response.json()) as { errors: { message: string; extensions: { code: string } }[] };
    assert.equal(body.errors[0]!.extensions.code, 'BAD_REQUEST');
    assert.match(body.errors[0]!.message, /single-connection mode.*singleConnection: false/);
    assert.match(body.errors[0]!.message, transports);
  });

  it('a gateway that tails no change feed answers a stream request with a 406 saying it serves no subscriptions', async () => {
    for (const accept of ['text/event-stream', 'multipart/mixed;subscriptionSpec="1.0"']) {
      const reply = await post(feedless.url, { query: subscription }, { accept });
      assert.equal(reply.status, 406, accept);
      assert.match(reply.json.errors[0].message, /serves no subscriptions \(it tails no change feed\)/);
    }
  });

  it('takes a subscription over SSE by GET with query parameters, and refuses malformed variables there', async () => {
    const url = `${gateway.url}?query=${encodeURIComponent(subscription)}`;
    const controller = new AbortController();
    const response = await fetch(url, { headers: { accept: 'text/event-stream' }, signal: controller.signal });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const reader = response.body!.getReader();
    const { value } = await reader.read();
    assert.equal(new TextDecoder().decode(value), ':\n\n', 'the stream opens with a comment');
    controller.abort();

    const bad = await fetch(`${url}&variables=${encodeURIComponent('{not json')}`, { headers: { accept: 'text/event-stream' } });
    const text = await bad.text();
    assert.equal(bad.status, 200);
    assert.match(text, /^:\n\nevent: next\ndata: \{"errors":\[\{"message":"The `variables` query parameter is not JSON/);
    assert.match(text, /event: complete\ndata:\n\n$/);

    // A query by GET asking for a stream is no subscription: Apollo Server's CSRF prevention applies to it as to any GET.
    const csrf = await fetch(`${gateway.url}?query=${encodeURIComponent(query)}`, { headers: { accept: 'text/event-stream, application/json' } });
    assert.equal(csrf.status, 400);
    assert.match(await csrf.text(), /CSRF/);
  });
});
