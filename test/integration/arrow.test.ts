import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tableFromIPC } from 'apache-arrow';
import type { RunningGateway } from '../../gateway/server.js';
import { readManifest, sha256Hex } from '../../schema/manifest.js';
import { fromRoot } from '../../runtime/paths.js';
import { createStore } from '../../store/create-store.js';
import { arrowMismatches, startArrowFixture, type ArrowFixture } from '../support/arrow.js';
import { testCredentials, type TestCredentials } from '../support/auth.js';
import { startTestGateway } from '../support/gateway.js';
import { get, post, type Reply } from '../support/http.js';
import { eventually } from '../support/wait.js';

/**
 * Arrow responses over HTTP (decision 0031): every persisted operation, fresh, stale, missing and
 * partly failed (a real Redis shard killed, and one hung past the request deadline), answered as
 * an Arrow IPC stream and as GraphQL JSON by the same gateway, compared value for value (data and
 * errors) after decoding with apache-arrow; POST and GET; content negotiation (q-values, lists,
 * fallback to JSON, 406 naming the types); the same refusals as the JSON door (roles, variables,
 * limits); the format label of the fast-path metric.
 */
const ARROW = 'application/vnd.apache.arrow.stream';
const manifest = readManifest();
const idOf = (name: string): string => manifest.operations.find((o) => o.name === name)!.id;
const persisted = (name: string, variables: unknown, extra: Record<string, unknown> = {}) => ({ extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables, ...extra });

/** The root fields' requested ids of each operation, from its variables. */
const rootIds: Record<string, (v: Record<string, unknown>) => Record<string, readonly string[] | string>> = {
  UserClickRate: (v) => ({ users: v.ids as string[] }),
  RankingFeatures: (v) => ({ user: v.user as string, items: v.items as string[] }),
  FraudFeatures: (v) => ({ user: v.user as string, merchant: v.merchant as string }),
};
/** Users 1-20 fresh, 21-25 stale, 404 and beyond missing; profile-only has a profile alone. */
const cases: [string, Record<string, unknown>][] = [
  ['UserClickRate', { ids: ['1', '2', '3', '4', '5', '6'] }],
  ['UserClickRate', { ids: ['21', '22'] }],
  ['UserClickRate', { ids: ['1', '21', '404', '1', '21', 'profile-only'] }],
  ['UserClickRate', { ids: [] }],
  ['RankingFeatures', { user: '1', items: Array.from({ length: 20 }, (_, i) => String(i + 1)) }],
  ['RankingFeatures', { user: '21', items: ['21', '22', '404', '1'] }],
  ['RankingFeatures', { user: '404', items: ['404'] }],
  ['RankingFeatures', { user: 'profile-only', items: [] }],
  ['FraudFeatures', { user: '1', merchant: '1' }],
  ['FraudFeatures', { user: '22', merchant: '21' }],
  ['FraudFeatures', { user: '404', merchant: '404' }],
];

interface ArrowReply {
  readonly status: number;
  readonly headers: Headers;
  readonly bytes: Uint8Array;
}
async function postArrow(url: string, body: unknown, headers: Record<string, string> = {}): Promise<ArrowReply> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: ARROW, ...headers }, body: JSON.stringify(body) });
  return { status: response.status, headers: response.headers, bytes: new Uint8Array(await response.arrayBuffer()) };
}
const textOf = (reply: ArrowReply): string => new TextDecoder().decode(reply.bytes);

