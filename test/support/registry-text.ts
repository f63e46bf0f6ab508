import assert from 'node:assert/strict';
import { parseRegistry, RegistryError, type RegistryIssue } from '../../schema/registry.js';
import { findView, type FeatureView, type Registry } from '../../schema/types.js';

/** Helpers for tests that edit a registry's YAML text and check what validation says about it. */

/** `text` with its only occurrence of `from` replaced by `to`. */
export function replaceOnce(text: string, from: string, to: string): string {
  const at = text.indexOf(from);
  assert.ok(at >= 0 && text.indexOf(from, at + 1) < 0, `test setup: ${JSON.stringify(from)} must occur exactly once`);
  return text.slice(0, at) + to + text.slice(at + from.length);
}

/** 1-based line and column of the only occurrence of `needle` in `text`. */
export function positionOf(text: string, needle: string): { line: number; column: number } {
  const at = text.indexOf(needle);
  assert.ok(at >= 0 && text.indexOf(needle, at + 1) < 0, `test setup: ${JSON.stringify(needle)} must occur exactly once`);
  const before = text.slice(0, at);
  return { line: before.split('\n').length, column: at - before.lastIndexOf('\n') };
}

/** The issues of a registry that must be rejected. */
export function registryIssues(text: string, file: string): readonly RegistryIssue[] {
  try {
    parseRegistry(text, file);
  } catch (error) {
    assert.ok(error instanceof RegistryError, `expected a RegistryError, got ${String(error)}`);
    assert.ok(error.issues.length > 0);
    return error.issues;
  }
  assert.fail('expected the registry to be rejected');
}

/** The only issue of a rejected registry; fails listing all of them if there are more. */
export function onlyRegistryIssue(text: string, file: string): RegistryIssue {
  const issues = registryIssues(text, file);
  assert.equal(issues.length, 1, `expected one issue, got:\n${issues.map((i) => `${i.path}: ${i.message}`).join('\n')}`);
  return issues[0]!;
}

export function viewOf(registry: Registry, name: string): FeatureView {
  const v = findView(registry, name);
  assert.ok(v, `view ${name} exists`);
  return v;
}
