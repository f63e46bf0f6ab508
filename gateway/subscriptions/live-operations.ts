import type { ApolloServer, BaseContext } from '@apollo/server';
import jsonPatch, { type Operation as PatchOperation } from 'fast-json-patch';
import {
  GraphQLError, Kind, getVariableValues, parse, valueFromASTUntyped,
  type GraphQLSchema, type OperationDefinitionNode, type ValueNode,
} from 'graphql';
import { mayReadView, viewRefusalMessage } from '../../auth/policy.js';
import { principalKey, type Principal } from '../../auth/principal.js';
import type { FeatureChange } from '../../eventlog/change-event.js';
import type { Config } from '../../runtime/config.js';
import { Deadline, deadlineKey } from '../../runtime/deadline.js';
import { ErrorCode } from '../../runtime/errors.js';
import { log as rootLog } from '../../runtime/log.js';
import { rejectedRequests } from '../../runtime/metrics.js';
import type { PersistedOperation, PersistedQueryManifest } from '../../schema/manifest.js';
import type { Registry, ViewVersion } from '../../schema/types.js';
import { compileOperation, type CompiledOperation } from '../../serving/compiled-operations.js';
import { graphqlData } from '../../serving/encoders/graphql-json.js';
import { primedReadsOf, type Plan, type PlanResult } from '../../serving/plan.js';
import { expiryOf } from '../../store/freshness.js';
import type { OnlineStore, StoredFeatures } from '../../store/online-store.js';
import { primedReads } from '../../subgraphs/loaders.js';
import { trustedOperation } from '../authorization.js';
import { batchTooLargeError, costFunction, queryTooCostly } from '../limits.js';
import type { ChangeStream, FeatureChangedArgs } from './hub.js';

/**
 * Live persisted operations: `subscription { liveOperation(operation: "RankingFeatures", variables: {…}) { revision result patch } }`
 * answers a manifest operation once in full (revision 0: `result`, the `{ data, errors? }` that
 * POST /graphql answers for it), then, whenever what it read changes, only the difference as an
 * RFC 6902 JSON Patch (`patch`). Applying the patches in order to the first result gives the
 * result of running the operation at that moment (decision 0034).
 *
 * How: the operation's compiled plan (serving/compiled-operations.ts) says which entities it looks
 * up under which root fields and which view versions decide each of them (`watchSetOf`); one hub
 * stream (hub.ts, `ChangeHub.open`) per entity watches those ids and versions.
 * A change wakes the watcher; it takes whatever else is already queued in its streams (coalescing:
 * one re-run for a burst), runs the operation again (the compiled plan co-located, else the gateway
 * with the persisted document, as POST /graphql would), diffs the two results with fast-json-patch
 * and sends the patch when it is not empty. Values also turn stale, and later missing, with time
 * alone (eventTime + the view's TTL; store/freshness.ts) and no change event: the watcher sets a
 * timer for the earliest such moment among the values of its last result and re-runs then too. A
 * result with errors (a store shard down) is the answer at that moment too, sent as a patch; since
 * the store's recovery sends no event either, such a result is run again every `failedRetryMs`
 * until it has no errors.
 *
 * The interface to the subscription code is narrow on purpose: `subscribe(args, context, schema, hub)`
 * is the field's source stream, given anything that opens hub streams; the subscription context needs
 * only its principal and its connection's stream tracker. The field and its types are SDL generated
 * with the rest of the subscription schema (schema/subscription-sdl.ts).
 */

const log = rootLog.child({ component: 'live-operations' });
const { compare } = jsonPatch;

/** What live operations need of the subscription hub: streams of the changes of some ids' view versions. */
export interface LiveHub {
  open(args: FeatureChangedArgs, maxBatchIds: number): ChangeStream;
}

/** What live operations need of a subscription's context. */
export interface LiveContext {
  readonly principal?: Principal | undefined;
  /** The subscription's connection: streams tracked here end when it starts to close. */
  readonly connection: { track(stream: ChangeStream): ChangeStream };
}

