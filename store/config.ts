import { ConfigError } from '../runtime/errors.js';
import { bool, clientTls, hostPorts, int, list, redactUrl, secret, type ClientTls, type Get } from '../runtime/config-values.js';
import { defaultBreaker, type BreakerOptions } from './shard-guard.js';

/**
 * The store's section of the configuration: which engine, where, with what
 * credentials, and the per-shard guard's limits. README "Configuration"
 * documents each variable. The runtime's config composer calls
 * `storeConfig(get)`; nothing else of the store is imported there.
 */
export type StoreConfig = EmbeddedStoreConfig | RedisStoreConfig | RedisClusterStoreConfig | AerospikeStoreConfig;
export type StoreKind = StoreConfig['kind'];

export interface EmbeddedStoreConfig {
  readonly kind: 'embedded';
}

/** What every networked engine's shard guard needs (store/shard-guard.ts). */
export interface GuardSettings {
  /** STORE_TIMEOUT_MS: upper bound of one call to one shard. */
  readonly commandTimeoutMs: number;
  readonly breaker?: BreakerOptions;
}

/** One Redis node (one URL) or several behind the client-side hash ring (several URLs). */
export interface RedisStoreConfig extends GuardSettings {
  readonly kind: 'redis';
  readonly urls: readonly string[];
  /** ACL user (REDIS_USERNAME); with only a password, AUTH is the legacy `requirepass` form. */
  readonly username?: string;
  readonly password?: string;
  /** CA, client certificate and key for the rediss:// URLs. */
  readonly tls?: ClientTls;
}

/** A Redis Cluster, found from its seed nodes (REDIS_CLUSTER_NODES). */
export interface RedisClusterStoreConfig extends GuardSettings {
  readonly kind: 'redis-cluster';
  /** Seed nodes, `host:port`; the client learns the rest of the topology from them. */
  readonly nodes: readonly string[];
  /** Serve reads from replicas too (REDIS_CLUSTER_READ_FROM_REPLICAS); read-after-write then holds only on masters. */
  readonly readFromReplicas: boolean;
  readonly username?: string;
  readonly password?: string;
  /** TLS to every node (REDIS_CLUSTER_TLS), with the REDIS_TLS_* files; undefined: plaintext. */
  readonly tls?: ClientTls;
}

/** An Aerospike cluster (AEROSPIKE_HOSTS): one record per value and its state, in `namespace`/`set`. */
export interface AerospikeStoreConfig extends GuardSettings {
  readonly kind: 'aerospike';
  /** Seed hosts, `host:port`. */
  readonly hosts: readonly string[];
  readonly namespace: string;
  readonly set: string;
  readonly user?: string;
  readonly password?: string;
  /** TLS to every node: the name the nodes' certificates carry, and CA / client certificate. */
  readonly tls?: AerospikeTls;
}

/**
 * The PEM text is read (and checked) at start-up like every engine's; the
 * Aerospike client reads its TLS material only from files, so the paths are
 * kept too.
 */
