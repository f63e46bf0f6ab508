import crypto from 'node:crypto';
import fs from 'node:fs';
import { ConfigError } from './errors.js';
import { fromRoot } from './paths.js';
import { defaultBreaker } from '../store/backends/redis.js';
import type { RedisStoreConfig, StoreConfig } from '../store/create-store.js';
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
  /** HTTPS (and wss) on the serving port; null: plain HTTP. */
  readonly tls: ServerTls | null;
  /** Browser origins allowed by CORS: '*' (any), a list, or null (no CORS headers at all). */
  readonly corsOrigins: '*' | readonly string[] | null;
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
  /** Deepest nesting of `{`, `[` and `(` in a query text, checked before parsing. */
  readonly maxQueryNesting: number;
  readonly maxBodyBytes: number;
  /** Change events one subscription may have waiting; when full the oldest is dropped. */
  readonly subscriptionQueueSize: number;
  readonly maxSubscriptionsPerConnection: number;
  /** Bytes one subscription connection may hold in its socket's send buffer before its sends pause. */
  readonly subscriptionSendBufferBytes: number;
  /** A subscription connection whose sends stay paused this long is closed (4413). */
  readonly subscriptionStallTimeoutMs: number;
  readonly demoSeed: boolean;
  readonly demoWriter: boolean;
  readonly demoWriteIntervalMs: number;
  readonly embeddedSeedFile: string | null;
  readonly debugErrors: boolean;
  /** Kafka bootstrap servers; null: the embedded event log (in-process only). */
  readonly kafkaBrokers: readonly string[] | null;
  readonly materializerGroup: string;
  /** TCP connect timeout to one Kafka broker. */
  readonly kafkaConnectionTimeoutMs: number;
  /** Longest backoff between retries of one Kafka request and between restarts of the materializer's consumer. */
  readonly kafkaRetryMaxMs: number;
  /** From SIGTERM to exit: past it the process exits 1 with a log line, whatever is still draining. */
  readonly shutdownTimeoutMs: number;
  /** From SIGTERM until the gateway stops listening, with /readyz answering 503 meanwhile, so load balancers stop sending first. */
  readonly shutdownReadinessDelayMs: number;
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
  /** TLS and SASL of the Kafka clients (eventlog/kafka-log.ts turns it into kafkajs options). */
  readonly kafkaSecurity: KafkaSecurity;
}

/** PEM text read from TLS_CERT_FILE / TLS_KEY_FILE / TLS_CA_FILE, checked to belong together. */
export interface ServerTls {
  readonly cert: string;
  readonly key: string;
  /** With a CA, clients must present a certificate it signed (mutual TLS). */
  readonly ca: string | null;
}

/** Client-side TLS material (PEM text); each part optional. */
export interface ClientTls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

export type KafkaSaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';

export interface KafkaSecurity {
  /** null: plaintext connections. */
  readonly ssl: ClientTls | null;
  readonly sasl: { readonly mechanism: KafkaSaslMechanism; readonly username: string; readonly password: string } | null;
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
  const urls = redisUrl ? [redisUrl] : shardUrls ? list('REDIS_SHARD_URLS', shardUrls) : null;
  if (urls) {
    for (const url of urls) {
      if (!/^rediss?:\/\/[^\s/]+(\/\d+)?$/.test(url)) {
        // A URL may hold a password: it is never echoed (the message goes to logs).
        throw new ConfigError(redisUrl ? 'REDIS_URL' : 'REDIS_SHARD_URLS', `not a Redis URL: ${JSON.stringify(redactUrl(url))} (expected redis://host:port)`);
      }
    }
    store = { kind: 'redis', urls, commandTimeoutMs, breaker, ...redisSecurity(get, urls, redisUrl ? 'REDIS_URL' : 'REDIS_SHARD_URLS') };
  } else {
    for (const name of ['REDIS_USERNAME', 'REDIS_PASSWORD', 'REDIS_PASSWORD_FILE', 'REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY_FILE']) {
      if (get(name)) throw new ConfigError(name, 'only meaningful with REDIS_URL or REDIS_SHARD_URLS');
    }
  }
  const embedded = store.kind === 'embedded';

