import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { onlyRegistryIssue, positionOf, registryIssues, replaceOnce, viewOf } from '../support/registry-text.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadRegistry, parseRegistry, RegistryError, type RegistryIssue } from '../../schema/registry.js';
import { activeVersionOf, findEntity, findView, type FeatureView } from '../../schema/types.js';

/**
 * A small valid registry; every error test below changes exactly one piece of it
 * (`mutate`), so the line of the problem is the line of the changed text.
 */
const FILE = 'test-registry.yaml';
const base = `entities:
  - name: user
    type: User
    key: id
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
    tags: [engagement]
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
`;

const mutate = (from: string, to: string, text = base): string => replaceOnce(text, from, to);
const posOf = positionOf;
const issuesOf = (text: string, file = FILE): readonly RegistryIssue[] => registryIssues(text, file);
const onlyIssue = (text: string): RegistryIssue => onlyRegistryIssue(text, FILE);
const view = (registry: ReturnType<typeof loadRegistry>, name: string): FeatureView => viewOf(registry, name);

describe('the shipped registry (schema/registry.yaml)', () => {
  const registry = loadRegistry();

  test('declares user, item and merchant with their GraphQL types and root fields', () => {
    assert.deepEqual(registry.entities.map((e) => [e.name, e.typeName, e.singularField, e.pluralField]), [
      ['user', 'User', 'user', 'users'],
      ['item', 'Item', 'item', 'items'],
      ['merchant', 'Merchant', 'merchant', 'merchants'],
    ]);
    assert.ok(registry.file.endsWith(path.join('schema', 'registry.yaml')));
  });

  test('user.clickStats has v1 and v2, v2 active, TTL 60 s', () => {
    const clickStats = view(registry, 'clickStats');
    assert.equal(clickStats.entityName, 'user');
    assert.equal(clickStats.ttlSeconds, 60);
    assert.equal(clickStats.activeVersion, 2);
    assert.equal(clickStats.owner, 'ranking-team@example.com');
    assert.deepEqual(clickStats.tags, ['engagement', 'realtime']);
    assert.equal(clickStats.source, 'click-events');
    assert.deepEqual(clickStats.versions.map((v) => [v.version, v.active, v.ttlSeconds]), [[1, false, 60], [2, true, 60]]);
    assert.deepEqual(clickStats.versions[0]!.features.map((f) => f.name), ['clickRate']);
    assert.deepEqual(clickStats.versions[1]!.features.map((f) => [f.name, f.typeName]), [
      ['clickRate', 'Float'], ['clicks', 'Int'], ['impressions', 'Int'],
    ]);
    assert.equal(activeVersionOf(clickStats).version, 2);
  });

  test('user.profile has TTL 7d and an embedding of type [Float!]', () => {
    const profile = view(registry, 'profile');
    assert.equal(profile.entityName, 'user');
    assert.equal(profile.ttlSeconds, 7 * 86400);
    assert.equal(profile.source, null);
    const embedding = activeVersionOf(profile).features.find((f) => f.name === 'embedding');
    assert.ok(embedding);
    assert.equal(embedding.typeName, '[Float!]');
    assert.deepEqual(embedding.type, { scalar: 'Float', list: true });
    assert.deepEqual(findEntity(registry, 'user')!.views.map((v) => v.name), ['clickStats', 'profile', 'riskProfile']);
  });

  test('item.itemStats and merchant.riskStats have TTL 1h', () => {
    assert.equal(view(registry, 'itemStats').entityName, 'item');
    assert.equal(view(registry, 'itemStats').ttlSeconds, 3600);
    assert.equal(view(registry, 'riskStats').entityName, 'merchant');
    assert.equal(view(registry, 'riskStats').ttlSeconds, 3600);
  });

  test('user.riskProfile is readable by admins only', () => {
    assert.deepEqual(view(registry, 'riskProfile').readRoles, ['admin']);
    assert.equal(view(registry, 'clickStats').readRoles, null);
  });
});

