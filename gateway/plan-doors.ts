import { authorize, mayDo, mayReadView } from '../auth/policy.js';
import type { Principal } from '../auth/principal.js';
import type { Config } from '../runtime/config.js';
import type { Deadline } from '../runtime/deadline.js';
import { ErrorCode } from '../runtime/errors.js';
import type { ArrowPathResult, FastPathResult, IncomingOperation } from '../runtime/graphql-http.js';
import { fastPathRequests, rejectedRequests, type BoundCounter } from '../runtime/metrics.js';
import type { ViewVersion } from '../schema/types.js';
import type { CompiledOperation, CompiledOperations, Unfit } from '../serving/compiled-operations.js';
import { arrowForm, encodeArrow } from '../serving/encoders/arrow.js';
import { encodeGraphQLJson } from '../serving/encoders/graphql-json.js';
import { primedReadsOf } from '../serving/plan.js';
import { forbiddenView } from '../subgraphs/factory.js';
import { primedReads } from '../subgraphs/loaders.js';
import { batchTooLargeError, queryTooCostly, unresolvedOperation } from './limits.js';
import type { PersistedQueries } from './persisted-queries.js';

/**
 * The doors in front of the compiled plans (serving/): GraphQL JSON (the fast path) and Arrow.
 * One set of checks for both (`admitted`: the manifest operation, its kind's role, each view's
 * read roles, the query cost), then each door runs the plan and encodes its result.
 *
 * What the checks decline differs by door only in what follows: the JSON door hands the request
 * to the generic path, which answers it in its own words (a partial answer with a FORBIDDEN field
 * error, a 400 with Apollo Server's message); the Arrow door has no generic path behind it, so it
 * refuses with the same code (`forArrow`), or says the operation has no Arrow form.
 */
export class PlanDoors {
  /** The Arrow outcomes of each operation, bound once. */
  private readonly arrowCounters = new Map<CompiledOperation, { readonly served: BoundCounter; readonly refused: BoundCounter }>();

  constructor(
    private readonly compiled: CompiledOperations,
    private readonly persisted: PersistedQueries,
    private readonly costOf: ReadonlyMap<string, (variables: Record<string, unknown>) => number>,
    private readonly config: Pick<Config, 'maxQueryCost' | 'maxBatchIds'>,
  ) {}

  /** The JSON door: the body Apollo Server would write, a hand-over to the generic path, or undefined (not its own). */
  async json(operation: IncomingOperation, principal: Principal | undefined, deadline: Deadline | undefined): Promise<FastPathResult | undefined> {
    const op = this.admitted(operation, principal);
    if (op instanceof Declined) return undefined;
    const result = await op.run(operation.variables, operation.operationName, deadline);
    if (result.kind === 'unfit') {
      op.handedOver.inc();
      return { kind: 'generic', context: {} };
    }
    if (result.failed) {
      // The generic path reports the failed ids in its own words, from these reads, without reading again.
      op.handedOver.inc();
      return { kind: 'generic', context: { [primedReads]: primedReadsOf(result) } };
    }
    op.served.inc();
    return { kind: 'answered', body: encodeGraphQLJson(result), operation: op.name };
  }

  /** The Arrow door: the stream, a refusal with the code the generic path would give, or no Arrow form. */
  async arrow(operation: IncomingOperation, principal: Principal | undefined, deadline: Deadline | undefined): Promise<ArrowPathResult> {
    const op = this.admitted(operation, principal);
    if (op instanceof Declined) return op.forArrow();
    const form = arrowForm(op.plan);
    if (typeof form === 'string') return { kind: 'unavailable', reason: form };
    const counters = this.countersOf(op);
    const result = await op.run(operation.variables, operation.operationName, deadline);
    if (result.kind === 'unfit') {
      counters.refused.inc();
      return this.refusalOf(result);
    }
    counters.served.inc();
    return { kind: 'answered', body: encodeArrow(result), operation: op.name };
  }

