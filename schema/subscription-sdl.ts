import type { Registry } from './types.js';

/**
 * The subscription schema's SDL, generated from the registry like every other
 * SDL (sdl.ts): the types the gateway adds to its client-facing API schema to
 * serve `featureChanged` on every transport. The gateway attaches resolvers to
 * it (gateway/subscriptions/schema.ts); the text, descriptions included, is
 * what introspection and Sandbox show.
 */

/** Type names the subscription schema adds; the API schema must not have them already. */
export const subscriptionTypeNames = ['EntityType', 'FeatureChange', 'FeatureViewVersion', 'Subscription'] as const;
/** Type names live persisted operations add besides. */
export const liveOperationTypeNames = ['LiveOperationUpdate', 'JSON', 'JSONObject'] as const;

/** Fields of FeatureChange besides one per entity. */
export const featureChangeFields = ['entity', 'id', 'view', 'version', 'eventTime'] as const;

/** GraphQL enum value of an entity name: `user` → `USER`, `adCampaign` → `AD_CAMPAIGN`. */
export function entityEnumValue(entityName: string): string {
  return entityName.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** A GraphQL block string holding `text` (descriptions come from the registry). */
function described(text: string | undefined, indent = ''): string {
  if (!text) return '';
  return `${indent}"""\n${indent}${text.replace(/\\"""/g, '\\\\"""').replace(/"""/g, '\\"""').split('\n').join(`\n${indent}`)}\n${indent}"""\n`;
}

/**
 * The SDL of EntityType, FeatureChange, FeatureViewVersion and Subscription;
 * with `liveOperations` (the manifest queries that can be watched, by name)
 * also `Subscription.liveOperation` and its types (gateway/subscriptions/live-operations.ts).
 * `maxBatchIds` is named in the `ids` description. Throws when an entity's
 * field would clash with a field of FeatureChange.
 */
export function subscriptionSdl(registry: Registry, maxBatchIds: number, liveOperations?: readonly string[]): string {
  const reserved = new Set<string>(featureChangeFields);
  const entityFields = registry.entities.map((entity) => {
    if (reserved.has(entity.singularField)) throw new Error(`entity ${entity.name}: its field name "${entity.singularField}" clashes with a field of FeatureChange`);
    reserved.add(entity.singularField);
    return (
      described(
        `The changed ${entity.name} when \`entity\` is ${entityEnumValue(entity.name)}, otherwise null: the fields selected here, ` +
          `read through the gateway as \`${entity.singularField}(id:)\` would answer them when the event is sent ` +
          '(so a view value may already be newer than this event).',
        '  ',
      ) + `  ${entity.singularField}: ${entity.typeName}\n`
    );
  });
  return [
    described('An entity type of the feature registry.'),
    'enum EntityType {\n',
    ...registry.entities.map((e) => described(e.description, '  ') + `  ${entityEnumValue(e.name)}\n`),
    '}\n\n',
    described('A feature-view value of one entity changed (an event of the `feature-updates` topic).'),
    'type FeatureChange {\n',
    described('The entity type whose feature value changed.', '  '), '  entity: EntityType!\n',
    described("The entity's id.", '  '), '  id: ID!\n',
    described('The feature view whose value changed, by its registry name (e.g. `clickStats`).', '  '), '  view: String!\n',
    described('The version of the feature view that changed.', '  '), '  version: Int!\n',
    described('Event time (ISO-8601, UTC) of the newest event folded into the new value.', '  '), '  eventTime: String!\n',
    ...entityFields,
    '}\n\n',
    described('One version of a feature view, to watch that version rather than the active one.'),
    'input FeatureViewVersion {\n',
    described('The feature view, by its registry name (e.g. `clickStats`).', '  '), '  view: String!\n',
    described('Its version (1 to the newest in the registry).', '  '), '  version: Int!\n',
    '}\n\n',
    'type Subscription {\n',
    described(
      'Live changes of feature values: one event per change of a watched view version of an entity of `entity` whose id is in `ids`. ' +
        'Watched are the ACTIVE version of each view in `views` (of every view of the entity when neither `views` nor `versions` ' +
        'is given) and each view version in `versions`; changes of other versions (e.g. one being backfilled) are not sent, so ' +
        'one change of what is watched gives one event. A subscriber that falls behind gets one event per changed value ' +
        '(a newer change replaces a queued one; the entity is read when the event is sent); past SUBSCRIPTION_QUEUE_SIZE ' +
        'distinct values queued, the oldest queued event is dropped. Served over graphql-ws (WebSocket), SSE ' +
        '(graphql-sse, `accept: text/event-stream`) and multipart HTTP (`accept: multipart/mixed;subscriptionSpec="1.0"`) on this path.',
      '  ',
    ),
    '  featureChanged(\n',
    described('The entity type to watch.', '    '), '    entity: EntityType!\n',
    described(`Ids of the entities to watch (1 to MAX_BATCH_IDS, now ${maxBatchIds}).`, '    '), '    ids: [ID!]!\n',
    described('Watch the active version of these feature views of `entity` (registry names). With neither `views` nor `versions`: the active version of every view.', '    '),
    '    views: [String!]\n',
    described('Watch these exact view versions of `entity`, e.g. `[{ view: "clickStats", version: 1 }]` (select `clickStatsV1` to read it).', '    '),
    '    versions: [FeatureViewVersion!]\n',
    '  ): FeatureChange!\n',
    ...(liveOperations ? liveOperationField(liveOperations) : []),
    '}\n',
    ...(liveOperations ? liveOperationTypes() : []),
  ].join('');
}

function liveOperationField(names: readonly string[]): string[] {
  return [
    described(
      'A persisted operation of the manifest, kept live: the first update (revision 0) carries its full `result`, exactly what ' +
        'POST /graphql answers for it with these variables; each later one a JSON Patch (RFC 6902) of what changed since, sent ' +
        'only when something did. Applying the patches in order to the first result gives the result of running the operation ' +
        'at that moment. Changes that arrive while an update is computed or sent are coalesced into the next one. Values that ' +
        "turn stale or expire with time (eventTime + the view's TTL) are patched too, without a change event. A re-run that " +
        'fails (a store shard down) is patched to the errors the operation answers then, and run again every second until it ' +
        `answers without them. Known operations: ${names.join(', ')}.`,
      '  ',
    ),
    '  liveOperation(\n',
    described('The manifest operation, by its name (e.g. `RankingFeatures`) or its id (the SHA-256 of its body, as in `extensions.persistedQuery.sha256Hash`).', '    '),
    '    operation: String!\n',
    described('The operation\'s variables, as POST /graphql takes them (e.g. `{ "user": "1", "items": ["1", "2"] }`); checked the same way.', '    '),
    '    variables: JSONObject\n',
    '  ): LiveOperationUpdate!\n',
  ];
}

function liveOperationTypes(): string[] {
  return [
    '\n',
    described('Any JSON value (object, array, string, number, boolean or null), sent as it is.'),
    'scalar JSON\n\n',
    described('A JSON object, e.g. the variables of an operation: `{ "user": "1", "items": ["1", "2"] }`.'),
    'scalar JSONObject\n\n',
    described(
      'One update of a live persisted operation. Revision 0 carries the full `result`; every later revision carries `patch`, ' +
        'to be applied in order to the document so far. Revisions count up by one: a gap would mean an update was missed ' +
        '(it cannot be, on one subscription; resubscribe to start again from a full result).',
    ),
    'type LiveOperationUpdate {\n',
    described('0 for the first update (the full result), then 1, 2, … for each patch.', '  '),
    '  revision: Int!\n',
    described('Revision 0 only: the full response `{ "data": …, "errors"?: […] }`, exactly as POST /graphql answers the operation with these variables; null in later revisions.', '  '),
    '  result: JSON\n',
    described(
      'Later revisions only: an RFC 6902 JSON Patch (a list of `{ "op", "path", "value"? }`; paths are JSON Pointers into the document, ' +
        "e.g. `/data/items/3/itemStats/ctr`) taking the previous revision's document to this one. Never empty. Null in revision 0.",
      '  ',
    ),
    '  patch: JSON\n',
    '}\n',
  ];
}
