import { createHmac, timingSafeEqual } from 'node:crypto';
import { isRole, type Principal } from './principal.js';

/**
 * The caller's principal as the gateway hands it to a subgraph process
 * (distributed shape): a header with its id and roles, signed with
 * HMAC-SHA256 under INTERNAL_AUTH_SECRET so a subgraph can tell the gateway
 * from anyone else who reaches its port. Without a secret the header is
 * trusted as is: subgraphs must then be reachable only from the gateway
 * (README, "Security"). The signed value carries the time it was made, and a
 * subgraph refuses one older than a minute, so a header seen on the wire
 * cannot be replayed later.
 */
const MAX_AGE_MS = 60_000;
export const PRINCIPAL_HEADER = 'x-feature-gateway-principal';
export const SIGNATURE_HEADER = 'x-feature-gateway-signature';

export function principalHeaders(principal: Principal, secret: string | null, now: number = Date.now()): Record<string, string> {
  const value = Buffer.from(JSON.stringify({ id: principal.id, roles: [...principal.roles], via: principal.via, iat: now })).toString('base64url');
  return { [PRINCIPAL_HEADER]: value, ...(secret === null ? {} : { [SIGNATURE_HEADER]: sign(value, secret) }) };
}

/** The principal a request from the gateway carries; undefined if none, or if its signature does not verify. */
export function principalFromHeaders(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  secret: string | null,
  now: number = Date.now(),
): Principal | undefined {
  const value = headers[PRINCIPAL_HEADER];
  if (typeof value !== 'string') return undefined;
  if (secret !== null) {
    const signature = headers[SIGNATURE_HEADER];
    if (typeof signature !== 'string') return undefined;
    const expected = Buffer.from(sign(value, secret));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  }
  try {
    const parsed = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as { id?: unknown; roles?: unknown; via?: unknown; iat?: unknown };
    if (typeof parsed.id !== 'string' || !Array.isArray(parsed.roles)) return undefined;
    if (secret !== null && (typeof parsed.iat !== 'number' || Math.abs(now - parsed.iat) > MAX_AGE_MS)) return undefined;
    const via = parsed.via === 'api-key' || parsed.via === 'jwt' || parsed.via === 'anonymous' ? parsed.via : 'internal';
    return { id: parsed.id, roles: new Set(parsed.roles.filter((r): r is string => typeof r === 'string').filter(isRole)), via };
  } catch {
    return undefined; // not base64url JSON: treated like no principal at all
  }
}

function sign(value: string, secret: string): string {
  return createHmac('sha256', secret).update(value).digest('base64url');
}