export interface AerospikeTls extends ClientTls {
  readonly name: string;
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

const engineVariables = ['REDIS_URL', 'REDIS_SHARD_URLS', 'REDIS_CLUSTER_NODES', 'AEROSPIKE_HOSTS'] as const;

/** For messages of processes that need a store shared between processes (the materializer, the loader). */
export const sharedStoreVariables = 'REDIS_URL, REDIS_SHARD_URLS, REDIS_CLUSTER_NODES or AEROSPIKE_HOSTS';
const redisOnly = ['REDIS_USERNAME', 'REDIS_PASSWORD', 'REDIS_PASSWORD_FILE', 'REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY_FILE'];
const clusterOnly = ['REDIS_CLUSTER_READ_FROM_REPLICAS', 'REDIS_CLUSTER_TLS'];
const aerospikeOnly = ['AEROSPIKE_NAMESPACE', 'AEROSPIKE_SET', 'AEROSPIKE_USER', 'AEROSPIKE_PASSWORD', 'AEROSPIKE_PASSWORD_FILE',
  'AEROSPIKE_TLS_NAME', 'AEROSPIKE_TLS_CA_FILE', 'AEROSPIKE_TLS_CERT_FILE', 'AEROSPIKE_TLS_KEY_FILE'];

/** The store section from the environment (and config file): embedded unless an engine variable is set. */
export function storeConfig(get: Get): StoreConfig {
  const chosen = engineVariables.filter((name) => get(name) !== undefined);
  if (chosen.length > 1) {
    throw new ConfigError(chosen[1]!, `set one store engine: ${chosen.join(' and ')} are both set (${engineVariables.join(', ')} each choose one)`);
  }
  const engine = chosen[0];
  const refuse = (names: readonly string[], meaning: string): void => {
    for (const name of names) if (get(name) !== undefined) throw new ConfigError(name, `only meaningful with ${meaning}`);
  };
  if (engine !== 'REDIS_URL' && engine !== 'REDIS_SHARD_URLS' && engine !== 'REDIS_CLUSTER_NODES') refuse(redisOnly, 'REDIS_URL, REDIS_SHARD_URLS or REDIS_CLUSTER_NODES');
  if (engine !== 'REDIS_CLUSTER_NODES') refuse(clusterOnly, 'REDIS_CLUSTER_NODES');
  if (engine !== 'AEROSPIKE_HOSTS') refuse(aerospikeOnly, 'AEROSPIKE_HOSTS');
  // Checked whichever engine is chosen, so a typo never waits for the day an engine is configured.
  const guard: GuardSettings = {
    commandTimeoutMs: int(get, 'STORE_TIMEOUT_MS', 250, 1, 60_000),
    breaker: {
      errorPercent: int(get, 'STORE_BREAKER_ERROR_PERCENT', defaultBreaker.errorPercent, 1, 99),
      minCalls: int(get, 'STORE_BREAKER_MIN_CALLS', defaultBreaker.minCalls, 1, 100_000),
      resetMs: int(get, 'STORE_BREAKER_RESET_MS', defaultBreaker.resetMs, 10, 600_000),
    },
  };
  if (engine === undefined) return { kind: 'embedded' };

  switch (engine) {
    case 'REDIS_URL':
    case 'REDIS_SHARD_URLS': {
      const text = get(engine)!;
      const urls = engine === 'REDIS_URL' ? [text] : list(engine, text);
      for (const url of urls) {
        if (!/^rediss?:\/\/[^\s/]+(\/\d+)?$/.test(url)) {
          // A URL may hold a password: it is never echoed (the message goes to logs).
          throw new ConfigError(engine, `not a Redis URL: ${JSON.stringify(redactUrl(url))} (expected redis://host:port)`);
        }
      }
      const tls = redisTls(get);
      if (tls && !urls.some((u) => u.startsWith('rediss://'))) {
        throw new ConfigError(tls.ca !== undefined ? 'REDIS_TLS_CA_FILE' : 'REDIS_TLS_CERT_FILE', `TLS files are for rediss:// URLs; ${engine} has none`);
      }
      return { kind: 'redis', urls, ...guard, ...redisCredentials(get), ...(tls ? { tls } : {}) };
    }
    case 'REDIS_CLUSTER_NODES': {
      const nodes = hostPorts(engine, get(engine)!);
      const files = redisTls(get);
      const tlsOn = bool(get, 'REDIS_CLUSTER_TLS', files !== undefined);
      if (!tlsOn && files) throw new ConfigError('REDIS_CLUSTER_TLS', 'REDIS_TLS_* files are set but REDIS_CLUSTER_TLS is false');
      return {
        kind: 'redis-cluster',
        nodes,
        readFromReplicas: bool(get, 'REDIS_CLUSTER_READ_FROM_REPLICAS', false),
        ...guard,
        ...redisCredentials(get),
        ...(tlsOn ? { tls: files ?? {} } : {}),
      };
    }
    case 'AEROSPIKE_HOSTS': {
      const hosts = hostPorts(engine, get(engine)!);
      const user = get('AEROSPIKE_USER');
      const password = secret(get, 'AEROSPIKE_PASSWORD');
      if ((user === undefined) !== (password === undefined)) {
        throw new ConfigError(user === undefined ? 'AEROSPIKE_USER' : 'AEROSPIKE_PASSWORD', 'Aerospike security needs both AEROSPIKE_USER and AEROSPIKE_PASSWORD (or AEROSPIKE_PASSWORD_FILE)');
      }
      const files = clientTls(get, 'AEROSPIKE_TLS_');
      const tlsName = get('AEROSPIKE_TLS_NAME');
      if (tlsName === undefined && Object.keys(files).length > 0) throw new ConfigError('AEROSPIKE_TLS_NAME', 'TLS files are set: name the nodes\' TLS name (their certificate\'s name) too');
      return {
        kind: 'aerospike',
        hosts,
        namespace: identifier(get, 'AEROSPIKE_NAMESPACE', 'test', 31),
        set: identifier(get, 'AEROSPIKE_SET', 'fv', 63),
        ...guard,
        ...(user !== undefined && password !== undefined ? { user, password } : {}),
        ...(tlsName !== undefined ? { tls: { ...files, name: tlsName, ...aerospikeTlsFiles(get) } } : {}),
      };
    }
  }
}

function redisCredentials(get: Get): { username?: string; password?: string } {
  const username = get('REDIS_USERNAME');
  const password = secret(get, 'REDIS_PASSWORD');
  if (username !== undefined && password === undefined) throw new ConfigError('REDIS_USERNAME', 'an ACL user needs REDIS_PASSWORD or REDIS_PASSWORD_FILE');
  return { ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}) };
}

function redisTls(get: Get): ClientTls | undefined {
  const tls = clientTls(get, 'REDIS_TLS_');
  return Object.keys(tls).length > 0 ? tls : undefined;
}

function aerospikeTlsFiles(get: Get): { caFile?: string; certFile?: string; keyFile?: string } {
  const ca = get('AEROSPIKE_TLS_CA_FILE');
  const cert = get('AEROSPIKE_TLS_CERT_FILE');
  const key = get('AEROSPIKE_TLS_KEY_FILE');
  return { ...(ca !== undefined ? { caFile: ca } : {}), ...(cert !== undefined ? { certFile: cert } : {}), ...(key !== undefined ? { keyFile: key } : {}) };
}

/** An Aerospike namespace or set name: printable ASCII without separators, at most `max` bytes (the server's limits). */
function identifier(get: Get, name: string, fallback: string, max: number): string {
  const value = get(name) ?? fallback;
  if (!/^[A-Za-z0-9_-]+$/.test(value) || value.length > max) {
    throw new ConfigError(name, `expected letters, digits, '_' or '-', at most ${max} characters, got ${JSON.stringify(value)}`);
  }
  return value;
}
