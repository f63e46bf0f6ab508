import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../runtime/config.js';
import { ConfigError } from '../../runtime/errors.js';
import { fromRoot } from '../../runtime/paths.js';
import { defaultBreaker } from '../../store/shard-guard.js';

/** Asserts that `env` is rejected with a ConfigError naming `variable` (in `.variable` and in the message). */
function rejects(env: Record<string, string>, variable: string, detail?: RegExp): void {
  assert.throws(() => loadConfig(env), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.equal(e.name, 'ConfigError');
    assert.equal(e.variable, variable);
    assert.ok(e.message.startsWith(`${variable}: `), e.message);
    if (detail) assert.match(e.message, detail);
    return true;
  });
}

describe('loadConfig defaults', () => {
  const config = loadConfig({});

  test('port 4000 on loopback, registry and manifest from the repository', () => {
    assert.equal(config.port, 4000);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.registryFile, fromRoot('schema', 'registry.yaml'));
    assert.equal(config.manifestFile, fromRoot('schema', 'persisted-query-manifest.json'));
  });

  test('shutdown bounded at 25 s with no readiness delay; Kafka retries back off to 2 s', () => {
    assert.equal(config.shutdownTimeoutMs, 25_000);
    assert.equal(config.shutdownReadinessDelayMs, 0);
    assert.equal(config.kafkaConnectionTimeoutMs, 3000);
    assert.equal(config.kafkaRetryMaxMs, 2000);
  });

  test('embedded store with demo seed and writer on', () => {
    assert.deepEqual(config.store, { kind: 'embedded' });
    assert.equal(config.demoSeed, true);
    assert.equal(config.demoWriter, true);
    assert.equal(config.embeddedSeedFile, null);
  });

  test('co-located subgraphs, safelist off, introspection and sandbox on, limits set', () => {
    assert.deepEqual(config.subgraphUrls, {});
    assert.equal(config.safelist, false);
    assert.equal(config.introspection, true);
    assert.equal(config.sandbox, true);
    assert.equal(config.debugErrors, false);
    assert.equal(config.maxBatchIds, 1000);
    assert.equal(config.maxQueryDepth, 12);
    assert.equal(config.maxQueryNesting, 64);
    assert.equal(config.maxBodyBytes, 262_144);
    assert.equal(config.demoWriteIntervalMs, 5000);
  });

  test('PUSH_MAX_FUTURE_MS: 5 minutes by default, 0 to a day', () => {
    assert.equal(config.pushMaxFutureMs, 300_000);
    assert.equal(loadConfig({ PUSH_MAX_FUTURE_MS: '0' }).pushMaxFutureMs, 0);
    assert.equal(loadConfig({ PUSH_MAX_FUTURE_MS: '86400000' }).pushMaxFutureMs, 86_400_000);
    rejects({ PUSH_MAX_FUTURE_MS: '-1' }, 'PUSH_MAX_FUTURE_MS', /expected an integer from 0 to 86400000/);
    rejects({ PUSH_MAX_FUTURE_MS: '86400001' }, 'PUSH_MAX_FUTURE_MS');
    rejects({ PUSH_MAX_FUTURE_MS: '5m' }, 'PUSH_MAX_FUTURE_MS');
  });

  test('subscription send side: 1 MiB send buffer per connection, stuck for 10 s closes it', () => {
    assert.equal(config.subscriptionSendBufferBytes, 1_048_576);
    assert.equal(config.subscriptionStallTimeoutMs, 10_000);
    const set = loadConfig({ SUBSCRIPTION_SEND_BUFFER_BYTES: '65536', SUBSCRIPTION_STALL_TIMEOUT_MS: '2500' });
    assert.equal(set.subscriptionSendBufferBytes, 65_536);
    assert.equal(set.subscriptionStallTimeoutMs, 2500);
  });

  test('does not read process.env when an env object is given', () => {
    const saved = process.env.PORT;
    process.env.PORT = '4321';
    try {
      assert.equal(loadConfig({}).port, 4000);
    } finally {
      if (saved === undefined) delete process.env.PORT;
      else process.env.PORT = saved;
    }
  });

  test('an empty variable counts as unset', () => {
    assert.equal(loadConfig({ PORT: '', REDIS_URL: '' }).port, 4000);
    assert.deepEqual(loadConfig({ REDIS_URL: '' }).store, { kind: 'embedded' });
  });

  test('EMBEDDED_SEED_FILE turns the demo seed and writer off', () => {
    const c = loadConfig({ EMBEDDED_SEED_FILE: '/tmp/seed.jsonl' });
    assert.equal(c.embeddedSeedFile, '/tmp/seed.jsonl');
    assert.equal(c.demoSeed, false);
    assert.equal(c.demoWriter, false);
  });
});

