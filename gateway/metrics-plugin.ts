import type { ApolloServerPlugin, BaseContext } from '@apollo/server';
import { requestDuration } from '../runtime/metrics.js';

/**
 * Request duration by operation name. Persisted operations are labelled by
 * their manifest name; everything else shares the label "(adhoc)", so a
 * client inventing operation names cannot grow the metric without bound.
 */
export function metricsPlugin(nameOf: (queryHash: string | undefined) => string | undefined): ApolloServerPlugin<BaseContext> {
  return {
    async requestDidStart() {
      const started = performance.now();
      return {
        async willSendResponse({ queryHash }) {
          requestDuration.observe({ operation: nameOf(queryHash) ?? '(adhoc)' }, (performance.now() - started) / 1000);
        },
      };
    },
  };
}
