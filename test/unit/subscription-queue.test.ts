import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GraphQLError } from 'graphql';
import { ChangeHub, ChangeStream, ConnectionStreams, watchedVersions, type FeatureChangedArgs, type QueueOwner } from '../../gateway/subscriptions/hub.js';
import { encodeChange, type FeatureChange } from '../../eventlog/change-event.js';
import type { LogRecord } from '../../eventlog/event-log.js';
import { loadRegistry } from '../../schema/registry.js';

const registry = loadRegistry();
const user = registry.entities.find((e) => e.name === 'user')!;
/** What a subscription with no `views` or `versions` watches: the active version of every view (clickStats v2, profile v1, riskProfile v1). */
const all = watchedVersions(user, {});

/** The per-subscription queue: bounded, one event per value, oldest dropped past capacity. */
function owner(): QueueOwner & { removed: number } {
  return { dropped: 0, superseded: 0, removed: 0, remove() { this.removed++; } };
}

let offset = 0;
function change(id: string, view = 'clickStats', version = 2): FeatureChange {
  return { entity: 'user', id, view, version, values: {}, eventTime: new Date(1_700_000_000_000 + offset).toISOString(), source: { topic: 't', partition: 0, offset: offset++ } };
}

async function drain(stream: ChangeStream): Promise<FeatureChange[]> {
  const out: FeatureChange[] = [];
  while (stream.length > 0) out.push((await stream.next()).value as FeatureChange);
  return out;
}

describe('subscription queue', () => {
  test('a newer change of a queued value replaces it in place', async () => {
    const o = owner();
    const stream = new ChangeStream('user', new Set(['a', 'b']), all, 4, o);
    const a1 = change('a');
    stream.offer(a1);
    stream.offer(change('b'));
    const a2 = change('a');
    stream.offer(a2);
    assert.equal(stream.length, 2);
    assert.equal(o.superseded, 1);
    const delivered = await drain(stream);
    assert.deepEqual(delivered.map((c) => c.id), ['a', 'b'], 'a keeps its place in the queue');
    assert.equal(delivered[0]!.source.offset, a2.source.offset, 'with the newer change');
    assert.notEqual(a1.source.offset, a2.source.offset);
  });

  test('every watched value keeps its latest change while the values fit the queue, however many changes arrive', async () => {
    const o = owner();
    const ids = Array.from({ length: 8 }, (_, i) => `u${i}`);
    const stream = new ChangeStream('user', new Set(ids), all, 8, o);
    // u0..u3 change once early; u4..u7 change 1000 times each afterwards.
    const latest = new Map<string, number>();
    for (const id of ids.slice(0, 4)) latest.set(id, (stream.offer(change(id)), offset - 1));
    for (let k = 0; k < 1000; k++) for (const id of ids.slice(4)) latest.set(id, (stream.offer(change(id)), offset - 1));
    assert.equal(o.dropped, 0);
    assert.equal(stream.length, 8);
    const delivered = await drain(stream);
    assert.deepEqual(new Map(delivered.map((c) => [c.id, c.source.offset])), latest);
  });

  test('past capacity distinct values, the oldest queued event is dropped and counted', async () => {
    const o = owner();
    const stream = new ChangeStream('user', new Set(['a', 'b', 'c']), all, 2, o);
    stream.offer(change('a'));
    stream.offer(change('b'));
    stream.offer(change('c'));
    assert.equal(o.dropped, 1);
    assert.deepEqual((await drain(stream)).map((c) => c.id), ['b', 'c']);
    // The dropped value is no longer considered queued: a new change of it queues again.
    stream.offer(change('a'));
    assert.deepEqual((await drain(stream)).map((c) => c.id), ['a']);
  });

  test('watched versions are separate values; unwatched versions and views are filtered out', async () => {
    const o = owner();
    const both = new ChangeStream('user', new Set(['a']), watchedVersions(user, { versions: [{ view: 'clickStats', version: 1 }, { view: 'clickStats', version: 2 }] }), 8, o);
    const active = new ChangeStream('user', new Set(['a']), watchedVersions(user, { views: ['clickStats'] }), 8, o);
    for (const c of [change('a', 'clickStats', 1), change('a', 'clickStats', 2), change('a', 'profile', 1)]) {
      both.offer(c);
      active.offer(c);
    }
    assert.deepEqual((await drain(both)).map((c) => `${c.view}:${c.version}`), ['clickStats:1', 'clickStats:2']);
    assert.deepEqual((await drain(active)).map((c) => `${c.view}:${c.version}`), ['clickStats:2'], 'a view by name: its active version only');
  });

  test('a waiting reader gets the next change at once; close ends the stream and leaves its owner', async () => {
    const o = owner();
    const stream = new ChangeStream('user', new Set(['a']), all, 2, o);
    const next = stream.next();
    const a = change('a');
    stream.offer(a);
    assert.equal(((await next).value as FeatureChange).source.offset, a.source.offset);
    stream.close();
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
    assert.equal(o.removed, 1);
  });
});

