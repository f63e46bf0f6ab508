import assert from 'node:assert/strict';
import { loadRegistry } from '../../schema/registry.js';
import type { ViewVersion } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { decodeChange } from '../../eventlog/change-event.js';
import { readTopic, type Stream } from './event-stream.js';

export const registry = loadRegistry();
const view = (name: string, version: number): ViewVersion =>
  registry.entities.flatMap((e) => e.views).find((v) => v.name === name)!.versions[version - 1]!;
/** The group `dist/materializer/main.js` joins by default (MATERIALIZER_GROUP). */
export const materializerGroup = 'feature-materializer';
export const rawTopics = ['click-events', 'transactions'];
/** 100k events: enough batches for faults to land mid-stream, small enough for the 2-core CI machine. */
export const streamSize = { clicks: 70_000, transactions: 30_000, users: 500, items: 200, merchants: 100 };

/**
 * Asserts that what the materializer stored and committed equals the stream's
 * independently computed ground truth: every feature value (nothing lost,
 * nothing counted twice), each dead letter exactly once, and no change event
 * committed twice for one source offset, the last one equal to the stored value.
 */
export async function verifyAgainstTruth(stream: Stream, store: CodecStore, brokers: readonly string[]): Promise<void> {
  const close = (a: number | null | undefined, b: number, label: string) =>
    assert.ok(typeof a === 'number' && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${label}: stored ${a}, truth ${b}`);

  const users = [...stream.truth.clickStats.keys()];
  const v2 = await store.read(view('clickStats', 2), users);
  const v1 = await store.read(view('clickStats', 1), users);
  users.forEach((id, i) => {
    const t = stream.truth.clickStats.get(id)!;
    assert.equal(v2[i]?.values.clicks, t.clicks, `clicks of ${id}`);
    assert.equal(v2[i]?.values.impressions, t.impressions, `impressions of ${id}`);
    close(v2[i]?.values.clickRate as number, t.clicks / t.impressions, `clickRate of ${id}`);
    close(v1[i]?.values.clickRate as number, t.clicks / t.impressions, `clickRate v1 of ${id}`);
  });
  const items = [...stream.truth.itemStats.keys()];
  const itemValues = await store.read(view('itemStats', 1), items);
  items.forEach((id, i) => {
    const t = stream.truth.itemStats.get(id)!;
    close(itemValues[i]?.values.ctr as number, t.clicks / t.impressions, `ctr of ${id}`);
    assert.equal(itemValues[i]?.values.price, t.price, `price (last) of ${id}`);
    assert.equal(itemValues[i]?.values.category, t.category, `category (last) of ${id}`);
  });
  const merchants = [...stream.truth.riskStats.keys()];
  const risk = await store.read(view('riskStats', 1), merchants);
  merchants.forEach((id, i) => {
    const t = stream.truth.riskStats.get(id)!;
    assert.equal(risk[i]?.values.txnCount1h, t.count, `txnCount1h of ${id}`);
    close(risk[i]?.values.amountSum1h as number, t.amount, `amountSum1h of ${id}`);
    close(risk[i]?.values.chargebackRate as number, t.chargebacks / t.count, `chargebackRate of ${id}`);
  });

  // Dead letters: each invalid event once, each late event once per view it is late for.
  const clickDlq = await readTopic(brokers, 'click-events.dlq', stream.invalid['click-events'] + stream.late * 3);
  const txnDlq = await readTopic(brokers, 'transactions.dlq', stream.invalid.transactions);
  const reasons = (records: typeof clickDlq, prefix: string) => records.filter((r) => r.headers['dlq-reason']?.startsWith(prefix)).length;
  for (const [topic, records] of [['click-events', clickDlq], ['transactions', txnDlq]] as const) {
    const keys = records.map((r) => `${r.headers['dlq-source-partition']}/${r.headers['dlq-source-offset']}/${r.headers['dlq-reason']?.slice(0, 30)}`);
    // Before the counts: a duplicate's source position (and where it landed) tells a dead letter
    // committed twice from a reader that returned a record of an aborted transaction.
    const twice = keys.flatMap((k, i) => (keys.indexOf(k) !== i ? [`${k} at dlq ${records[i]!.partition}/${records[i]!.offset}`] : []));
    assert.deepEqual(twice, [], `dead letters of ${topic} committed twice (source partition/offset/reason at dlq partition/offset)`);
  }
  assert.equal(reasons(clickDlq, 'invalid:'), stream.invalid['click-events']);
  assert.equal(reasons(clickDlq, 'late'), stream.late * 3);
  assert.equal(clickDlq.length, stream.invalid['click-events'] + stream.late * 3);
  assert.equal(reasons(txnDlq, 'invalid:'), stream.invalid.transactions);
  assert.equal(txnDlq.length, stream.invalid.transactions);

  // Change events: never two for one (view, version, entity, source offset); the last one of each value is the stored value.
  const changes = (await readTopic(brokers, 'feature-updates', 1)).map((r) => decodeChange({ value: Buffer.from(r.value) }));
  const seen = new Set<string>();
  for (const c of changes) {
    const key = `${c.view}:v${c.version}:${c.id}@${c.source.topic}/${c.source.partition}/${c.source.offset}`;
    assert.ok(!seen.has(key), `change event committed twice: ${key}`);
    seen.add(key);
  }
  const lastChange = new Map<string, (typeof changes)[number]>();
  for (const c of changes) lastChange.set(`${c.view}:${c.version}:${c.id}`, c);
  users.forEach((id, i) => assert.deepEqual(lastChange.get(`clickStats:2:${id}`)?.values, v2[i]?.values, `last change of clickStats v2 ${id}`));
}

