import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Type, tableFromIPC, type Table } from 'apache-arrow';
import { readManifest } from '../../schema/manifest.js';
import { loadRegistry, parseType } from '../../schema/registry.js';
import type { Entity, Feature, FeatureView, ViewVersion } from '../../schema/types.js';
import { compileOperation } from '../../serving/compiled-operations.js';
import { NoArrowFormError, arrowForm, encodeArrow } from '../../serving/encoders/arrow.js';
import { graphqlData } from '../../serving/encoders/graphql-json.js';
import { responseErrors } from '../../serving/errors.js';
import { assemblePlan, viewSelection, type Plan, type PlanResult, type RootSpec, type ViewSelection } from '../../serving/plan.js';
import { createStore } from '../../store/create-store.js';
import type { FeatureValues } from '../../store/codec.js';
import { DeadlineExceededError, StoreUnavailableError, type ReadResult, type StoredFeatures } from '../../store/online-store.js';
import { writeRows } from '../../store/rows.js';
import { demoRows } from '../../store/demo-data.js';
import { arrowMismatches } from '../support/arrow.js';

/**
 * The Arrow encoder (serving/encoders/arrow.ts), decoded with apache-arrow's own tableFromIPC:
 * its schema typed from the registry, its values and nulls against the typed result it was
 * given, its errors metadata, and, for every persisted operation over the embedded store, value
 * for value against the JSON encoder's answer of the same result.
 */
const NOW = Date.parse('2026-11-26T12:00:00.000Z');
const registry = loadRegistry();

/** A hand-built entity with one view of every feature type the registry allows. */
function feature(name: string, typeName: string): Feature {
  const type = parseType(typeName);
  assert.ok(type, `test setup: type ${typeName}`);
  return { name, type, typeName, description: '', aggregate: null };
}
const kinds: ViewVersion = {
  viewName: 'kinds', entityName: 'thing', version: 1, active: true, ttlSeconds: 60, materialization: null, readRoles: null,
  hotTier: { enabled: true, maxAgeMs: null },
  features: [
    feature('f', 'Float'), feature('i', 'Int'), feature('b', 'Boolean'), feature('s', 'String'),
    feature('fl', '[Float!]'), feature('il', '[Int!]'), feature('bl', '[Boolean!]'), feature('sl', '[String!]'),
  ],
};
const other: ViewVersion = { ...kinds, viewName: 'other', features: [feature('n', 'Int')] };
const viewOf = (v: ViewVersion): FeatureView => ({
  name: v.viewName, entityName: 'thing', description: '', owner: 'test', tags: [], ttlSeconds: 60, source: null, materialization: null,
  activeVersion: 1, readRoles: null, versions: [v],
});
const thing: Entity = { name: 'thing', typeName: 'Thing', singularField: 'thing', pluralField: 'things', feastJoinKey: 'thing_id', description: '', views: [viewOf(kinds), viewOf(other)] };

function select(view: ViewVersion, names: readonly string[]): ViewSelection {
  const selection = viewSelection(thing, view, names.map((name) => ({ responseKey: name, name })));
  assert.ok(typeof selection !== 'string', `test setup: ${String(selection)}`);
  return selection;
}
const allOfKinds = select(kinds, ['f', 'i', 'b', 's', 'fl', 'il', 'bl', 'sl', 'eventTime', 'stale']);

/**
 * The typed result of `plan` for these ids with these answers per view slot (what executePlan
 * yields after its reads): the input any producer hands the encoder.
 */
function resultOf(plan: Plan, ids: readonly (readonly string[] | string)[], answers: readonly Readonly<Record<string, ReadResult | Error>>[]): PlanResult {
  const reads = answers.map((byId) => Object.values(byId));
  const positions = answers.map((byId) => new Map(Object.keys(byId).map((id, k) => [id, k])));
  const failed = reads.some((r) => r.some((a) => a instanceof Error));
  return { kind: 'result', plan, ids, reads, positions, failed };
}
const fresh = (values: FeatureValues, eventTimeMs = NOW): StoredFeatures => ({ values, eventTimeMs, stale: false });
const stale = (values: FeatureValues, eventTimeMs = NOW - 120_000): StoredFeatures => ({ values, eventTimeMs, stale: true });

