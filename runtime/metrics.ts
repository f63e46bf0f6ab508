import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The process's Prometheus registry and every metric the project exports.
 * One module so names, units and label sets are defined once
 * (see ARCHITECTURE.md, "Names").
 */
export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry });

// Sub-millisecond buckets: a feature read is expected to take ~100 µs–2 ms.
const latencyBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export const requestDuration = new Histogram({
  name: 'feature_gateway_request_duration_seconds',
  help: 'GraphQL request duration by operation name (persisted operations by name, others as "(adhoc)").',
  labelNames: ['operation'] as const,
  buckets: latencyBuckets,
  registers: [metricsRegistry],
});

export const storeReadDuration = new Histogram({
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

export const batchSize = new Histogram({
  name: 'feature_store_batch_size',
  help: 'Entity ids per DataLoader batch (one store read of one feature view).',
  labelNames: ['view'] as const,
  buckets: [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000],
  registers: [metricsRegistry],
});

export const staleValues = new Counter({
  name: 'feature_values_stale_total',
  help: 'Feature view values read past their TTL (served as stale, features null).',
  labelNames: ['view'] as const,
  registers: [metricsRegistry],
});

export const missingValues = new Counter({
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

export const fastPathRequests = new Counter({
  name: 'feature_gateway_fast_path_requests_total',
  help: 'Persisted operations answered by their compiled plan ("served") or handed to the generic path ("generic").',
  labelNames: ['operation', 'outcome'] as const,
  registers: [metricsRegistry],
});

// GraphQL subscriptions (gateway/subscriptions.ts).

export const subscriptionsActive = new Gauge({
  name: 'subscriptions_active',
  help: 'GraphQL subscriptions currently open over graphql-ws.',
  registers: [metricsRegistry],
});

export const subscriptionQueuedEvents = new Gauge({
  name: 'subscription_queued_events',
  help: 'Change events waiting in subscription queues (each queue is bounded by SUBSCRIPTION_QUEUE_SIZE).',
  registers: [metricsRegistry],
});

export const subscriptionEventsDropped = new Counter({
  name: 'subscription_events_dropped_total',
  help: 'Change events dropped from a full subscription queue (the oldest queued event goes first).',
  registers: [metricsRegistry],
});

export const subscriptionChangeEvents = new Counter({
  name: 'subscription_change_events_total',
  help: 'Records read from the feature-updates topic: "accepted" (fanned out), "malformed" (undecodable, skipped), "unknown" (entity or view not in this registry, skipped).',
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

// The send side of subscription connections (gateway/send-gate.ts).

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
