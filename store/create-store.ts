import { AerospikeBackend } from './backends/aerospike.js';
import type { ByteBackend } from './backends/byte-backend.js';
import { EmbeddedBackend } from './backends/embedded.js';
import { RedisClusterBackend } from './backends/redis-cluster.js';
import { RedisBackend } from './backends/redis.js';
import { CodecStore } from './codec-store.js';
import type { StoreConfig, StoreKind } from './config.js';

/**
 * The engines, by the `kind` of their configuration. A new engine is one file
 * in `backends/` implementing ByteBackend, its section in `config.ts`, and
 * one line here.
 */
const engines: { readonly [K in StoreKind]: (config: Extract<StoreConfig, { kind: K }>, now: () => number) => ByteBackend } = {
  embedded: (_, now) => new EmbeddedBackend(now),
  redis: (config) => new RedisBackend(config),
  'redis-cluster': (config) => new RedisClusterBackend(config),
  aerospike: (config, now) => new AerospikeBackend(config, { now }),
};

/** Builds the configured online store: embedded by default, else the engine the configuration names. */
export function createStore(config: StoreConfig, now: () => number = Date.now): CodecStore {
  const make = engines[config.kind] as (config: StoreConfig, now: () => number) => ByteBackend;
  return new CodecStore(make(config, now), now);
}

/**
 * Waits until the store answers a ping, up to `timeoutMs`: undefined when it did, else the last
 * error (it names the shard and the cause, e.g. WRONGPASS), for the start-up message. (It was
 * `waitForStore(): boolean`; renamed so that a caller written for the boolean cannot compile.)
 */
export async function storeUnreachable(store: { ping(): Promise<void> }, timeoutMs: number): Promise<Error | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await store.ping();
      return undefined;
    } catch (error) {
      if (Date.now() >= deadline) return error instanceof Error ? error : new Error(String(error));
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
