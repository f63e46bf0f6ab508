import assert from 'node:assert/strict';
import calculateSlot from 'cluster-key-slot';
import { describe, test } from 'node:test';
import { recordKey } from '../../store/backends/byte-backend.js';
import { clusterKey, redisKey, storeKey } from '../../store/keys.js';

const view = { viewName: 'clickStats', version: 2 };

describe('store keys', () => {
  test('one node and the hash ring keep the layout they always had', () => {
    const record = recordKey(view, '42');
    assert.equal(record.routing, 'clickStats:v2:42');
    assert.equal(redisKey(record, 'value'), 'fv:clickStats:v2:42');
    assert.equal(redisKey(record, 'state'), 'fvs:clickStats:v2:42');
    assert.equal(storeKey({ viewName: 'clickStats', version: 2 } as never, '42'), 'fv:clickStats:v2:42');
  });

  test('Redis Cluster: the routing is the hash tag, so value and state share a slot for any id', () => {
    const record = recordKey(view, '42');
    assert.equal(clusterKey(record, 'value'), 'fv:{clickStats:v2:42}');
    assert.equal(clusterKey(record, 'state'), 'fvs:{clickStats:v2:42}');
    for (const id of ['', '}', '{', '}{', 'a}b', '{x}', '💡', ' ', ':'.repeat(40)]) {
      const r = recordKey(view, id);
      assert.equal(calculateSlot(clusterKey(r, 'value')), calculateSlot(clusterKey(r, 'state')), JSON.stringify(id));
    }
    // Versions and views of one entity spread over the slots rather than piling onto one.
    assert.notEqual(calculateSlot(clusterKey(recordKey(view, '42'), 'value')), calculateSlot(clusterKey(recordKey({ viewName: 'clickStats', version: 1 }, '42'), 'value')));
  });
});
