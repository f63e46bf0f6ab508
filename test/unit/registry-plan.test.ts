import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readManifest } from '../../schema/manifest.js';
import { defaultRegistryFile, loadRegistry, parseRegistry } from '../../schema/registry.js';
import { planRegistryChange, planSummary, type RegistryPlan } from '../../schema/registry-plan.js';
import { fromRoot } from '../../runtime/paths.js';

const base = fs.readFileSync(defaultRegistryFile, 'utf8');
const current = loadRegistry();
const manifest = readManifest();

/** `base` with `from` replaced by `to`; fails when `from` is not in it (so an edit of the registry cannot make a case vacuous). */
function edit(text: string, from: string, to: string): string {
  assert.ok(text.includes(from), `the registry no longer contains ${JSON.stringify(from)}`);
  return text.replaceAll(from, to);
}
const txnCount = '          - { name: txnCount1h, type: Int, description: Transactions in the last hour., aggregate: { fn: count } }\n';
const impressions = '          - { name: impressions, type: Int, description: Number of impressions in the window., aggregate: { fn: count } }\n';
const clickStatsV3 = (features: string): string =>
  edit(edit(base, '    activeVersion: 2\n', '    activeVersion: 3\n'), impressions, `${impressions}      - version: 3\n        features:\n${features}`);
const feature = (name: string, type: string, aggregate: string): string => `          - { name: ${name}, type: ${type}, description: ${name}., aggregate: ${aggregate} }\n`;
const v3Full = clickStatsV3(
  feature('clickRate', 'Float', '{ fn: ratio, numerator: { fn: count, where: clicked }, denominator: { fn: count } }') +
  feature('clicks', 'Int', '{ fn: count, where: clicked }') + feature('impressions', 'Int', '{ fn: count }') + feature('conversions', 'Int', '{ fn: count }'),
);
const plan = (text: string): RegistryPlan => planRegistryChange(current, parseRegistry(text, 'candidate.yaml'), manifest);

describe('registry plan', () => {
  test('the same definitions: no changes, same version whatever the comments', () => {
    const p = plan(`# a comment\n${base}`);
    assert.deepEqual(p.changes, []);
    assert.equal(p.breaking, false);
    assert.equal(p.candidate.version, p.current.version);
  });

  test('a new version switched to, keeping every feature: safe, with the feature services reading it', () => {
    const p = plan(v3Full);
    assert.equal(p.breaking, false, planSummary(p));
    assert.deepEqual(p.schemaBreaks, []);
    assert.deepEqual(p.brokenOperations, []);
    assert.deepEqual(p.changes.map((c) => [c.kind, c.subject]), [
      ['version added', 'clickStats@v3'], ['active version', 'clickStats'], ['feature service changed', 'ranking'], ['feature service changed', 'fraud'],
    ]);
    assert.match(p.changes[1]!.detail, /v2 → v3/);
    assert.notEqual(p.candidate.version, p.current.version);
  });

  test('removing a feature FraudFeatures selects is breaking and names FraudFeatures and the field', () => {
    const p = plan(edit(base, txnCount, ''));
    assert.equal(p.breaking, true);
    assert.deepEqual(p.brokenOperations.map((o) => o.name), ['FraudFeatures']);
    assert.match(p.brokenOperations[0]!.errors.join(), /txnCount1h/);
    assert.deepEqual(p.schemaBreaks.map((b) => b.description), ['MerchantRiskStatsV1.txnCount1h was removed.']);
    const removed = p.changes.find((c) => c.kind === 'feature removed');
    assert.equal(removed?.subject, 'riskStats@v1.txnCount1h');
    assert.match(removed?.why ?? '', /publish v2/);
    assert.match(p.changes.find((c) => c.subject === 'fraud')?.why ?? '', /riskStats:txnCount1h/);
    assert.match(planSummary(p), /FraudFeatures/);
  });

  test('switching to a version that lacks a selected feature breaks every operation selecting it, through the active field', () => {
    const pinned = edit(clickStatsV3(feature('clicks', 'Int', '{ fn: count, where: clicked }')), '      - clickStats:clickRate\n', '      - clickStats@v2:clickRate\n');
    const p = plan(edit(pinned, '      - clickStats:impressions\n', '      - clickStats@v2:impressions\n'));
    assert.equal(p.breaking, true);
    assert.deepEqual(p.brokenOperations.map((o) => o.name).sort(), ['FraudFeatures', 'RankingFeatures', 'UserClickRate']);
    assert.ok(p.schemaBreaks.some((b) => /^User\.clickStats\.clickRate was removed/.test(b.description)), JSON.stringify(p.schemaBreaks));
    // the feature services pinned what v3 lacks to v2: their clients lose nothing
    assert.deepEqual(p.changes.filter((c) => c.kind === 'feature service changed').map((c) => [c.subject, c.breaking]), [['ranking', false]]);
  });

  test('a TTL change is reported and safe; narrowing read roles and retyping in place are breaking', () => {
    const ttl = plan(edit(base, '    ttl: 1h\n    source: transactions\n', '    ttl: 30m\n    source: transactions\n'));
    assert.deepEqual(ttl.changes.map((c) => [c.kind, c.subject, c.detail, c.breaking]), [['ttl', 'riskStats', '1h → 30m (values turn stale sooner)', false]]);
    const roles = plan(edit(base, '    tags: [fraud, realtime]\n', '    tags: [fraud, realtime]\n    readRoles: [analyst]\n'));
    const change = roles.changes.find((c) => c.kind === 'read roles');
    assert.equal(change?.breaking, true);
    assert.match(change?.why ?? '', /inference, dashboard/);
    const retyped = plan(edit(base, '{ name: sessionLength, type: Int,', '{ name: sessionLength, type: Float,'));
    assert.equal(retyped.changes.find((c) => c.kind === 'feature retyped')?.detail, 'Int → Float');
    assert.equal(retyped.breaking, true);
  });

  test('event schema: a required field added breaks producers, an optional one does not', () => {
    const field = '      - { name: amount, type: Float, description: Amount in EUR. }\n';
    const required = plan(edit(base, field, `${field}      - { name: currency, type: String, description: ISO 4217. }\n`));
    assert.equal(required.changes[0]?.subject, 'topic transactions.currency');
    assert.equal(required.breaking, true);
    const optional = plan(edit(base, field, `${field}      - { name: currency, type: String, optional: true, description: ISO 4217. }\n`));
    assert.equal(optional.breaking, false);
  });
});

