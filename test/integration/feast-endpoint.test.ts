import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RunningGateway } from '../../gateway/server.js';
import { resolveRef, type ResolvedRef } from '../../schema/feast.js';
import { withFeatureServices } from '../../schema/feature-queries.js';
import { readManifest } from '../../schema/manifest.js';
import type { ViewVersion } from '../../schema/types.js';
import { activeVersionOf, findView } from '../../schema/types.js';
import { recordKey } from '../../store/backends/byte-backend.js';
import type { RedisBackend } from '../../store/backends/redis.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { demoRows } from '../../store/demo-data.js';
import { writeRows } from '../../store/rows.js';
import { testCredentials, type TestCredentials } from '../support/auth.js';
import { registry, spawnSubgraphs, startTestGateway } from '../support/gateway.js';
import { baseUrl, get, post, type Reply } from '../support/http.js';
import { RedisProcess } from '../support/redis-server.js';
import { decodeArrow } from '../support/arrow.js';
import { eventually } from '../support/wait.js';

/**
 * POST /get-online-features over HTTP, on two real redis-server shards
 * (a client-side hash ring): the door reading the store directly (the
 * compiled plan's way) answers every request byte for byte as the same
 * door reading through the generic federated path (FAST_PATH=false), with
 * one store read per view version; its facts equal what GraphQL answers
 * for the same feature service; credentials, roles, limits, bad input and
 * metrics as on GraphQL; a hung shard fails only its values (INVALID, with
 * the error), within the request's deadline.
 */
const view = (name: string, version?: number): ViewVersion => {
  const v = findView(registry, name)!;
  return version === undefined ? activeVersionOf(v) : v.versions[version - 1]!;
};
const clickStats = view('clickStats');

/** The body's shape as Feast's JSON has it. */
interface FeastBody {
  results: { values: unknown[]; statuses: string[]; event_timestamps: string[] }[];
  metadata: { feature_names: string[]; feature_view_metadata?: { name: string; version: number }[] };
  errors?: { message: string; extensions: { code: string; shard?: string; view: string; ids: string[] } }[];
}

/** Column by name → its values, statuses and times. */
function columns(body: FeastBody): Map<string, FeastBody['results'][number]> {
  return new Map(body.metadata.feature_names.map((n, i) => [n, body.results[i]!]));
}

async function seed(store: CodecStore, now: number): Promise<void> {
  // Users, items and merchants 1-20 fresh; 21-25 stale (clickStats is 90 s old against a 60 s TTL, profile
  // stays fresh; items and merchants 1 h 59 m old against 1 h; the store keeps them until twice the TTL).
  await writeRows(store, demoRows(registry, { eventTimeMs: now - 5_000, counts: { user: 20, item: 20, merchant: 20 } }));
  const older = (ageMs: number, entity: string) => [...demoRows(registry, { eventTimeMs: now - ageMs, counts: { user: 25, item: 25, merchant: 25 } })]
    .filter((r) => r.view.entityName === entity && Number(r.row.entityId) > 20 && !(entity === 'user' && r.view.viewName !== 'clickStats'));
  await writeRows(store, [...older(90_000, 'user'), ...older(7_140_000, 'item'), ...older(7_140_000, 'merchant')]);
  await writeRows(store, demoRows(registry, { eventTimeMs: now - 5_000, counts: { user: 25 }, views: (v) => v.entityName === 'user' && v.viewName === 'profile' }));
  // Integral floats, which JSON.stringify would write as integers.
  await store.write(clickStats, [{ entityId: 'integral', values: { clickRate: 1, clicks: 2, impressions: 2 }, eventTimeMs: now - 1_000 }]);
  await store.write(view('profile'), [{ entityId: 'integral', values: { sessionLength: 10, isPremium: false, country: 'FR', embedding: [1, -2, 0.5, 1e21] }, eventTimeMs: now - 1_000 }]);
  await store.write(view('riskProfile'), [{ entityId: '1', values: { riskScore: 0.75, flagged: true }, eventTimeMs: now - 1_000 }]);
}

