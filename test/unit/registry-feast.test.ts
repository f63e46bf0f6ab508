import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { onlyRegistryIssue, positionOf, replaceOnce } from '../support/registry-text.js';
import { feastColumnName, parseRef, resolveRef } from '../../schema/feast.js';
import { loadRegistry, parseRegistry } from '../../schema/registry.js';

/**
 * The registry's Feast names: join keys, feature references (Feast's own
 * syntax, feast/utils.py `_parse_feature_or_view_ref`) and feature services,
 * with the precise error of each mistake (file, line, path).
 */
const FILE = 'feast-registry.yaml';
const base = `entities:
  - name: user
    type: User
    key: id
    feastJoinKey: customer_id
    description: A user.
  - name: item
    type: Item
    key: id
    description: An item.
views:
  - name: clickStats
    entity: user
    description: Clicks of a user.
    owner: ranking@example.com
    ttl: 60s
    activeVersion: 2
    versions:
      - version: 1
        features:
          - { name: clickRate, type: Float }
      - version: 2
        features:
          - { name: clickRate, type: Float }
          - { name: clicks, type: Int }
  - name: itemStats
    entity: item
    description: Engagement of an item.
    owner: catalogue@example.com
    ttl: 1h
    versions:
      - version: 1
        features:
          - { name: ctr, type: Float }
featureServices:
  - name: ranking
    description: Ranking vector.
    owner: ranking@example.com
    features:
      - clickStats:clicks
      - clickStats@v1:clickRate
      - itemStats
`;
const mutate = (from: string, to: string, text = base): string => replaceOnce(text, from, to);
const onlyIssue = (text: string) => onlyRegistryIssue(text, FILE);

describe('Feast feature references', () => {
  test('parse as Feast parses them', () => {
    assert.deepEqual(parseRef('driver_stats:trips'), { view: 'driver_stats', version: null, feature: 'trips' });
    assert.deepEqual(parseRef('driver_stats@v2:trips'), { view: 'driver_stats', version: 2, feature: 'trips' });
    assert.deepEqual(parseRef('driver_stats@V3:trips'), { view: 'driver_stats', version: 3, feature: 'trips' });
    assert.deepEqual(parseRef('driver_stats@latest:trips'), { view: 'driver_stats', version: null, feature: 'trips' });
    assert.deepEqual(parseRef('driver_stats'), { view: 'driver_stats', version: null, feature: null });
    assert.deepEqual(parseRef('driver_stats@v2'), { view: 'driver_stats', version: 2, feature: null });
    // Not a version: the whole part before ':' is the view's name (which then does not exist).
    assert.deepEqual(parseRef('driver_stats@two:trips'), { view: 'driver_stats@two', version: null, feature: 'trips' });
    assert.deepEqual(parseRef('a:b:c'), { view: 'a', version: null, feature: 'b:c' });
  });

  test('resolve onto the active version, a pinned version, or say what is missing', () => {
    const registry = loadRegistry();
    const active = resolveRef(registry, 'clickStats:clickRate');
    assert.ok(Array.isArray(active));
    assert.deepEqual(active.map((r) => [r.version.viewName, r.version.version, r.feature.name, r.pinned]), [['clickStats', 2, 'clickRate', false]]);
    const pinned = resolveRef(registry, 'clickStats@v1:clickRate');
    assert.ok(Array.isArray(pinned));
    assert.deepEqual(pinned.map((r) => [r.version.version, r.pinned]), [[1, true]]);
    assert.deepEqual(resolveRef(registry, 'clickz:clickRate'), { kind: 'view', view: 'clickz', message: 'Feature view clickz does not exist' });
    const version = resolveRef(registry, 'clickStats@v9:clickRate');
    assert.ok(!Array.isArray(version) && version.kind === 'version' && version.version === 9, JSON.stringify(version));
    const feature = resolveRef(registry, 'clickStats@v1:clicks');
    assert.ok(!Array.isArray(feature) && feature.kind === 'feature');
    assert.match(feature.message, /Feature clicks not found in feature view clickStats v1 \(its features: clickRate\)/);
    const whole = resolveRef(registry, 'clickStats');
    assert.ok(!Array.isArray(whole) && whole.kind === 'syntax', 'a request names features, not whole views');
    const expanded = resolveRef(registry, 'clickStats', true);
    assert.ok(Array.isArray(expanded));
    assert.deepEqual(expanded.map((r) => r.feature.name), ['clickRate', 'clicks', 'impressions']);
  });

  test('column names as Feast writes them: short, view__feature, view@vN__feature', () => {
    const registry = loadRegistry();
    const [active] = resolveRef(registry, 'clickStats:clickRate') as Exclude<ReturnType<typeof resolveRef>, { kind: string }>;
    const [pinned] = resolveRef(registry, 'clickStats@v1:clickRate') as Exclude<ReturnType<typeof resolveRef>, { kind: string }>;
    assert.equal(feastColumnName(active!, false), 'clickRate');
    assert.equal(feastColumnName(active!, true), 'clickStats__clickRate');
    assert.equal(feastColumnName(pinned!, true), 'clickStats@v1__clickRate');
  });
});

