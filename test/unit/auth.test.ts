import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { getOperationAST, parse } from 'graphql';
import { parse as parseYaml } from 'yaml';
import { ApiKeys, hashApiKey, newApiKey, parseApiKeys } from '../../auth/api-keys.js';
import { Authenticator } from '../../auth/authenticator.js';
import { AccessError } from '../../auth/errors.js';
import { principalFromHeaders, principalHeaders } from '../../auth/internal.js';
import { JwtVerifier } from '../../auth/jwt.js';
import { ALLOWED, authorize, authorizeSubscriber, kindsOf, mayDo, mayReadView, type OperationKind } from '../../auth/policy.js';
import { ROLES, type Principal, type Role } from '../../auth/principal.js';
import { RateLimiter } from '../../auth/rate-limiter.js';
import { operationCost } from '../../gateway/limits.js';
import { loadConfig, redactUrl } from '../../runtime/config.js';
import { ConfigError } from '../../runtime/errors.js';
import { fromRoot } from '../../runtime/paths.js';

const principal = (...roles: Role[]): Principal => ({ id: 'p', roles: new Set(roles), via: 'api-key' });

describe('API keys', () => {
  const good = (extra: Record<string, unknown> = {}) => ({ name: 'svc', sha256: 'a'.repeat(64), roles: ['inference'], ...extra });
  const problem = (raw: unknown): string => {
    try {
      parseApiKeys(raw, 'keys.yaml');
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.variable, 'API_KEYS_FILE');
      return error.message;
    }
    assert.fail('expected the keys file to be rejected');
  };

  test('a new key is found by its hash, with its roles; the key itself is never stored', () => {
    const { key, sha256 } = newApiKey();
    assert.match(key, /^fgk_[\w-]{43}$/);
    assert.equal(sha256, hashApiKey(key));
    const keys = new ApiKeys(parseApiKeys({ keys: [{ name: 'ranker', sha256, roles: ['inference', 'dashboard'], rateLimitPerSecond: 50 }] }, 'f'));
    const found = keys.lookup(key)!;
    assert.equal(found.principal.id, 'ranker');
    assert.deepEqual([...found.principal.roles], ['inference', 'dashboard']);
    assert.equal(found.rateLimitPerSecond, 50);
    assert.equal(keys.lookup(`${key}x`), undefined);
    assert.equal(keys.lookup(sha256), undefined, 'the hash is not a key');
  });

  test('every problem of a keys file is a ConfigError naming the entry and field', () => {
    assert.match(problem({}), /expected an object with a `keys:` list/);
    assert.match(problem({ keys: [good({ name: 'has space' })] }), /keys\[0\]\.name/);
    assert.match(problem({ keys: [good(), good({ sha256: 'b'.repeat(64) })] }), /keys\[1\]\.name: "svc" is used twice/);
    assert.match(problem({ keys: [good({ sha256: 'fgk_the-key-itself' })] }), /keys\[0\]\.sha256: .*never the key itself/);
    assert.match(problem({ keys: [good(), good({ name: 'other' })] }), /keys\[1\]\.sha256: the same key hash is listed twice/);
    assert.match(problem({ keys: [good({ roles: ['root'] })] }), /keys\[0\]\.roles/);
    assert.match(problem({ keys: [good({ roles: [] })] }), /keys\[0\]\.roles/);
    assert.match(problem({ keys: [good({ role: 'admin' })] }), /keys\[0\]: unknown field\(s\) role/);
    assert.match(problem({ keys: [good({ rateLimitPerSecond: 0 })] }), /rateLimitPerSecond: expected a positive number/);
  });
});

