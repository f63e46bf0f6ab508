import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildManifest, defaultManifestFile, operationsDir, readManifest } from '../../schema/manifest.js';

const sha256 = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

describe('persisted-query manifest', () => {
  const dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'manifest-test-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, content: string): string => {
    const file = path.join(dir, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content);
    return file;
  };
  const committed = JSON.parse(fs.readFileSync(defaultManifestFile, 'utf8')) as unknown;

  test('buildManifest() equals the committed schema/persisted-query-manifest.json (run `npm run manifest` if not)', () => {
    assert.deepEqual(buildManifest(), committed);
    assert.deepEqual(readManifest(), committed);
  });

  test('is in Apollo persisted-query manifest format, version 1', () => {
    const manifest = buildManifest();
    assert.equal(manifest.format, 'apollo-persisted-query-manifest');
    assert.equal(manifest.version, 1);
    for (const op of manifest.operations) assert.deepEqual(Object.keys(op).sort(), ['body', 'id', 'name', 'type']);
  });

  test('each id is the SHA-256 of its body', () => {
    for (const op of buildManifest().operations) {
      assert.match(op.id, /^[0-9a-f]{64}$/);
      assert.equal(op.id, sha256(op.body), op.name);
    }
  });

  test('holds UserClickRate, RankingFeatures and FraudFeatures, all queries, one per .graphql file', () => {
    const manifest = buildManifest();
    const names = manifest.operations.map((o) => o.name);
    for (const name of ['UserClickRate', 'RankingFeatures', 'FraudFeatures']) assert.ok(names.includes(name), name);
    assert.ok(manifest.operations.every((o) => o.type === 'query'));
    assert.equal(names.length, fs.readdirSync(operationsDir).filter((f) => f.endsWith('.graphql')).length);
    assert.equal(new Set(manifest.operations.map((o) => o.id)).size, names.length);
  });

  test('ids do not depend on comments or formatting of the .graphql file', () => {
    const original = buildManifest().operations.find((o) => o.name === 'UserClickRate')!;
    const sub = path.join(dir, 'reformatted');
    write('reformatted/UserClickRate.graphql', `# another comment\nquery   UserClickRate( $ids : [ID!]! ) { users(ids:$ids) { id clickStats { clickRate stale } } }\n`);
    const rebuilt = buildManifest(sub).operations;
    assert.equal(rebuilt.length, 1);
    assert.equal(rebuilt[0]!.id, original.id);
    assert.equal(rebuilt[0]!.body, original.body);
  });

  test('buildManifest rejects a file without exactly one named operation', () => {
    write('two/Two.graphql', 'query A { x }\nquery B { y }\n');
    assert.throws(() => buildManifest(path.join(dir, 'two')), /Two\.graphql: expected exactly one named operation/);
    write('anonymous/Anon.graphql', '{ x }\n');
    assert.throws(() => buildManifest(path.join(dir, 'anonymous')), /Anon\.graphql: expected exactly one named operation/);
  });

  test('readManifest rejects an operation whose id is not the SHA-256 of its body', () => {
    const manifest = buildManifest();
    const [first, ...rest] = manifest.operations;
    const tampered = { ...manifest, operations: [{ ...first!, body: first!.body.replace('stale', 'eventTime') }, ...rest] };
    assert.notEqual(tampered.operations[0]!.body, first!.body);
    const file = write('tampered.json', JSON.stringify(tampered));
    assert.throws(() => readManifest(file), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.ok(e.message.includes(file), e.message);
      assert.match(e.message, new RegExp(`operation ${first!.name} has an id that is not the SHA-256 of its body`));
      return true;
    });
  });

  test('readManifest rejects a wrong format or version, missing fields and non-JSON', () => {
    const ops = buildManifest().operations;
    const notManifest = /not an apollo-persisted-query-manifest version 1/;
    assert.throws(() => readManifest(write('format.json', JSON.stringify({ format: 'relay', version: 1, operations: ops }))), notManifest);
    assert.throws(() => readManifest(write('version.json', JSON.stringify({ format: 'apollo-persisted-query-manifest', version: 2, operations: ops }))), notManifest);
    assert.throws(() => readManifest(write('noops.json', JSON.stringify({ format: 'apollo-persisted-query-manifest', version: 1 }))), notManifest);
    assert.throws(() => readManifest(write('noid.json', JSON.stringify({ format: 'apollo-persisted-query-manifest', version: 1, operations: [{ name: 'X', body: 'query X { x }' }] }))), /string id, name and body/);
    assert.throws(() => readManifest(write('garbage.json', 'not json')), /cannot read persisted-query manifest/);
  });
});
