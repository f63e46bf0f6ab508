import type { BatchFigure } from './batch-sizes.js';
/**
 * Turns benchmark results into the markdown table and the SVG chart that the
 * README shows. The chart is a few rectangles and labels; a charting library
 * (vega, chart.js with a canvas) was considered and declined: either would
 * need a headless renderer to produce a static file.
 */

export interface SystemFigures {
  readonly system: string;
  readonly workload: string;
  readonly mode: 'closed' | 'open';
  readonly requests: number;
  readonly errors: number;
  readonly non200: number;
  readonly graphqlErrors: number;
  readonly throughput: number;
  readonly offeredRate?: number;
  /** Open loop: requests per second the generator actually sent in the measured window. */
  readonly achievedRate?: number;
  /** Open loop: how late the generator sent against the schedule (charged to the latencies). */
  readonly sendLagMs?: { readonly p99: number; readonly max: number };
  /** A system with a hot tier: its lookups over the measured runs, from /metrics (ratio null: no such metric). */
  readonly hotTier?: HotTierFigures;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** Deltas of `feature_hot_tier_lookups_total{outcome}` over a system's measured runs. */
export interface HotTierFigures {
  readonly hits: number;
  readonly misses: number;
  readonly bypass: number;
  /** hits / (hits + misses + bypass); null when the gateway exposes no such metric. */
  readonly ratio: number | null;
}

/** W4's background stream of raw events, as produced and as the materializer applied it. */
export interface ChangeStreamSummary {
  readonly targetRate: number;
  readonly events: number;
  readonly seconds: number;
  readonly achievedRate: number;
  readonly failedBatches: number;
  /** clickStats values the materializer applied per second meanwhile (all versions), from its /metrics. */
  readonly appliedPerSecond: number | null;
}

export interface BenchResult {
  readonly startedAt: string;
  readonly machine: { cpus: number; model: string; node: string; memoryGiB: number };
  readonly settings: Record<string, unknown>;
  readonly figures: readonly SystemFigures[];
  readonly changeStream?: ChangeStreamSummary;
  /** The batch-size table's figures (loadtest/batch-sizes.ts). */
  readonly batchSizes?: readonly BatchFigure[];
  readonly durationSeconds?: number;
}

const fmt = (n: number, digits = 2): string => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const ratio = (a: number, b: number): string => (b > 0 ? `${fmt(a / b)}×` : 'n/a');
const hot = (f: SystemFigures): string => (!f.hotTier ? '' : f.hotTier.ratio === null ? 'n/a' : `${(f.hotTier.ratio * 100).toFixed(1)} %`);

/** The figures as markdown; each of `subjects` (the gateway, with its hot tier on and off) gets its ratios to each baseline. */
export function markdownTable(result: BenchResult, subjects: readonly string[], baselines: readonly string[]): string {
  const lines: string[] = [];
  const workloads = [...new Set(result.figures.map((f) => f.workload))];
  const find = (system: string, workload: string, mode: 'closed' | 'open') =>
    result.figures.find((f) => f.system === system && f.workload === workload && f.mode === mode);

  // The hot tier's hit ratio, beside the figures of a system that has one (only when some system has).
  const hotColumn = result.figures.some((f) => f.hotTier);
  const [hotHead, hotRule] = hotColumn ? [' hot hits |', '---:|'] : ['', ''];
  const hotCell = (f: SystemFigures): string => (hotColumn ? ` ${hot(f)} |` : '');

  lines.push('### Max throughput (closed loop)', '');
  lines.push(`| workload | system | req/s | p50 ms | p99 ms | p99.9 ms | errors |${hotHead} ${baselines.map((b) => `vs ${b}`).join(' | ')} |`);
  lines.push(`|---|---|---:|---:|---:|---:|---:|${hotRule}${baselines.map(() => '---:').join('|')}|`);
  for (const w of workloads) {
    for (const f of result.figures.filter((x) => x.workload === w && x.mode === 'closed')) {
      const ratios = baselines.map((b) => (subjects.includes(f.system) ? ratio(f.throughput, find(b, w, 'closed')?.throughput ?? NaN) : ''));
      lines.push(`| ${w} | ${f.system} | ${Math.round(f.throughput)} | ${fmt(f.p50)} | ${fmt(f.p99)} | ${fmt(f.p999)} | ${f.errors + f.non200 + f.graphqlErrors} |${hotCell(f)} ${ratios.join(' | ')} |`);
    }
  }
  lines.push('', '### Latency at a fixed offered rate (open loop by vegeta, half the raw baseline\'s max)', '');
  lines.push(`| workload | system | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | send lag p99 ms | errors/unsent |${hotHead} ${baselines.map((b) => `p99 vs ${b}`).join(' | ')} |`);
  lines.push(`|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|${hotRule}${baselines.map(() => '---:').join('|')}|`);
  for (const w of workloads) {
    for (const f of result.figures.filter((x) => x.workload === w && x.mode === 'open')) {
      const ratios = baselines.map((b) => (subjects.includes(f.system) ? ratio(f.p99, find(b, w, 'open')?.p99 ?? NaN) : ''));
      const l = (ms: number): string => (f.requests > 0 ? fmt(ms) : 'n/a');
      lines.push(`| ${w} | ${f.system} | ${Math.round(f.offeredRate ?? 0)} | ${Math.round(f.achievedRate ?? f.throughput)} | ${l(f.p50)} | ${l(f.p90)} | ${l(f.p99)} | ${l(f.p999)} | ${l(f.max)} | ${f.sendLagMs && f.requests > 0 ? fmt(f.sendLagMs.p99) : 'n/a'} | ${f.errors + f.non200 + f.graphqlErrors} |${hotCell(f)} ${ratios.join(' | ')} |`);
    }
  }
  const c = result.changeStream;
  if (c) {
    lines.push('', `W4's change stream: ${Math.round(c.achievedRate)} click events/s achieved of ${c.targetRate} targeted ` +
      `(${c.events} events over ${c.seconds.toFixed(0)} s, ${c.failedBatches} failed batches); the materializer applied ` +
      `${c.appliedPerSecond === null ? 'n/a' : Math.round(c.appliedPerSecond)} clickStats values/s meanwhile (every version of the view).`);
  }
  return lines.join('\n') + '\n';
}

/**
 * One system against another on the workloads both ran: throughput (closed
 * loop) and p99 (open loop) side by side with their ratios, e.g. the gateway
 * on a Redis Cluster against the same gateway on one Redis node.
 */
export function comparisonTable(result: BenchResult, subject: string, baseline: string, title: string): string {
  const find = (system: string, workload: string, mode: 'closed' | 'open') =>
    result.figures.find((f) => f.system === system && f.workload === workload && f.mode === mode);
  const workloads = [...new Set(result.figures.map((f) => f.workload))].filter((w) => find(subject, w, 'closed') && find(baseline, w, 'closed'));
  if (workloads.length === 0) return '';
  const lines = [`### ${title}`, ''];
  lines.push(`| workload | ${subject} req/s | ${baseline} req/s | throughput × | ${subject} p99 ms | ${baseline} p99 ms | p99 × |`);
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const w of workloads) {
    const [sc, bc, so, bo] = [find(subject, w, 'closed')!, find(baseline, w, 'closed')!, find(subject, w, 'open'), find(baseline, w, 'open')];
    lines.push(`| ${w} | ${Math.round(sc.throughput)} | ${Math.round(bc.throughput)} | ${ratio(sc.throughput, bc.throughput)} | ` +
      `${so ? fmt(so.p99) : 'n/a'} | ${bo ? fmt(bo.p99) : 'n/a'} | ${so && bo ? ratio(so.p99, bo.p99) : 'n/a'} |`);
  }
  return lines.join('\n') + '\n';
}

