import { GraphQLError } from 'graphql';
import { ErrorCode } from '../../runtime/errors.js';
import { featureQuery, type FeatureQuery } from '../../schema/feature-queries.js';
import type { Registry } from '../../schema/types.js';
import type { FeatureValue, FeatureValues } from '../../store/codec.js';
import type { ReadResult } from '../../store/online-store.js';
import { FeastError, plainError } from './errors.js';
import { distinctIds, type FeastReads } from './read.js';
import type { FeastPlan, FeastRequest } from './request.js';

/**
 * A Feast request read through the generic federated path: the plan as the
 * GraphQL query of its view versions (schema/feature-queries.ts), executed
 * by the gateway's planner over the subgraphs, its answer turned into the
 * same `FeastReads` the direct store read gives. It serves the distributed
 * shape (the gateway holds no store) and FAST_PATH=false, and it is what
 * the differential test holds the direct read equal to: a value, a stale
 * value (`stale: true`, its `eventTime`), null (missing; an entity null
 * when none of its views has a value), or an error at the view's path.
 */
export interface ExecutionAnswer {
  readonly data?: Record<string, unknown> | null;
  readonly errors?: readonly { readonly message: string; readonly path?: readonly (string | number)[]; readonly extensions?: Record<string, unknown> }[];
}
export type Execute = (query: string, variables: Record<string, unknown>) => Promise<ExecutionAnswer>;

export class FederatedFeastReads {
  private readonly queries = new WeakMap<FeastPlan, FeatureQuery>();

  constructor(private readonly registry: Registry) {}

  /** The reads, or a FeastError when the query failed as a whole (a limit, a planner error). */
  async read(request: FeastRequest, execute: Execute): Promise<FeastReads | FeastError> {
    const { plan, keyOf } = request;
    let query = this.queries.get(plan);
    if (!query) {
      query = featureQuery(this.registry, 'FeastOnlineFeatures', plan.views.map((version, slot) => ({
        version, features: plan.columns.filter((c) => c.slot === slot).map((c) => c.feature.name),
      })));
      this.queries.set(plan, query);
    }
    const distinct = distinctIds(request);
    const variables: Record<string, unknown> = {};
    for (const root of query.roots) {
      const slot = plan.entities.indexOf(root.entity);
      variables[root.variable] = distinct[keyOf[slot]!]!.ids;
    }
    const answer = await execute(query.body, variables);
    const data = answer.data;
    const errors = answer.errors ?? [];
    if (!data) {
      const first = errors[0];
      const code = String(first?.extensions?.code ?? 'INTERNAL_SERVER_ERROR');
      const status = Number((first?.extensions?.http as { status?: number } | undefined)?.status ?? 500);
      return plainError(status, code as ErrorCode, first?.message ?? 'the federated read answered no data');
    }
    // Errors by path: `<root>.<index>` (the entity failed) and `<root>.<index>.<view field>`.
    const errorAt = new Map<string, Error>();
    for (const e of errors) {
      if (!e.path) continue;
      // The planner names the subgraph it asked; the direct read has no subgraph, and the answers are to be the same.
      const { serviceName: _subgraph, ...extensions } = e.extensions ?? {};
      errorAt.set(e.path.join('.'), new GraphQLError(e.message, { extensions }));
    }
    const results = plan.views.map((version, slot) => {
      const root = query.roots.find((r) => r.entity === plan.entities[slot])!;
      const field = root.views.find((v) => v.version === version)!.field;
      const entities = (data[root.field] ?? []) as (Record<string, unknown> | null)[];
      const features = plan.columns.filter((c) => c.slot === slot).map((c) => c.feature.name);
      return distinct[keyOf[slot]!]!.ids.map((_, i): ReadResult | Error => {
        const entity = entities[i];
        const view = entity ? (entity[field] as { eventTime: string | null; stale: boolean } & Record<string, unknown> | null) : null;
        if (view === null || view === undefined) return errorAt.get(`${root.field}.${i}.${field}`) ?? errorAt.get(`${root.field}.${i}`) ?? null;
        const values: FeatureValues = {};
        for (const f of features) values[f] = (view[f] ?? null) as FeatureValue | null;
        return { values, eventTimeMs: Date.parse(view.eventTime!), stale: view.stale };
      });
    });
    return { results, rowAt: plan.views.map((_, slot) => distinct[keyOf[slot]!]!.rowAt) };
  }
}
