import type { Entity, FeatureView, ViewVersion } from './types.js';
import { formatTtl } from './types.js';

/**
 * Generates the federation v2 SDL of one entity subgraph from the registry.
 * Descriptions carry each view's description, owner, TTL, version, tags and
 * source, so an analyst browsing Sandbox sees the registry without opening it.
 */

export const federationLink =
  'extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key", "@shareable"])';

export function viewTypeName(entity: Entity, version: ViewVersion): string {
  return `${entity.typeName}${capitalize(version.viewName)}V${version.version}`;
}

export function versionFieldName(version: ViewVersion): string {
  return `${version.viewName}V${version.version}`;
}

/** The entity type's view fields — each view (its active version) and each `<view>V<n>` — to the version they read. */
export function viewFieldsOf(entity: Entity): Map<string, ViewVersion> {
  const fields = new Map<string, ViewVersion>();
  for (const view of entity.views) {
    fields.set(view.name, view.versions[view.activeVersion - 1]!);
    for (const version of view.versions) fields.set(versionFieldName(version), version);
  }
  return fields;
}

export function entitySubgraphSdl(entity: Entity): string {
  const parts: string[] = [federationLink, ''];
  parts.push(describe(entityDescription(entity)));
  parts.push(`type ${entity.typeName} @key(fields: "id") {`);
  parts.push(indent(describe(`The ${entity.name}'s id, the key shared by every subgraph and store.`)));
  parts.push('  id: ID!');
  for (const view of entity.views) {
    const active = view.versions[view.activeVersion - 1]!;
    parts.push(indent(describe(viewFieldDescription(view, active, true))));
    parts.push(`  ${view.name}: ${viewTypeName(entity, active)}`);
    for (const version of view.versions) {
      parts.push(indent(describe(viewFieldDescription(view, version, false))));
      parts.push(`  ${versionFieldName(version)}: ${viewTypeName(entity, version)}`);
    }
  }
  parts.push('}', '');

  for (const view of entity.views) {
    for (const version of view.versions) {
      parts.push(describe(`Values of feature view \`${view.name}\` version ${version.version} for one ${entity.name}. ` +
        'All features are null when the value is stale (older than its TTL).'));
      parts.push(`type ${viewTypeName(entity, version)} {`);
      for (const feature of version.features) {
        if (feature.description) parts.push(indent(describe(feature.description)));
        parts.push(`  ${feature.name}: ${feature.typeName}`);
      }
      parts.push(indent(describe('Event time (ISO-8601, UTC) of the newest event folded into this value.')));
      parts.push('  eventTime: String');
      parts.push(indent(describe(`True when the value is older than the view's TTL (${formatTtl(view.ttlSeconds)}); its features are then null.`)));
      parts.push('  stale: Boolean!');
      parts.push('}', '');
    }
  }

  parts.push('type Query {');
  parts.push(indent(describe(`One ${entity.name} by id; null when no feature value of it is stored.`)));
  parts.push(`  ${entity.singularField}(id: ID!): ${entity.typeName}`);
  parts.push(indent(describe(`A batch of ${entity.name}s in the order of \`ids\`; an unknown id gives null at its position.`)));
  parts.push(`  ${entity.pluralField}(ids: [ID!]!): [${entity.typeName}]!`);
  parts.push(indent(describe('The feature registry: entities, views, versions, owners, TTLs and features.')));
  parts.push('  featureRegistry: FeatureRegistry! @shareable');
  parts.push('}', '');
  parts.push(registryMetaSdl);
  return parts.join('\n');
}

/** Types describing the registry itself; identical in every subgraph, hence @shareable. */
const registryMetaSdl = `"""The feature registry, the single source of truth for entities and feature views."""
type FeatureRegistry @shareable {
  entities: [EntityMeta!]!
}

"""An entity type and its feature views."""
type EntityMeta @shareable {
  name: String!
  typeName: String!
  key: String!
  description: String!
  views: [ViewMeta!]!
}

"""One version of a feature view."""
type ViewMeta @shareable {
  name: String!
  version: Int!
  active: Boolean!
  ttlSeconds: Int!
  owner: String!
  description: String!
  tags: [String!]!
  source: String
  features: [FeatureMeta!]!
}

"""One typed feature of a view version."""
type FeatureMeta @shareable {
  name: String!
  type: String!
  description: String!
}
`;

function entityDescription(entity: Entity): string {
  const views = entity.views.map((v) => `${v.name} (v${v.activeVersion} active, TTL ${formatTtl(v.ttlSeconds)})`).join(', ');
  return `${entity.description}\n\nEntity \`${entity.name}\`, key \`id\`. Feature views: ${views || 'none'}.`;
}

function viewFieldDescription(view: FeatureView, version: ViewVersion, isActiveAlias: boolean): string {
  const head = isActiveAlias
    ? `${view.description} (the active version, v${view.activeVersion})`
    : `${view.description} (version ${version.version}${version.active ? ', active' : ''})`;
  const meta = [
    `Owner: ${view.owner}`,
    `TTL: ${formatTtl(view.ttlSeconds)}`,
    `Version: ${version.version}${version.active ? ' (active)' : ''} of ${view.versions.length}`,
    view.tags.length ? `Tags: ${view.tags.join(', ')}` : null,
    view.source ? `Source: ${view.source}` : null,
    view.readRoles ? `Readable by: ${view.readRoles.join(', ')}` : null,
  ].filter((x): x is string => x !== null);
  return `${head}\n\n${meta.join(' · ')}`;
}

function describe(text: string): string {
  const body = text.replace(/"""/g, '\\"""');
  // A body ending in " or \ would run into the closing """ (e.g. `a"` + `"""` = `a""""`), so the
  // close goes on its own line; a block string drops that trailing blank line, so the value is unchanged.
  return /["\\]$/.test(body) ? `"""${body}\n"""` : `"""${body}"""`;
}

function indent(text: string): string {
  return text.split('\n').map((l) => `  ${l}`).join('\n');
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
