import { toGraphQLError } from '../subgraphs/loaders.js';
import { entityOutcome, idAt, readAt, rowCount, type PlanResult } from './plan.js';

/** One error of a response, as GraphQL JSON writes it. */
export interface ResponseError {
  readonly message: string;
  readonly path: readonly (string | number)[];
  readonly extensions: Readonly<Record<string, unknown>>;
}

/**
 * The errors of a partly failed result, as the generic federated path reports them for the same
 * request (the failure rule of subgraphs/factory.ts): an entity none of whose existence views has
 * a value and one of which failed is null with that failure at its path (`["users", 2]`,
 * `["user"]`); an entity that exists has each failed view field null with its failure at the
 * field's path (`["items", 0, "itemStats"]`). Message and extensions are the loaders' own
 * (`toGraphQLError`: code, store, shard, deadlineMs), plus the `serviceName` the gateway adds:
 * the entity's subgraph. Ordered by root field, row, then field; the generic path's order follows
 * which of its subgraph fetches finished first.
 *
 * For doors without a generic path to hand a partly failed request to (Arrow); the JSON door
 * hands it over, so its errors are the generic path's by construction.
 */
export function responseErrors(result: PlanResult): ResponseError[] {
  const errors: ResponseError[] = [];
  if (!result.failed) return errors;
  const roots = result.plan.roots;
  for (let r = 0; r < roots.length; r++) {
    const root = roots[r]!;
    const rows = rowCount(result, r);
    for (let k = 0; k < rows; k++) {
      const id = idAt(result, r, k);
      const at = root.plural ? [root.responseKey, k] : [root.responseKey];
      const outcome = entityOutcome(result, root, id);
      if (outcome instanceof Error) {
        errors.push(responseError(outcome, at, root.entity.name));
        continue;
      }
      if (outcome === null) continue;
      for (const field of root.fields) {
        if (field.kind !== 'view') continue;
        const read = readAt(result, field.slot, id);
        if (read instanceof Error) errors.push(responseError(read, [...at, field.responseKey], root.entity.name));
      }
    }
  }
  return errors;
}

function responseError(error: Error, path: readonly (string | number)[], serviceName: string): ResponseError {
  const graphql = toGraphQLError(error);
  // Apollo Server gives an error without a code INTERNAL_SERVER_ERROR.
  const code = graphql.extensions.code === undefined ? { code: 'INTERNAL_SERVER_ERROR' } : {};
  return { message: graphql.message, path, extensions: { ...code, ...graphql.extensions, serviceName } };
}
