import { Kafka, logLevel } from 'kafkajs';
import { mulberry32 } from '../../store/demo-data.js';
import type { OutgoingRecord } from '../../eventlog/event-log.js';

/**
 * A synthetic raw-event stream with its ground truth, computed here
 * independently of the materializer: plain counting over the events that are
 * valid and on time. Every event time is unique (so `last` has one answer)
 * and events arrive out of order within well under the allowed lateness;
 * deliberately late events come last and far in the past.
 */
export interface GroundTruth {
  clickStats: Map<string, { clicks: number; impressions: number }>;
  itemStats: Map<string, { clicks: number; impressions: number; price: number; category: string; ts: number }>;
  riskStats: Map<string, { count: number; amount: number; chargebacks: number }>;
}

export interface Stream {
  readonly records: OutgoingRecord[];
  readonly truth: GroundTruth;
  readonly invalid: { 'click-events': number; transactions: number };
  /** Late click events (each late for clickStats v1, v2 and itemStats v1). */
  readonly late: number;
}

const categories = ['books', 'garden', 'toys', 'sports'];

export function makeStream(options: { clicks: number; transactions: number; users: number; items: number; merchants: number; seed: number; baseMs: number }): Stream {
  const random = mulberry32(options.seed);
  const pick = (prefix: string, n: number): string => `${prefix}${1 + Math.floor(random() * n)}`;
  const total = options.clicks + options.transactions;
  // Unique event times base..base+total-1, shuffled within blocks of 200 ms: out of order, never late.
  const times = Array.from({ length: total }, (_, i) => options.baseMs + i);
  for (let start = 0; start < total; start += 200) {
    for (let i = Math.min(start + 199, total - 1); i > start; i--) {
      const j = start + Math.floor(random() * (i - start + 1));
      [times[i], times[j]] = [times[j]!, times[i]!];
    }
  }
  const truth: GroundTruth = { clickStats: new Map(), itemStats: new Map(), riskStats: new Map() };
  const records: OutgoingRecord[] = [];
  let clicksLeft = options.clicks;
  let txnsLeft = options.transactions;
  for (let i = 0; i < total; i++) {
    const ts = times[i]!;
    const click = txnsLeft === 0 || (clicksLeft > 0 && random() < options.clicks / total);
    if (click) {
      clicksLeft--;
      const userId = pick('u', options.users);
      const adId = pick('i', options.items);
      const clicked = random() < 0.1;
      const price = Math.round(random() * 10_000) / 100;
      const category = categories[Math.floor(random() * categories.length)]!;
      records.push({ topic: 'click-events', key: userId, value: JSON.stringify({ userId, adId, clicked, ts, price, category }) });
      const u = truth.clickStats.get(userId) ?? { clicks: 0, impressions: 0 };
      u.impressions++;
      if (clicked) u.clicks++;
      truth.clickStats.set(userId, u);
      const it = truth.itemStats.get(adId) ?? { clicks: 0, impressions: 0, price, category, ts };
      it.impressions++;
      if (clicked) it.clicks++;
      if (ts >= it.ts) Object.assign(it, { price, category, ts });
      truth.itemStats.set(adId, it);
    } else {
      txnsLeft--;
      const merchantId = pick('m', options.merchants);
      const amount = Math.round(random() * 50_000) / 100;
      const chargeback = random() < 0.05;
      records.push({ topic: 'transactions', key: merchantId, value: JSON.stringify({ userId: pick('u', options.users), merchantId, amount, chargeback, ts: new Date(ts).toISOString() }) });
      const m = truth.riskStats.get(merchantId) ?? { count: 0, amount: 0, chargebacks: 0 };
      m.count++;
      m.amount += amount;
      if (chargeback) m.chargebacks++;
      truth.riskStats.set(merchantId, m);
    }
  }
  // Invalid events, spread through the stream: each must reach the DLQ and change nothing.
  const invalidBodies = (topic: string): string[] => topic === 'click-events'
    ? ['{not json', '[]', JSON.stringify({ userId: 'u1', adId: 'i1', clicked: 'yes', ts: options.baseMs }), JSON.stringify({ adId: 'i1', clicked: true, ts: options.baseMs }),
      JSON.stringify({ userId: 'u1', adId: 'i1', clicked: true, ts: 'yesterday' }), JSON.stringify({ userId: '', adId: 'i1', clicked: true, ts: options.baseMs })]
    : ['null', JSON.stringify({ userId: 'u1', merchantId: 'm1', amount: 'NaN', chargeback: false, ts: options.baseMs }),
      JSON.stringify({ userId: 'u1', merchantId: 'm1', amount: 1, ts: options.baseMs }), JSON.stringify({ userId: 'u1', merchantId: 'm1', amount: 1, chargeback: false, ts: -5 })];
  const invalid = { 'click-events': 60, transactions: 40 };
  for (const [topic, n] of Object.entries(invalid)) {
    const bodies = invalidBodies(topic);
    for (let k = 0; k < n; k++) {
      const at = Math.floor(random() * records.length);
      records.splice(at, 0, { topic, key: topic === 'click-events' ? pick('u', options.users) : pick('m', options.merchants), value: bodies[k % bodies.length]! });
    }
  }
  // Late events: for users and items that already have events, 20 minutes before the stream.
  const users = [...truth.clickStats.keys()];
  const items = [...truth.itemStats.keys()];
  const late = 50;
  for (let k = 0; k < late; k++) {
    const userId = users[k % users.length]!;
    records.push({ topic: 'click-events', key: userId, value: JSON.stringify({ userId, adId: items[k % items.length], clicked: true, ts: options.baseMs - 20 * 60_000, price: 1, category: 'late' }) });
  }
  return { records, truth, invalid, late };
}

