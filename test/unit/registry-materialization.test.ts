import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { onlyRegistryIssue, positionOf, registryIssues, replaceOnce, viewOf } from '../support/registry-text.js';
import { loadRegistry, parseRegistry, type RegistryIssue } from '../../schema/registry.js';
import type { FeatureView, Registry } from '../../schema/types.js';

/**
 * The registry's streaming half: event topics with their schemas, and views
 * materialized from them (source, entityKey, window, allowedLateness, an
 * aggregate per feature). First what the shipped registry declares, then one
 * test per error, each changing one piece of a small valid registry and
 * checking the issue's path and line (and column where the value is inline).
 */
const FILE = 'stream-registry.yaml';
const base = `entities:
  - name: user
    type: User
    key: id
    description: A user.
events:
  - topic: clicks
    description: Ad impressions.
    key: userId
    timestamp: ts
    partitions: 6
    fields:
      - { name: userId, type: String }
      - { name: clicked, type: Boolean }
      - { name: ts, type: Timestamp }
      - { name: price, type: Float, optional: true }
      - { name: label, type: String }
      - { name: n, type: Int }
      - { name: maybeUser, type: String, optional: true }
      - { name: seenAt, type: Timestamp, optional: true }
views:
  - name: clickStats
    entity: user
    description: Clicks of a user.
    owner: ranking@example.com
    ttl: 60s
    source: clicks
    entityKey: userId
    window: { size: 10m, slide: 1m }
    allowedLateness: 30s
    versions:
      - version: 1
        features:
          - { name: clicks, type: Int, aggregate: { fn: count, where: clicked } }
          - { name: rate, type: Float, aggregate: { fn: ratio, numerator: { fn: count, where: clicked }, denominator: { fn: count } } }
          - { name: spent, type: Float, aggregate: { fn: sum, of: price } }
  - name: profile
    entity: user
    description: Profile attributes.
    owner: identity@example.com
    ttl: 7d
    versions:
      - version: 1
        features:
          - { name: country, type: String }
`;

const mutate = (from: string, to: string, text = base): string => replaceOnce(text, from, to);
const posOf = positionOf;

/** Line and column of the last `needle` on the only line containing `lineNeedle` (values come last on their line). */
function posIn(text: string, lineNeedle: string, needle: string): { line: number; column: number } {
  const { line } = posOf(text, lineNeedle);
  const column = text.split('\n')[line - 1]!.lastIndexOf(needle) + 1;
  assert.ok(column > 0, `test setup: ${needle} on line ${line}`);
  return { line, column };
}

const issuesOf = (text: string): readonly RegistryIssue[] => registryIssues(text, FILE);

function onlyIssue(text: string): RegistryIssue {
  const issue = onlyRegistryIssue(text, FILE);
  assert.equal(issue.file, FILE);
  return issue;
}

const at = (issue: RegistryIssue) => ({ line: issue.line, column: issue.column });

const view = (registry: Registry, name: string): FeatureView => viewOf(registry, name);

/** Inserts another event topic before `views:`. */
function withEvent(topic: string, text = base): string {
  return mutate('views:\n', `  - topic: ${topic}\n    description: Another.\n    key: id\n    timestamp: at\n    fields:\n      - { name: id, type: String }\n      - { name: at, type: Timestamp }\nviews:\n`, text);
}