/** The view versions a request names, as `view:vN` (the metrics' label). */
function viewsOf(body: Record<string, unknown>): string[] {
  const versions = typeof body.feature_service === 'string'
    ? registry.featureServices.find((s) => s.name === body.feature_service)!.features.map((f) => f.version)
    : (body.features as string[]).map((ref) => (resolveRef(registry, ref) as ResolvedRef[])[0]!.version);
  return [...new Set(versions.map((v) => `${v.viewName}:v${v.version}`))];
}

const ranking = { user_id: [...Array(19).fill('1'), '21'], item_id: [...Array.from({ length: 19 }, (_, i) => String(i + 1)), '404'] };

/** Requests both reads must answer alike: fresh, stale, missing, repeated ids, versions, services, multi-entity rows. */
const cases: Record<string, unknown>[] = [
  { entities: { user_id: ['1'] }, features: ['clickStats:clickRate'] },
  { entities: { user_id: ['1', '21', '404', '1', '22', 'integral'] }, features: ['clickStats:clickRate', 'clickStats:clicks', 'profile:embedding', 'profile:country'] },
  { entities: { user_id: [1, 2, 21] }, features: ['clickStats@v1:clickRate', 'clickStats:clickRate', 'clickStats@latest:impressions'], full_feature_names: true, include_feature_view_version_metadata: true },
  { entities: ranking, feature_service: 'ranking' },
  { entities: ranking, feature_service: 'ranking', full_feature_names: true },
  { entities: { user_id: ['1', '22', '404'], merchant_id: ['2', '23', '404'] }, feature_service: 'fraud' },
  { entities: { item_id: ['3', '24'], user_id: ['3', '3'] }, features: ['profile:isPremium', 'itemStats:price', 'itemStats:category'] },
  // A join key no requested feature needs is answered back as Feast does.
  { entities: { user_id: ['5'], merchant_id: ['6'] }, features: ['clickStats:clicks'] },
  { entities: { user_id: [] }, features: ['clickStats:clickRate'] },
];

/** Posts a Feast request and answers its Arrow stream's bytes (asserting the type). */
async function postArrow(url: string, body: unknown): Promise<Uint8Array> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/vnd.apache.arrow.stream' }, body: JSON.stringify(body) });
  assert.equal(response.status, 200, await response.clone().text());
  assert.equal(response.headers.get('content-type'), 'application/vnd.apache.arrow.stream');
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Where the Arrow answer of a Feast request (full feature names) disagrees with its Feast JSON
 * answer: per feature column and entity row, the value (PRESENT), or null with `stale` set and the
 * same event time (OUTSIDE_MAX_AGE), or null (NOT_FOUND, NULL_VALUE, INVALID); the failed ids
 * named by the errors in the stream's metadata as in the JSON's `errors`.
 */
