import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  Kind, parse, print,
  type DocumentNode, type FieldDefinitionNode, type ObjectTypeDefinitionNode, type StringValueNode,
} from 'graphql';
import { entitySubgraphSdl, versionFieldName, viewTypeName } from '../../schema/sdl.js';
import { loadRegistry, parseRegistry } from '../../schema/registry.js';
import { findEntity, type Entity } from '../../schema/types.js';
import { composeSupergraph, CompositionError, type SubgraphDefinition } from '../../schema/supergraph.js';

const registry = loadRegistry();

function entity(name: string): Entity {
  const e = findEntity(registry, name);
  assert.ok(e, `entity ${name}`);
  return e;
}

function objectType(doc: DocumentNode, name: string): ObjectTypeDefinitionNode {
  const found = doc.definitions.find((d): d is ObjectTypeDefinitionNode => d.kind === Kind.OBJECT_TYPE_DEFINITION && d.name.value === name);
  assert.ok(found, `type ${name} is defined`);
  return found;
}

function field(type: ObjectTypeDefinitionNode, name: string): FieldDefinitionNode {
  const found = type.fields?.find((f) => f.name.value === name);
  assert.ok(found, `field ${type.name.value}.${name} is defined`);
  return found;
}

/** `name(args): Type` as printed by graphql-js, without the description. */
function signature(f: FieldDefinitionNode): string {
  const args = f.arguments?.length ? `(${f.arguments.map((a) => `${a.name.value}: ${print(a.type)}`).join(', ')})` : '';
  return `${f.name.value}${args}: ${print(f.type)}`;
}

const userDoc = parse(entitySubgraphSdl(entity('user')));

describe('entitySubgraphSdl', () => {
  test('every entity SDL parses', () => {
    for (const e of registry.entities) assert.doesNotThrow(() => parse(entitySubgraphSdl(e)), e.name);
  });

  test('links federation v2 and keys each entity type by id', () => {
    for (const e of registry.entities) {
      const doc = parse(entitySubgraphSdl(e));
      const link = doc.definitions.find((d) => d.kind === Kind.SCHEMA_EXTENSION);
      assert.ok(link && print(link).includes('https://specs.apollo.dev/federation/v2'), 'schema @link to federation v2');
      const type = objectType(doc, e.typeName);
      assert.deepEqual(type.directives?.map((d) => print(d)), ['@key(fields: "id")']);
      assert.equal(signature(field(type, 'id')), 'id: ID!');
    }
  });

  test('root fields: one by id and a batch by ids', () => {
    const query = objectType(userDoc, 'Query');
    assert.equal(signature(field(query, 'user')), 'user(id: ID!): User');
    assert.equal(signature(field(query, 'users')), 'users(ids: [ID!]!): [User]!');
    assert.equal(signature(field(query, 'featureRegistry')), 'featureRegistry: FeatureRegistry!');
    const items = objectType(parse(entitySubgraphSdl(entity('item'))), 'Query');
    assert.equal(signature(field(items, 'item')), 'item(id: ID!): Item');
    assert.equal(signature(field(items, 'items')), 'items(ids: [ID!]!): [Item]!');
  });

  test('versioned view fields, the unversioned one being the active version', () => {
    const user = objectType(userDoc, 'User');
    assert.deepEqual(user.fields?.map(signature), [
      'id: ID!',
      'clickStats: UserClickStatsV2',
      'clickStatsV1: UserClickStatsV1',
      'clickStatsV2: UserClickStatsV2',
      'profile: UserProfileV1',
      'profileV1: UserProfileV1',
      'riskProfile: UserRiskProfileV1',
      'riskProfileV1: UserRiskProfileV1',
    ]);
    const [v1, v2] = entity('user').views[0]!.versions;
    assert.equal(viewTypeName(entity('user'), v1!), 'UserClickStatsV1');
    assert.equal(viewTypeName(entity('user'), v2!), 'UserClickStatsV2');
    assert.equal(versionFieldName(v1!), 'clickStatsV1');
    assert.equal(versionFieldName(v2!), 'clickStatsV2');
  });

  test('view types carry their typed features, eventTime: String and stale: Boolean!', () => {
    assert.deepEqual(objectType(userDoc, 'UserClickStatsV1').fields?.map(signature), [
      'clickRate: Float', 'eventTime: String', 'stale: Boolean!',
    ]);
    assert.deepEqual(objectType(userDoc, 'UserClickStatsV2').fields?.map(signature), [
      'clickRate: Float', 'clicks: Int', 'impressions: Int', 'eventTime: String', 'stale: Boolean!',
    ]);
    assert.deepEqual(objectType(userDoc, 'UserProfileV1').fields?.map(signature), [
      'sessionLength: Int', 'isPremium: Boolean', 'country: String', 'embedding: [Float!]', 'eventTime: String', 'stale: Boolean!',
    ]);
    for (const e of registry.entities) {
      const doc = parse(entitySubgraphSdl(e));
      for (const view of e.views) {
        for (const version of view.versions) {
          const type = objectType(doc, viewTypeName(e, version));
          assert.equal(signature(field(type, 'eventTime')), 'eventTime: String');
          assert.equal(signature(field(type, 'stale')), 'stale: Boolean!');
        }
      }
    }
  });

  test('descriptions carry description, owner, TTL, version, tags and source', () => {
    const user = objectType(userDoc, 'User');
    const active = field(user, 'clickStats').description?.value ?? '';
    assert.match(active, /^Click-through behaviour of a user over the last minutes\. \(the active version, v2\)/);
    assert.ok(active.includes('Owner: ranking-team@example.com'), active);
    // The registry's 60s is shown in its largest whole unit (formatTtl).
    assert.ok(active.includes('TTL: 1m'), active);
    assert.ok(active.includes('Version: 2 (active) of 2'), active);
    assert.ok(active.includes('Tags: engagement, realtime'), active);
    assert.ok(active.includes('Source: click-events'), active);

    const old = field(user, 'clickStatsV1').description?.value ?? '';
    assert.ok(old.includes('(version 1)'), old);
    assert.ok(old.includes('Version: 1 of 2'), old);
    assert.ok(!old.includes('(active)'), old);

    const profile = field(user, 'profile').description?.value ?? '';
    assert.ok(profile.includes('Owner: identity-team@example.com'), profile);
    assert.ok(profile.includes('TTL: 7d'), profile);
    assert.ok(profile.includes('Tags: profile, batch'), profile);
    assert.ok(!profile.includes('Source:'), 'profile has no source');

    const risk = field(objectType(parse(entitySubgraphSdl(entity('merchant'))), 'Merchant'), 'riskStats').description?.value ?? '';
    assert.ok(risk.includes('TTL: 1h') && risk.includes('Owner: fraud-team@example.com'), risk);

    const typeDescription = user.description?.value ?? '';
    assert.ok(typeDescription.startsWith('A person using the product'), typeDescription);
    assert.ok(typeDescription.includes('clickStats (v2 active, TTL 1m)'), typeDescription);

    assert.equal(field(objectType(userDoc, 'UserProfileV1'), 'embedding').description?.value, 'User embedding from the two-tower model.');
    assert.match(field(objectType(userDoc, 'UserClickStatsV2'), 'stale').description?.value ?? '', /TTL \(1m\)/);
  });

  test('descriptions with quotes and backslashes survive exactly', () => {
    const tricky = ['Amount in "EUR"', 'a path C:\\temp\\', 'has """ inside', 'ends with """', '"quoted"'];
    const text = `entities:
  - name: user
    type: User
    key: id
    description: 'A user "quoted"'
views:
  - name: s
    entity: user
    description: D.
    owner: o@example.com
    tags: ['needs "quotes"']
    ttl: 60s
    versions:
      - version: 1
        features:
${tricky.map((d, i) => `          - { name: f${i}, type: Float, description: ${JSON.stringify(d)} }`).join('\n')}
`;
    const e = parseRegistry(text, 'tricky.yaml').entities[0]!;
    const doc = parse(entitySubgraphSdl(e));
    const type = objectType(doc, 'UserSV1');
    tricky.forEach((d, i) => assert.equal(field(type, `f${i}`).description?.value, d));
    assert.ok((field(objectType(doc, 'User'), 's').description as StringValueNode).value.endsWith('Tags: needs "quotes"'));
  });
});

