import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';

/**
 * The repository root, found from this file's location whether it runs from
 * the TypeScript sources or from the compiled `dist/` tree.
 */
function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && !dir.endsWith(`${path.sep}dist`)) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('feature-gateway: could not find the project root (package.json)');
    dir = parent;
  }
}

export const projectRoot = findRoot();

export function fromRoot(...segments: string[]): string {
  return path.join(projectRoot, ...segments);
}
