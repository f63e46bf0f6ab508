import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { fromRoot } from '../../runtime/paths.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { inheritedEnv } from '../support/aerospike.js';
import { registry } from '../support/gateway.js';
import { eventually } from '../support/wait.js';
import { RedisProcess } from '../support/redis-server.js';

const run = promisify(execFile);
const cli = fromRoot('dist', 'store', 'load-cli.js');

async function load(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { env: { ...inheritedEnv(), ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** The `msg` of the CLI's JSON error line. */
function errorMessage(stderr: string): string {
  const line = stderr.trim().split('\n').pop() ?? '';
  return (JSON.parse(line) as { msg: string }).msg;
}

describe('npm run load', () => {
  let redis: RedisProcess[];
  let store: CodecStore;
  let dir: string;
  const view = (entity: string, name: string) => registry.entities.find((e) => e.name === entity)!.views.find((v) => v.name === name)!;

  before(async () => {
    redis = [await RedisProcess.start(), await RedisProcess.start()];
    store = createStore({ kind: 'redis', urls: redis.map((r) => r.url), commandTimeoutMs: 1000 });
    dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-load-'));
  });

  after(async () => {
    await store.close();
    for (const r of redis) await r.destroy();
  });

  test('--demo loads the requested number of entities into sharded Redis', async () => {
    const result = await load(['--demo', '--users', '40', '--items', '30', '--merchants', '5'], { REDIS_SHARD_URLS: redis.map((r) => r.url).join(',') });
    assert.equal(result.code, 0, result.stderr);
    // user: clickStats v1 + v2 + profile + riskProfile; item: itemStats; merchant: riskStats
    assert.equal(JSON.parse(result.stdout.trim()).rows, 40 * 4 + 30 + 5);
    const values = await store.read(view('user', 'clickStats').versions[1]!, ['1', '40', '41']);
    assert.notEqual(values[0], null);
    assert.notEqual(values[1], null);
    assert.equal(values[2], null);
  });

  test('--demo --event-time gives every row that event time, so two stores can hold identical values', async () => {
    const at = Date.now() - 30_000;
    const result = await load(['--demo', '--users', '3', '--items', '0', '--merchants', '0', '--event-time', new Date(at).toISOString()], { REDIS_URL: redis[0]!.url });
    assert.equal(result.code, 0, result.stderr);
    const single = createStore({ kind: 'redis', urls: [redis[0]!.url], commandTimeoutMs: 1000 });
    try {
      await eventually(() => single.ping(), 10_000, 50);
      const values = await single.read(view('user', 'clickStats').versions[1]!, ['1', '2', '3']);
      assert.deepEqual(values.map((v) => v?.eventTimeMs), [at, at, at]);
    } finally {
      await single.close();
    }
    for (const bad of ['yesterday', '-5', '2026-11-26', '1.5']) {
      const refused = await load(['--demo', `--event-time=${bad}`], { REDIS_URL: redis[0]!.url });
      assert.equal(refused.code, 1);
      assert.match(errorMessage(refused.stderr), /--event-time must be ISO-8601 with a zone or ms since the epoch/);
    }
  });

  test('--file loads a JSON Lines file with ISO and numeric event times and the default (active) version', async () => {
    const file = path.join(dir, 'rows.jsonl');
    const now = Date.now();
    fs.writeFileSync(file, [
      JSON.stringify({ entity: 'merchant', id: 'm-1', view: 'riskStats', eventTime: new Date(now).toISOString(), values: { txnCount1h: 4, amountSum1h: 99.5, chargebackRate: 0.25 } }),
      '',
      JSON.stringify({ entity: 'user', id: 'u-1', view: 'clickStats', version: 1, eventTime: now, values: { clickRate: 0.75 } }),
    ].join('\n'));
    const result = await load(['--file', file], { REDIS_SHARD_URLS: redis.map((r) => r.url).join(',') });
    assert.equal(result.code, 0, result.stderr);
    const [m] = await store.read(view('merchant', 'riskStats').versions[0]!, ['m-1']);
    assert.deepEqual(m?.values, { txnCount1h: 4, amountSum1h: 99.5, chargebackRate: 0.25 });
    const [u] = await store.read(view('user', 'clickStats').versions[0]!, ['u-1']);
    assert.deepEqual(u?.values, { clickRate: 0.75 });
  });

  for (const [name, line, reason] of [
    ['malformed JSON', '{"entity":', /rows\.jsonl:2: not valid JSON/],
    ['unknown entity', '{"entity":"shop","id":"1","view":"x","eventTime":0,"values":{}}', /rows\.jsonl:2: "entity" must be one of user, item, merchant/],
    ['unknown view', '{"entity":"user","id":"1","view":"x","eventTime":0,"values":{}}', /"view" must be a view of user/],
    ['bad version', '{"entity":"user","id":"1","view":"clickStats","version":3,"eventTime":0,"values":{}}', /"version" must be 1\.\.2/],
    ['bad event time', '{"entity":"user","id":"1","view":"clickStats","eventTime":"yesterday","values":{}}', /"eventTime" must be ISO-8601/],
    ['event time Date.parse would take', '{"entity":"user","id":"1","view":"clickStats","eventTime":"-5","values":{}}', /"eventTime" must be ISO-8601/],
    ['event time without a zone', '{"entity":"user","id":"1","view":"clickStats","eventTime":"2026-11-26T12:00:00","values":{}}', /"eventTime" must be ISO-8601/],
    ['wrong value type', '{"entity":"user","id":"1","view":"clickStats","eventTime":0,"values":{"clicks":"many"}}', /feature "clicks" expects Int/],
    ['unknown feature', '{"entity":"user","id":"1","view":"clickStats","eventTime":0,"values":{"clickz":1}}', /unknown feature "clickz"/],
  ] as const) {
    test(`a bad row (${name}) stops the load with file:line and the reason`, async () => {
      const file = path.join(dir, 'rows.jsonl');
      fs.writeFileSync(file, `{"entity":"user","id":"ok","view":"clickStats","eventTime":${Date.now()},"values":{}}\n${line}\n`);
      const result = await load(['--file', file], { REDIS_URL: redis[0]!.url });
      assert.equal(result.code, 1);
      assert.match(errorMessage(result.stderr), reason);
    });
  }

  test('refuses the embedded store and bad arguments with a clear message', async () => {
    const embedded = await load(['--demo'], { REDIS_URL: '', REDIS_SHARD_URLS: '' });
    assert.equal(embedded.code, 1);
    assert.match(errorMessage(embedded.stderr), /set REDIS_URL, REDIS_SHARD_URLS, REDIS_CLUSTER_NODES or AEROSPIKE_HOSTS/);
    const neither = await load([], { REDIS_URL: redis[0]!.url });
    assert.equal(neither.code, 1);
    assert.match(errorMessage(neither.stderr), /usage/);
    const badCount = await load(['--demo', '--users', 'lots'], { REDIS_URL: redis[0]!.url });
    assert.equal(badCount.code, 1);
    assert.match(errorMessage(badCount.stderr), /--users must be a non-negative integer/);
    const unknown = await load(['--demo', '--userz', '3'], { REDIS_URL: redis[0]!.url });
    assert.equal(unknown.code, 1);
    assert.match(errorMessage(unknown.stderr), /Unknown option '--userz'[\s\S]*usage/);
  });
});