describe('npm run plan (schema/plan-cli.ts)', () => {
  const dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'plan-cli-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  const run = (...args: string[]) => spawnSync(process.execPath, [fromRoot('dist', 'schema', 'plan-cli.js'), ...args], { encoding: 'utf8' });

  test('refuses a plan that breaks FraudFeatures with exit 1 and names it; --allow-breaking accepts it', () => {
    const file = write('no-txn.yaml', edit(base, txnCount, ''));
    const refused = run(file);
    assert.equal(refused.status, 1, refused.stderr);
    assert.match(refused.stdout, /FraudFeatures/);
    assert.match(refused.stdout, /feature removed\s+riskStats@v1\.txnCount1h/);
    assert.match(refused.stdout, /result: BREAKING, refused/);
    assert.equal(run(file, '--allow-breaking').status, 0);
    const json = run(file, '--json');
    assert.equal(json.status, 1);
    assert.deepEqual((JSON.parse(json.stdout) as RegistryPlan).brokenOperations.map((o) => o.name), ['FraudFeatures']);
  });

  test('a safe plan exits 0 with its table', () => {
    const ok = run(write('v3.yaml', v3Full));
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^CHANGE\s+SUBJECT\s+DETAIL\s+BREAKING$/m);
    assert.match(ok.stdout, /active version\s+clickStats\s+v2 → v3/);
    assert.match(ok.stdout, /result: safe to apply/);
  });

  test('bad arguments exit 2 with the usage; an invalid candidate exits 3 with file:line', () => {
    const none = run();
    assert.equal(none.status, 2);
    assert.match(none.stderr, /usage: npm run plan/);
    assert.equal(run('a.yaml', '--bogus').status, 2);
    const file = write('bad.yaml', edit(base, '{ name: txnCount1h, type: Int,', '{ name: txnCount1h, type: Decimal,'));
    const bad = run(file);
    assert.equal(bad.status, 3);
    assert.match(bad.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+ at /views/\\d+/versions/0/features/0/type`));
  });
});
