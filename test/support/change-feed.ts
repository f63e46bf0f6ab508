import type { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { encodeChange, type FeatureChange } from '../../eventlog/change-event.js';
import { activeVersionOf, type Registry } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import type { FeatureValues } from '../../store/codec.js';

/**
 * A store and an event log standing in for the materializer in subscription
 * tests: a change is written to the store, then its change event produced.
 * Event times start 50 s before `now` (fresh under clickStats' 60 s TTL) and
 * strictly increase; source offsets count up, so every change is new to the
 * readers' duplicate check.
 */
export class TestFeed {
  private offset = 0;
  private clock: number;

  constructor(readonly registry: Registry, readonly store: CodecStore, readonly log: EmbeddedLog, now: number) {
    this.clock = now - 50_000;
  }

  /** Writes the new value of the view's active version, then produces its change event. Returns the event time used. */
  async publish(entityName: string, id: string, viewName: string, values: FeatureValues): Promise<string> {
    const eventTimeMs = this.clock++;
    const view = this.registry.entities.find((e) => e.name === entityName)!.views.find((v) => v.name === viewName)!;
    const version = activeVersionOf(view);
    await this.store.write(version, [{ entityId: id, values, eventTimeMs }]);
    await this.log.produce([encodeChange(this.change(entityName, id, viewName, version.version, values, eventTimeMs))]);
    return new Date(eventTimeMs).toISOString();
  }

  /** A change event of these values (not produced). */
  change(entity: string, id: string, view: string, version: number, values: FeatureValues, eventTimeMs: number): FeatureChange {
    return {
      entity, id, view, version, values, eventTime: new Date(eventTimeMs).toISOString(),
      source: { topic: 'test-events', partition: 0, offset: this.offset++ },
    };
  }
}
