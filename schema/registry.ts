import fs from 'node:fs';
import { createRequire } from 'node:module';
import { Ajv, type ErrorObject } from 'ajv';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { fromRoot } from '../runtime/paths.js';
import { maxDurationDays, parseAggregate, parseDuration, parseEvents, parseMaterialization, type RawAggregate, type RawEvent, type RawMaterializedView } from './materialization.js';
import type { Role } from '../auth/principal.js';
import { defaultJoinKey, resolveRef } from './feast.js';
import type {
  Entity, EventSchema, Feature, FeatureService, FeatureType, FeatureView, HotTierPolicy, Materialization, Registry, ScalarTypeName, ServiceFeature, ViewVersion,
} from './types.js';

/**
 * Reads the registry file, checks its shape against `registry.schema.json`
 * (with ajv) and then the rules a JSON schema cannot express (unique names,
 * known entities and types, contiguous versions, GraphQL-valid names).
 * Every problem is reported at once, each with file, line, path and what was
 * expected, so one edit-run cycle fixes them all.
 */

export interface RegistryIssue {
  readonly file: string;
  /** JSON pointer into the document, e.g. `/views/0/ttl`. */
  readonly path: string;
  readonly line: number;
  readonly column: number;
  readonly message: string;
  readonly expected: string;
}

export class RegistryError extends Error {
  override name = 'RegistryError';
  constructor(readonly issues: readonly RegistryIssue[]) {
    super(
      `invalid feature registry (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n` +
        issues.map((i) => `  ${i.file}:${i.line}:${i.column} at ${i.path || '/'}: ${i.message}; expected ${i.expected}`).join('\n'),
    );
  }
}

export const defaultRegistryFile = fromRoot('schema', 'registry.yaml');

export function loadRegistry(file: string = defaultRegistryFile): Registry {
  return parseRegistry(fs.readFileSync(file, 'utf8'), file);
}

const scalarTypes: readonly ScalarTypeName[] = ['Int', 'Float', 'Boolean', 'String'];
const graphqlName = /^[_A-Za-z][_0-9A-Za-z]*$/;
/** Field names every view object already has, so no feature may take them. */
const reservedFeatureNames = new Set(['eventTime', 'stale', '__typename']);
const ttlPattern = /^([1-9][0-9]*)(s|m|h|d)$/;
const ttlUnitSeconds = { s: 1, m: 60, h: 3600, d: 86400 } as const;
const maxTtlSeconds = maxDurationDays * 86400;

const require = createRequire(import.meta.url);
const validateShape = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(
  require(fromRoot('schema', 'registry.schema.json')) as object,
);

interface RawFeature { name: string; type: string; description?: string; aggregate?: RawAggregate }
interface RawVersion { version: number; features: RawFeature[] }
interface RawView extends RawMaterializedView {
  name: string; entity: string; description: string; owner: string; tags?: string[];
  ttl: string | number; source?: string; activeVersion?: number; versions: RawVersion[]; readRoles?: Role[];
  hotTier?: { enabled?: boolean; maxAge?: string | number };
}
interface RawEntity { name: string; type: string; key: 'id'; plural?: string; description: string; feastJoinKey?: string }
interface RawFeatureService { name: string; description: string; owner: string; features: string[] }
interface RawRegistry { entities: RawEntity[]; views: RawView[]; events?: RawEvent[]; featureServices?: RawFeatureService[] }

export function parseRegistry(text: string, file: string): Registry {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const issues: RegistryIssue[] = [];
  const at = (path: (string | number)[], message: string, expected: string): void => {
    issues.push({ file, path: toPointer(path), ...position(doc, lineCounter, path), message, expected });
  };

  for (const error of doc.errors) {
    const pos = lineCounter.linePos(error.pos[0]);
    issues.push({ file, path: '', line: pos.line, column: pos.col, message: error.message.split('\n')[0] ?? error.message, expected: 'well-formed YAML' });
  }
  if (issues.length > 0) throw new RegistryError(issues);

  const raw: unknown = doc.toJS();
  if (!validateShape(raw)) {
    for (const error of validateShape.errors ?? []) reportShapeError(error, at);
    throw new RegistryError(issues);
  }
  const registry = checkSemantics(raw as unknown as RawRegistry, file, at);
  if (issues.length > 0) throw new RegistryError(issues);
  return registry;
}

