import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { freePort } from '../support/ports.js';
import { RedisProcess, redisCommand } from '../support/redis-server.js';
import { startTogether } from '../support/start-together.js';

/**
 * The harness's own guarantees that other tests lean on: a port is handed out once, from outside
 * the range the kernel picks from, and servers started together leave none running when one fails.
 */
test('freePort never hands out a port twice, nor one from the kernel\'s ephemeral range', async () => {
  const [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const ports = await Promise.all(Array.from({ length: 200 }, () => freePort()));
  assert.equal(new Set(ports).size, ports.length, 'a port was handed out twice');
  for (const port of ports) assert.ok(port < low! || port > high!, `${port} is inside the ephemeral range ${low}-${high}`);
});

test('startTogether: when one start fails, the servers that did start are destroyed and the failure is thrown', async () => {
  let started: RedisProcess | undefined;
  const redis = RedisProcess.start().then((r) => (started = r));
  const failing = new Promise<undefined>((_, reject) => setTimeout(() => reject(new Error('broker could not bind')), 10));
  await assert.rejects(startTogether(redis, failing), /broker could not bind/);
  assert.ok(started, 'the Redis start was not awaited');
  assert.equal(started.running, false, 'the Redis that started is still running');
  await assert.rejects(redisCommand(started.port, 'PING'), 'the Redis port still answers');
});

test('startTogether: all started, they come back in order', async () => {
  const [a, b] = await startTogether(RedisProcess.start(), RedisProcess.start());
  try {
    assert.match(await a.command('PING'), /PONG/);
    assert.match(await b.command('PING'), /PONG/);
    assert.notEqual(a.port, b.port);
  } finally {
    await a.destroy();
    await b.destroy();
  }
});
