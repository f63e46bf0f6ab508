import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadRegistry, parseRegistry } from '../../schema/registry.js';
import { FeastError } from '../../serving/feast/errors.js';
import { FeastRequests, featureListOperation } from '../../serving/feast/request.js';
import { replaceOnce } from '../support/registry-text.js';
import fs from 'node:fs';
import { fromRoot } from '../../runtime/paths.js';

/**
 * The Feast request parser: a GetOnlineFeaturesRequest body into a plan of
 * view versions, columns and entity rows, and every bad body into the error
 * Feast's server would send (FastAPI's 422 validation body, or a FeastError
 * the client re-raises by class), with a message that says what to fix.
 */
const registry = loadRegistry();
const requests = new FeastRequests(registry);

/** The FeastError a body is refused with. */
function refusal(body: unknown): FeastError {
  try {
    requests.parse(body);
  } catch (error) {
    assert.ok(error instanceof FeastError, `expected a FeastError, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ${JSON.stringify(body)} to be refused`);
}

/** 422: FastAPI's {"detail": [...]} items. */
function detail(body: unknown): { type: string; loc: (string | number)[]; msg: string; input: unknown }[] {
  const error = refusal(body);
  assert.equal(error.status, 422, error.body);
  assert.equal(error.code, 'BAD_REQUEST');
  return JSON.parse(error.body).detail;
}

/** A typed FeastError: the JSON string of {module, class, message}, as Feast's server writes it. */
function typed(body: unknown): { status: number; module: string; class: string; message: string } {
  const error = refusal(body);
  const inner = JSON.parse(error.body);
  assert.equal(typeof inner, 'string', 'the body is a JSON string literal');
  return { status: error.status, ...JSON.parse(inner) };
}

describe('Feast request plans', () => {
  test('a feature list: distinct view versions in order, columns with Feast names, join keys first', () => {
    const r = requests.parse({ entities: { user_id: ['1', 2, '1'] }, features: ['clickStats:clickRate', 'profile:country', 'clickStats:clicks'] });
    assert.equal(r.rows, 3);
    assert.deepEqual(r.keys.map((k) => [k.name, k.entity.name, k.ids]), [['user_id', 'user', ['1', '2', '1']]]);
    assert.deepEqual(r.plan.views.map((v) => `${v.viewName}:v${v.version}`), ['clickStats:v2', 'profile:v1']);
    assert.deepEqual(r.plan.columns.map((c) => [c.name, c.slot, c.float]), [['clickRate', 0, true], ['country', 1, false], ['clicks', 0, false]]);
    assert.deepEqual(r.keyOf, [0, 0]);
    assert.equal(r.plan.operation, featureListOperation);
    assert.equal(r.versionMetadata, false);
  });

  test('full feature names, pinned versions (their own slot) and version metadata', () => {
    const r = requests.parse({
      entities: { user_id: ['1'] }, features: ['clickStats:clickRate', 'clickStats@v1:clickRate', 'clickStats@latest:clicks'],
      full_feature_names: true, include_feature_view_version_metadata: true,
    });
    assert.deepEqual(r.plan.columns.map((c) => c.name), ['clickStats__clickRate', 'clickStats@v1__clickRate', 'clickStats__clicks']);
    assert.deepEqual(r.plan.views.map((v) => v.version), [2, 1]);
    assert.equal(r.versionMetadata, true);
  });

  test('multi-entity rows: each view is read for its own entity\'s join key', () => {
    const r = requests.parse({ entities: { item_id: ['7', '8'], user_id: ['1', '1'] }, features: ['clickStats:clickRate', 'itemStats:ctr'] });
    assert.deepEqual(r.keys.map((k) => k.name), ['item_id', 'user_id']);
    assert.deepEqual(r.plan.entities.map((e) => e.name), ['user', 'item']);
    assert.deepEqual(r.keyOf, [1, 0]);
  });

  test('a feature service: its plan, made once, labelled by its name', () => {
    const a = requests.parse({ entities: { user_id: ['1'], item_id: ['2'] }, feature_service: 'ranking' });
    const b = requests.parse({ entities: { user_id: ['3'], item_id: ['4'] }, feature_service: 'ranking', features: [] });
    assert.equal(a.plan, b.plan);
    assert.equal(a.plan.operation, 'feast:ranking');
    assert.equal(a.plan.service?.name, 'ranking');
    assert.deepEqual(a.plan.columns.map((c) => c.name), ['clickRate', 'clicks', 'impressions', 'sessionLength', 'isPremium', 'country', 'embedding', 'ctr', 'price', 'category']);
    const full = requests.parse({ entities: { user_id: ['1'], item_id: ['2'] }, feature_service: 'ranking', full_feature_names: true });
    assert.equal(full.plan.columns[0]!.name, 'clickStats__clickRate');
  });

  test('the plan of a feature list is cached (the same object for the same list); the cache is bounded', () => {
    const small = new FeastRequests(registry, 2);
    const body = { entities: { user_id: ['1'] }, features: ['clickStats:clickRate'] };
    const first = small.parse(body).plan;
    assert.equal(small.parse(body).plan, first);
    small.parse({ ...body, features: ['profile:country'] });
    small.parse({ ...body, features: ['profile:embedding'] }); // full: cleared, then this one kept
    assert.notEqual(small.parse(body).plan, first);
  });

  test('booleans as pydantic reads them: yes/no, on/off, 1/0, t/f, in any case', () => {
    for (const [v, full] of [[true, true], ['yes', true], ['ON', true], [1, true], ['t', true], [false, false], ['no', false], [0, false], ['F', false]] as const) {
      const r = requests.parse({ entities: { user_id: ['1'] }, features: ['clickStats:clickRate'], full_feature_names: v });
      assert.equal(r.plan.columns[0]!.name, full ? 'clickStats__clickRate' : 'clickRate', String(v));
    }
  });

  test('no rows: an empty plan answer, not an error', () => {
    const r = requests.parse({ entities: { user_id: [] }, features: ['clickStats:clickRate'] });
    assert.equal(r.rows, 0);
  });
});

describe('Feast request errors', () => {
  const ok = { entities: { user_id: ['1'] }, features: ['clickStats:clickRate'] };

  test('shape errors: FastAPI\'s 422 body, every problem listed', () => {
    assert.deepEqual(detail([]), [{ type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', input: [] }]);
    assert.deepEqual(detail({ features: ['clickStats:clickRate'] }), [{ type: 'missing', loc: ['body', 'entities'], msg: 'Field required', input: { features: ['clickStats:clickRate'] } }]);
    assert.deepEqual(detail({ entities: { user_id: '1' }, features: [1], full_feature_names: 'maybe', feature_service: 5 }), [
      { type: 'list_type', loc: ['body', 'entities', 'user_id'], msg: 'Input should be a valid list', input: '1' },
      { type: 'string_type', loc: ['body', 'feature_service'], msg: 'Input should be a valid string', input: 5 },
      { type: 'string_type', loc: ['body', 'features', 0], msg: 'Input should be a valid string', input: 1 },
      { type: 'bool_parsing', loc: ['body', 'full_feature_names'], msg: 'Input should be a valid boolean, unable to interpret input', input: 'maybe' },
    ]);
    assert.deepEqual(detail({ entities: [], features: 'clickStats:clickRate', include_feature_view_version_metadata: null }).map((d) => [d.type, d.loc.join('.')]), [
      ['dict_type', 'body.entities'], ['list_type', 'body.features'], ['bool_type', 'body.include_feature_view_version_metadata'],
    ]);
  });

  test('no features, or both features and a feature service', () => {
    let [d] = detail({ entities: { user_id: ['1'] } });
    assert.deepEqual(d!.loc, ['body', 'features']);
    assert.match(d!.msg, /No features specified for retrieval/);
    [d] = detail({ ...ok, feature_service: 'ranking' });
    assert.match(d!.msg, /either features or feature_service, not both/);
  });

  test('entity rows: an unknown join key, mismatched lengths, a bad value, a view\'s key missing', () => {
    let [d] = detail({ ...ok, entities: { user_id: ['1'], customer_id: ['1'] } });
    assert.deepEqual(d!.loc, ['body', 'entities', 'customer_id']);
    assert.match(d!.msg, /unknown join key "customer_id"; the registry's join keys are user_id \(user\), item_id \(item\), merchant_id \(merchant\)/);
    [d] = detail({ ...ok, entities: { user_id: ['1', '2'], item_id: ['7'] } });
    assert.match(d!.msg, /All entity rows must have the same columns.*user_id has 2, item_id has 1/);
    for (const bad of [1.5, true, null, { id: 1 }, 2 ** 60]) {
      [d] = detail({ ...ok, entities: { user_id: ['1', bad] } });
      assert.deepEqual(d!.loc, ['body', 'entities', 'user_id', 1], JSON.stringify(bad));
      assert.match(d!.msg, /a string or an integer/);
    }
    [d] = detail({ entities: { user_id: ['1'] }, features: ['itemStats:ctr'] });
    assert.match(d!.msg, /feature view itemStats is keyed by item_id \(entity item\), which entities does not give/);
    [d] = detail({ entities: {}, features: ['itemStats:ctr'] });
    assert.match(d!.msg, /keyed by item_id/);
  });

  test('a reference without a feature is a 422 naming it', () => {
    const [d] = detail({ ...ok, features: ['clickStats:clickRate', 'clickStats'] });
    assert.deepEqual(d!.loc, ['body', 'features', 1]);
    assert.match(d!.msg, /Invalid feature reference 'clickStats'. Expected format: '<feature_view>:<feature>'/);
  });

  test('unknown view, version, feature service: 404 with the Feast class the client raises', () => {
    assert.deepEqual(typed({ ...ok, features: ['clickz:clickRate'] }),
      { status: 404, module: 'feast.errors', class: 'FeatureViewNotFoundException', message: 'Feature view clickz does not exist' });
    assert.deepEqual(typed({ ...ok, features: ['clickStats@v7:clickRate'] }),
      { status: 404, module: 'feast.errors', class: 'FeatureViewVersionNotFound', message: 'Version 7 of feature view clickStats does not exist (it has v1 to v2)' });
    assert.deepEqual(typed({ entities: { user_id: ['1'] }, feature_service: 'nope' }),
      { status: 404, module: 'feast.errors', class: 'FeatureServiceNotFoundException', message: 'Feature service nope does not exist' });
    // Python's json.dumps spacing, as FeastError.to_error_detail writes it.
    assert.equal(JSON.parse(refusal({ ...ok, features: ['clickz:a'] }).body),
      '{"module": "feast.errors", "class": "FeatureViewNotFoundException", "message": "Feature view clickz does not exist"}');
  });

  test('an unknown feature of a known view: 404 in FastAPI\'s detail form, with the code', () => {
    const error = refusal({ ...ok, features: ['clickStats:clickz'] });
    assert.equal(error.status, 404);
    assert.deepEqual(JSON.parse(error.body), { detail: 'Feature clickz not found in feature view clickStats v2 (its features: clickRate, clicks, impressions)', code: 'NOT_FOUND' });
  });

  test('two columns under one name: Feast\'s FeatureNameCollisionError, with its message', () => {
    let e = typed({ ...ok, features: ['clickStats:clickRate', 'clickStats@v1:clickRate'] });
    assert.equal(e.status, 422);
    assert.equal(e.class, 'FeatureNameCollisionError');
    assert.match(e.message, /^Duplicate features named clickRate found\.\nTo resolve this collision, either use the full feature name/);
    e = typed({ ...ok, features: ['clickStats:clickRate', 'clickStats:clickRate'], full_feature_names: true });
    assert.match(e.message, /^Duplicate features named clickStats__clickRate found/);
    // Pinned and active versions are different columns with full names.
    requests.parse({ ...ok, features: ['clickStats:clickRate', 'clickStats@v1:clickRate'], full_feature_names: true });
  });

  test('a feature service whose short names collide is refused only without full names', () => {
    const text = fs.readFileSync(fromRoot('schema', 'registry.yaml'), 'utf8');
    const colliding = parseRegistry(replaceOnce(text, '      - riskStats\n', '      - riskStats\n      - clickStats@v1:clickRate\n'), 'collide.yaml');
    const local = new FeastRequests(colliding);
    assert.equal(local.parse({ entities: { user_id: ['1'], merchant_id: ['2'] }, feature_service: 'fraud', full_feature_names: true }).plan.columns.length, 7);
    assert.throws(() => local.parse({ entities: { user_id: ['1'], merchant_id: ['2'] }, feature_service: 'fraud' }),
      (e: unknown) => e instanceof FeastError && e.status === 422 && e.body.includes('FeatureNameCollisionError'));
  });
});
