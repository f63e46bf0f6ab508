import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { fromRoot } from '../../runtime/paths.js';
import { readManifest } from '../../schema/manifest.js';
import { startArrowFixture, type ArrowFixture } from '../support/arrow.js';
import { post } from '../support/http.js';
import { eventually } from '../support/wait.js';

/**
 * The client's side of Arrow responses (decision 0031, README "Arrow responses"): a Python
 * script (test/integration/arrow_vs_json.py) fetches the same persisted requests from a real
 * gateway over two real Redis shards as JSON and as Arrow, decodes the Arrow answers with
 * pyarrow (and pandas), and compares them value for value, errors included; fresh, stale and
 * missing values first, then partly failed reads with one shard killed. The Python comes from
 * the repository's venv (scripts/ensure-feast.sh: feast 0.67.0, with pyarrow and pandas; made
 * once, then cached). A machine without python3 skips this with a line saying so.
 */
const run = promisify(execFile);
const hasPython = spawnSync('python3', ['--version']).status === 0;
const manifest = readManifest();
const idOf = (name: string): string => manifest.operations.find((o) => o.name === name)!.id;

interface Case {
  readonly label: string;
  readonly body: unknown;
  readonly ids: Record<string, readonly string[] | string>;
}
const persisted = (name: string, variables: Record<string, unknown>, ids: Case['ids']): Case => ({
  label: `${name} ${JSON.stringify(variables)}`,
  body: { extensions: { persistedQuery: { version: 1, sha256Hash: idOf(name) } }, variables },
  ids,
});
/** Users, items, merchants 1-20 fresh, 21-25 stale, 404 missing; profile-only has a profile alone. */
const cases: Case[] = [
  persisted('UserClickRate', { ids: ['1', '2', '3', '4', '5', '6', '7', '8'] }, { users: ['1', '2', '3', '4', '5', '6', '7', '8'] }),
  persisted('UserClickRate', { ids: ['1', '21', '404', '1', 'profile-only'] }, { users: ['1', '21', '404', '1', 'profile-only'] }),
  persisted('UserClickRate', { ids: [] }, { users: [] }),
  persisted('RankingFeatures', { user: '1', items: ['1', '2', '3', '4', '5', '6', '21', '404'] }, { user: '1', items: ['1', '2', '3', '4', '5', '6', '21', '404'] }),
  persisted('RankingFeatures', { user: '21', items: ['22'] }, { user: '21', items: ['22'] }),
  persisted('RankingFeatures', { user: 'profile-only', items: [] }, { user: 'profile-only', items: [] }),
  persisted('RankingFeatures', { user: '404', items: ['404'] }, { user: '404', items: ['404'] }),
  ...['1', '2', '3', '22'].map((id) => persisted('FraudFeatures', { user: id, merchant: id }, { user: id, merchant: id })),
  persisted('FraudFeatures', { user: '404', merchant: '404' }, { user: '404', merchant: '404' }),
];

interface CaseResult {
  readonly label: string;
  readonly rows: number;
  readonly errors: number;
  readonly stale: number;
  readonly nullEntities: number;
  readonly failedRows: number;
  readonly values: number;
  readonly mismatches: readonly string[];
}

/** Each test is skipped, and counted so, on a machine without python3. */
const skip = hasPython ? false : 'skipped: no python3 on this machine (the pyarrow comparison needs it)';

describe('pyarrow decodes the Arrow answers, equal value for value to the JSON answers', () => {
  let python: string;
  let fixture: ArrowFixture;
  let dir: string;

  before(async () => {
    if (!hasPython) return;
    // Installs the venv on first use (a few minutes), then answers at once.
    const { stdout } = await run('bash', [fromRoot('scripts', 'ensure-feast.sh')], { maxBuffer: 1 << 20, timeout: 20 * 60_000 });
    python = stdout.trim().split('\n').pop()!;
    dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-arrow-py-'));
    fixture = await startArrowFixture();
  });
  after(async () => {
    await fixture?.close();
  });

  async function compare(): Promise<CaseResult[]> {
    const spec = path.join(dir, 'cases.json');
    fs.writeFileSync(spec, JSON.stringify({ url: fixture.gateway.url, cases }));
    const { stdout } = await run(python, [fromRoot('test', 'integration', 'arrow_vs_json.py'), spec], { maxBuffer: 16 << 20, timeout: 120_000 });
    const output = JSON.parse(stdout) as { pyarrow: string; results: CaseResult[] };
    assert.match(output.pyarrow, /^\d+\./);
    assert.equal(output.results.length, cases.length);
    for (const result of output.results) assert.deepEqual(result.mismatches, [], result.label);
    return output.results;
  }
  const total = (results: readonly CaseResult[], key: keyof Omit<CaseResult, 'label' | 'mismatches'>) => results.reduce((n, r) => n + r[key], 0);

  test('fresh, stale and missing values', { skip }, async () => {
    await fixture.writeStale();
    const results = await compare();
    assert.equal(total(results, 'rows'), cases.reduce((n, c) => n + Object.values(c.ids).reduce((m, ids) => m + (typeof ids === 'string' ? 1 : ids.length), 0), 0), 'one row per requested id');
    assert.ok(total(results, 'values') > 40, `feature values compared: ${JSON.stringify(results)}`);
    assert.ok(total(results, 'stale') > 0, 'stale values among them');
    assert.ok(total(results, 'nullEntities') > 0, 'and missing entities');
    assert.equal(total(results, 'errors'), 0);
  });

  test('partly failed reads: one shard killed', { skip }, async () => {
    await fixture.writeStale();
    await fixture.shards[1]!.kill();
    // Once the client has seen the refused reconnect, a failed value's message is the same from one request to the next.
    await eventually(async () => {
      const r = await post(fixture.gateway.url, cases[0]!.body);
      if (!/last connection error/.test(r.text)) throw new Error(r.text);
    });
    const results = await compare();
    assert.ok(total(results, 'errors') > 0, 'values failed');
    assert.ok(total(results, 'failedRows') > 0 && total(results, 'failedRows') < total(results, 'rows'), 'on some rows, not all');
    assert.ok(total(results, 'values') > 0, 'the others were served');
    const mixed = results.find((r) => r.errors > 0 && r.values > 0);
    assert.ok(mixed, 'a response with both data and errors');
  });
});
