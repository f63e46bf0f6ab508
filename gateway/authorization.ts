import type http from 'node:http';
import type { ApolloServerPlugin, BaseContext } from '@apollo/server';
import { GraphQLError } from 'graphql';
import { credentialsFromHeaders, type Authenticator } from '../auth/authenticator.js';
import type { AccessError } from '../auth/errors.js';
import { authorize, kindsOf, mayDo } from '../auth/policy.js';
import { principalOf, type Principal } from '../auth/principal.js';
import { ErrorCode } from '../runtime/errors.js';
import type { Admission, Authenticate, Refusal } from '../runtime/graphql-http.js';
import { rejectedRequests } from '../runtime/metrics.js';
import type { PersistedQueries } from './persisted-queries.js';

/**
 * The gateway's three access checks, cheapest first (README, "Security"):
 *
 * 1. `authenticate`: credentials from the headers → principal, charged against
 *    its rate limit, before a byte of the body is read;
 * 2. `admission`: a principal that may not run ad-hoc queries (inference,
 *    dashboard) sends manifest operations only, refused before parsing;
 * 3. `authorizationPlugin`: after parsing and validation, what the operation
 *    does (persisted or ad-hoc query, introspection, push) against the roles.
 *
 * Per-view read roles are checked where the values are resolved, so that a
 * view the caller may not read is an error on its field alone
 * (subgraphs/factory.ts; the fast path hands such requests to the generic path).
 */

/** Set (to true) in a request context by the gateway for its own operations: warm-up, subscription entity reads. */
export const trustedOperation = Symbol.for('feature-gateway.trusted-operation');

/** The principal of the gateway's own operations (never reachable by a client). */
export const gatewayPrincipal: Principal = { id: 'feature-gateway', roles: new Set(['admin']), via: 'internal' };

export function gatewayAuthentication(authenticator: Authenticator): Authenticate {
  // Synchronous unless a JWT must be verified: the HTTP front awaits only a promise (graphql-http.ts).
  const sandboxCheck = (principal: Principal): Principal => {
    const refusal = authorize(principal, 'sandbox');
    if (refusal) throw refusal;
    return principal;
  };
  return (req: http.IncomingMessage, landingPage: boolean) => {
    const principal = authenticator.authenticateNow(credentialsFromHeaders(req.headers), req.socket.remoteAddress);
    if (!landingPage) return principal;
    return principal instanceof Promise ? principal.then(sandboxCheck) : sandboxCheck(principal);
  };
}

export function gatewayAdmission(persisted: PersistedQueries): Admission {
  return (operation, principal) => {
    // Analysts and admins may send any operation, also in safelist mode (ARCHITECTURE.md, decision 4).
    if (mayDo(principal, 'ad-hoc')) return undefined;
    if (persisted.manifestIdOf(operation) !== undefined) return undefined;
    if (persisted.safelist) return persisted.safelistRefusal;
    const roles = principal && principal.roles.size > 0 ? `role(s) ${[...principal.roles].join(', ')}` : 'no role';
    return {
      status: 403,
      code: ErrorCode.Forbidden,
      message:
        `Not allowed to run operations outside the persisted-query manifest: principal "${principal?.id ?? 'unknown'}" has ${roles}; ` +
        'ad-hoc queries need analyst or admin, pushes (mutations) need admin',
    };
  };
}

export function asRefusal(error: AccessError): Refusal {
  return { code: error.code, status: error.status, message: error.message };
}

export function authorizationPlugin(persisted: PersistedQueries): ApolloServerPlugin<BaseContext> {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ contextValue, document, operation, queryHash }) {
          if (!operation || (contextValue as { [trustedOperation]?: boolean })[trustedOperation]) return;
          const principal = principalOf(contextValue);
          for (const kind of kindsOf(document, operation, persisted.nameOf(queryHash) !== undefined)) {
            const refusal = authorize(principal, kind);
            if (refusal) {
              rejectedRequests.inc({ code: ErrorCode.Forbidden });
              throw new GraphQLError(refusal.message, { extensions: { code: refusal.code, http: { status: refusal.status } } });
            }
          }
        },
      };
    },
  };
}
