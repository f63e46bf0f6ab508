import { composeServices } from '@apollo/composition';
import type { DocumentNode } from 'graphql';

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

/**
 * Composes the supergraph in-process with @apollo/composition from the SDL
 * the registry generates: no Rover, no network, the same result at build
 * time and at start-up.
 */
export function composeSupergraph(subgraphs: readonly SubgraphDefinition[]): string {
  const result = composeServices(subgraphs.map((s) => ({ name: s.name, typeDefs: s.typeDefs, url: s.url })));
  if (result.errors) throw new CompositionError(result.errors.map((e) => e.message));
  return result.supergraphSdl;
}
