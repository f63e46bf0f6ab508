import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Producer } from 'kafkajs';
import { isFenced, PartitionLeases, type LeaseSupport } from '../../eventlog/partition-leases.js';
import { AppliedChanges, sourceOfHeaders } from '../../eventlog/applied-changes.js';

/**
 * The ownership rules of eventlog/partition-leases.ts, step by step. The
 * broker side (a real fence, a real zombie) is exercised end to end by
 * test/integration/materializer-rebalance.test.ts; here the order of events
 * is under the test's control: what is initialised, read and closed when.
 */
function harness(sessionTimeoutMs = 50) {
  const events: string[] = [];
  let producers = 0;
  const committed = new Map<string, number>();
  let failNextRead = false;
  const support: LeaseSupport = {
    createProducer: (topic, partition) => {
      const n = ++producers;
      events.push(`create ${topic}/${partition}#${n}`);
      return {
        connect: async () => void events.push(`init ${topic}/${partition}#${n}`),
        disconnect: async () => void events.push(`close ${topic}/${partition}#${n}`),
      } as unknown as Producer;
    },
    readCommitted: async (topic, partition) => {
      events.push(`read ${topic}/${partition}`);
      if (failNextRead) {
        failNextRead = false;
        throw new Error('coordinator not available');
      }
      const offset = committed.get(`${topic}/${partition}`);
      return { offset: offset ?? null, metadata: offset === undefined ? null : `cp${offset}` };
    },
    sessionTimeoutMs,
  };
  return { leases: new PartitionLeases(support), events, committed, failReadOnce: () => (failNextRead = true) };
}

describe('partition leases', () => {
  test('an assignment initialises each partition before its committed offset is read', async () => {
    const { leases, events, committed } = harness();
    committed.set('t/0', 42);
    leases.assigned({ t: [0, 1] });
    const lease = leases.acquire('t', 0)!;
    const owned = await lease.ready;
    assert.equal(owned.next, 42);
    assert.equal(owned.checkpoint, 'cp42');
    assert.equal((await leases.acquire('t', 1)!.ready).next, 0);
    assert.ok(events.indexOf('init t/0#1') < events.indexOf('read t/0'), events.join(', '));
    assert.equal(leases.acquire('t', 0), lease, 'the same lease for the rest of the generation');
    await leases.close();
  });

  test('a new assignment retires every lease, closes its producer after the batch in hand, and fences again', async () => {
    const { leases, events } = harness();
    leases.assigned({ t: [0, 1] });
    const old = leases.acquire('t', 0)!;
    await old.ready;
    let finishBatch!: () => void;
    const batch = old.run(() => new Promise<void>((resolve) => (finishBatch = resolve)));
    leases.assigned({ t: [0] }); // partition 1 revoked, 0 kept
    assert.equal(leases.holds(old), false, 'a batch of the old generation may not commit');
    const renewed = leases.acquire('t', 0)!;
    assert.notEqual(renewed, old);
    await new Promise((r) => setTimeout(r, 10));
    assert.ok(!events.includes('close t/0#1'), 'closed while its batch was still running');
    assert.ok(!events.includes('create t/0#3'), 'the new lease began before the old one closed');
    finishBatch();
    await batch;
    await renewed.ready;
    assert.ok(events.indexOf('close t/0#1') < events.indexOf('init t/0#3'), events.join(', '));
    assert.ok(events.includes('close t/1#2'), 'the revoked partition\'s producer is closed');
    await leases.close();
    assert.ok(events.includes('close t/0#3'));
  });

  test('fenced: the partition pauses until the next assignment, and is resumed by it', async () => {
    const { leases } = harness(10_000);
    leases.assigned({ t: [0] });
    const lease = leases.acquire('t', 0)!;
    await lease.ready;
    let paused = 0;
    let resumed = 0;
    leases.fenced(lease, () => {
      paused++;
      return () => void resumed++;
    });
    assert.equal(paused, 1);
    assert.equal(leases.acquire('t', 0), null, 'no new lease (it would fence the new owner back)');
    leases.assigned({ t: [0] });
    assert.equal(resumed, 1);
    assert.ok(leases.acquire('t', 0));
    await leases.close();
  });

  test('fenced without a new assignment within the session timeout: resumed, and the next batch takes a new lease', async () => {
    const { leases } = harness(30);
    leases.assigned({ t: [0] });
    const lease = leases.acquire('t', 0)!;
    await lease.ready;
    let resumed = 0;
    leases.fenced(lease, () => () => void resumed++);
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(resumed, 1);
    const next = leases.acquire('t', 0);
    assert.ok(next && next !== lease);
    await next.ready;
    await leases.close();
  });

  test('a lease whose take-over failed is replaced by the next acquire; its failure is not unhandled', async () => {
    const { leases, failReadOnce, events } = harness();
    failReadOnce();
    leases.assigned({ t: [0] });
    const lease = leases.acquire('t', 0)!;
    await assert.rejects(lease.ready, /coordinator not available/);
    assert.ok(events.includes('close t/0#1'), 'the producer of a failed take-over is closed');
    const next = leases.acquire('t', 0)!;
    assert.notEqual(next, lease);
    assert.equal((await next.ready).next, 0);
    await leases.close();
  });

  test('a broken lease (a failed commit) is replaced, and the replacement reads the committed offset again', async () => {
    const { leases, committed } = harness();
    leases.assigned({ t: [0] });
    const lease = leases.acquire('t', 0)!;
    await lease.ready;
    committed.set('t/0', 7); // the commit went through after all
    leases.broken(lease);
    assert.equal((await leases.acquire('t', 0)!.ready).next, 7);
    await leases.close();
  });

  test('isFenced knows the broker\'s refusals of an old epoch, also wrapped, and nothing else', () => {
    const epoch = Object.assign(new Error("Producer attempted an operation with an old epoch"), { name: 'KafkaJSProtocolError', type: 'INVALID_PRODUCER_EPOCH', code: 47 });
    assert.ok(isFenced(epoch));
    assert.ok(isFenced(Object.assign(new Error('wrapped'), { name: 'KafkaJSNonRetriableError', cause: epoch })));
    assert.ok(isFenced(Object.assign(new Error('unknown to kafkajs'), { type: 'UNKNOWN', code: 90 })));
    assert.ok(!isFenced(Object.assign(new Error('Connection error'), { name: 'KafkaJSConnectionError' })));
    assert.ok(!isFenced(Object.assign(new Error('busy'), { type: 'CONCURRENT_TRANSACTIONS', code: 51 })));
    assert.ok(!isFenced(undefined));
  });
});

