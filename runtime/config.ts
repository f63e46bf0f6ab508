import fs from 'node:fs';
import { ConfigError } from './errors.js';
import { fromRoot } from './paths.js';
import { defaultBreaker } from '../store/backends/redis.js';
import type { StoreConfig } from '../store/create-store.js';
import type { AuthSettings } from '../auth/authenticator.js';
import { isRole, ROLES, type Role } from '../auth/principal.js';

/**
 * The one typed configuration object, read from environment variables and an
 * optional JSON file (`CONFIG_FILE`, keys named like the variables; the
 * environment wins). Every value is checked at start-up and an error names
 * the variable. README.md, "Configuration", documents each entry.
 */
export interface Config {
  readonly host: string;
  readonly port: number;
  readonly registryFile: string;
  readonly manifestFile: string;
  readonly store: StoreConfig;
  /** Entity name → subgraph URL; empty means co-located subgraphs. */
  readonly subgraphUrls: Readonly<Record<string, string>>;
  readonly safelist: boolean;
  /** Answer compiled persisted operations without the planner (co-located only). */
  readonly fastPath: boolean;
  /** Gateway processes sharing the port (node:cluster); 1 = no cluster. */
  readonly workers: number;
  readonly introspection: boolean;
  readonly sandbox: boolean;
  readonly maxBatchIds: number;
  /** How long one GraphQL request may wait for the store in all, from its arrival (REQUEST_DEADLINE_MS). */
  readonly requestDeadlineMs: number;
  readonly maxQueryDepth: number;
  readonly maxBodyBytes: number;
  /** Change events one subscription may have waiting; when full the oldest is dropped. */
  readonly subscriptionQueueSize: number;
  readonly maxSubscriptionsPerConnection: number;
  readonly demoSeed: boolean;
  readonly demoWriter: boolean;
  readonly demoWriteIntervalMs: number;
  readonly embeddedSeedFile: string | null;
  readonly debugErrors: boolean;
  /** Kafka bootstrap servers; null: the embedded event log (in-process only). */
  readonly kafkaBrokers: readonly string[] | null;
  readonly materializerGroup: string;
  /** Demo raw events per second fed to the in-process materializer of `npm start` (0: none). */
  readonly demoEventsPerSecond: number;
  readonly auth: AuthSettings;
  /** Entities × features one operation may ask for. */
  readonly maxQueryCost: number;
  /**
   * Distributed shape: the gateway signs the caller's principal for the
   * subgraphs with it (HMAC-SHA256), and subgraphs trust only signed principals.
   */
  readonly internalAuthSecret: string | null;
  /** How far ahead of the server's clock a pushed row's event time may be (clock skew of the pushing service). */
  readonly pushMaxFutureMs: number;
}

type Env = Readonly<Record<string, string | undefined>>;

