import { parse, print } from 'graphql';
import { sha256Hex, type PersistedOperation, type PersistedQueryManifest } from './manifest.js';
import { versionFieldName } from './sdl.js';
import type { Entity, FeatureService, Registry, ViewVersion } from './types.js';
import { findEntity } from './types.js';

/**
 * A set of (view version, features) as the GraphQL query that reads them
 * for batches of entity ids: one root field per entity (`users(ids:
 * $user_id)`, the variable named by the entity's Feast join key), its `id`,
 * and per view version its field (`clickStats` for the active version,
 * `clickStatsV1` for another) with the features, `eventTime` and `stale`.
 *
 * This is how a Feast request or a feature service reads through the
 * generic federated path, and what a feature service is from GraphQL: the
 * persisted operation `FeatureService_<name>`, added to the gateway's
 * manifest at start-up (so it is safelisted, compiled to the fast path and
 * labelled with its name in metrics) and listed in `featureRegistry`.
 */
export interface QueryView {
  readonly version: ViewVersion;
  readonly features: readonly string[];
}

/** How a query's answer maps back: per entity, its root field and variable, and per view its field. */
export interface FeatureQuery {
  readonly body: string;
  readonly roots: readonly {
    readonly entity: Entity;
    readonly field: string;
    readonly variable: string;
    readonly views: readonly { readonly version: ViewVersion; readonly field: string }[];
  }[];
}

/** The query reading `views` (in order, grouped by entity in order of first appearance), printed canonically. */
export function featureQuery(registry: Registry, name: string, views: readonly QueryView[]): FeatureQuery {
  const roots: { entity: Entity; field: string; variable: string; views: { version: ViewVersion; field: string; features: readonly string[] }[] }[] = [];
  for (const view of views) {
    let root = roots.find((r) => r.entity.name === view.version.entityName);
    if (!root) {
      const entity = findEntity(registry, view.version.entityName)!;
      root = { entity, field: entity.pluralField, variable: entity.feastJoinKey, views: [] };
      roots.push(root);
    }
    // The active version's own field is the unversioned one: what clients of the active version select.
    const field = view.version.active ? view.version.viewName : versionFieldName(view.version);
    const existing = root.views.find((v) => v.version === view.version);
    if (existing) existing.features = [...new Set([...existing.features, ...view.features])];
    else root.views.push({ version: view.version, field, features: [...new Set(view.features)] });
  }
  const variables = roots.map((r) => `$${r.variable}: [ID!]!`).join(', ');
  const selections = roots.map((r) =>
    `${r.field}(ids: $${r.variable}) { id ${r.views.map((v) => `${v.field} { ${v.features.join(' ')} eventTime stale }`).join(' ')} }`).join(' ');
  const body = print(parse(`query ${name}(${variables}) { ${selections} }`));
  return { body, roots: roots.map((r) => ({ entity: r.entity, field: r.field, variable: r.variable, views: r.views.map((v) => ({ version: v.version, field: v.field })) })) };
}

/** The persisted operation name of a feature service. */
export function featureServiceOperationName(service: FeatureService): string {
  return `FeatureService_${service.name}`;
}

/** The persisted operation of a feature service (its id the SHA-256 of its body, as every manifest operation's). */
export function featureServiceOperation(registry: Registry, service: FeatureService): PersistedOperation {
  const views: { version: ViewVersion; features: string[] }[] = [];
  for (const f of service.features) {
    const known = views.find((v) => v.version === f.version);
    if (known) known.features.push(f.feature.name);
    else views.push({ version: f.version, features: [f.feature.name] });
  }
  const { body } = featureQuery(registry, featureServiceOperationName(service), views);
  return { id: sha256Hex(body), name: featureServiceOperationName(service), type: 'query', body };
}

/**
 * The manifest with every feature service's operation added; an error when one's name is
 * already taken by an operation of `schema/operations/`.
 */
export function withFeatureServices(manifest: PersistedQueryManifest, registry: Registry): PersistedQueryManifest {
  const names = new Set(manifest.operations.map((o) => o.name));
  const generated = registry.featureServices.map((service) => {
    const op = featureServiceOperation(registry, service);
    if (names.has(op.name)) throw new Error(`persisted operation ${op.name} is both in the manifest and generated for feature service ${service.name}; rename one`);
    return op;
  });
  return { ...manifest, operations: [...manifest.operations, ...generated] };
}