describe('composeSupergraph', () => {
  const subgraphs: SubgraphDefinition[] = registry.entities.map((e) => ({
    name: e.name,
    typeDefs: parse(entitySubgraphSdl(e)),
    url: `http://127.0.0.1:1/${e.name}`,
  }));

  test('the three entity subgraphs compose', () => {
    const supergraph = composeSupergraph(subgraphs);
    const doc = parse(supergraph);
    for (const type of ['User', 'Item', 'Merchant', 'UserClickStatsV2', 'MerchantRiskStatsV1', 'FeatureRegistry']) objectType(doc, type);
    const query = objectType(doc, 'Query');
    for (const name of ['user', 'users', 'item', 'items', 'merchant', 'merchants', 'featureRegistry']) field(query, name);
    for (const e of registry.entities) assert.ok(supergraph.includes(`url: "http://127.0.0.1:1/${e.name}"`), `join__Graph for ${e.name}`);
  });

  test('a broken pair (the same non-shareable root field twice) throws CompositionError', () => {
    const user = subgraphs[0]!;
    assert.throws(() => composeSupergraph([user, { ...user, name: 'user_copy', url: 'http://127.0.0.1:1/copy' }]), (e: unknown) => {
      assert.ok(e instanceof CompositionError);
      assert.equal(e.name, 'CompositionError');
      assert.ok(e.errors.length > 0);
      assert.ok(e.errors.some((m) => m.includes('Query.user')), e.errors.join('\n'));
      assert.match(e.message, /^supergraph composition failed:/);
      return true;
    });
  });

  test('a minimal conflicting pair throws CompositionError naming the field', () => {
    const sdl = (typeName: string): DocumentNode => parse(`extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])
type Query { thing: ${typeName} }`);
    assert.throws(
      () => composeSupergraph([{ name: 'a', typeDefs: sdl('Int'), url: 'http://a' }, { name: 'b', typeDefs: sdl('Int'), url: 'http://b' }]),
      (e: unknown) => e instanceof CompositionError && e.errors.some((m) => m.includes('Query.thing')),
    );
  });
});
