import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { AerospikeExp, BatchResult, BatchWriteRecord, ConfigOptions } from 'aerospike';
import {
  AerospikeBackend, MAX_TTL_SECONDS, batchWaves, MAX_WRITE_ROUNDS, REPLICA_SEQUENCE, TTL_DONT_UPDATE, aerospikeReason, callPolicies, casWritePlan,
  clientConfig, clientLogLevel, clusterShardName, connectAerospike, loadAerospike, namespacesOf, partAnswer, partBins, partEndsBy,
  partOutlives, recordBins, stateVersionIs, status, statusReason, ttlSeconds, valueWritePlan, writeOutcome,
  type AerospikeModule, type ClusterClient, type WriteAttempt,
} from '../../store/backends/aerospike.js';
import { recordKey, type CasEntry, type RecordKey } from '../../store/backends/byte-backend.js';
import type { AerospikeStoreConfig } from '../../store/config.js';
import { Deadline } from '../../runtime/deadline.js';
import { DeadlineExceededError, StoreUnavailableError } from '../../store/online-store.js';

/**
 * What the Aerospike backend does that can be checked without a server: the
 * record layout, the policies, the TTL rule, the filter expressions (by
 * evaluating the client's encoding of them the way the server does), the
 * write loops against a fake client that follows the server's write rules,
 * the error mapping, and the real client against a closed port. The store
 * contract suite (test/integration/store-contract.test.ts) covers the rest
 * against a real server when AEROSPIKE_HOSTS is set.
 */

const require = createRequire(import.meta.url);
const nativeModule = require.resolve('aerospike');
// Before any hook or test runs: this file has imported the backend (and, through it, nothing native).
const loadedByImport = require.cache[nativeModule] !== undefined;

const config: AerospikeStoreConfig = { kind: 'aerospike', hosts: ['10.0.0.1:3000', 'db-2:3100'], namespace: 'test', set: 'fv', commandTimeoutMs: 250 };
const view = { viewName: 'stats', version: 1 };
const NOW = 1_700_000_000_000;

test('importing the backend does not load the native client; the first use does, once', async () => {
  assert.equal(loadedByImport, false, 'importing the backend loaded the native module');
  const first = await loadAerospike();
  assert.ok(require.cache[nativeModule], 'loaded by loadAerospike');
  assert.equal(await loadAerospike(), first);
  // The CommonJS module comes through the dynamic import as its default export.
  assert.equal(typeof first.client, 'function');
  assert.equal(typeof first.exp.and, 'function');
});

let lib: AerospikeModule;
before(async () => {
  lib = await loadAerospike();
});

describe('layout and constants', () => {
  test('the status codes, TTL and replica constants are the client\'s', () => {
    for (const [name, code] of Object.entries(status)) assert.equal(code, (lib.status as unknown as Record<string, number>)[name], name);
    assert.equal(TTL_DONT_UPDATE, lib.ttl.DONT_UPDATE);
    assert.equal(REPLICA_SEQUENCE, lib.policy.replica.SEQUENCE);
  });

  test('bin names are distinct and within the server\'s 15 bytes; each part reads its data and expiry bin', () => {
    const names = Object.values(recordBins);
    assert.equal(new Set(names).size, names.length);
    for (const name of names) assert.ok(Buffer.byteLength(name) <= 15, name);
    assert.deepEqual(partBins.value, { data: recordBins.value, expiry: recordBins.valueExpiry });
    assert.deepEqual(partBins.state, { data: recordBins.state, expiry: recordBins.stateExpiry });
  });

  test('the whole cluster is one shard, named by its seed hosts', () => {
    assert.equal(clusterShardName(config.hosts), '10.0.0.1:3000,db-2:3100');
  });

  test('the C client logs only at LOG_LEVEL debug or trace', () => {
    assert.equal(clientLogLevel(lib, undefined), lib.log.OFF);
    assert.equal(clientLogLevel(lib, 'info'), lib.log.OFF);
    assert.equal(clientLogLevel(lib, 'debug'), lib.log.WARN);
    assert.equal(clientLogLevel(lib, 'trace'), lib.log.WARN);
  });
});

describe('client configuration', () => {
  test('plain: seed hosts as addr/port, no TLS, no credentials', () => {
    const c = clientConfig(config);
    assert.deepEqual(c.hosts, [{ addr: '10.0.0.1', port: 3000 }, { addr: 'db-2', port: 3100 }]);
    assert.equal(c.tls, undefined);
    assert.equal(c.user, undefined);
    assert.equal(c.password, undefined);
    assert.equal(c.connTimeoutMs, 1000, 'at least a second for the first connection');
    assert.equal(clientConfig({ ...config, commandTimeoutMs: 3000 }).connTimeoutMs, 3000);
  });

  test('credentials and TLS: the TLS name on every host, the files by path', () => {
    const c = clientConfig({
      ...config,
      user: 'gw',
      password: 's3cret',
      tls: { name: 'db.example', ca: 'PEM', caFile: '/etc/as/ca.pem', cert: 'PEM', certFile: '/etc/as/c.pem', key: 'PEM', keyFile: '/etc/as/c.key' },
    });
    assert.deepEqual(c.hosts, [{ addr: '10.0.0.1', port: 3000, tlsname: 'db.example' }, { addr: 'db-2', port: 3100, tlsname: 'db.example' }]);
    assert.deepEqual(c.tls, { enable: true, cafile: '/etc/as/ca.pem', certfile: '/etc/as/c.pem', keyfile: '/etc/as/c.key' });
    assert.equal(c.user, 'gw');
    assert.equal(c.password, 's3cret');
    // TLS with the system CAs: a name and no files.
    assert.deepEqual(clientConfig({ ...config, tls: { name: 'db.example' } }).tls, { enable: true });
  });

  test('policies end every call at STORE_TIMEOUT_MS; reads may retry on the replica within it, writes never retry', () => {
    const p = callPolicies(250);
    assert.equal(p.read.totalTimeout, 250);
    assert.ok(p.read.socketTimeout! > 0 && p.read.socketTimeout! < 250);
    assert.equal(p.read.maxRetries, 1);
    assert.equal(p.read.replica, lib.policy.replica.SEQUENCE);
    assert.equal(p.write.totalTimeout, 250);
    assert.equal(p.write.socketTimeout, 250);
    assert.equal(p.write.maxRetries, 0);
    assert.equal(p.info.timeout, 250);
    assert.equal(callPolicies(1).read.socketTimeout, 1, 'never 0 (0 means no socket limit)');
  });
});