export interface LiveOperationsOptions {
  readonly registry: Registry;
  /** The gateway's persisted operations (the manifest, feature services included). */
  readonly manifest: PersistedQueryManifest;
  readonly apollo: ApolloServer<BaseContext>;
  /** Co-located with FAST_PATH: the store the compiled plans read. Absent: every run goes through the gateway. */
  readonly store?: OnlineStore | undefined;
  readonly config: Pick<Config, 'maxBatchIds' | 'maxQueryCost' | 'requestDeadlineMs'>;
  /** The clock staleness is judged by (the store's); default Date.now. */
  readonly clock?: () => number;
}

/** One update of a live operation, as the subscriber receives it. */
export interface LiveOperationUpdate {
  readonly revision: number;
  readonly result?: ResultDocument;
  readonly patch?: readonly PatchOperation[];
}

/** `{ data, errors? }`: what POST /graphql answers for the operation. */
export interface ResultDocument {
  readonly data?: unknown;
  readonly errors?: readonly unknown[];
}

export interface LiveOperationArgs {
  readonly operation: string;
  readonly variables?: Record<string, unknown> | null;
}

/** What one entity type of an operation reads: these ids, in these view versions. */
export interface WatchSet {
  readonly entity: string;
  readonly ids: readonly string[];
  readonly versions: readonly { readonly view: string; readonly version: number }[];
}

/** Per root field of a plan, the ids of the request (a list for a plural root, the one id of a singular one). */
export type RootIds = readonly (readonly string[] | string)[];

/**
 * What an operation reads, per entity type: the ids of every root field of that entity and the
 * view versions that decide what each root answers — its selected views, or every active view of
 * the entity when it selects none (they decide whether the entity exists: serving/plan.ts,
 * `existenceSlots`). Entities with no id requested are left out (nothing of them can change).
 */
export function watchSetOf(plan: Plan, ids: RootIds): WatchSet[] {
  const byEntity = new Map<string, { ids: Set<string>; versions: Map<ViewVersion, true> }>();
  plan.roots.forEach((root, r) => {
    const rootIds = ids[r]!;
    const list = typeof rootIds === 'string' ? [rootIds] : rootIds;
    if (list.length === 0) return;
    let entry = byEntity.get(root.entity.name);
    if (!entry) byEntity.set(root.entity.name, (entry = { ids: new Set(), versions: new Map() }));
    for (const id of list) entry.ids.add(id);
    for (const slot of root.existenceSlots) entry.versions.set(plan.views[slot]!, true);
  });
  return [...byEntity].map(([entity, { ids: set, versions }]) => ({
    entity,
    ids: [...set],
    versions: [...versions.keys()].map((v) => ({ view: v.viewName, version: v.version })),
  }));
}

/**
 * The ids of each root field of a compiled operation for these (coerced) variables: the root
 * field's `id`/`ids` argument, a variable or a literal (the only forms that compile).
 */
export function rootIdsOf(definition: OperationDefinitionNode, plan: Plan, variables: Readonly<Record<string, unknown>>): RootIds {
  const fields = definition.selectionSet.selections;
  return plan.roots.map((root, r) => {
    const field = fields[r];
    if (field?.kind !== Kind.FIELD || (field.alias?.value ?? field.name.value) !== root.responseKey) throw new Error(`${plan.name}: root ${r} is not ${root.responseKey}`);
    const value = field.arguments?.[0]?.value;
    const given = value?.kind === Kind.VARIABLE ? variables[value.name.value] : value ? valueFromASTUntyped(value) : undefined;
    if (root.plural) return Array.isArray(given) ? given.map(String) : given === undefined || given === null ? [] : [String(given)];
    return given === undefined || given === null ? [] : String(given);
  });
}

