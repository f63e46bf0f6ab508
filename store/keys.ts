import type { ViewVersion } from '../schema/types.js';

/** `fv:{view}:v{version}:{entityId}` (ARCHITECTURE.md, "Names"). */
export function keyPrefix(view: ViewVersion): string {
  return `fv:${view.viewName}:v${view.version}:`;
}

export function storeKey(view: ViewVersion, entityId: string): string {
  return keyPrefix(view) + entityId;
}
