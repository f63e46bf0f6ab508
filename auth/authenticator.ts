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
  private readonly limiter = new RateLimiter();

  constructor(
    private readonly settings: AuthSettings,
    private readonly apiKeys: ApiKeys | null,
    private readonly jwt: JwtVerifier,
  ) {
    this.anonymous = settings.anonymousRoles === null ? null : { id: 'anonymous', roles: new Set(settings.anonymousRoles), via: 'anonymous' };
  }

  static fromSettings(settings: AuthSettings): Authenticator {
    return new Authenticator(settings, settings.apiKeysFile === null ? null : loadApiKeys(settings.apiKeysFile), new JwtVerifier(settings.jwt));
  }

  /** Throws AccessError: UNAUTHENTICATED (401) or RATE_LIMITED (429). */
  async authenticate(credentials: Credentials, clientAddress: string | undefined): Promise<Principal> {
    const { principal, rateLimitPerSecond, bucket } = await this.identify(credentials, clientAddress);
    const rate = rateLimitPerSecond ?? this.settings.rateLimitPerSecond;
    this.limiter.take(bucket, rate, rateLimitPerSecond === undefined ? this.settings.rateLimitBurst : rate);
    return principal;
  }

  private async identify(credentials: Credentials, clientAddress: string | undefined): Promise<{ principal: Principal; rateLimitPerSecond?: number; bucket: string }> {
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
      return { ...found, bucket: `key:${found.principal.id}` };
    }
    if (token !== undefined) {
      const principal = await this.jwt.verify(token);
      return { principal, bucket: `jwt:${principal.id}` };
    }
    if (!this.anonymous) throw unauthenticated('Credentials required: send an API key in x-api-key or a JWT as "authorization: Bearer <token>"');
    // Anonymous callers share nothing with each other: one bucket per client address.
    return { principal: this.anonymous, bucket: `anonymous:${clientAddress ?? 'unknown'}` };
  }
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