/** The earliest moment after `nowMs` at which a value of `result` turns stale (eventTime + TTL) or missing (expiryOf); null: none will. */
export function nextTimeChange(result: PlanResult, nowMs: number): number | null {
  let next = Infinity;
  result.plan.views.forEach((view, slot) => {
    const ttlMs = view.ttlSeconds * 1000;
    for (const read of result.reads[slot]!) {
      if (read === null || read instanceof Error) continue;
      const value = read as StoredFeatures;
      // Stale from the first millisecond past eventTime + TTL (store/freshness.ts isStale); gone at expiryOf.
      const at = value.stale ? expiryOf(view, value.eventTimeMs) : value.eventTimeMs + ttlMs + 1;
      if (at > nowMs && at < next) next = at;
    }
  });
  return next === Infinity ? null : next;
}

/** A manifest operation prepared for live runs. */
interface LiveOperationDefinition {
  readonly op: PersistedOperation;
  readonly definition: OperationDefinitionNode;
  /** Its plan (run on the store when co-located), or why it has none. */
  readonly compiled: CompiledOperation | string;
  readonly cost: (variables: Record<string, unknown>) => number;
}

/** Compiles plans only for their shape when no store is in process: running one is a bug. */
const planOnlyStore: OnlineStore = {
  kind: 'none',
  readSettled: () => Promise.reject(new Error('live operations: no store in this process')),
  read: () => Promise.reject(new Error('live operations: no store in this process')),
  write: () => Promise.reject(new Error('live operations: no store in this process')),
  ping: () => Promise.reject(new Error('live operations: no store in this process')),
  health: () => Promise.resolve([]),
  close: () => Promise.resolve(),
};

export class LiveOperations {
  private readonly byKey = new Map<string, LiveOperationDefinition>();
  private readonly names: string[] = [];
  /** The run opened while the subscribe message was checked, handed back when graphql-ws subscribes (one root field per subscription). */
  private readonly runs = new WeakMap<LiveContext, LiveRun>();

