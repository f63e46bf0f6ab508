import fs from 'node:fs';
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import { ConfigError } from '../runtime/errors.js';
import { unauthenticated } from './errors.js';
import { isRole, type Principal, type Role } from './principal.js';

/**
 * Bearer tokens: JWTs signed with HS256 (a shared secret) or RS256 (keys from
 * a local JWKS file: no network fetch on the request path, and key rotation
 * is a file deploy). `jose` does the cryptography and the claim checks; an
 * algorithm is accepted only when its key is configured, so a token cannot
 * pick its own verification (no "alg: none", no RS/HS confusion).
 */
export interface JwtSettings {
  readonly hs256Secret: string | null;
  readonly jwksFile: string | null;
  readonly issuer: string | null;
  readonly audience: string | null;
  /** The claim holding the roles: a list, or a space-separated string. */
  readonly rolesClaim: string;
}

const CLOCK_TOLERANCE_SECONDS = 5;
/** Verified tokens kept by their text until they expire, so a client's repeated token costs one verification. */
const CACHE_LIMIT = 10_000;

export class JwtVerifier {
  private readonly secret: Uint8Array | null;
  private readonly jwks: ReturnType<typeof createLocalJWKSet> | null;
  private readonly algorithms: string[];
  private readonly cache = new Map<string, { principal: Principal; expiresAtMs: number }>();

  constructor(private readonly settings: JwtSettings) {
    this.secret = settings.hs256Secret === null ? null : new TextEncoder().encode(settings.hs256Secret);
    this.jwks = settings.jwksFile === null ? null : createLocalJWKSet(readJwks(settings.jwksFile));
    this.algorithms = [...(this.secret ? ['HS256'] : []), ...(this.jwks ? ['RS256'] : [])];
  }

  get enabled(): boolean {
    return this.algorithms.length > 0;
  }

  async verify(token: string): Promise<Principal> {
    if (!this.enabled) throw unauthenticated('This gateway accepts no bearer tokens (no JWT_HS256_SECRET or JWT_JWKS_FILE configured); send an API key in x-api-key');
    const cached = this.cache.get(token);
    if (cached && cached.expiresAtMs > Date.now()) return cached.principal;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(
        token,
        (header, jws) => {
          if (header.alg === 'HS256' && this.secret) return this.secret;
          if (header.alg === 'RS256' && this.jwks) return this.jwks(header, jws);
          throw new joseErrors.JOSEAlgNotAllowed(`algorithm ${String(header.alg)} is not accepted`);
        },
        {
          algorithms: this.algorithms,
          clockTolerance: CLOCK_TOLERANCE_SECONDS,
          ...(this.settings.issuer ? { issuer: this.settings.issuer } : {}),
          ...(this.settings.audience ? { audience: this.settings.audience } : {}),
        },
      ));
    } catch (error) {
      throw unauthenticated(`Invalid bearer token: ${describeJoseError(error, this.algorithms)}`);
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') throw unauthenticated('Invalid bearer token: it has no `sub` (subject) claim');
    const principal: Principal = { id: payload.sub, roles: rolesOf(payload[this.settings.rolesClaim]), via: 'jwt' };
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    // Tokens without `exp` are cached for a minute at most, so a changed key set takes effect.
    this.cache.set(token, { principal, expiresAtMs: Math.min(payload.exp ? payload.exp * 1000 : Infinity, Date.now() + 60_000) });
    return principal;
  }
}

/** Known roles of the claim; other strings are ignored (a token may carry roles of other systems). */
function rolesOf(claim: unknown): ReadonlySet<Role> {
  const items = Array.isArray(claim) ? claim : typeof claim === 'string' ? claim.split(/\s+/) : [];
  return new Set(items.filter((r): r is Role => typeof r === 'string' && isRole(r)));
}

function describeJoseError(error: unknown, accepted: readonly string[]): string {
  if (error instanceof joseErrors.JWTExpired) return 'it has expired';
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `claim "${error.claim}" ${error.reason === 'check_failed' ? 'is not accepted' : error.reason}`;
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return 'the signature does not verify';
  if (error instanceof joseErrors.JWKSNoMatchingKey) return 'no key of the JWKS matches its `kid`/algorithm';
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return `its algorithm is not accepted (accepted: ${accepted.join(', ')})`;
  if (error instanceof joseErrors.JWSInvalid || error instanceof joseErrors.JWTInvalid) return 'it is not a well-formed JWT';
  return error instanceof Error ? error.message : String(error);
}

function readJwks(file: string): JSONWebKeySet {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError('JWT_JWKS_FILE', `cannot read ${file}: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as { keys?: unknown }).keys)) {
    throw new ConfigError('JWT_JWKS_FILE', `${file} is not a JWKS (expected {"keys": [...]})`);
  }
  return parsed as JSONWebKeySet;
}
