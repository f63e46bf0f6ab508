/**
 * The README's own subscription (section "Subscriptions", read from
 * README.md so that the two cannot drift apart) against the gateway as
 * `npm start` runs it: `node dist/gateway/main.js` with no store or Kafka
 * settings, i.e. the embedded store and log, the in-process materializer and
 * its demo event stream. Only the demo stream's rate is raised (1000 raw
 * events/s instead of 100), so that users 1-3 change often enough for a
 * short test.
 *
 * Each demo click event changes clickStats v1 and v2 (both live versions
 * are materialized from it): two change events. The README's subscription
 * names the view, so it must get one event per change: the active
 * version's. A second subscription watches both versions by `versions` and
 * serves as the record of what the feed carried; over a window of event
 * times both have seen completely, the README's events must be exactly the
 * recorded v2 changes, per id and event time, none missing, none doubled.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { fromRoot } from '../../runtime/paths.js';
import { activeVersionOf } from '../../schema/types.js';
import { NodeProcess, registry, waitUntilReady } from '../support/gateway.js';
import { freePort } from '../support/ports.js';
import { eventually } from '../support/wait.js';

/** The first GraphQL block of the README's "Subscriptions" section. */
function readmeSubscription(): string {
  const readme = fs.readFileSync(fromRoot('README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Subscriptions\n'));
  const block = /```graphql\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'README.md has a graphql block in its Subscriptions section');
  return block[1]!;
}

interface Tick {
  readonly id: string;
  readonly view: string;
  readonly version: number;
  readonly eventTime: string;
  readonly user?: { id: string; clickStats: { clickRate: number | null; clicks: number | null } | null } | null;
}

/** Changes of each id with an event time in [from, to], as "id@eventTime", sorted: a multiset to compare. */
const inWindow = (ticks: readonly Tick[], from: number, to: number): string[] =>
  ticks.filter((t) => Date.parse(t.eventTime) >= from && Date.parse(t.eventTime) <= to).map((t) => `${t.id}@${t.eventTime}`).sort();

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0);
}

describe("the README's subscription on `npm start`", () => {
  let gateway: NodeProcess;
  let base: string;
  let client: Client | undefined;

  before(async () => {
    const port = await freePort();
    // As `npm start`: no REDIS_URL, KAFKA_BROKERS or SUBGRAPH_URLS (the harness sets none), demo seed and stream on.
    gateway = NodeProcess.spawn('gateway/main.js', [], { PORT: String(port), LOG_LEVEL: 'warn', DEMO_EVENTS_PER_SECOND: '1000' });
    base = `http://127.0.0.1:${port}`;
    await waitUntilReady(`${base}/readyz`, gateway, 60_000);
  });

  after(async () => {
    await client?.dispose();
    await gateway?.stop();
  });

  it('gets one event per change of clickStats (its active version), none doubled', async () => {
    const query = readmeSubscription();
    assert.match(query, /featureChanged\(entity: USER, ids: \["1", "2", "3"\], views: \["clickStats"\]\)/, 'the subscription this test is about');
    const active = activeVersionOf(registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!).version;
    const versions = registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!.versions.map((v) => v.version);
    assert.ok(versions.length > 1, 'clickStats has several live versions: what made the README subscription tick twice');

    client = createClient({ url: `${base.replace('http', 'ws')}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0 });
    const readme: Tick[] = [];
    const record: Tick[] = [];
    const failures: unknown[] = [];
    const sink = (into: Tick[]) => ({
      next: (value: { data?: { featureChanged?: Tick } | null; errors?: unknown }) => {
        if (value.errors || !value.data?.featureChanged) failures.push(value);
        else into.push(value.data.featureChanged);
      },
      error: (error: unknown) => void failures.push(error),
      complete: () => undefined,
    });
    client.subscribe({ query }, sink(readme));
    client.subscribe({
      query: 'subscription ($v: [FeatureViewVersion!]) { featureChanged(entity: USER, ids: ["1", "2", "3"], versions: $v) { id view version eventTime } }',
      variables: { v: versions.map((version) => ({ view: 'clickStats', version })) },
    }, sink(record));
    await eventually(async () => assert.equal(await metric(base, 'subscriptions_active'), 2), 30_000);

    // Changes from `from` on reach both subscriptions (both are open). Collect until there are enough, then until
    // both got a change well past `to`: each subscription gets the feed's changes in order, so by then it has
    // every change up to `to` (a batch of one partition may be appended a little after another's newer one).
    const marginMs = 3000;
    const from = Date.now();
    const enough = 20;
    await eventually(async () => {
      assert.deepEqual(failures, []);
      assert.ok(inWindow(record.filter((t) => t.version === active), from, Infinity).length >= enough, `${enough} changes of clickStats v${active} of users 1-3`);
    }, 120_000, 200);
    const to = Date.now();
    await eventually(async () => {
      for (const ticks of [readme, record]) assert.ok(ticks.some((t) => Date.parse(t.eventTime) > to + marginMs), 'a change past the window');
    }, 60_000, 200);
    assert.deepEqual(failures, []);
    // Nothing was coalesced or dropped: every change the feed carried is an event of its own, so the counts are exact.
    assert.equal(await metric(base, 'subscription_events_superseded_total'), 0);
    assert.equal(await metric(base, 'subscription_events_dropped_total'), 0);

    for (const tick of readme) {
      assert.equal(tick.view, 'clickStats');
      assert.equal(tick.version, active, `an event of clickStats v${tick.version}: a view by name is its active version`);
      assert.ok(['1', '2', '3'].includes(tick.id));
      assert.equal(tick.user?.id, tick.id);
      assert.notEqual(tick.user?.clickStats, null, 'the payload is read when the event is sent: the value exists');
    }
    const expected = inWindow(record.filter((t) => t.version === active), from, to);
    const got = inWindow(readme, from, to);
    assert.ok(expected.length >= enough);
    // The old rule's symptom, seen on the record: the same raw events changed the other version too.
    assert.ok(inWindow(record.filter((t) => t.version !== active), from, to).length > 0, 'the feed carried changes of the other version');
    const count = (keys: readonly string[], key: string) => keys.filter((k) => k === key).length;
    assert.deepEqual([...new Set(got)].filter((key) => count(got, key) > count(expected, key)), [], 'changes sent more often than the feed carried them');
    assert.deepEqual(got, expected, 'one event per change of clickStats v2, per user and event time');
  });
});
