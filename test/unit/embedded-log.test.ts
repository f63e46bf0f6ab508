import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import type { LogRecord } from '../../eventlog/event-log.js';
import { eventually } from '../support/wait.js';

describe('EmbeddedLog retention', () => {
  test('a partition keeps its newest records; offsets go on; memory stays bounded under a long stream', async () => {
    const log = new EmbeddedLog(1000);
    await log.createTopics([{ topic: 't', partitions: 1 }]);
    for (let i = 0; i < 25_000; i++) await log.produce([{ topic: 't', key: 'k', value: String(i) }]);
    const [records] = log.partitionsOf('t');
    assert.ok(records!.length >= 1000 && records!.length <= 1100, `kept ${records!.length}`);
    assert.equal(log.endOf(records!), 25_000);
    assert.equal(records!.at(-1)!.offset, 24_999);
    assert.equal(records![0]!.offset, log.baseOf(records!));
    assert.equal(records![0]!.value.toString(), String(log.baseOf(records!)));
    await log.close();
  });

  test('a group from the beginning starts at the oldest kept record and reads every later one once, in order', async () => {
    const log = new EmbeddedLog(100);
    await log.createTopics([{ topic: 't', partitions: 1 }]);
    for (let i = 0; i < 1000; i++) await log.produce([{ topic: 't', key: 'k', value: String(i) }]);
    const base = log.baseOf(log.partitionsOf('t')[0]!);
    assert.ok(base > 0);
    const seen: LogRecord[] = [];
    const consumer = log.consumer({
      groupId: 'g', topics: ['t'], instanceId: 'i', fromBeginning: true,
      handler: async (batch) => {
        seen.push(...batch.records);
        return { records: [], checkpoint: null };
      },
    });
    await consumer.start();
    try {
      await eventually(async () => assert.equal(seen.at(-1)?.offset, 999));
      assert.deepEqual(seen.map((r) => r.offset), Array.from({ length: 1000 - base }, (_, i) => base + i));
      // Records appended later are read too, across further trims.
      for (let i = 1000; i < 1300; i++) await log.produce([{ topic: 't', key: 'k', value: String(i) }]);
      await eventually(async () => assert.equal(seen.at(-1)?.offset, 1299));
      assert.equal(new Set(seen.map((r) => r.offset)).size, seen.length, 'no record twice');
    } finally {
      await consumer.stop();
      await log.close();
    }
  });
});