describe('npm run auth', () => {
  test('new-key prints a key once and an entry holding only its hash, which then finds the key', () => {
    const out = execFileSync(process.execPath, [fromRoot('dist', 'auth', 'cli.js'), 'new-key', '--name', 'ranker', '--roles', 'inference,dashboard', '--rate', '100'], { encoding: 'utf8' });
    const key = out.match(/^fgk_\S+$/m)![0];
    const entry = out.match(/^  - (\{.*\})$/m)![1]!;
    assert.ok(!entry.includes(key));
    const keys = new ApiKeys(parseApiKeys(parseYaml(`keys:\n  - ${entry}\n`), 'f'));
    const found = keys.lookup(key)!;
    assert.deepEqual([found.principal.id, [...found.principal.roles], found.rateLimitPerSecond], ['ranker', ['inference', 'dashboard'], 100]);
  });

  test('unknown roles and missing arguments exit 2 with the usage', () => {
    const run = (...args: string[]) => spawnSync(process.execPath, [fromRoot('dist', 'auth', 'cli.js'), ...args], { encoding: 'utf8' });
    for (const args of [['new-key', '--name', 'x', '--roles', 'root'], ['new-key', '--roles', 'admin'], ['rotate']]) {
      const result = run(...args);
      assert.equal(result.status, 2, args.join(' '));
      assert.match(result.stderr, /usage:/);
    }
  });
});

describe('RateLimiter', () => {
  test('a burst, then one request per 1/rate seconds; buckets are per key; rate 0 is unlimited', () => {
    let now = 0;
    const limiter = new RateLimiter(() => now);
    for (let i = 0; i < 3; i++) limiter.take('a', 3);
    assert.throws(() => limiter.take('a', 3), (e: unknown) => e instanceof AccessError && e.code === 'RATE_LIMITED' && e.status === 429 && e.retryAfterSeconds === 1);
    limiter.take('b', 3);
    now += 334;
    limiter.take('a', 3);
    assert.throws(() => limiter.take('a', 3));
    for (let i = 0; i < 1000; i++) limiter.take('c', 0);
  });

  test('the burst may differ from the rate', () => {
    let now = 0;
    const limiter = new RateLimiter(() => now);
    for (let i = 0; i < 10; i++) limiter.take('a', 1, 10);
    assert.throws(() => limiter.take('a', 1, 10), (e: unknown) => e instanceof AccessError && e.retryAfterSeconds === 1);
    now += 1000;
    limiter.take('a', 1, 10);
  });
});