/** Column `name` as plain values (int64 as numbers, lists as arrays). */
function column(table: Table, name: string): unknown[] {
  const vector = table.getChild(name);
  assert.ok(vector, `no column ${name}`);
  return Array.from(vector, (v) => plainValue(v));
}
function plainValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (v !== null && typeof v === 'object' && Symbol.iterator in v) return Array.from(v as Iterable<unknown>, plainValue);
  return v;
}

describe('Arrow encoder: schema', () => {
  const plan = assemblePlan('Kinds', [{ responseKey: 'things', entity: thing, plural: true, fields: [{ responseKey: 'id', kind: 'id' }, { responseKey: 'kinds', kind: 'view', selection: allOfKinds }] }]);

  test('columns typed from the registry: Float float64, Int int64, Boolean bool, String utf8, lists of them; eventTime ms UTC; stale bool', () => {
    const table = tableFromIPC(encodeArrow(resultOf(plan, [[]], [{}])));
    const types = Object.fromEntries(table.schema.fields.map((f) => [f.name, String(f.type)]));
    assert.deepEqual(types, {
      field: 'Dictionary<Int32, Utf8>',
      id: 'Utf8',
      'kinds.f': 'Float64',
      'kinds.i': 'Int64',
      'kinds.b': 'Bool',
      'kinds.s': 'Utf8',
      'kinds.fl': 'List<Float64>',
      'kinds.il': 'List<Int64>',
      'kinds.bl': 'List<Bool>',
      'kinds.sl': 'List<Utf8>',
      'kinds.eventTime': 'Timestamp<MILLISECOND, UTC>',
      'kinds.stale': 'Bool',
    });
    const nullable = Object.fromEntries(table.schema.fields.map((f) => [f.name, f.nullable]));
    assert.equal(nullable.field, false);
    assert.equal(nullable.id, false);
    assert.equal(nullable['kinds.f'], true);
    const list = table.schema.fields.find((f) => f.name === 'kinds.fl')!.type;
    assert.equal(list.typeId, Type.List);
    assert.equal(list.children[0].nullable, false, 'list items are non-null, as [Float!] says');
    assert.equal(table.numRows, 0);
    assert.equal(table.batches.length, 1, 'a root field with no ids still has its batch');
    assert.equal(table.schema.metadata.get('errors'), '[]');
  });

  test('eventTime and stale columns exist even where the operation selects neither', () => {
    const onlyF = assemblePlan('OnlyF', [{ responseKey: 'thing', entity: thing, plural: false, fields: [{ responseKey: 'kinds', kind: 'view', selection: select(kinds, ['f']) }] }]);
    const table = tableFromIPC(encodeArrow(resultOf(onlyF, ['a'], [{ a: stale({ f: 1 }) }])));
    assert.deepEqual(table.schema.fields.map((f) => f.name), ['field', 'id', 'kinds.f', 'kinds.eventTime', 'kinds.stale']);
    assert.deepEqual(column(table, 'kinds.f'), [null], 'stale: the feature is null');
    assert.deepEqual(column(table, 'kinds.stale'), [true], 'and the row says why');
    assert.deepEqual(column(table, 'kinds.eventTime'), [NOW - 120_000]);
  });

  test('a plan with no Arrow form says why: a root selecting no view, two meanings for one column name', () => {
    const idsOnly = assemblePlan('IdsOnly', [{ responseKey: 'things', entity: thing, plural: true, fields: [{ responseKey: 'id', kind: 'id' }] }]);
    assert.match(String(arrowForm(idsOnly)), /root field things selects no feature view/);
    assert.throws(() => encodeArrow(resultOf(idsOnly, [['a']], [{ a: null }, { a: null }])), (e: unknown) => e instanceof NoArrowFormError && /IdsOnly has no Arrow form/.test(e.message));
    // An alias `stale` for the feature f: the column kinds.stale would be both.
    const aliased = viewSelection(thing, kinds, [{ responseKey: 'stale', name: 'f' }]);
    assert.ok(typeof aliased !== 'string');
    const clash = assemblePlan('Clash', [{ responseKey: 'thing', entity: thing, plural: false, fields: [{ responseKey: 'kinds', kind: 'view', selection: aliased }] }]);
    assert.match(String(arrowForm(clash)), /column kinds\.stale would hold both kinds:v1:feature f and kinds:v1:stale/);
  });
});