describe('TTL arithmetic', () => {
  test('whole seconds, rounded up, so the record lives at least until the part\'s expiry', () => {
    assert.equal(ttlSeconds(NOW + 1000, NOW), 1);
    assert.equal(ttlSeconds(NOW + 1001, NOW), 2);
    assert.equal(ttlSeconds(NOW + 120_000, NOW), 120);
  });

  test('never 0 (the namespace default) or negative; at most the server\'s 10 years', () => {
    assert.equal(ttlSeconds(NOW, NOW), 1);
    assert.equal(ttlSeconds(NOW - 60_000, NOW), 1);
    assert.equal(ttlSeconds(NOW + 100 * 365 * 86_400_000, NOW), MAX_TTL_SECONDS);
  });
});

// ---------------------------------------------------------------------------
// An evaluator of the client's expression encoding, with the server's
// three-valued logic (as/src/base/exp.c): a bin read of a missing bin or of
// another type is "unknown"; a comparison with unknown is unknown; `and` is
// false if any argument is false, else unknown if any is, else true; `or`
// the dual; `not` keeps unknown; a filter that ends unknown is false.
// ---------------------------------------------------------------------------

type Bins = Record<string, number | Buffer>;
type Value = number | boolean | string | Buffer | 'UNKNOWN';
const UNKNOWN = 'UNKNOWN';

function opCodes(exp: AerospikeModule['exp']) {
  const i = exp.int(0);
  return {
    and: exp.and()[0]!.op, or: exp.or()[0]!.op, end: exp.and()[1]!.op, not: exp.not(exp.bool(true))[0]!.op,
    eq: exp.eq(i, i)[0]!.op, ne: exp.ne(i, i)[0]!.op, gt: exp.gt(i, i)[0]!.op, ge: exp.ge(i, i)[0]!.op, lt: exp.lt(i, i)[0]!.op, le: exp.le(i, i)[0]!.op,
    int: i[0]!.op, bool: exp.bool(true)[0]!.op, bin: exp.binInt('b')[0]!.op, binType: exp.binType('b')[0]!.op, rawStr: exp.binType('b')[1]!.op,
    intType: exp.binInt('b')[1]!.intVal as number,
  };
}

function evaluate(expression: AerospikeExp, bins: Bins): boolean {
  const c = opCodes(lib.exp);
  let at = 0;
  const next = (): Value => {
    const node = expression[at++]!;
    switch (node.op) {
      case c.int: return node.intVal as number;
      case c.bool: return node.boolVal as boolean;
      case c.rawStr: return node.strVal as string;
      case c.bin: {
        const type = next();
        const value = bins[next() as string];
        return type === c.intType && typeof value === 'number' ? value : UNKNOWN;
      }
      case c.binType: {
        const value = bins[next() as string];
        return value === undefined ? 0 : typeof value === 'number' ? 1 : 4;
      }
      case c.not: {
        const v = next();
        return v === UNKNOWN ? UNKNOWN : !v;
      }
      case c.and:
      case c.or: {
        const args: Value[] = [];
        while (expression[at]!.op !== c.end) args.push(next());
        at++;
        const decisive = node.op === c.and ? false : true;
        if (args.includes(decisive)) return decisive;
        return args.includes(UNKNOWN) ? UNKNOWN : !decisive;
      }
      default: {
        const compare = { [c.eq]: (a: number, b: number) => a === b, [c.ne]: (a: number, b: number) => a !== b, [c.gt]: (a: number, b: number) => a > b,
          [c.ge]: (a: number, b: number) => a >= b, [c.lt]: (a: number, b: number) => a < b, [c.le]: (a: number, b: number) => a <= b }[node.op];
        if (!compare) throw new Error(`the test evaluator does not know op ${node.op}`);
        const a = next();
        const b = next();
        return a === UNKNOWN || b === UNKNOWN ? UNKNOWN : compare(a as number, b as number);
      }
    }
  };
  const result = next();
  assert.equal(at, expression.length, 'the whole expression was read');
  return result === true;
}

