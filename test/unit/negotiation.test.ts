import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Wants, negotiate, parseAccept } from '../../runtime/negotiation.js';

/** Content negotiation of the GraphQL endpoint (runtime/negotiation.ts; README "Arrow responses"). */
const ARROW = 'application/vnd.apache.arrow.stream';
const name = (w: Wants): string => ['Json', 'Arrow', 'ArrowOrJson', 'Html', 'Nothing'][w]!;
const cases: [accept: string | undefined, post: Wants, get?: Wants][] = [
  // JSON stays the default.
  [undefined, Wants.Json],
  ['', Wants.Json],
  ['*/*', Wants.Json],
  ['application/*', Wants.Json],
  ['application/json', Wants.Json],
  ['application/graphql-response+json', Wants.Json],
  ['application/json; charset=utf-8', Wants.Json],
  // Arrow when named, with JSON as the fallback when it is acceptable too.
  [ARROW, Wants.Arrow],
  ['Application/Vnd.Apache.Arrow.Stream', Wants.Arrow],
  [`${ARROW}, application/json`, Wants.ArrowOrJson],
  [`${ARROW}, */*;q=0.1`, Wants.ArrowOrJson],
  [`application/json, ${ARROW}`, Wants.Json],
  [`${ARROW};q=0.5, application/json`, Wants.Json],
  [`application/json;q=0.1, ${ARROW}`, Wants.ArrowOrJson],
  [`application/graphql-response+json;q=0.9, ${ARROW};q=0.9`, Wants.Json],
  [`${ARROW};q=0.9, application/graphql-response+json;q=0.9`, Wants.ArrowOrJson],
  // A more specific range decides a type's weight.
  [`*/*;q=0.8, ${ARROW};q=0`, Wants.Json],
  [`application/*;q=0.5, ${ARROW}`, Wants.ArrowOrJson],
  [`${ARROW}, application/*;q=0`, Wants.Arrow],
  [`${ARROW}, application/json;q=0, application/graphql-response+json;q=0`, Wants.Arrow],
  // Nothing we answer: 406.
  ['text/html', Wants.Nothing, Wants.Html],
  ['application/xml', Wants.Nothing],
  ['image/*', Wants.Nothing],
  ['text/event-stream', Wants.Nothing],
  [`${ARROW};q=0, application/json;q=0`, Wants.Nothing],
  ['*/*;q=0', Wants.Nothing],
  ['not a media type', Wants.Nothing],
  [`${ARROW};q=2`, Wants.Nothing],
  [`${ARROW};q=0.5000`, Wants.Nothing],
  // A browser asking for a page (GET): Apollo Server's landing page; */* alone is not that.
  ['text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', Wants.Json, Wants.Html],
  ['text/html;q=0.5, application/json', Wants.Json, Wants.Json],
  [`text/html, ${ARROW}`, Wants.Arrow, Wants.Html],
];

describe('negotiate: which type an Accept header gets', () => {
  for (const [accept, post, get] of cases) {
    test(`${JSON.stringify(accept)}: POST ${name(post)}, GET ${name(get ?? post)}`, () => {
      assert.equal(name(negotiate(accept, false)), name(post));
      assert.equal(name(negotiate(accept, true)), name(get ?? post));
      // Memoized: the same answer again.
      assert.equal(name(negotiate(accept, false)), name(post));
    });
  }

  test('many distinct headers do not grow the memo without bound, and still answer right', () => {
    for (let i = 0; i < 1000; i++) assert.equal(negotiate(`application/x-${i}, ${ARROW}`, false), Wants.Arrow);
    assert.equal(negotiate(`application/x-1, ${ARROW}`, false), Wants.Arrow);
  });

  test('parseAccept: types lower-cased, parameters dropped, weights read, bad ranges skipped', () => {
    assert.deepEqual(parseAccept(`Application/JSON; charset=utf-8; q=0.5, ${ARROW}, bad, */html, text/*;q=x`), [
      { type: 'application/json', q: 0.5, position: 0 },
      { type: ARROW, q: 1, position: 1 },
    ]);
  });
});