describe('policy', () => {
  test('roles × operation kinds: the table the README documents', () => {
    const table = Object.fromEntries(ROLES.map((role) => [role, (Object.keys(ALLOWED) as OperationKind[]).filter((k) => mayDo(principal(role), k))]));
    assert.deepEqual(table, {
      inference: ['persisted', 'live'],
      analyst: ['persisted', 'ad-hoc', 'introspection', 'subscription', 'live', 'sandbox'],
      dashboard: ['subscription', 'live'],
      admin: ['persisted', 'ad-hoc', 'introspection', 'subscription', 'live', 'push', 'sandbox'],
    });
    assert.equal(mayDo(undefined, 'persisted'), false);
    assert.equal(mayDo(principal(), 'persisted'), false);
    assert.ok(mayDo(principal('inference', 'dashboard'), 'subscription'), 'roles add up');
  });

  test('a refusal names the principal, its roles and the roles that would do', () => {
    const refusal = authorize(principal('dashboard'), 'push')!;
    assert.equal(refusal.status, 403);
    assert.equal(refusal.code, 'FORBIDDEN');
    assert.match(refusal.message, /push feature values.*"p" has role\(s\) dashboard; needs one of admin/);
    assert.match(authorize(principal(), 'persisted')!.message, /has no role/);
  });

  test('a graphql-ws connection lets in whoever may subscribe to something: inference for live operations alone', () => {
    for (const role of ROLES) assert.equal(authorizeSubscriber(principal(role)), undefined, role);
    assert.match(authorizeSubscriber(principal())!.message, /subscribe to live persisted operations: principal "p" has no role; needs one of inference, dashboard, analyst, admin/);
    assert.equal(authorizeSubscriber(undefined)?.code, 'FORBIDDEN');
    assert.match(authorize(principal('inference'), 'subscription')!.message, /subscribe to feature changes/);
  });

  test('kinds of an operation: push, subscription, introspection (also through fragments), persisted or ad-hoc', () => {
    const kinds = (query: string, persisted = false) => {
      const document = parse(query);
      return kindsOf(document, getOperationAST(document)!, persisted);
    };
    assert.deepEqual(kinds('mutation { x }'), ['push']);
    assert.deepEqual(kinds('subscription { x }'), ['subscription']);
    // liveOperation runs manifest operations only: its own kind, which inference services have too.
    assert.deepEqual(kinds('subscription { liveOperation(operation: "RankingFeatures") { revision } }'), ['live']);
    assert.deepEqual(kinds('subscription { ... on Subscription { live: liveOperation(operation: "X") { patch } } }'), ['live']);
    assert.deepEqual(kinds('subscription { featureChanged(entity: USER, ids: ["1"]) { id } }'), ['subscription']);
    assert.deepEqual(kinds('{ __schema { types { name } } }'), ['introspection']);
    assert.deepEqual(kinds('{ __type(name: "User") { name } __typename }'), ['introspection']);
    assert.deepEqual(kinds('{ user(id: 1) { id } __schema { types { name } } }'), ['ad-hoc', 'introspection']);
    assert.deepEqual(kinds('{ ...F } fragment F on Query { __schema { types { name } } }'), ['introspection']);
    assert.deepEqual(kinds('{ ... on Query { user(id: 1) { id } } ...F } fragment F on Query { __schema { types { name } } }'), ['ad-hoc', 'introspection']);
    assert.deepEqual(kinds('{ __typename }'), ['ad-hoc']);
    assert.deepEqual(kinds('query Q { users(ids: []) { id } }', true), ['persisted']);
  });

  test('per-view read roles: none means anyone; admin reads everything; otherwise one of the roles', () => {
    assert.ok(mayReadView(undefined, { readRoles: null }));
    assert.ok(mayReadView(principal('admin'), { readRoles: ['analyst'] }));
    assert.ok(mayReadView(principal('inference', 'analyst'), { readRoles: ['analyst'] }));
    assert.equal(mayReadView(principal('inference'), { readRoles: ['analyst'] }), false);
    assert.equal(mayReadView(undefined, { readRoles: ['analyst'] }), false);
  });
});

describe('the principal handed to subgraph processes', () => {
  const admin = principal('admin');
  test('signed: verified with the secret, refused with another or when tampered with', () => {
    const headers = principalHeaders(admin, 'secret-1');
    assert.deepEqual(principalFromHeaders(headers, 'secret-1'), { id: 'p', roles: new Set(['admin']), via: 'api-key' });
    assert.equal(principalFromHeaders(headers, 'secret-2'), undefined);
    const tampered = { ...headers, 'x-feature-gateway-principal': principalHeaders(principal('admin', 'analyst'), null)['x-feature-gateway-principal']! };
    assert.equal(principalFromHeaders(tampered, 'secret-1'), undefined);
    assert.equal(principalFromHeaders(principalHeaders(admin, null), 'secret-1'), undefined, 'unsigned');
  });

  test('a signed header older (or newer) than a minute is refused: a header seen on the wire cannot be replayed', () => {
    const t = 1_800_000_000_000;
    const headers = principalHeaders(admin, 'secret-1', t);
    assert.ok(principalFromHeaders(headers, 'secret-1', t + 59_000));
    assert.equal(principalFromHeaders(headers, 'secret-1', t + 61_000), undefined);
    assert.equal(principalFromHeaders(headers, 'secret-1', t - 61_000), undefined);
  });

  test('without a secret the header is taken as is; garbage is no principal; unknown roles are dropped', () => {
    assert.deepEqual(principalFromHeaders(principalHeaders(admin, null), null)?.roles, new Set(['admin']));
    assert.equal(principalFromHeaders({ 'x-feature-gateway-principal': 'not base64 json' }, null), undefined);
    const odd = Buffer.from(JSON.stringify({ id: 'x', roles: ['admin', 'root', 7] })).toString('base64url');
    assert.deepEqual(principalFromHeaders({ 'x-feature-gateway-principal': odd }, null)?.roles, new Set(['admin']));
    assert.equal(principalFromHeaders({}, null), undefined);
  });
});

