/**
 * Credentials and TLS towards Redis, against real redis-server processes:
 * `requirepass`, an ACL user (REDIS_USERNAME + REDIS_PASSWORD_FILE), and a
 * TLS port (rediss://) with the test CA and a client certificate. Wrong or
 * missing credentials and an untrusted certificate fail at once with the
 * shard and the cause named, in the store's error and in /readyz — no hang.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { RunningGateway } from '../../gateway/server.js';
import { ConfigError } from '../../runtime/errors.js';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { StoreUnavailableError } from '../../store/online-store.js';
import { NodeProcess, registry, startTestGateway, testConfig, waitUntilReady } from '../support/gateway.js';
import { baseUrl, get } from '../support/http.js';
import { freePort } from '../support/ports.js';
import { RedisProcess } from '../support/redis-server.js';
import { makeTestPki, type TestPki } from '../support/tls-certs.js';
import { eventually } from '../support/wait.js';

const clickStats = activeVersionOf(registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!);
const values = { clickRate: 0.5, clicks: 10, impressions: 20 };

function storeFor(env: Record<string, string>): CodecStore {
  return createStore(testConfig(env).store);
}

/** A write and a read back through the store: the connection works end to end. */
async function roundTrip(store: CodecStore, id: string): Promise<void> {
  await eventually(() => store.ping(), 10_000);
  await store.write(clickStats, [{ entityId: id, values, eventTimeMs: Date.now() }]);
  const [row] = await store.read(clickStats, [id]);
  assert.deepEqual(row?.values, values);
}

/** The store fails every call quickly, naming the shard and `cause`, once the connection attempt has failed. */
async function failsWith(store: CodecStore, shard: string, cause: RegExp): Promise<void> {
  await eventually(async () => {
    const started = Date.now();
    const error = await store.ping().then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof StoreUnavailableError, `expected StoreUnavailableError, got ${String(error)}`);
    assert.equal(error.shard, shard);
    assert.match(error.message, cause);
    assert.ok(Date.now() - started < 5000, 'the failing call hung');
  }, 15_000, 200);
}

describe('Redis with a password and an ACL user', () => {
  let redis: RedisProcess;
  let dir: string;
  const opened: CodecStore[] = [];
  const open = (env: Record<string, string>): CodecStore => {
    const store = storeFor(env);
    opened.push(store);
    return store;
  };

  before(async () => {
    redis = await RedisProcess.start({ password: 'default-pass', user: { name: 'features', password: 's3cret' } });
    dir = fs.mkdtempSync(path.join(redis.dir, 'secrets-'));
  });
  after(async () => {
    for (const s of opened) await s.close();
    await redis?.destroy();
  });

  it('REDIS_PASSWORD authenticates the default user (requirepass)', async () => {
    await roundTrip(open({ REDIS_URL: redis.url, REDIS_PASSWORD: 'default-pass' }), 'pw-1');
  });

  it('REDIS_USERNAME with REDIS_PASSWORD_FILE authenticates an ACL user (the trailing newline of the file is not part of it)', async () => {
    const file = path.join(dir, 'redis-password');
    fs.writeFileSync(file, 's3cret\n');
    await roundTrip(open({ REDIS_SHARD_URLS: redis.url, REDIS_USERNAME: 'features', REDIS_PASSWORD_FILE: file }), 'acl-1');
  });

  it('a wrong password fails every call at once with WRONGPASS and the shard named; /readyz says so', async () => {
    const shard = `127.0.0.1:${redis.port}`;
    const store = open({ REDIS_URL: redis.url, REDIS_PASSWORD: 'not-it' });
    await failsWith(store, shard, /WRONGPASS/);
    let gateway: RunningGateway | undefined;
    try {
      gateway = await startTestGateway(store);
      const ready = await get(`${baseUrl(gateway.url)}/readyz`);
      assert.equal(ready.status, 503, ready.text);
      assert.match(ready.json.checks.store, /unreachable \(0 of 1 shard reachable\)/);
      assert.match(ready.json.checks[`store:${shard}`], /WRONGPASS/);
    } finally {
      await gateway?.close();
    }
  });

  it('a gateway process started with a wrong password says why at start-up, naming the shard, and serves unready', async () => {
    const port = await freePort();
    const gateway = NodeProcess.spawn('gateway/main.js', [], { REDIS_URL: redis.url, REDIS_PASSWORD: 'not-it', PORT: String(port), DEMO_SEED: 'false', DEMO_WRITER: 'false' });
    try {
      await waitUntilReady(`http://127.0.0.1:${port}/healthz`, gateway, 60_000);
      const startup = gateway.output.split('\n').find((line) => line.includes('store not reachable yet'));
      assert.ok(startup, gateway.output);
      assert.match(JSON.parse(startup).err, new RegExp(`shard 127\\.0\\.0\\.1:${redis.port} .*WRONGPASS`));
      const ready = await get(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 503, ready.text);
      assert.match(ready.json.checks[`store:127.0.0.1:${redis.port}`], /WRONGPASS/);
    } finally {
      await gateway.stop();
    }
  });

  it('no password fails with NOAUTH, naming the shard', async () => {
    await failsWith(open({ REDIS_URL: redis.url }), `127.0.0.1:${redis.port}`, /NOAUTH/);
  });

  it('checks the settings at start-up', () => {
    const fails = (env: Record<string, string>, variable: string) =>
      assert.throws(() => testConfig(env), (e: unknown) => e instanceof ConfigError && e.variable === variable, JSON.stringify(env));
    fails({ REDIS_URL: redis.url, REDIS_USERNAME: 'features' }, 'REDIS_USERNAME');
    fails({ REDIS_URL: redis.url, REDIS_PASSWORD: 'a', REDIS_PASSWORD_FILE: path.join(dir, 'redis-password') }, 'REDIS_PASSWORD_FILE');
    fails({ REDIS_URL: redis.url, REDIS_PASSWORD_FILE: path.join(dir, 'missing') }, 'REDIS_PASSWORD_FILE');
    fails({ REDIS_PASSWORD: 'a' }, 'REDIS_PASSWORD');
  });
});

