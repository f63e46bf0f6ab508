import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { createStore } from '../../store/create-store.js';
import type { CodecStore } from '../../store/codec-store.js';
import { consumerSessionTimeoutMs as sessionTimeoutMs, KafkaLog } from '../../eventlog/kafka-log.js';
import { mulberry32 } from '../../store/demo-data.js';
import { NodeProcess } from '../support/gateway.js';
import { KafkaBroker } from '../support/kafka-broker.js';
import { startTogether } from '../support/start-together.js';
import { RedisProcess } from '../support/redis-server.js';
import { groupProgress, makeStream, waitForGroup, type Stream } from '../support/event-stream.js';
import { materializerGroup as group, rawTopics, registry, streamSize, verifyAgainstTruth } from '../support/ground-truth.js';

/**
 * Exactly once through the faults an operator causes without meaning to:
 * a rolling restart (each of two materializers in one group stopped with
 * SIGTERM and started again, three times each) and a paused process
 * (SIGSTOP for longer than the consumer session timeout, then SIGCONT: it
 * wakes up as a zombie holding batches of partitions the group has handed
 * to the other process). Both on a real broker and Redis, mid-stream, with
 * the stream's independently computed ground truth: the stored values equal
 * it, every dead letter and change event is committed once per source
 * offset (read_committed), and no process exits except the ones stopped.
 *
 * Before the fix the first crashed the untouched process ("Producer
 * attempted an operation with an old epoch") and the second committed dead
 * letters and change events twice (issue 16).
 */
const chunks = 20;
const random = mulberry32(16);

interface Member {
  readonly name: string;
  proc: NodeProcess;
  /** Processes of this member stopped by the test with SIGTERM (they must have exited 0). */
  readonly stopped: NodeProcess[];
}