describe('filter expressions', () => {
  const bin = recordBins.stateExpiry;

  test('the evaluator reads the client\'s encoding as the server does (unknown on a missing bin)', () => {
    assert.equal(evaluate(lib.exp.gt(lib.exp.binInt('x'), lib.exp.int(1)), {}), false, 'unknown is false');
    assert.equal(evaluate(lib.exp.not(lib.exp.gt(lib.exp.binInt('x'), lib.exp.int(1))), {}), false, 'not(unknown) is still unknown');
    assert.equal(evaluate(lib.exp.or(lib.exp.bool(true), lib.exp.gt(lib.exp.binInt('x'), lib.exp.int(1))), {}), true);
    assert.equal(evaluate(lib.exp.and(lib.exp.bool(false), lib.exp.gt(lib.exp.binInt('x'), lib.exp.int(1))), {}), false);
  });

  test('partEndsBy and partOutlives are exact complements, for an absent, earlier, equal and later expiry', () => {
    const cases: [Bins, boolean][] = [[{}, true], [{ [bin]: NOW - 1 }, true], [{ [bin]: NOW }, true], [{ [bin]: NOW + 1 }, false]];
    for (const [bins, endsBy] of cases) {
      assert.equal(evaluate(partEndsBy(lib.exp, bin, NOW), bins), endsBy, JSON.stringify(bins));
      assert.equal(evaluate(partOutlives(lib.exp, bin, NOW), bins), !endsBy, JSON.stringify(bins));
    }
  });

  test('an expiry bin holds whole ms (a fraction would make a float bin, unknown to an integer comparison)', () => {
    const e = partEndsBy(lib.exp, bin, NOW + 0.7);
    assert.ok(e.every((node) => node.intVal === undefined || Number.isInteger(node.intVal)));
  });

  test('the stored version: an absent or expired state is version 0, a live one its version bin', () => {
    const live = (version: number): Bins => ({ [recordBins.stateExpiry]: NOW + 1000, [recordBins.stateVersion]: version });
    const expired = (version: number): Bins => ({ [recordBins.stateExpiry]: NOW, [recordBins.stateVersion]: version });
    const check = (expected: number, bins: Bins, matches: boolean) =>
      assert.equal(evaluate(stateVersionIs(lib.exp, expected, NOW), bins), matches, `expected ${expected} on ${JSON.stringify(bins)}`);
    check(0, {}, true);
    check(0, { [recordBins.value]: Buffer.from('v'), [recordBins.valueExpiry]: NOW + 5000 }, true);
    check(0, expired(4), true);
    check(0, live(4), false);
    check(0, live(0), true);
    check(4, live(4), true);
    check(4, live(5), false);
    check(4, expired(4), false);
    check(4, {}, false);
  });
});

function casEntry(overrides: Partial<CasEntry> = {}): CasEntry {
  return {
    record: recordKey(view, 'e'), expectedVersion: 0, value: null, valueExpireAtMs: 0, state: '1\n{"w":1}', stateExpireAtMs: NOW + 60_000, ...overrides,
  };
}

function opBins(a: WriteAttempt): Record<string, unknown> {
  return Object.fromEntries(a.ops.map((o) => [(o as unknown as { bin: string }).bin, (o as unknown as { value: unknown }).value]));
}

describe('write plans', () => {
  test('a value write: the value and its expiry only; first the exact TTL if the state ends by then, else keep the TTL', () => {
    const plan = valueWritePlan(lib, { record: recordKey(view, 'e'), value: Buffer.from([1, 2]), expireAtMs: NOW + 120_000 }, NOW);
    assert.deepEqual(opBins(plan.first), { [recordBins.value]: Buffer.from([1, 2]), [recordBins.valueExpiry]: NOW + 120_000 });
    assert.deepEqual(opBins(plan.fallback!), opBins(plan.first));
    assert.equal(plan.first.policy.ttl, 120);
    assert.equal(plan.first.policy.exists, lib.policy.exists.IGNORE);
    assert.equal(plan.fallback!.policy.ttl, TTL_DONT_UPDATE);
    assert.equal(plan.fallback!.policy.exists, lib.policy.exists.UPDATE, 'DONT_UPDATE on a record it creates would take the namespace default');
    for (const a of [plan.first, plan.fallback!]) assert.equal(a.policy.key, lib.policy.key.SEND);
    const filters = [plan.first.policy.filterExpression as AerospikeExp, plan.fallback!.policy.filterExpression as AerospikeExp];
    for (const stateExpiry of [undefined, NOW + 60_000, NOW + 120_000, NOW + 120_001]) {
      const bins: Bins = stateExpiry === undefined ? {} : { [recordBins.stateExpiry]: stateExpiry };
      const passes = filters.map((f) => evaluate(f, bins));
      assert.deepEqual(passes, stateExpiry !== undefined && stateExpiry > NOW + 120_000 ? [false, true] : [true, false], `state until ${stateExpiry}`);
    }
  });

  test('a compare-and-set with a value: one attempt writing all five bins, TTL of the later part, the version filter', () => {
    const entry = casEntry({ expectedVersion: 3, state: '4\n{"w":2}', value: Buffer.from([9]), valueExpireAtMs: NOW + 120_000, stateExpireAtMs: NOW + 600_000 });
    const plan = casWritePlan(lib, entry, NOW);
    assert.equal(plan.fallback, undefined);
    assert.deepEqual(opBins(plan.first), {
      [recordBins.state]: Buffer.from('4\n{"w":2}'), [recordBins.stateExpiry]: NOW + 600_000, [recordBins.stateVersion]: 4,
      [recordBins.value]: Buffer.from([9]), [recordBins.valueExpiry]: NOW + 120_000,
    });
    assert.equal(plan.first.policy.ttl, 600);
    assert.equal(plan.first.policy.exists, lib.policy.exists.UPDATE, 'a version > 0 needs the record to exist');
    assert.equal(plan.first.policy.key, lib.policy.key.SEND);
    const filter = plan.first.policy.filterExpression as AerospikeExp;
    assert.equal(evaluate(filter, { [recordBins.stateExpiry]: NOW + 1, [recordBins.stateVersion]: 3 }), true);
    assert.equal(evaluate(filter, { [recordBins.stateExpiry]: NOW + 1, [recordBins.stateVersion]: 4 }), false);
    assert.equal(casWritePlan(lib, casEntry({ value: Buffer.from([1]), valueExpireAtMs: NOW + 1 }), NOW).first.policy.exists, lib.policy.exists.IGNORE,
      'version 0 may create the record');
  });

  test('the state is stored as the exact bytes of `<version>\\n<json>`, its version bin from its head', () => {
    const state = '12\n{"ü":"x\\n"}';
    const bins = opBins(casWritePlan(lib, casEntry({ expectedVersion: 11, state }), NOW).first);
    assert.equal((bins[recordBins.state] as Buffer).toString('utf8'), state);
    assert.equal(bins[recordBins.stateVersion], 12);
  });

  test('a state-only compare-and-set: the version filter on both attempts, with the TTL pair on the value\'s expiry', () => {
    const plan = casWritePlan(lib, casEntry({ expectedVersion: 2, state: '3\n{}', stateExpireAtMs: NOW + 60_000 }), NOW);
    assert.deepEqual(Object.keys(opBins(plan.first)).sort(), [recordBins.state, recordBins.stateExpiry, recordBins.stateVersion].sort(), 'the value is kept');
    assert.equal(plan.first.policy.ttl, 60);
    assert.equal(plan.fallback!.policy.ttl, TTL_DONT_UPDATE);
    assert.equal(plan.fallback!.policy.exists, lib.policy.exists.UPDATE);
    const first = plan.first.policy.filterExpression as AerospikeExp;
    const fallback = plan.fallback!.policy.filterExpression as AerospikeExp;
    const state = { [recordBins.stateExpiry]: NOW + 1000, [recordBins.stateVersion]: 2 };
    const shortValue = { ...state, [recordBins.valueExpiry]: NOW + 30_000 };
    const longValue = { ...state, [recordBins.valueExpiry]: NOW + 90_000 };
    assert.deepEqual([evaluate(first, shortValue), evaluate(fallback, shortValue)], [true, false]);
    assert.deepEqual([evaluate(first, longValue), evaluate(fallback, longValue)], [false, true]);
    const stale = { ...longValue, [recordBins.stateVersion]: 1 };
    assert.deepEqual([evaluate(first, stale), evaluate(fallback, stale)], [false, false], 'a version mismatch passes neither');
  });
});