describe('Redis over TLS (rediss://)', () => {
  let pki: TestPki;
  let redis: RedisProcess;
  const opened: CodecStore[] = [];
  const open = (env: Record<string, string>): CodecStore => {
    const store = storeFor(env);
    opened.push(store);
    return store;
  };

  before(async () => {
    pki = makeTestPki();
    redis = await RedisProcess.start({ password: 'tls-pass', tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert, requireClientCert: true } });
  });
  after(async () => {
    for (const s of opened) await s.close();
    await redis?.destroy();
    pki?.remove();
  });

  it('connects with the CA, a client certificate and the password', async () => {
    await roundTrip(open({
      REDIS_URL: redis.tlsUrl, REDIS_PASSWORD: 'tls-pass',
      REDIS_TLS_CA_FILE: pki.caCert, REDIS_TLS_CERT_FILE: pki.clientCert, REDIS_TLS_KEY_FILE: pki.clientKey,
    }), 'tls-1');
  });

  it('does not trust the server without the CA, and says why', async () => {
    await failsWith(open({ REDIS_URL: redis.tlsUrl, REDIS_PASSWORD: 'tls-pass', REDIS_TLS_CERT_FILE: pki.clientCert, REDIS_TLS_KEY_FILE: pki.clientKey }),
      `127.0.0.1:${redis.tlsPort}`, /certificate/i);
  });

  it('is refused by a server that requires a client certificate when it has none', async () => {
    const store = open({ REDIS_URL: redis.tlsUrl, REDIS_PASSWORD: 'tls-pass', REDIS_TLS_CA_FILE: pki.caCert });
    await assert.rejects(eventually(() => store.ping(), 3000), StoreUnavailableError);
  });

  it('refuses TLS files without a rediss:// URL, and a client certificate without its key, at start-up', () => {
    assert.throws(() => testConfig({ REDIS_URL: redis.url, REDIS_TLS_CA_FILE: pki.caCert }), (e: unknown) => e instanceof ConfigError && e.variable === 'REDIS_TLS_CA_FILE');
    assert.throws(() => testConfig({ REDIS_URL: redis.tlsUrl, REDIS_TLS_CERT_FILE: pki.clientCert }), (e: unknown) => e instanceof ConfigError && e.variable === 'REDIS_TLS_KEY_FILE');
    assert.throws(() => testConfig({ REDIS_URL: redis.tlsUrl, REDIS_TLS_CERT_FILE: pki.clientCert, REDIS_TLS_KEY_FILE: pki.strayKey }),
      (e: unknown) => e instanceof ConfigError && e.variable === 'REDIS_TLS_KEY_FILE' && /does not match/.test(e.message));
  });
});
