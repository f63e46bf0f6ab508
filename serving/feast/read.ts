import type { Deadline } from '../../runtime/deadline.js';
import type { OnlineStore, ReadResult } from '../../store/online-store.js';
import { readViewBatchSettled } from '../../subgraphs/loaders.js';
import type { FeastRequest } from './request.js';

/**
 * The plan's result: what the store answered for every view version of a
 * Feast request, read as the compiled GraphQL plan reads (one
 * `readViewBatchSettled` per view version for the distinct ids of the
 * request, all issued at once, through the same store — hot tier, shard
 * guard, deadline and metrics included — and the same freshness decided at
 * read time). Per id a value (maybe stale), null (none stored) or the
 * error that kept it from being read: a failed shard fails only its ids.
 */
export interface FeastReads {
  /** Per view slot: the answers of its read, one per distinct id. */
  readonly results: readonly (readonly (ReadResult | Error)[])[];
  /** Per view slot and entity row: where the row's answer is in `results[slot]`. */
  readonly rowAt: readonly Int32Array[];
}

export async function readFeast(store: OnlineStore, request: FeastRequest, deadline?: Deadline): Promise<FeastReads> {
  const { plan, keyOf } = request;
  const distinct = distinctIds(request);
  const slots = plan.views.length;
  const pending = new Array<Promise<(ReadResult | Error)[]> | (ReadResult | Error)[]>(slots);
  for (let slot = 0; slot < slots; slot++) {
    const ids = distinct[keyOf[slot]!]!.ids;
    // As the GraphQL paths: no ids, no store call.
    pending[slot] = ids.length === 0 ? [] : readViewBatchSettled(store, plan.views[slot]!, ids, deadline);
  }
  const results = slots === 1 ? [await pending[0]!] : await Promise.all(pending);
  return { results, rowAt: plan.views.map((_, slot) => distinct[keyOf[slot]!]!.rowAt) };
}

/** Per join key column: its distinct ids in first-seen order, and each row's position among them. */
export function distinctIds(request: FeastRequest): { readonly ids: readonly string[]; readonly rowAt: Int32Array }[] {
  return request.keys.map((key) => {
    const at = new Map<string, number>();
    const unique: string[] = [];
    const rowAt = new Int32Array(key.ids.length);
    for (let i = 0; i < key.ids.length; i++) {
      const id = key.ids[i]!;
      let p = at.get(id);
      if (p === undefined) {
        p = unique.push(id) - 1;
        at.set(id, p);
      }
      rowAt[i] = p;
    }
    return { ids: unique, rowAt };
  });
}
