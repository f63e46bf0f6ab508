import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkFeastAgrees, feastBodies } from '../../loadtest/baselines/feast.js';
import { workloads } from '../../loadtest/workloads.js';
import { mulberry32 } from '../../store/demo-data.js';
import { loadRegistry } from '../../schema/registry.js';

const registry = loadRegistry();

const w1 = workloads.find((w) => w.name === 'W1')!;
const w2 = workloads.find((w) => w.name === 'W2')!;

const feastW1 = (rates: unknown[], statuses = rates.map(() => 'PRESENT')) => ({
  metadata: { feature_names: ['user_id', 'clickStats__clickRate'] },
  results: [
    { values: ['1', '2'], statuses: ['PRESENT', 'PRESENT'], event_timestamps: [] },
    { values: rates, statuses, event_timestamps: [] },
  ],
});
const gatewayW1 = { data: { users: [{ id: '1', clickStats: { clickRate: 0.25, stale: false } }, { id: '2', clickStats: { clickRate: 1, stale: false } }] } };

describe('the bench\'s Feast baseline (requests and the answer check)', () => {
  test('asks Feast for the ids the gateway gets from the same seed', () => {
    const vars = w1.variables(mulberry32(5)) as { ids: string[] };
    assert.deepEqual(JSON.parse(feastBodies(w1, 5, registry)()), { entities: { user_id: vars.ids }, features: ['clickStats:clickRate'], full_feature_names: true });
    const v2 = w2.variables(mulberry32(5)) as { user: string; items: string[] };
    const body = JSON.parse(feastBodies(w2, 5, registry)());
    assert.deepEqual(body.entities, { user_id: v2.items.map(() => v2.user), item_id: v2.items });
    assert.equal(body.features.length, 10);
  });

  test('accepts the same values (an integral double written as 1.0 or 1 alike)', () => {
    checkFeastAgrees(feastW1([0.25, 1.0]), gatewayW1, registry);
  });

  test('refuses a different value, a value Feast did not find, and a missing fact', () => {
    assert.throws(() => checkFeastAgrees(feastW1([0.25, 0.5]), gatewayW1, registry), /user:2:clickStats:clickRate = 0.5/);
    assert.throws(() => checkFeastAgrees(feastW1([0.25, null], ['PRESENT', 'NOT_FOUND']), gatewayW1, registry), /NOT_FOUND/);
    const three = { data: { users: [...gatewayW1.data.users, { id: '3', clickStats: { clickRate: 0, stale: false } }] } };
    assert.throws(() => checkFeastAgrees(feastW1([0.25, 1]), three, registry), /no user:3:clickStats:clickRate/);
  });
});
