import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fromRoot } from '../../runtime/paths.js';
import { parseRegistry } from '../../schema/registry.js';
import type { ViewVersion } from '../../schema/types.js';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { KafkaLog } from '../../eventlog/kafka-log.js';
import { NodeProcess } from '../support/gateway.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { startTogether } from '../support/start-together.js';
import { RedisProcess } from '../support/redis-server.js';
import { makeStream, waitForGroup, type Stream } from '../support/event-stream.js';

/**
 * Backfill on real Kafka and Redis: a new version of clickStats is built from
 * the earliest offset beside the live one, then made active; afterwards the
 * live materializer keeps it up to date. Every stored value must equal the
 * ground truth of all events, old and new, and the live version must never
 * be disturbed.
 */
const liveGroup = 'feature-materializer';
const backfill = `${liveGroup}.backfill.clickStats.v3`;
const rawTopics = ['click-events', 'transactions'];

/**
 * The shipped registry plus clickStats v3, active or not. v3 keeps clickRate (and so every feature
 * the registry's feature services ask of clickStats's active version: a switch that dropped one would
 * be refused as an invalid registry, naming the service) and counts clicks and impressions anew.
 */
function registryText(active: number): string {
  const text = fs.readFileSync(fromRoot('schema', 'registry.yaml'), 'utf8');
  const v2Last = '          - { name: impressions, type: Int, description: Number of impressions in the window., aggregate: { fn: count } }';
  assert.ok(text.includes(v2Last), 'test setup: clickStats v2 as expected in registry.yaml');
  return text
    .replace(v2Last, `${v2Last}
      - version: 3
        features:
          - { name: clickRate, type: Float, description: Clicks divided by impressions., aggregate: { fn: ratio, numerator: { fn: count, where: clicked }, denominator: { fn: count } } }
          - { name: clicks, type: Int, description: Clicks in the window., aggregate: { fn: count, where: clicked } }
          - { name: impressions, type: Int, description: Impressions in the window., aggregate: { fn: count } }`)
    .replace('    activeVersion: 2\n', `    activeVersion: ${active}\n`);
}

describe('backfill a new view version from the earliest offset, then switch to it', () => {
  let broker: KafkaBroker;
  let redis: RedisProcess;
  let store: CodecStore;
  let dir: string;
  const running: NodeProcess[] = [];

  before(async () => {
    [broker, redis] = await startTogether(KafkaBroker.start(), RedisProcess.start());
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
    dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-backfill-'));
  });

  after(async () => {
    await Promise.all(running.map((p) => p.stop()));
    await store?.close();
    await broker?.destroy();
    await redis?.destroy();
  });

  test('v3 is built from history, serving v2 is untouched, and after the switch both stay exact', async () => {
    const before = path.join(dir, 'registry-v2-active.yaml');
    const afterSwitch = path.join(dir, 'registry-v3-active.yaml');
    fs.writeFileSync(before, registryText(2));
    fs.writeFileSync(afterSwitch, registryText(3));
    const registry = parseRegistry(registryText(2), before);
    const clickStats = registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!;
    const [v2, v3] = [clickStats.versions[1]!, clickStats.versions[2]!];
    const env = (file: string) => ({ KAFKA_BROKERS: broker.brokers.join(','), REDIS_URL: redis.url, LOG_LEVEL: 'warn', REGISTRY_FILE: file });
    const start = (file: string, args: string[] = []) => {
      const p = NodeProcess.spawn('materializer/main.js', args, env(file));
      running.push(p);
      return p;
    };
    const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-producer' });
    await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
    const size = { clicks: 6000, transactions: 600, users: 100, items: 50, merchants: 20 };
    const base = Date.now() - 60_000;
    const parts: Stream[] = [
      makeStream({ ...size, seed: 11, baseMs: base }),
      makeStream({ ...size, seed: 12, baseMs: base + 10_000 }),
      makeStream({ ...size, seed: 13, baseMs: base + 20_000 }),
    ];
    const produce = async (s: Stream) => {
      for (let i = 0; i < s.records.length; i += 5000) await producer.produce(s.records.slice(i, i + 5000));
    };
    const check = async (view: ViewVersion, upTo: number, label: string) => {
      const truth = new Map<string, { clicks: number; impressions: number }>();
      for (const part of parts.slice(0, upTo)) {
        for (const [id, t] of part.truth.clickStats) {
          const sum = truth.get(id) ?? { clicks: 0, impressions: 0 };
          truth.set(id, { clicks: sum.clicks + t.clicks, impressions: sum.impressions + t.impressions });
        }
      }
      const ids = [...truth.keys()];
      const stored = await store.read(view, ids);
      ids.forEach((id, i) => {
        assert.equal(stored[i]?.values.clicks, truth.get(id)!.clicks, `${label}: clicks of ${id} in v${view.version}`);
        assert.equal(stored[i]?.values.impressions, truth.get(id)!.impressions, `${label}: impressions of ${id} in v${view.version}`);
      });
    };

    // History, materialized live into v1 and v2 only.
    let live = start(before);
    const liveCaughtUp = () => waitForGroup(broker.brokers, liveGroup, rawTopics, 120_000).catch((error: Error) => {
      throw new Error(`${error.message}\nlive materializer output:\n${live.output.slice(-4000)}`);
    });
    await produce(parts[0]!);
    await liveCaughtUp();
    await check(v2, 1, 'live before the backfill');
    assert.deepEqual(await store.read(v3, ['u1', 'u2']), [null, null], 'the live materializer does not write a version newer than the active one');

    // The backfill rebuilds v3 from the earliest offset while the live one goes on.
    const filler = start(before, ['--backfill', 'clickStats:3']);
    await produce(parts[1]!);
    // The backfill reads only what v3 is built from.
    await waitForGroup(broker.brokers, backfill, ['click-events'], 120_000).catch((error: Error) => {
      throw new Error(`${error.message}\nbackfill output:\n${filler.output.slice(-3000)}`);
    });
    await liveCaughtUp();
    await check(v3, 2, 'backfilled');
    await check(v2, 2, 'live during the backfill');

    // Switch: v3 active in the registry, the live materializer restarted on it, the backfill stopped.
    await live.stop();
    live = start(afterSwitch);
    await new Promise((r) => setTimeout(r, 1000));
    await filler.stop();
    await produce(parts[2]!);
    await liveCaughtUp();
    await check(v3, 3, 'after the switch');
    await check(v2, 3, 'v2 after the switch');
    await producer.close();
  });
});