/** Reads every committed record of a topic from the beginning (a test's view of the DLQ or change topic). */
export async function readTopic(brokers: readonly string[], topic: string, expectAtLeast: number, timeoutMs = 30_000) {
  const kafka = new Kafka({ clientId: 'test-reader', brokers: [...brokers], logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `test-reader-${topic}-${Date.now()}-${Math.random()}`, readUncommitted: false });
  const out: { key: string | null; value: string; headers: Record<string, string>; partition: number; offset: number }[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const admin = kafka.admin();
  await admin.connect();
  const highs = await admin.fetchTopicOffsets(topic);
  const end = highs.reduce((s, p) => s + Number(p.high), 0);
  await admin.disconnect();
  // Read to the end offsets of when the read began, not "some records and a moment more": on a busy
  // machine a moment was not always enough, and a partial read made a test compare stale "last"
  // records. END_BATCH_PROCESS also covers a batch of control records only (a transaction's commit
  // marker takes the last offset of a partition), so the positions reach the ends.
  const reached = new Map<number, number>();
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    reached.set(payload.partition, Math.max(reached.get(payload.partition) ?? 0, Number(payload.lastOffset) + 1));
  });
  const atEnd = (): boolean => highs.every((p) => Number(p.high) === Number(p.low ?? 0) || (reached.get(p.partition) ?? 0) >= Number(p.high));
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
      out.push({ key: message.key?.toString() ?? null, value: message.value?.toString() ?? '', headers, partition, offset: Number(message.offset) });
    },
  });
  const deadline = Date.now() + timeoutMs;
  // Polls the two conditions (data records seen, every partition's end reached) until the deadline.
  while ((out.length < Math.min(expectAtLeast, end) || !atEnd()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  await consumer.disconnect();
  return out;
}

/** Resolves when the consumer group has committed every partition of `topics` up to its end. */
export async function waitForGroup(brokers: readonly string[], groupId: string, topics: readonly string[], timeoutMs: number, onProgress?: (committed: number, end: number) => void): Promise<void> {
  const kafka = new Kafka({ clientId: 'test-lag', brokers: [...brokers], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let end = 0;
      let committed = 0;
      for (const topic of topics) {
        const high = await admin.fetchTopicOffsets(topic);
        end += high.reduce((s, p) => s + Number(p.high), 0);
        const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] }).catch(() => [{ partitions: [] as { offset: string }[] }]);
        committed += (offsets?.partitions ?? []).reduce((s, p) => s + Math.max(0, Number(p.offset)), 0);
      }
      onProgress?.(committed, end);
      if (end > 0 && committed >= end) return;
      if (Date.now() > deadline) throw new Error(`group ${groupId} committed ${committed} of ${end} records within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await admin.disconnect();
  }
}

/** Sum of the group's committed offsets and of the topics' end offsets. */
export async function groupProgress(brokers: readonly string[], groupId: string, topics: readonly string[]): Promise<{ committed: number; end: number }> {
  const kafka = new Kafka({ clientId: 'test-progress', brokers: [...brokers], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    let end = 0;
    let committed = 0;
    for (const topic of topics) {
      end += (await admin.fetchTopicOffsets(topic)).reduce((s, p) => s + Number(p.high), 0);
      const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] }).catch(() => [{ partitions: [] as { offset: string }[] }]);
      committed += (offsets?.partitions ?? []).reduce((s, p) => s + Math.max(0, Number(p.offset)), 0);
    }
    return { committed, end };
  } finally {
    await admin.disconnect();
  }
}