describe('the shipped registry: events and materializations', () => {
  const registry = loadRegistry();

  test('declares click-events and transactions with their schemas', () => {
    assert.deepEqual(registry.events.map((e) => [e.topic, e.key, e.timestamp, e.partitions]), [
      ['click-events', 'userId', 'ts', 3],
      ['transactions', 'merchantId', 'ts', 3],
    ]);
    assert.deepEqual(registry.events[0]!.fields.map((f) => [f.name, f.type, f.optional]), [
      ['userId', 'String', false], ['adId', 'String', false], ['clicked', 'Boolean', false], ['ts', 'Timestamp', false],
      ['price', 'Float', true], ['category', 'String', true],
    ]);
    assert.deepEqual(registry.events[1]!.fields.map((f) => [f.name, f.type, f.optional]), [
      ['userId', 'String', false], ['merchantId', 'String', false], ['amount', 'Float', false], ['chargeback', 'Boolean', false], ['ts', 'Timestamp', false],
    ]);
    assert.match(registry.events[0]!.fields[0]!.description, /user who saw the ad/);
  });

  test('clickStats: click-events by userId, 10m window sliding by 1m, 30s lateness, in every version', () => {
    const clickStats = view(registry, 'clickStats');
    const expected = { source: 'click-events', entityKey: 'userId', windowMs: 600_000, slideMs: 60_000, allowedLatenessMs: 30_000 };
    assert.deepEqual(clickStats.materialization, expected);
    assert.equal(clickStats.source, 'click-events');
    for (const version of clickStats.versions) assert.deepEqual(version.materialization, expected, `v${version.version}`);
  });

  test('clickStats aggregates: clickRate is count where clicked over count; clicks and impressions are counts', () => {
    const [v1, v2] = view(registry, 'clickStats').versions;
    const clickRate = { fn: 'ratio', numerator: { fn: 'count', where: 'clicked' }, denominator: { fn: 'count', where: null } };
    assert.deepEqual(v1!.features.map((f) => [f.name, f.aggregate]), [['clickRate', clickRate]]);
    assert.deepEqual(v2!.features.map((f) => [f.name, f.aggregate]), [
      ['clickRate', clickRate],
      ['clicks', { fn: 'count', where: 'clicked' }],
      ['impressions', { fn: 'count', where: null }],
    ]);
  });

  test('itemStats (by adId, 1h/5m, 1m) and riskStats (transactions by merchantId); profile is batch-loaded', () => {
    const itemStats = view(registry, 'itemStats');
    assert.deepEqual(itemStats.materialization, { source: 'click-events', entityKey: 'adId', windowMs: 3_600_000, slideMs: 300_000, allowedLatenessMs: 60_000 });
    assert.deepEqual(itemStats.versions[0]!.features.map((f) => [f.name, f.aggregate]), [
      ['ctr', { fn: 'ratio', numerator: { fn: 'count', where: 'clicked' }, denominator: { fn: 'count', where: null } }],
      ['price', { fn: 'last', of: 'price', where: null }],
      ['category', { fn: 'last', of: 'category', where: null }],
    ]);
    const riskStats = view(registry, 'riskStats');
    assert.deepEqual(riskStats.materialization, { source: 'transactions', entityKey: 'merchantId', windowMs: 3_600_000, slideMs: 300_000, allowedLatenessMs: 60_000 });
    assert.deepEqual(riskStats.versions[0]!.features.map((f) => [f.name, f.aggregate]), [
      ['txnCount1h', { fn: 'count', where: null }],
      ['amountSum1h', { fn: 'sum', of: 'amount', where: null }],
      ['chargebackRate', { fn: 'ratio', numerator: { fn: 'count', where: 'chargeback' }, denominator: { fn: 'count', where: null } }],
    ]);
    const profile = view(registry, 'profile');
    assert.equal(profile.materialization, null);
    assert.equal(profile.source, null);
    for (const f of profile.versions[0]!.features) assert.equal(f.aggregate, null, f.name);
  });
});

