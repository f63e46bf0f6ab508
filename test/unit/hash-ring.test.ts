import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { HashRing, hash32 } from '../../store/backends/hash-ring.js';

const KEYS = Array.from({ length: 30_000 }, (_, i) => `fv:clickStats:v2:${i}`);
const nodes = (n: number): { id: string; value: string }[] => Array.from({ length: n }, (_, i) => ({ id: `redis://10.0.0.${i + 1}:6379`, value: `shard-${i}` }));

/** FNV-1a 32 + murmur3 fmix32, checked against an independent Python implementation. */
const PINNED: Record<string, number> = { '': 2872998923, a: 444641715, 'fv:clickStats:v2:1': 1610989177 };

function assignment(ring: HashRing<string>): string[] {
  return KEYS.map((k) => ring.nodeFor(k));
}

describe('HashRing', () => {
  test('is deterministic: same nodes, same mapping, whatever their order', () => {
    const a = assignment(new HashRing(nodes(3)));
    assert.deepEqual(assignment(new HashRing(nodes(3))), a);
    assert.deepEqual(assignment(new HashRing([...nodes(3)].reverse())), a);
  });

  test('hash32 is a stable 32-bit hash (changing it would remap every stored key)', () => {
    for (const key of ['', 'a', 'fv:clickStats:v2:1', 'fv:clickStats:v2:2']) {
      const h = hash32(key);
      assert.ok(Number.isInteger(h) && h >= 0 && h < 2 ** 32, `${key}: ${h}`);
      assert.equal(hash32(key), h);
    }
    // Pinned values: a different hash would move keys between shards on upgrade.
    assert.deepEqual(['', 'a', 'fv:clickStats:v2:1'].map(hash32), [PINNED[''], PINNED.a, PINNED['fv:clickStats:v2:1']]);
    assert.notEqual(hash32('fv:clickStats:v2:1'), hash32('fv:clickStats:v2:2'));
  });

  test('30k keys over 3 nodes: each node gets between 25% and 42%', () => {
    const counts = new Map<string, number>();
    for (const node of assignment(new HashRing(nodes(3)))) counts.set(node, (counts.get(node) ?? 0) + 1);
    assert.deepEqual([...counts.keys()].sort(), ['shard-0', 'shard-1', 'shard-2']);
    for (const [node, count] of counts) {
      const share = count / KEYS.length;
      assert.ok(share >= 0.25 && share <= 0.42, `${node} has ${(share * 100).toFixed(1)}% of the keys`);
    }
  });

  test('adding a 4th node moves at most ~35% of keys, all of them to the new node', () => {
    const before = assignment(new HashRing(nodes(3)));
    const after = assignment(new HashRing(nodes(4)));
    let moved = 0;
    for (let i = 0; i < KEYS.length; i++) {
      if (before[i] !== after[i]) {
        moved++;
        assert.equal(after[i], 'shard-3', `${KEYS[i]} moved from ${before[i]} to ${after[i]}, not to the new node`);
      }
    }
    const share = moved / KEYS.length;
    assert.ok(share > 0.1 && share <= 0.35, `${(share * 100).toFixed(1)}% of the keys moved`);
  });

  test('one node owns every key; no nodes is an error', () => {
    const ring = new HashRing([{ id: 'only', value: 'only' }]);
    assert.ok(KEYS.slice(0, 1000).every((k) => ring.nodeFor(k) === 'only'));
    assert.throws(() => new HashRing<string>([]), /at least one node/);
  });
});
