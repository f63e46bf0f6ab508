import { parseArgs } from 'node:util';
import { defaultManifestFile, readManifest } from './manifest.js';
import { defaultRegistryFile, loadRegistry } from './registry.js';
import { planRegistryChange, type RegistryPlan } from './registry-plan.js';

/**
 * `npm run plan -- <candidate.yaml> [--current <registry.yaml>] [--manifest <file>] [--json] [--allow-breaking]`:
 * what replacing the current registry with the candidate changes and breaks.
 *
 * Exit codes: 0 the plan is safe (or breaking and --allow-breaking given);
 * 1 the plan is breaking; 2 bad arguments; 3 a registry or the manifest does not load.
 */
const usage = 'usage: npm run plan -- <candidate registry.yaml> [--current <registry.yaml>] [--manifest <manifest.json>] [--json] [--allow-breaking]';

function main(argv: string[]): number {
  let args;
  try {
    args = parseArgs({
      args: argv, allowPositionals: true,
      options: { current: { type: 'string' }, manifest: { type: 'string' }, json: { type: 'boolean' }, 'allow-breaking': { type: 'boolean' } },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n${usage}`);
    return 2;
  }
  if (args.positionals.length !== 1) {
    console.error(usage);
    return 2;
  }
  let plan: RegistryPlan;
  try {
    const current = loadRegistry(args.values.current ?? defaultRegistryFile);
    const candidate = loadRegistry(args.positionals[0]!);
    plan = planRegistryChange(current, candidate, readManifest(args.values.manifest ?? defaultManifestFile));
  } catch (error) {
    console.error((error as Error).message);
    return 3;
  }
  const allowed = args.values['allow-breaking'] === true;
  if (args.values.json) console.log(JSON.stringify(plan, null, 2));
  else console.log(renderPlan(plan, allowed));
  return plan.breaking && !allowed ? 1 : 0;
}

function renderPlan(plan: RegistryPlan, allowed: boolean): string {
  const lines = [`registry plan: ${plan.current.file} (${plan.current.version}) → ${plan.candidate.file} (${plan.candidate.version})`, ''];
  if (plan.changes.length === 0) lines.push('no changes');
  else {
    const rows = plan.changes.map((c) => [c.kind, c.subject, c.detail, c.breaking ? `yes: ${c.why}` : 'no']);
    lines.push(...table(['CHANGE', 'SUBJECT', 'DETAIL', 'BREAKING'], rows));
  }
  if (plan.schemaBreaks.length > 0) {
    lines.push('', `breaking schema changes (${plan.schemaBreaks.length}):`);
    for (const b of plan.schemaBreaks) lines.push(`  ${b.type}  ${b.description}`);
  }
  if (plan.brokenOperations.length > 0) {
    lines.push('', `persisted operations that no longer validate (${plan.brokenOperations.length}):`);
    for (const op of plan.brokenOperations) lines.push(`  ${op.name} (${op.id.slice(0, 12)}…): ${op.errors.join(' ')}`);
  }
  lines.push('');
  if (!plan.breaking) lines.push('result: safe to apply');
  else if (allowed) lines.push('result: BREAKING, allowed by --allow-breaking');
  else lines.push('result: BREAKING, refused (exit 1); pass --allow-breaking to accept it');
  return lines.join('\n');
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)];
}

process.exitCode = main(process.argv.slice(2));