describe('parseRegistry: streaming settings that are accepted', () => {
  test('the base registry parses', () => {
    const registry = parseRegistry(base, FILE);
    assert.deepEqual(registry.events.map((e) => [e.topic, e.partitions, e.fields.length]), [['clicks', 6, 8]]);
    assert.deepEqual(view(registry, 'clickStats').materialization, { source: 'clicks', entityKey: 'userId', windowMs: 600_000, slideMs: 60_000, allowedLatenessMs: 30_000 });
    assert.deepEqual(view(registry, 'clickStats').versions[0]!.features[2]!.aggregate, { fn: 'sum', of: 'price', where: null });
  });

  test('partitions default to 3; no events section at all is fine for batch-only registries', () => {
    assert.equal(parseRegistry(mutate('    partitions: 6\n', ''), FILE).events[0]!.partitions, 3);
    const batchOnly = parseRegistry(`entities:\n  - { name: user, type: User, key: id, description: A user. }\nviews:\n  - name: profile\n    entity: user\n    description: P.\n    owner: o@example.com\n    ttl: 1d\n    versions:\n      - version: 1\n        features:\n          - { name: country, type: String }\n`, FILE);
    assert.deepEqual(batchOnly.events, []);
  });

  test('durations: a tumbling window when slide is omitted; whole seconds as numbers; ms; zero lateness; lateness defaults to 0', () => {
    const m = (text: string) => view(parseRegistry(text, FILE), 'clickStats').materialization;
    assert.deepEqual(m(mutate('{ size: 10m, slide: 1m }', '{ size: 1h }')), { source: 'clicks', entityKey: 'userId', windowMs: 3_600_000, slideMs: 3_600_000, allowedLatenessMs: 30_000 });
    assert.equal(m(mutate('{ size: 10m, slide: 1m }', '{ size: 600, slide: 60 }'))!.windowMs, 600_000);
    assert.equal(m(mutate('allowedLateness: 30s', 'allowedLateness: 500ms'))!.allowedLatenessMs, 500);
    assert.equal(m(mutate('allowedLateness: 30s', 'allowedLateness: 0'))!.allowedLatenessMs, 0);
    assert.equal(m(mutate('allowedLateness: 30s', 'allowedLateness: 0s'))!.allowedLatenessMs, 0);
    assert.equal(m(mutate('    allowedLateness: 30s\n', ''))!.allowedLatenessMs, 0);
    assert.equal(m(mutate('{ size: 10m, slide: 1m }', '{ size: 1d, slide: 1h }'))!.slideMs, 3_600_000);
  });

  test('an Int entity key; sum of an Int into an Int; last of a String, Boolean and Timestamp; avg into a Float', () => {
    let text = mutate('entityKey: userId', 'entityKey: n');
    text = mutate('{ name: spent, type: Float, aggregate: { fn: sum, of: price } }',
      '{ name: spent, type: Float, aggregate: { fn: sum, of: price } }\n          - { name: total, type: Int, aggregate: { fn: sum, of: n } }' +
      '\n          - { name: last, type: String, aggregate: { fn: last, of: label } }\n          - { name: lastClicked, type: Boolean, aggregate: { fn: last, of: clicked } }' +
      '\n          - { name: seen, type: Int, aggregate: { fn: last, of: seenAt } }\n          - { name: avgPrice, type: Float, aggregate: { fn: avg, of: price, where: clicked } }', text);
    const features = view(parseRegistry(text, FILE), 'clickStats').versions[0]!.features;
    assert.equal(view(parseRegistry(text, FILE), 'clickStats').materialization!.entityKey, 'n');
    assert.deepEqual(features.slice(3).map((f) => f.aggregate), [
      { fn: 'sum', of: 'n', where: null }, { fn: 'last', of: 'label', where: null }, { fn: 'last', of: 'clicked', where: null },
      { fn: 'last', of: 'seenAt', where: null }, { fn: 'avg', of: 'price', where: 'clicked' },
    ]);
  });
});

