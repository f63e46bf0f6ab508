import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Kind, parse, type OperationDefinitionNode } from 'graphql';
import { nextTimeChange, rootIdsOf, watchSetOf } from '../../gateway/subscriptions/live-operations.js';
import { loadRegistry } from '../../schema/registry.js';
import { compileOperation, type CompiledOperation } from '../../serving/compiled-operations.js';
import { executePlan } from '../../serving/plan.js';
import { createStore } from '../../store/create-store.js';
import { activeVersionOf, findView } from '../../schema/types.js';

const registry = loadRegistry();
const store = createStore({ kind: 'embedded' }, () => NOW);
const NOW = 1_800_000_000_000;

function compiled(body: string): { op: CompiledOperation; definition: OperationDefinitionNode } {
  const op = compileOperation(registry, 'Op', body, store, 100);
  assert.ok(typeof op !== 'string', String(op));
  const definition = parse(body).definitions.find((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION)!;
  return { op, definition };
}

describe('live operations: what an operation reads', () => {
  test('ids per root from variables and literals, merged per entity with the view versions that decide each root', () => {
    const { op, definition } = compiled(
      'query Op($u: ID!, $items: [ID!]!) { user(id: $u) { id clickStats { clickRate } } other: users(ids: ["u2", "u1"]) { profile { country } clickStatsV1 { clickRate } } items(ids: $items) { id } }',
    );
    const ids = rootIdsOf(definition, op.plan, { u: 'u1', items: ['i1', 'i2', 'i1'] });
    assert.deepEqual(ids, ['u1', ['u2', 'u1'], ['i1', 'i2', 'i1']]);
    assert.deepEqual(watchSetOf(op.plan, ids), [
      { entity: 'user', ids: ['u1', 'u2'], versions: [{ view: 'clickStats', version: 2 }, { view: 'profile', version: 1 }, { view: 'clickStats', version: 1 }] },
      // `items` selects no view: every active view of item decides whether an item exists, so each is watched.
      { entity: 'item', ids: ['i1', 'i2'], versions: [{ view: 'itemStats', version: 1 }] },
    ]);
  });

  test('an entity with no id requested is not watched', () => {
    const { op, definition } = compiled('query Op($ids: [ID!]!, $m: ID!) { users(ids: $ids) { id } merchant(id: $m) { riskStats { txnCount1h } } }');
    assert.deepEqual(watchSetOf(op.plan, rootIdsOf(definition, op.plan, { ids: [], m: 'm1' })), [
      { entity: 'merchant', ids: ['m1'], versions: [{ view: 'riskStats', version: 1 }] },
    ]);
  });

  test('the next change by time alone: a fresh value turning stale, a stale one expiring, none for missing values', async () => {
    const clickStats = activeVersionOf(findView(registry, 'clickStats')!);
    const ttlMs = clickStats.ttlSeconds * 1000;
    await store.write(clickStats, [
      { entityId: 'fresh', values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: NOW - 1000 },
      { entityId: 'stale', values: { clickRate: 0.5, clicks: 1, impressions: 2 }, eventTimeMs: NOW - ttlMs - 5000 },
    ]);
    const { op } = compiled('query Op($ids: [ID!]!) { users(ids: $ids) { clickStats { clickRate stale } } }');
    const run = (ids: string[]) => executePlan(op.plan, [ids], store);
    assert.equal(nextTimeChange(await run(['fresh', 'missing']), NOW), NOW - 1000 + ttlMs + 1, 'stale from the first millisecond past eventTime + TTL');
    assert.equal(nextTimeChange(await run(['stale', 'missing']), NOW), NOW - ttlMs - 5000 + ttlMs + ttlMs, 'gone one more TTL after it went stale');
    assert.equal(nextTimeChange(await run(['fresh', 'stale']), NOW), NOW + ttlMs - 5000, 'the earliest of them');
    assert.equal(nextTimeChange(await run(['missing']), NOW), null);
  });
});
