import { EmbeddedBackend } from './backends/embedded.js';
import { RedisBackend, type BreakerOptions } from './backends/redis.js';
import { CodecStore } from './codec-store.js';

import type { ClientTls } from '../runtime/config.js';

export interface RedisStoreConfig {
  readonly kind: 'redis';
  readonly urls: readonly string[];
  readonly commandTimeoutMs: number;
  /** ACL user (REDIS_USERNAME); with only a password, AUTH is the legacy `requirepass` form. */
  readonly username?: string;
  readonly password?: string;
  /** CA, client certificate and key for the rediss:// URLs. */
  readonly tls?: ClientTls;
  readonly breaker?: BreakerOptions;
}

export type StoreConfig = { readonly kind: 'embedded' } | RedisStoreConfig;

/** Builds the configured online store: embedded by default, Redis (one node or sharded) when URLs are given. */
export function createStore(config: StoreConfig, now: () => number = Date.now): CodecStore {
  switch (config.kind) {
    case 'embedded':
      return new CodecStore(new EmbeddedBackend(now), now);
    case 'redis':
      return new CodecStore(new RedisBackend(config), now);
  }
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