export function loadConfig(env: Env = process.env): Config {
  const merged = { ...readConfigFile(env.CONFIG_FILE), ...definedOnly(env) };
  const get = (name: string): string | undefined => {
    const v = merged[name];
    return v === undefined || v === '' ? undefined : v;
  };

  const redisUrl = get('REDIS_URL');
  const shardUrls = get('REDIS_SHARD_URLS');
  if (redisUrl && shardUrls) throw new ConfigError('REDIS_SHARD_URLS', 'set either REDIS_URL (one node) or REDIS_SHARD_URLS (sharded), not both');
  const commandTimeoutMs = int(get, 'STORE_TIMEOUT_MS', 250, 1, 60_000);
  const breaker = {
    errorPercent: int(get, 'STORE_BREAKER_ERROR_PERCENT', defaultBreaker.errorPercent, 1, 99),
    minCalls: int(get, 'STORE_BREAKER_MIN_CALLS', defaultBreaker.minCalls, 1, 100_000),
    resetMs: int(get, 'STORE_BREAKER_RESET_MS', defaultBreaker.resetMs, 10, 600_000),
  };
  let store: StoreConfig = { kind: 'embedded' };
  if (redisUrl) store = { kind: 'redis', urls: [redisUrl], commandTimeoutMs, breaker };
  if (shardUrls) store = { kind: 'redis', urls: list('REDIS_SHARD_URLS', shardUrls), commandTimeoutMs, breaker };
  for (const url of store.kind === 'redis' ? store.urls : []) {
    if (!/^rediss?:\/\/[^\s/]+(\/\d+)?$/.test(url)) {
      throw new ConfigError(redisUrl ? 'REDIS_URL' : 'REDIS_SHARD_URLS', `not a Redis URL: ${JSON.stringify(url)} (expected redis://host:port)`);
    }
  }
  const embedded = store.kind === 'embedded';

  return {
    host: get('HOST') ?? '127.0.0.1',
    port: int(get, 'PORT', 4000, 0, 65535),
    registryFile: get('REGISTRY_FILE') ?? fromRoot('schema', 'registry.yaml'),
    manifestFile: get('PERSISTED_QUERY_MANIFEST') ?? fromRoot('schema', 'persisted-query-manifest.json'),
    store,
    subgraphUrls: subgraphs(get('SUBGRAPH_URLS')),
    safelist: bool(get, 'SAFELIST', false),
    fastPath: bool(get, 'FAST_PATH', true),
    workers: int(get, 'WORKERS', 1, 1, 64),
    introspection: bool(get, 'INTROSPECTION', true),
    sandbox: bool(get, 'SANDBOX', true),
    maxBatchIds: int(get, 'MAX_BATCH_IDS', 1000, 1, 100_000),
    requestDeadlineMs: int(get, 'REQUEST_DEADLINE_MS', 1000, 1, 600_000),
    maxQueryDepth: int(get, 'MAX_QUERY_DEPTH', 12, 2, 100),
    maxBodyBytes: int(get, 'MAX_BODY_BYTES', 262_144, 1024, 64 * 1024 * 1024),
    subscriptionQueueSize: int(get, 'SUBSCRIPTION_QUEUE_SIZE', 256, 1, 100_000),
    maxSubscriptionsPerConnection: int(get, 'MAX_SUBSCRIPTIONS_PER_CONNECTION', 50, 1, 10_000),
    demoSeed: bool(get, 'DEMO_SEED', embedded && !get('EMBEDDED_SEED_FILE')),
    demoWriter: bool(get, 'DEMO_WRITER', embedded && !get('EMBEDDED_SEED_FILE')),
    demoWriteIntervalMs: int(get, 'DEMO_WRITE_INTERVAL_MS', 5000, 100, 3_600_000),
    embeddedSeedFile: get('EMBEDDED_SEED_FILE') ?? null,
    debugErrors: bool(get, 'DEBUG_ERRORS', false),
    kafkaBrokers: brokers(get('KAFKA_BROKERS')),
    materializerGroup: get('MATERIALIZER_GROUP') ?? 'feature-materializer',
    auth: authSettings(get),
    maxQueryCost: int(get, 'MAX_QUERY_COST', 50_000, 1, 100_000_000),
    internalAuthSecret: secret(get, 'INTERNAL_AUTH_SECRET'),
    demoEventsPerSecond: int(get, 'DEMO_EVENTS_PER_SECOND', embedded && !get('EMBEDDED_SEED_FILE') ? 100 : 0, 0, 100_000),
    pushMaxFutureMs: int(get, 'PUSH_MAX_FUTURE_MS', 300_000, 0, 86_400_000),
  };
}

