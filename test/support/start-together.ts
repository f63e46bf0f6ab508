/** Something a test starts and must not leave running. */
interface Destroyable {
  destroy(): Promise<void>;
}

/**
 * Awaits servers started at once (a Kafka broker beside a Redis Cluster, say) as Promise.all does,
 * except when one fails: then the others are awaited too and destroyed before the error is thrown.
 * With Promise.all the ones still starting would come up after the hook had failed, assigned to
 * nothing, so no `after` hook could stop them; a Redis Cluster left so (its client reconnecting)
 * kept a test file alive until CI's limit.
 */
export async function startTogether<T extends readonly Promise<Destroyable | undefined>[]>(
  ...starts: T
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(starts);
  const failures = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
  if (failures.length === 0) {
    return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
  }
  const cleanup = await Promise.allSettled(settled.map((s) => (s.status === 'fulfilled' ? s.value?.destroy() : undefined)));
  const cleanupFailures = cleanup.flatMap((c) => (c.status === 'rejected' ? [c.reason as unknown] : []));
  if (failures.length === 1 && cleanupFailures.length === 0) throw failures[0];
  throw new AggregateError([...failures, ...cleanupFailures], 'starting servers together failed (the ones that started are destroyed)');
}
