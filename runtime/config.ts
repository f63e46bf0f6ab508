import fs from 'node:fs';
import { ConfigError } from './errors.js';
import { fromRoot } from './paths.js';
import type { StoreConfig } from '../store/create-store.js';

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
  readonly maxQueryDepth: number;
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
  /** Demo raw events per second fed to the in-process materializer of `npm start` (0: none). */
  readonly demoEventsPerSecond: number;
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
  let store: StoreConfig = { kind: 'embedded' };
  if (redisUrl) store = { kind: 'redis', urls: [redisUrl], commandTimeoutMs };
  if (shardUrls) store = { kind: 'redis', urls: list('REDIS_SHARD_URLS', shardUrls), commandTimeoutMs };
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
    maxQueryDepth: int(get, 'MAX_QUERY_DEPTH', 12, 2, 100),
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
    demoEventsPerSecond: int(get, 'DEMO_EVENTS_PER_SECOND', embedded && !get('EMBEDDED_SEED_FILE') ? 100 : 0, 0, 100_000),
  };
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
