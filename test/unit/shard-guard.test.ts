import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Deadline } from '../../runtime/deadline.js';
import { metricsRegistry } from '../../runtime/metrics.js';
import { DeadlineExceededError, StoreUnavailableError } from '../../store/online-store.js';
import { ShardGuard } from '../../store/shard-guard.js';

/** The value of one sample of `metric` with these labels, 0 when absent. */
async function sample(metric: string, store: string, shard: string): Promise<number | undefined> {
  const text = await metricsRegistry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${metric}{`) && l.includes(`store="${store}"`) && l.includes(`shard="${shard}"`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const never = () => new Promise<never>(() => {});

describe('ShardGuard', () => {
  test('a call that fails becomes StoreUnavailableError naming the store and shard, with the engine\'s words', async () => {
    const guard = new ShardGuard({ store: 'guard-a', callTimeoutMs: 1000, describe: (shard, error) => `${shard} said ${(error as Error).message}` });
    await assert.rejects(guard.shard('n1').call(async () => {
      throw new Error('WRONGPASS');
    }), (e: unknown) => e instanceof StoreUnavailableError && e.store === 'guard-a' && e.shard === 'n1' && e.reason === 'n1 said WRONGPASS');
    assert.equal(await sample('feature_store_errors_total', 'guard-a', 'n1'), 1);
  });

  test('a call that hangs ends at the call timeout when the guard keeps time, and counts against the breaker', async () => {
    const guard = new ShardGuard({ store: 'guard-b', callTimeoutMs: 30, breaker: { errorPercent: 50, minCalls: 2, resetMs: 60_000 } });
    const shard = guard.shard('hung');
    const started = performance.now();
    await assert.rejects(shard.call(never), (e: unknown) => e instanceof StoreUnavailableError && /no answer within 30 ms/.test(e.reason));
    assert.ok(performance.now() - started < 1000);
    await assert.rejects(shard.call(never));
    assert.equal(shard.circuit, 'open');
    // Open: refused at once, without calling the engine.
    let called = false;
    await assert.rejects(shard.call(async () => {
      called = true;
    }), (e: unknown) => e instanceof StoreUnavailableError && /circuit open/.test(e.reason));
    assert.equal(called, false);
    assert.equal(await sample('feature_store_circuit_state', 'guard-b', 'hung'), 2);
    assert.equal(await sample('feature_store_short_circuited_total', 'guard-b', 'hung'), 1);
  });

  test('timeoutBy client: the guard sets no timer (the engine\'s client ends the call)', async () => {
    const guard = new ShardGuard({ store: 'guard-c', callTimeoutMs: 10, timeoutBy: 'client' });
    const late = guard.shard('c').call(() => new Promise((r) => setTimeout(() => r('late but answered'), 50)));
    assert.equal(await late, 'late but answered');
  });

  test('a passed deadline refuses the call before it starts; a near one stops the wait, not the call', async () => {
    const guard = new ShardGuard({ store: 'guard-d', callTimeoutMs: 5000, timeoutBy: 'client' });
    const shard = guard.shard('d');
    let started = 0;
    await assert.rejects(shard.call(async () => void started++, { deadline: Deadline.after(0) }), (e: unknown) => e instanceof DeadlineExceededError && e.shard === 'd' && e.budgetMs === 0);
    assert.equal(started, 0);
    let finished = false;
    const slow = () => new Promise<void>((r) => setTimeout(() => {
      finished = true;
      r();
    }, 80));
    await assert.rejects(shard.call(slow, { deadline: Deadline.after(20) }), DeadlineExceededError);
    assert.equal(finished, false, 'the caller stopped waiting before the call ended');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(finished, true, 'the call itself ran to its end');
    assert.equal(shard.circuit, 'closed', 'a request out of time is not the shard\'s failure');
    assert.equal(await sample('feature_store_deadline_exceeded_total', 'guard-d', 'd'), 2);
  });

  test('reads are timed per shard; health probes past the breaker and reports the circuit', async () => {
    const guard = new ShardGuard({ store: 'guard-e', callTimeoutMs: 50, breaker: { errorPercent: 50, minCalls: 1, resetMs: 60_000 } });
    const shard = guard.shard('e');
    assert.equal(await shard.call(async () => 42, { read: true }), 42);
    assert.match(await metricsRegistry.metrics(), /feature_store_read_duration_seconds_count\{store="guard-e",shard="e"\} 1/);
    assert.deepEqual(await shard.health(async () => 'PONG', 'reachable, master of 5461 slots'), { shard: 'e', reachable: true, detail: 'reachable, master of 5461 slots, circuit closed' });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(shard.call(async () => {
        throw new Error('ECONNREFUSED');
      }));
    }
    assert.deepEqual(await shard.health(never), { shard: 'e', reachable: false, detail: 'unavailable: no answer within 50 ms, circuit open' });
  });

  test('a retired shard takes its circuit gauge with it; asked for again, it starts closed', async () => {
    const guard = new ShardGuard({ store: 'guard-f', callTimeoutMs: 50, breaker: { errorPercent: 50, minCalls: 1, resetMs: 60_000 } });
    await assert.rejects(guard.shard('gone').call(async () => {
      throw new Error('dead');
    }));
    assert.equal(await sample('feature_store_circuit_state', 'guard-f', 'gone'), 2);
    assert.deepEqual(guard.names, ['gone']);
    guard.retire('gone');
    assert.equal(await sample('feature_store_circuit_state', 'guard-f', 'gone'), undefined);
    assert.deepEqual(guard.names, []);
    assert.equal(guard.shard('gone').circuit, 'closed');
  });
});