function arrowDisagreements(bytes: Uint8Array, json: FeastBody, request: { entities: Record<string, unknown[]> }): string[] {
  const table = decodeArrow(bytes);
  const out: string[] = [];
  const rowsOf = new Map<string, number[]>();
  const field = table.getChild('field')!;
  for (let i = 0; i < table.numRows; i++) {
    const key = String(field.get(i));
    if (!rowsOf.has(key)) rowsOf.set(key, []);
    rowsOf.get(key)!.push(i);
  }
  const keys = Object.keys(request.entities);
  json.metadata.feature_names.forEach((name, c) => {
    if (keys.includes(name)) return;
    const [viewPart, feature] = name.split('__') as [string, string];
    const viewName = viewPart.split('@')[0]!;
    const key = registry.entities.find((e) => e.views.some((v) => v.name === viewName))!.feastJoinKey;
    const rows = rowsOf.get(key) ?? [];
    const values = table.getChild(`${viewPart}.${feature}`);
    const stale = table.getChild(`${viewPart}.stale`);
    const times = table.getChild(`${viewPart}.eventTime`);
    if (!values || !stale || !times) return void out.push(`no Arrow columns for ${name}`);
    const result = json.results[c]!;
    result.statuses.forEach((status, row) => {
      const at = rows[row];
      if (at === undefined) return void out.push(`${name} row ${row}: no Arrow row`);
      const got = values.get(at) as unknown;
      const plain = got !== null && typeof got === 'object' && 'toArray' in (got as object) ? Array.from((got as { toArray(): ArrayLike<number> }).toArray()) : typeof got === 'bigint' ? Number(got) : got;
      const where = `${name} row ${row} (${status})`;
      if (status === 'PRESENT') {
        if (JSON.stringify(plain) !== JSON.stringify(result.values[row])) out.push(`${where}: Arrow ${JSON.stringify(plain)}, JSON ${JSON.stringify(result.values[row])}`);
        if (stale.get(at) !== false) out.push(`${where}: stale ${stale.get(at)}`);
      } else if (plain !== null) out.push(`${where}: Arrow has ${JSON.stringify(plain)}`);
      if (status === 'OUTSIDE_MAX_AGE' && stale.get(at) !== true) out.push(`${where}: stale ${stale.get(at)}`);
      if (status === 'PRESENT' || status === 'OUTSIDE_MAX_AGE') {
        const ms = Number(times.get(at));
        if (ms !== Date.parse(result.event_timestamps[row]!)) out.push(`${where}: eventTime ${ms}, JSON ${result.event_timestamps[row]}`);
      }
    });
  });
  const arrowErrors = JSON.parse(table.schema.metadata.get('errors') ?? '[]') as { extensions: { code: string; ids?: string[] }; path?: unknown[] }[];
  const jsonFailed = (json.errors ?? []).length > 0;
  if (jsonFailed !== arrowErrors.length > 0) out.push(`errors: JSON ${JSON.stringify(json.errors)}, Arrow ${JSON.stringify(arrowErrors)}`);
  return out;
}

