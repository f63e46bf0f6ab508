import { createHash } from 'node:crypto';

/**
 * Client-side consistent hashing over N shards, with virtual nodes so keys
 * spread evenly and adding a shard moves only ~1/N of them.
 *
 * Libraries such as `hashring` were considered; they hash every lookup with
 * MD5 and carry an LRU we do not need. Lookup here is a 32-bit FNV-1a with a
 * murmur finalizer and a binary search: a few hundred nanoseconds per key,
 * which matters because every key of every request goes through it.
 */
export class HashRing<T> {
  private readonly points: Uint32Array;
  private readonly owners: T[];

  constructor(nodes: readonly { id: string; value: T }[], virtualNodes = 160) {
    if (nodes.length === 0) throw new Error('HashRing needs at least one node');
    const ring: { point: number; owner: T }[] = [];
    for (const node of nodes) {
      for (let v = 0; v < virtualNodes; v++) {
        const digest = createHash('md5').update(`${node.id}#${v}`).digest();
        ring.push({ point: digest.readUInt32BE(0), owner: node.value });
      }
    }
    ring.sort((a, b) => a.point - b.point);
    this.points = Uint32Array.from(ring.map((r) => r.point));
    this.owners = ring.map((r) => r.owner);
  }

  nodeFor(key: string): T {
    const h = hash32(key);
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === this.points.length ? 0 : lo]!;
  }
}

export function hash32(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // murmur3 fmix32: FNV alone clusters on keys that differ only at the end.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