  return {
    host: get('HOST') ?? '127.0.0.1',
    port: int(get, 'PORT', 4000, 0, 65535),
    tls: serverTls(get),
    corsOrigins: corsOrigins(get('CORS_ORIGINS')),
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
    // Capped well below the ~1000 levels at which graphql-js and the query planner overflow the stack.
    maxQueryNesting: int(get, 'MAX_QUERY_NESTING', 64, 8, 256),
    maxBodyBytes: int(get, 'MAX_BODY_BYTES', 262_144, 1024, 64 * 1024 * 1024),
    subscriptionQueueSize: int(get, 'SUBSCRIPTION_QUEUE_SIZE', 256, 1, 100_000),
    maxSubscriptionsPerConnection: int(get, 'MAX_SUBSCRIPTIONS_PER_CONNECTION', 50, 1, 10_000),
    subscriptionSendBufferBytes: int(get, 'SUBSCRIPTION_SEND_BUFFER_BYTES', 1_048_576, 1024, 1024 * 1024 * 1024),
    subscriptionStallTimeoutMs: int(get, 'SUBSCRIPTION_STALL_TIMEOUT_MS', 10_000, 100, 3_600_000),
    demoSeed: bool(get, 'DEMO_SEED', embedded && !get('EMBEDDED_SEED_FILE')),
    demoWriter: bool(get, 'DEMO_WRITER', embedded && !get('EMBEDDED_SEED_FILE')),
    demoWriteIntervalMs: int(get, 'DEMO_WRITE_INTERVAL_MS', 5000, 100, 3_600_000),
    embeddedSeedFile: get('EMBEDDED_SEED_FILE') ?? null,
    debugErrors: bool(get, 'DEBUG_ERRORS', false),
    kafkaBrokers: brokers(get('KAFKA_BROKERS')),
    materializerGroup: get('MATERIALIZER_GROUP') ?? 'feature-materializer',
    auth: authSettings(get),
    maxQueryCost: int(get, 'MAX_QUERY_COST', 50_000, 1, 100_000_000),
    internalAuthSecret: internalSecret(get),
    kafkaConnectionTimeoutMs: int(get, 'KAFKA_CONNECTION_TIMEOUT_MS', 3000, 100, 120_000),
    kafkaRetryMaxMs: int(get, 'KAFKA_RETRY_MAX_MS', 2000, 100, 300_000),
    shutdownTimeoutMs: int(get, 'SHUTDOWN_TIMEOUT_MS', 25_000, 1000, 3_600_000),
    shutdownReadinessDelayMs: int(get, 'SHUTDOWN_READINESS_DELAY_MS', 0, 0, 600_000),
    demoEventsPerSecond: int(get, 'DEMO_EVENTS_PER_SECOND', embedded && !get('EMBEDDED_SEED_FILE') ? 100 : 0, 0, 100_000),
    kafkaSecurity: kafkaSecurity(get),
    pushMaxFutureMs: int(get, 'PUSH_MAX_FUTURE_MS', 300_000, 0, 86_400_000),
  };
}


