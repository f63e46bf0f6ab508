import { Counter, Histogram } from 'prom-client';
import { metricsRegistry } from '../runtime/metrics.js';
import type { EventSchema, Registry, ViewVersion } from '../schema/types.js';
import { expiryOf } from '../store/freshness.js';
import type { MaterializedStore, MaterializedWrite } from '../store/online-store.js';
import { encodeChange, type FeatureChange } from '../eventlog/change-event.js';
import type { BatchResult, LogRecord, OutgoingRecord, RecordBatch } from '../eventlog/event-log.js';
import { InvalidEventError, validateEvent, type ValidEvent } from './events.js';
import { emptyState, entityIdOf, ViewAggregator, type WindowState } from './windows.js';

/**
 * Turns one batch of raw events (one partition) into stored feature values
 * and the records to commit with the batch: change events and dead letters.
 *
 * Exactly once (ARCHITECTURE.md, decision 6) comes from three things:
 * - the window state stored with each value records, per source partition,
 *   the last offset applied, so a redelivered event is skipped;
 * - each value+state is replaced by compare-and-set on the state's version,
 *   so two materializers touching one entity (itemStats gets events of one
 *   item from every partition) never lose an update: the loser re-reads and
 *   re-applies;
 * - the returned records are committed in one transaction with the batch's
 *   offsets. If that commit never happens the batch comes again; its events
 *   are then found applied, and the change events and dead letters they
 *   caused (remembered in the state) are produced again — the first attempt's
 *   were never committed, so each is committed exactly once.
 */
export const eventsTotal = new Counter({
  name: 'materializer_events_total',
  help: 'Raw events by outcome: applied, late, duplicate (already applied; a redelivery) per view; invalid per event.',
  labelNames: ['topic', 'view', 'outcome'] as const,
  registers: [metricsRegistry],
});