describe('change hub', () => {
  const record = (c: FeatureChange, offset: number): LogRecord => {
    const out = encodeChange(c);
    return { topic: out.topic, partition: 0, offset, key: out.key, value: Buffer.from(out.value), timestampMs: 0, headers: out.headers ?? {} };
  };

  test('one raw event that changed clickStats v1 and v2 is one event for the README subscription (views: ["clickStats"]), two for one watching both versions', async () => {
    const hub = new ChangeHub(registry, 16);
    const byName = hub.open({ entity: 'user', ids: ['1', '2', '3'], views: ['clickStats'] }, 100);
    const unfiltered = hub.open({ entity: 'user', ids: ['1'] }, 100);
    const v1Only = hub.open({ entity: 'user', ids: ['1'], versions: [{ view: 'clickStats', version: 1 }] }, 100);
    const both = hub.open({ entity: 'user', ids: ['1'], views: ['clickStats'], versions: [{ view: 'clickStats', version: 1 }] }, 100);
    // As the materializer makes them: one change per live version, from the same source event.
    const source = { topic: 'click-events', partition: 0, offset: 41 };
    hub.onRecord(record({ ...change('1', 'clickStats', 1), source }, 0));
    hub.onRecord(record({ ...change('1', 'clickStats', 2), source }, 1));
    const versions = async (s: ChangeStream) => (await drain(s)).map((c) => c.version);
    assert.deepEqual(await versions(byName), [2]);
    assert.deepEqual(await versions(unfiltered), [2]);
    assert.deepEqual(await versions(v1Only), [1]);
    assert.deepEqual(await versions(both), [1, 2]);
    for (const s of [byName, unfiltered, v1Only, both]) s.close();
    assert.equal(hub.streams.size, 0);
  });

  test('a change event that comes again reaches a subscriber once, also after it was sent; a later one comes through', async () => {
    const hub = new ChangeHub(registry, 16);
    const stream = hub.open({ entity: 'user', ids: ['u1'] }, 100);
    const first = change('u1');
    hub.onRecord(record(first, 0));
    hub.onRecord(record(first, 1)); // the same change committed a second time
    assert.equal(stream.length, 1);
    assert.equal((await drain(stream)).length, 1);
    hub.onRecord(record(first, 2));
    assert.equal(stream.length, 0, 'a duplicate after the first was sent');
    const later = change('u1');
    hub.onRecord(record(later, 3));
    assert.deepEqual((await drain(stream)).map((c) => c.source.offset), [later.source.offset]);
    stream.close();
  });
});

describe('what a subscription watches (one rule: active versions by name, exact versions by `versions`)', () => {
  const show = (args: Pick<FeatureChangedArgs, 'views' | 'versions'>) =>
    [...watchedVersions(user, args)].flatMap(([view, versions]) => [...versions].map((v) => `${view}:v${v}`)).sort();

  test('no views: the active version of every view; views by name: their active versions; versions: exactly those; both: the union', () => {
    const clickStats = user.views.find((v) => v.name === 'clickStats')!;
    assert.equal(clickStats.activeVersion, 2, 'the registry this test reads');
    assert.deepEqual(show({}), ['clickStats:v2', 'profile:v1', 'riskProfile:v1']);
    assert.deepEqual(show({ views: ['clickStats'] }), ['clickStats:v2']);
    assert.deepEqual(show({ versions: [{ view: 'clickStats', version: 1 }] }), ['clickStats:v1']);
    assert.deepEqual(show({ views: ['profile'], versions: [{ view: 'clickStats', version: 1 }, { view: 'clickStats', version: 1 }] }), ['clickStats:v1', 'profile:v1']);
    assert.deepEqual(show({ views: ['clickStats'], versions: [{ view: 'clickStats', version: 2 }] }), ['clickStats:v2'], 'named twice, watched once');
  });

  test('bad views and versions are refused with BAD_USER_INPUT errors that say what exists', () => {
    const refused = (args: Pick<FeatureChangedArgs, 'views' | 'versions'>, message: RegExp) =>
      assert.throws(() => watchedVersions(user, args), (error: unknown) => {
        assert.ok(error instanceof GraphQLError);
        assert.equal(error.extensions.code, 'BAD_USER_INPUT');
        assert.match(error.message, message);
        return true;
      });
    refused({ views: [] }, /`views` must name at least one view/);
    refused({ versions: [] }, /`versions` must name at least one view version, e\.g\. \[\{ view: "clickStats", version: 1 \}\]/);
    refused({ versions: [{ view: 'nope', version: 1 }, { view: 'nope', version: 2 }] }, /^Unknown feature view "nope" for entity user; its views are: clickStats, profile, riskProfile$/);
    refused({ versions: [{ view: 'itemStats', version: 1 }] }, /Unknown feature view "itemStats" for entity user/);
    for (const version of [0, 3, -1]) {
      refused({ versions: [{ view: 'clickStats', version }] }, new RegExp(`^Feature view clickStats has no version ${version}; its versions are 1, 2 \\(active: 2\\)$`));
    }
  });
});

describe('a connection\'s streams', () => {
  test('end together when the connection starts to close, leaving the hub; one opened after that ends at once', async () => {
    const hub = new ChangeHub(registry, 16);
    const connection = new ConnectionStreams();
    const a = connection.track(hub.open({ entity: 'user', ids: ['1'] }, 100));
    const b = connection.track(hub.open({ entity: 'user', ids: ['2'] }, 100));
    const waiting = a.next();
    connection.end();
    assert.deepEqual(await waiting, { value: undefined, done: true }, 'a reader waiting on a stream is released');
    assert.ok(a.done && b.done);
    assert.equal(hub.streams.size, 0);
    const late = connection.track(hub.open({ entity: 'user', ids: ['3'] }, 100));
    assert.ok(late.done, 'a subscription that completes its opening on a closing connection');
    assert.equal(hub.streams.size, 0);
  });
});