/** Resolves once the group is stable with one member per process (a rebalance has finished); fails when one exits meanwhile. */
async function groupStable(brokers: readonly string[], members: readonly Member[], timeoutMs = 90_000): Promise<void> {
  const admin = new Kafka({ clientId: 'test-group', brokers: [...brokers], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { groups } = await admin.describeGroups([group]);
      const g = groups[0];
      if (g?.state === 'Stable' && g.members.length === members.length) return;
      assertNoUnexpectedExit(members, 'while the group rebalanced');
      if (Date.now() > deadline) throw new Error(`group ${group} not stable with ${members.length} members within ${timeoutMs} ms (${g?.state}, ${g?.members.length} members)\n${outputs(members)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await admin.disconnect();
  }
}

/** Waits until the group commits more than it had: the processes are mid-stream, committing batches. */
async function committing(brokers: readonly string[], members: readonly Member[]): Promise<void> {
  const before = (await groupProgress(brokers, group, rawTopics)).committed;
  const deadline = Date.now() + 120_000;
  while ((await groupProgress(brokers, group, rawTopics)).committed <= before) {
    if (Date.now() > deadline) throw new Error(`the materializers made no progress\n${outputs(members)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function outputs(members: readonly Member[]): string {
  return members.map((m) => `--- ${m.name} (last 3000 chars):\n${m.proc.output.slice(-3000)}`).join('\n');
}

/** No process exited but those the test stopped, and those exited 0 (a graceful stop). */
function assertNoUnexpectedExit(members: readonly Member[], when: string): void {
  for (const m of members) {
    const { exitCode, signalCode } = m.proc.child;
    if (exitCode !== null || signalCode !== null) assert.fail(`${m.name} exited (${exitCode ?? signalCode}) ${when}, unasked\n${outputs(members)}`);
    for (const old of m.stopped) assert.equal(old.child.exitCode, 0, `${m.name} stopped with SIGTERM exited ${old.child.exitCode ?? old.child.signalCode}:\n${old.output.slice(-3000)}`);
  }
}

function assertNoCrashLines(members: readonly Member[]): void {
  for (const m of members) {
    for (const proc of [...m.stopped, m.proc]) {
      const crashes = proc.output.split('\n').filter((l) => l.includes('"kafka consumer crashed"') || l.includes('could not be restarted'));
      assert.deepEqual(crashes, [], `${m.name} logged a consumer crash`);
    }
  }
}

interface FaultContext {
  readonly brokers: readonly string[];
  readonly members: Member[];
  /** 0, 1, 2, …: which fault of the run this is. */
  readonly round: number;
  /** Produces the next chunk of the stream (while a process is paused, the other one has work to take over). */
  readonly produceNext: () => Promise<void>;
  readonly spawn: () => NodeProcess;
}

function scenario(name: string, seed: number, fault: (ctx: FaultContext) => Promise<void>, faultsAt: readonly number[]) {
  describe(name, () => {
    let broker: KafkaBroker;
    let redis: RedisProcess;
    let store: CodecStore;
    let stream: Stream;
    const members: Member[] = [];

    before(async () => {
      [broker, redis] = await startTogether(KafkaBroker.start(), RedisProcess.start());
      store = createStore({ kind: 'redis', urls: [redis.url], commandTimeoutMs: 2000 });
      stream = makeStream({ ...streamSize, seed, baseMs: Date.now() - 100_000 });
    });

    after(async () => {
      for (const m of members) {
        if (m.proc.child.signalCode === null && m.proc.child.exitCode === null) m.proc.child.kill('SIGCONT');
        await m.proc.stop();
      }
      await store?.close();
      await broker?.destroy();
      await redis?.destroy();
    });

    test('values equal the ground truth; every dead letter and change event once; no process exits unasked', { timeout: 900_000 }, async (t) => {
      const env = { KAFKA_BROKERS: broker.brokers.join(','), REDIS_URL: redis.url, LOG_LEVEL: 'info' };
      const spawn = () => NodeProcess.spawn('materializer/main.js', [], env);
      const producer = new KafkaLog({ brokers: broker.brokers, clientId: 'test-producer' });
      await producer.createTopics(registry.events.map((e) => ({ topic: e.topic, partitions: e.partitions })));
      members.push({ name: 'A', proc: spawn(), stopped: [] }, { name: 'B', proc: spawn(), stopped: [] });
      await groupStable(broker.brokers, members);
      const chunkSize = Math.ceil(stream.records.length / chunks);
      let next = 0;
      const produceNext = async (): Promise<void> => {
        if (next < chunks) await producer.produce(stream.records.slice(next * chunkSize, ++next * chunkSize));
      };
      let round = 0;
      while (next < chunks) {
        const c = next;
        await produceNext();
        if (faultsAt.includes(c)) {
          await committing(broker.brokers, members);
          await fault({ brokers: broker.brokers, members, round: round++, produceNext, spawn });
          assertNoUnexpectedExit(members, `after fault ${round}`);
        }
      }
      await producer.close();
      assert.equal(round, faultsAt.length);
      await waitForGroup(broker.brokers, group, rawTopics, 300_000).catch((error: Error) => assert.fail(`${error.message}\n${outputs(members)}`));
      assertNoUnexpectedExit(members, 'at the end');
      assertNoCrashLines(members);
      await verifyAgainstTruth(stream, store, broker.brokers);
      // What the faults made the processes do (a diagnostic: how often a zombie held a batch varies by run).
      const lines = members.flatMap((m) => [...m.stopped, m.proc]).flatMap((p) => p.output.split('\n'));
      const count = (msg: string) => lines.filter((l) => l.includes(`"msg":"${msg}`)).length;
      const tookMs = lines.filter((l) => l.includes('"msg":"partitions taken over')).map((l) => (JSON.parse(l) as { tookMs: number }).tookMs).sort((a, b) => a - b);
      t.diagnostic(`fenced ${count('producer fenced')}, left the group mid-batch ${count('no longer a member')}, ` +
        `skipped records committed by an earlier owner ${count('records committed by an earlier owner skipped')}; ` +
        `${tookMs.length} take-overs, tookMs median ${tookMs[Math.floor(tookMs.length / 2)]} max ${tookMs.at(-1)}`);
    });
  });
}

scenario('rolling restart of two materializers, each three times: exactly once, no crash', 16, async ({ brokers, members, round, spawn }) => {
  // A three times, then B three times: the same process stopped twice in a row is what crashed the other one.
  const member = members[round < 3 ? 0 : 1]!;
  await member.proc.stop(); // SIGTERM, then waits for the exit
  member.stopped.push(member.proc);
  member.proc = spawn();
  await groupStable(brokers, members);
}, [2, 4, 6, 8, 10, 12]);

scenario('a materializer paused past its session timeout, three times: exactly once, no crash', 17, async ({ brokers, members, round, produceNext }) => {
  const member = members[round % 2]!;
  // Somewhere in the middle of a batch: between fetch, store writes and the transaction's commit.
  await new Promise((r) => setTimeout(r, Math.floor(random() * 300)));
  member.proc.child.kill('SIGSTOP');
  const pausedAt = Date.now();
  // The other process takes the partitions over, with work to do: the stream goes on meanwhile.
  await produceNext();
  await new Promise((r) => setTimeout(r, Math.max(0, sessionTimeoutMs + 3000 - (Date.now() - pausedAt))));
  member.proc.child.kill('SIGCONT');
  await groupStable(brokers, members);
}, [3, 8, 13]);