describe('Authenticator', () => {
  const jwtOff = new JwtVerifier({ hs256Secret: null, jwksFile: null, issuer: null, audience: null, rolesClaim: 'roles' });
  const settings = { apiKeysFile: null, jwt: { hs256Secret: null, jwksFile: null, issuer: null, audience: null, rolesClaim: 'roles' }, rateLimitPerSecond: 0, rateLimitBurst: 1 };
  const refusal = async (promise: Promise<unknown>): Promise<AccessError> => {
    try {
      await promise;
    } catch (error) {
      assert.ok(error instanceof AccessError, String(error));
      return error;
    }
    assert.fail('expected a refusal');
  };

  test('no credentials: the anonymous principal, or 401 when anonymous callers are refused', async () => {
    const open = new Authenticator({ ...settings, anonymousRoles: ['inference'] }, null, jwtOff);
    assert.deepEqual(await open.authenticate({}, '127.0.0.1'), { id: 'anonymous', roles: new Set(['inference']), via: 'anonymous' });
    const closed = new Authenticator({ ...settings, anonymousRoles: null }, null, jwtOff);
    const error = await refusal(closed.authenticate({}, '127.0.0.1'));
    assert.equal(error.status, 401);
    assert.match(error.message, /Credentials required/);
  });

  test('a bearer token when no JWT key is configured, a key where no keys are configured: 401', async () => {
    const auth = new Authenticator({ ...settings, anonymousRoles: null }, null, jwtOff);
    assert.match((await refusal(auth.authenticate({ authorization: 'Bearer eyJ.x.y' }, undefined))).message, /accepts no bearer tokens/);
    assert.match((await refusal(auth.authenticate({ apiKey: 'fgk_x' }, undefined))).message, /Unknown API key/);
  });

  test('anonymous callers are rate-limited per client address', async () => {
    const auth = new Authenticator({ ...settings, anonymousRoles: ['analyst'], rateLimitPerSecond: 1, rateLimitBurst: 1 }, null, jwtOff);
    await auth.authenticate({}, '10.0.0.1');
    await auth.authenticate({}, '10.0.0.2');
    assert.equal((await refusal(auth.authenticate({}, '10.0.0.1'))).code, 'RATE_LIMITED');
  });
});