describe('Arrow encoder: values and nulls', () => {
  const plan = assemblePlan('Kinds', [{ responseKey: 'things', entity: thing, plural: true, fields: [{ responseKey: 'id', kind: 'id' }, { responseKey: 'kinds', kind: 'view', selection: allOfKinds }] }]);
  const INT32_MIN = -(2 ** 31);
  const INT32_MAX = 2 ** 31 - 1;
  const full: FeatureValues = { f: 0.1, i: INT32_MIN, b: true, s: 'DE', fl: [0.5, -1e-7, 1e21, 5e-324], il: [0, -1, INT32_MAX], bl: [true, false], sl: ['', '🌍'] };

  test('fresh, stale, missing, absent features, duplicate ids: one row per requested id in order', () => {
    const result = resultOf(plan, [['a', 'b', 'gone', 'a', 'sparse']], [{
      a: fresh(full),
      b: stale(full),
      gone: null,
      sparse: fresh({ f: -0, i: INT32_MAX, b: false, s: 'ü', fl: [1], il: [1], bl: [false], sl: ['x'], extra: 1 } as FeatureValues, 0),
    }]);
    const table = tableFromIPC(encodeArrow(result));
    assert.deepEqual(column(table, 'field'), ['things', 'things', 'things', 'things', 'things']);
    assert.deepEqual(column(table, 'id'), ['a', 'b', 'gone', 'a', 'sparse']);
    assert.deepEqual(column(table, 'kinds.f'), [0.1, null, null, 0.1, -0]);
    assert.ok(Object.is(column(table, 'kinds.f')[4], -0), 'float64 keeps -0');
    assert.deepEqual(column(table, 'kinds.i'), [INT32_MIN, null, null, INT32_MIN, INT32_MAX]);
    assert.deepEqual(column(table, 'kinds.b'), [true, null, null, true, false]);
    assert.deepEqual(column(table, 'kinds.s'), ['DE', null, null, 'DE', 'ü']);
    assert.deepEqual(column(table, 'kinds.fl'), [[0.5, -1e-7, 1e21, 5e-324], null, null, [0.5, -1e-7, 1e21, 5e-324], [1]]);
    assert.deepEqual(column(table, 'kinds.il'), [[0, -1, INT32_MAX], null, null, [0, -1, INT32_MAX], [1]]);
    assert.deepEqual(column(table, 'kinds.bl'), [[true, false], null, null, [true, false], [false]]);
    assert.deepEqual(column(table, 'kinds.sl'), [['', '🌍'], null, null, ['', '🌍'], ['x']]);
    assert.deepEqual(column(table, 'kinds.eventTime'), [NOW, NOW - 120_000, null, NOW, 0]);
    assert.deepEqual(column(table, 'kinds.stale'), [false, true, null, false, false]);
  });

  test('a feature the stored value lacks is null, as in JSON', () => {
    const table = tableFromIPC(encodeArrow(resultOf(plan, [['a']], [{ a: fresh({ f: 2 }) }])));
    assert.deepEqual(column(table, 'kinds.f'), [2]);
    assert.deepEqual(column(table, 'kinds.i'), [null]);
    assert.deepEqual(column(table, 'kinds.fl'), [null]);
    assert.deepEqual(column(table, 'kinds.stale'), [false]);
  });

  test('event times before 1970 and near year 9999, and the largest safe integers, survive the two 32-bit halves', () => {
    const times = [-1, -86_400_001, 253402300799999, 2 ** 53 - 1, -(2 ** 53 - 1), 4294967296, 4294967295];
    const ids = times.map((_, k) => `t${k}`);
    const answers = Object.fromEntries(times.map((t, k) => [ids[k]!, fresh({ i: k }, t)]));
    const table = tableFromIPC(encodeArrow(resultOf(plan, [ids], [answers])));
    assert.deepEqual(column(table, 'kinds.eventTime'), times);
  });

  test('several root fields: one batch each, in order; a column another root field selects is null in this one; a shared view key shares its columns', () => {
    const specs: RootSpec[] = [
      { responseKey: 'thing', entity: thing, plural: false, fields: [{ responseKey: 'kinds', kind: 'view', selection: select(kinds, ['f']) }] },
      { responseKey: 'more', entity: thing, plural: true, fields: [{ responseKey: 'kinds', kind: 'view', selection: select(kinds, ['i']) }, { responseKey: 'other', kind: 'view', selection: select(other, ['n']) }] },
    ];
    const twoRoots = assemblePlan('TwoRoots', specs);
    const result = resultOf(twoRoots, ['x', ['y', 'x']], [{ x: fresh({ f: 1, i: 10 }), y: fresh({ f: 2, i: 20 }) }, { y: fresh({ n: 7 }), x: null }]);
    const table = tableFromIPC(encodeArrow(result));
    assert.equal(table.batches.length, 2);
    assert.deepEqual(table.batches.map((b) => b.numRows), [1, 2]);
    assert.deepEqual(table.schema.fields.map((f) => f.name), ['field', 'id', 'kinds.f', 'kinds.eventTime', 'kinds.stale', 'kinds.i', 'other.n', 'other.eventTime', 'other.stale']);
    assert.deepEqual(column(table, 'field'), ['thing', 'more', 'more']);
    assert.deepEqual(column(table, 'kinds.f'), [1, null, null], 'more does not select kinds.f');
    assert.deepEqual(column(table, 'kinds.i'), [null, 20, 10], 'thing does not select kinds.i');
    assert.deepEqual(column(table, 'kinds.stale'), [false, false, false], 'both select kinds: its stale column is shared');
    assert.deepEqual(column(table, 'other.n'), [null, 7, null]);
    assert.deepEqual(column(table, 'other.stale'), [null, false, null]);
    assert.deepEqual(arrowMismatches(encodeArrow(result), { data: graphqlData(result) }, { thing: 'x', more: ['y', 'x'] }), []);
  });
});

