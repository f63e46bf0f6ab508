/**
 * The checks that run on a request before anything parses it
 * (decision 0020): bracket nesting of the query text, the shape of the
 * persisted-query extension, and the depth walk over fragments.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Kind, parse, type FragmentDefinitionNode, type OperationDefinitionNode } from 'graphql';
import { nestingAdmission, queryNesting, selectionDepth } from '../../gateway/limits.js';
import { checkPersistedQuery } from '../../gateway/persisted-queries.js';
import { sha256Hex } from '../../schema/manifest.js';

describe('queryNesting', () => {
  it('counts braces, brackets and parentheses together', () => {
    assert.equal(queryNesting('{ a }'), 1);
    assert.equal(queryNesting('{ a(ids: [["1"]]) { b { c } } }'), 4);
    assert.equal(queryNesting('{ a { ... on A { ... { b } } } }'), 4);
    assert.equal(queryNesting(''), 0);
  });

  it('ignores brackets inside strings, block strings and comments', () => {
    assert.equal(queryNesting('{ a(s: "{{{[[[(((") }'), 2);
    assert.equal(queryNesting('{ a(s: "\\"{{{") }'), 2);
    assert.equal(queryNesting('{ a(s: """ {{{ \\""" {{{ """) }'), 2);
    assert.equal(queryNesting('# {{{{{{\n{ a }'), 1);
    assert.equal(queryNesting('{ a } # {{{{'), 1);
  });

  it('counts an unterminated string or unbalanced closers without going below zero', () => {
    assert.equal(queryNesting('}}} { a { b'), 2);
    assert.equal(queryNesting('{ a(s: "{{{ \n { b } }'), 3);
  });

  it('stops once past the bound', () => {
    assert.equal(queryNesting('{'.repeat(100_000), 64), 65);
  });

  it('admits up to the limit and refuses past it with QUERY_TOO_DEEP', () => {
    const admit = nestingAdmission(8);
    assert.equal(admit({ query: `${'{ a '.repeat(8)}${'}'.repeat(8)}` }), undefined);
    const refusal = admit({ query: `${'{ a '.repeat(9)}${'}'.repeat(9)}` });
    assert.equal(refusal?.code, 'QUERY_TOO_DEEP');
    assert.equal(refusal?.status, 400);
    assert.match(refusal!.message, /MAX_QUERY_NESTING/);
    assert.equal(admit({ query: 42 }), undefined, 'a query of the wrong type is left to Apollo Server');
  });
});

describe('checkPersistedQuery', () => {
  const query = '{ __typename }';
  const hash = sha256Hex(query);
  const pq = (persistedQuery: unknown, q?: string) => checkPersistedQuery({ query: q, extensions: { persistedQuery } });

  it('lets a well-formed extension through, with or without its query', () => {
    assert.equal(pq({ version: 1, sha256Hash: hash }), undefined);
    assert.equal(pq({ version: 1, sha256Hash: hash }, query), undefined);
    assert.equal(checkPersistedQuery({ query }), undefined);
    assert.equal(checkPersistedQuery({ query, extensions: { persistedQuery: null } }), undefined);
  });

  it('refuses a malformed one with PERSISTED_QUERY_INVALID', () => {
    for (const [value, message] of [
      ['x', /must be an object/],
      [[], /must be an object/],
      [{ version: 2, sha256Hash: hash }, /version 2/],
      [{ sha256Hash: hash }, /version undefined/],
      [{ version: 1 }, /64 lowercase hex digits/],
      [{ version: 1, sha256Hash: hash.slice(1) }, /64 lowercase hex digits/],
      [{ version: 1, sha256Hash: hash.toUpperCase() }, /64 lowercase hex digits/],
      [{ version: 1, sha256Hash: 42 }, /64 lowercase hex digits/],
    ] as const) {
      const refusal = pq(value);
      assert.equal(refusal?.code, 'PERSISTED_QUERY_INVALID', JSON.stringify(value));
      assert.equal(refusal?.status, 400);
      assert.match(refusal!.message, message);
    }
  });

  it('refuses a hash that is not the SHA-256 of the query sent with it', () => {
    const refusal = pq({ version: 1, sha256Hash: hash }, '{ other }');
    assert.equal(refusal?.code, 'PERSISTED_QUERY_INVALID');
    assert.match(refusal!.message, /does not match/);
  });
});

describe('selectionDepth over fragments', () => {
  it('walks a fragment fan-out once per fragment (2^60 paths would never finish)', () => {
    const n = 60;
    let text = '{ ...F0 }';
    for (let i = 0; i < n; i++) text += ` fragment F${i} on Q { ...F${i + 1} ...F${i + 1} }`;
    text += ` fragment F${n} on Q { a { b } }`;
    const document = parse(text);
    const fragments = new Map<string, FragmentDefinitionNode>();
    for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
    const operation = document.definitions[0] as OperationDefinitionNode;
    assert.equal(selectionDepth(operation.selectionSet, fragments, new Set()), 2);
  });
});
