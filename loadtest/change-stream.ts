import type { EventLog, OutgoingRecord } from '../eventlog/event-log.js';
import { mulberry32 } from '../store/demo-data.js';
import type { Zipf } from './zipf.js';

/**
 * The background change stream of the bench's W4: raw `click-events` at a
 * steady rate into Kafka, for users drawn from the same Zipf distribution as
 * W4's reads (so the hot keys are the ones that change), event time = now.
 * The materializer turns each into new clickStats values and change events
 * on `feature-updates`, which a hot tier must follow to stay coherent.
 *
 * Paced by elapsed time (every `tickMs` whatever is due is produced in one
 * batch, one batch in flight at a time, a late batch catching up), so the
 * achieved rate is what Kafka took; `stop()` reports it.
 */
export interface ChangeStreamFigures {
  readonly targetRate: number;
  readonly events: number;
  readonly seconds: number;
  readonly achievedRate: number;
  readonly failedBatches: number;
}

export interface ChangeStream {
  /** Events produced so far (acknowledged by the broker). */
  produced(): number;
  stop(): Promise<ChangeStreamFigures>;
}

export function startChangeStream(eventLog: EventLog, options: { perSecond: number; users: Zipf; items: number; seed: number; tickMs?: number }): ChangeStream {
  const random = mulberry32(options.seed);
  const user = options.users.sampler(random);
  const tickMs = options.tickMs ?? 50;
  const start = performance.now();
  let due = 0;
  let produced = 0;
  let failedBatches = 0;
  let inFlight: Promise<void> | undefined;
  let stopped = false;
  const event = (): OutgoingRecord => {
    const userId = String(user());
    const body = { userId, adId: String(1 + Math.floor(random() * options.items)), clicked: random() < 0.1, ts: Date.now(), price: 9.99, category: 'books' };
    return { topic: 'click-events', key: userId, value: JSON.stringify(body) };
  };
  const tick = (): void => {
    if (stopped || inFlight) return;
    const target = Math.floor(((performance.now() - start) * options.perSecond) / 1000);
    const records = Array.from({ length: Math.max(0, target - due) }, event);
    due = target;
    if (records.length === 0) return;
    inFlight = eventLog.produce(records).then(
      () => void (produced += records.length),
      () => void failedBatches++,
    ).finally(() => (inFlight = undefined));
  };
  const timer = setInterval(tick, tickMs);
  return {
    produced: () => produced,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await inFlight;
      const seconds = (performance.now() - start) / 1000;
      return { targetRate: options.perSecond, events: produced, seconds, achievedRate: produced / seconds, failedBatches };
    },
  };
}