describe('registry errors: materialized views', () => {
  test('unknown source topic (reported once; its aggregates are not blamed on a missing source)', () => {
    const text = mutate('source: clicks', 'source: clickz');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/source');
    assert.deepEqual(at(issue), posOf(text, 'clickz'));
    assert.equal(issue.message, 'source "clickz" is not a declared event topic');
    assert.equal(issue.expected, 'one of: clicks');
  });

  test('a source when no events are declared', () => {
    const text = base.replace(/events:\n[\s\S]*?views:\n/, 'views:\n').replace('    entityKey: userId\n    window: { size: 10m, slide: 1m }\n    allowedLateness: 30s\n', '');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/source');
    assert.match(issue.expected, /\(none declared under events\)/);
  });

  test('entityKey that is not a field of the source', () => {
    const text = mutate('entityKey: userId', 'entityKey: user_id');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/entityKey');
    assert.deepEqual(at(issue), posOf(text, 'user_id'));
    assert.equal(issue.message, 'entityKey "user_id" is not a field of clicks');
    assert.match(issue.expected, /^one of userId, clicked, ts, /);
  });

  test('entityKey missing is reported at the view', () => {
    const text = mutate('    entityKey: userId\n', '');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/entityKey');
    assert.deepEqual(at(issue), { line: posOf(text, '- name: clickStats').line, column: 5 });
    assert.match(issue.message, /^entityKey .* is not a field of clicks$/);
  });

  for (const [key, why] of [['maybeUser', 'optional'], ['clicked', 'Boolean'], ['price', 'Float'], ['ts', 'Timestamp']] as const) {
    test(`entityKey that is ${why} (${key})`, () => {
      const text = mutate('entityKey: userId', `entityKey: ${key}`);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/views/0/entityKey');
      assert.deepEqual(at(issue), posIn(text, `entityKey: ${key}`, key));
      assert.equal(issue.message, `entityKey "${key}" must be a required String or Int field`);
    });
  }

  test('window missing is reported at the view (and nothing else)', () => {
    const text = mutate('    window: { size: 10m, slide: 1m }\n', '');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0');
    assert.deepEqual(at(issue), { line: posOf(text, '- name: clickStats').line, column: 5 });
    assert.equal(issue.message, 'a materialized view needs a window');
    assert.match(issue.expected, /size: 10m, slide: 1m/);
  });

  test('window without size is a shape error', () => {
    const text = mutate('{ size: 10m, slide: 1m }', '{ slide: 1m }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/window');
    assert.equal(issue.message, 'missing property "size"');
    assert.equal(issue.line, posOf(text, '{ slide: 1m }').line);
  });

  for (const [window, slide] of [['{ size: 10m, slide: 3m }', '3m'], ['{ size: 1m, slide: 2m }', '2m'], ['{ size: 10m, slide: 7s }', '7s']] as const) {
    test(`slide that does not divide the size: ${window}`, () => {
      const text = mutate('{ size: 10m, slide: 1m }', window);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/views/0/window/slide');
      assert.deepEqual(at(issue), posIn(text, window, slide));
      assert.match(issue.message, /^slide must divide the window size \(\d+ ms\)$/);
    });
  }

  const badDurations: [what: string, from: string, to: string, path: string, shown: string, value: string][] = [
    ['size with an unknown unit', '{ size: 10m, slide: 1m }', '{ size: 10x, slide: 1m }', '/views/0/window/size', '"10x"', '10x'],
    ['size zero', '{ size: 10m, slide: 1m }', '{ size: 0s, slide: 1m }', '/views/0/window/size', '"0s"', '0s'],
    ['size as a fraction', '{ size: 10m, slide: 1m }', '{ size: 1.5m, slide: 1m }', '/views/0/window/size', '"1.5m"', '1.5m'],
    ['size over 366 days', '{ size: 10m, slide: 1m }', '{ size: 400d, slide: 1m }', '/views/0/window/size', '"400d"', '400d'],
    ['lateness of ten years', 'allowedLateness: 30s', 'allowedLateness: 3650d', '/views/0/allowedLateness', '"3650d"', '3650d'],
    ['negative size in seconds', '{ size: 10m, slide: 1m }', '{ size: -600, slide: 1m }', '/views/0/window/size', '-600', '-600'],
    ['slide zero', '{ size: 10m, slide: 1m }', '{ size: 10m, slide: 0 }', '/views/0/window/slide', '0', '0'],
    ['slide with a space', '{ size: 10m, slide: 1m }', '{ size: 10m, slide: "1 m" }', '/views/0/window/slide', '"1 m"', '"1 m"'],
    ['negative lateness', 'allowedLateness: 30s', 'allowedLateness: -30s', '/views/0/allowedLateness', '"-30s"', '-30s'],
    ['lateness with a leading zero', 'allowedLateness: 30s', 'allowedLateness: 030s', '/views/0/allowedLateness', '"030s"', '030s'],
    ['lateness in weeks', 'allowedLateness: 30s', 'allowedLateness: 1w', '/views/0/allowedLateness', '"1w"', '1w'],
  ];
  for (const [what, from, to, path, shown, value] of badDurations) {
    test(`bad duration: ${what} (${to})`, () => {
      const text = mutate(from, to);
      const issue = onlyIssue(text);
      assert.equal(issue.path, path);
      assert.deepEqual(at(issue), posIn(text, to, value));
      assert.equal(issue.message, `bad duration ${shown}${value === '400d' || value === '3650d' ? ': longer than the limit of 366d' : ''}`);
      assert.match(issue.expected, /of at most 366d/);
      assert.match(issue.expected, path.endsWith('allowedLateness') ? /non-negative duration/ : /a positive duration/);
    });
  }

  test('streaming settings on a view without source', () => {
    const text = mutate('    ttl: 7d\n', '    ttl: 7d\n    window: { size: 1h }\n');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/window');
    assert.equal(issue.line, posOf(text, 'window: { size: 1h }').line);
    assert.equal(issue.message, '"window" without "source"');
  });

  test('an aggregate on a view without source', () => {
    const text = mutate('{ name: country, type: String }', '{ name: country, type: String, aggregate: { fn: last, of: label } }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/versions/0/features/0/aggregate');
    assert.equal(issue.line, posOf(text, 'name: country').line);
    assert.equal(issue.column, posOf(text, '{ fn: last, of: label }').column);
    assert.equal(issue.message, 'feature "country" has an aggregate but its view has no source');
  });

  test('a feature of a materialized view without aggregate', () => {
    const text = mutate('{ name: clicks, type: Int, aggregate: { fn: count, where: clicked } }', '{ name: clicks, type: Int }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/0');
    assert.deepEqual(at(issue), posOf(text, '{ name: clicks, type: Int }'));
    assert.equal(issue.message, 'feature "clicks" of a materialized view has no aggregate');
  });

  test('`where` that is not Boolean', () => {
    const text = mutate('aggregate: { fn: count, where: clicked } }', 'aggregate: { fn: count, where: label } }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/0/aggregate/where');
    assert.deepEqual(at(issue), posIn(text, 'where: label', 'label'));
    assert.equal(issue.message, '"label" is String, not Boolean');
    assert.equal(issue.expected, 'a Boolean field');
  });

  test('`where` that is not a field, inside a ratio\'s numerator', () => {
    const text = mutate('numerator: { fn: count, where: clicked }', 'numerator: { fn: count, where: klicked }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/1/aggregate/numerator/where');
    assert.deepEqual(at(issue), posOf(text, 'klicked'));
    assert.equal(issue.message, '"klicked" is not a field of clicks');
  });

  test('sum over a String', () => {
    const text = mutate('{ fn: sum, of: price }', '{ fn: sum, of: label }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/2/aggregate/of');
    assert.deepEqual(at(issue), posIn(text, 'of: label', 'label'));
    assert.equal(issue.message, '"label" is String, not a number');
    assert.equal(issue.expected, 'an Int or Float field');
  });

  for (const fn of ['min', 'max', 'avg'] as const) {
    test(`${fn} over a Boolean`, () => {
      const text = mutate('{ fn: sum, of: price }', `{ fn: ${fn}, of: clicked }`);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/views/0/versions/0/features/2/aggregate/of');
      assert.equal(issue.message, '"clicked" is Boolean, not a number');
    });
  }

  test('sum of a field the source does not have', () => {
    const text = mutate('{ fn: sum, of: price }', '{ fn: sum, of: prize }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/2/aggregate/of');
    assert.deepEqual(at(issue), posOf(text, 'prize'));
    assert.equal(issue.message, '"prize" is not a field of clicks');
  });

  test('count with "of"', () => {
    const text = mutate('{ fn: count, where: clicked } }', '{ fn: count, of: price, where: clicked } }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/0/aggregate/of');
    assert.equal(issue.message, 'count takes no "of"');
  });

  const mismatches: [what: string, from: string, to: string, feature: number, message: string][] = [
    ['count into a Float (count produces Int)', '{ name: clicks, type: Int, aggregate: { fn: count', '{ name: clicks, type: Float, aggregate: { fn: count', 0,
      'count produces Int, but feature "clicks" is Float'],
    ['count into a String', '{ name: clicks, type: Int, aggregate: { fn: count', '{ name: clicks, type: String, aggregate: { fn: count', 0,
      'count produces Int, but feature "clicks" is String'],
    ['ratio into an Int', '{ name: rate, type: Float', '{ name: rate, type: Int', 1, 'ratio produces Float, but feature "rate" is Int'],
    ['sum of a Float into an Int', '{ name: spent, type: Float', '{ name: spent, type: Int', 2, 'sum produces Float, but feature "spent" is Int'],
    ['avg into an Int', '{ name: spent, type: Float, aggregate: { fn: sum, of: price } }', '{ name: spent, type: Int, aggregate: { fn: avg, of: n } }', 2,
      'avg produces Float, but feature "spent" is Int'],
    ['last of a String into a Float', '{ name: spent, type: Float, aggregate: { fn: sum, of: price } }', '{ name: spent, type: Float, aggregate: { fn: last, of: label } }', 2,
      'last produces String, but feature "spent" is Float'],
    ['last of a Boolean into an Int', '{ name: spent, type: Float, aggregate: { fn: sum, of: price } }', '{ name: spent, type: Int, aggregate: { fn: last, of: clicked } }', 2,
      'last produces Boolean, but feature "spent" is Int'],
    ['sum of an Int into a Boolean', '{ name: spent, type: Float, aggregate: { fn: sum, of: price } }', '{ name: spent, type: Boolean, aggregate: { fn: sum, of: n } }', 2,
      'sum produces Int or Float, but feature "spent" is Boolean'],
  ];
  for (const [what, from, to, index, message] of mismatches) {
    test(`result type mismatch: ${what}`, () => {
      const text = mutate(from, to);
      const issue = onlyIssue(text);
      assert.equal(issue.path, `/views/0/versions/0/features/${index}/aggregate/fn`);
      const line = posOf(text, to).line;
      const fnValue = text.split('\n')[line - 1]!.indexOf('aggregate: { fn: ') + 'aggregate: { fn: '.length + 1;
      assert.deepEqual(at(issue), { line, column: fnValue });
      assert.equal(issue.message, message);
    });
  }

  test('a materialized feature cannot be a list', () => {
    const text = mutate('{ name: spent, type: Float, aggregate: { fn: sum, of: price } }', '{ name: spent, type: "[Float!]", aggregate: { fn: sum, of: price } }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/2/type');
    assert.deepEqual(at(issue), posOf(text, '"[Float!]"'));
    assert.equal(issue.message, 'a materialized feature cannot be a list ([Float!])');
  });

  test('ratio without numerator', () => {
    const text = mutate('{ fn: ratio, numerator: { fn: count, where: clicked }, denominator: { fn: count } }', '{ fn: ratio, denominator: { fn: count } }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/1/aggregate');
    assert.deepEqual(at(issue), posOf(text, '{ fn: ratio, denominator: { fn: count } }'));
    assert.equal(issue.message, 'ratio needs numerator and denominator');
  });

  test('ratio without denominator', () => {
    const text = mutate(', denominator: { fn: count } }', ' }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/0/features/1/aggregate');
    assert.equal(issue.message, 'ratio needs numerator and denominator');
  });

  test('a ratio part that is not a measure (avg) is a shape error at its fn', () => {
    const text = mutate('denominator: { fn: count }', 'denominator: { fn: avg, of: price }');
    const issues = issuesOf(text);
    assert.ok(issues.some((i) => i.path === '/views/0/versions/0/features/1/aggregate/denominator/fn'), issues.map((i) => i.path).join(', '));
  });

  test('an unknown aggregate function is a shape error', () => {
    const text = mutate('{ fn: sum, of: price }', '{ fn: median, of: price }');
    const issues = issuesOf(text);
    assert.ok(issues.some((i) => i.path === '/views/0/versions/0/features/2/aggregate/fn' && i.line === posOf(text, 'median').line), issues.map((i) => i.path).join(', '));
  });
});

