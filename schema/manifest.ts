import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Kind, parse, print, type OperationDefinitionNode } from 'graphql';
import { fromRoot } from '../runtime/paths.js';

/**
 * Persisted operations, kept as `.graphql` files in `schema/operations/`, and
 * their manifest in Apollo's persisted-query manifest format, so Apollo's
 * client tooling can read it. An operation's id is the SHA-256 of its body,
 * which makes the id usable as an APQ hash as well.
 */
export interface PersistedOperation {
  readonly id: string;
  readonly name: string;
  readonly type: 'query' | 'mutation' | 'subscription';
  readonly body: string;
}

export interface PersistedQueryManifest {
  readonly format: 'apollo-persisted-query-manifest';
  readonly version: 1;
  readonly operations: readonly PersistedOperation[];
}

export const operationsDir = fromRoot('schema', 'operations');
export const defaultManifestFile = fromRoot('schema', 'persisted-query-manifest.json');

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Reads every `.graphql` file of `dir`: one named operation per file. */
export function buildManifest(dir: string = operationsDir): PersistedQueryManifest {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.graphql')).sort();
  const operations = files.map((file): PersistedOperation => {
    const document = parse(fs.readFileSync(path.join(dir, file), 'utf8'));
    const ops = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
    const op = ops[0];
    if (ops.length !== 1 || !op?.name) throw new Error(`${file}: expected exactly one named operation`);
    // The printed form is canonical: comments and formatting in the file do not change the id.
    const body = print(document);
    return { id: sha256Hex(body), name: op.name.value, type: op.operation, body };
  });
  const names = new Set<string>();
  for (const op of operations) {
    if (names.has(op.name)) throw new Error(`persisted operation name ${op.name} is used twice in ${dir}`);
    names.add(op.name);
  }
  return { format: 'apollo-persisted-query-manifest', version: 1, operations };
}

export function readManifest(file: string = defaultManifestFile): PersistedQueryManifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`cannot read persisted-query manifest ${file}: ${(error as Error).message}`);
  }
  const m = parsed as Partial<PersistedQueryManifest>;
  if (m.format !== 'apollo-persisted-query-manifest' || m.version !== 1 || !Array.isArray(m.operations)) {
    throw new Error(`${file}: not an apollo-persisted-query-manifest version 1`);
  }
  for (const op of m.operations) {
    if (typeof op.id !== 'string' || typeof op.body !== 'string' || typeof op.name !== 'string') {
      throw new Error(`${file}: every operation needs string id, name and body`);
    }
    if (sha256Hex(op.body) !== op.id) throw new Error(`${file}: operation ${op.name} has an id that is not the SHA-256 of its body`);
  }
  return m as PersistedQueryManifest;
}