describe('auth configuration', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-auth-config-'));
  const keysFile = path.join(dir, 'keys.yaml');
  fs.writeFileSync(keysFile, 'keys: []\n');
  const configError = (env: Record<string, string>): ConfigError => {
    try {
      loadConfig(env);
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error;
    }
    assert.fail('expected a ConfigError');
  };

  test('with no credentials configured, anonymous callers read and subscribe but do not push; with any, they are refused', () => {
    assert.deepEqual(loadConfig({}).auth.anonymousRoles, ['inference', 'analyst', 'dashboard']);
    // Safelist mode binds callers without the analyst role, so by default anonymous callers are not analysts there.
    assert.deepEqual(loadConfig({ SAFELIST: 'true' }).auth.anonymousRoles, ['inference', 'dashboard']);
    assert.deepEqual(loadConfig({ SAFELIST: 'true', ANONYMOUS_ROLES: 'analyst' }).auth.anonymousRoles, ['analyst']);
    assert.equal(loadConfig({ API_KEYS_FILE: keysFile }).auth.anonymousRoles, null);
    assert.equal(loadConfig({ JWT_HS256_SECRET: 'x'.repeat(32) }).auth.anonymousRoles, null);
    assert.deepEqual(loadConfig({ API_KEYS_FILE: keysFile, ANONYMOUS_ROLES: 'inference' }).auth.anonymousRoles, ['inference']);
    assert.equal(loadConfig({ ANONYMOUS_ROLES: 'none' }).auth.anonymousRoles, null);
  });

  test('errors name the variable', () => {
    assert.equal(configError({ ANONYMOUS_ROLES: 'inference,root' }).variable, 'ANONYMOUS_ROLES');
    assert.equal(configError({ API_KEYS_FILE: path.join(dir, 'missing.yaml') }).variable, 'API_KEYS_FILE');
    assert.equal(configError({ JWT_HS256_SECRET: 'short' }).variable, 'JWT_HS256_SECRET');
    assert.equal(configError({ JWT_JWKS_FILE: path.join(dir, 'missing.json') }).variable, 'JWT_JWKS_FILE');
    assert.equal(configError({ RATE_LIMIT_PER_SECOND: '-1' }).variable, 'RATE_LIMIT_PER_SECOND');
    assert.equal(configError({ MAX_QUERY_COST: '0' }).variable, 'MAX_QUERY_COST');
    assert.equal(configError({ INTERNAL_AUTH_SECRET: 'a', INTERNAL_AUTH_SECRET_FILE: keysFile }).variable, 'INTERNAL_AUTH_SECRET_FILE');
  });

  test('secrets may come from files (trailing newline dropped)', () => {
    const secretFile = path.join(dir, 'secret');
    fs.writeFileSync(secretFile, `${'s'.repeat(40)}\n`);
    assert.equal(loadConfig({ JWT_HS256_SECRET_FILE: secretFile }).auth.jwt.hs256Secret, 's'.repeat(40));
    assert.equal(configError({ INTERNAL_AUTH_SECRET_FILE: path.join(dir, 'nope') }).variable, 'INTERNAL_AUTH_SECRET_FILE');
  });
});

describe('query cost', () => {
  const cost = (query: string, variables: Record<string, unknown> = {}) => {
    const document = parse(query);
    return operationCost(document, getOperationAST(document)!, variables);
  };

  test('entities × leaves per root field; lists literal, by variable or by default; introspection is free', () => {
    assert.equal(cost('{ user(id: 1) { id clickStats { clickRate stale } } }'), 3);
    assert.equal(cost('query Q($ids: [ID!]!) { users(ids: $ids) { id clickStats { clickRate } } }', { ids: ['1', '2', '3'] }), 6);
    assert.equal(cost('query Q($ids: [ID!]! = ["1", "2"]) { users(ids: $ids) { id } }'), 2);
    assert.equal(cost('{ users(ids: [1, 2]) { id __typename } a: user(id: 1) { id } }'), 3);
    assert.equal(cost('{ __schema { types { name fields { name } } } }'), 0);
  });

  test('fragment bombs, nested or at the root, are counted exactly and in linear time', () => {
    const levels = 60; // 2^60 occurrences if expanded
    const nested = Array.from({ length: levels }, (_, i) => (i === levels - 1 ? `fragment F${i} on T { a }` : `fragment F${i} on T { ...F${i + 1} ...F${i + 1} }`));
    assert.equal(cost(`{ user(id: 1) { ...F0 } } ${nested.join(' ')}`), 2 ** (levels - 1));
    const rooted = Array.from({ length: levels }, (_, i) => (i === levels - 1 ? `fragment R${i} on Query { user(id: 1) { a } }` : `fragment R${i} on Query { ...R${i + 1} ...R${i + 1} }`));
    assert.equal(cost(`{ ...R0 } ${rooted.join(' ')}`), 2 ** (levels - 1));
  });
});

describe('redactUrl', () => {
  test('hides credentials of a URL and leaves others alone', () => {
    assert.equal(redactUrl('redis://default:s3cret@10.0.0.2:6379'), 'redis://***@10.0.0.2:6379');
    assert.equal(redactUrl('rediss://:p@ss@host:6380/2'), 'rediss://***@host:6380/2');
    assert.equal(redactUrl('redis://10.0.0.2:6379'), 'redis://10.0.0.2:6379');
    assert.equal(redactUrl('not a url'), 'not a url');
  });
});
