/**
 * The push API's rules beyond GraphQL's types (subgraphs/push.ts) and its
 * generated SDL (schema/sdl.ts): which views get a mutation, the input rows'
 * types, and that the supergraph still composes.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Kind, parse, print, type DocumentNode, type InputObjectTypeDefinitionNode, type ObjectTypeDefinitionNode } from 'graphql';
import { composeSupergraph } from '../../schema/supergraph.js';
import { loadRegistry, parseRegistry } from '../../schema/registry.js';
import { entitySubgraphSdl, isPushable, pushFieldsOf } from '../../schema/sdl.js';
import { activeVersionOf, findEntity, type Entity } from '../../schema/types.js';
import { parseEventTime, PushError, validatePush, type PushRowInput } from '../../subgraphs/push.js';
import { viewOf } from '../support/registry-text.js';

const registry = loadRegistry();
const profile = activeVersionOf(viewOf(registry, 'profile'));
const NOW = Date.parse('2026-11-26T12:00:00Z');
const limits = { maxBatchIds: 3, maxFutureMs: 60_000 };
const good = (id: string, extra: Record<string, unknown> = {}): PushRowInput => ({
  id, sessionLength: 120, isPremium: false, country: 'DE', embedding: [0.5, -1], ...extra,
});

/** The PushError `rows` raise; fails when they are accepted. */
function rejection(rows: readonly PushRowInput[], at = NOW): PushError {
  try {
    validatePush(profile, rows, at, limits);
  } catch (error) {
    assert.ok(error instanceof PushError, `expected a PushError, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ${JSON.stringify(rows)} to be rejected`);
}

describe('parseEventTime', () => {
  test('strict ISO-8601 with a zone, to ms since the epoch', () => {
    assert.equal(parseEventTime('2026-11-26T12:00:00Z'), NOW);
    assert.equal(parseEventTime('2026-11-26T12:00Z'), NOW);
    assert.equal(parseEventTime('2026-11-26T13:30:00+01:30'), NOW);
    assert.equal(parseEventTime('2026-11-26T10:00:00.250-02:00'), NOW + 250);
    assert.equal(parseEventTime('2026-11-26T12:00:00.123456789Z'), NOW + 123);
    assert.equal(parseEventTime('2024-02-29T00:00:00Z'), Date.UTC(2024, 1, 29));
  });

  test('refuses zone-less, impossible and non-ISO times', () => {
    for (const text of [
      '2026-11-26T12:00:00', '2026-11-26', '2026-02-30T00:00:00Z', '2025-02-29T00:00:00Z', '2026-13-01T00:00:00Z',
      '2026-11-26T24:00:00Z', '2026-11-26T12:60:00Z', '2026-11-26T12:00:61Z', '2026-11-26T12:00:00+25:00', 'Thu Nov 26 2026',
      '1764158400000', '', ' 2026-11-26T12:00:00Z', '2026-11-26t12:00:00z',
    ]) {
      assert.equal(parseEventTime(text), null, text);
    }
  });
});

describe('validatePush', () => {
  test('accepts good rows; eventTime defaults to now; values keep every feature', () => {
    const rows = validatePush(profile, [good('1'), good('2', { eventTime: '2026-11-26T11:59:00Z' })], NOW, limits);
    assert.deepEqual(rows, [
      { entityId: '1', values: { sessionLength: 120, isPremium: false, country: 'DE', embedding: [0.5, -1] }, eventTimeMs: NOW },
      { entityId: '2', values: { sessionLength: 120, isPremium: false, country: 'DE', embedding: [0.5, -1] }, eventTimeMs: NOW - 60_000 },
    ]);
    // An explicit null eventTime means "now" too, as GraphQL passes an omitted nullable field as absent or null.
    assert.equal(validatePush(profile, [good('3', { eventTime: null })], NOW, limits)[0]!.eventTimeMs, NOW);
  });

  test('an eventTime up to PUSH_MAX_FUTURE_MS ahead or up to the TTL behind is accepted', () => {
    const ahead = new Date(NOW + limits.maxFutureMs).toISOString();
    const behind = new Date(NOW - profile.ttlSeconds * 1000).toISOString();
    const rows = validatePush(profile, [good('1', { eventTime: ahead }), good('2', { eventTime: behind })], NOW, limits);
    assert.deepEqual(rows.map((r) => r.eventTimeMs), [NOW + limits.maxFutureMs, NOW - profile.ttlSeconds * 1000]);
  });

  test('each broken rule is a PUSH_INVALID error naming the row and field', () => {
    const cases: { rows: PushRowInput[]; row: number | null; field: string | null; reason: RegExp }[] = [
      { rows: [], row: null, field: null, reason: /at least one row/ },
      { rows: [good('1'), good('')], row: 1, field: 'id', reason: /non-empty id, got ""/ },
      { rows: [good('  ')], row: 0, field: 'id', reason: /non-empty id/ },
      { rows: [good('1'), good('2'), good('1')], row: 2, field: 'id', reason: /id "1" is also in rows\[0\]/ },
      { rows: [good('1', { eventTime: 'yesterday' })], row: 0, field: 'eventTime', reason: /ISO-8601 .* got "yesterday"/ },
      { rows: [good('1', { eventTime: '2026-11-26T12:00:00' })], row: 0, field: 'eventTime', reason: /with a zone/ },
      { rows: [good('1', { eventTime: 1764158400000 })], row: 0, field: 'eventTime', reason: /ISO-8601/ },
      { rows: [good('1', { eventTime: '2026-11-26T12:01:00.001Z' })], row: 0, field: 'eventTime', reason: /more than 60000 ms ahead .*PUSH_MAX_FUTURE_MS/ },
      { rows: [good('1', { eventTime: '2030-01-01T00:00:00Z' })], row: 0, field: 'eventTime', reason: /ahead of the server's clock/ },
      { rows: [good('1', { eventTime: '2026-11-19T11:59:59Z' })], row: 0, field: 'eventTime', reason: /older than the view's TTL \(7d\)/ },
      { rows: [good('1', { embedding: [] })], row: 0, field: 'embedding', reason: /non-empty list \(\[Float!\]\)/ },
      { rows: [good('1', { embedding: [1, Number.NaN] })], row: 0, field: 'embedding', reason: /expects \[Float!\]/ },
      { rows: [good('1'), good('2', { embedding: [Infinity] })], row: 1, field: 'embedding', reason: /expects \[Float!\]/ },
      { rows: [good('1', { sessionLength: 1.5 })], row: 0, field: 'sessionLength', reason: /expects Int \(32-bit integers\), got 1.5/ },
      { rows: [good('1', { sessionLength: 2 ** 31 })], row: 0, field: 'sessionLength', reason: /32-bit/ },
      { rows: [good('1', { isPremium: 'yes' })], row: 0, field: 'isPremium', reason: /expects Boolean, got "yes"/ },
      { rows: [good('1', { country: null })], row: 0, field: 'country', reason: /is required: a push replaces the whole stored value/ },
      { rows: [{ id: '1', sessionLength: 1, isPremium: true, embedding: [1] }], row: 0, field: 'country', reason: /is required/ },
      { rows: [good('1', { clicks: 3 })], row: 0, field: 'clicks', reason: /not a feature of profile v1; its features are sessionLength, isPremium, country, embedding/ },
    ];
    for (const { rows, row, field, reason } of cases) {
      const error = rejection(rows);
      const what = JSON.stringify(rows);
      assert.equal(error.code, 'PUSH_INVALID', what);
      assert.equal(error.row, row, what);
      assert.equal(error.field, field, what);
      assert.match(error.reason, reason, what);
      assert.match(error.message, new RegExp(`^push to profile v1: ${row === null ? '' : `rows\\[${row}\\]\\.${field}: `}`), error.message);
    }
  });

  test('more rows than MAX_BATCH_IDS is BATCH_TOO_LARGE', () => {
    const error = rejection([good('1'), good('2'), good('3'), good('4')]);
    assert.equal(error.code, 'BATCH_TOO_LARGE');
    assert.match(error.message, /4 rows; at most 3 per call \(MAX_BATCH_IDS\)/);
  });
});

function definition<T extends ObjectTypeDefinitionNode | InputObjectTypeDefinitionNode>(doc: DocumentNode, kind: T['kind'], name: string): T | undefined {
  return doc.definitions.find((d): d is T => d.kind === kind && (d as T).name.value === name);
}

function entity(name: string): Entity {
  const e = findEntity(registry, name);
  assert.ok(e, name);
  return e;
}

describe('push SDL', () => {
  test('views without a source are pushable; streamed ones are not', () => {
    const pushable = registry.entities.flatMap((e) => e.views).filter(isPushable).map((v) => v.name);
    assert.deepEqual(pushable, ['profile', 'riskProfile']);
    assert.deepEqual([...pushFieldsOf(entity('user')).keys()], ['pushUserProfile', 'pushUserProfileV1', 'pushUserRiskProfile', 'pushUserRiskProfileV1']);
    assert.equal(pushFieldsOf(entity('item')).size, 0);
  });

  test('user: one mutation for the active version and one per version, typed input rows, a shareable result', () => {
    const doc = parse(entitySubgraphSdl(entity('user')));
    const mutation = definition<ObjectTypeDefinitionNode>(doc, Kind.OBJECT_TYPE_DEFINITION, 'Mutation');
    assert.ok(mutation);
    assert.deepEqual(mutation.fields?.map((f) => `${f.name.value}(${f.arguments?.map((a) => `${a.name.value}: ${print(a.type)}`).join(', ')}): ${print(f.type)}`), [
      'pushUserProfile(rows: [UserProfileV1Push!]!): PushResult!',
      'pushUserProfileV1(rows: [UserProfileV1Push!]!): PushResult!',
      'pushUserRiskProfile(rows: [UserRiskProfileV1Push!]!): PushResult!',
      'pushUserRiskProfileV1(rows: [UserRiskProfileV1Push!]!): PushResult!',
    ]);
    assert.match(mutation.fields![0]!.description!.value, /the active version, v1.*Requires the admin role/s);
    const input = definition<InputObjectTypeDefinitionNode>(doc, Kind.INPUT_OBJECT_TYPE_DEFINITION, 'UserProfileV1Push');
    assert.ok(input);
    assert.deepEqual(input.fields?.map((f) => `${f.name.value}: ${print(f.type)}`), [
      'id: ID!', 'eventTime: String', 'sessionLength: Int!', 'isPremium: Boolean!', 'country: String!', 'embedding: [Float!]!',
    ]);
    assert.match(input.fields!.find((f) => f.name.value === 'embedding')!.description!.value, /^User embedding from the two-tower model\. \(A non-empty list\.\)$/);
    const result = definition<ObjectTypeDefinitionNode>(doc, Kind.OBJECT_TYPE_DEFINITION, 'PushResult');
    assert.deepEqual(result?.directives?.map((d) => print(d)), ['@shareable']);
  });

  test('entities with only streamed views have no Mutation type', () => {
    for (const name of ['item', 'merchant']) {
      assert.equal(definition(parse(entitySubgraphSdl(entity(name))), Kind.OBJECT_TYPE_DEFINITION, 'Mutation'), undefined, name);
    }
  });

  test('the supergraph composes with the mutations, also when two subgraphs define PushResult', () => {
    const supergraph = composeSupergraph(registry.entities.map((e) => ({ name: e.name, typeDefs: parse(entitySubgraphSdl(e)), url: `http://127.0.0.1:1/${e.name}` })));
    assert.match(supergraph, /pushUserProfile\(rows: \[UserProfileV1Push!\]!\): PushResult!/);

    const two = parseRegistry(`entities:
  - { name: user, type: User, key: id, description: U. }
  - { name: shop, type: Shop, key: id, description: S. }
views:
  - name: a
    entity: user
    description: A.
    owner: o@example.com
    ttl: 1h
    versions: [{ version: 1, features: [{ name: x, type: Int, description: X. }] }]
  - name: b
    entity: shop
    description: B.
    owner: o@example.com
    ttl: 1h
    versions: [{ version: 1, features: [{ name: y, type: String, description: Y. }] }]
`, 'two.yaml');
    const composed = composeSupergraph(two.entities.map((e) => ({ name: e.name, typeDefs: parse(entitySubgraphSdl(e)), url: `http://127.0.0.1:1/${e.name}` })));
    assert.match(composed, /pushUserA\(rows: \[UserAV1Push!\]!\): PushResult!/);
    assert.match(composed, /pushShopB\(rows: \[ShopBV1Push!\]!\): PushResult!/);
  });
});
