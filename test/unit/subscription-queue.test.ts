import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChangeHub, ChangeStream, type QueueOwner } from '../../gateway/subscriptions.js';
import { encodeChange, type FeatureChange } from '../../eventlog/change-event.js';
import type { LogRecord } from '../../eventlog/event-log.js';
import { loadRegistry } from '../../schema/registry.js';

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
    const stream = new ChangeStream('user', new Set(['a', 'b']), null, 4, o);
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
    const stream = new ChangeStream('user', new Set(ids), null, 8, o);
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
    const stream = new ChangeStream('user', new Set(['a', 'b', 'c']), null, 2, o);
    stream.offer(change('a'));
    stream.offer(change('b'));
    stream.offer(change('c'));
    assert.equal(o.dropped, 1);
    assert.deepEqual((await drain(stream)).map((c) => c.id), ['b', 'c']);
    // The dropped value is no longer considered queued: a new change of it queues again.
    stream.offer(change('a'));
    assert.deepEqual((await drain(stream)).map((c) => c.id), ['a']);
  });

  test('versions and views are separate values; other views are filtered out', async () => {
    const o = owner();
    const stream = new ChangeStream('user', new Set(['a']), new Set(['clickStats']), 8, o);
    stream.offer(change('a', 'clickStats', 1));
    stream.offer(change('a', 'clickStats', 2));
    stream.offer(change('a', 'profile', 1));
    assert.deepEqual((await drain(stream)).map((c) => `${c.view}:${c.version}`), ['clickStats:1', 'clickStats:2']);
  });

  test('a waiting reader gets the next change at once; close ends the stream and leaves its owner', async () => {
    const o = owner();
    const stream = new ChangeStream('user', new Set(['a']), null, 2, o);
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
  test('a change event that comes again reaches a subscriber once, also after it was sent; a later one comes through', async () => {
    const hub = new ChangeHub(loadRegistry(), 16);
    const stream = hub.open({ entity: 'user', ids: ['u1'] }, 100);
    const record = (c: FeatureChange, offset: number): LogRecord => {
      const out = encodeChange(c);
      return { topic: out.topic, partition: 0, offset, key: out.key, value: Buffer.from(out.value), timestampMs: 0, headers: out.headers ?? {} };
    };
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
