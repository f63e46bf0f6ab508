import DataLoader from 'dataloader';
import { GraphQLError } from 'graphql';
import type { ViewVersion } from '../schema/types.js';
import { deadlineOf, type Deadline } from '../runtime/deadline.js';
import { ErrorCode } from '../runtime/errors.js';
import { batchSize, missingValues, staleValues, type BoundCounter, type BoundHistogram } from '../runtime/metrics.js';
import {
  CorruptValueError, DeadlineExceededError, StoreUnavailableError, type OnlineStore, type ReadResult, type StoredFeatures,
} from '../store/online-store.js';

/**
 * Per-request DataLoaders, one per feature-view version: every resolution of
 * one view during a request is collected within a tick into one store read
 * (ARCHITECTURE.md, decision 2). Loaders live exactly as long as the request
 * context object they are keyed on, so nothing is cached across requests.
 * A read answers per id, so an id whose shard failed fails only its own
 * fields (DataLoader rejects just that key).
 */
/**
 * A request context may carry what the compiled fast path already read for
 * this request, per view version and id: values, nulls and per-id errors.
 * The fast path hands a request with any failed id over to the generic path
 * with these reads; its loaders start primed with them, so the generic path
 * answers the partial result without asking the store again (a hung shard
 * costs one timeout, not two, and is counted once).
 */
export const primedReads = Symbol('primedReads');
export type PrimedReads = ReadonlyMap<ViewVersion, ReadonlyMap<string, ReadResult | Error>>;

export class RequestLoaders {
  private readonly loaders = new Map<ViewVersion, DataLoader<string, StoredFeatures | null>>();

  constructor(
    private readonly store: OnlineStore,
    private readonly deadline: Deadline | undefined = undefined,
    private readonly primed: PrimedReads | undefined = undefined,
  ) {}

  forView(view: ViewVersion): DataLoader<string, StoredFeatures | null> {
    let loader = this.loaders.get(view);
    if (!loader) {
      loader = new DataLoader<string, StoredFeatures | null>((ids) => this.readBatch(view, ids));
      // DataLoader takes a primed Error as that key's rejection.
      for (const [id, result] of this.primed?.get(view) ?? []) loader.prime(id, result instanceof Error ? toGraphQLError(result) : result);
      this.loaders.set(view, loader);
    }
    return loader;
  }

  private async readBatch(view: ViewVersion, ids: readonly string[]): Promise<(StoredFeatures | null | GraphQLError)[]> {
    let results: ReadResult[];
    try {
      results = await readViewBatch(this.store, view, ids, this.deadline);
    } catch (error) {
      throw toGraphQLError(error);
    }
    return results.map((r) => (r instanceof Error ? toGraphQLError(r) : r));
  }
}

/**
 * One batched read of one view version, with its batch-size, stale and
 * missing metrics. Every read on the serving path goes through here, the
 * DataLoaders' and the compiled operations' alike.
 */
export async function readViewBatch(store: OnlineStore, view: ViewVersion, ids: readonly string[], deadline?: Deadline): Promise<ReadResult[]> {
  const metrics = metricsOf(view);
  metrics.batchSize.observe(ids.length);
  const records = await store.readSettled(view, ids, deadline ? { deadline } : noOptions);
  countValues(records, metrics);
  return records;
}

/**
 * `readViewBatch` that never rejects: a failure of the whole read (not of some ids) becomes
 * every id's error. For the compiled plan, which reads all its views at once and reports per id;
 * one async function rather than a `.catch` layer over `readViewBatch`.
 */
export async function readViewBatchSettled(store: OnlineStore, view: ViewVersion, ids: readonly string[], deadline?: Deadline): Promise<(ReadResult | Error)[]> {
  const metrics = metricsOf(view);
  metrics.batchSize.observe(ids.length);
  let records: ReadResult[];
  try {
    records = await store.readSettled(view, ids, deadline ? { deadline } : noOptions);
  } catch (error) {
    const failure = error instanceof Error ? error : new Error(String(error));
    return ids.map(() => failure);
  }
  countValues(records, metrics);
  return records;
}

/** The stale and missing values of a read, counted. */
function countValues(records: readonly ReadResult[], metrics: ViewMetrics): void {
  let stale = 0;
  let missing = 0;
  for (let i = 0; i < records.length; i++) {
    const r = records[i];
    if (r === null) missing++;
    else if (!(r instanceof Error) && r!.stale) stale++;
  }
  if (stale) metrics.stale.inc(stale);
  if (missing) metrics.missing.inc(missing);
}

const noOptions = {};

/** A view version's read metrics, bound to its `view` label once per version rather than per read. */
interface ViewMetrics {
  readonly batchSize: BoundHistogram;
  readonly stale: BoundCounter;
  readonly missing: BoundCounter;
}
function metricsOf(view: ViewVersion): ViewMetrics {
  let metrics = viewMetrics.get(view);
  if (!metrics) {
    const labels = { view: `${view.viewName}:v${view.version}` };
    metrics = { batchSize: batchSize.bind(labels), stale: staleValues.bind(labels), missing: missingValues.bind(labels) };
    viewMetrics.set(view, metrics);
  }
  return metrics;
}
const viewMetrics = new WeakMap<ViewVersion, ViewMetrics>();

/** Store failures become GraphQL errors with a documented code and the failing shard. */
export function toGraphQLError(error: unknown): GraphQLError {
  if (error instanceof StoreUnavailableError) {
    return new GraphQLError(error.message, {
      extensions: { code: ErrorCode.StoreUnavailable, store: error.store, shard: error.shard },
    });
  }
  if (error instanceof DeadlineExceededError) {
    return new GraphQLError(error.message, {
      extensions: { code: ErrorCode.DeadlineExceeded, store: error.store, shard: error.shard, deadlineMs: error.budgetMs },
    });
  }
  if (error instanceof CorruptValueError) {
    return new GraphQLError(error.message, { extensions: { code: ErrorCode.StoreCorruptValue, key: error.key } });
  }
  if (error instanceof GraphQLError) return error;
  return new GraphQLError(error instanceof Error ? error.message : String(error), { originalError: error instanceof Error ? error : undefined });
}

/** Loaders keyed by request context: one set per request, dropped with it. */
export class LoaderScope {
  private readonly byContext = new WeakMap<object, RequestLoaders>();

  constructor(private readonly store: OnlineStore) {}

  for(context: unknown): RequestLoaders {
    if (typeof context !== 'object' || context === null) {
      throw new Error('subgraph resolvers need an object context to scope their DataLoaders to one request');
    }
    let loaders = this.byContext.get(context);
    if (!loaders) {
      loaders = new RequestLoaders(this.store, deadlineOf(context), (context as { [primedReads]?: PrimedReads })[primedReads]);
      this.byContext.set(context, loaders);
    }
    return loaders;
  }
}
