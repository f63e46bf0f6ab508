import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../runtime/errors.js';
import { isRole, type Principal, type Role } from './principal.js';

/**
 * API keys, stored only as SHA-256 hashes. A key is 32 random bytes, so a
 * fast hash is enough: a slow password hash (scrypt, bcrypt) protects
 * low-entropy secrets against guessing and would cost milliseconds on every
 * inference request; nothing guesses 256 random bits. Lookup is by hash, so
 * no comparison against a stored secret happens at all (nothing to time).
 *
 * The keys file (API_KEYS_FILE, YAML or JSON):
 *
 *   keys:
 *     - name: ranking-service          # the principal id, in logs and metrics
 *       sha256: 5f1c…                  # hex SHA-256 of the key (npm run auth -- new-key)
 *       roles: [inference]
 *       rateLimitPerSecond: 5000       # optional, overrides RATE_LIMIT_PER_SECOND
 */
export interface ApiKeyEntry {
  readonly name: string;
  readonly sha256: string;
  readonly roles: readonly Role[];
  readonly rateLimitPerSecond?: number;
}

export const API_KEY_PREFIX = 'fgk_';

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A new random key and its hash (the key is shown once; only the hash is stored). */
export function newApiKey(): { key: string; sha256: string } {
  const key = API_KEY_PREFIX + randomBytes(32).toString('base64url');
  return { key, sha256: hashApiKey(key) };
}

export class ApiKeys {
  private readonly byHash: ReadonlyMap<string, { principal: Principal; entry: ApiKeyEntry }>;

  constructor(entries: readonly ApiKeyEntry[]) {
    this.byHash = new Map(
      entries.map((entry) => [entry.sha256, { entry, principal: { id: entry.name, roles: new Set(entry.roles), via: 'api-key' as const } }]),
    );
  }

  get size(): number {
    return this.byHash.size;
  }

  /** The key's principal and its own rate limit, or undefined for an unknown key. */
  lookup(key: string): { principal: Principal; rateLimitPerSecond?: number } | undefined {
    const found = this.byHash.get(hashApiKey(key));
    return found && { principal: found.principal, rateLimitPerSecond: found.entry.rateLimitPerSecond };
  }
}

/** Reads and checks a keys file; every problem names the entry and is reported against API_KEYS_FILE. */
export function loadApiKeys(file: string): ApiKeys {
  let raw: unknown;
  try {
    raw = parseYaml(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError('API_KEYS_FILE', `cannot read ${file}: ${(error as Error).message}`);
  }
  return new ApiKeys(parseApiKeys(raw, file));
}

export function parseApiKeys(raw: unknown, file: string): ApiKeyEntry[] {
  const fail = (message: string): never => {
    throw new ConfigError('API_KEYS_FILE', `${file}: ${message}`);
  };
  const keys = (raw as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) return fail('expected an object with a `keys:` list');
  const names = new Set<string>();
  const hashes = new Set<string>();
  return keys.map((k: unknown, i): ApiKeyEntry => {
    const at = `keys[${i}]`;
    if (typeof k !== 'object' || k === null) return fail(`${at}: expected an object with name, sha256 and roles`);
    const { name, sha256, roles, rateLimitPerSecond, ...rest } = k as Record<string, unknown>;
    if (Object.keys(rest).length) fail(`${at}: unknown field(s) ${Object.keys(rest).join(', ')} (expected name, sha256, roles, rateLimitPerSecond)`);
    if (typeof name !== 'string' || !/^[\w.@-]{1,100}$/.test(name)) fail(`${at}.name: expected 1-100 letters, digits, _ . @ -`);
    if (names.has(name as string)) fail(`${at}.name: "${name as string}" is used twice`);
    names.add(name as string);
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) {
      fail(`${at}.sha256: expected the 64-hex-digit SHA-256 of the key (never the key itself; see npm run auth -- new-key)`);
    }
    if (hashes.has(sha256 as string)) fail(`${at}.sha256: the same key hash is listed twice`);
    hashes.add(sha256 as string);
    if (!Array.isArray(roles) || roles.length === 0 || !roles.every((r) => typeof r === 'string' && isRole(r))) {
      fail(`${at}.roles: expected a non-empty list of inference, analyst, dashboard, admin`);
    }
    if (rateLimitPerSecond !== undefined && (typeof rateLimitPerSecond !== 'number' || !(rateLimitPerSecond > 0))) {
      fail(`${at}.rateLimitPerSecond: expected a positive number`);
    }
    return {
      name: name as string,
      sha256: sha256 as string,
      roles: roles as Role[],
      ...(rateLimitPerSecond === undefined ? {} : { rateLimitPerSecond: rateLimitPerSecond as number }),
    };
  });
}
