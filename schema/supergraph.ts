import { composeServices } from '@apollo/composition';
import { parse, type DocumentNode, type GraphQLSchema } from 'graphql';
import { entitySubgraphSdl } from './sdl.js';
import type { Registry } from './types.js';

export interface SubgraphDefinition {
  readonly name: string;
  readonly typeDefs: DocumentNode;
  readonly url: string;
}

export class CompositionError extends Error {
  override name = 'CompositionError';
  constructor(readonly errors: readonly string[]) {
    super(`supergraph composition failed:\n  ${errors.join('\n  ')}`);
  }
}

export interface ComposedSupergraph {
  readonly supergraphSdl: string;
  /** What clients see: the supergraph without federation's join types and directives. */
  readonly apiSchema: GraphQLSchema;
}

/**
 * Composes the supergraph in-process with @apollo/composition from the SDL
 * the registry generates: no Rover, no network, the same result at build
 * time and at start-up.
 */
export function composeSupergraph(subgraphs: readonly SubgraphDefinition[]): string {
  return compose(subgraphs).supergraphSdl;
}

/**
 * The supergraph of a registry (one subgraph per entity, as the gateway
 * composes them) and its API schema: what registry plans compare and check
 * the persisted operations against. The URLs are placeholders; nothing is called.
 */
export function composeRegistry(registry: Registry): ComposedSupergraph {
  const result = compose(registry.entities.map((e) => ({ name: e.name, typeDefs: parse(entitySubgraphSdl(e)), url: `in-process://${e.name}` })));
  return { supergraphSdl: result.supergraphSdl, apiSchema: result.schema.toAPISchema().toGraphQLJSSchema() };
}

function compose(subgraphs: readonly SubgraphDefinition[]) {
  const result = composeServices(subgraphs.map((s) => ({ name: s.name, typeDefs: s.typeDefs, url: s.url })));
  if (result.errors) throw new CompositionError(result.errors.map((e) => e.message));
  return result;
}