test('a batch naming a record twice is split into waves that keep the order', () => {
  const r = (id: string) => recordKey(view, id);
  assert.deepEqual(batchWaves([r('a'), r('b'), r('c')]), [[0, 1, 2]]);
  assert.deepEqual(batchWaves([r('a'), r('b'), r('a'), r('a'), r('b')]), [[0, 1], [2, 4], [3]]);
  assert.deepEqual(batchWaves([]), []);
});

describe('answers and errors', () => {
  const ok = (bins: Record<string, unknown>) => ({ status: status.OK, record: { bins: bins as never } });

  test('a read answers the bytes, or null for no record, no such part, or a part past its expiry bin', () => {
    const value = Buffer.from([1, 0, 5]);
    assert.equal(partAnswer({ status: status.ERR_RECORD_NOT_FOUND }, 'value', NOW), null);
    assert.equal(partAnswer(ok({}), 'value', NOW), null);
    assert.equal(partAnswer(ok({ [recordBins.state]: Buffer.from('1\n{}'), [recordBins.stateExpiry]: NOW + 1 }), 'value', NOW), null);
    assert.equal(partAnswer(ok({ [recordBins.value]: value, [recordBins.valueExpiry]: NOW + 1 }), 'value', NOW), value);
    assert.equal(partAnswer(ok({ [recordBins.value]: value, [recordBins.valueExpiry]: NOW }), 'value', NOW), null, 'expired at its expiry');
    assert.equal(partAnswer(ok({ [recordBins.value]: value }), 'value', NOW), value, 'no expiry bin: as long as the record lives');
    const state = Buffer.from('2\n{"w":1}');
    assert.equal(partAnswer(ok({ [recordBins.value]: value, [recordBins.valueExpiry]: NOW + 5, [recordBins.state]: state, [recordBins.stateExpiry]: NOW - 5 }), 'state', NOW), null,
      'a state that expired before its value');
  });

  test('a read fails for its record only on a failure status or a bin that does not hold bytes', () => {
    const busy = partAnswer({ status: status.ERR_RECORD_BUSY }, 'value', NOW);
    assert.match((busy as { unreadable: string }).unreadable, /status 14 ERR_RECORD_BUSY/);
    const text = partAnswer(ok({ [recordBins.value]: 'a string', [recordBins.valueExpiry]: NOW + 1 }), 'value', NOW);
    assert.match((text as { unreadable: string }).unreadable, /bin v holds a string, not bytes/);
  });

  test('write statuses: OK written; FILTERED_OUT and NOT_FOUND refused (a compare-and-set\'s false); anything else failed', () => {
    assert.equal(writeOutcome(status.OK), 'written');
    assert.equal(writeOutcome(status.FILTERED_OUT), 'refused');
    assert.equal(writeOutcome(status.ERR_RECORD_NOT_FOUND), 'refused');
    for (const code of [status.ERR_TIMEOUT, status.ERR_RECORD_BUSY, status.ERR_FAIL_FORBIDDEN, status.NO_RESPONSE, status.ERR_SERVER]) assert.equal(writeOutcome(code), 'failed');
  });

  test('statuses are named and explained where an operator needs it', () => {
    assert.match(statusReason(status.ERR_FAIL_FORBIDDEN), /^status 22 ERR_FAIL_FORBIDDEN: .*nsup-period 0.*allow-ttl-without-nsup/);
    assert.match(statusReason(status.ERR_NAMESPACE_NOT_FOUND), /AEROSPIKE_NAMESPACE/);
    assert.match(statusReason(status.ERR_UNSUPPORTED_FEATURE), /5\.2\+/);
    assert.match(statusReason(status.ROLE_VIOLATION), /read-write/);
    assert.equal(statusReason(1234), 'status 1234');
  });

  test('a client error keeps its message and says its status and whether a write may have landed', () => {
    const error = Object.assign(new lib.AerospikeError('Timeout: iterations=1'), { code: status.ERR_TIMEOUT, inDoubt: true });
    assert.equal(aerospikeReason(error), 'Timeout: iterations=1 [status 9 ERR_TIMEOUT: no answer within STORE_TIMEOUT_MS] (a write may have been applied anyway)');
    assert.equal(aerospikeReason(new Error('plain')), 'plain');
  });

  test('the namespaces of an info answer', () => {
    assert.deepEqual(namespacesOf('namespaces\ttest;bar\n'), ['test', 'bar']);
    assert.deepEqual(namespacesOf('test'), ['test']);
    assert.deepEqual(namespacesOf('namespaces\t\n'), []);
  });
});