function authSettings(get: (n: string) => string | undefined): AuthSettings {
  const apiKeysFile = get('API_KEYS_FILE') ?? null;
  if (apiKeysFile !== null && !fs.existsSync(apiKeysFile)) throw new ConfigError('API_KEYS_FILE', `no such file: ${apiKeysFile}`);
  const jwt = {
    hs256Secret: secret(get, 'JWT_HS256_SECRET') ?? null,
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
  // Zero-setup default: with no credentials configured, everyone may read and subscribe, nobody may push;
  // in safelist mode not as an analyst (analysts are exempt from the safelist, which would then bind no one).
  const safelist = bool(get, 'SAFELIST', false);
  const anonymousText = get('ANONYMOUS_ROLES') ?? (anyCredentials ? 'none' : safelist ? 'inference,dashboard' : 'inference,analyst,dashboard');
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

type Get = (name: string) => string | undefined;

/** The file named by variable `name`, as text; undefined when the variable is unset. */
function fileOf(get: Get, name: string): string | undefined {
  const file = get(name);
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(name, `cannot read ${file}: ${(error as Error).message}`);
  }
}

/** A secret given directly (`NAME`) or in a file (`NAME_FILE`, trailing newline dropped), not both. */
function secret(get: Get, name: string): string | undefined {
  const direct = get(name);
  const fromFile = fileOf(get, `${name}_FILE`);
  if (direct !== undefined && fromFile !== undefined) throw new ConfigError(`${name}_FILE`, `set either ${name} or ${name}_FILE, not both`);
  const value = direct ?? fromFile?.replace(/\r?\n$/, '');
  if (value !== undefined && value === '') throw new ConfigError(`${name}_FILE`, 'the file is empty');
  return value;
}

function serverTls(get: Get): ServerTls | null {
  const cert = fileOf(get, 'TLS_CERT_FILE');
  const key = fileOf(get, 'TLS_KEY_FILE');
  const ca = fileOf(get, 'TLS_CA_FILE');
  if (cert === undefined && key === undefined) {
    if (ca !== undefined) throw new ConfigError('TLS_CA_FILE', 'client certificates need TLS: set TLS_CERT_FILE and TLS_KEY_FILE too');
    return null;
  }
  if (cert === undefined) throw new ConfigError('TLS_CERT_FILE', 'TLS_KEY_FILE is set: set TLS_CERT_FILE too (both or neither)');
  if (key === undefined) throw new ConfigError('TLS_KEY_FILE', 'TLS_CERT_FILE is set: set TLS_KEY_FILE too (both or neither)');
  checkKeyPair(cert, key, 'TLS_CERT_FILE', 'TLS_KEY_FILE');
  if (ca !== undefined) certificate(ca, 'TLS_CA_FILE');
  return { cert, key, ca: ca ?? null };
}

function certificate(pem: string, variable: string): crypto.X509Certificate {
  try {
    return new crypto.X509Certificate(pem);
  } catch (error) {
    throw new ConfigError(variable, `not a PEM certificate: ${(error as Error).message}`);
  }
}

/** Fails at start-up, naming the variable, on an unreadable certificate or key or a key of another certificate. */
function checkKeyPair(certPem: string, keyPem: string, certVariable: string, keyVariable: string): void {
  const cert = certificate(certPem, certVariable);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (error) {
    throw new ConfigError(keyVariable, `not a PEM private key (an encrypted key is not supported): ${(error as Error).message}`);
  }
  if (!cert.checkPrivateKey(key)) throw new ConfigError(keyVariable, `the key does not match the certificate in ${certVariable} (subject ${cert.subject.replace(/\n/g, ', ')})`);
}

/** Client TLS material from `<prefix>CA_FILE`, `<prefix>CERT_FILE`, `<prefix>KEY_FILE`. */
function clientTls(get: Get, prefix: string): ClientTls {
  const ca = fileOf(get, `${prefix}CA_FILE`);
  const cert = fileOf(get, `${prefix}CERT_FILE`);
  const key = fileOf(get, `${prefix}KEY_FILE`);
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(cert === undefined ? `${prefix}CERT_FILE` : `${prefix}KEY_FILE`, `a client certificate needs both ${prefix}CERT_FILE and ${prefix}KEY_FILE`);
  }
  if (ca !== undefined) certificate(ca, `${prefix}CA_FILE`);
  if (cert !== undefined && key !== undefined) checkKeyPair(cert, key, `${prefix}CERT_FILE`, `${prefix}KEY_FILE`);
  return { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}) };
}