describe('parseRegistry', () => {
  test('accepts the small base registry used by the error tests', () => {
    const registry = parseRegistry(base, FILE);
    assert.equal(registry.file, FILE);
    assert.deepEqual(registry.entities.map((e) => e.views.map((v) => `${v.name}@${v.activeVersion}/${v.ttlSeconds}`)), [
      ['clickStats@2/60'], ['itemStats@1/3600'],
    ]);
  });

  test('accepts a TTL as whole seconds and up to 366d', () => {
    assert.equal(findView(parseRegistry(mutate('ttl: 60s', 'ttl: 90'), FILE), 'clickStats')!.ttlSeconds, 90);
    assert.equal(findView(parseRegistry(mutate('ttl: 60s', 'ttl: 366d'), FILE), 'clickStats')!.ttlSeconds, 366 * 86400);
    assert.equal(findView(parseRegistry(mutate('ttl: 60s', 'ttl: 15m'), FILE), 'clickStats')!.ttlSeconds, 900);
  });

  test('readRoles: absent is null (no restriction); a list restricts every version of the view', () => {
    assert.equal(findView(parseRegistry(base, FILE), 'clickStats')!.readRoles, null);
    const restricted = findView(parseRegistry(mutate('    ttl: 60s\n', '    ttl: 60s\n    readRoles: [admin, analyst]\n'), FILE), 'clickStats')!;
    assert.deepEqual(restricted.readRoles, ['admin', 'analyst']);
    assert.ok(restricted.versions.every((v) => v.readRoles?.join() === 'admin,analyst'));
  });

  test('readRoles: an unknown role, an empty list and a repeated role are errors at the field', () => {
    for (const roles of ['[admin, root]', '[]', '[admin, admin]']) {
      const issues = registryIssues(mutate('    ttl: 60s\n', `    ttl: 60s\n    readRoles: ${roles}\n`), FILE);
      assert.ok(issues.length > 0, roles);
      assert.ok(issues.every((i) => i.path.startsWith('/views/0/readRoles')), `${roles}: ${JSON.stringify(issues)}`);
    }
  });

  test('activeVersion defaults to the last version', () => {
    const text = mutate('    activeVersion: 2\n', '');
    assert.equal(findView(parseRegistry(text, FILE), 'clickStats')!.activeVersion, 2);
  });
});

