import type { OnlineStore, ShardHealth } from './online-store.js';

export interface StoreReadiness {
  readonly ready: boolean;
  /** `store`: a summary; `store:<shard>`: each shard's reachability and circuit state. */
  readonly checks: Record<string, string>;
}

/**
 * The store part of /readyz. Ready while at least one shard answers: every
 * gateway replica reads the same shards, so turning unready over one dead
 * shard would take all replicas out of the load balancer and make a partial
 * outage (fields on that shard fail) a total one. The summary says
 * "degraded" and each shard has its own line (decision 0016).
 */
export async function storeReadiness(store: OnlineStore, timeoutMs = 1000): Promise<StoreReadiness> {
  let shards: ShardHealth[];
  try {
    shards = await withTimeout(store.health(), timeoutMs, `store health check timed out after ${timeoutMs} ms`);
  } catch (error) {
    return { ready: false, checks: { store: `${store.kind}: ${(error as Error).message}` } };
  }
  const reachable = shards.filter((s) => s.reachable).length;
  const counted = `${reachable} of ${shards.length} shard${shards.length === 1 ? '' : 's'}`;
  const summary = reachable === shards.length ? `reachable (${counted})`
    : reachable === 0 ? `unreachable (${counted} reachable)`
    : `degraded, ${counted} reachable (fields whose values live on the others fail)`;
  const checks: Record<string, string> = { store: `${store.kind}: ${summary}` };
  for (const s of shards) checks[`store:${s.shard}`] = s.detail;
  return { ready: reachable > 0, checks };
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]);
}