describe('POST /get-online-features on two Redis shards', () => {
  const shards: RedisProcess[] = [];
  let store: CodecStore;
  let fast: RunningGateway;
  let generic: RunningGateway;
  let feast: (g: RunningGateway) => string;

  before(async () => {
    for (let i = 0; i < 2; i++) shards.push(await RedisProcess.start());
    store = createStore({ kind: 'redis', urls: shards.map((s) => s.url), commandTimeoutMs: 2000 });
    await eventually(() => store.ping(), 15_000, 100);
    await seed(store, Date.now());
    fast = await startTestGateway(store, { FAST_PATH: 'true', MAX_BATCH_IDS: '50' });
    generic = await startTestGateway(store, { FAST_PATH: 'false', MAX_BATCH_IDS: '50' });
    feast = (g) => `${baseUrl(g.url)}/get-online-features`;
  });

  after(async () => {
    await fast?.close();
    await generic?.close();
    await store?.close();
    for (const s of shards) await s.destroy();
  });

  /** How often the compiled plan answered an operation (`feature_gateway_fast_path_requests_total`). */
  async function fastPathServed(operation: string): Promise<number> {
    // Any label order, the JSON format's count (the Arrow door counts under format="arrow").
    const line = (await get(`${baseUrl(fast.url)}/metrics`)).text.split('\n').find((l) => l.startsWith('feature_gateway_fast_path_requests_total{') &&
      l.includes(`operation="${operation}"`) && l.includes('outcome="served"') && !l.includes('format="arrow"'));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  }

  /** `feature_store_batch_size_count` per view: reads issued (the process's registry, shared by both gateways). */
  async function readsPerView(): Promise<Map<string, number>> {
    const text = (await get(`${baseUrl(fast.url)}/metrics`)).text;
    const counts = new Map<string, number>();
    for (const line of text.split('\n')) {
      const m = /^feature_store_batch_size_count\{view="([^"]+)"\} (\d+)/.exec(line);
      if (m) counts.set(m[1]!, Number(m[2]));
    }
    return counts;
  }
  const delta = (before: Map<string, number>, after: Map<string, number>): Record<string, number> =>
    Object.fromEntries([...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)]).filter(([, d]) => d !== 0));

  test('the direct read and the federated path answer every request byte for byte, one store read per view version', async () => {
    for (const body of cases) {
      const label = JSON.stringify(body).slice(0, 160);
      const before = await readsPerView();
      const a = await post(feast(fast), body);
      const middle = await readsPerView();
      const b = await post(feast(generic), body);
      const after = await readsPerView();
      assert.equal(a.status, 200, `${label}: ${a.text}`);
      assert.equal(b.status, a.status, label);
      assert.equal(b.headers.get('content-type'), a.headers.get('content-type'));
      assert.equal(b.text, a.text, label);
      // One read per view version the request names; none without ids, as on GraphQL.
      const rows = Object.values(body.entities as Record<string, unknown[]>)[0]!.length;
      const expected = rows === 0 ? {} : Object.fromEntries(viewsOf(body).map((v) => [v, 1]));
      assert.deepEqual(delta(before, middle), expected, `${label}: the direct read`);
      assert.deepEqual(delta(middle, after), expected, `${label}: the federated path`);
    }
  });

  test('the distributed shape (subgraph processes, no store in the gateway) answers every request with the same bytes', async () => {
    const { processes, subgraphUrls } = await spawnSubgraphs({ REDIS_SHARD_URLS: shards.map((s) => s.url).join(','), LOG_LEVEL: 'warn' });
    const distributed = await startTestGateway(undefined, { SUBGRAPH_URLS: subgraphUrls, MAX_BATCH_IDS: '50' });
    try {
      for (const body of cases) {
        const [a, b] = [await post(feast(fast), body), await post(feast(distributed), body)];
        assert.equal(b.status, 200, b.text);
        assert.equal(b.text, a.text, JSON.stringify(body).slice(0, 160));
      }
    } finally {
      await distributed.close();
      for (const p of processes) await p.stop();
    }
  });

  test('Accept: application/vnd.apache.arrow.stream: the Arrow stream holds what the JSON answer holds, value for value', async () => {
    for (const c of cases) {
      const request = { ...c, full_feature_names: true } as unknown as { entities: Record<string, unknown[]> };
      const json = (await post(feast(fast), request)).json as FeastBody;
      const bytes = await postArrow(feast(fast), request);
      assert.deepEqual(arrowDisagreements(bytes, json, request), [], JSON.stringify(request));
      // The federated read gives the same stream.
      assert.deepEqual(await postArrow(feast(generic), request), bytes, JSON.stringify(request));
    }
    const refused = await post(feast(fast), cases[0], { accept: 'text/csv' });
    assert.equal(refused.status, 406);
    assert.match(refused.text, /application\/json, application\/vnd\.apache\.arrow\.stream/);
  });

  test('statuses, values and event times: fresh PRESENT, stale OUTSIDE_MAX_AGE with its time and no value, missing NOT_FOUND', async () => {
    const reply = await post(feast(fast), cases[1]);
    const cols = columns(reply.json);
    assert.deepEqual(reply.json.metadata.feature_names, ['user_id', 'clickRate', 'clicks', 'embedding', 'country']);
    assert.deepEqual(cols.get('user_id')!.values, ['1', '21', '404', '1', '22', 'integral']);
    assert.deepEqual(cols.get('clickRate')!.statuses, ['PRESENT', 'OUTSIDE_MAX_AGE', 'NOT_FOUND', 'PRESENT', 'OUTSIDE_MAX_AGE', 'PRESENT']);
    assert.deepEqual(cols.get('clickRate')!.values.map((v) => v === null), [false, true, true, false, true, false]);
    assert.equal(cols.get('clickRate')!.event_timestamps[2], '1970-01-01T00:00:00Z');
    assert.match(cols.get('clickRate')!.event_timestamps[1]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$/);
    // profile is fresh for the users whose clickStats is stale; missing for 404.
    assert.deepEqual(cols.get('country')!.statuses, ['PRESENT', 'PRESENT', 'NOT_FOUND', 'PRESENT', 'PRESENT', 'PRESENT']);
    assert.equal(cols.get('country')!.values[5], 'FR');
    // Floats keep their decimal point, lists element by element; Ints stay integers.
    assert.match(reply.text, /"values":\[[^\]]*,1\.0\],"statuses"/);
    assert.ok(reply.text.includes('[1.0,-2.0,0.5,1e+21]'), reply.text);
    assert.match(reply.text, /"values":\[\d+,null,null,\d+,null,2\]/);
  });

  test('a feature service answers what its GraphQL operation FeatureService_ranking answers, value by value', async () => {
    const op = withFeatureServices(readManifest(), registry).operations.find((o) => o.name === 'FeatureService_ranking')!;
    const byId = { extensions: { persistedQuery: { version: 1, sha256Hash: op.id } }, variables: { user_id: ['1', '21'], item_id: ranking.item_id } };
    const gql = await post(generic.url, byId);
    assert.equal(gql.status, 200, gql.text);
    // The generated operation is a manifest operation like the others: compiled, and the compiled plan's bytes are the generic path's.
    // Read before the request is sent: a scrape still in flight when it is served would count it already.
    const servedBefore = await fastPathServed('FeatureService_ranking');
    assert.equal((await post(fast.url, byId)).text, gql.text);
    assert.equal(await fastPathServed('FeatureService_ranking'), servedBefore + 1);
    const reply = await post(feast(fast), { entities: ranking, feature_service: 'ranking', full_feature_names: true });
    const cols = columns(reply.json);
    const users = new Map((gql.json.data.users as any[]).map((e, i) => [e?.id ?? `missing:${i}`, e]));
    const items = new Map(ranking.item_id.map((id, i) => [id, gql.json.data.items[i]]));
    let checked = 0;
    for (const name of reply.json.metadata.feature_names as string[]) {
      const [viewName, feature] = name.split('__');
      if (!feature) continue;
      const entityKey = findView(registry, viewName!)!.entityName === 'item' ? 'item_id' : 'user_id';
      const ids = (ranking as Record<string, string[]>)[entityKey]!;
      ids.forEach((id, row) => {
        const entity = entityKey === 'item_id' ? items.get(id) : users.get(id);
        const graphqlView = entity?.[viewName!] ?? null;
        const col = cols.get(name)!;
        const label = `${name} of ${id}`;
        if (graphqlView === null) {
          assert.equal(col.statuses[row], 'NOT_FOUND', label);
        } else if (graphqlView.stale) {
          assert.equal(col.statuses[row], 'OUTSIDE_MAX_AGE', label);
          assert.equal(col.values[row], null, label);
          assert.equal(Date.parse(col.event_timestamps[row]!), Date.parse(graphqlView.eventTime), label);
        } else {
          assert.equal(col.statuses[row], 'PRESENT', label);
          assert.deepEqual(col.values[row], graphqlView[feature], label);
          assert.equal(Date.parse(col.event_timestamps[row]!), Date.parse(graphqlView.eventTime), label);
        }
        checked++;
      });
    }
    assert.equal(checked, 10 * 20);
    assert.ok(cols.get('itemStats__ctr')!.statuses.includes('NOT_FOUND') && cols.get('clickStats__clickRate')!.statuses.includes('OUTSIDE_MAX_AGE'));
  });

  test('metrics: request duration by feast:<service> and feast:(features); refusals counted by code', async () => {
    const metric = async (prefix: string): Promise<number> => {
      const line = (await get(`${baseUrl(fast.url)}/metrics`)).text.split('\n').find((l) => l.startsWith(prefix));
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
    };
    const service = 'feature_gateway_request_duration_seconds_count{operation="feast:fraud"}';
    const list = 'feature_gateway_request_duration_seconds_count{operation="feast:(features)"}';
    const notFound = 'feature_gateway_rejected_requests_total{code="NOT_FOUND"}';
    const [s0, l0, n0] = [await metric(service), await metric(list), await metric(notFound)];
    await post(feast(fast), cases[5]);
    await post(feast(fast), cases[0]);
    await post(feast(fast), { entities: { user_id: ['1'] }, features: ['nope:x'] });
    assert.equal(await metric(service), s0 + 1);
    assert.equal(await metric(list), l0 + 1);
    assert.equal(await metric(notFound), n0 + 1);
  });

  test('a hung shard (SIGSTOP) fails only its values, within the deadline: INVALID with the error; the direct and federated reads agree', async () => {
    // A store and gateways of their own: a deadline far below the store timeout, so it is the deadline that answers.
    const slow = createStore({ kind: 'redis', urls: shards.map((s) => s.url), commandTimeoutMs: 10_000, breaker: { errorPercent: 50, minCalls: 1000, resetMs: 1000 } });
    const env = { REQUEST_DEADLINE_MS: '600', MAX_BATCH_IDS: '50' };
    const gateways = [await startTestGateway(slow, { ...env, FAST_PATH: 'true' }), await startTestGateway(slow, { ...env, FAST_PATH: 'false' })];
    const router = slow.backend as RedisBackend;
    const victim = shards[1]!;
    const hung = victim.address;
    const users = Array.from({ length: 20 }, (_, i) => String(i + 1));
    const onHung = users.map((id) => router.shardOf(recordKey(clickStats, id)) === hung);
    assert.ok(onHung.some(Boolean) && !onHung.every(Boolean), 'the users spread over both shards');
    try {
      await eventually(() => slow.ping(), 15_000, 100);
      process.kill(victim.pid!, 'SIGSTOP');
      const answers: FeastBody[] = [];
      for (const g of gateways) {
        const started = performance.now();
        const reply = await post(`${baseUrl(g.url)}/get-online-features`, { entities: { user_id: users }, features: ['clickStats:clickRate'] });
        const ms = performance.now() - started;
        assert.equal(reply.status, 200, reply.text);
        assert.ok(ms < 600 + 2000, `answered at the deadline, not the store timeout: ${Math.round(ms)} ms`);
        const col = columns(reply.json).get('clickRate')!;
        users.forEach((id, row) => {
          assert.equal(col.statuses[row], onHung[row] ? 'INVALID' : 'PRESENT', `user ${id}`);
          if (onHung[row]) assert.equal(col.values[row], null);
        });
        const errors = reply.json.errors as FeastBody['errors'];
        assert.ok(errors && errors.length > 0, reply.text);
        assert.deepEqual(errors.flatMap((e) => e.extensions.ids).sort(), users.filter((_, row) => onHung[row]).sort());
        for (const e of errors) {
          assert.equal(e.extensions.code, 'DEADLINE_EXCEEDED', e.message);
          assert.equal(e.extensions.shard, hung);
          assert.equal(e.extensions.view, 'clickStats:v2');
        }
        answers.push(reply.json);
        // The Arrow answer of the same partial read: the same values, nulls where the shard hung, the errors in its metadata.
        const request = { entities: { user_id: users }, features: ['clickStats:clickRate'], full_feature_names: true };
        const full = await post(`${baseUrl(g.url)}/get-online-features`, request);
        const bytes = await postArrow(`${baseUrl(g.url)}/get-online-features`, request);
        assert.deepEqual(arrowDisagreements(bytes, full.json as FeastBody, request), []);
        const metadataErrors = JSON.parse(decodeArrow(bytes).schema.metadata.get('errors') ?? '[]') as { extensions: { code: string } }[];
        assert.ok(metadataErrors.length > 0 && metadataErrors.every((e) => e.extensions.code === 'DEADLINE_EXCEEDED'), JSON.stringify(metadataErrors));
      }
      assert.deepEqual(answers[1], answers[0], 'the same partial answer, errors included, on both reads');
    } finally {
      process.kill(victim.pid!, 'SIGCONT');
      for (const g of gateways) await g.close();
      await slow.close();
    }
  });
});