async function metric(url: string, pattern: RegExp): Promise<number> {
  const text = (await get(url.replace('/graphql', '/metrics'))).text;
  return text.split('\n').filter((l) => pattern.test(l)).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

describe('Arrow responses on a real gateway over two real Redis shards', () => {
  let fixture: ArrowFixture;
  let url: string;

  before(async () => {
    fixture = await startArrowFixture({ REQUEST_DEADLINE_MS: '600' });
    url = fixture.gateway.url;
  });
  after(async () => {
    await fixture?.close();
  });

  /** The JSON and the Arrow answer of one request; the Arrow one must agree with the JSON one. */
  async function agree(name: string, variables: Record<string, unknown>, label: string): Promise<{ json: Reply; arrow: ArrowReply }> {
    const json = await post(url, persisted(name, variables));
    const arrow = await postArrow(url, persisted(name, variables));
    assert.equal(json.status, 200, `${label}: JSON ${json.text}`);
    assert.equal(arrow.status, 200, `${label}: Arrow ${textOf(arrow)}`);
    assert.equal(arrow.headers.get('content-type'), ARROW, label);
    assert.equal(arrow.headers.get('cache-control'), 'no-store', label);
    assert.deepEqual(arrowMismatches(arrow.bytes, json.json, rootIds[name]!(variables)), [], `${label}: ${json.text}`);
    return { json, arrow };
  }

  test('fresh, stale and missing values: the Arrow stream equals the JSON answer value for value', async () => {
    await fixture.writeStale();
    const served = () => metric(url, /^feature_gateway_fast_path_requests_total\{.*outcome="served".*format="arrow"/);
    const before = await served();
    for (const [name, variables] of cases) await agree(name, variables, `${name} ${JSON.stringify(variables)}`);
    assert.equal(await served(), before + cases.length, 'each was served by the plan as Arrow, and counted under format="arrow"');
  });

  test('the cases really hold fresh, stale and missing values, typed from the registry', async () => {
    await fixture.writeStale();
    const { arrow } = await agree('RankingFeatures', { user: '21', items: ['21', '404', '1'] }, 'RankingFeatures');
    const table = tableFromIPC(arrow.bytes);
    assert.deepEqual(table.batches.map((b) => b.numRows), [1, 3], 'one batch per root field, one row per id');
    const col = (name: string) => Array.from(table.getChild(name)!, (v) => (typeof v === 'bigint' ? Number(v) : v));
    assert.deepEqual(col('field'), ['user', 'items', 'items', 'items']);
    assert.deepEqual(col('id'), ['21', '21', '404', '1']);
    assert.deepEqual(col('clickStats.stale'), [true, null, null, null], 'user 21: stale');
    assert.deepEqual(col('clickStats.clickRate'), [null, null, null, null], 'a stale value has null features');
    assert.equal(typeof col('clickStats.eventTime')[0], 'number', 'and its event time');
    assert.deepEqual(col('itemStats.stale'), [null, true, null, false], 'item 21 stale, 404 missing, 1 fresh');
    assert.equal(typeof col('itemStats.ctr')[3], 'number');
    const types = Object.fromEntries(table.schema.fields.map((f) => [f.name, String(f.type)]));
    assert.equal(types['clickStats.clicks'], 'Int64');
    assert.equal(types['clickStats.clickRate'], 'Float64');
    assert.equal(types['profile.isPremium'], 'Bool');
    assert.equal(types['profile.country'], 'Utf8');
    assert.equal(types['profile.embedding'], 'List<Float64>');
    assert.equal(types['itemStats.eventTime'], 'Timestamp<MILLISECOND, UTC>');
  });

  test('GET: a persisted operation by its hash in the query string, answered as Arrow', async () => {
    const variables = { ids: ['1', '404'] };
    const query = `extensions=${encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: idOf('UserClickRate') } }))}&variables=${encodeURIComponent(JSON.stringify(variables))}`;
    const response = await fetch(`${url}?${query}`, { headers: { accept: ARROW, 'apollo-require-preflight': 'true' } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), ARROW);
    const json = await post(url, persisted('UserClickRate', variables));
    assert.deepEqual(arrowMismatches(new Uint8Array(await response.arrayBuffer()), json.json, { users: variables.ids }), []);
    // A malformed variables parameter is the client's error, said so.
    const bad = await get(`${url}?${query.replace(/variables=.*/, 'variables=%7Bnope')}`, { accept: ARROW, 'apollo-require-preflight': 'true' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.errors[0].extensions.code, 'BAD_REQUEST');
    assert.match(bad.json.errors[0].message, /variables parameter is not JSON/);
  });

  test('negotiation: q-values and lists as GraphQL over HTTP reads them; JSON stays the default', async () => {
    const body = persisted('UserClickRate', { ids: ['1', '2'] });
    const plain = await post(url, body);
    for (const accept of ['*/*', 'application/json', `${ARROW};q=0.5, application/json`, `application/json, ${ARROW}`, 'application/*']) {
      const reply = await post(url, body, { accept });
      assert.equal(reply.status, 200, accept);
      assert.match(reply.headers.get('content-type') ?? '', /^application\/json/, accept);
      assert.equal(reply.text, plain.text, `${accept}: the JSON answer`);
    }
    const graphqlResponse = await post(url, body, { accept: 'application/graphql-response+json' });
    assert.match(graphqlResponse.headers.get('content-type') ?? '', /graphql-response\+json/);
    for (const accept of [ARROW, `application/json;q=0.1, ${ARROW}`, `${ARROW}, application/json`, `text/html, ${ARROW};q=0.9`]) {
      const reply = await postArrow(url, body, { accept });
      assert.equal(reply.status, 200, accept);
      assert.equal(reply.headers.get('content-type'), ARROW, accept);
    }
  });

  test('406: an Accept allowing none of the types, naming them; an operation without an Arrow form when JSON is not acceptable', async () => {
    const body = persisted('UserClickRate', { ids: ['1'] });
    for (const accept of ['text/html', 'application/xml', `${ARROW};q=0, application/json;q=0`]) {
      const reply = await post(url, body, { accept });
      assert.equal(reply.status, 406, accept);
      assert.equal(reply.json.errors[0].extensions.code, 'BAD_REQUEST');
      assert.match(reply.json.errors[0].message, /application\/graphql-response\+json, application\/json, application\/vnd\.apache\.arrow\.stream/);
    }
    const getReply = await get(`${url}?query=${encodeURIComponent('{ __typename }')}`, { accept: 'image/png', 'apollo-require-preflight': 'true' });
    assert.equal(getReply.status, 406);
    // An ad-hoc query has no compiled plan, so no Arrow form: 406 when only Arrow is acceptable…
    const adhoc = { query: '{ users(ids: ["1"]) { id clickStats { clickRate } } }' };
    const refused = await post(url, adhoc, { accept: ARROW });
    assert.equal(refused.status, 406);
    assert.match(refused.json.errors[0].message, /has no Arrow form .*only persisted operations have one/);
    // …and the JSON answer when JSON is acceptable too.
    const fallback = await post(url, adhoc, { accept: `${ARROW}, application/json;q=0.5` });
    assert.equal(fallback.status, 200);
    assert.equal(fallback.json.data.users[0].id, '1');
    // The browser's page is still Apollo Server's.
    const page = await get(url, { accept: 'text/html' });
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  });

  test('bad input gets the error the JSON door gives it, with a message saying what to send', async () => {
    const variants: [Record<string, unknown>, number, string, RegExp][] = [
      [persisted('UserClickRate', { ids: [1, 2] }), 400, 'BAD_USER_INPUT', /\$ids.*list of strings/],
      [persisted('UserClickRate', { ids: '1' }), 400, 'BAD_USER_INPUT', /without GraphQL's input coercion/],
      [persisted('RankingFeatures', { user: 7, items: [] }), 400, 'BAD_USER_INPUT', /\$user.*a string/],
      [persisted('UserClickRate', { ids: Array.from({ length: 21 }, (_, i) => String(i)) }), 400, 'BATCH_TOO_LARGE', /21 items; at most 20/],
      [persisted('UserClickRate', { ids: ['1'] }, { operationName: 'Other' }), 400, 'OPERATION_RESOLUTION_FAILURE', /Unknown operation named "Other"/],
      [persisted('UserClickRate', ['1']), 400, 'BAD_REQUEST', /variables/],
    ];
    for (const [body, status, code, message] of variants) {
      const reply = await postArrow(url, body);
      const text = textOf(reply);
      assert.equal(reply.status, status, text);
      assert.match(reply.headers.get('content-type') ?? '', /^application\/json/);
      const error = JSON.parse(text).errors[0];
      assert.equal(error.extensions.code, code, text);
      assert.match(error.message, message);
    }
    // Malformed JSON is refused before negotiation matters, as for JSON.
    const malformed = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: ARROW }, body: '{"extensions":' });
    assert.equal(malformed.status, 400);
  });

  test('a hung shard past the request deadline: its rows null with DEADLINE_EXCEEDED, the rest served, in time', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => String(i + 1));
    const hung = ids.filter((id) => fixture.onSecondShard('clickStats', id));
    assert.ok(hung.length > 0 && hung.length < ids.length, `test setup: ${hung.length} of ${ids.length} on the second shard`);
    const pid = fixture.shards[1]!.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      const started = Date.now();
      const arrow = await postArrow(url, persisted('UserClickRate', { ids }));
      assert.ok(Date.now() - started < 600 + 2000, `answered after ${Date.now() - started} ms`);
      assert.equal(arrow.status, 200, textOf(arrow));
      const table = tableFromIPC(arrow.bytes);
      const errors = JSON.parse(table.schema.metadata.get('errors')!);
      assert.deepEqual(errors.map((e: { path: unknown[] }) => e.path), hung.map((id) => ['users', ids.indexOf(id)]));
      for (const e of errors) {
        assert.equal(e.extensions.code, 'DEADLINE_EXCEEDED');
        assert.equal(e.extensions.shard, fixture.shards[1]!.address);
        assert.equal(e.extensions.deadlineMs, 600);
      }
      const rates = Array.from(table.getChild('clickStats.clickRate')!);
      ids.forEach((id, k) => assert.equal(rates[k] === null, hung.includes(id), `row ${k} (id ${id})`));
      const json = await post(url, persisted('UserClickRate', { ids }));
      assert.deepEqual(arrowMismatches(arrow.bytes, json.json, { users: ids }), [], json.text);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await eventually(async () => {
      const r = await post(url, persisted('UserClickRate', { ids }));
      if (r.json.errors) throw new Error(r.text);
    });
  });

  test('one shard killed: every operation, Arrow equals JSON in data and errors', async () => {
    await fixture.writeStale();
    // Ids of both shards: which shard a user lives on depends on the shards' (random) ports.
    const probe = Array.from({ length: 20 }, (_, i) => String(i + 1));
    assert.ok(probe.some((id) => fixture.onSecondShard('clickStats', id)) && !probe.every((id) => fixture.onSecondShard('clickStats', id)),
      'test setup: users 1-20 spread over both shards');
    await fixture.shards[1]!.kill();
    // Once the client has seen the refused reconnect, a failed value's message is the same from one request to the next.
    await eventually(async () => {
      const r = await post(url, persisted('UserClickRate', { ids: probe }));
      if (!/last connection error/.test(r.text)) throw new Error(r.text);
    });
    let errors = 0;
    let values = 0;
    for (const [name, variables] of cases) {
      const { arrow } = await agree(name, variables, `${name} ${JSON.stringify(variables)}, a shard down`);
      const table = tableFromIPC(arrow.bytes);
      errors += JSON.parse(table.schema.metadata.get('errors')!).length;
      values += table.schema.fields.filter((f) => f.name.endsWith('.stale')).reduce((n, f) => n + Array.from(table.getChild(f.name)!).filter((v) => v !== null).length, 0);
    }
    assert.ok(errors > 0, 'some values failed');
    assert.ok(values > 0, 'and the others were served');
  });
});

