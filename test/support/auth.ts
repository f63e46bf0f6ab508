import fs from 'node:fs';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { newApiKey } from '../../auth/api-keys.js';
import type { Role } from '../../auth/principal.js';

/**
 * Credentials for tests: an API keys file with one key per role (plus one
 * with a tiny rate limit), an HS256 secret and an RS256 key pair whose public
 * half is a local JWKS file, and token minting. The env it returns configures
 * a gateway that accepts all of them and refuses anonymous callers.
 */
export interface TestCredentials {
  readonly env: Record<string, string>;
  readonly keys: Record<Role | 'limited', string>;
  hs256(claims: Record<string, unknown>, options?: { expiresIn?: string | number; secret?: string }): Promise<string>;
  rs256(claims: Record<string, unknown>, options?: { expiresIn?: string | number; kid?: string }): Promise<string>;
}

export const HS256_SECRET = 'a-test-secret-that-is-at-least-32-bytes-long';

export async function testCredentials(dir: string): Promise<TestCredentials> {
  fs.mkdirSync(dir, { recursive: true });
  const roles: Role[] = ['inference', 'analyst', 'dashboard', 'admin'];
  const keys = {} as Record<Role | 'limited', string>;
  const entries: string[] = [];
  for (const role of roles) {
    const { key, sha256 } = newApiKey();
    keys[role] = key;
    entries.push(`  - { name: ${role}-service, sha256: ${sha256}, roles: [${role}] }`);
  }
  const limited = newApiKey();
  keys.limited = limited.key;
  entries.push(`  - { name: limited-service, sha256: ${limited.sha256}, roles: [inference], rateLimitPerSecond: 2 }`);
  const keysFile = path.join(dir, 'api-keys.yaml');
  fs.writeFileSync(keysFile, `keys:\n${entries.join('\n')}\n`);

  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const jwksFile = path.join(dir, 'jwks.json');
  fs.writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));

  const sign = (claims: Record<string, unknown>, expiresIn: string | number) =>
    new SignJWT(claims).setIssuedAt().setIssuer('test-issuer').setAudience('feature-gateway').setExpirationTime(expiresIn);
  return {
    env: {
      API_KEYS_FILE: keysFile,
      JWT_HS256_SECRET: HS256_SECRET,
      JWT_JWKS_FILE: jwksFile,
      JWT_ISSUER: 'test-issuer',
      JWT_AUDIENCE: 'feature-gateway',
    },
    keys,
    hs256: (claims, options = {}) =>
      sign(claims, options.expiresIn ?? '5m').setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(options.secret ?? HS256_SECRET)),
    rs256: (claims, options = {}) =>
      sign(claims, options.expiresIn ?? '5m').setProtectedHeader({ alg: 'RS256', kid: options.kid ?? 'test-key' }).sign(privateKey),
  };
}
