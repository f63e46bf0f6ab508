import type { ViewVersion } from '../schema/types.js';

/** `fv:{view}:v{version}:{entityId}` (ARCHITECTURE.md, "Names"). */
export function keyPrefix(view: ViewVersion): string {
  return `fv:${view.viewName}:v${view.version}:`;
}

export function storeKey(view: ViewVersion, entityId: string): string {
  return keyPrefix(view) + entityId;
}

/** The materializer's window state of a value: `fvs:{view}:v{version}:{entityId}`, routed to the value's shard. */
export function stateKey(view: ViewVersion, entityId: string): string {
  return `fvs:${view.viewName}:v${view.version}:${entityId}`;
}
