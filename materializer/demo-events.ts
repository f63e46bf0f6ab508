import { log } from '../runtime/log.js';
import type { EventSchema, Registry } from '../schema/types.js';
import { demoEntityCounts, mulberry32 } from '../store/demo-data.js';
import type { EventLog, OutgoingRecord } from '../eventlog/event-log.js';

/**
 * The demo's raw event stream for `npm start`: events for every topic of the
 * registry, at a steady rate, about the demo entities. A field that some view
 * uses as its entity key draws a demo id of that entity (userId → users
 * 1–1000, merchantId → merchants 1–100, …); other fields draw values by type.
 * It feeds the same materializer code as Kafka does, so dashboards see
 * subscriptions tick without any setup.
 */
export function startDemoEvents(eventLog: EventLog, registry: Registry, perSecond: number, options: { burst?: number; seed?: number } = {}): { stop(): void; started: Promise<void> } {
  const seed = options.seed ?? Date.now();
  const random = mulberry32(seed);
  const idSpace = new Map<string, number>(); // "topic/field" → how many demo ids
  for (const entity of registry.entities) {
    for (const view of entity.views) {
      const m = view.materialization;
      if (m) idSpace.set(`${m.source}/${m.entityKey}`, demoEntityCounts[entity.name] ?? 1000);
    }
  }
  const words = ['books', 'garden', 'toys', 'sports', 'fashion'];
  const event = (schema: EventSchema): OutgoingRecord => {
    const body: Record<string, unknown> = {};
    for (const f of schema.fields) {
      const ids = idSpace.get(`${schema.topic}/${f.name}`);
      switch (f.type) {
        case 'String': body[f.name] = ids ? String(1 + Math.floor(random() * ids)) : words[Math.floor(random() * words.length)]; break;
        case 'Int': body[f.name] = ids ? 1 + Math.floor(random() * ids) : Math.floor(random() * 100); break;
        case 'Float': body[f.name] = Math.round(random() * 20_000) / 100; break;
        case 'Boolean': body[f.name] = random() < 0.1; break;
        case 'Timestamp': body[f.name] = Date.now(); break;
      }
    }
    return { topic: schema.topic, key: String(body[schema.key]), value: JSON.stringify(body) };
  };
  // A first burst gives every demo entity a few events at once, so all streamed views have values at start-up.
  const started = eventLog.produce(Array.from({ length: options.burst ?? 0 }, () => event(registry.events[Math.floor(random() * registry.events.length)]!)));
  const tickMs = 100;
  let carry = 0;
  const timer = setInterval(() => {
    carry += (perSecond * tickMs) / 1000;
    const records: OutgoingRecord[] = [];
    for (; carry >= 1; carry--) records.push(event(registry.events[Math.floor(random() * registry.events.length)]!));
    if (records.length > 0) eventLog.produce(records).catch((error: Error) => log.warn({ err: error.message }, 'demo events: produce failed'));
  }, tickMs);
  timer.unref();
  return { stop: () => clearInterval(timer), started };
}