  /** The compiled operation for this request once the checks every door shares pass, or why none answers it. */
  private admitted(operation: IncomingOperation, principal: Principal | undefined): CompiledOperation | Declined {
    const id = this.persisted.manifestIdOf(operation);
    if (id === undefined) return notPersisted;
    if (!mayDo(principal, 'persisted')) return new Declined('denied', principal);
    const op = this.compiled.get(id);
    if (!op) return new Declined('uncompiled', this.compiled.whyNotCompiled(id) ?? 'it did not compile');
    for (const view of op.views) if (!mayReadView(principal, view)) return new Declined('view', view);
    const variables = typeof operation.variables === 'object' && operation.variables !== null ? (operation.variables as Record<string, unknown>) : {};
    const cost = this.costOf.get(id)!(variables);
    if (cost > this.config.maxQueryCost) return new Declined('cost', cost, this.config.maxQueryCost);
    return op;
  }

  /** The Arrow door's refusal of a request that does not fit the plan (counted, as the generic path counts its own). */
  private refusalOf(unfit: Unfit): ArrowPathResult {
    switch (unfit.reason) {
      case 'operationName': return refused(unresolvedOperation(unfit.given));
      case 'batch': return refused(batchTooLargeError(unfit.size, this.config.maxBatchIds));
      case 'variables':
        rejectedRequests.inc({ code: ErrorCode.BadRequest });
        return { kind: 'refused', status: 400, code: ErrorCode.BadRequest, message: '`variables` must be a JSON object' };
      case 'variable':
        rejectedRequests.inc({ code: ErrorCode.BadUserInput });
        return {
          kind: 'refused', status: 400, code: ErrorCode.BadUserInput,
          message: `Variable "$${unfit.variable}" must be ${unfit.expected === 'ID!' ? 'a string' : 'a list of strings'} (${unfit.expected}); an Arrow request's variables are taken as declared, without GraphQL's input coercion`,
        };
    }
  }

  private countersOf(op: CompiledOperation): { readonly served: BoundCounter; readonly refused: BoundCounter } {
    let counters = this.arrowCounters.get(op);
    if (!counters) {
      counters = {
        served: fastPathRequests.bind({ operation: op.name, outcome: 'served', format: 'arrow' }),
        refused: fastPathRequests.bind({ operation: op.name, outcome: 'refused', format: 'arrow' }),
      };
      this.arrowCounters.set(op, counters);
    }
    return counters;
  }
}

/** Why the plans do not answer a request, and what the Arrow door says instead. */
class Declined {
  constructor(kind: 'notPersisted');
  constructor(kind: 'denied', principal: Principal | undefined);
  constructor(kind: 'uncompiled', reason: string);
  constructor(kind: 'view', view: ViewVersion);
  constructor(kind: 'cost', cost: number, max: number);
  constructor(
    private readonly kind: 'notPersisted' | 'denied' | 'uncompiled' | 'view' | 'cost',
    private readonly detail?: unknown,
    private readonly max?: number,
  ) {}

  forArrow(): ArrowPathResult {
    switch (this.kind) {
      case 'notPersisted':
        return { kind: 'unavailable', reason: 'only persisted operations have one (send a manifest operation by extensions.persistedQuery or its exact text)' };
      case 'uncompiled':
        return { kind: 'unavailable', reason: `the operation does not compile to a plan (${String(this.detail)})` };
      case 'denied': {
        const error = authorize(this.detail as Principal | undefined, 'persisted')!;
        rejectedRequests.inc({ code: error.code });
        return { kind: 'refused', status: error.status, code: error.code, message: error.message };
      }
      case 'view': {
        // The JSON answer is partial, with this error on the view's field; an Arrow stream has no field errors to carry it beside data.
        const error = forbiddenView(this.detail as ViewVersion);
        rejectedRequests.inc({ code: ErrorCode.Forbidden });
        return { kind: 'refused', status: 403, code: ErrorCode.Forbidden, message: `${error.message}; an Arrow answer needs every view of the operation readable` };
      }
      case 'cost':
        return refused(queryTooCostly(this.detail as number, this.max!));
    }
  }
}

const notPersisted = new Declined('notPersisted');

/** A coded GraphQL error (already counted) as the Arrow door's refusal. */
function refused(error: { readonly message: string; readonly extensions: Readonly<Record<string, unknown>> }): ArrowPathResult {
  const http = error.extensions.http as { status?: number } | undefined;
  return { kind: 'refused', status: http?.status ?? 400, code: String(error.extensions.code), message: error.message };
}
