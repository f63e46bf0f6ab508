import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseRegistry } from '../../schema/registry.js';
import type { ByteBackend } from '../../store/backends/byte-backend.js';
import { EmbeddedBackend } from '../../store/backends/embedded.js';
import { BackendContractError } from '../../store/backend-answers.js';
import { CodecStore } from '../../store/codec-store.js';
import { StoreUnavailableError } from '../../store/online-store.js';

/**
 * The codec store checks what a byte backend answers before it attaches a
 * value to an id. A real engine behind a wrapper that breaks one rule of the
 * contract: the whole batch fails, naming the rule, and no value reaches an id.
 */
const registry = parseRegistry(`
entities:
  - { name: user, type: User, key: id, description: A user. }
views:
  - name: stats
    entity: user
    description: Test view.
    owner: test
    ttl: 60s
    versions:
      - version: 1
        features: [{ name: rate, type: Float }]
`, 'answers-registry.yaml');
const view = registry.entities[0]!.views[0]!.versions[0]!;

function breaking(change: { getMany?: (answers: unknown[]) => unknown; compareAndSet?: (answers: boolean[]) => unknown }): { store: CodecStore; inner: EmbeddedBackend } {
  const inner = new EmbeddedBackend();
  const backend: ByteBackend = {
    kind: 'broken',
    getMany: async (records, part, options) => (change.getMany ?? ((a) => a))(await inner.getMany(records, part, options)) as never,
    setMany: (entries) => inner.setMany(entries),
    compareAndSet: async (entries) => (change.compareAndSet ?? ((a) => a))(await inner.compareAndSet(entries)) as never,
    ping: () => inner.ping(),
    health: () => inner.health(),
    close: () => inner.close(),
  };
  return { store: new CodecStore(backend), inner };
}

async function seeded(store: CodecStore): Promise<void> {
  await store.write(view, ['a', 'b', 'c'].map((id, i) => ({ entityId: id, values: { rate: i }, eventTimeMs: Date.now() })));
}

describe('the codec store checks every backend answer', () => {
  test('one answer short: the whole batch fails, saying how many came for how many keys', async () => {
    const { store } = breaking({ getMany: (a) => a.slice(1) });
    await seeded(store);
    await assert.rejects(store.readSettled(view, ['a', 'b', 'c']), (e: unknown) =>
      e instanceof BackendContractError && e.store === 'broken' && e.operation === 'getMany' && /answered 2 answers for 3 keys/.test(e.message));
  });

  test('one answer too many, a hole, a string, an unknown error or not an array: refused, naming the answer', async () => {
    const cases: [string, (a: unknown[]) => unknown, RegExp][] = [
      ['too many', (a) => [...a, null], /answered 4 answers for 3 keys/],
      ['a hole', (a) => {
        const out = new Array(a.length);
        out[0] = a[0];
        out[2] = a[2];
        return out;
      }, /answer 1 is undefined \(a hole\)/],
      ['a string', (a) => [a[0], 'value', a[2]], /answer 1 is a string/],
      ['a foreign error', (a) => [a[0], a[1], new TypeError('oops')], /answer 2 is an error that is not a shard error \(TypeError: oops\)/],
      ['an object', () => ({ length: 3 }), /answered an object .*expected an array of 3 answers/],
    ];
    for (const [name, change, message] of cases) {
      const { store } = breaking({ getMany: change });
      await seeded(store);
      await assert.rejects(store.readSettled(view, ['a', 'b', 'c']), (e: unknown) => e instanceof BackendContractError && message.test(e.message), name);
    }
  });

  test('a shard error per key is within the contract and fails only its id', async () => {
    const { store } = breaking({ getMany: (a) => [a[0], new StoreUnavailableError('broken', 's1', 'down'), a[2]] });
    await seeded(store);
    const [a, b, c] = await store.readSettled(view, ['a', 'b', 'c']);
    assert.deepEqual([a && !(a instanceof Error) ? a.values : a, c && !(c instanceof Error) ? c.values : c], [{ rate: 0 }, { rate: 2 }]);
    assert.ok(b instanceof StoreUnavailableError);
  });

  test('state reads and compare-and-set answers are checked alike', async () => {
    const short = breaking({ getMany: (a) => a.slice(0, 1) });
    await assert.rejects(short.store.readStates(view, ['a', 'b']), BackendContractError);
    const now = Date.now();
    const rows = ['a', 'b'].map((entityId) => ({ entityId, expectedVersion: 0, state: 's', stateExpireAtMs: now + 60_000, value: null }));
    const numbers = breaking({ compareAndSet: (a) => a.map((ok) => (ok ? 1 : 0)) });
    await assert.rejects(numbers.store.writeMaterialized(view, rows), (e: unknown) => e instanceof BackendContractError && /answer 0 is a number \(1\); expected true or false/.test(e.message));
    const fewer = breaking({ compareAndSet: (a) => a.slice(1) });
    await assert.rejects(fewer.store.writeMaterialized(view, rows), (e: unknown) => e instanceof BackendContractError && e.operation === 'compareAndSet');
  });
});
