import { authorize, mayReadView, viewRefusalMessage } from '../auth/policy.js';
import type { Principal } from '../auth/principal.js';
import type { Deadline } from '../runtime/deadline.js';
import { ErrorCode } from '../runtime/errors.js';
import type { DoorAnswer, JsonDoor, Refusal } from '../runtime/graphql-http.js';
import { MediaType } from '../runtime/negotiation.js';
import type { Registry } from '../schema/types.js';
import { encodeArrow } from '../serving/encoders/arrow.js';
import { feastPlanResult } from '../serving/feast/arrow.js';
import { encodeFeast } from '../serving/feast/encode.js';
import { FeastError, plainError, typedError, validationError } from '../serving/feast/errors.js';
import { FederatedFeastReads, type Execute } from '../serving/feast/federated.js';
import { readFeast, type FeastReads } from '../serving/feast/read.js';
import { FeastRequests, type FeastRequest } from '../serving/feast/request.js';
import type { OnlineStore } from '../store/online-store.js';
import { batchTooLarge, tooCostly } from './limits.js';

/**
 * `POST /get-online-features`, Feast's online read (README, "Coming from
 * Feast"): a door of the gateway over the same plan, store and checks as
 * GraphQL (ARCHITECTURE.md, decision 10). The HTTP front has authenticated
 * the caller (API key, or the `Authorization: Bearer` JWT Feast's client
 * sends), bounded the body and started the deadline; here the request is
 * planned (serving/feast/request.ts) and checked as a persisted read:
 *
 * 1. the role: a persisted query's (inference, analyst, admin);
 * 2. MAX_QUERY_COST, counted as for the equivalent GraphQL query: per entity, its rows × the
 *    leaf fields of its views (the features asked, `eventTime` and `stale` each);
 * 3. MAX_BATCH_IDS: entity rows;
 * 4. per-view read roles: a view the caller may not read refuses the request (Feast's
 *    permission model: the client gets FeastPermissionError), where GraphQL fails that field alone.
 *
 * Then it is read — straight from the store as the compiled plan reads it (co-located, FAST_PATH
 * on), else through the federated planner (distributed shape, or FAST_PATH=false) — and written
 * as Feast's JSON, partial failures included (a failed view value is INVALID, with an `errors` entry).
 */
export const feastPath = '/get-online-features';

export interface FeastDoorOptions {
  readonly registry: Registry;
  /** Read the store directly (the compiled plan's way); without it, through `execute`. */
  readonly store?: OnlineStore;
  /** The gateway's own execution of a query for `principal` (trusted: checked here already). */
  readonly execute: (principal: Principal | undefined, deadline: Deadline | undefined) => Execute;
  readonly maxBatchIds: number;
  readonly maxQueryCost: number;
}

export function feastDoor(options: FeastDoorOptions): JsonDoor {
  const requests = new FeastRequests(options.registry);
  const federated = new FederatedFeastReads(options.registry);
  const costs = new WeakMap<FeastRequest['plan'], (request: FeastRequest) => number>();
  return {
    path: feastPath,
    refusal: (status, code, message) => answerOf(status === 403
      ? typedError(403, code, 'FeastPermissionError', `Permission error:\n${message}`)
      : plainError(status, code, message)),
    async answer(text, principal, deadline, format): Promise<DoorAnswer> {
      let request: FeastRequest;
      try {
        request = requests.parse(parseJson(text));
      } catch (error) {
        if (error instanceof FeastError) return answerOf(error);
        throw error;
      }
      const denied = authorize(principal, 'persisted');
      if (denied) return answerOf(typedError(403, denied.code, 'FeastPermissionError', `Permission error:\n${denied.message}`));
      let cost = costs.get(request.plan);
      if (!cost) costs.set(request.plan, (cost = costOf(request.plan)));
      const spent = cost(request);
      if (spent > options.maxQueryCost) return refusalOf(tooCostly(spent, options.maxQueryCost));
      if (request.rows > options.maxBatchIds) return refusalOf(batchTooLarge('entities hold', request.rows, options.maxBatchIds));
      for (const view of request.plan.views) {
        if (!mayReadView(principal, view)) return answerOf(typedError(403, ErrorCode.Forbidden, 'FeastPermissionError', `Permission error:\n${viewRefusalMessage(view)}`));
      }
      let reads: FeastReads | FeastError;
      if (options.store) reads = await readFeast(options.store, request, deadline);
      else reads = await federated.read(request, options.execute(principal, deadline));
      if (reads instanceof FeastError) return answerOf(reads);
      if (format === 'arrow') {
        // The same stream form as a persisted operation's (serving/feast/arrow.ts); errors in its metadata.
        return { status: 200, body: encodeArrow(feastPlanResult(request, reads)), contentType: MediaType.ArrowStream, operation: request.plan.operation };
      }
      return { status: 200, body: encodeFeast(request, reads), operation: request.plan.operation };
    },
  };
}

function answerOf(error: FeastError): DoorAnswer {
  return { status: error.status, body: error.body, code: error.code };
}

/** A limit's refusal (gateway/limits.ts, one wording for every door) in Feast's plain error form. */
function refusalOf(refusal: Refusal): DoorAnswer {
  return answerOf(plainError(refusal.status, refusal.code as ErrorCode, refusal.message));
}

/** The body as JSON, or FastAPI's 422 for what is not (its `json_invalid`, with the position). */
function parseJson(text: string): unknown {
  if (text.trim() === '') throw validationError([{ type: 'missing', loc: ['body'], msg: 'Field required', input: null }]);
  try {
    return JSON.parse(text);
  } catch (error) {
    const message = (error as Error).message;
    const position = /position (\d+)/.exec(message);
    throw validationError([{
      type: 'json_invalid', loc: ['body', position ? Number(position[1]) : 0], msg: 'JSON decode error', input: {}, ctx: { error: message },
    }]);
  }
}

/**
 * The cost of the GraphQL query equivalent to a plan (gateway/limits.ts's rule: entities × leaf
 * fields): per entity, its rows times the leaves of its views — the features asked plus
 * `eventTime` and `stale` per view. Rows, not distinct ids: never less than what the federated
 * path's own check counts.
 */
function costOf(plan: FeastRequest['plan']): (request: FeastRequest) => number {
  const leaves = plan.views.map((_, slot) => plan.columns.filter((c) => c.slot === slot).length + 2);
  return (request) => {
    let cost = 0;
    for (let slot = 0; slot < leaves.length; slot++) cost += request.rows * leaves[slot]!;
    return cost;
  };
}