describe('registry errors: events', () => {
  test('event key that is not a field', () => {
    const text = mutate('key: userId', 'key: uid');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/events/0/key');
    assert.deepEqual(at(issue), posOf(text, 'uid'));
    assert.equal(issue.message, 'key field "uid" is not a field of clicks');
    assert.match(issue.expected, /^one of userId, clicked, ts/);
  });

  test('event key that is optional', () => {
    const text = mutate('key: userId', 'key: maybeUser');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/events/0/key');
    assert.deepEqual(at(issue), posIn(text, 'key: maybeUser', 'maybeUser'));
    assert.equal(issue.message, 'key field "maybeUser" is optional');
  });

  for (const [field, why] of [['n', 'an Int'], ['seenAt', 'optional'], ['when', 'not a field']] as const) {
    test(`timestamp field that is ${why} (${field})`, () => {
      const text = mutate('timestamp: ts', `timestamp: ${field}`);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/events/0/timestamp');
      assert.deepEqual(at(issue), posIn(text, `timestamp: ${field}`, field));
      assert.equal(issue.message, `timestamp field "${field}" must be a required field of type Timestamp`);
    });
  }

  test('unknown field type', () => {
    const text = mutate('{ name: n, type: Int }', '{ name: n, type: Long }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/events/0/fields/5/type');
    assert.deepEqual(at(issue), posOf(text, 'Long'));
    assert.equal(issue.message, 'unknown event field type "Long"');
    assert.equal(issue.expected, 'one of String, Int, Float, Boolean, Timestamp');
  });

  test('duplicate field name', () => {
    const text = mutate('{ name: n, type: Int }', '{ name: label, type: Int }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/events/0/fields/5/name');
    assert.equal(issue.line, posOf(text, '{ name: label, type: Int }').line);
    assert.equal(issue.message, 'duplicate field "label"');
  });

  test('duplicate topic, reported at the second declaration', () => {
    const text = withEvent('clicks');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/events/1/topic');
    assert.deepEqual(at(issue), posIn(text, '  - topic: clicks\n    description: Another.', 'clicks'));
    assert.equal(issue.message, 'duplicate event topic "clicks" (first declared at index 0)');
  });

  for (const topic of ['clicks.dlq', 'x.dlq', 'feature-updates']) {
    test(`reserved topic name ${topic}`, () => {
      const text = withEvent(topic);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/events/1/topic');
      assert.deepEqual(at(issue), posIn(text, `topic: ${topic}`, topic));
      assert.equal(issue.message, `topic "${topic}" is reserved`);
      assert.match(issue.expected, /not ending in \.dlq and not feature-updates/);
    });
  }

  for (const topic of ['"bad topic"', 'clicks/1', '"ü-events"', '.', '..', 'x'.repeat(246)]) {
    test(`invalid topic name ${topic.length > 20 ? `of ${topic.length} characters` : topic}`, () => {
      const text = withEvent(topic);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/events/1/topic');
      assert.deepEqual(at(issue), posIn(text, `topic: ${topic}`, topic));
      assert.match(issue.message, /is not a valid Kafka topic name$/);
      assert.match(issue.expected, /letters, digits/);
    });
  }

  test('the longest topic name whose dead-letter topic Kafka still accepts (245 characters)', () => {
    const topic = 'x'.repeat(245);
    assert.equal(parseRegistry(withEvent(topic), FILE).events[1]!.topic, topic);
  });

  test('partitions out of range is a shape error', () => {
    const text = mutate('partitions: 6', 'partitions: 0');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/events/0/partitions');
    assert.equal(issue.line, posOf(text, 'partitions: 0').line);
  });

  test('several streaming problems are all reported at once', () => {
    let text = mutate('key: userId', 'key: uid');
    text = mutate('{ size: 10m, slide: 1m }', '{ size: 10m, slide: 3m }', text);
    text = mutate('{ fn: sum, of: price }', '{ fn: sum, of: label }', text);
    assert.deepEqual(issuesOf(text).map((i) => i.path).sort(), ['/events/0/key', '/views/0/versions/0/features/2/aggregate/of', '/views/0/window/slide']);
  });
});
