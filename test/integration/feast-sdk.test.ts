import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { fromRoot } from '../../runtime/paths.js';
import type { ViewVersion } from '../../schema/types.js';
import { activeVersionOf, findView } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { feastTime } from '../../serving/feast/encode.js';
import { testCredentials, type TestCredentials } from '../support/auth.js';
import { NodeProcess, registry, waitUntilReady } from '../support/gateway.js';
import { post } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

/**
 * Feast's own Python SDK against the gateway (README, "Coming from Feast"):
 * feast[redis] pinned from PyPI in a cached virtual environment
 * (scripts/ensure-feast.sh, with pyarrow and pandas), a FeatureStore whose
 * online store is `{type: remote, path: <gateway>}` with an OIDC token, and
 * a real gateway process on a real redis-server holding values written
 * through the store: fresh, stale and missing ones. The script
 * (test/integration/feast/feast_client_check.py) reports what the SDK made of
 * each answer; this test checks it against the stored values.
 */
const run = promisify(execFile);
const python3 = spawnSync('python3', ['--version']);
const skip = python3.error || python3.status !== 0 ? 'skipped: no python3 on this machine (the Feast SDK test needs Python 3.10+ with venv)' : undefined;

const version = (name: string, n?: number): ViewVersion => {
  const v = findView(registry, name)!;
  return n === undefined ? activeVersionOf(v) : v.versions[n - 1]!;
};