describe('POST /get-online-features: credentials, roles, limits, bad input', () => {
  let dir: string;
  let creds: TestCredentials;
  let store: CodecStore;
  let gateway: RunningGateway;
  let url: string;
  const body = { entities: { user_id: ['1'] }, features: ['clickStats:clickRate'] };

  before(async () => {
    dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-feast-'));
    creds = await testCredentials(dir);
    store = createStore({ kind: 'embedded' });
    await seed(store, Date.now());
    gateway = await startTestGateway(store, { ...creds.env, MAX_BATCH_IDS: '50', MAX_QUERY_COST: '200', MAX_BODY_BYTES: '4096' });
    url = `${baseUrl(gateway.url)}/get-online-features`;
  });

  after(async () => {
    await gateway?.close();
    await store?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A typed FeastError body: the JSON string holding {module, class, message}. */
  const typed = (reply: Reply): { module: string; class: string; message: string } => {
    assert.equal(typeof reply.json, 'string', reply.text);
    return JSON.parse(reply.json);
  };

  test('no credentials: 401 in FastAPI\'s form with the code, and a WWW-Authenticate challenge', async () => {
    const reply = await post(url, body);
    assert.equal(reply.status, 401);
    assert.equal(reply.json.code, 'UNAUTHENTICATED');
    assert.match(reply.json.detail, /credentials/i);
    assert.match(reply.headers.get('www-authenticate') ?? '', /Bearer/);
  });

  test('an API key or a Bearer JWT (what Feast\'s client sends) with a reading role: 200', async () => {
    assert.equal((await post(url, body, { 'x-api-key': creds.keys.inference })).status, 200);
    assert.equal((await post(url, body, { 'x-api-key': creds.keys.analyst })).status, 200);
    const jwt = await creds.hs256({ sub: 'ranking-svc', roles: ['inference'] });
    const reply = await post(url, body, { authorization: `Bearer ${jwt}` });
    assert.equal(reply.status, 200, reply.text);
    assert.equal(columns(reply.json).get('clickRate')!.statuses[0], 'PRESENT');
    const expired = await creds.hs256({ sub: 'ranking-svc', roles: ['inference'] }, { expiresIn: -10 });
    assert.equal((await post(url, body, { authorization: `Bearer ${expired}` })).status, 401);
  });

  test('a role that may not read (dashboard): 403 with Feast\'s FeastPermissionError', async () => {
    const reply = await post(url, body, { 'x-api-key': creds.keys.dashboard });
    assert.equal(reply.status, 403);
    const e = typed(reply);
    assert.equal(e.module, 'feast.errors');
    assert.equal(e.class, 'FeastPermissionError');
    assert.match(e.message, /^Permission error:\nNot allowed to run persisted operations: principal "dashboard-service" has role\(s\) dashboard/);
  });

  test('per-view read roles: riskProfile refuses inference (FeastPermissionError naming the view), answers admin', async () => {
    const risky = { entities: { user_id: ['1'] }, features: ['clickStats:clickRate', 'riskProfile:riskScore'] };
    const refused = await post(url, risky, { 'x-api-key': creds.keys.inference });
    assert.equal(refused.status, 403);
    assert.equal(typed(refused).message, 'Permission error:\nNot allowed to read feature view riskProfile: it is readable by admin only');
    const admin = await post(url, risky, { 'x-api-key': creds.keys.admin });
    assert.equal(admin.status, 200, admin.text);
    assert.deepEqual(columns(admin.json).get('riskScore')!.values, [0.75]);
  });

  test('safelist mode: the door and a feature service\'s persisted operation stay open to inference', async () => {
    const safelisted = await startTestGateway(store, { ...creds.env, SAFELIST: 'true' });
    try {
      const headers = { 'x-api-key': creds.keys.inference };
      const op = withFeatureServices(readManifest(), registry).operations.find((o) => o.name === 'FeatureService_fraud')!;
      const gql = await post(safelisted.url, { extensions: { persistedQuery: { version: 1, sha256Hash: op.id } }, variables: { user_id: ['1'], merchant_id: ['1'] } }, headers);
      assert.equal(gql.status, 200, gql.text);
      assert.equal(gql.json.data.merchants[0].id, '1');
      assert.equal((await post(`${baseUrl(safelisted.url)}/get-online-features`, body, headers)).status, 200);
    } finally {
      await safelisted.close();
    }
  });

  test('the principal\'s rate limit: 429 with Retry-After', async () => {
    let reply: Reply | undefined;
    for (let i = 0; i < 5 && reply?.status !== 429; i++) reply = await post(url, body, { 'x-api-key': creds.keys.limited });
    assert.equal(reply!.status, 429);
    assert.equal(reply!.json.code, 'RATE_LIMITED');
    assert.ok(Number(reply!.headers.get('retry-after')) >= 1);
  });

  const key = () => ({ 'x-api-key': creds.keys.inference });

  test('limits: MAX_BATCH_IDS over entity rows, MAX_QUERY_COST as the equivalent query, MAX_BODY_BYTES', async () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => String(i));
    let reply = await post(url, { entities: { user_id: ids(51) }, features: ['clickStats:clickRate'] }, key());
    assert.equal(reply.status, 400);
    assert.deepEqual(reply.json, { detail: 'entities hold 51 items; at most 50 are allowed per batch (MAX_BATCH_IDS)', code: 'BATCH_TOO_LARGE' });
    // 50 rows × (3 features + eventTime + stale) = 250 > 200.
    reply = await post(url, { entities: { user_id: ids(50) }, features: ['clickStats:clickRate', 'clickStats:clicks', 'clickStats:impressions'] }, key());
    assert.equal(reply.status, 400);
    assert.equal(reply.json.code, 'QUERY_TOO_COSTLY');
    assert.match(reply.json.detail, /Query cost 250 .* exceeds the limit of 200 \(MAX_QUERY_COST\)/);
    reply = await post(url, { entities: { user_id: ids(800) }, features: ['clickStats:clickRate'] }, key());
    assert.equal(reply.status, 413);
    assert.equal(reply.json.code, 'BODY_TOO_LARGE');
  });

  test('bad input gets Feast\'s errors and a clear message, and loses nothing: a valid request still answers', async () => {
    const cases: [unknown, number, (reply: Reply) => void][] = [
      ['{"entities": {"user_id": ["1"]', 422, (r) => assert.equal(r.json.detail[0].type, 'json_invalid')],
      ['', 422, (r) => assert.deepEqual(r.json.detail[0].loc, ['body'])],
      [{ entities: { user_id: '1' }, features: ['clickStats:clickRate'] }, 422, (r) => assert.equal(r.json.detail[0].type, 'list_type')],
      [{ entities: { user_id: ['1', '2'], item_id: ['3'] }, features: ['clickStats:clickRate'] }, 422, (r) => assert.match(r.json.detail[0].msg, /same columns/)],
      [{ entities: { account_id: ['1'] }, features: ['clickStats:clickRate'] }, 422, (r) => assert.match(r.json.detail[0].msg, /unknown join key "account_id"/)],
      [{ entities: { user_id: ['1'] }, features: [] }, 422, (r) => assert.match(r.json.detail[0].msg, /No features specified/)],
      [{ entities: { user_id: ['1'] }, features: ['clickStats:clickRate'], feature_service: 'ranking' }, 422, (r) => assert.match(r.json.detail[0].msg, /not both/)],
      [{ entities: { user_id: [{}] }, features: ['clickStats:clickRate'] }, 422, (r) => assert.deepEqual(r.json.detail[0].loc, ['body', 'entities', 'user_id', 0])],
      [{ entities: { user_id: ['1'] }, features: ['clickz:clickRate'] }, 404, (r) => assert.equal(typed(r).class, 'FeatureViewNotFoundException')],
      [{ entities: { user_id: ['1'] }, feature_service: 'nope' }, 404, (r) => assert.equal(typed(r).class, 'FeatureServiceNotFoundException')],
      [{ entities: { user_id: ['1'] }, features: ['clickStats@v3:clickRate'] }, 404, (r) => assert.equal(typed(r).class, 'FeatureViewVersionNotFound')],
      [{ entities: { user_id: ['1'] }, features: ['clickStats:clickRate', 'clickStats@v1:clickRate'] }, 422, (r) => assert.equal(typed(r).class, 'FeatureNameCollisionError')],
    ];
    for (const [payload, status, check] of cases) {
      const reply = await post(url, payload as object, key());
      assert.equal(reply.status, status, `${JSON.stringify(payload)}: ${reply.text}`);
      assert.equal(reply.headers.get('content-type'), 'application/json');
      assert.doesNotMatch(reply.text, /at .*\.js:\d+/, 'no stack trace');
      check(reply);
    }
    const wrongType = await fetch(url, { method: 'POST', headers: { 'content-type': 'text/plain', ...key() }, body: JSON.stringify(body) });
    assert.equal(wrongType.status, 415);
    const getReply = await fetch(url, { headers: key() });
    assert.equal(getReply.status, 405);
    assert.equal(getReply.headers.get('allow'), 'POST');
    const ok = await post(url, body, key());
    assert.equal(ok.status, 200);
    assert.equal(columns(ok.json).get('clickRate')!.statuses[0], 'PRESENT');
  });
});
