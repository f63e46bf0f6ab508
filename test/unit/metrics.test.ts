import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Counter, Histogram, Registry } from 'prom-client';
import { BindableCounter, BindableHistogram } from '../../runtime/metrics.js';

/**
 * The serving path records through bound label sets (runtime/metrics.ts); what a scrape shows
 * must be exactly what prom-client's own observe/inc would have recorded, mixed use included.
 */
/** The exposition's lines, in order within a series but not across series (first seen may differ; Prometheus does not care). */
const lines = async (registry: Registry): Promise<string[]> => (await registry.metrics()).split('\n').sort();

describe('bound metrics', () => {
  const buckets = [0.001, 0.01, 0.1, 1];
  const values = [0.0005, 0.001, 0.003, 0.05, 0.7, 3, 0, 1];

  it('a bound histogram scrapes as prom-client observations would, alongside unbound ones', async () => {
    const plainRegistry = new Registry();
    const boundRegistry = new Registry();
    const plain = new Histogram({ name: 'h', help: 'h', labelNames: ['op'], buckets, registers: [plainRegistry] });
    const bindable = new BindableHistogram({ name: 'h', help: 'h', labelNames: ['op'], buckets, registers: [boundRegistry] });
    const a = bindable.bind({ op: 'a' });
    for (const v of values) {
      plain.observe({ op: 'a' }, v);
      a.observe(v);
      // The same label set through the ordinary API too (the generic path does that).
      plain.observe({ op: 'a' }, v / 2);
      bindable.observe({ op: 'a' }, v / 2);
      plain.observe({ op: 'b' }, v);
      bindable.observe({ op: 'b' }, v);
    }
    assert.deepEqual(await lines(boundRegistry), await lines(plainRegistry));
    // Read twice: nothing is added twice.
    a.observe(0.02);
    plain.observe({ op: 'a' }, 0.02);
    assert.deepEqual(await lines(boundRegistry), await lines(plainRegistry));
    assert.deepEqual(await bindable.get(), await plain.get());
    bindable.reset();
    plain.reset();
    a.observe(0.2);
    plain.observe({ op: 'a' }, 0.2);
    assert.deepEqual(await lines(boundRegistry), await lines(plainRegistry));
    assert.throws(() => a.observe(Number.NaN), TypeError);
  });

  it('a bound counter scrapes as prom-client increments would', async () => {
    const plainRegistry = new Registry();
    const boundRegistry = new Registry();
    const plain = new Counter({ name: 'c', help: 'c', labelNames: ['op', 'outcome'], registers: [plainRegistry] });
    const bindable = new BindableCounter({ name: 'c', help: 'c', labelNames: ['op', 'outcome'], registers: [boundRegistry] });
    const served = bindable.bind({ op: 'a', outcome: 'served' });
    for (let i = 0; i < 5; i++) {
      served.inc();
      plain.inc({ op: 'a', outcome: 'served' });
    }
    served.inc(3);
    plain.inc({ op: 'a', outcome: 'served' }, 3);
    bindable.inc({ op: 'a', outcome: 'generic' });
    plain.inc({ op: 'a', outcome: 'generic' });
    assert.deepEqual(await lines(boundRegistry), await lines(plainRegistry));
    assert.deepEqual(await lines(boundRegistry), await lines(plainRegistry));
    assert.throws(() => served.inc(-1));
  });
});
