/**
 * Live persisted operations (`Subscription.liveOperation`, gateway/subscriptions/live-operations.ts) on a
 * co-located gateway over the embedded store and embedded log: the full result first, then JSON
 * Patches that, applied in order, give exactly what POST /graphql answers for the persisted
 * operation at that moment — under a stream of ~1,000 change events/s, at random quiet points and
 * at the end; values turning stale by time alone; and the refusals (unknown operation, bad
 * variables, too many ids, an unreadable view, an inference key on featureChanged); and a real
 * redis-server going down (the errors patched in) and coming back (the data patched back).
 *
 * Changes are made as the materializer makes them: the store write, then the change event. No
 * assertion depends on timing: each wait polls with a generous timeout naming what it waits for.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import jsonPatch, { type Operation } from 'fast-json-patch';
import { parse, print } from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { encodeChange } from '../../eventlog/change-event.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { readManifest, sha256Hex } from '../../schema/manifest.js';
import { activeVersionOf, findView } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import type { FeatureValues } from '../../store/codec.js';
import type { OnlineStore } from '../../store/online-store.js';
import { testCredentials, type TestCredentials } from '../support/auth.js';
import { registry, testConfig } from '../support/gateway.js';
import { post } from '../support/http.js';
import { RedisProcess } from '../support/redis-server.js';
import { eventually } from '../support/wait.js';

const { applyPatch, deepClone, getValueByPointer, _areEquals: equal } = jsonPatch;
const manifest = readManifest();
const ranking = manifest.operations.find((o) => o.name === 'RankingFeatures')!;
const MAX_IDS = 100;
const LIVE = 'subscription Live($op: String!, $vars: JSONObject) { liveOperation(operation: $op, variables: $vars) { revision result patch } }';

/** Polls `predicate` until it holds; fails naming `what` after a generous timeout (never a timing assertion). */
async function waitFor(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A store and an event log standing in for the materializer: write, then announce. */
class Feed {
  private offset = 0;
  produced = 0;
  constructor(readonly store: CodecStore, readonly log: EmbeddedLog) {}

  async publish(viewName: string, id: string, values: FeatureValues, eventTimeMs = Date.now()): Promise<void> {
    const view = findView(registry, viewName)!;
    const version = activeVersionOf(view);
    await this.store.write(version, [{ entityId: id, values, eventTimeMs }]);
    await this.log.produce([encodeChange({
      entity: view.entityName, id, view: viewName, version: version.version, values, eventTime: new Date(eventTimeMs).toISOString(),
      source: { topic: 'test-events', partition: 0, offset: this.offset++ },
    })]);
    this.produced++;
  }
}

/**
 * One liveOperation subscription and its checker: applies each patch in order to a deep copy of
 * the document so far, and checks that each op touches a path whose value did change.
 */
class LiveDocument {
  document: any = undefined;
  revision = -1;
  updates = 0;
  patchBytes = 0;
  fullBytes = 0;
  error: unknown = undefined;
  readonly problems: string[] = [];
  readonly stop: () => void;

  constructor(client: Client, operation: string, variables: Record<string, unknown> | undefined) {
    this.stop = client.subscribe({ query: LIVE, variables: { op: operation, ...(variables ? { vars: variables } : {}) } }, {
      next: (message) => this.take(message as any),
      error: (error) => void (this.error = error),
      complete: () => void 0,
    });
  }

  private take(message: { data?: { liveOperation: { revision: number; result: unknown; patch: Operation[] | null } }; errors?: unknown }): void {
    if (!message.data) {
      this.problems.push(`a message without data: ${JSON.stringify(message)}`);
      return;
    }
    const { revision, result, patch } = message.data.liveOperation;
    if (revision !== this.revision + 1) this.problems.push(`revision ${revision} after ${this.revision}`);
    this.revision = revision;
    if (revision === 0) {
      if (patch !== null) this.problems.push('revision 0 carries a patch');
      this.document = result;
      return;
    }
    if (result !== null) this.problems.push(`revision ${revision} carries a full result`);
    if (!Array.isArray(patch) || patch.length === 0) {
      this.problems.push(`revision ${revision}: an empty or missing patch ${JSON.stringify(patch)}`);
      return;
    }
    const before = deepClone(this.document);
    const after = applyPatch(deepClone(this.document), patch, true, true).newDocument;
    for (const op of patch) {
      const was = valueAt(before, op.path);
      const is = valueAt(after, op.path);
      if (equal(was, is)) this.problems.push(`revision ${revision}: ${op.op} ${op.path} touches a value that did not change (${JSON.stringify(was)})`);
    }
    this.document = after;
    this.updates++;
    this.patchBytes += Buffer.byteLength(JSON.stringify(patch));
    this.fullBytes += Buffer.byteLength(JSON.stringify(after));
  }

  async ready(): Promise<void> {
    await waitFor(() => this.revision >= 0 || this.error !== undefined, 'the full result (revision 0)');
    assert.equal(this.error, undefined, `subscription failed: ${JSON.stringify(this.error)}`);
  }

  /** The errors of an `error` message. */
  async refusal(): Promise<any[]> {
    await waitFor(() => this.error !== undefined || this.revision >= 0, 'an error message');
    assert.equal(this.revision, -1, `expected an error, got revision ${this.revision}: ${JSON.stringify(this.document)}`);
    assert.ok(Array.isArray(this.error), `expected GraphQL errors, got ${String(this.error)}`);
    return this.error as any[];
  }
}

function valueAt(document: unknown, pointer: string): unknown {
  try {
    return getValueByPointer(document, pointer);
  } catch {
    return undefined;
  }
}

const persistedBody = (op: { id: string }, variables: Record<string, unknown>) => ({ extensions: { persistedQuery: { version: 1, sha256Hash: op.id } }, variables });

function client(gateway: RunningGateway, connectionParams?: Record<string, string>): Client {
  return createClient({ url: gateway.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0, ...(connectionParams ? { connectionParams } : {}) });
}

/** A small seeded generator: the same run every time. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const itemIds = Array.from({ length: MAX_IDS }, (_, i) => String(i + 1));
const clickValues = (n: number) => ({ clickRate: (n % 97) / 97, clicks: n % 97, impressions: 97 });
const profileValues = (n: number) => ({ sessionLength: n % 600, isPremium: n % 2 === 0, country: ['DE', 'FR', 'US'][n % 3]!, embedding: [n % 7, 0.5] });
const itemValues = (n: number) => ({ ctr: (n % 89) / 89, price: n % 50, category: ['books', 'games', 'tools'][n % 3]! });

describe('live persisted operations (co-located, embedded store and log)', () => {
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let gateway: RunningGateway;
  let feed: Feed;
  const clients: Client[] = [];
  const open = (params?: Record<string, string>): Client => {
    const c = client(gateway, params);
    clients.push(c);
    return c;
  };

  before(async () => {
    store = createStore({ kind: 'embedded' });
    eventLog = new EmbeddedLog();
    gateway = await startGateway({ config: testConfig({ MAX_BATCH_IDS: String(MAX_IDS) }), registry, store, eventLog });
    feed = new Feed(store, eventLog);
  });

  after(async () => {
    for (const c of clients.splice(0)) await c.dispose();
    await gateway?.close();
    await eventLog?.close();
    await store?.close();
  });

  it('RankingFeatures for 1 user and 100 items under ~1,000 changes/s: every patch touches only what changed, and the document equals POST /graphql at quiet points and at the end', async () => {
    const rand = random(12);
    const user = 'u-live';
    const variables = { user, items: itemIds };
    // Most items have a value from the start; every tenth appears only during the run (a patch adds it).
    await feed.publish('clickStats', user, clickValues(1));
    for (const id of itemIds) if (Number(id) % 10 !== 0) await feed.publish('itemStats', id, itemValues(Number(id)));

    const live = new LiveDocument(open(), 'RankingFeatures', variables);
    await live.ready();
    const full = async () => {
      const reply = await post(gateway.url, persistedBody(ranking, variables));
      assert.equal(reply.status, 200, reply.text);
      return reply.json;
    };
    assert.deepEqual(live.document, await full(), 'revision 0 is the full result POST /graphql answers');

    let paused = false;
    let stopped = false;
    let n = 0;
    const produce = async () => {
      // About 1,000 events/s: 10 every 10 ms, over the watched user (clickStats, profile) and items, and ids nobody watches.
      const end = Date.now() + 4000;
      while (Date.now() < end && !stopped) {
        if (paused) {
          await new Promise((r) => setTimeout(r, 5));
          continue;
        }
        for (let k = 0; k < 10; k++) {
          n++;
          const pick = rand();
          if (pick < 0.1) await feed.publish('clickStats', user, clickValues(n));
          else if (pick < 0.15) await feed.publish('profile', user, profileValues(n));
          else if (pick < 0.8) await feed.publish('itemStats', itemIds[Math.floor(rand() * itemIds.length)]!, itemValues(n));
          else if (pick < 0.9) await feed.publish('itemStats', String(1000 + Math.floor(rand() * 100)), itemValues(n));
          else await feed.publish('clickStats', `other-${Math.floor(rand() * 10)}`, clickValues(n));
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const quietPoint = async (what: string) => {
      // No further change comes; the subscription drains to the state of the store.
      let expected: unknown;
      await waitFor(async () => equal(live.document, (expected = await full())), `the live document to equal POST /graphql (${what})`);
      assert.deepEqual(live.document, expected);
      assert.deepEqual(live.problems, []);
    };

    const producing = produce();
    for (let checkpoint = 0; checkpoint < 3; checkpoint++) {
      await new Promise((r) => setTimeout(r, 300 + Math.floor(rand() * 700)));
      paused = true;
      await new Promise((r) => setTimeout(r, 20)); // let the producer finish its batch (correctness does not depend on it: the wait below polls)
      await quietPoint(`checkpoint ${checkpoint + 1}, after ${feed.produced} events`);
      paused = false;
    }
    await producing;
    stopped = true;
    await quietPoint(`the end, after ${feed.produced} events`);
    assert.ok(live.updates > 0, 'some patches were sent');
    assert.equal(live.error, undefined);
    console.log(
      `live RankingFeatures: ${feed.produced} change events, ${live.updates} updates, ` +
        `patch bytes ${live.patchBytes} vs full ${live.fullBytes} (${(live.patchBytes / live.fullBytes).toFixed(4)})`,
    );
    live.stop();
  });

  it('a value that turns stale by time alone is patched stale, with no change event', async () => {
    const id = 'u-ttl';
    const ttlMs = activeVersionOf(findView(registry, 'clickStats')!).ttlSeconds * 1000;
    // Fresh for about 4 more seconds.
    await feed.publish('clickStats', id, clickValues(42), Date.now() - ttlMs + 4000);
    const live = new LiveDocument(open(), 'UserClickRate', { ids: [id] });
    await live.ready();
    assert.deepEqual(live.document.data.users[0].clickStats, { clickRate: 42 / 97, stale: false }, 'fresh when subscribed (the machine took over 4 s?)');
    const produced = feed.produced;
    await waitFor(() => live.revision >= 1, 'the patch of the value turning stale');
    assert.equal(feed.produced, produced, 'no change event was produced meanwhile');
    assert.deepEqual(live.document.data.users[0].clickStats, { clickRate: null, stale: true });
    assert.deepEqual(live.document, (await post(gateway.url, persistedBody(manifest.operations.find((o) => o.name === 'UserClickRate')!, { ids: [id] }))).json);
    assert.deepEqual(live.problems, []);
    live.stop();
  });

  it('runs an operation named by its id', async () => {
    const live = new LiveDocument(open(), ranking.id, { user: 'nobody', items: ['x'] });
    await live.ready();
    assert.deepEqual(live.document, { data: { user: null, items: [null] } });
    live.stop();
  });

  it('refuses an unknown operation, naming the known ones', async () => {
    const [error] = await new LiveDocument(open(), 'NoSuchOperation', {}).refusal();
    assert.equal(error.extensions.code, 'BAD_USER_INPUT');
    assert.match(error.message, /Unknown persisted operation "NoSuchOperation".*known: .*RankingFeatures/);
  });

  it('refuses bad variables with the words of POST /graphql', async () => {
    for (const variables of [{ user: '1' }, { user: '1', items: [{ not: 'an id' }] }, { user: ['1', '2'], items: ['1'] }]) {
      const [error] = await new LiveDocument(open(), 'RankingFeatures', variables).refusal();
      const reply = await post(gateway.url, persistedBody(ranking, variables));
      assert.equal(reply.status, 400, reply.text);
      assert.equal(error.extensions.code, 'BAD_USER_INPUT');
      assert.equal(reply.json.errors[0].extensions.code, 'BAD_USER_INPUT');
      assert.equal(error.message, reply.json.errors.map((e: any) => e.message).join('\n'), `variables ${JSON.stringify(variables)}`);
    }
    // variables that are no object are refused by the argument's type
    const [error] = await new LiveDocument(open(), 'RankingFeatures', ['1'] as unknown as Record<string, unknown>).refusal();
    assert.match(error.message, /JSONObject cannot represent a non-object value/);
  });

  it('refuses more ids than MAX_BATCH_IDS, as POST /graphql does', async () => {
    const variables = { user: '1', items: Array.from({ length: MAX_IDS + 1 }, (_, i) => String(i)) };
    const [error] = await new LiveDocument(open(), 'RankingFeatures', variables).refusal();
    const reply = await post(gateway.url, persistedBody(ranking, variables));
    assert.equal(error.extensions.code, 'BATCH_TOO_LARGE');
    assert.equal(error.message, reply.json.errors[0].message);
  });
});

describe('live persisted operations: who may subscribe', () => {
  let dir: string;
  let creds: TestCredentials;
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let gateway: RunningGateway;
  const clients: Client[] = [];
  const as = (key: string): Client => {
    const c = client(gateway, { 'x-api-key': key });
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'live-ops-'));
    creds = await testCredentials(dir);
    // The manifest plus one operation that reads riskProfile (readable by admin only).
    const body = print(parse('query UserRisk($id: ID!) { user(id: $id) { id riskProfile { riskScore flagged } } }'));
    const manifestFile = path.join(dir, 'manifest.json');
    fs.writeFileSync(manifestFile, JSON.stringify({ ...manifest, operations: [...manifest.operations, { id: sha256Hex(body), name: 'UserRisk', type: 'query', body }] }));
    store = createStore({ kind: 'embedded' });
    eventLog = new EmbeddedLog();
    gateway = await startGateway({ config: testConfig({ ...creds.env, PERSISTED_QUERY_MANIFEST: manifestFile }), registry, store, eventLog });
  });

  after(async () => {
    for (const c of clients.splice(0)) await c.dispose();
    await gateway?.close();
    await eventLog?.close();
    await store?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an inference key may subscribe to liveOperation, but not to featureChanged', async () => {
    const c = as(creds.keys.inference);
    const live = new LiveDocument(c, 'RankingFeatures', { user: '1', items: ['1'] });
    await live.ready();
    assert.deepEqual(live.document, { data: { user: null, items: [null] } });

    let error: any;
    c.subscribe({ query: 'subscription { featureChanged(entity: USER, ids: ["1"]) { id } }' }, { next: () => {}, error: (e) => void (error = e), complete: () => {} });
    await waitFor(() => error !== undefined, 'featureChanged to be refused');
    assert.equal(error[0].extensions.code, 'FORBIDDEN');
    assert.match(error[0].message, /Not allowed to subscribe to feature changes: principal "inference-service" has role\(s\) inference; needs one of dashboard, analyst, admin/);
    live.stop();
  });

  it('a dashboard may subscribe to both', async () => {
    const live = new LiveDocument(as(creds.keys.dashboard), 'UserClickRate', { ids: ['1'] });
    await live.ready();
    assert.deepEqual(live.document, { data: { users: [null] } });
    live.stop();
  });

  it('an operation reading a view the principal may not read is refused FORBIDDEN when subscribing; an admin gets it', async () => {
    const [error] = await new LiveDocument(as(creds.keys.inference), 'UserRisk', { id: '1' }).refusal();
    assert.equal(error.extensions.code, 'FORBIDDEN');
    assert.equal(error.extensions.view, 'riskProfile');
    assert.match(error.message, /Not allowed to read feature view riskProfile: it is readable by admin only/);

    const live = new LiveDocument(as(creds.keys.admin), 'UserRisk', { id: '1' });
    await live.ready();
    assert.deepEqual(live.document, { data: { user: null } });
    live.stop();
  });
});

describe('live persisted operations: the store goes down and comes back (real redis-server)', () => {
  let redis: RedisProcess;
  let store: OnlineStore;
  let eventLog: EmbeddedLog;
  let gateway: RunningGateway;
  let c: Client;
  const userClickRate = manifest.operations.find((o) => o.name === 'UserClickRate')!;

  before(async () => {
    redis = await RedisProcess.start();
    store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 500 });
    await eventually(() => store.ping(), 10_000, 50);
    eventLog = new EmbeddedLog();
    gateway = await startGateway({ config: testConfig(), registry, store, eventLog });
    c = client(gateway);
  });

  after(async () => {
    await c?.dispose();
    await gateway?.close();
    await eventLog?.close();
    await store?.close();
    await redis?.destroy();
  });

  it('a re-run that fails is patched to the errors POST /graphql answers then, and back to the data once the store answers again, without a change event', async () => {
    const view = activeVersionOf(findView(registry, 'clickStats')!);
    const ids = ['d1', 'd2'];
    await eventually(() => store.write(view, ids.map((id, i) => ({ entityId: id, values: clickValues(i + 10), eventTimeMs: Date.now() }))), 10_000, 100);
    const live = new LiveDocument(c, 'UserClickRate', { ids });
    await live.ready();
    const fresh = live.document;
    assert.equal(fresh.errors, undefined);
    assert.equal(fresh.data.users.length, 2);

    await redis.stop(); // SHUTDOWN SAVE: the values come back with it
    // The materializer's change event (its write went to another replica, say): the re-run finds the store down.
    await eventLog.produce([encodeChange({
      entity: 'user', id: 'd1', view: 'clickStats', version: view.version, values: clickValues(10), eventTime: new Date().toISOString(),
      source: { topic: 'test-events', partition: 0, offset: 1 },
    })]);
    await waitFor(() => (live.document.errors ?? []).some((e: any) => e.extensions?.code === 'STORE_UNAVAILABLE'), 'a patch carrying STORE_UNAVAILABLE');
    const down = await post(gateway.url, persistedBody(userClickRate, { ids }));
    assert.deepEqual(live.document.data, down.json.data, 'the data POST /graphql answers with the store down');
    assert.deepEqual(live.document.errors.map((e: any) => [e.extensions.code, e.path]), down.json.errors.map((e: any) => [e.extensions.code, e.path]));

    await redis.restart();
    // No change event: the failed result is run again until it answers without errors.
    await waitFor(() => equal(live.document, fresh), 'the document to recover the data once redis is back');
    assert.deepEqual(live.document, (await post(gateway.url, persistedBody(userClickRate, { ids }))).json);
    assert.deepEqual(live.problems, []);
    live.stop();
  });
});