function authSettings(get: (n: string) => string | undefined): AuthSettings {
  const apiKeysFile = get('API_KEYS_FILE') ?? null;
  if (apiKeysFile !== null && !fs.existsSync(apiKeysFile)) throw new ConfigError('API_KEYS_FILE', `no such file: ${apiKeysFile}`);
  const jwt = {
    hs256Secret: secret(get, 'JWT_HS256_SECRET'),
    jwksFile: get('JWT_JWKS_FILE') ?? null,
    issuer: get('JWT_ISSUER') ?? null,
    audience: get('JWT_AUDIENCE') ?? null,
    rolesClaim: get('JWT_ROLES_CLAIM') ?? 'roles',
  };
  if (jwt.hs256Secret !== null && Buffer.byteLength(jwt.hs256Secret) < 32) {
    throw new ConfigError('JWT_HS256_SECRET', 'must be at least 32 bytes (HS256 keys shorter than the hash are guessable)');
  }
  if (jwt.jwksFile !== null && !fs.existsSync(jwt.jwksFile)) throw new ConfigError('JWT_JWKS_FILE', `no such file: ${jwt.jwksFile}`);
  const anyCredentials = apiKeysFile !== null || jwt.hs256Secret !== null || jwt.jwksFile !== null;
  // Zero-setup default: with no credentials configured, everyone may read and subscribe, nobody may push.
  const anonymousText = get('ANONYMOUS_ROLES') ?? (anyCredentials ? 'none' : 'inference,analyst,dashboard');
  let anonymousRoles: Role[] | null = null;
  if (anonymousText.trim().toLowerCase() !== 'none') {
    anonymousRoles = list('ANONYMOUS_ROLES', anonymousText).map((r) => {
      if (!isRole(r)) throw new ConfigError('ANONYMOUS_ROLES', `unknown role ${JSON.stringify(r)} (roles: ${ROLES.join(', ')}, or none)`);
      return r;
    });
  }
  const rateLimitPerSecond = int(get, 'RATE_LIMIT_PER_SECOND', 0, 0, 10_000_000);
  return {
    apiKeysFile,
    jwt,
    anonymousRoles,
    rateLimitPerSecond,
    rateLimitBurst: int(get, 'RATE_LIMIT_BURST', Math.max(1, rateLimitPerSecond), 1, 10_000_000),
  };
}

/** A secret from `NAME` or from the file named by `NAME_FILE` (trailing newline dropped), never both. */
function secret(get: (n: string) => string | undefined, name: string): string | null {
  const inline = get(name);
  const file = get(`${name}_FILE`);
  if (inline !== undefined && file !== undefined) throw new ConfigError(name, `set ${name} or ${name}_FILE, not both`);
  if (file === undefined) return inline ?? null;
  try {
    return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (error) {
    throw new ConfigError(`${name}_FILE`, `cannot read ${file}: ${(error as Error).message}`);
  }
}

function readConfigFile(file: string | undefined): Record<string, string> {
  if (!file) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError('CONFIG_FILE', `cannot read ${file}: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('CONFIG_FILE', `${file} must hold a JSON object of variable names to values`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) out[k] = Array.isArray(v) ? v.join(',') : String(v);
  return out;
}

function definedOnly(env: Env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

function int(get: (n: string) => string | undefined, name: string, fallback: number, min: number, max: number): number {
  const text = get(name);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(name, `expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return n;
}

function bool(get: (n: string) => string | undefined, name: string, fallback: boolean): boolean {
  const text = get(name)?.toLowerCase();
  if (text === undefined) return fallback;
  if (['1', 'true', 'yes', 'on'].includes(text)) return true;
  if (['0', 'false', 'no', 'off'].includes(text)) return false;
  throw new ConfigError(name, `expected true or false, got ${JSON.stringify(text)}`);
}

function list(name: string, text: string): string[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new ConfigError(name, 'expected a comma-separated list');
  return items;
}

function brokers(text: string | undefined): string[] | null {
  if (!text) return null;
  const items = list('KAFKA_BROKERS', text);
  for (const item of items) {
    if (!/^[^\s:/]+:\d{1,5}$/.test(item)) throw new ConfigError('KAFKA_BROKERS', `expected host:port[,host:port…], got ${JSON.stringify(item)}`);
  }
  return items;
}

function subgraphs(text: string | undefined): Record<string, string> {
  if (!text) return {};
  const out: Record<string, string> = {};
  for (const item of list('SUBGRAPH_URLS', text)) {
    const m = /^(\w+)=(https?:\/\/\S+)$/.exec(item);
    if (!m) throw new ConfigError('SUBGRAPH_URLS', `expected entity=http://host:port/graphql, got ${JSON.stringify(item)}`);
    out[m[1]!] = m[2]!;
  }
  return out;
}