describe('the registry\'s Feast names', () => {
  test('the shipped registry: join keys user_id, item_id, merchant_id and the ranking and fraud services', () => {
    const registry = loadRegistry();
    assert.deepEqual(registry.entities.map((e) => e.feastJoinKey), ['user_id', 'item_id', 'merchant_id']);
    assert.deepEqual(registry.featureServices.map((s) => s.name), ['ranking', 'fraud']);
    const fraud = registry.featureServices.find((s) => s.name === 'fraud')!;
    assert.deepEqual(fraud.features.map((f) => `${f.version.viewName}@v${f.version.version}:${f.feature.name}`), [
      'clickStats@v2:clickRate', 'profile@v1:country', 'profile@v1:isPremium',
      'riskStats@v1:txnCount1h', 'riskStats@v1:amountSum1h', 'riskStats@v1:chargebackRate',
    ]);
  });

  test('feastJoinKey names the key; without it the key is <entity>_id', () => {
    const registry = parseRegistry(base, FILE);
    assert.deepEqual(registry.entities.map((e) => e.feastJoinKey), ['customer_id', 'item_id']);
  });

  test('a feature service resolves pinned versions and whole views, in the registry\'s order', () => {
    const [ranking] = parseRegistry(base, FILE).featureServices;
    assert.equal(ranking!.description, 'Ranking vector.');
    assert.equal(ranking!.owner, 'ranking@example.com');
    assert.deepEqual(ranking!.features.map((f) => [f.ref, f.version.viewName, f.version.version, f.feature.name, f.pinned]), [
      ['clickStats:clicks', 'clickStats', 2, 'clicks', false],
      ['clickStats@v1:clickRate', 'clickStats', 1, 'clickRate', true],
      ['itemStats', 'itemStats', 1, 'ctr', false],
    ]);
  });

  test('no featureServices section: none', () => {
    assert.deepEqual(parseRegistry(base.slice(0, base.indexOf('featureServices:')), FILE).featureServices, []);
  });

  test('a join key that is no GraphQL name is an error at feastJoinKey', () => {
    const text = mutate('feastJoinKey: customer_id', 'feastJoinKey: customer-id');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/entities/0/feastJoinKey');
    assert.deepEqual({ line: issue.line, column: issue.column }, positionOf(text, 'customer-id'));
    assert.match(issue.message, /Feast join key "customer-id" is not a valid GraphQL name/);
  });

  test('two entities with one join key (explicit or by default) is an error at the second', () => {
    const text = mutate('feastJoinKey: customer_id', 'feastJoinKey: item_id');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/entities/1/name');
    assert.equal(issue.line, positionOf(text, '  - name: item\n').line);
    assert.match(issue.message, /duplicate Feast join key name "item_id" \(first declared at index 0\)/);
  });

  const featureAt = (text: string, ref: string) => {
    const issue = onlyIssue(text);
    assert.deepEqual({ line: issue.line, column: issue.column }, positionOf(text, ref), issue.message);
    return issue;
  };

  test('a service naming an unknown view, version or feature is an error at that reference', () => {
    let issue = featureAt(mutate('      - itemStats\n', '      - itemStatz:ctr\n'), 'itemStatz:ctr');
    assert.equal(issue.path, '/featureServices/0/features/2');
    assert.match(issue.message, /feature service "ranking": Feature view itemStatz does not exist/);
    issue = featureAt(mutate('clickStats@v1:clickRate', 'clickStats@v3:clickRate'), 'clickStats@v3:clickRate');
    assert.match(issue.message, /Version 3 of feature view clickStats does not exist \(it has v1 to v2\)/);
    issue = featureAt(mutate('clickStats@v1:clickRate', 'clickStats@v1:clicks'), 'clickStats@v1:clicks');
    assert.match(issue.message, /Feature clicks not found in feature view clickStats v1/);
    issue = featureAt(mutate('clickStats:clicks', '"clickStats:"'), '"clickStats:"');
    assert.match(issue.message, /no feature after ':'/);
  });

  test('a feature listed twice (also through a whole view) is an error at the repeat', () => {
    const text = mutate('      - itemStats\n', '      - itemStats\n      - itemStats@v1:ctr\n');
    const issue = featureAt(text, 'itemStats@v1:ctr');
    assert.equal(issue.path, '/featureServices/0/features/3');
    assert.match(issue.message, /lists itemStats v1 ctr twice \(also at index 2\)/);
  });

  test('service names: GraphQL names, each once', () => {
    const second = '  - name: ranking\n    description: Again.\n    owner: o@example.com\n    features: [itemStats:ctr]\n';
    let issue = onlyIssue(base + second);
    assert.equal(issue.path, '/featureServices/1/name');
    assert.match(issue.message, /duplicate feature service name "ranking"/);
    issue = onlyIssue(mutate('  - name: ranking', '  - name: ranking-v2'));
    assert.equal(issue.path, '/featureServices/0/name');
    assert.match(issue.message, /feature service name "ranking-v2" is not a valid GraphQL name/);
  });

  test('the shape: features required and non-empty, no unknown property', () => {
    let issue = onlyIssue(mutate('    features:\n      - clickStats:clicks\n      - clickStats@v1:clickRate\n      - itemStats\n', '    features: []\n'));
    assert.equal(issue.path, '/featureServices/0/features');
    issue = onlyIssue(mutate('    owner: ranking@example.com\n    features:', '    owner: ranking@example.com\n    tags: [x]\n    features:'));
    assert.equal(issue.path, '/featureServices/0/tags');
    assert.match(issue.message, /unknown property "tags"/);
  });
});
