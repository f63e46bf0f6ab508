import { Kind, type DocumentNode, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionSetNode } from 'graphql';
import { forbidden, type AccessError } from './errors.js';
import type { Principal, Role } from './principal.js';

/**
 * What each role may do (README, "Roles"). Roles add up: a principal may do
 * what any of its roles allows. `admin` may do everything.
 *
 *   persisted     a manifest operation (by hash or by its exact text)
 *   ad-hoc        any other query
 *   introspection a query selecting __schema or __type
 *   subscription  a subscription over graphql-ws (featureChanged, any selection)
 *   live          a live persisted operation over graphql-ws (`liveOperation`: manifest operations only)
 *   push          a mutation (the push API)
 *   sandbox       the Apollo Sandbox landing page
 */
export type OperationKind = 'persisted' | 'ad-hoc' | 'introspection' | 'subscription' | 'live' | 'push' | 'sandbox';

export const ALLOWED: Readonly<Record<OperationKind, readonly Role[]>> = {
  persisted: ['inference', 'analyst', 'admin'],
  'ad-hoc': ['analyst', 'admin'],
  introspection: ['analyst', 'admin'],
  subscription: ['dashboard', 'analyst', 'admin'],
  // Inference services read manifest operations only, and so does `liveOperation`: it is their one subscription.
  live: ['inference', 'dashboard', 'analyst', 'admin'],
  push: ['admin'],
  sandbox: ['analyst', 'admin'],
};

const DESCRIBED: Readonly<Record<OperationKind, string>> = {
  persisted: 'run persisted operations',
  'ad-hoc': 'run ad-hoc (non-persisted) queries',
  introspection: 'introspect the schema',
  subscription: 'subscribe to feature changes',
  live: 'subscribe to live persisted operations',
  push: 'push feature values (mutations)',
  sandbox: 'use Apollo Sandbox',
};

export function mayDo(principal: Principal | undefined, kind: OperationKind): boolean {
  if (principal === undefined) return false;
  // A loop, not `some` with a closure: this runs twice on every request.
  const allowed = ALLOWED[kind];
  for (let i = 0; i < allowed.length; i++) if (principal.roles.has(allowed[i]!)) return true;
  return false;
}

/** undefined when allowed; otherwise a FORBIDDEN error saying which roles would be. */
export function authorize(principal: Principal | undefined, kind: OperationKind): AccessError | undefined {
  if (mayDo(principal, kind)) return undefined;
  const has = principal && principal.roles.size > 0 ? `has role(s) ${[...principal.roles].join(', ')}` : 'has no role';
  return forbidden(`Not allowed to ${DESCRIBED[kind]}: principal "${principal?.id ?? 'unknown'}" ${has}; needs one of ${ALLOWED[kind].join(', ')}`);
}

/** Why a caller may not read a view: the same words on every door (GraphQL's field error, the Feast endpoint's refusal). */
export function viewRefusalMessage(view: { readonly viewName: string; readonly readRoles: readonly Role[] | null }): string {
  return `Not allowed to read feature view ${view.viewName}: it is readable by ${(view.readRoles ?? []).join(', ')} only`;
}

/** A view with no `readRoles` in the registry is readable by whoever may run the operation; admins read every view. */
export function mayReadView(principal: Principal | undefined, view: { readonly readRoles: readonly Role[] | null }): boolean {
  if (view.readRoles === null) return true;
  if (principal === undefined) return false;
  return principal.roles.has('admin') || view.readRoles.some((role) => principal.roles.has(role));
}

/** The Subscription root field of live persisted operations (gateway/subscriptions/live-operations.ts). */
export const liveOperationField = 'liveOperation';

/**
 * A graphql-ws connection (or a subscribe message, before its document is parsed): let in whoever
 * may subscribe to anything, feature changes or live persisted operations; what it subscribes to
 * is checked by kind once parsed (`kindsOf`).
 */
export function authorizeSubscriber(principal: Principal | undefined): AccessError | undefined {
  return mayDo(principal, 'subscription') ? undefined : authorize(principal, 'live');
}

/** The kinds an operation needs; `persisted`: it is a manifest operation. */
export function kindsOf(document: DocumentNode, operation: OperationDefinitionNode, persisted: boolean): OperationKind[] {
  if (operation.operation === 'mutation') return ['push'];
  if (operation.operation === 'subscription') {
    // `liveOperation` runs manifest operations only: a kind of its own, open to inference services too.
    const roots = rootFieldNames(document, operation.selectionSet, new Set());
    return roots.length > 0 && roots.every((name) => name === liveOperationField) ? ['live'] : ['subscription'];
  }
  const roots = rootFieldNames(document, operation.selectionSet, new Set());
  const introspects = roots.some((name) => name === '__schema' || name === '__type');
  // An introspection-only query (what Sandbox sends) needs introspection rights alone.
  if (introspects && roots.every((name) => name.startsWith('__'))) return ['introspection'];
  const kinds: OperationKind[] = [persisted ? 'persisted' : 'ad-hoc'];
  if (introspects) kinds.push('introspection');
  return kinds;
}

/** Root field names, through fragments (validation has rejected fragment cycles; `seen` guards anyway). */
function rootFieldNames(document: DocumentNode, set: SelectionSetNode, seen: Set<string>): string[] {
  const names: string[] = [];
  for (const s of set.selections) {
    if (s.kind === Kind.FIELD) names.push(s.name.value);
    else if (s.kind === Kind.INLINE_FRAGMENT) names.push(...rootFieldNames(document, s.selectionSet, seen));
    else if (!seen.has(s.name.value)) {
      seen.add(s.name.value);
      const fragment = document.definitions.find((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION && d.name.value === s.name.value);
      if (fragment) names.push(...rootFieldNames(document, fragment.selectionSet, seen));
    }
  }
  return names;
}
