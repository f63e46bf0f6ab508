import { assemblePlan, viewSelection, type Plan, type PlanResult, type RootSpec } from '../plan.js';
import { distinctIds, type FeastReads } from './read.js';
import type { FeastPlan, FeastRequest } from './request.js';

/**
 * A Feast request's reads as the typed plan result the Arrow encoder takes
 * (serving/encoders/arrow.ts), so that `POST /get-online-features` answers
 * `Accept: application/vnd.apache.arrow.stream` with the same stream form as
 * a persisted GraphQL operation (decision 0031), not a second Arrow writer.
 *
 * The mapping: each join key of the request is a root field named after it
 * (`user_id`, `item_id`), its rows the request's entity rows in order
 * (duplicates kept), so row `i` of every record batch is entity row `i`;
 * each view version read for that key is a view field named as Feast's full
 * names name it (`clickStats`, or `clickStats@v1` for a version other than
 * the active one), selecting the features asked of it. Columns are therefore
 * `<view>.<feature>`, `<view>.eventTime` and `<view>.stale`. A join key no
 * requested feature is read for has no batch (it would have nothing to show).
 */
const plans = new WeakMap<FeastPlan, Map<string, { plan: Plan; keys: readonly number[]; slots: readonly number[] }>>();

/** The plan of a request's shape (its feature plan and the order of its join keys), made once per shape. */
function planOf(request: FeastRequest): { plan: Plan; keys: readonly number[]; slots: readonly number[] } {
  const shape = request.keys.map((k) => k.name).join('\u0000');
  let byShape = plans.get(request.plan);
  if (!byShape) plans.set(request.plan, (byShape = new Map()));
  let made = byShape.get(shape);
  if (made) return made;
  const feast = request.plan;
  const keyOf = request.keyOf;
  const specs: RootSpec[] = [];
  const keys: number[] = [];
  request.keys.forEach((key, k) => {
    const fields: RootSpec['fields'][number][] = [{ responseKey: 'id', kind: 'id' }];
    feast.views.forEach((view, slot) => {
      if (keyOf[slot] !== k) return;
      const parts = feast.columns.filter((c) => c.slot === slot).map((c) => ({ responseKey: c.feature.name, name: c.feature.name }));
      const selection = viewSelection(key.entity, view, parts);
      // The request parser admits only features of the view, each once: a selection always forms.
      if (typeof selection === 'string') throw new Error(`feast plan ${feast.operation}: ${selection}`);
      const active = view.version === key.entity.views.find((v) => v.name === view.viewName)?.activeVersion;
      fields.push({ responseKey: active ? view.viewName : `${view.viewName}@v${view.version}`, kind: 'view', selection });
    });
    if (fields.length === 1) return;
    specs.push({ responseKey: key.name, entity: key.entity, plural: true, fields });
    keys.push(k);
  });
  const plan = assemblePlan(feast.operation, specs);
  // The assembled plan's slots are its own; each is one of the Feast plan's (the same view versions).
  const slots = plan.views.map((view) => feast.views.indexOf(view));
  made = { plan, keys, slots };
  if (byShape.size < 64) byShape.set(shape, made);
  return made;
}

/** The typed result of a Feast request's reads, for the Arrow encoder. */
export function feastPlanResult(request: FeastRequest, reads: FeastReads): PlanResult {
  const { plan, keys, slots } = planOf(request);
  const distinct = distinctIds(request);
  const positions = slots.map((feastSlot) => {
    const ids = distinct[request.keyOf[feastSlot]!]!.ids;
    return new Map(ids.map((id, i) => [id, i]));
  });
  const results = slots.map((feastSlot) => reads.results[feastSlot]!);
  const failed = results.some((read) => read.some((answer) => answer instanceof Error));
  return { kind: 'result', plan, ids: keys.map((k) => request.keys[k]!.ids), reads: results, positions, failed };
}