export const freshnessSeconds = new Histogram({
  name: 'materializer_freshness_seconds',
  help: 'From the newest event time of a value to the moment it is stored.',
  labelNames: ['view'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [metricsRegistry],
});

const maxCasAttempts = 20;
const dayMs = 86_400_000;

export interface MaterializerOptions {
  /** Only these view versions (a backfill rebuilds one); when absent, every materialized version up to the active one. */
  readonly only?: (view: ViewVersion) => boolean;
  readonly now?: () => number;
}

export class Materializer {
  private readonly schemas = new Map<string, EventSchema>();
  private readonly aggregators = new Map<string, ViewAggregator[]>();
  private readonly now: () => number;

  constructor(registry: Registry, private readonly store: MaterializedStore, options: MaterializerOptions = {}) {
    this.now = options.now ?? Date.now;
    for (const schema of registry.events) this.schemas.set(schema.topic, schema);
    for (const entity of registry.entities) {
      for (const view of entity.views) {
        for (const version of view.versions) {
          if (!version.materialization) continue;
          // By default the live versions only: those up to the active one. A newer version is built by a backfill
          // (materializer/backfill.ts) until the registry makes it active.
          if (options.only ? !options.only(version) : version.version > view.activeVersion) continue;
          const list = this.aggregators.get(version.materialization.source) ?? [];
          list.push(new ViewAggregator(version));
          this.aggregators.set(version.materialization.source, list);
        }
      }
    }
  }

  /** The raw topics this materializer consumes. */
  get topics(): string[] {
    return [...this.aggregators.keys()];
  }

  /**
   * The batch handler. The checkpoint is the partition's stream time (the
   * newest event time seen in it), committed with the offsets; each event is
   * judged late or not against the stream time before it.
   */
  readonly handle = async (batch: RecordBatch, checkpoint: string | null): Promise<BatchResult> => {
    const outputs: OutgoingRecord[] = [];
    const schema = this.schemas.get(batch.topic);
    const valid: Valid[] = [];
    let streamTime = checkpoint === null ? null : Number(checkpoint);
    for (const record of batch.records) {
      try {
        if (!schema) throw new InvalidEventError(`topic ${batch.topic} has no event schema in the registry`);
        const event = validateEvent(schema, record.value);
        valid.push({ record, event, streamTime });
        if (streamTime === null || event.ts > streamTime) streamTime = event.ts;
      } catch (error) {
        if (!(error instanceof InvalidEventError)) throw error;
        eventsTotal.inc({ topic: batch.topic, view: '', outcome: 'invalid' });
        outputs.push(deadLetter(record, `invalid: ${error.message}`));
      }
    }
    for (const aggregator of this.aggregators.get(batch.topic) ?? []) {
      outputs.push(...(await this.materialize(aggregator, batch, valid)));
    }
    return { records: outputs, checkpoint: streamTime === null ? null : String(streamTime) };
  };

  private async materialize(aggregator: ViewAggregator, batch: RecordBatch, valid: readonly Valid[]): Promise<OutgoingRecord[]> {
    const view = aggregator.view;
    const byEntity = new Map<string, Valid[]>();
    for (const item of valid) {
      const id = entityIdOf(aggregator.spec, item.event);
      if (id === null) continue;
      let list = byEntity.get(id);
      if (!list) byEntity.set(id, (list = []));
      list.push(item);
    }
    const outputs = new Map<string, OutgoingRecord[]>();
    const counts = new Map<string, () => void>();
    let pending = [...byEntity.keys()];
    for (let attempt = 1; pending.length > 0; attempt++) {
      if (attempt > maxCasAttempts) throw new Error(`${view.viewName} v${view.version}: state kept changing under ${pending.length} entities; giving up on this batch`);
      const states = await this.store.readStates(view, pending);
      const writes: MaterializedWrite[] = [];
      const writeIds: string[] = [];
      pending.forEach((id, i) => {
        const stored = states[i];
        const state: WindowState = stored ? (JSON.parse(stored.state) as WindowState) : emptyState();
        const result = this.applyAll(aggregator, state, id, byEntity.get(id)!, batch);
        outputs.set(id, result.outputs);
        counts.set(id, result.count);
        if (result.changed) {
          const value = aggregator.value(state);
          const last = result.lastApplied;
          writes.push({
            entityId: id,
            expectedVersion: stored?.version ?? 0,
            state: JSON.stringify(state),
            stateExpireAtMs: Math.max(value ? expiryOf(view, value.eventTimeMs) : 0, (state.maxTs ?? this.now()) + aggregator.spec.windowMs + aggregator.spec.allowedLatenessMs) + dayMs,
            value: value && last ? { ...value, position: { partition: last.partition, offset: last.offset } } : null,
          });
          writeIds.push(id);
        }
      });
      const written = writes.length > 0 ? await this.store.writeMaterialized(view, writes) : [];
      const now = this.now();
      const conflicts = new Set(writeIds.filter((_, i) => !written[i]));
      for (const id of pending) if (!conflicts.has(id)) counts.get(id)!();
      writeIds.forEach((id, i) => {
        if (written[i] && writes[i]!.value) freshnessSeconds.observe({ view: view.viewName }, Math.max(0, now - writes[i]!.value!.eventTimeMs) / 1000);
      });
      pending = pending.filter((id) => conflicts.has(id));
    }
    return [...outputs.values()].flat();
  }

  /** Applies one entity's events of the batch to its state; says what to produce and whether the state changed. */
  private applyAll(aggregator: ViewAggregator, state: WindowState, id: string, items: readonly Valid[], batch: RecordBatch) {
    const view = aggregator.view;
    const labels = { topic: batch.topic, view: `${view.viewName}:v${view.version}` };
    const before = aggregator.value(state);
    const outputs: OutgoingRecord[] = [];
    let changed = false;
    let lastApplied: LogRecord | null = null;
    const replayed = new Set<string>();
    const outcomes = { applied: 0, late: 0, duplicate: 0 };
    for (const { record, event, streamTime } of items) {
      const tag = `${record.topic}/${record.partition}/${record.offset}`;
      const outcome = aggregator.apply(state, event, record, streamTime);
      outcomes[outcome]++;
      if (outcome === 'applied') {
        changed = true;
        lastApplied = record;
      } else if (outcome === 'late') {
        changed = true;
        outputs.push(deadLetter(record, lateReason(aggregator, streamTime!, event)));
      } else {
        replayed.add(tag);
        // Redelivered after a crash before commit: what it caused then was never committed; produce it again.
        if (state.recentLate.includes(tag)) outputs.push(deadLetter(record, `late (redelivered): event time ${new Date(event.ts).toISOString()} was older than allowed`));
      }
    }
    const after = aggregator.value(state);
    // A change of the stored value: its features or only its event time (which decides its freshness). The hot
    // tier (store/hot-tier.ts) learns of every change of a value from these events, so none may go unannounced.
    if (lastApplied && after && (after.eventTimeMs !== before?.eventTimeMs || JSON.stringify(after.values) !== JSON.stringify(before?.values))) {
      state.lastChange = `${lastApplied.topic}/${lastApplied.partition}/${lastApplied.offset}`;
      outputs.push(encodeChange(this.change(view, id, after, lastApplied)));
    } else if (after && state.lastChange !== null && replayed.has(state.lastChange)) {
      // The change this batch caused the first time was never committed: produce it again. Also when the
      // redelivered batch has grown and its new events left the value as it was (lastApplied set, no change).
      const [topic, partition, offset] = state.lastChange.split('/');
      outputs.push(encodeChange(this.change(view, id, after, { topic: topic!, partition: Number(partition), offset: Number(offset) })));
    }
    // Counted by the caller once the state is written: a compare-and-set retry applies the same events again.
    const count = (): void => {
      for (const [outcome, n] of Object.entries(outcomes)) if (n > 0) eventsTotal.inc({ ...labels, outcome }, n);
    };
    return { outputs, changed, lastApplied, count };
  }

  private change(view: ViewVersion, id: string, value: { values: FeatureChange['values']; eventTimeMs: number }, source: { topic: string; partition: number; offset: number }): FeatureChange {
    return {
      entity: view.entityName, id, view: view.viewName, version: view.version, values: value.values,
      eventTime: new Date(value.eventTimeMs).toISOString(), source: { topic: source.topic, partition: source.partition, offset: source.offset },
    };
  }
}

/** A valid event with its partition's stream time just before it. */
interface Valid {
  readonly record: LogRecord;
  readonly event: ValidEvent;
  readonly streamTime: number | null;
}

function lateReason(aggregator: ViewAggregator, streamTime: number, event: ValidEvent): string {
  return `late for ${aggregator.view.viewName} v${aggregator.view.version}: event time ${new Date(event.ts).toISOString()} is more than ` +
    `${aggregator.spec.allowedLatenessMs} ms older than the partition's stream time (${new Date(streamTime).toISOString()})`;
}

/** The original bytes, with the reason and where they came from in headers. */
export function deadLetter(record: LogRecord, reason: string): OutgoingRecord {
  return {
    topic: `${record.topic}.dlq`,
    key: record.key,
    value: record.value,
    headers: {
      ...record.headers,
      'dlq-reason': reason,
      'dlq-source-topic': record.topic,
      'dlq-source-partition': String(record.partition),
      'dlq-source-offset': String(record.offset),
    },
  };
}
