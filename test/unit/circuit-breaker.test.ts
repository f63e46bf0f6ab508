import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker, CircuitOpenError, type CircuitState } from '../../store/circuit-breaker.js';

function breaker(overrides: { errorPercent?: number; minCalls?: number; resetMs?: number } = {}) {
  let now = 1_000_000;
  const states: CircuitState[] = [];
  const b = new CircuitBreaker({
    errorPercent: 50, minCalls: 4, resetMs: 1000, windowMs: 10_000, buckets: 10,
    now: () => now, onStateChange: (s) => states.push(s), ...overrides,
  });
  const ok = () => b.fire(async () => 'ok');
  const fail = () => b.fire(async () => { throw new Error('boom'); }).catch((e: Error) => e);
  return { b, states, ok, fail, advance: (ms: number) => void (now += ms) };
}

describe('CircuitBreaker', () => {
  test('stays closed below minCalls, and at exactly errorPercent', async () => {
    const { b, ok, fail, states } = breaker();
    await fail();
    await fail();
    await fail();
    assert.equal(b.state, 'closed', '3 failures, below minCalls 4');
    await ok();
    await ok();
    await ok();
    assert.equal(b.state, 'closed', '3 of 6 failed: 50%, not more than 50%');
    assert.deepEqual(states, []);
  });

  test('opens when more than errorPercent of at least minCalls failed, then refuses calls without running them', async () => {
    const { b, ok, fail, states } = breaker();
    await ok();
    await fail();
    await fail();
    assert.equal(b.state, 'closed');
    await fail(); // 3 of 4 failed: 75% > 50%
    assert.equal(b.state, 'open');
    assert.deepEqual(states, ['open']);
    let ran = false;
    await assert.rejects(b.fire(async () => { ran = true; }), CircuitOpenError);
    assert.equal(ran, false);
    await assert.rejects(ok(), CircuitOpenError);
  });

  test('after resetMs one probe goes through; its success closes the circuit and clears the window', async () => {
    const { b, ok, fail, states, advance } = breaker();
    for (let i = 0; i < 4; i++) await fail();
    assert.equal(b.state, 'open');
    advance(999);
    await assert.rejects(ok(), CircuitOpenError);
    advance(1);
    let release!: () => void;
    const probe = b.fire(() => new Promise<string>((resolve) => (release = () => resolve('probed'))));
    assert.equal(b.state, 'half-open');
    await assert.rejects(ok(), CircuitOpenError, 'only one probe at a time');
    release();
    assert.equal(await probe, 'probed');
    assert.equal(b.state, 'closed');
    assert.deepEqual(states, ['open', 'half-open', 'closed']);
    await fail();
    await fail();
    assert.equal(b.state, 'closed', 'the window was cleared: 2 failures are below minCalls');
  });

  test('a failed probe opens the circuit again for another resetMs', async () => {
    const { b, ok, fail, advance, states } = breaker();
    for (let i = 0; i < 4; i++) await fail();
    advance(1000);
    await fail();
    assert.equal(b.state, 'open');
    advance(500);
    await assert.rejects(ok(), CircuitOpenError);
    advance(500);
    assert.equal(await ok(), 'ok');
    assert.deepEqual(states, ['open', 'half-open', 'open', 'half-open', 'closed']);
  });

  test('failures older than the window no longer count', async () => {
    const { b, ok, fail, advance } = breaker();
    await fail();
    await fail();
    await fail();
    advance(10_000);
    await ok();
    await fail();
    assert.equal(b.state, 'closed', 'only 1 failure of 2 calls is in the window');
  });

  test('a call that throws synchronously is counted as a failure and rethrown', async () => {
    const { b } = breaker({ minCalls: 1 });
    await assert.rejects(b.fire(() => { throw new Error('sync'); }), /sync/);
    assert.equal(b.state, 'open');
  });
});