describe('applied changes', () => {
  const at = (partition: number, offset: number) => ({ topic: 'click-events', partition, offset });

  test('a change comes once; the same or an older offset of the same source partition again is a duplicate', () => {
    const applied = new AppliedChanges();
    assert.ok(applied.admit('clickStats:v2:u1', at(0, 10)));
    assert.ok(!applied.admit('clickStats:v2:u1', at(0, 10)));
    assert.ok(!applied.admit('clickStats:v2:u1', at(0, 9)));
    assert.ok(applied.admit('clickStats:v2:u1', at(0, 11)));
    // Other source partitions, values and versions are never compared with it.
    assert.ok(applied.admit('clickStats:v2:u1', at(1, 3)));
    assert.ok(applied.admit('clickStats:v1:u1', at(0, 10)));
    assert.ok(applied.admit('clickStats:v2:u2', at(0, 10)));
    assert.ok(applied.admit('clickStats:v2:u1', { topic: 'push:graphql', partition: 0, offset: 5 }));
  });

  test('bounded: beyond its size the least recently changed are forgotten (and applied again)', () => {
    const applied = new AppliedChanges(2);
    applied.admit('a', at(0, 1));
    applied.admit('b', at(0, 1));
    applied.admit('c', at(0, 1));
    assert.ok(applied.admit('a', at(0, 1)), 'forgotten');
    assert.ok(!applied.admit('c', at(0, 1)));
  });

  test('the source position of a change event\'s headers, or null when it has none', () => {
    assert.deepEqual(sourceOfHeaders({ 'source-topic': 't', 'source-partition': '2', 'source-offset': '99' }), { topic: 't', partition: 2, offset: 99 });
    assert.equal(sourceOfHeaders({}), null);
    assert.equal(sourceOfHeaders({ 'source-topic': 't', 'source-partition': 'x', 'source-offset': '1' }), null);
    assert.equal(sourceOfHeaders({ 'source-topic': 't', 'source-partition': '1' }), null);
  });
});