function reportShapeError(error: ErrorObject, at: (path: (string | number)[], message: string, expected: string) => void): void {
  const path = error.instancePath.split('/').slice(1).map(unescapePointer).map((s) => (/^\d+$/.test(s) ? Number(s) : s));
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'required':
      at(path, `missing property "${String(params.missingProperty)}"`, `"${String(params.missingProperty)}" to be set`);
      break;
    case 'additionalProperties':
      // Point at the unknown key itself (the typo's line), not at the object holding it.
      at([...path, String(params.additionalProperty)], `unknown property "${String(params.additionalProperty)}"`, 'only the properties registry.schema.json names');
      break;
    case 'type':
      at(path, `wrong value type`, `a value of type ${Array.isArray(params.type) ? params.type.join(' or ') : String(params.type)}`);
      break;
    case 'const':
      at(path, `unsupported value`, JSON.stringify(params.allowedValue));
      break;
    default:
      at(path, error.message ?? error.keyword, `a value matching the "${error.keyword}" rule of registry.schema.json`);
  }
}

type Report = (path: (string | number)[], message: string, expected: string) => void;

function checkSemantics(raw: RawRegistry, file: string, at: Report): Registry {
  const entityNames = new Map<string, number>();
  const typeNames = new Map<string, number>();
  const joinKeys = new Map<string, number>();
  raw.entities.forEach((e, i) => {
    checkName(e.name, ['entities', i, 'name'], 'entity name', at);
    checkName(e.type, ['entities', i, 'type'], 'GraphQL type name', at);
    if (e.plural !== undefined) checkName(e.plural, ['entities', i, 'plural'], 'plural field name', at);
    checkUnique(entityNames, e.name, i, ['entities', i, 'name'], 'entity', at);
    checkUnique(typeNames, e.type, i, ['entities', i, 'type'], 'entity type', at);
    // A join key is also the variable name of the feature services' generated GraphQL operations.
    const joinKeyPath = e.feastJoinKey === undefined ? ['entities', i, 'name'] : ['entities', i, 'feastJoinKey'];
    if (e.feastJoinKey !== undefined) checkName(e.feastJoinKey, joinKeyPath, 'Feast join key', at);
    // A repeated entity name is reported already; its default join key would only repeat that.
    if (entityNames.get(e.name) === i || e.feastJoinKey !== undefined) checkUnique(joinKeys, e.feastJoinKey ?? defaultJoinKey(e.name), i, joinKeyPath, 'Feast join key', at);
  });

  const events = parseEvents(raw.events, at);
  const viewNames = new Map<string, number>();
  const views: FeatureView[] = [];
  raw.views.forEach((v, i) => {
    const path = ['views', i];
    checkName(v.name, [...path, 'name'], 'view name', at);
    checkUnique(viewNames, v.name, i, [...path, 'name'], 'feature view', at);
    if (!entityNames.has(v.entity)) {
      at([...path, 'entity'], `view "${v.name}" is on unknown entity "${v.entity}"`, `one of the declared entities: ${[...entityNames.keys()].join(', ')}`);
    }
    const ttlSeconds = parseTtl(v.ttl, [...path, 'ttl'], at);
    const materialization = parseMaterialization(v, events, path, at);
    const hotTier: HotTierPolicy = {
      enabled: v.hotTier?.enabled ?? true,
      maxAgeMs: v.hotTier?.maxAge === undefined ? null : parseDuration(v.hotTier.maxAge, [...path, 'hotTier', 'maxAge'], at, false),
    };
    const versions: ViewVersion[] = [];
    const activeVersion = v.activeVersion ?? v.versions.length;
    v.versions.forEach((raw, j) => {
      if (raw.version !== j + 1) {
        at([...path, 'versions', j, 'version'],
          j === 0 ? `versions must start at 1, found ${raw.version}` : `version gap: version ${raw.version} follows version ${j}`,
          `version ${j + 1} (versions are numbered 1, 2, 3, … without gaps)`);
      }
      // A view with a source but no usable materialization (unknown topic, no window) is reported once
      // already; its aggregates must not each add a misleading "its view has no source".
      const features = raw.features.map((f, k) => parseFeature(f, [...path, 'versions', j, 'features', k], at, materialization, events, v.source !== undefined));
      const seen = new Map<string, number>();
      raw.features.forEach((f, k) => checkUnique(seen, f.name, k, [...path, 'versions', j, 'features', k, 'name'], 'feature', at));
      versions.push({
        viewName: v.name, entityName: v.entity, version: j + 1, active: j + 1 === activeVersion, ttlSeconds, features, materialization,
        readRoles: v.readRoles ?? null, hotTier,
      });
    });
    if (activeVersion < 1 || activeVersion > v.versions.length) {
      at([...path, 'activeVersion'], `active version ${activeVersion} does not exist`, `a version between 1 and ${v.versions.length}`);
    }
    views.push({
      name: v.name, entityName: v.entity, description: v.description, owner: v.owner, tags: v.tags ?? [],
      ttlSeconds, source: v.source ?? null, materialization, activeVersion, readRoles: v.readRoles ?? null, versions,
    });
  });

  const entities: Entity[] = raw.entities.map((e) => ({
    name: e.name,
    typeName: e.type,
    singularField: e.name,
    pluralField: e.plural ?? `${e.name}s`,
    description: e.description,
    feastJoinKey: e.feastJoinKey ?? defaultJoinKey(e.name),
    views: views.filter((v) => v.entityName === e.name),
  }));
  raw.entities.forEach((e, i) => checkEntityFieldNames(entities[i]!, i, raw, at));
  const withoutServices: Registry = { file, entities, events, featureServices: [] };
  return { ...withoutServices, featureServices: parseFeatureServices(raw.featureServices ?? [], withoutServices, at) };
}

