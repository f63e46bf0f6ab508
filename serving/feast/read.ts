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
  const { plan, keys, keyOf } = request;
  // Distinct ids per join key column (views of one entity share them), in first-seen order.
  const distinct = new Array<{ ids: string[]; rowAt: Int32Array } | undefined>(keys.length);
  const slots = plan.views.length;
  const rowAt = new Array<Int32Array>(slots);
  const pending = new Array<Promise<(ReadResult | Error)[]> | (ReadResult | Error)[]>(slots);
  for (let slot = 0; slot < slots; slot++) {
    const k = keyOf[slot]!;
    let d = distinct[k];
    if (!d) {
      const ids = keys[k]!.ids;
      const at = new Map<string, number>();
      const unique: string[] = [];
      const rows = new Int32Array(ids.length);
      for (let i = 0; i < ids.length; i++) {
        let p = at.get(ids[i]!);
        if (p === undefined) {
          p = unique.push(ids[i]!) - 1;
          at.set(ids[i]!, p);
        }
        rows[i] = p;
      }
      d = distinct[k] = { ids: unique, rowAt: rows };
    }
    rowAt[slot] = d.rowAt;
    // As the GraphQL paths: no ids, no store call.
    pending[slot] = d.ids.length === 0 ? [] : readViewBatchSettled(store, plan.views[slot]!, d.ids, deadline);
  }
  const results = slots === 1 ? [await pending[0]!] : await Promise.all(pending);
  return { results, rowAt };
}