describe('registry errors', () => {
  test('unknown feature type', () => {
    const text = mutate('{ name: clicks, type: Int }', '{ name: clicks, type: Flaot }');
    const issue = onlyIssue(text);
    assert.equal(issue.file, FILE);
    assert.equal(issue.path, '/views/0/versions/1/features/1/type');
    assert.deepEqual({ line: issue.line, column: issue.column }, posOf(text, 'Flaot'));
    assert.equal(issue.line, 25); // guards posOf itself
    assert.match(issue.message, /unknown type "Flaot"/);
    assert.match(issue.expected, /Int, Float, Boolean, String/);
    assert.match(issue.expected, /\[Float!\]/);
  });

  test('unknown list element type', () => {
    const text = mutate('{ name: ctr, type: Float }', '{ name: ctr, type: "[Flot!]" }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/versions/0/features/0/type');
    assert.match(issue.message, /unknown type "\[Flot!\]"/);
  });

  test('duplicate entity name', () => {
    const text = mutate('entity: item', 'entity: user', mutate('  - name: item\n', '  - name: user\n'));
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/entities/1/name');
    assert.equal(issue.line, posOf(text, '  - name: user\n    type: Item').line);
    assert.equal(issue.line, 6);
    assert.match(issue.message, /duplicate entity name "user"/);
    assert.match(issue.expected, /used once/);
  });

  test('duplicate entity type', () => {
    const text = mutate('type: Item', 'type: User');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/entities/1/type');
    assert.equal(issue.line, 7);
    assert.match(issue.message, /duplicate entity type name "User"/);
  });

  test('duplicate view name is reported once, at the second declaration', () => {
    const text = mutate('  - name: itemStats\n    entity: item', '  - name: clickStats\n    entity: user');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/name');
    assert.deepEqual({ line: issue.line, column: issue.column }, { line: 26, column: 11 });
    assert.match(issue.message, /duplicate feature view name "clickStats"/);
    assert.match(issue.expected, /feature view name used once/);
  });

  test('duplicate view name on another entity', () => {
    const text = mutate('  - name: itemStats', '  - name: clickStats');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/name');
    assert.match(issue.message, /duplicate feature view name "clickStats"/);
  });

  test('duplicate feature name within a version', () => {
    const text = mutate('{ name: clicks, type: Int }', '{ name: clickRate, type: Int }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/1/features/1/name');
    assert.equal(issue.line, 25);
    assert.match(issue.message, /duplicate feature name "clickRate"/);
  });

  test('a view on an unknown entity', () => {
    const text = mutate('entity: item', 'entity: order');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/entity');
    assert.deepEqual({ line: issue.line, column: issue.column }, posOf(text, 'order'));
    assert.match(issue.message, /view "itemStats" is on unknown entity "order"/);
    assert.match(issue.expected, /user, item/);
  });

  for (const [ttl, shown] of [['0s', '"0s"'], ['-5', '-5'], ['sixty', '"sixty"'], ['400d', '"400d"'], ['0', '0'], ['10w', '"10w"']] as const) {
    test(`bad TTL ${ttl}`, () => {
      const text = mutate('ttl: 60s', `ttl: ${ttl}`);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/views/0/ttl');
      const key = posOf(text, `ttl: ${ttl}`);
      assert.deepEqual({ line: issue.line, column: issue.column }, { line: key.line, column: key.column + 'ttl: '.length });
      assert.equal(issue.line, 16);
      assert.equal(issue.message, `bad TTL ${shown}`);
      assert.match(issue.expected, /positive duration of at most 366d/);
    });
  }

  test('version gap (1 then 3)', () => {
    const text = mutate('      - version: 2', '      - version: 3');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/1/version');
    assert.deepEqual({ line: issue.line, column: issue.column }, { line: posOf(text, 'version: 3').line, column: 18 });
    assert.match(issue.message, /version gap: version 3 follows version 1/);
    assert.match(issue.expected, /^version 2 /);
  });

  test('versions not starting at 1', () => {
    const text = mutate('      - version: 1\n        features:\n          - { name: ctr', '      - version: 2\n        features:\n          - { name: ctr');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/versions/0/version');
    assert.equal(issue.line, 32);
    assert.match(issue.message, /versions must start at 1, found 2/);
    assert.match(issue.expected, /^version 1 /);
  });

  for (const active of [3, 0]) {
    test(`activeVersion ${active} out of range`, () => {
      const text = mutate('activeVersion: 2', `activeVersion: ${active}`);
      const issue = onlyIssue(text);
      assert.equal(issue.path, '/views/0/activeVersion');
      assert.equal(issue.line, posOf(text, `activeVersion: ${active}`).line);
      assert.match(issue.message, new RegExp(`active version ${active} does not exist`));
      assert.match(issue.expected, /between 1 and 2/);
    });
  }

  test('entity type that is not a GraphQL name (My-Type)', () => {
    const text = mutate('type: Item', 'type: My-Type');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/entities/1/type');
    assert.deepEqual({ line: issue.line, column: issue.column }, posOf(text, 'My-Type'));
    assert.match(issue.message, /GraphQL type name "My-Type" is not a valid GraphQL name/);
    assert.match(issue.expected, /not starting with a digit or __/);
  });

  test('feature name that is not a GraphQL name (1abc)', () => {
    const text = mutate('name: ctr', 'name: 1abc');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/versions/0/features/0/name');
    assert.deepEqual({ line: issue.line, column: issue.column }, posOf(text, '1abc'));
    assert.match(issue.message, /feature name "1abc" is not a valid GraphQL name/);
  });

  test('view name that is not a GraphQL name (__x)', () => {
    const text = mutate('name: itemStats', 'name: __x');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/name');
    assert.deepEqual({ line: issue.line, column: issue.column }, posOf(text, '__x'));
    assert.match(issue.message, /view name "__x" is not a valid GraphQL name/);
  });

  test('reserved feature name (stale)', () => {
    const text = mutate('{ name: clicks, type: Int }', '{ name: stale, type: Int }');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/1/features/1/name');
    assert.deepEqual({ line: issue.line, column: issue.column }, posOf(text, 'stale'));
    assert.match(issue.message, /feature name "stale" is reserved/);
    assert.match(issue.expected, /eventTime, stale/);
  });

  test('a view name that collides with a generated version field', () => {
    // clickStats v1 is served as field clickStatsV1, so no view may be called that.
    const text = mutate('  - name: itemStats\n    entity: item', '  - name: clickStatsV1\n    entity: user');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1/name');
    assert.match(issue.message, /field "clickStatsV1" of User is generated twice/);
  });

  test('unknown property (typo tll:) is reported at the typo, with the then-missing ttl', () => {
    const text = mutate('ttl: 1h', 'tll: 1h');
    const issues = issuesOf(text);
    assert.equal(issues.length, 2);
    const unknown = issues.find((i) => i.message.includes('unknown'));
    assert.ok(unknown);
    assert.equal(unknown.path, '/views/1/tll');
    assert.equal(unknown.line, posOf(text, 'tll: 1h').line);
    assert.equal(unknown.line, 30);
    assert.equal(unknown.message, 'unknown property "tll"');
    assert.match(unknown.expected, /registry\.schema\.json/);
    const missing = issues.find((i) => i.message.includes('missing'));
    assert.ok(missing);
    assert.equal(missing.path, '/views/1');
    assert.equal(missing.message, 'missing property "ttl"');
  });

  test('missing required property is reported at the object that lacks it', () => {
    const text = mutate('    owner: catalogue@example.com\n', '');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/1');
    assert.deepEqual({ line: issue.line, column: issue.column }, { line: posOf(text, '- name: itemStats').line, column: 5 });
    assert.equal(issue.message, 'missing property "owner"');
    assert.equal(issue.expected, '"owner" to be set');
  });

  test('a value of the wrong type', () => {
    const text = mutate('      - version: 2', '      - version: two');
    const issue = onlyIssue(text);
    assert.equal(issue.path, '/views/0/versions/1/version');
    assert.equal(issue.line, posOf(text, 'version: two').line);
    assert.match(issue.expected, /integer/);
  });

  test('malformed YAML', () => {
    const text = mutate('tags: [engagement]', 'tags: [engagement');
    const issues = issuesOf(text);
    const issue = issues[0]!;
    assert.equal(issue.file, FILE);
    assert.equal(issue.path, '');
    assert.equal(issue.expected, 'well-formed YAML');
    assert.ok(issue.line >= posOf(text, 'tags: [engagement').line && issue.line <= posOf(text, 'ttl: 60s').line, `line ${issue.line}`);
  });

  test('a repeated YAML key is malformed YAML, at its line', () => {
    const text = mutate('    ttl: 1h\n', '    ttl: 1h\n    ttl: 2h\n');
    const issue = onlyIssue(text);
    assert.equal(issue.expected, 'well-formed YAML');
    assert.equal(issue.line, posOf(text, 'ttl: 2h').line);
    assert.match(issue.message, /unique/);
  });

  test('several problems are all reported at once', () => {
    let text = mutate('{ name: clicks, type: Int }', '{ name: stale, type: Flaot }');
    text = mutate('ttl: 60s', 'ttl: sixty', text);
    text = mutate('entity: item', 'entity: order', text);
    const issues = issuesOf(text);
    assert.ok(issues.length > 1);
    assert.deepEqual(issues.map((i) => i.path).sort(), [
      '/views/0/ttl',
      '/views/0/versions/1/features/1/name',
      '/views/0/versions/1/features/1/type',
      '/views/1/entity',
    ]);
  });

  test('the error message names file:line:column of every problem', () => {
    let text = mutate('ttl: 60s', 'ttl: 0s');
    text = mutate('name: ctr', 'name: 1abc', text);
    const error = (() => {
      try {
        parseRegistry(text, 'schema/my-registry.yaml');
      } catch (e) {
        return e as RegistryError;
      }
      return assert.fail('expected a RegistryError');
    })();
    assert.ok(error instanceof RegistryError);
    assert.equal(error.name, 'RegistryError');
    assert.match(error.message, /^invalid feature registry \(2 problems\)/);
    assert.ok(error.message.includes('schema/my-registry.yaml:16:10 at /views/0/ttl: bad TTL "0s"'), error.message);
    const ctr = posOf(text, '1abc');
    assert.ok(error.message.includes(`schema/my-registry.yaml:${ctr.line}:${ctr.column} at /views/1/versions/0/features/0/name`), error.message);
  });

  describe('loadRegistry from a file', () => {
    const dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'registry-test-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));

    test('reads the file and names it in every issue', () => {
      const good = path.join(dir, 'good.yaml');
      fs.writeFileSync(good, base);
      assert.equal(loadRegistry(good).file, good);

      const bad = path.join(dir, 'bad.yaml');
      fs.writeFileSync(bad, mutate('ttl: 60s', 'ttl: 0s'));
      assert.throws(() => loadRegistry(bad), (e: unknown) => {
        assert.ok(e instanceof RegistryError);
        assert.equal(e.issues[0]!.file, bad);
        assert.ok(e.message.includes(`${bad}:16:10`), e.message);
        return true;
      });
    });
  });
});
