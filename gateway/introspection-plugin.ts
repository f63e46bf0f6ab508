import type { ApolloServerPlugin, BaseContext } from '@apollo/server';
import { execute, Kind, type GraphQLSchema, type OperationDefinitionNode } from 'graphql';

/**
 * Answers introspection-only operations from a schema of our choosing: the
 * API schema plus the Subscription type the gateway hosts itself. Without it
 * Apollo Sandbox (which learns the schema by introspection over HTTP) would
 * not know `featureChanged` exists. Runs after validation, so
 * INTROSPECTION=false still refuses introspection.
 */
export function introspectionPlugin(schemaOf: () => GraphQLSchema | undefined): ApolloServerPlugin<BaseContext> {
  return {
    async requestDidStart() {
      return {
        async responseForOperation({ document, operation, request, response }) {
          const schema = schemaOf();
          if (!schema || !operation || !introspectionOnly(operation)) return null;
          const result = await execute({ schema, document, variableValues: request.variables, operationName: request.operationName });
          const singleResult = { data: result.data as Record<string, unknown> | null | undefined, ...(result.errors ? { errors: result.errors.map((e) => e.toJSON()) } : {}) };
          return { http: response.http, body: { kind: 'single', singleResult } };
        },
      };
    },
  };
}

function introspectionOnly(operation: OperationDefinitionNode): boolean {
  return operation.operation === 'query' && operation.selectionSet.selections.every((s) => s.kind === Kind.FIELD && s.name.value.startsWith('__'));
}
