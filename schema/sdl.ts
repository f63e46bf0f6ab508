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

/**
 * Whether a view takes values through the push API: only views the
 * materializer does not compute (no `source`). A streamed view keeps its
 * window state beside the value and the next event would overwrite a pushed
 * value from that state (docs/decisions/0015-push-api.md).
 */
export function isPushable(view: FeatureView): boolean {
  return view.source === null;
}

/** `pushUserProfile` (the active version) or `pushUserProfileV1`. */
export function pushFieldName(entity: Entity, view: FeatureView, version?: ViewVersion): string {
  return `push${entity.typeName}${capitalize(view.name)}${version ? `V${version.version}` : ''}`;
}

/** The input object of one row of a push of one view version, e.g. `UserProfileV1Push`. */
export function pushInputTypeName(entity: Entity, version: ViewVersion): string {
  return `${viewTypeName(entity, version)}Push`;
}

/** The entity's Mutation fields — `push<Type><View>` (active) and `push<Type><View>V<n>` — to the version they write. */
export function pushFieldsOf(entity: Entity): Map<string, ViewVersion> {
  const fields = new Map<string, ViewVersion>();
  for (const view of entity.views.filter(isPushable)) {
    fields.set(pushFieldName(entity, view), view.versions[view.activeVersion - 1]!);
    for (const version of view.versions) fields.set(pushFieldName(entity, view, version), version);
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
  const push = pushSdl(entity);
  if (push) parts.push(push);
  return parts.join('\n');
}

/**
 * The push API of an entity's pushable views: one Mutation field per view
 * (its active version) and per version, each taking typed input rows, so
 * GraphQL validation itself rejects a missing feature or a wrong type.
 * Empty when the entity has no pushable view.
 */
function pushSdl(entity: Entity): string {
  const views = entity.views.filter(isPushable);
  if (views.length === 0) return '';
  const parts: string[] = ['type Mutation {'];
  for (const view of views) {
    const active = view.versions[view.activeVersion - 1]!;
    parts.push(indent(describe(pushFieldDescription(entity, view, active, true))));
    parts.push(`  ${pushFieldName(entity, view)}(rows: [${pushInputTypeName(entity, active)}!]!): PushResult!`);
    for (const version of view.versions) {
      parts.push(indent(describe(pushFieldDescription(entity, view, version, false))));
      parts.push(`  ${pushFieldName(entity, view, version)}(rows: [${pushInputTypeName(entity, version)}!]!): PushResult!`);
    }
  }
  parts.push('}', '');
  for (const view of views) {
    for (const version of view.versions) {
      parts.push(describe(`One ${entity.name}'s new value of feature view \`${view.name}\` version ${version.version}: ` +
        'every feature of the version, replacing the whole stored value.'));
      parts.push(`input ${pushInputTypeName(entity, version)} {`);
      parts.push(indent(describe(`The ${entity.name}'s id (non-empty; at most once per call).`)));
      parts.push('  id: ID!');
      parts.push(indent(describe('Event time of the value, ISO-8601 with a time zone (e.g. `2026-11-26T12:00:00Z`); default: now. ' +
        `It must be within the view's TTL (${formatTtl(view.ttlSeconds)}) of now and not ahead of now by more than PUSH_MAX_FUTURE_MS.`)));
      parts.push('  eventTime: String');
      for (const feature of version.features) {
        const rule = feature.type.list ? ' (A non-empty list.)' : feature.type.scalar === 'Float' ? ' (A finite number.)' : '';
        parts.push(indent(describe(`${feature.description}${rule}`)));
        parts.push(`  ${feature.name}: ${feature.typeName}!`);
      }
      parts.push('}', '');
    }
  }
  parts.push(pushResultSdl);
  return parts.join('\n');
}

/** Identical in every subgraph with a pushable view, hence @shareable. */
const pushResultSdl = `"""What one push call wrote: all of its rows, or (on any error) none."""
type PushResult @shareable {
  """The feature view written, by its registry name."""
  view: String!
  """The version of the view written."""
  version: Int!
  """Rows written (one value per entity id)."""
  written: Int!
}
`;

function pushFieldDescription(entity: Entity, view: FeatureView, version: ViewVersion, isActiveAlias: boolean): string {
  const which = isActiveAlias ? `the active version, v${version.version}` : `version ${version.version}${version.active ? ', active' : ''}`;
  return `Writes values of feature view \`${view.name}\` (${which}) for up to MAX_BATCH_IDS ${entity.name}s, replacing their stored values; ` +
    'a read right after it returns them, and subscribers of `featureChanged` get a change event. Requires the admin role. ' +
    'The whole call is checked first: one bad row rejects it and nothing is written.\n\n' +
    `${view.description} Owner: ${view.owner} · TTL: ${formatTtl(view.ttlSeconds)}`;
}

/** Types describing the registry itself; identical in every subgraph, hence @shareable. */
const registryMetaSdl = `"""The feature registry, the single source of truth for entities and feature views."""
type FeatureRegistry @shareable {
  entities: [EntityMeta!]!
  """Named bundles of features (Feast's FeatureService): served by POST /get-online-features (\`feature_service\`) and, from GraphQL, by a persisted operation."""
  featureServices: [FeatureServiceMeta!]!
}

"""An entity type and its feature views."""
type EntityMeta @shareable {
  name: String!
  typeName: String!
  key: String!
  """What Feast's clients call the key: \`{"entities": {"<feastJoinKey>": [ids]}}\` at POST /get-online-features."""
  feastJoinKey: String!
  description: String!
  views: [ViewMeta!]!
}

"""A feature service of the registry: a named list of features read together."""
type FeatureServiceMeta @shareable {
  name: String!
  description: String!
  owner: String!
  """Its features, each as \`view@vN:feature\` (the version it reads)."""
  features: [String!]!
  """The persisted operation that reads it from GraphQL, one \`[ID!]!\` variable per entity named by its Feast join key."""
  operationName: String!
  """The operation's id in the gateway's manifest (the SHA-256 of \`query\`): send it as extensions.persistedQuery.sha256Hash."""
  operationId: String!
  query: String!
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