describe('Arrow encoder: partly failed reads', () => {
  const down = new StoreUnavailableError('sharded-redis', '127.0.0.1:6390', 'Connection is closed.');
  const late = new DeadlineExceededError('sharded-redis', '127.0.0.1:6391', 250);
  const specs: RootSpec[] = [{
    responseKey: 'things', entity: thing, plural: true,
    fields: [{ responseKey: 'id', kind: 'id' }, { responseKey: 'kinds', kind: 'view', selection: select(kinds, ['f', 'stale']) }, { responseKey: 'other', kind: 'view', selection: select(other, ['n']) }],
  }];
  const plan = assemblePlan('Partial', specs);

  test('failed values are null; the errors metadata holds the GraphQL errors list the generic path reports', () => {
    // a: both views read; b: one failed, the other has a value (the entity exists, the field errors);
    // c: one failed, the other missing (existence unknown: the entity's error); d: both failed (the first view's error).
    const result = resultOf(plan, [['a', 'b', 'c', 'd']], [
      { a: fresh({ f: 1 }), b: down, c: down, d: late },
      { a: fresh({ n: 1 }), b: fresh({ n: 2 }), c: null, d: down },
    ]);
    const table = tableFromIPC(encodeArrow(result));
    assert.deepEqual(column(table, 'kinds.f'), [1, null, null, null]);
    assert.deepEqual(column(table, 'kinds.stale'), [false, null, null, null]);
    assert.deepEqual(column(table, 'other.n'), [1, 2, null, null]);
    const errors = JSON.parse(table.schema.metadata.get('errors')!);
    assert.deepEqual(errors, [
      { message: down.message, path: ['things', 1, 'kinds'], extensions: { code: 'STORE_UNAVAILABLE', store: 'sharded-redis', shard: '127.0.0.1:6390', serviceName: 'thing' } },
      { message: down.message, path: ['things', 2], extensions: { code: 'STORE_UNAVAILABLE', store: 'sharded-redis', shard: '127.0.0.1:6390', serviceName: 'thing' } },
      { message: late.message, path: ['things', 3], extensions: { code: 'DEADLINE_EXCEEDED', store: 'sharded-redis', shard: '127.0.0.1:6391', deadlineMs: 250, serviceName: 'thing' } },
    ]);
    assert.deepEqual(errors, JSON.parse(JSON.stringify(responseErrors(result))), 'the one rule of serving/errors.ts');
  });

  test('a singular root field: errors at its own path', () => {
    const single = assemblePlan('One', [{ ...specs[0]!, responseKey: 'thing', plural: false }]);
    const table = tableFromIPC(encodeArrow(resultOf(single, ['b'], [{ b: down }, { b: fresh({ n: 2 }) }])));
    assert.deepEqual(JSON.parse(table.schema.metadata.get('errors')!).map((e: { path: unknown }) => e.path), [['thing', 'kinds']]);
  });

  test('a failure that is not a store error is still coded, as Apollo Server codes it', () => {
    const table = tableFromIPC(encodeArrow(resultOf(plan, [['a']], [{ a: new Error('boom') }, { a: null }])));
    assert.deepEqual(JSON.parse(table.schema.metadata.get('errors')!), [{ message: 'boom', path: ['things', 0], extensions: { code: 'INTERNAL_SERVER_ERROR', serviceName: 'thing' } }]);
  });
});