  constructor(private readonly options: LiveOperationsOptions) {
    const { registry, manifest, store, config } = options;
    for (const op of manifest.operations) {
      if (op.type !== 'query') continue;
      const document = parse(op.body);
      const definition = document.definitions.find((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION)!;
      const compiled = compileOperation(registry, op.name, op.body, store ?? planOnlyStore, config.maxBatchIds);
      const entry = { op, definition, compiled, cost: costFunction(document, definition) };
      this.byKey.set(op.name, entry);
      this.byKey.set(op.id, entry);
      this.names.push(op.name);
    }
  }

  /** The manifest queries that can be watched, by name (the subscription SDL lists them: schema/subscription-sdl.ts). */
  get operationNames(): readonly string[] {
    return this.names;
  }

  /** `Subscription.liveOperation`'s source stream: one run per subscription, opened when its request is checked and handed back after. */
  subscribe(args: LiveOperationArgs, context: LiveContext, schema: GraphQLSchema, hub: LiveHub): AsyncIterableIterator<LiveOperationUpdate> {
    let run = this.runs.get(context);
    if (!run) this.runs.set(context, (run = this.open(args, context, schema, hub)));
    return run;
  }

  /** Checks a subscription as POST /graphql checks the same request, opens its hub streams, and returns its updates. Throws a coded GraphQLError. */
  private open(args: LiveOperationArgs, context: LiveContext, schema: GraphQLSchema, hub: LiveHub): LiveRun {
    const { config } = this.options;
    const entry = this.byKey.get(args.operation);
    if (!entry) {
      throw refusal(ErrorCode.BadUserInput, `Unknown persisted operation "${args.operation}": name a query of the manifest by its name or id; known: ${this.names.join(', ')}`);
    }
    if (typeof entry.compiled === 'string') {
      throw refusal(ErrorCode.BadUserInput, `Persisted operation ${entry.op.name} cannot be watched live: it has no plan to derive what it reads from (${entry.compiled})`);
    }
    const compiled = entry.compiled;
    for (const view of compiled.views) {
      if (!mayReadView(context.principal, view)) throw refusal(ErrorCode.Forbidden, viewRefusalMessage(view), { view: view.viewName });
    }
    const raw = args.variables ?? {};
    // The coercion Apollo Server applies to the same request: the same errors, word for word.
    const coerced = getVariableValues(schema, entry.definition.variableDefinitions ?? [], raw, { maxErrors: 50 });
    if (coerced.errors) {
      rejectedRequests.inc({ code: ErrorCode.BadUserInput });
      throw new GraphQLError(coerced.errors.map((e) => e.message).join('\n'), { extensions: { code: ErrorCode.BadUserInput, operation: entry.op.name } });
    }
    const variables = coerced.coerced;
    const ids = rootIdsOf(entry.definition, compiled.plan, variables);
    const largest = Math.max(0, ...ids.map((list) => (typeof list === 'string' ? 1 : list.length)));
    if (largest > config.maxBatchIds) throw batchTooLargeError(largest, config.maxBatchIds);
    const cost = entry.cost(raw);
    if (cost > config.maxQueryCost) throw queryTooCostly(cost, config.maxQueryCost);

    // Streams first, then the first run: a change after this moment re-runs; one before it is in the store already.
    const streams = watchSetOf(compiled.plan, ids).map((watch) =>
      context.connection.track(hub.open({ entity: watch.entity, ids: watch.ids, versions: watch.versions }, watch.ids.length)));
    return new LiveRun(entry, compiled, variables, context.principal, streams, this.options);
  }
}

function refusal(code: string, message: string, extensions: Record<string, unknown> = {}): GraphQLError {
  rejectedRequests.inc({ code });
  return new GraphQLError(message, { extensions: { code, ...extensions } });
}

/** A change stream's pending `next()`, and its outcome once settled. */
interface Pending {
  settled: IteratorResult<FeatureChange> | undefined;
}

/**
 * A result with errors (a shard down, the deadline passed) changes when the store recovers, with no
 * change event to say so: such a result is run again this often until it has none.
 */
export const failedRetryMs = 1000;

/** setTimeout's longest delay (about 24.8 days); a later moment is re-armed when it fires. */
const maxTimerMs = 2 ** 31 - 1;

/**
 * One subscriber's live operation: an async iterator of updates that graphql-ws pulls one at a
 * time (after the previous one was sent), so changes that arrive meanwhile wait in the hub streams
 * and are coalesced into the next run. `return()` (the client completed, or its connection closed)
 * ends it at once, also while it waits.
 */
class LiveRun implements AsyncIterableIterator<LiveOperationUpdate> {
  private current: ResultDocument | undefined;
  private revision = 0;
  private readonly pending = new Map<ChangeStream, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private timeDue = false;
  private wake: (() => void) | null = null;
  private closed = false;
  private readonly clock: () => number;

  constructor(
    private readonly entry: LiveOperationDefinition,
    private readonly compiled: CompiledOperation,
    private readonly variables: Record<string, unknown>,
    private readonly principal: Principal | undefined,
    private readonly streams: readonly ChangeStream[],
    private readonly options: LiveOperationsOptions,
  ) {
    this.clock = options.clock ?? Date.now;
  }

  async next(): Promise<IteratorResult<LiveOperationUpdate>> {
    if (this.closed) return { value: undefined, done: true };
    if (this.current === undefined) {
      const first = await this.execute();
      if (this.closed) return { value: undefined, done: true };
      this.current = first;
      return { value: { revision: 0, result: first }, done: false };
    }
    for (;;) {
      const trigger = await this.nextTrigger();
      if (trigger === 'closed') {
        this.close();
        return { value: undefined, done: true };
      }
      this.drain();
      const next = await this.execute();
      if (this.closed) return { value: undefined, done: true };
      const patch = compare(this.current as object, next as object);
      if (patch.length === 0) continue;
      this.current = next;
      return { value: { revision: ++this.revision, patch }, done: false };
    }
  }