describe('loadConfig store', () => {
  test('REDIS_URL gives a Redis store with one URL and no demo data', () => {
    const c = loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379' });
    assert.deepEqual(c.store, { kind: 'redis', urls: ['redis://127.0.0.1:6379'], commandTimeoutMs: 250, breaker: defaultBreaker });
    assert.equal(c.demoSeed, false);
    assert.equal(c.demoWriter, false);
  });

  test('REDIS_SHARD_URLS gives several, trimmed; STORE_TIMEOUT_MS applies', () => {
    const c = loadConfig({ REDIS_SHARD_URLS: 'redis://10.0.0.1:6379, redis://10.0.0.2:6379/1 ,rediss://10.0.0.3:6380', STORE_TIMEOUT_MS: '100' });
    assert.deepEqual(c.store, {
      kind: 'redis',
      urls: ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379/1', 'rediss://10.0.0.3:6380'],
      commandTimeoutMs: 100,
      breaker: defaultBreaker,
    });
  });

  test('REQUEST_DEADLINE_MS defaults to 1000; the STORE_BREAKER_* variables set the Redis breaker', () => {
    assert.equal(loadConfig({}).requestDeadlineMs, 1000);
    assert.equal(loadConfig({ REQUEST_DEADLINE_MS: '300' }).requestDeadlineMs, 300);
    const c = loadConfig({ REDIS_URL: 'redis://a:1', STORE_BREAKER_ERROR_PERCENT: '30', STORE_BREAKER_MIN_CALLS: '4', STORE_BREAKER_RESET_MS: '500' });
    assert.deepEqual(c.store.kind === 'redis' && c.store.breaker, { errorPercent: 30, minCalls: 4, resetMs: 500 });
  });

  test('bad deadline and breaker values name their variable', () => {
    rejects({ REQUEST_DEADLINE_MS: '0' }, 'REQUEST_DEADLINE_MS');
    rejects({ REQUEST_DEADLINE_MS: 'soon' }, 'REQUEST_DEADLINE_MS', /expected an integer/);
    rejects({ STORE_BREAKER_ERROR_PERCENT: '100' }, 'STORE_BREAKER_ERROR_PERCENT', /from 1 to 99/);
    rejects({ STORE_BREAKER_MIN_CALLS: '0' }, 'STORE_BREAKER_MIN_CALLS');
    rejects({ STORE_BREAKER_RESET_MS: '-5' }, 'STORE_BREAKER_RESET_MS');
  });

  test('both REDIS_URL and REDIS_SHARD_URLS is an error naming REDIS_SHARD_URLS', () => {
    rejects({ REDIS_URL: 'redis://a:1', REDIS_SHARD_URLS: 'redis://b:2,redis://c:3' }, 'REDIS_SHARD_URLS', /REDIS_URL/);
  });

  test('a URL that is not a Redis URL names its variable', () => {
    rejects({ REDIS_URL: 'localhost:6379' }, 'REDIS_URL', /not a Redis URL: "localhost:6379"/);
    rejects({ REDIS_URL: 'http://localhost:6379' }, 'REDIS_URL');
    rejects({ REDIS_SHARD_URLS: 'redis://a:1,b:2' }, 'REDIS_SHARD_URLS', /"b:2"/);
    rejects({ REDIS_SHARD_URLS: ' , ' }, 'REDIS_SHARD_URLS', /comma-separated list/);
  });

  test('a bad STORE_TIMEOUT_MS names it', () => {
    rejects({ STORE_TIMEOUT_MS: '0' }, 'STORE_TIMEOUT_MS');
  });

  test('REDIS_CLUSTER_NODES gives a Redis Cluster from its seeds, masters only unless replica reads are asked for', () => {
    const c = loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000, 10.0.0.2:7000', STORE_TIMEOUT_MS: '300' });
    assert.deepEqual(c.store, { kind: 'redis-cluster', nodes: ['10.0.0.1:7000', '10.0.0.2:7000'], readFromReplicas: false, commandTimeoutMs: 300, breaker: defaultBreaker });
    assert.equal(c.demoSeed, false);
    const replicas = loadConfig({ REDIS_CLUSTER_NODES: 'redis-0.redis:6379', REDIS_CLUSTER_READ_FROM_REPLICAS: 'true', REDIS_PASSWORD: 's3cret' });
    assert.deepEqual(replicas.store.kind === 'redis-cluster' && [replicas.store.readFromReplicas, replicas.store.password, replicas.store.tls], [true, 's3cret', undefined]);
    const tls = loadConfig({ REDIS_CLUSTER_NODES: 'a:1', REDIS_CLUSTER_TLS: 'yes' });
    assert.deepEqual(tls.store.kind === 'redis-cluster' && tls.store.tls, {});
  });

  test('REDIS_CLUSTER_NODES: bad seeds and misplaced variables name their variable', () => {
    rejects({ REDIS_CLUSTER_NODES: 'redis://a:1' }, 'REDIS_CLUSTER_NODES', /host:port/);
    rejects({ REDIS_CLUSTER_NODES: 'a:1,b' }, 'REDIS_CLUSTER_NODES', /"b"/);
    rejects({ REDIS_CLUSTER_NODES: 'a:70000' }, 'REDIS_CLUSTER_NODES');
    rejects({ REDIS_CLUSTER_NODES: 'a:1', REDIS_CLUSTER_READ_FROM_REPLICAS: 'sometimes' }, 'REDIS_CLUSTER_READ_FROM_REPLICAS', /true or false/);
    rejects({ REDIS_URL: 'redis://a:1', REDIS_CLUSTER_READ_FROM_REPLICAS: 'true' }, 'REDIS_CLUSTER_READ_FROM_REPLICAS', /only meaningful with REDIS_CLUSTER_NODES/);
    rejects({ REDIS_CLUSTER_TLS: 'true' }, 'REDIS_CLUSTER_TLS', /only meaningful/);
  });

  test('one engine at a time: two engine variables name the second', () => {
    rejects({ REDIS_URL: 'redis://a:1', REDIS_CLUSTER_NODES: 'b:2' }, 'REDIS_CLUSTER_NODES', /REDIS_URL and REDIS_CLUSTER_NODES/);
    rejects({ REDIS_CLUSTER_NODES: 'b:2', AEROSPIKE_HOSTS: 'c:3000' }, 'AEROSPIKE_HOSTS', /set one store engine/);
  });

  test('AEROSPIKE_HOSTS gives Aerospike in namespace test, set fv, unless named', () => {
    const c = loadConfig({ AEROSPIKE_HOSTS: '10.0.0.5:3000,10.0.0.6:3000' });
    assert.deepEqual(c.store, { kind: 'aerospike', hosts: ['10.0.0.5:3000', '10.0.0.6:3000'], namespace: 'test', set: 'fv', commandTimeoutMs: 250, breaker: defaultBreaker });
    const named = loadConfig({ AEROSPIKE_HOSTS: 'a:3000', AEROSPIKE_NAMESPACE: 'features', AEROSPIKE_SET: 'online_v1', AEROSPIKE_USER: 'gw', AEROSPIKE_PASSWORD: 'pw', AEROSPIKE_TLS_NAME: 'aero.internal' });
    assert.deepEqual(named.store.kind === 'aerospike' && [named.store.namespace, named.store.set, named.store.user, named.store.password, named.store.tls], ['features', 'online_v1', 'gw', 'pw', { name: 'aero.internal' }]);
  });

  test('AEROSPIKE_*: bad values name their variable', () => {
    rejects({ AEROSPIKE_HOSTS: 'a' }, 'AEROSPIKE_HOSTS', /host:port/);
    rejects({ AEROSPIKE_HOSTS: 'a:3000', AEROSPIKE_NAMESPACE: 'has space' }, 'AEROSPIKE_NAMESPACE', /letters, digits/);
    rejects({ AEROSPIKE_HOSTS: 'a:3000', AEROSPIKE_SET: 'x'.repeat(64) }, 'AEROSPIKE_SET', /at most 63/);
    rejects({ AEROSPIKE_HOSTS: 'a:3000', AEROSPIKE_USER: 'gw' }, 'AEROSPIKE_PASSWORD', /both/);
    rejects({ AEROSPIKE_NAMESPACE: 'features' }, 'AEROSPIKE_NAMESPACE', /only meaningful with AEROSPIKE_HOSTS/);
    rejects({ AEROSPIKE_HOSTS: 'a:3000', REDIS_PASSWORD: 'x' }, 'REDIS_PASSWORD', /only meaningful with REDIS_URL/);
  });
});

