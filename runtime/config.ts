import fs from 'node:fs';
import { ConfigError } from './errors.js';
import { fromRoot } from './paths.js';
import { bool, checkKeyPair, certificate, clientTls, fileOf, hostPorts, int, list, secret, type ClientTls, type Get } from './config-values.js';
import { storeConfig, type StoreConfig } from '../store/config.js';
import { hotTierConfig, type HotTierConfig } from '../store/hot-tier-config.js';
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
  /** The in-process cache in front of the store, kept coherent by the change feed (store/hot-tier.ts). */
  readonly hotTier: HotTierConfig;
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

export type { ClientTls } from './config-values.js';
export { redactUrl } from './config-values.js';

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

  const store = storeConfig(get);
  const embedded = store.kind === 'embedded';

  return {
    host: get('HOST') ?? '127.0.0.1',
    port: int(get, 'PORT', 4000, 0, 65535),
    tls: serverTls(get),
    corsOrigins: corsOrigins(get('CORS_ORIGINS')),
    registryFile: get('REGISTRY_FILE') ?? fromRoot('schema', 'registry.yaml'),
    manifestFile: get('PERSISTED_QUERY_MANIFEST') ?? fromRoot('schema', 'persisted-query-manifest.json'),
    store,
    hotTier: hotTierConfig(get),
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


function authSettings(get: Get): AuthSettings {
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

function brokers(text: string | undefined): string[] | null {
  return text ? hostPorts('KAFKA_BROKERS', text) : null;
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