  return(): Promise<IteratorResult<LiveOperationUpdate>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(): Promise<IteratorResult<LiveOperationUpdate>> {
    return this.return();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<LiveOperationUpdate> {
    return this;
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    for (const stream of this.streams) stream.close();
    this.wake?.();
  }

  /** Waits for a change in any stream, the staleness timer, or the end (a stream ended: the connection is closing). */
  private async nextTrigger(): Promise<'change' | 'time' | 'closed'> {
    for (;;) {
      if (this.closed) return 'closed';
      if (this.timeDue) {
        this.timeDue = false;
        return 'time';
      }
      for (const pending of this.pending.values()) {
        if (pending.settled) return pending.settled.done ? 'closed' : 'change';
      }
      for (const stream of this.streams) {
        if (this.pending.has(stream)) continue;
        const pending: Pending = { settled: undefined };
        this.pending.set(stream, pending);
        void stream.next().then((result) => {
          pending.settled = result;
          this.wake?.();
        });
      }
      // A settled next() resolves in a microtask: look again before sleeping.
      await Promise.resolve();
      if ([...this.pending.values()].some((p) => p.settled) || this.timeDue || this.closed) continue;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }

  /** Takes every change already delivered or queued: the next run covers them all. */
  private drain(): void {
    for (const [stream, pending] of this.pending) {
      if (pending.settled && !pending.settled.done) this.pending.delete(stream);
    }
    for (const stream of this.streams) {
      if (this.pending.has(stream)) continue; // its next() waits: nothing is queued
      while (stream.length > 0) void stream.next();
    }
    this.timeDue = false;
  }

  /** Runs the operation as POST /graphql would answer it now, and arms the timer for its next change by time alone. */
  private async execute(): Promise<ResultDocument> {
    const { store, apollo, config } = this.options;
    const deadline = Deadline.after(config.requestDeadlineMs);
    try {
      let primed: PlanResult | undefined;
      if (store) {
        const result = await this.compiled.run(this.variables, undefined, deadline);
        if (result.kind === 'result') {
          this.armTimer(result, result.failed);
          if (!result.failed) return { data: graphqlData(result) };
          primed = result; // the gateway answers a partly failed result in its own words, from these reads
        }
      }
      const contextValue: Record<symbol, unknown> = { [trustedOperation]: true, [deadlineKey]: Deadline.after(config.requestDeadlineMs) };
      if (this.principal) contextValue[principalKey] = this.principal;
      if (primed) contextValue[primedReads] = primedReadsOf(primed);
      const response = await apollo.executeOperation({ query: this.entry.op.body, variables: this.variables }, { contextValue });
      if (response.body.kind !== 'single') throw new Error('the gateway answered with an incremental response');
      // Plain JSON, as the HTTP body carries it (no undefined members).
      const document = JSON.parse(JSON.stringify(response.body.singleResult)) as ResultDocument;
      if (!store && document.errors?.length) this.armTimer(undefined, true);
      return document;
    } catch (error) {
      log.error({ operation: this.entry.op.name, err: (error as Error).message }, 'live operation run failed');
      this.armTimer(undefined, true);
      return { data: null, errors: [{ message: `The operation could not be run: ${(error as Error).message}`, extensions: { code: 'INTERNAL_SERVER_ERROR' } }] };
    }
  }

  /** Arms the one timer for the next change by time alone of `result`, or for a retry soon if it `failed`. */
  private armTimer(result: PlanResult | undefined, failed: boolean): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.closed) return;
    const now = this.clock();
    const byTime = result ? nextTimeChange(result, now) : null;
    const at = failed ? Math.min(byTime ?? Infinity, now + failedRetryMs) : byTime;
    if (at === null) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timeDue = true;
      this.wake?.();
    }, Math.min(at - now, maxTimerMs));
    this.timer.unref();
  }
}

// --- the JSONObject scalar ------------------------------------------------------------------------

/** `JSONObject`'s input parsing (the SDL declares the scalar; schema.ts attaches these): a JSON object, nothing else. */
export function parseJsonObject(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TypeError(`JSONObject cannot represent a non-object value: ${JSON.stringify(value)}`);
  return value;
}

export function parseJsonObjectLiteral(ast: ValueNode, variables?: { readonly [name: string]: unknown } | null): unknown {
  if (ast.kind !== Kind.OBJECT) throw new TypeError(`JSONObject cannot represent a non-object value (${ast.kind})`);
  return valueFromASTUntyped(ast, variables);
}