/**
 * Feature services: unique names (each is also a generated GraphQL operation, so a GraphQL
 * name), every reference resolving to a feature of an existing view version, none twice.
 */
function parseFeatureServices(raw: readonly RawFeatureService[], registry: Registry, at: Report): FeatureService[] {
  const names = new Map<string, number>();
  return raw.map((s, i) => {
    const path = ['featureServices', i];
    checkName(s.name, [...path, 'name'], 'feature service name', at);
    checkUnique(names, s.name, i, [...path, 'name'], 'feature service', at);
    const features: ServiceFeature[] = [];
    const listed = new Map<string, number>();
    s.features.forEach((ref, k) => {
      const resolved = resolveRef(registry, ref, true);
      if (!Array.isArray(resolved)) {
        const expected = resolved.kind === 'version' || resolved.kind === 'feature' || resolved.kind === 'view'
          ? 'a view, version and feature the registry declares'
          : "'view:feature', 'view@vN:feature', or a whole view 'view' / 'view@vN'";
        at([...path, 'features', k], `feature service "${s.name}": ${resolved.message}`, expected);
        return;
      }
      for (const r of resolved) {
        const key = `${r.version.viewName}:v${r.version.version}:${r.feature.name}`;
        const first = listed.get(key);
        if (first !== undefined) {
          at([...path, 'features', k], `feature service "${s.name}" lists ${r.version.viewName} v${r.version.version} ${r.feature.name} twice (also at index ${first})`, 'each feature once');
          continue;
        }
        listed.set(key, k);
        features.push({ ref, version: r.version, feature: r.feature, pinned: r.pinned });
      }
    });
    return { name: s.name, description: s.description, owner: s.owner, features };
  });
}

