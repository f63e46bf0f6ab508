/**
 * Who is calling, as every part of the serving path sees it. Authentication
 * (API key, JWT, or none) turns a request into a Principal; authorization
 * only ever looks at its roles.
 */
export const ROLES = ['inference', 'analyst', 'dashboard', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface Principal {
  /** Stable and loggable: the key's name, the token's `sub`, or `anonymous`. Never a secret. */
  readonly id: string;
  readonly roles: ReadonlySet<Role>;
  readonly via: 'api-key' | 'jwt' | 'anonymous' | 'internal';
}

/**
 * Where a principal lives in a GraphQL request context (the gateway's and,
 * co-located, the subgraphs'): a symbol, so no client-supplied JSON can set it.
 */
export const principalKey = Symbol.for('feature-gateway.principal');

export function principalOf(context: unknown): Principal | undefined {
  if (typeof context !== 'object' || context === null) return undefined;
  return (context as { [principalKey]?: Principal })[principalKey];
}

export function hasRole(principal: Principal | undefined, ...roles: readonly Role[]): boolean {
  return principal !== undefined && roles.some((role) => principal.roles.has(role));
}

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}
