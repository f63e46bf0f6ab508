import { createHash } from 'node:crypto';
import type { Registry } from './types.js';

/**
 * A registry's version: the first 12 hex digits of the SHA-256 of what it
 * defines (entities, views, events, feature services), not of its file, so
 * comments and formatting do not change it and two processes that loaded the
 * same definitions report the same version (`/readyz`, the registry metric).
 */
export function registryVersion(registry: Registry): string {
  const { entities, events, featureServices } = registry;
  return createHash('sha256').update(JSON.stringify({ entities, events, featureServices })).digest('hex').slice(0, 12);
}
