import type { KeyValueCache } from '@apollo/utils.keyvaluecache';
import { InMemoryLRUCache, PrefixingKeyValueCache } from '@apollo/utils.keyvaluecache';
import { Kind, parse, type TypeNode } from 'graphql';
import type { Admission, IncomingOperation, Refusal } from '../runtime/graphql-http.js';
import { ErrorCode } from '../runtime/errors.js';
import { sha256Hex, type PersistedOperation, type PersistedQueryManifest } from '../schema/manifest.js';

/**
 * Persisted operations on the gateway (ARCHITECTURE.md, decision 4).
 *
 * Apollo Server's APQ reads operations from a cache by SHA-256 hash. Here
 * that cache is backed first by the manifest (never evicted), then by an LRU
 * of operations registered through APQ. In safelist mode registration is off,
 * and the gateway's admission (gateway/authorization.ts) refuses anything
 * that is not a manifest operation from a caller without the analyst role,
 * before Apollo Server parses a byte of it.
 */
export class PersistedQueries {
  private readonly byId: ReadonlyMap<string, PersistedOperation>;

  constructor(readonly manifest: PersistedQueryManifest, readonly safelist: boolean) {
    this.byId = new Map(manifest.operations.map((op) => [op.id, op]));
  }

  /** The name of the manifest operation with this hash, if any (for metric labels). */
  nameOf(hash: string | undefined): string | undefined {
    return hash === undefined ? undefined : this.byId.get(hash)?.name;
  }

  /** The APQ cache Apollo Server reads and writes (keys are bare hashes). */
  apqCache(): KeyValueCache<string> {
    const registered = new InMemoryLRUCache<string>({ maxSize: 10 * 1024 * 1024 });
    const byId = this.byId;
    const safelist = this.safelist;
    const cache: KeyValueCache<string> = {
      async get(key) {
        return byId.get(key)?.body ?? (safelist ? undefined : registered.get(key));
      },
      async set(key, value, options) {
        if (!safelist && !byId.has(key)) await registered.set(key, value, options);
      },
      async delete(key) {
        return registered.delete(key);
      },
    };
    return PrefixingKeyValueCache.cacheDangerouslyDoesNotNeedPrefixesForIsolation(cache);
  }

  /**
   * The manifest id of the operation a request carries, by its query text
   * (hashed) or by its APQ hash; undefined when it is not a manifest
   * operation or its text and hash disagree.
   */
  manifestIdOf(operation: IncomingOperation): string | undefined {
    // By hash alone (what inference clients send) it is a lookup: nothing to remember.
    if (typeof operation.query !== 'string') return this.computeManifestId(operation);
    // Admission and the fast path both ask for the same request: hash its text once.
    if (this.ids.has(operation)) return this.ids.get(operation);
    const id = this.computeManifestId(operation);
    this.ids.set(operation, id);
    return id;
  }

  private readonly ids = new WeakMap<IncomingOperation, string | undefined>();

  private computeManifestId(operation: IncomingOperation): string | undefined {
    const hash = persistedHash(operation.extensions);
    if (typeof operation.query === 'string') {
      const id = sha256Hex(operation.query);
      return this.byId.has(id) && (hash === undefined || hash === id) ? id : undefined;
    }
    return hash !== undefined && this.byId.has(hash) ? hash : undefined;
  }

  /** What a client that may not run ad-hoc operations gets for one outside the manifest, in safelist mode. */
  readonly safelistRefusal: Refusal = {
    status: 400,
    code: ErrorCode.NotInSafelist,
    message:
      'This gateway runs in safelist mode: only operations of its persisted-query manifest may run. ' +
      'Send { "extensions": { "persistedQuery": { "version": 1, "sha256Hash": "<manifest id>" } }, "variables": … }.',
  };

  /** Variables that let each manifest operation be planned at start-up (ids that match nothing). */
  warmupRequests(): { query: string; variables: Record<string, unknown> }[] {
    return this.manifest.operations
      .filter((op) => op.type === 'query')
      .map((op) => {
        const variables: Record<string, unknown> = {};
        for (const def of parse(op.body).definitions) {
          if (def.kind !== Kind.OPERATION_DEFINITION) continue;
          for (const v of def.variableDefinitions ?? []) variables[v.variable.name.value] = placeholder(v.type);
        }
        return { query: op.body, variables };
      });
  }
}

const sha256HexPattern = /^[0-9a-f]{64}$/;

/**
 * Refuses a malformed `persistedQuery` extension with PERSISTED_QUERY_INVALID
 * (400) before Apollo Server sees it: Apollo answers an unsupported version
 * or a hash that does not match the query with an uncoded error
 * (INTERNAL_SERVER_ERROR), and a hash that is no SHA-256 at all with
 * PERSISTED_QUERY_NOT_FOUND, inviting a client to register what never can be.
 */
export const checkPersistedQuery: Admission = (operation) => {
  const extensions = operation.extensions;
  if (typeof extensions !== 'object' || extensions === null) return undefined; // Apollo Server refuses a non-object itself
  const pq = (extensions as { persistedQuery?: unknown }).persistedQuery;
  if (pq === undefined || pq === null) return undefined;
  const invalid = (message: string) => ({ status: 400, code: ErrorCode.PersistedQueryInvalid, message });
  if (typeof pq !== 'object' || Array.isArray(pq)) return invalid('`extensions.persistedQuery` must be an object { "version": 1, "sha256Hash": "<64 hex digits>" }');
  const { version, sha256Hash } = pq as { version?: unknown; sha256Hash?: unknown };
  if (version !== 1) return invalid(`Unsupported persisted query version ${JSON.stringify(version) ?? 'undefined'}: only version 1 is supported`);
  if (typeof sha256Hash !== 'string' || !sha256HexPattern.test(sha256Hash)) {
    return invalid('`extensions.persistedQuery.sha256Hash` must be the SHA-256 of the query text as 64 lowercase hex digits');
  }
  if (typeof operation.query === 'string' && sha256Hex(operation.query) !== sha256Hash) {
    return invalid('`extensions.persistedQuery.sha256Hash` does not match the SHA-256 of `query`');
  }
  return undefined;
};

function persistedHash(extensions: unknown): string | undefined {
  const pq = (extensions as { persistedQuery?: { sha256Hash?: unknown } } | undefined)?.persistedQuery;
  return typeof pq?.sha256Hash === 'string' ? pq.sha256Hash : undefined;
}

function placeholder(type: TypeNode): unknown {
  switch (type.kind) {
    case Kind.NON_NULL_TYPE: return placeholder(type.type);
    case Kind.LIST_TYPE: return [placeholder(type.type)];
    case Kind.NAMED_TYPE:
      switch (type.name.value) {
        case 'Int': case 'Float': return 0;
        case 'Boolean': return false;
        default: return '__warmup__';
      }
  }
}
