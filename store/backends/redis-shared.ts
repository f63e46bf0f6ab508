import type { ClientTls } from '../../runtime/config-values.js';
import { redactUrl } from '../../runtime/config-values.js';

/**
 * What the Redis backends (one node or the hash ring in redis.ts, Redis
 * Cluster in redis-cluster.ts) share: the compare-and-set script, the
 * credentials of a connection, and the words of a failure.
 */

/**
 * Compare-and-set of a materialized value and its state, atomic on the
 * server. KEYS: state, value (one slot on a cluster: decision 0022). ARGV:
 * expected version, new state, state expiry (ms), new value ('' = keep),
 * value expiry (ms). The version is the state's first line.
 */
export const casScript = `
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = tonumber(string.match(current, '^(%d+)')) or 0 end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PXAT', ARGV[5]) end
return 1`;

export interface RedisCredentials {
  /** ACL user; with a password only, AUTH <password> (requirepass). */
  readonly username?: string;
  readonly password?: string;
  /** CA, client certificate, key (ioredis does not turn TLS on by a URL's scheme). */
  readonly tls?: ClientTls;
}

/** Credentials and TLS for one node's URL: the shared ones, unless the URL carries its own password. */
export function connectionSecurity(url: string, options: RedisCredentials): RedisCredentials {
  const parsed = new URL(url);
  const out: { username?: string; password?: string; tls?: ClientTls } = {};
  if (!parsed.password) {
    if (options.username !== undefined) out.username = options.username;
    if (options.password !== undefined) out.password = options.password;
  }
  if (parsed.protocol === 'rediss:') out.tls = { ...options.tls };
  return out;
}

/** `host:port` of a Redis URL: the shard's name in metrics, errors and /readyz. */
export function shardName(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '6379'}`;
  } catch {
    throw new Error(`not a Redis URL: ${JSON.stringify(redactUrl(url))} (expected redis://host:port)`);
  }
}

/**
 * The reason of a failed call. ioredis says only "Stream isn't writeable" (or
 * "Connection is closed.") while it cannot connect; the cause (bad
 * credentials, a TLS failure, a refused connection) is what an operator needs
 * in the error and in /readyz.
 */
export function redisReason(error: unknown, connection: { readonly status: string; readonly lastError?: string | undefined }): string {
  let reason = error instanceof Error ? error.message : String(error);
  if (connection.status !== 'ready' && connection.lastError && !reason.includes(connection.lastError)) reason += ` (last connection error: ${connection.lastError})`;
  return reason;
}
