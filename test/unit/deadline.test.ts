import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Deadline, deadlineKey, deadlineOf } from '../../runtime/deadline.js';

describe('Deadline', () => {
  test('counts down from its budget and expires', async () => {
    const deadline = Deadline.after(50);
    assert.equal(deadline.budgetMs, 50);
    assert.ok(deadline.remainingMs > 0 && deadline.remainingMs <= 50);
    assert.equal(deadline.expired, false);
    await new Promise((r) => setTimeout(r, 70));
    assert.equal(deadline.expired, true);
    assert.ok(deadline.remainingMs < 0);
  });

  test('race: the promise when it settles first, its rejection included', async () => {
    const deadline = Deadline.after(5000);
    assert.equal(await deadline.race(Promise.resolve(7), () => new Error('late')), 7);
    await assert.rejects(deadline.race(Promise.reject(new Error('own')), () => new Error('late')), /own/);
  });

  test('race: the expiry error when the deadline passes first, and at once when already past', async () => {
    const never = new Promise<number>(() => undefined);
    const started = performance.now();
    await assert.rejects(Deadline.after(30).race(never, () => new Error('late')), /late/);
    assert.ok(performance.now() - started >= 25);
    const past = Deadline.after(0);
    await new Promise((r) => setTimeout(r, 2));
    await assert.rejects(past.race(never, () => new Error('already')), /already/);
  });

  test('deadlineOf finds the deadline in a request context, and nothing elsewhere', () => {
    const deadline = Deadline.after(100);
    assert.equal(deadlineOf({ [deadlineKey]: deadline }), deadline);
    assert.equal(deadlineOf({}), undefined);
    assert.equal(deadlineOf(null), undefined);
    assert.equal(deadlineOf({ [deadlineKey]: 123 }), undefined);
  });
});
