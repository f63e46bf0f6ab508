import DataLoader from 'dataloader';
import { GraphQLError } from 'graphql';
import type { ViewVersion } from '../schema/types.js';
import { ErrorCode } from '../runtime/errors.js';
import { batchSize, missingValues, staleValues } from '../runtime/metrics.js';
import { CorruptValueError, StoreUnavailableError, type OnlineStore, type StoredFeatures } from '../store/online-store.js';

/**
 * Per-request DataLoaders, one per feature-view version: every resolution of
 * one view during a request is collected within a tick into one store read
 * (ARCHITECTURE.md, decision 2). Loaders live exactly as long as the request
 * context object they are keyed on, so nothing is cached across requests.
 */
/**
 * A request context may carry a store failure already seen for this request
 * (the compiled fast path hands over to the generic path after one): its
 * loaders then answer with that failure instead of asking the store again,
 * so a hung shard costs one timeout, not two, and is counted once.
 */
export const storeFailure = Symbol('storeFailure');

export class RequestLoaders {
  private readonly loaders = new Map<ViewVersion, DataLoader<string, StoredFeatures | null>>();

  constructor(private readonly store: OnlineStore, private readonly failure: unknown = undefined) {}

  forView(view: ViewVersion): DataLoader<string, StoredFeatures | null> {
    let loader = this.loaders.get(view);
    if (!loader) {
      loader = new DataLoader((ids) => this.readBatch(view, ids));
      this.loaders.set(view, loader);
    }
    return loader;
  }

  private async readBatch(view: ViewVersion, ids: readonly string[]): Promise<(StoredFeatures | null)[]> {
    if (this.failure !== undefined) throw toGraphQLError(this.failure);
    try {
      return await readViewBatch(this.store, view, ids);
    } catch (error) {
      throw toGraphQLError(error);
    }
  }
}

/**
 * One batched read of one view version, with its batch-size, stale and
 * missing metrics. Every read on the serving path goes through here, the
 * DataLoaders' and the compiled operations' alike.
 */
export async function readViewBatch(store: OnlineStore, view: ViewVersion, ids: readonly string[]): Promise<(StoredFeatures | null)[]> {
  const label = `${view.viewName}:v${view.version}`;
  batchSize.observe({ view: label }, ids.length);
  const records = await store.read(view, ids);
  let stale = 0;
  let missing = 0;
  for (const r of records) {
    if (r === null) missing++;
    else if (r.stale) stale++;
  }
  if (stale) staleValues.inc({ view: label }, stale);
  if (missing) missingValues.inc({ view: label }, missing);
  return records;
}

/** Store failures become GraphQL errors with a documented code and the failing shard. */
export function toGraphQLError(error: unknown): GraphQLError {
  if (error instanceof StoreUnavailableError) {
    return new GraphQLError(error.message, {
      extensions: { code: ErrorCode.StoreUnavailable, store: error.store, shard: error.shard },
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
      loaders = new RequestLoaders(this.store, (context as { [storeFailure]?: unknown })[storeFailure]);
      this.byContext.set(context, loaders);
    }
    return loaders;
  }
}