describe('Arrow encoder: every persisted operation agrees with the JSON encoder value for value', () => {
  const store = createStore({ kind: 'embedded' }, () => NOW);
  const manifest = readManifest();
  const cases: Record<string, Record<string, readonly string[] | string>[]> = {
    UserClickRate: [{ ids: ['1', '21', '404', '1'] }, { ids: [] }],
    RankingFeatures: [{ user: '1', items: ['1', '21', '404'] }, { user: '21', items: [] }, { user: '404', items: ['2'] }],
    FraudFeatures: [{ user: '1', merchant: '1' }, { user: '22', merchant: '404' }],
  };
  const rootIds: Record<string, (v: Record<string, readonly string[] | string>) => Record<string, readonly string[] | string>> = {
    UserClickRate: (v) => ({ users: v.ids! }),
    RankingFeatures: (v) => ({ user: v.user!, items: v.items! }),
    FraudFeatures: (v) => ({ user: v.user!, merchant: v.merchant! }),
  };

  test('fresh, stale and missing values', async () => {
    await writeRows(store, demoRows(registry, { eventTimeMs: NOW - 5_000, counts: { user: 20, item: 20, merchant: 20 } }));
    // Ids 21-25 stale (written long before their TTLs; the embedded store keeps them one more TTL).
    const older = [...demoRows(registry, { eventTimeMs: NOW - 3_700_000, counts: { user: 25, item: 25, merchant: 25 } })].filter((r) => Number(r.row.entityId) > 20 && r.view.ttlSeconds === 3600);
    const olderUsers = [...demoRows(registry, { eventTimeMs: NOW - 90_000, counts: { user: 25, item: 0, merchant: 0 } })].filter((r) => Number(r.row.entityId) > 20 && r.view.ttlSeconds === 60);
    await writeRows(store, [...older, ...olderUsers]);
    let stales = 0;
    for (const [name, variableSets] of Object.entries(cases)) {
      const op = manifest.operations.find((o) => o.name === name)!;
      const compiled = compileOperation(registry, name, op.body, store, 100);
      assert.ok(typeof compiled !== 'string', String(compiled));
      for (const variables of variableSets) {
        const result = await compiled.run(variables, undefined);
        assert.equal(result.kind, 'result');
        if (result.kind !== 'result') continue;
        const bytes = encodeArrow(result);
        assert.deepEqual(arrowMismatches(bytes, { data: graphqlData(result) }, rootIds[name]!(variables)), [], `${name} ${JSON.stringify(variables)}`);
        stales += tableFromIPC(bytes).schema.fields.filter((f) => f.name.endsWith('.stale')).reduce((n, f) => n + column(tableFromIPC(bytes), f.name).filter((v) => v === true).length, 0);
      }
    }
    assert.ok(stales > 0, 'the cases include stale values');
  });
});