// ---------------------------------------------------------------------------
// A fake client following the server's write rules (as/src/transaction/
// write.c): a write's filter is evaluated only on a record that exists (a
// record the write creates is never filtered); `exists: UPDATE` on no record
// is ERR_RECORD_NOT_FOUND; TTL DONT_UPDATE keeps the record's expiry, except
// on a record the write creates, where it becomes the namespace's default
// (recorded here, for the tests to assert it never happens). It is the
// tests' reading of the server, not the server.
// ---------------------------------------------------------------------------

interface StoredRecord {
  bins: Bins;
  voidAtMs: number;
  userKey: string | undefined;
}

class FakeCluster implements ClusterClient {
  readonly records = new Map<string, StoredRecord>();
  readonly batchWrites: number[] = [];
  namespaceDefaultTtlUsed = 0;
  /** Statuses to answer for keys (instead of executing), for failure tests. */
  readonly failing = new Map<string, number>();
  failNextCall: Error | undefined;
  closed = false;

  constructor(private readonly clock: { now: number }) {}

  private live(key: string): StoredRecord | undefined {
    const r = this.records.get(key);
    return r && r.voidAtMs > this.clock.now ? r : undefined;
  }

  async batchRead(records: { key: { key: unknown }; bins: string[] }[]): Promise<BatchResult[]> {
    this.throwIfAsked();
    return records.map(({ key, bins }) => {
      const k = String(key.key);
      const failure = this.failing.get(k);
      if (failure !== undefined) return result(failure);
      const r = this.live(k);
      if (!r) return result(status.ERR_RECORD_NOT_FOUND);
      return result(status.OK, Object.fromEntries(bins.filter((b) => b in r.bins).map((b) => [b, r.bins[b]!])));
    });
  }

  async batchWrite(records: BatchWriteRecord[]): Promise<BatchResult[]> {
    this.throwIfAsked();
    this.batchWrites.push(records.length);
    const writeOp = lib.operations.write('x', 1).op;
    return records.map(({ key, ops, policy }) => {
      assert.equal(policy?.key, lib.policy.key.SEND, 'every write stores the user key');
      const k = String(key.key);
      const failure = this.failing.get(k);
      if (failure !== undefined) return result(failure);
      const existing = this.live(k);
      if (!existing && policy?.exists === lib.policy.exists.UPDATE) return result(status.ERR_RECORD_NOT_FOUND);
      if (existing && policy?.filterExpression && !evaluate(policy.filterExpression as AerospikeExp, existing.bins)) return result(status.FILTERED_OUT);
      const record: StoredRecord = existing ?? { bins: {}, voidAtMs: 0, userKey: undefined };
      for (const op of ops ?? []) {
        const { op: code, bin, value } = op as unknown as { op: number; bin: string; value: number | Buffer };
        assert.equal(code, writeOp);
        record.bins[bin] = value;
      }
      const ttl = policy!.ttl!;
      if (ttl === TTL_DONT_UPDATE) {
        if (!existing) {
          this.namespaceDefaultTtlUsed++;
          record.voidAtMs = Infinity;
        }
      } else {
        record.voidAtMs = this.clock.now + ttl * 1000;
      }
      record.userKey = k;
      this.records.set(k, record);
      return result(status.OK);
    });
  }

  async infoAny(): Promise<string> {
    return 'namespaces\ttest;other\n';
  }

  isConnected(): boolean {
    return !this.closed;
  }

  getNodes() {
    return [{ name: 'BB9', address: '10.0.0.1:3000' }, { name: 'BB8', address: 'db-2:3100' }];
  }

  close(): void {
    this.closed = true;
  }

  private throwIfAsked(): void {
    const error = this.failNextCall;
    this.failNextCall = undefined;
    if (error) throw error;
  }
}

function result(code: number, bins?: Bins): BatchResult {
  return { status: code, record: { bins: bins ?? {} }, inDoubt: false } as unknown as BatchResult;
}

/**
 * After every write: the record's expiry covers each live part's expiry
 * bin (the TTL rule), within the second the TTL is rounded up to.
 */
function assertTtlCovers(cluster: FakeCluster, now: number): void {
  for (const [key, r] of cluster.records) {
    if (r.voidAtMs <= now) continue;
    for (const bin of [recordBins.valueExpiry, recordBins.stateExpiry]) {
      const expiry = r.bins[bin];
      if (typeof expiry === 'number' && expiry > now) assert.ok(r.voidAtMs >= expiry, `${key}: the record expires at ${r.voidAtMs}, before its ${bin} ${expiry}`);
    }
  }
}

