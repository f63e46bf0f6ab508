import { ApiKeys, API_KEY_PREFIX, loadApiKeys } from './api-keys.js';
import { unauthenticated } from './errors.js';
import { JwtVerifier, type JwtSettings } from './jwt.js';
import type { Principal, Role } from './principal.js';
import { RateLimiter } from './rate-limiter.js';

/**
 * Turns a request's credentials into a Principal and charges it one request
 * against its rate limit. The same for HTTP requests (headers) and for
 * graphql-ws connections (the connection_init payload, else the upgrade
 * request's headers).
 *
 *   x-api-key: <key>                an API key
 *   authorization: Bearer <jwt>     a JWT (a bearer value that looks like an API key is taken as one)
 *   neither                         the anonymous principal, with ANONYMOUS_ROLES, or 401 if those are `none`
 */
export interface AuthSettings {
  readonly apiKeysFile: string | null;
  readonly jwt: JwtSettings;
  /** The roles of requests without credentials; null: such requests are refused. */
  readonly anonymousRoles: readonly Role[] | null;
  /** Requests per second per principal (0: unlimited); an API key may set its own. */
  readonly rateLimitPerSecond: number;
  readonly rateLimitBurst: number;
}

export interface Credentials {
  readonly apiKey?: string | undefined;
  readonly authorization?: string | undefined;
}

export class Authenticator {
  private readonly anonymous: Principal | null;
  /** The anonymous principal's identity, made once: no credentials is the common case. */
  private readonly anonymousIdentity: Identity | null;
  private readonly limiter = new RateLimiter();

  constructor(
    private readonly settings: AuthSettings,
    private readonly apiKeys: ApiKeys | null,
    private readonly jwt: JwtVerifier,
  ) {
    this.anonymous = settings.anonymousRoles === null ? null : { id: 'anonymous', roles: new Set(settings.anonymousRoles), via: 'anonymous' };
    this.anonymousIdentity = this.anonymous ? { principal: this.anonymous, kind: 'anonymous' } : null;
  }

  static fromSettings(settings: AuthSettings): Authenticator {
    return new Authenticator(settings, settings.apiKeysFile === null ? null : loadApiKeys(settings.apiKeysFile), new JwtVerifier(settings.jwt));
  }

  /** Throws AccessError: UNAUTHENTICATED (401) or RATE_LIMITED (429). */
  async authenticate(credentials: Credentials, clientAddress: string | undefined): Promise<Principal> {
    return this.authenticateNow(credentials, clientAddress);
  }

  /**
   * `authenticate` without a promise where none is needed: an API key or no credentials are
   * decided synchronously (the principal, or a thrown AccessError); only a JWT, whose
   * verification may fetch keys, answers a promise. For the HTTP front, which then skips a
   * promise chain per request.
   */
  authenticateNow(credentials: Credentials, clientAddress: string | undefined): Principal | Promise<Principal> {
    const identity = this.identify(credentials);
    if (identity instanceof Promise) return identity.then((found) => this.charge(found, clientAddress));
    return this.charge(identity, clientAddress);
  }

  /** Charges one request to the principal's rate limit (RATE_LIMITED when exhausted) and answers it. */
  private charge(found: Identity, clientAddress: string | undefined): Principal {
    const rate = found.rateLimitPerSecond ?? this.settings.rateLimitPerSecond;
    // Unlimited (the default): no bucket, and no bucket name to build per request.
    if (!(rate > 0)) return found.principal;
    const bucket = found.kind === 'anonymous' ? `anonymous:${clientAddress ?? 'unknown'}` : `${found.kind}:${found.principal.id}`;
    this.limiter.take(bucket, rate, found.rateLimitPerSecond === undefined ? this.settings.rateLimitBurst : rate);
    return found.principal;
  }

  private identify(credentials: Credentials): Identity | Promise<Identity> {
    let apiKey = credentials.apiKey;
    let token: string | undefined;
    if (credentials.authorization !== undefined) {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(credentials.authorization);
      if (!match) throw unauthenticated('Malformed authorization header: expected "Bearer <token>"');
      if (match[1]!.startsWith(API_KEY_PREFIX)) {
        if (apiKey !== undefined && apiKey !== match[1]) throw unauthenticated('Two different API keys sent (x-api-key and authorization); send one');
        apiKey = match[1];
      } else {
        if (apiKey !== undefined) throw unauthenticated('Both an API key and a bearer token sent; send one credential');
        token = match[1];
      }
    }
    if (apiKey !== undefined) {
      const found = this.apiKeys?.lookup(apiKey);
      if (!found) throw unauthenticated('Unknown API key');
      return found.rateLimitPerSecond === undefined ? { principal: found.principal, kind: 'key' } : { principal: found.principal, kind: 'key', rateLimitPerSecond: found.rateLimitPerSecond };
    }
    if (token !== undefined) return this.jwt.verify(token).then((principal): Identity => ({ principal, kind: 'jwt' }));
    if (!this.anonymous) throw unauthenticated('Credentials required: send an API key in x-api-key or a JWT as "authorization: Bearer <token>"');
    // Anonymous callers share nothing with each other: one bucket per client address (see `charge`).
    return this.anonymousIdentity!;
  }
}

/** Who a request is, and which rate-limit bucket it is charged to (`<kind>:<id>`, anonymous: per client address). */
interface Identity {
  readonly principal: Principal;
  readonly kind: 'key' | 'jwt' | 'anonymous';
  readonly rateLimitPerSecond?: number;
}

/** The credentials of an HTTP request or a WebSocket upgrade request. */
export function credentialsFromHeaders(headers: Readonly<Record<string, string | string[] | undefined>>): Credentials {
  return { apiKey: single(headers['x-api-key']), authorization: single(headers.authorization) };
}

/**
 * The credentials of a graphql-ws connection_init payload (browsers cannot set
 * headers on a WebSocket), e.g. `{ "x-api-key": "…" }` or
 * `{ "authorization": "Bearer …" }`; keys are matched without regard to case.
 */
export function credentialsFromPayload(payload: unknown): Credentials | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  let apiKey: string | undefined;
  let authorization: string | undefined;
  for (const [key, value] of Object.entries(payload)) {
    const name = key.toLowerCase();
    if (typeof value !== 'string') continue;
    if (name === 'x-api-key' || name === 'apikey') apiKey = value;
    if (name === 'authorization') authorization = value;
  }
  return apiKey === undefined && authorization === undefined ? undefined : { apiKey, authorization };
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