function redisSecurity(get: Get, urls: readonly string[], urlVariable: string): Pick<RedisStoreConfig, 'username' | 'password' | 'tls'> {
  const username = get('REDIS_USERNAME');
  const password = secret(get, 'REDIS_PASSWORD');
  if (username !== undefined && password === undefined) throw new ConfigError('REDIS_USERNAME', 'an ACL user needs REDIS_PASSWORD or REDIS_PASSWORD_FILE');
  const tls = clientTls(get, 'REDIS_TLS_');
  if (Object.keys(tls).length > 0 && !urls.some((u) => u.startsWith('rediss://'))) {
    throw new ConfigError(Object.keys(tls).includes('ca') ? 'REDIS_TLS_CA_FILE' : 'REDIS_TLS_CERT_FILE', `TLS files are for rediss:// URLs; ${urlVariable} has none`);
  }
  return {
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(Object.keys(tls).length > 0 ? { tls } : {}),
  };
}

function kafkaSecurity(get: Get): KafkaSecurity {
  const tlsFiles = clientTls(get, 'KAFKA_SSL_');
  const sslOn = bool(get, 'KAFKA_SSL', Object.keys(tlsFiles).length > 0);
  if (!sslOn && Object.keys(tlsFiles).length > 0) throw new ConfigError('KAFKA_SSL', 'KAFKA_SSL_* files are set but KAFKA_SSL is false');
  const mechanismText = get('KAFKA_SASL_MECHANISM')?.toLowerCase();
  const username = get('KAFKA_SASL_USERNAME');
  const password = secret(get, 'KAFKA_SASL_PASSWORD');
  let sasl: KafkaSecurity['sasl'] = null;
  if (mechanismText === undefined) {
    if (username !== undefined || password !== undefined) throw new ConfigError('KAFKA_SASL_MECHANISM', 'SASL credentials are set: choose plain, scram-sha-256 or scram-sha-512');
  } else {
    if (!['plain', 'scram-sha-256', 'scram-sha-512'].includes(mechanismText)) {
      throw new ConfigError('KAFKA_SASL_MECHANISM', `expected plain, scram-sha-256 or scram-sha-512, got ${JSON.stringify(mechanismText)}`);
    }
    if (username === undefined) throw new ConfigError('KAFKA_SASL_USERNAME', `SASL ${mechanismText} needs a user name`);
    if (password === undefined) throw new ConfigError('KAFKA_SASL_PASSWORD', `SASL ${mechanismText} needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE`);
    sasl = { mechanism: mechanismText as KafkaSaslMechanism, username, password };
  }
  return { ssl: sslOn ? tlsFiles : null, sasl };
}

/** '*', or a list of origins each exactly `scheme://host[:port]` (what browsers send in Origin). */
function corsOrigins(text: string | undefined): '*' | string[] | null {
  if (text === undefined) return null;
  if (text.trim() === '*') return '*';
  const origins = list('CORS_ORIGINS', text);
  for (const origin of origins) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(origin);
    } catch {
      parsed = undefined;
    }
    if (!parsed || !/^https?:$/.test(parsed.protocol) || parsed.origin !== origin) {
      throw new ConfigError('CORS_ORIGINS', `expected * or origins like https://app.example.com[:port] (scheme, host, port; no path or trailing slash), got ${JSON.stringify(origin)}`);
    }
  }
  return origins;
}

function internalSecret(get: Get): string | null {
  const value = secret(get, 'INTERNAL_AUTH_SECRET') ?? null;
  if (value !== null && Buffer.byteLength(value) < 32) {
    throw new ConfigError('INTERNAL_AUTH_SECRET', 'must be at least 32 bytes (an HMAC key shorter than the hash is guessable)');
  }
  return value;
}

/** A URL with its credentials hidden (`redis://user:secret@host` → `redis://***@host`), for messages and logs. */
export function redactUrl(url: string): string {
  const scheme = url.indexOf('://');
  const at = url.lastIndexOf('@');
  return scheme >= 0 && at > scheme ? `${url.slice(0, scheme + 3)}***${url.slice(at)}` : url;
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
