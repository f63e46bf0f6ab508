import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type CounterConfiguration, type HistogramConfiguration, type LabelValues } from 'prom-client';

/**
 * The process's Prometheus registry and every metric the project exports.
 * One module so names, units and label sets are defined once
 * (see ARCHITECTURE.md, "Names").
 */
export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry });

/**
 * Recording on the serving path, several times per request, without prom-client's per-call
 * work: prom-client turns every `observe(labels, v)` / `inc(labels)` into a label check, a label
 * hash string, a lookup of that string and (histograms) a bucket lookup by a float-valued key —
 * together a few µs of CPU per request (CPU profile, decision 0027). A label set is *bound*
 * once (`bind`), to plain numbers that the hot path adds to; prom-client gets the totals when
 * the metric is read (its `collect` hook: /metrics, `get()`), so what a scrape shows is the same.
 */
export interface BoundHistogram {
  observe(value: number): void;
}
export interface BoundCounter {
  inc(by?: number): void;
}

class PendingObservations implements BoundHistogram {
  sum = 0;
  count = 0;
  readonly buckets: Float64Array;
  constructor(readonly labels: LabelValues<string>, private readonly upperBounds: readonly number[]) {
    this.buckets = new Float64Array(upperBounds.length);
  }
  observe(value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    const bounds = this.upperBounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        this.buckets[i]!++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }
  clear(): void {
    this.sum = 0;
    this.count = 0;
    this.buckets.fill(0);
  }
}

/** prom-client's per-label-set state of a histogram (15.x): what `flush` adds the bound totals to. */
interface HistogramEntry {
  readonly labels: LabelValues<string>;
  readonly bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

/** A Histogram whose label sets can be bound for the hot path (see `BoundHistogram`). */
export class BindableHistogram<T extends string> extends Histogram<T> {
  private readonly pending: PendingObservations[] = [];
  private readonly bounds: readonly number[];

  constructor(configuration: HistogramConfiguration<T> & { readonly buckets: number[] }) {
    super({
      ...configuration,
      collect(this: Histogram<T>) {
        (this as BindableHistogram<T>).flush();
      },
    });
    this.bounds = [...configuration.buckets].sort((a, b) => a - b);
  }

  bind(labels: LabelValues<T>): BoundHistogram {
    const bound = new PendingObservations(labels, this.bounds);
    this.pending.push(bound);
    return bound;
  }

  /** Adds what the bound label sets observed since the last read to prom-client's state. */
  private flush(): void {
    const labelNames = (this as unknown as { labelNames: readonly string[] }).labelNames;
    for (const bound of this.pending) {
      if (bound.count === 0) continue;
      const same = (entry: HistogramEntry): boolean => labelNames.every((name) => String(entry.labels[name]) === String(bound.labels[name]));
      const entries = (): HistogramEntry[] => Object.values((this as unknown as { hashMap: Record<string, HistogramEntry> }).hashMap);
      let entry = entries().find(same);
      if (!entry) {
        this.zero(bound.labels as LabelValues<T>);
        entry = entries().find(same)!;
      }
      entry.sum += bound.sum;
      entry.count += bound.count;
      for (let i = 0; i < this.bounds.length; i++) if (bound.buckets[i]) entry.bucketValues[this.bounds[i]!] = (entry.bucketValues[this.bounds[i]!] ?? 0) + bound.buckets[i]!;
      bound.clear();
    }
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor resets too, before this class's fields exist.
    for (const bound of this.pending ?? []) bound.clear();
  }
}

class PendingCount implements BoundCounter {
  value = 0;
  constructor(readonly labels: LabelValues<string>) {}
  inc(by = 1): void {
    if (!(by >= 0)) throw new Error('It is not possible to decrease a counter');
    this.value += by;
  }
}

/** A Counter whose label sets can be bound for the hot path (see `BoundHistogram`). */
export class BindableCounter<T extends string> extends Counter<T> {
  private readonly pending: PendingCount[] = [];

  constructor(configuration: CounterConfiguration<T>) {
    super({
      ...configuration,
      collect(this: Counter<T>) {
        (this as BindableCounter<T>).flush();
      },
    });
  }

  bind(labels: LabelValues<T>): BoundCounter {
    const bound = new PendingCount(labels);
    this.pending.push(bound);
    return bound;
  }

