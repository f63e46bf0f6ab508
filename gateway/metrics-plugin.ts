import type { ApolloServerPlugin, BaseContext } from '@apollo/server';
import { requestDuration } from '../runtime/metrics.js';
import { trustedOperation } from './authorization.js';

/**
 * Request duration by operation name. Persisted operations are labelled by
 * their manifest name; everything else shares the label "(adhoc)", so a
 * client inventing operation names cannot grow the metric without bound.
 * The gateway's own operations (warm-up, subscription entity reads, the
 * Feast door's federated reads: a trusted context) are not client requests
 * and are not counted; a door observes its requests under its own label.
 */
export function metricsPlugin(nameOf: (queryHash: string | undefined) => string | undefined): ApolloServerPlugin<BaseContext> {
  return {
    async requestDidStart({ contextValue }) {
      if ((contextValue as { [trustedOperation]?: boolean })[trustedOperation]) return {};
      const started = performance.now();
      return {
        async willSendResponse({ queryHash }) {
          requestDuration.observe({ operation: nameOf(queryHash) ?? '(adhoc)' }, (performance.now() - started) / 1000);
        },
      };
    },
  };
}