const title = 'Feast\'s Python SDK (RemoteOnlineStore) against /get-online-features';
// Without Python one test is reported skipped, saying why (a skipped suite would count no test at all).
if (skip) test(title, { skip }, () => {});
else describe(title, () => {
  let redis: RedisProcess;
  let store: CodecStore;
  let creds: TestCredentials;
  let gateway: NodeProcess;
  let base: string;
  let dir: string;
  let now: number;
  let report: any;
  let tokens: Record<string, string>;

  before(async () => {
    dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-feast-sdk-'));
    // The venv first: cached after the first run (~2 min to install), then instant.
    const ensured = await run('bash', [fromRoot('scripts', 'ensure-feast.sh')], { maxBuffer: 1 << 20, timeout: 15 * 60_000 });
    const python = ensured.stdout.trim().split('\n').pop()!;
    redis = await RedisProcess.start();
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
    await eventually(() => store.ping(), 15_000, 100);
    now = Date.now() - 1_234;
    await store.write(version('clickStats'), [
      { entityId: '1', values: { clickRate: 1, clicks: 3, impressions: 3 }, eventTimeMs: now },
      { entityId: '2', values: { clickRate: 0.25, clicks: 1, impressions: 4 }, eventTimeMs: now - 1_000 },
      { entityId: '3', values: { clickRate: 0, clicks: 0, impressions: 7 }, eventTimeMs: now },
      // Older than clickStats' 60 s TTL: stale, kept for another TTL.
      { entityId: '21', values: { clickRate: 0.9, clicks: 9, impressions: 10 }, eventTimeMs: now - 90_000 },
    ]);
    await store.write(version('clickStats', 1), [{ entityId: '1', values: { clickRate: 0.5 }, eventTimeMs: now }]);
    await store.write(version('profile'), [
      { entityId: '1', values: { sessionLength: 310, isPremium: true, country: 'DE', embedding: [1, -0.5, 2] }, eventTimeMs: now },
      { entityId: '2', values: { sessionLength: 45, isPremium: false, country: 'FR', embedding: [0.7] }, eventTimeMs: now },
      { entityId: '21', values: { sessionLength: 5, isPremium: false, country: 'PL', embedding: [0.1, 0.2] }, eventTimeMs: now },
    ]);
    await store.write(version('itemStats'), [
      { entityId: '7', values: { ctr: 0.125, price: 10, category: 'books' }, eventTimeMs: now },
      // Older than itemStats' 1 h TTL.
      { entityId: '8', values: { ctr: 0.5, price: 3.5, category: 'toys' }, eventTimeMs: now - 7_140_000 },
    ]);
    await store.write(version('riskProfile'), [{ entityId: '1', values: { riskScore: 0.75, flagged: true }, eventTimeMs: now }]);

    creds = await testCredentials(path.join(dir, 'auth'));
    tokens = {
      inference: await creds.hs256({ sub: 'ranking-service', roles: ['inference'] }),
      dashboard: await creds.hs256({ sub: 'grafana', roles: ['dashboard'] }),
      admin: await creds.hs256({ sub: 'fraud-analyst', roles: ['admin'] }),
    };
    const port = await freePort();
    gateway = NodeProcess.spawn('gateway/main.js', [], {
      PORT: String(port), REDIS_URL: redis.url, DEMO_SEED: 'false', DEMO_WRITER: 'false', LOG_LEVEL: 'warn', ...creds.env,
    });
    base = `http://127.0.0.1:${port}`;
    await waitUntilReady(`${base}/readyz`, gateway);
    const args = [fromRoot('test', 'integration', 'feast', 'feast_client_check.py'), '--gateway', base, '--dir', path.join(dir, 'repos')];
    let stdout: string;
    try {
      // FEAST_USAGE=False: Feast's usage telemetry stays off (nothing leaves the machine).
      ({ stdout } = await run(python, args, { maxBuffer: 16 << 20, timeout: 180_000, env: { ...process.env, FEAST_USAGE: 'False', FEAST_CHECK_TOKENS: JSON.stringify(tokens) } }));
    } catch (error) {
      const e = error as { stderr?: string; message: string };
      throw new Error(`feast_client_check.py failed: ${e.message}\n${e.stderr ?? ''}\ngateway output:\n${gateway.output}`);
    }
    report = JSON.parse(stdout);
  });

  after(async () => {
    await gateway?.stop();
    await store?.close();
    await redis?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the pinned Feast release ran', () => {
    assert.equal(report.feast_version, '0.67.0');
  });

  test('single entity: to_dict() equals the stored values, typed as the registry types them', () => {
    const single = report.single;
    assert.deepEqual(single.dict, { user_id: ['1'], clickRate: [1.0], clicks: [3], embedding: [[1.0, -0.5, 2.0]], country: ['DE'], isPremium: [true] });
    // The client infers types from the JSON tokens: the integral Float 1.0 stays a double, the Int an int64.
    assert.deepEqual(single.kinds, {
      user_id: ['string_val'], clickRate: ['double_val'], clicks: ['int64_val'], embedding: ['double_list_val'], country: ['string_val'], isPremium: ['bool_val'],
    });
    assert.equal(single.arrow.types.clickRate, 'double');
    assert.equal(single.arrow.types.clicks, 'int64');
    assert.equal(single.arrow.types.embedding, 'list<item: double>');
    assert.ok(Object.values(single.statuses).every((s) => (s as string[]).every((x) => x === 'PRESENT')));
  });

  test('a batch: fresh values PRESENT, stale ones OUTSIDE_MAX_AGE without their value, missing ones NOT_FOUND', () => {
    const { dict, statuses } = report.batch;
    assert.deepEqual(dict.user_id, ['1', '2', '3', '21', '404']);
    assert.deepEqual(dict.clickRate, [1.0, 0.25, 0.0, null, null]);
    assert.deepEqual(dict.clicks, [3, 1, 0, null, null]);
    assert.deepEqual(statuses.clickRate, ['PRESENT', 'PRESENT', 'PRESENT', 'OUTSIDE_MAX_AGE', 'NOT_FOUND']);
    assert.deepEqual(dict.embedding, [[1.0, -0.5, 2.0], [0.7], null, [0.1, 0.2], null]);
    assert.deepEqual(statuses.country, ['PRESENT', 'PRESENT', 'NOT_FOUND', 'PRESENT', 'NOT_FOUND']);
    assert.equal(report.batch.arrow.rows, 5);
    assert.equal(report.batch.arrow.types.clickRate, 'double');
  });

  test('integer entity ids are read as the ids they spell', () => {
    assert.deepEqual(report.integer_ids.dict, { user_id: ['2', '3'], clicks: [1, 0] });
  });

  test('multi-entity rows (user_id and item_id): each feature read for its own entity, full feature names', () => {
    const { dict, statuses } = report.multi_entity;
    assert.deepEqual(Object.keys(dict), ['user_id', 'item_id', 'clickStats__clickRate', 'profile__embedding', 'itemStats__ctr', 'itemStats__price', 'itemStats__category']);
    assert.deepEqual(dict.item_id, ['7', '8', '404']);
    assert.deepEqual(dict.clickStats__clickRate, [1.0, 0.25, 0.0]);
    assert.deepEqual(dict.itemStats__ctr, [0.125, null, null]);
    assert.deepEqual(dict.itemStats__price, [10.0, null, null]);
    assert.deepEqual(statuses.itemStats__category, ['PRESENT', 'OUTSIDE_MAX_AGE', 'NOT_FOUND']);
    assert.deepEqual(report.multi_entity.kinds.itemStats__price, ['double_val', null, null]);
  });

  test('a feature service by name: the registry\'s ranking bundle', () => {
    const { dict, statuses } = report.service;
    assert.deepEqual(Object.keys(dict), ['user_id', 'item_id', 'clickRate', 'clicks', 'impressions', 'sessionLength', 'isPremium', 'country', 'embedding', 'ctr', 'price', 'category']);
    assert.deepEqual(dict.clicks, [3, null]);
    assert.deepEqual(statuses.clicks, ['PRESENT', 'OUTSIDE_MAX_AGE']);
    assert.deepEqual(dict.country, ['DE', 'PL']);
    assert.deepEqual(dict.category, ['books', null]);
  });

  test('a pinned version (clickStats@v1) beside the active one', () => {
    assert.deepEqual(report.pinned_version.dict, { user_id: ['1'], 'clickStats@v1__clickRate': [0.5], clickStats__clickRate: [1.0] });
  });

  test('an unknown feature view or service raises Feast\'s own exception classes', () => {
    assert.equal(report.unknown_view.raised, true);
    assert.equal(report.unknown_view.module, 'feast.errors');
    assert.equal(report.unknown_view.class, 'FeatureViewNotFoundException');
    assert.ok(report.unknown_view.bases.includes('FeastObjectNotFoundException'));
    assert.equal(report.unknown_view.message, 'Feature view clickz does not exist');
    assert.equal(report.unknown_service.class, 'FeatureServiceNotFoundException');
    assert.equal(report.collision.class, 'FeatureNameCollisionError');
  });

  test('a role without read rights, and a view the role may not read: Feast\'s FeastPermissionError', () => {
    assert.equal(report.no_read_role.class, 'FeastPermissionError');
    assert.ok(report.no_read_role.bases.includes('PermissionError'));
    assert.match(report.no_read_role.message, /^Permission error:\nNot allowed to run persisted operations: principal "grafana" has role\(s\) dashboard/);
    assert.equal(report.restricted_view.class, 'FeastPermissionError');
    assert.match(report.restricted_view.message, /riskProfile: it is readable by admin only/);
    assert.deepEqual(report.admin_restricted_view.dict, { user_id: ['1'], riskScore: [0.75], flagged: [true] });
  });

  test('a malformed request and missing credentials: what Feast\'s client raises for its server\'s 422 and 401', () => {
    assert.equal(report.mismatched_rows.class, 'RuntimeError');
    assert.match(report.mismatched_rows.message, /^Failed to get online features: 422 .*All entity rows must have the same columns/);
    assert.equal(report.no_credentials.class, 'RuntimeError');
    assert.match(report.no_credentials.message, /^Failed to get online features: 401 .*UNAUTHENTICATED/);
  });

  test('pyarrow decodes the endpoint\'s Arrow answer of a request: value for value its JSON answer, fresh, stale and missing', () => {
    const { problems, statuses, rows, errors } = report.arrow_vs_json as { problems: string[]; statuses: string[]; rows: number; errors: unknown[] };
    assert.deepEqual(problems, []);
    assert.deepEqual(statuses, ['NOT_FOUND', 'OUTSIDE_MAX_AGE', 'PRESENT']);
    assert.equal(rows, 8, 'a batch of 4 rows per join key');
    assert.deepEqual(errors, []);
  });

  test('event times on the wire (which the SDK does not keep): each value\'s own, RFC 3339 with Z', async () => {
    const reply = await post(`${base}/get-online-features`, { entities: { user_id: ['1', '2', '21', '404'] }, features: ['clickStats:clickRate'] },
      { authorization: `Bearer ${tokens.inference}` });
    assert.equal(reply.status, 200, reply.text);
    assert.deepEqual(reply.json.results[1].event_timestamps, [feastTime(now), feastTime(now - 1_000), feastTime(now - 90_000), '1970-01-01T00:00:00Z']);
    assert.match(reply.json.results[1].event_timestamps[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });
});