describe('the backend on a fake cluster (write loops, TTL rule, answers per record)', () => {
  const clock = { now: NOW };
  let cluster: FakeCluster;
  let backend: AerospikeBackend;
  const rec = (id: string): RecordKey => recordKey(view, id);
  const cas = (id: string, overrides: Partial<CasEntry>) => casEntry({ record: rec(id), ...overrides });

  before(async () => {
    cluster = new FakeCluster(clock);
    backend = new AerospikeBackend({ ...config, hosts: ['10.0.0.1:3000'] }, { now: () => clock.now, connect: async () => cluster });
    // The connect is asynchronous: wait for it, as callers do by pinging.
    for (let i = 0; i < 50; i++) {
      try {
        await backend.ping();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    await backend.ping();
  });

  after(async () => {
    await backend.close();
    assert.equal(cluster.closed, true, 'close closes the client');
  });

  test('reads answer per record, in order: bytes, null where absent', async () => {
    await backend.setMany([{ record: rec('a'), value: Buffer.from('A'), expireAtMs: NOW + 60_000 }, { record: rec('b'), value: Buffer.from('B'), expireAtMs: NOW + 60_000 }]);
    const got = await backend.getMany([rec('b'), rec('missing'), rec('a')], 'value');
    assert.deepEqual(got, [Buffer.from('B'), null, Buffer.from('A')]);
    assert.deepEqual(await backend.getMany([rec('a')], 'state'), [null]);
    assert.equal(cluster.records.get('stats:v1:a')!.userKey, 'stats:v1:a', 'the user key is the routing');
    assertTtlCovers(cluster, clock.now);
  });

  test('a value past its expiry bin reads null while the record still exists', async () => {
    await backend.setMany([{ record: rec('short'), value: Buffer.from('S'), expireAtMs: NOW + 1500 }]);
    assert.equal(cluster.records.get('stats:v1:short')!.voidAtMs, NOW + 2000, 'TTL rounded up to 2 s');
    clock.now = NOW + 1500;
    assert.deepEqual(await backend.getMany([rec('short')], 'value'), [null]);
    clock.now = NOW;
  });

  test('compare-and-set: version 0 creates; the state reads back exactly; a stale version writes nothing', async () => {
    const value = Buffer.from([7]);
    assert.deepEqual(await backend.compareAndSet([cas('c', { state: '1\n{"w":1}', value, valueExpireAtMs: NOW + 120_000 })]), [true]);
    assert.deepEqual(await backend.getMany([rec('c')], 'state'), [Buffer.from('1\n{"w":1}')]);
    assert.deepEqual(await backend.getMany([rec('c')], 'value'), [value]);
    assert.deepEqual(await backend.compareAndSet([cas('c', { expectedVersion: 0, state: '1\n{"w":9}', value: Buffer.from([9]), valueExpireAtMs: NOW + 1 })]), [false]);
    assert.deepEqual(await backend.compareAndSet([cas('c', { expectedVersion: 5, state: '6\n{}' })]), [false]);
    assert.deepEqual(await backend.getMany([rec('c')], 'state'), [Buffer.from('1\n{"w":1}')], 'nothing written');
    assert.deepEqual(await backend.compareAndSet([cas('none', { expectedVersion: 1, state: '2\n{}' })]), [false], 'no record is version 0');
    assert.equal(cluster.records.has('stats:v1:none'), false);
    assertTtlCovers(cluster, clock.now);
  });

  test('a state-only compare-and-set keeps the value and does not shorten its record (the fallback keeps the TTL)', async () => {
    await backend.compareAndSet([cas('keep', { state: '1\n{}', stateExpireAtMs: NOW + 1000, value: Buffer.from('V'), valueExpireAtMs: NOW + 120_000 })]);
    const voidAt = cluster.records.get('stats:v1:keep')!.voidAtMs;
    assert.equal(voidAt, NOW + 120_000);
    const writes = cluster.batchWrites.length;
    assert.deepEqual(await backend.compareAndSet([cas('keep', { expectedVersion: 1, state: '2\n{}', stateExpireAtMs: NOW + 5000 })]), [true]);
    assert.equal(cluster.batchWrites.length - writes, 2, 'the first attempt is filtered out, the fallback writes');
    assert.equal(cluster.records.get('stats:v1:keep')!.voidAtMs, voidAt, 'TTL kept');
    assert.deepEqual(await backend.getMany([rec('keep')], 'value'), [Buffer.from('V')]);
    assertTtlCovers(cluster, clock.now);
  });

  test('a state that expired before its value is version 0 again, and reads null while the value is served', async () => {
    clock.now = NOW + 1000;
    await backend.compareAndSet([cas('exp', { state: '1\n{}', stateExpireAtMs: clock.now + 1000, value: Buffer.from('V'), valueExpireAtMs: clock.now + 120_000 })]);
    clock.now += 1300;
    assert.deepEqual(await backend.getMany([rec('exp')], 'state'), [null]);
    assert.deepEqual(await backend.getMany([rec('exp')], 'value'), [Buffer.from('V')]);
    assert.deepEqual(await backend.compareAndSet([cas('exp', { expectedVersion: 1, state: '2\n{}' })]), [false], 'the expired state is not version 1');
    assert.deepEqual(await backend.compareAndSet([cas('exp', { expectedVersion: 0, state: '1\n{"again":1}', stateExpireAtMs: clock.now + 60_000 })]), [true]);
    assert.deepEqual(await backend.getMany([rec('exp')], 'state'), [Buffer.from('1\n{"again":1}')]);
    assertTtlCovers(cluster, clock.now);
    clock.now = NOW;
  });

  test('a value-only write keeps the state and does not shorten a record whose state lives longer', async () => {
    await backend.compareAndSet([cas('long-state', { state: '1\n{}', stateExpireAtMs: NOW + 600_000, value: Buffer.from('V1'), valueExpireAtMs: NOW + 60_000 })]);
    assert.equal(cluster.records.get('stats:v1:long-state')!.voidAtMs, NOW + 600_000);
    await backend.setMany([{ record: rec('long-state'), value: Buffer.from('V2'), expireAtMs: NOW + 30_000 }]);
    assert.equal(cluster.records.get('stats:v1:long-state')!.voidAtMs, NOW + 600_000, 'TTL kept');
    assert.deepEqual(await backend.getMany([rec('long-state')], 'state'), [Buffer.from('1\n{}')]);
    assert.deepEqual(await backend.getMany([rec('long-state')], 'value'), [Buffer.from('V2')]);
    // A value that outlives the state sets the TTL to its own expiry.
    await backend.setMany([{ record: rec('long-state'), value: Buffer.from('V3'), expireAtMs: NOW + 900_000 }]);
    assert.equal(cluster.records.get('stats:v1:long-state')!.voidAtMs, NOW + 900_000);
    assertTtlCovers(cluster, clock.now);
    assert.equal(cluster.namespaceDefaultTtlUsed, 0, 'DONT_UPDATE never created a record');
  });

  test('a batch of compare-and-sets answers per entry, in order, mixing first attempts and fallbacks', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `batch-${i}`);
    assert.deepEqual(await backend.compareAndSet(ids.map((id, i) => cas(id, {
      state: `1\n${i}`, stateExpireAtMs: NOW + 60_000, value: Buffer.from([i]), valueExpireAtMs: NOW + (i % 2 === 0 ? 30_000 : 120_000),
    }))), ids.map(() => true));
    const answers = await backend.compareAndSet(ids.map((id, i) => cas(id, { expectedVersion: i % 3 === 0 ? 7 : 1, state: `2\n${i}`, stateExpireAtMs: NOW + 60_000 })));
    assert.deepEqual(answers, ids.map((_, i) => i % 3 !== 0));
    const states = await backend.getMany(ids.map(rec), 'state');
    states.forEach((s, i) => assert.deepEqual(s, Buffer.from(i % 3 !== 0 ? `2\n${i}` : `1\n${i}`), ids[i]));
    assert.deepEqual(await backend.getMany(ids.map(rec), 'value'), ids.map((_, i) => Buffer.from([i])), 'state-only writes keep the values');
    assertTtlCovers(cluster, clock.now);
  });

  test('a batch naming a record twice applies its writes in order, one wave after the other', async () => {
    const writes = cluster.batchWrites.length;
    await backend.setMany([
      { record: rec('dup'), value: Buffer.from('first'), expireAtMs: NOW + 60_000 },
      { record: rec('other'), value: Buffer.from('O'), expireAtMs: NOW + 60_000 },
      { record: rec('dup'), value: Buffer.from('second'), expireAtMs: NOW + 60_000 },
    ]);
    assert.deepEqual(cluster.batchWrites.slice(writes), [2, 1]);
    assert.deepEqual(await backend.getMany([rec('dup')], 'value'), [Buffer.from('second')]);
    assert.deepEqual(await backend.compareAndSet([cas('dup-cas', { state: '1\n{}' }), cas('dup-cas', { expectedVersion: 1, state: '2\n{}' }), cas('dup-cas', { expectedVersion: 1, state: '2\n{"late":1}' })]),
      [true, true, false]);
    assert.deepEqual(await backend.getMany([rec('dup-cas')], 'state'), [Buffer.from('2\n{}')]);
  });

  test('empty batches make no call', async () => {
    const writes = cluster.batchWrites.length;
    assert.deepEqual(await backend.getMany([], 'value'), []);
    await backend.setMany([]);
    assert.deepEqual(await backend.compareAndSet([]), []);
    assert.equal(cluster.batchWrites.length, writes);
  });

  test('a record whose read fails gets its own StoreUnavailableError; the others are served', async () => {
    cluster.failing.set('stats:v1:a', status.ERR_RECORD_BUSY);
    const [a, b] = await backend.getMany([rec('a'), rec('b')], 'value');
    cluster.failing.clear();
    assert.ok(a instanceof StoreUnavailableError && a.shard === '10.0.0.1:3000' && /ERR_RECORD_BUSY/.test(a.reason), String(a));
    assert.deepEqual(b, Buffer.from('B'));
  });

  test('a batch in which no record was answered fails as a call (the breaker counts it), every record with the reason', async () => {
    cluster.failing.set('stats:v1:a', status.NO_RESPONSE);
    cluster.failing.set('stats:v1:b', status.NO_RESPONSE);
    try {
      const results = await backend.getMany([rec('a'), rec('b')], 'value');
      for (const r of results) assert.ok(r instanceof StoreUnavailableError && /no record of the batch was answered \(the first, stats:v1:a: status -15 NO_RESPONSE/.test(r.reason), String(r));
      await assert.rejects(backend.setMany([{ record: rec('a'), value: Buffer.from('x'), expireAtMs: NOW + 1000 }]), /no record of the batch was answered/);
      // One answered record is enough for the batch to be a served call.
      const [a, missing] = await backend.getMany([rec('a'), rec('nothing')], 'value');
      assert.ok(a instanceof StoreUnavailableError && /status -15 NO_RESPONSE/.test(a.reason), String(a));
      assert.equal(missing, null);
    } finally {
      cluster.failing.clear();
    }
  });

  test('a failed batch call fails every record of it, with the client\'s reason', async () => {
    cluster.failNextCall = Object.assign(new lib.AerospikeError('Timeout'), { code: status.ERR_TIMEOUT });
    const results = await backend.getMany([rec('a'), rec('b')], 'value');
    for (const r of results) assert.ok(r instanceof StoreUnavailableError && /ERR_TIMEOUT/.test(r.reason), String(r));
  });

  test('a read whose deadline has passed answers DeadlineExceededError per record', async () => {
    const deadline = Deadline.after(0);
    await new Promise((r) => setTimeout(r, 5));
    const results = await backend.getMany([rec('a'), rec('b')], 'value', { deadline });
    for (const r of results) assert.ok(r instanceof DeadlineExceededError && r.shard === '10.0.0.1:3000', String(r));
  });

  test('a failed write rejects naming the record; a compare-and-set too (its outcome is unknown, not false)', async () => {
    cluster.failing.set('stats:v1:w', status.ERR_FAIL_FORBIDDEN);
    await assert.rejects(backend.setMany([{ record: rec('w'), value: Buffer.from('W'), expireAtMs: NOW + 1000 }]),
      (e: unknown) => e instanceof StoreUnavailableError && /stats:v1:w/.test(e.reason) && /nsup-period/.test(e.reason));
    await assert.rejects(backend.compareAndSet([cas('w', {})]), StoreUnavailableError);
    cluster.failing.clear();
  });

  test('a value write whose state expiry keeps moving gives up after MAX_WRITE_ROUNDS, saying why', async () => {
    await backend.compareAndSet([cas('race', { state: '1\n{}', stateExpireAtMs: NOW + 600_000, value: Buffer.from('V'), valueExpireAtMs: NOW + 1000 })]);
    // Between every two batch writes, a "concurrent writer" flips the state's expiry across the value's.
    const original = cluster.batchWrite.bind(cluster);
    let flips = 0;
    cluster.batchWrite = async (records) => {
      const answer = await original(records);
      const r = cluster.records.get('stats:v1:race')!;
      r.bins[recordBins.stateExpiry] = flips++ % 2 === 0 ? NOW + 10 : NOW + 600_000;
      return answer;
    };
    try {
      await assert.rejects(backend.setMany([{ record: rec('race'), value: Buffer.from('W'), expireAtMs: NOW + 60_000 }]),
        (e: unknown) => e instanceof StoreUnavailableError && /stats:v1:race/.test(e.reason) && e.reason.includes(String(MAX_WRITE_ROUNDS)));
    } finally {
      cluster.batchWrite = original;
    }
  });

  test('ping and health check the namespace and count the nodes', async () => {
    await backend.ping();
    assert.deepEqual(await backend.health(), [{ shard: '10.0.0.1:3000', reachable: true, detail: 'reachable, 2 nodes, circuit closed' }]);
    const other = new AerospikeBackend({ ...config, namespace: 'missing' }, { connect: async () => new FakeCluster(clock) });
    try {
      await new Promise((r) => setTimeout(r, 20));
      await assert.rejects(other.ping(), (e: unknown) => e instanceof StoreUnavailableError && /"missing".*not configured.*test, other/.test(e.reason));
    } finally {
      await other.close();
    }
  });
});

describe('the real client against a closed port (cluster down)', () => {
  let port: number;
  let backend: AerospikeBackend;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  let attempts = 0;

  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    backend = new AerospikeBackend({ ...config, hosts: [`127.0.0.1:${port}`], commandTimeoutMs: 200 }, {
      reconnectDelayMs: 50,
      connect: (lib: AerospikeModule, c: ConfigOptions, onEvent) => {
        attempts++;
        return connectAerospike(lib, c, onEvent);
      },
    });
    // The client refuses at once (ERR_CONNECTION); give it a few attempts.
    await new Promise((r) => setTimeout(r, 300));
  });

  after(() => {
    process.off('unhandledRejection', onUnhandled);
  });

  test('connects fail at once and are retried with new clients', () => {
    assert.ok(attempts >= 2, `${attempts} connect attempts in 300 ms`);
  });

  test('reads answer StoreUnavailableError per record, naming the shard and the cause', async () => {
    const started = Date.now();
    const results = await backend.getMany([recordKey(view, 'a'), recordKey(view, 'b')], 'value');
    assert.ok(Date.now() - started < 100, 'fails fast, without waiting for a connect');
    assert.equal(results.length, 2);
    for (const r of results) {
      assert.ok(r instanceof StoreUnavailableError, String(r));
      assert.equal(r.shard, `127.0.0.1:${port}`);
      assert.match(r.reason, /not connected to the cluster: .*status -10 ERR_CONNECTION.*AEROSPIKE_HOSTS/);
    }
  });

  test('writes and compare-and-sets reject with StoreUnavailableError', async () => {
    await assert.rejects(backend.setMany([{ record: recordKey(view, 'a'), value: Buffer.from('x'), expireAtMs: Date.now() + 5000 }]), StoreUnavailableError);
    await assert.rejects(backend.compareAndSet([casEntry({ stateExpireAtMs: Date.now() + 5000 })]), StoreUnavailableError);
  });

  test('ping rejects and health says unreachable, with the cause', async () => {
    await assert.rejects(backend.ping(), (e: unknown) => e instanceof StoreUnavailableError && e.shard === `127.0.0.1:${port}` && /ERR_CONNECTION/.test(e.reason));
    const [health, ...rest] = await backend.health();
    assert.equal(rest.length, 0);
    assert.equal(health!.shard, `127.0.0.1:${port}`);
    assert.equal(health!.reachable, false);
    assert.match(health!.detail, /^unavailable: not connected to the cluster: .*ERR_CONNECTION.*, circuit (closed|open)$/);
  });

  test('close ends the retries; calls after it say the store is closed; nothing was left unhandled', async () => {
    await backend.close();
    const before = attempts;
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(attempts, before, 'no connect after close');
    const [r] = await backend.getMany([recordKey(view, 'a')], 'value');
    assert.ok(r instanceof StoreUnavailableError && /closed/.test(r.reason), String(r));
    await backend.close(); // twice is harmless
    assert.deepEqual(unhandled, []);
  });
});