/** An entity's fields are `id`, each view and each `<view>V<n>`: none may collide. */
function checkEntityFieldNames(entity: Entity, index: number, raw: RawRegistry, at: Report): void {
  const fields = new Map<string, string>([['id', 'the key field']]);
  const seenViews = new Set<string>();
  for (const view of entity.views) {
    // A repeated view name is already reported as a duplicate; its fields would only repeat that, at the wrong index.
    if (seenViews.has(view.name)) continue;
    seenViews.add(view.name);
    const viewIndex = raw.views.findIndex((v) => v.name === view.name);
    const names = [view.name, ...view.versions.map((v) => `${view.name}V${v.version}`)];
    for (const name of names) {
      const owner = fields.get(name);
      if (owner !== undefined) {
        at(['views', viewIndex, 'name'], `field "${name}" of ${entity.typeName} is generated twice (also ${owner})`, 'view names that do not collide on the entity type');
      } else fields.set(name, `view ${view.name}`);
    }
  }
  if (entity.singularField === entity.pluralField) {
    at(['entities', index, 'plural'], `plural field "${entity.pluralField}" equals the singular field`, 'a distinct plural name');
  }
}

function parseFeature(raw: RawFeature, path: (string | number)[], at: Report, materialization: Materialization | null, events: readonly EventSchema[],
  sourceDeclared: boolean): Feature {
  checkName(raw.name, [...path, 'name'], 'feature name', at);
  if (reservedFeatureNames.has(raw.name)) {
    at([...path, 'name'], `feature name "${raw.name}" is reserved`, `a name other than ${[...reservedFeatureNames].join(', ')}`);
  }
  const type = parseType(raw.type);
  if (!type) {
    at([...path, 'type'], `unknown type "${raw.type}"`, `one of ${scalarTypes.join(', ')}, or a list of one of them such as [Float!]`);
  }
  const resolvedType = type ?? { scalar: 'String' as const, list: false };
  const aggregate = materialization === null && sourceDeclared
    ? null
    : parseAggregate(raw.aggregate, { name: raw.name, type: resolvedType, typeName: raw.type }, materialization, events, path, at);
  return { name: raw.name, type: resolvedType, typeName: raw.type, description: raw.description ?? '', aggregate };
}

export function parseType(text: string): FeatureType | null {
  const list = /^\[\s*(\w+)\s*!\s*\]$/.exec(text);
  const scalar = (list ? list[1] : text) as ScalarTypeName;
  return scalarTypes.includes(scalar) ? { scalar, list: list !== null } : null;
}

function parseTtl(ttl: string | number, path: (string | number)[], at: Report): number {
  let seconds: number | null = null;
  if (typeof ttl === 'number') seconds = ttl > 0 ? ttl : null;
  else {
    const m = ttlPattern.exec(ttl);
    if (m) seconds = Number(m[1]) * ttlUnitSeconds[m[2] as keyof typeof ttlUnitSeconds];
  }
  if (seconds === null || seconds > maxTtlSeconds) {
    at(path, `bad TTL ${JSON.stringify(ttl)}`, `a positive duration of at most ${maxDurationDays}d: whole seconds, or a number with s, m, h or d (60s, 15m, 1h, 7d)`);
    return 1;
  }
  return seconds;
}

function checkName(name: string, path: (string | number)[], what: string, at: Report): void {
  if (!graphqlName.test(name) || name.startsWith('__')) {
    at(path, `${what} "${name}" is not a valid GraphQL name`, 'letters, digits and _ only, not starting with a digit or __ (/^[_A-Za-z][_0-9A-Za-z]*$/)');
  }
}

function checkUnique(seen: Map<string, number>, name: string, index: number, path: (string | number)[], what: string, at: Report): void {
  const first = seen.get(name);
  if (first !== undefined) at(path, `duplicate ${what} name "${name}" (first declared at index ${first})`, `a ${what} name used once`);
  else seen.set(name, index);
}

function position(doc: Document, lineCounter: LineCounter, path: (string | number)[]): { line: number; column: number } {
  // Walk up until a node exists: a missing property is reported at its parent.
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const pos = lineCounter.linePos(node.range[0]);
      return { line: pos.line, column: pos.col };
    }
  }
  return { line: 1, column: 1 };
}

function toPointer(path: (string | number)[]): string {
  return path.map((p) => `/${String(p).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

function unescapePointer(segment: string): string {
  return segment.replace(/~1/g, '/').replace(/~0/g, '~');
}