describe('Arrow responses: the same checks as the JSON door (roles, limits) and operations without an Arrow form', () => {
  let gateway: RunningGateway;
  let credentials: TestCredentials;
  const extra = {
    // A view readable by admins only, and an operation that does not compile (a fragment).
    RiskProfiles: 'query RiskProfiles($ids: [ID!]!) {\n  users(ids: $ids) {\n    id\n    riskProfile {\n      riskScore\n    }\n  }\n}',
    WithFragment: 'query WithFragment($ids: [ID!]!) {\n  users(ids: $ids) {\n    ...Rate\n  }\n}\nfragment Rate on User {\n  clickStats {\n    clickRate\n  }\n}',
  };
  const extraId = (name: keyof typeof extra) => sha256Hex(extra[name]);

  before(async () => {
    const dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-arrow-'));
    credentials = await testCredentials(dir);
    const file = path.join(dir, 'manifest.json');
    const base = JSON.parse(fs.readFileSync(fromRoot('schema', 'persisted-query-manifest.json'), 'utf8'));
    base.operations.push(...Object.entries(extra).map(([name, body]) => ({ id: sha256Hex(body), name, type: 'query', body })));
    fs.writeFileSync(file, JSON.stringify(base));
    // The refusals come before any read: an empty embedded store is enough.
    gateway = await startTestGateway(createStore({ kind: 'embedded' }), { ...credentials.env, PERSISTED_QUERY_MANIFEST: file, MAX_QUERY_COST: '40' });
  });
  after(async () => {
    await gateway?.close();
  });

  const ask = (body: unknown, key?: string) => postArrow(gateway.url, body, key ? { 'x-api-key': key } : {});
  const errorOf = (reply: ArrowReply) => JSON.parse(textOf(reply)).errors[0];

  test('no credentials: 401; a role that may not run persisted operations: 403 naming the roles that may', async () => {
    const body = persisted('UserClickRate', { ids: ['1'] });
    const anonymous = await ask(body);
    assert.equal(anonymous.status, 401);
    assert.equal(errorOf(anonymous).extensions.code, 'UNAUTHENTICATED');
    const dashboard = await ask(body, credentials.keys.dashboard);
    assert.equal(dashboard.status, 403, textOf(dashboard));
    assert.equal(errorOf(dashboard).extensions.code, 'FORBIDDEN');
    assert.match(errorOf(dashboard).message, /run persisted operations.*needs one of inference, analyst, admin/);
    const inference = await ask(body, credentials.keys.inference);
    assert.equal(inference.status, 200, textOf(inference));
    assert.equal(inference.headers.get('content-type'), ARROW);
  });

  test('a view the caller may not read: 403 (JSON answers it partially, with the field error an Arrow stream has no place for)', async () => {
    const body = { extensions: { persistedQuery: { version: 1, sha256Hash: extraId('RiskProfiles') } }, variables: { ids: ['1'] } };
    const reply = await ask(body, credentials.keys.inference);
    assert.equal(reply.status, 403, textOf(reply));
    assert.equal(errorOf(reply).extensions.code, 'FORBIDDEN');
    assert.match(errorOf(reply).message, /feature view riskProfile: it is readable by admin only/);
    const json = await post(gateway.url, body, { 'x-api-key': credentials.keys.inference });
    assert.equal(json.json.errors[0].extensions.code, 'FORBIDDEN', json.text);
    const admin = await ask(body, credentials.keys.admin);
    assert.equal(admin.status, 200, textOf(admin));
  });

  test('over MAX_QUERY_COST: 400 QUERY_TOO_COSTLY, as for JSON', async () => {
    const body = persisted('UserClickRate', { ids: Array.from({ length: 20 }, (_, i) => String(i)) });
    const reply = await ask(body, credentials.keys.inference);
    assert.equal(reply.status, 400, textOf(reply));
    assert.equal(errorOf(reply).extensions.code, 'QUERY_TOO_COSTLY');
    const json = await post(gateway.url, body, { 'x-api-key': credentials.keys.inference });
    assert.equal(json.json.errors[0].extensions.code, 'QUERY_TOO_COSTLY');
  });

  test('a manifest operation that does not compile has no Arrow form: 406 saying why; JSON answers it', async () => {
    const body = { extensions: { persistedQuery: { version: 1, sha256Hash: extraId('WithFragment') } }, variables: { ids: ['1'] } };
    const reply = await ask(body, credentials.keys.inference);
    assert.equal(reply.status, 406, textOf(reply));
    assert.match(errorOf(reply).message, /no Arrow form .*does not compile to a plan \(fragments or several definitions\)/);
    const json = await post(gateway.url, body, { 'x-api-key': credentials.keys.inference });
    assert.equal(json.status, 200, json.text);
    assert.deepEqual(json.json.data, { users: [null] });
  });
});