describe('loadConfig errors name the variable', () => {
  for (const port of ['abc', '-1', '65536', '80.5', '4000x']) {
    test(`PORT=${port}`, () => rejects({ PORT: port }, 'PORT', /expected an integer from 0 to 65535/));
  }

  test('bad booleans', () => {
    rejects({ SAFELIST: 'maybe' }, 'SAFELIST', /expected true or false, got "maybe"/);
    rejects({ INTROSPECTION: '2' }, 'INTROSPECTION');
    rejects({ DEMO_SEED: 'nope' }, 'DEMO_SEED');
  });

  test('booleans accept the usual spellings', () => {
    for (const yes of ['1', 'true', 'TRUE', 'yes', 'on']) assert.equal(loadConfig({ SAFELIST: yes }).safelist, true, yes);
    for (const no of ['0', 'false', 'False', 'no', 'off']) assert.equal(loadConfig({ INTROSPECTION: no }).introspection, false, no);
  });

  test('SUBGRAPH_URLS: good and bad', () => {
    assert.deepEqual(loadConfig({ SUBGRAPH_URLS: 'user=http://127.0.0.1:4001/graphql, item=https://items.internal/graphql' }).subgraphUrls, {
      user: 'http://127.0.0.1:4001/graphql',
      item: 'https://items.internal/graphql',
    });
    rejects({ SUBGRAPH_URLS: 'user=localhost:4001' }, 'SUBGRAPH_URLS', /entity=http/);
    rejects({ SUBGRAPH_URLS: 'http://127.0.0.1:4001/graphql' }, 'SUBGRAPH_URLS');
    rejects({ SUBGRAPH_URLS: ',' }, 'SUBGRAPH_URLS');
  });

  test('limits out of range', () => {
    rejects({ MAX_BATCH_IDS: '0' }, 'MAX_BATCH_IDS');
    rejects({ MAX_QUERY_DEPTH: '1' }, 'MAX_QUERY_DEPTH');
    // Past ~1000 levels graphql-js and the planner overflow the stack: the cap stays well below.
    rejects({ MAX_QUERY_NESTING: '257' }, 'MAX_QUERY_NESTING', /from 8 to 256/);
    rejects({ MAX_QUERY_NESTING: '7' }, 'MAX_QUERY_NESTING');
    rejects({ MAX_BODY_BYTES: '10' }, 'MAX_BODY_BYTES');
    rejects({ SHUTDOWN_TIMEOUT_MS: '0' }, 'SHUTDOWN_TIMEOUT_MS');
    rejects({ SHUTDOWN_READINESS_DELAY_MS: '-1' }, 'SHUTDOWN_READINESS_DELAY_MS');
    rejects({ KAFKA_CONNECTION_TIMEOUT_MS: 'soon' }, 'KAFKA_CONNECTION_TIMEOUT_MS');
    rejects({ KAFKA_RETRY_MAX_MS: '10' }, 'KAFKA_RETRY_MAX_MS');
    rejects({ SUBSCRIPTION_SEND_BUFFER_BYTES: '1023' }, 'SUBSCRIPTION_SEND_BUFFER_BYTES', /from 1024 to/);
    rejects({ SUBSCRIPTION_STALL_TIMEOUT_MS: '5s' }, 'SUBSCRIPTION_STALL_TIMEOUT_MS');
  });
});