  private flush(): void {
    for (const bound of this.pending) {
      if (bound.value === 0) continue;
      this.inc(bound.labels as LabelValues<T>, bound.value);
      bound.value = 0;
    }
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor resets too, before this class's fields exist.
    for (const bound of this.pending ?? []) bound.value = 0;
  }
}

// Sub-millisecond buckets: a feature read is expected to take ~100 µs–2 ms.
const latencyBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export const requestDuration = new BindableHistogram({
  name: 'feature_gateway_request_duration_seconds',
  help: 'GraphQL request duration by operation name (persisted operations by name, others as "(adhoc)").',
  labelNames: ['operation'] as const,
  buckets: latencyBuckets,
  registers: [metricsRegistry],
});

export const storeReadDuration = new BindableHistogram({
  name: 'feature_store_read_duration_seconds',
  help: 'Duration of one batched read against one store shard.',
  labelNames: ['store', 'shard'] as const,
  buckets: latencyBuckets,
  registers: [metricsRegistry],
});

export const storeErrors = new Counter({
  name: 'feature_store_errors_total',
  help: 'Store calls that failed, by store and shard.',
  labelNames: ['store', 'shard'] as const,
  registers: [metricsRegistry],
});

export const storeCircuitState = new Gauge({
  name: 'feature_store_circuit_state',
  help: 'Circuit breaker of each store shard: 0 closed (calls pass), 1 half-open (one probe call passes), 2 open (calls fail at once).',
  labelNames: ['store', 'shard'] as const,
  registers: [metricsRegistry],
});

export const storeShortCircuited = new Counter({
  name: 'feature_store_short_circuited_total',
  help: 'Store calls refused at once because the shard\'s circuit breaker was open.',
  labelNames: ['store', 'shard'] as const,
  registers: [metricsRegistry],
});

export const deadlineExceeded = new Counter({
  name: 'feature_store_deadline_exceeded_total',
  help: 'Store calls a request stopped waiting for (or did not start) because its REQUEST_DEADLINE_MS had passed.',
  labelNames: ['store', 'shard'] as const,
  registers: [metricsRegistry],
});

export const batchSize = new BindableHistogram({
  name: 'feature_store_batch_size',
  help: 'Entity ids per DataLoader batch (one store read of one feature view).',
  labelNames: ['view'] as const,
  buckets: [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000],
  registers: [metricsRegistry],
});

export const staleValues = new BindableCounter({
  name: 'feature_values_stale_total',
  help: 'Feature view values read past their TTL (served as stale, features null).',
  labelNames: ['view'] as const,
  registers: [metricsRegistry],
});

export const missingValues = new BindableCounter({
  name: 'feature_values_missing_total',
  help: 'Feature view values requested but absent from the store.',
  labelNames: ['view'] as const,
  registers: [metricsRegistry],
});

export const rejectedRequests = new Counter({
  name: 'feature_gateway_rejected_requests_total',
  help: 'Requests refused before execution, by error code.',
  labelNames: ['code'] as const,
  registers: [metricsRegistry],
});

export const fastPathRequests = new BindableCounter({
  name: 'feature_gateway_fast_path_requests_total',
  help: 'Persisted operations answered by their compiled plan ("served"), handed to the generic path ("generic", JSON) or refused ("refused", Arrow: no generic path to hand to), by response format (json, arrow).',
  labelNames: ['operation', 'outcome', 'format'] as const,
  registers: [metricsRegistry],
});

// GraphQL subscriptions (gateway/subscriptions/).

export const subscriptionsActive = new Gauge({
  name: 'subscriptions_active',
  help: 'GraphQL subscriptions currently open, over every transport (graphql-ws, SSE, multipart HTTP); a live operation counts once per entity type it watches.',
  registers: [metricsRegistry],
});

/** One function per change hub, answering the events waiting in its queues: counted when scraped, not per queue operation. */
export const subscriptionQueueSources = new Set<() => number>();

export const subscriptionQueuedEvents = new Gauge({
  name: 'subscription_queued_events',
  help: 'Change events waiting in subscription queues (each queue is bounded by SUBSCRIPTION_QUEUE_SIZE).',
  registers: [metricsRegistry],
  collect() {
    let queued = 0;
    for (const source of subscriptionQueueSources) queued += source();
    this.set(queued);
  },
});

export const subscriptionEventsDropped = new Counter({
  name: 'subscription_events_dropped_total',
  help: 'Change events dropped from a full subscription queue (the oldest queued event goes first).',
  registers: [metricsRegistry],
});

export const subscriptionChangeEvents = new Counter({
  name: 'subscription_change_events_total',
  help: 'Records read from the feature-updates topic: "accepted" (fanned out), "unwatched" (its key names a value no subscription watches: skipped undecoded), "malformed" (undecodable, skipped), "unknown" (entity or view not in this registry, skipped).',
  labelNames: ['outcome'] as const,
  registers: [metricsRegistry],
});

export const subscriptionEventsSuperseded = new Counter({
  name: 'subscription_events_superseded_total',
  help: 'Queued subscription events replaced by a newer change of the same value (entity, view, version) before they were sent.',
  registers: [metricsRegistry],
});

// The push API (subgraphs/push.ts).

export const pushedRows = new Counter({
  name: 'feature_push_rows_total',
  help: 'Rows of push mutations by view ("name:vN") and outcome: "written", "invalid" (rejected by validation), "forbidden" (caller not admin), "store_error" (the write failed), "unpublished" (written, change events not produced).',
  labelNames: ['view', 'outcome'] as const,
  registers: [metricsRegistry],
});

// The send side of subscription connections (gateway/subscriptions/send-gate.ts).

/** One function per open subscription connection, answering its socket's bufferedAmount. */
export const subscriptionSendBufferSources = new Set<() => number>();

export const subscriptionSendBufferedBytes = new Gauge({
  name: 'subscription_send_buffered_bytes',
  help: 'Bytes waiting in the send buffers of all subscription connections (each bounded by SUBSCRIPTION_SEND_BUFFER_BYTES plus one message).',
  registers: [metricsRegistry],
  collect() {
    let bytes = 0;
    for (const source of subscriptionSendBufferSources) bytes += source();
    this.set(bytes);
  },
});

export const subscriptionConnectionsPaused = new Gauge({
  name: 'subscription_connections_send_paused',
  help: 'Subscription connections whose sends are paused because their send buffer is over SUBSCRIPTION_SEND_BUFFER_BYTES.',
  registers: [metricsRegistry],
});

export const subscriptionSendPauses = new Counter({
  name: 'subscription_send_pauses_total',
  help: 'Times a subscription connection\'s sends were paused on a full send buffer.',
  registers: [metricsRegistry],
});

export const subscriptionConnectionsStalledClosed = new Counter({
  name: 'subscription_connections_stalled_closed_total',
  help: 'Subscription connections closed (code 4413) because their sends stayed paused for SUBSCRIPTION_STALL_TIMEOUT_MS.',
  registers: [metricsRegistry],
});

// The change feed as this process sees it (eventlog/change-feed.ts).

/** One function per running change feed, answering its tail's status (null when not started). */
export const changeFeedSources = new Set<() => { readonly partitions: readonly { topic: string; partition: number; next: number; end: number }[] } | null>();

export const changeFeedLag = new Gauge({
  name: 'feature_change_feed_lag_records',
  help: 'Records of feature-updates this process has not consumed yet, per partition (log end as last reported minus the next offset to consume).',
  labelNames: ['partition'] as const,
  registers: [metricsRegistry],
  collect() {
    this.reset();
    for (const source of changeFeedSources) {
      for (const p of source()?.partitions ?? []) this.set({ partition: String(p.partition) }, Math.max(0, p.end - p.next));
    }
  },
});

export const changeFeedPosition = new Gauge({
  name: 'feature_change_feed_next_offset',
  help: 'Per partition of feature-updates, the next offset this process will consume: every change below it has been applied.',
  labelNames: ['partition'] as const,
  registers: [metricsRegistry],
  collect() {
    this.reset();
    for (const source of changeFeedSources) {
      for (const p of source()?.partitions ?? []) this.set({ partition: String(p.partition) }, p.next);
    }
  },
});

export const changeFeedDuplicates = new Counter({
  name: 'feature_change_feed_duplicates_total',
  help: 'Change events a reader of feature-updates ignored because it had applied them already (same value, same or an older offset of the same source partition; eventlog/applied-changes.ts), by reader: "hot_tier", "subscriptions".',
  labelNames: ['reader'] as const,
  registers: [metricsRegistry],
});

// The hot tier (store/hot-tier.ts).

export const hotTierLookups = new BindableCounter({
  name: 'feature_hot_tier_lookups_total',
  help: 'Values looked up in the hot tier, by view ("name:vN") and outcome: "hit" (served from memory), "miss" (read from the store, then cached), "bypass" (read from the store because the change feed cannot be trusted, or the view opts out).',
  labelNames: ['view', 'outcome'] as const,
  registers: [metricsRegistry],
});

export const hotTierInvalidations = new BindableCounter({
  name: 'feature_hot_tier_invalidations_total',
  help: 'Cached values (or reads in flight) dropped because a change event or this process\'s own write changed them, by view.',
  labelNames: ['view'] as const,
  registers: [metricsRegistry],
});

export const hotTierEvictions = new BindableCounter({
  name: 'feature_hot_tier_evictions_total',
  help: 'Cached values evicted to keep the hot tier under HOT_TIER_MAX_BYTES, by view.',
  labelNames: ['view'] as const,
  registers: [metricsRegistry],
});

/** One function per hot tier, giving its estimated bytes per view label. */
export const hotTierByteSources = new Set<() => Iterable<[string, number]>>();

export const hotTierBytes = new Gauge({
  name: 'feature_hot_tier_bytes',
  help: 'Estimated bytes of the values held by the hot tier, by view.',
  labelNames: ['view'] as const,
  registers: [metricsRegistry],
  // Read at each scrape rather than kept on every fill and eviction.
  collect() {
    this.reset();
    for (const source of hotTierByteSources) for (const [view, bytes] of source()) this.inc({ view }, bytes);
  },
});

export const hotTierFlushes = new Counter({
  name: 'feature_hot_tier_flushes_total',
  help: 'Times the hot tier dropped everything, by reason: "epoch" (the feed restarted from its end and may have skipped changes), "resumed" (the feed is usable again after a bypass), "unreadable" (a change event named no value).',
  labelNames: ['reason'] as const,
  registers: [metricsRegistry],
});

/** One function per hot tier, answering why it bypasses now (null: it serves from memory). */
export const hotTierBypassSources = new Set<() => string | null>();

export const hotTierBypassing = new Gauge({
  name: 'feature_hot_tier_bypassing',
  help: '1 while the hot tier reads every value from the store because the change feed is not running, is disconnected or lags (reason label), else absent.',
  labelNames: ['reason'] as const,
  registers: [metricsRegistry],
  collect() {
    this.reset();
    for (const source of hotTierBypassSources) {
      const reason = source();
      if (reason !== null) this.inc({ reason });
    }
  },
});

export const hotTierBypassSeconds = new Counter({
  name: 'feature_hot_tier_bypass_seconds_total',
  help: 'Time the hot tier spent bypassing (reading everything from the store), counted when it serves from memory again and at each scrape.',
  registers: [metricsRegistry],
});

// Ownership of consumed partitions by the transactional consumer (eventlog/partition-leases.ts).

export const kafkaProducersFenced = new Counter({
  name: 'kafka_producer_fenced_total',
  help: 'Transactions refused because a newer owner of the partition initialised its transactional id since: the batch was abandoned, nothing of it published. Expected after a pause or a rebalance, never a crash.',
  labelNames: ['topic'] as const,
  registers: [metricsRegistry],
});

export const kafkaBatchesAbandoned = new Counter({
  name: 'kafka_batches_abandoned_total',
  help: 'Handled batches left uncommitted because this process did not own their partition any more at commit time, by reason: "revoked" (a rebalance took the partition or began a new generation), "left_group" (the coordinator no longer knows this member or its generation), "fenced" (a newer owner fenced the producer). Another owner handles them again.',
  labelNames: ['topic', 'reason'] as const,
  registers: [metricsRegistry],
});

export const kafkaRecordsSkipped = new Counter({
  name: 'kafka_records_skipped_total',
  help: 'Fetched records already committed by an earlier owner of the partition (found when this process took the partition over and read its committed offset after fencing): not handled again.',
  labelNames: ['topic'] as const,
  registers: [metricsRegistry],
});