const palette = ['#2f6fdf', '#e0823d', '#7f7f7f', '#3aa35b', '#b04fc4', '#c9a227', '#d1495b'];

/** Two panels: closed-loop throughput, and open-loop p50/p99/p99.9 on a log scale. */
export function svgChart(result: BenchResult, systems: readonly string[]): string {
  const workloads = [...new Set(result.figures.map((f) => f.workload))];
  const width = 920;
  const panelHeight = 260;
  const top = 40;
  const left = 70;
  const plotWidth = width - left - 30;
  const groupWidth = plotWidth / workloads.length;
  const barWidth = Math.min(40, (groupWidth - 30) / systems.length);
  const parts: string[] = [];
  const text = (x: number, y: number, s: string, extra = ''): string =>
    `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-family="sans-serif" font-size="12" ${extra}>${escapeXml(s)}</text>`;

  // Panel 1: throughput, linear.
  const closed = result.figures.filter((f) => f.mode === 'closed');
  const maxThroughput = Math.max(1, ...closed.map((f) => f.throughput));
  parts.push(text(left, top - 14, 'Max throughput, closed loop (req/s; higher is better)', 'font-weight="bold"'));
  const y0 = top + panelHeight;
  parts.push(`<line x1="${left}" y1="${y0}" x2="${left + plotWidth}" y2="${y0}" stroke="#333"/>`);
  workloads.forEach((w, wi) => {
    const gx = left + wi * groupWidth + 15;
    systems.forEach((s, si) => {
      const f = closed.find((x) => x.workload === w && x.system === s);
      if (!f) return;
      const h = (f.throughput / maxThroughput) * (panelHeight - 20);
      const x = gx + si * barWidth;
      parts.push(`<rect x="${x.toFixed(1)}" y="${(y0 - h).toFixed(1)}" width="${(barWidth - 4).toFixed(1)}" height="${h.toFixed(1)}" fill="${palette[si % palette.length]}"/>`);
      parts.push(text(x, y0 - h - 4, String(Math.round(f.throughput)), 'font-size="10"'));
    });
    parts.push(text(gx, y0 + 16, w));
  });

  // Panel 2: open-loop latency percentiles, log scale.
  const open = result.figures.filter((f) => f.mode === 'open');
  const top2 = y0 + 70;
  const y1 = top2 + panelHeight;
  const maxMs = Math.max(1, ...open.map((f) => f.p999));
  const minMs = 0.05;
  const logY = (ms: number): number => y1 - ((Math.log10(Math.max(ms, minMs)) - Math.log10(minMs)) / (Math.log10(maxMs * 1.2) - Math.log10(minMs))) * (panelHeight - 20);
  parts.push(text(left, top2 - 14, 'Latency at half the raw baseline\'s max rate, open loop (ms, log scale; p50 ▪ p99 ▬ p99.9 ▴)', 'font-weight="bold"'));
  parts.push(`<line x1="${left}" y1="${y1}" x2="${left + plotWidth}" y2="${y1}" stroke="#333"/>`);
  for (const tick of [0.1, 1, 10, 100, 1000, 10000]) {
    if (tick > maxMs * 1.2) break;
    const y = logY(tick);
    parts.push(`<line x1="${left}" y1="${y.toFixed(1)}" x2="${left + plotWidth}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
    parts.push(text(left - 50, y + 4, `${tick} ms`, 'font-size="10"'));
  }
  workloads.forEach((w, wi) => {
    const gx = left + wi * groupWidth + 15;
    systems.forEach((s, si) => {
      const f = open.find((x) => x.workload === w && x.system === s);
      if (!f) return;
      const x = gx + si * barWidth;
      const color = palette[si % palette.length];
      parts.push(`<rect x="${x.toFixed(1)}" y="${logY(f.p99).toFixed(1)}" width="${(barWidth - 4).toFixed(1)}" height="${(y1 - logY(f.p99)).toFixed(1)}" fill="${color}" fill-opacity="0.35"/>`);
      parts.push(`<rect x="${(x + (barWidth - 4) / 2 - 3).toFixed(1)}" y="${(logY(f.p50) - 3).toFixed(1)}" width="6" height="6" fill="${color}"/>`);
      parts.push(`<line x1="${x.toFixed(1)}" y1="${logY(f.p99).toFixed(1)}" x2="${(x + barWidth - 4).toFixed(1)}" y2="${logY(f.p99).toFixed(1)}" stroke="${color}" stroke-width="3"/>`);
      parts.push(`<path d="M ${(x + (barWidth - 4) / 2).toFixed(1)} ${(logY(f.p999) - 4).toFixed(1)} l 4 7 l -8 0 z" fill="${color}"/>`);
    });
    parts.push(text(gx, y1 + 16, w));
  });

  // Legend.
  const legendY = y1 + 40;
  systems.forEach((s, si) => {
    const x = left + si * 200;
    parts.push(`<rect x="${x}" y="${legendY - 10}" width="12" height="12" fill="${palette[si % palette.length]}"/>`);
    parts.push(text(x + 18, legendY, s));
  });
  const height = legendY + 20;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><rect width="100%" height="100%" fill="white"/>${parts.join('')}</svg>\n`;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