describe('loadConfig CONFIG_FILE', () => {
  const dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'config-test-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, content: string): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    return file;
  };

  test('values come from the JSON file, the environment wins', () => {
    const file = write('config.json', JSON.stringify({
      PORT: 5000,
      HOST: '0.0.0.0',
      SAFELIST: true,
      MAX_BATCH_IDS: 50,
      REDIS_SHARD_URLS: ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379'],
    }));
    const fromFile = loadConfig({ CONFIG_FILE: file });
    assert.equal(fromFile.port, 5000);
    assert.equal(fromFile.host, '0.0.0.0');
    assert.equal(fromFile.safelist, true);
    assert.equal(fromFile.maxBatchIds, 50);
    assert.deepEqual(fromFile.store.kind === 'redis' && fromFile.store.urls, ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379']);

    const overridden = loadConfig({ CONFIG_FILE: file, PORT: '6000', SAFELIST: 'false' });
    assert.equal(overridden.port, 6000);
    assert.equal(overridden.safelist, false);
    assert.equal(overridden.maxBatchIds, 50);
  });

  test('a bad value in the file names its variable', () => {
    rejects({ CONFIG_FILE: write('bad-port.json', JSON.stringify({ PORT: 'x' })) }, 'PORT');
  });

  test('a missing, malformed or non-object file names CONFIG_FILE', () => {
    rejects({ CONFIG_FILE: path.join(dir, 'missing.json') }, 'CONFIG_FILE', /cannot read/);
    rejects({ CONFIG_FILE: write('malformed.json', '{ "PORT": ') }, 'CONFIG_FILE', /cannot read/);
    rejects({ CONFIG_FILE: write('array.json', '[1, 2]') }, 'CONFIG_FILE', /JSON object/);
  });
});
