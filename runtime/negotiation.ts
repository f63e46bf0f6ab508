/**
 * Content negotiation of the GraphQL endpoint (GraphQL over HTTP; RFC 9110 §12.5.1): which of
 * the types it answers the client's `Accept` prefers. JSON is the default: no `Accept`, `*`/`*`
 * and `application/*` get JSON; Arrow only when the client names it at least as high as
 * either JSON type. Which of the two JSON types is Apollo Server's to choose, as before.
 */
export const MediaType = {
  GraphQLResponseJson: 'application/graphql-response+json',
  Json: 'application/json',
  ArrowStream: 'application/vnd.apache.arrow.stream',
  Html: 'text/html',
  EventStream: 'text/event-stream',
  Multipart: 'multipart/mixed',
} as const;

/** The subscription transports this endpoint serves, as messages name them. */
export const subscriptionTransports =
  'graphql-ws (a WebSocket with subprotocol graphql-transport-ws), SSE (`accept: text/event-stream`, the graphql-sse protocol) ' +
  'and multipart HTTP (`accept: multipart/mixed;subscriptionSpec="1.0"`, as Apollo Client sends it)';

export type StreamTransport = 'sse' | 'multipart';

/**
 * The subscription transport an Accept header asks for, or undefined for an ordinary request:
 * `text/event-stream`, or `multipart/mixed` with a `subscriptionSpec` parameter (multipart/mixed
 * with `deferSpec` alone is Apollo's incremental delivery of queries, Apollo Server's to answer).
 * The first range listed with a weight above 0 decides.
 */
export function streamTransportOf(accept: string | undefined): StreamTransport | undefined {
  if (accept === undefined || (!accept.includes('event-stream') && !/subscriptionspec/i.test(accept))) return undefined;
  for (const range of accept.split(',')) {
    const [typePart, ...params] = range.split(';');
    const type = typePart!.trim().toLowerCase();
    const named = new Map(params.map((p) => {
      const [name, value] = p.split('=').map((x) => x.trim());
      return [name!.toLowerCase(), value ?? ''] as const;
    }));
    if (named.has('q') && Number(named.get('q')) === 0) continue;
    if (type === MediaType.EventStream) return 'sse';
    if (type === MediaType.Multipart && named.has('subscriptionspec')) return 'multipart';
  }
  return undefined;
}

/** The types a GraphQL request can be answered in, as a 406 names them. */
export const answerableTypes = [MediaType.GraphQLResponseJson, MediaType.Json, MediaType.ArrowStream] as const;

export const enum Wants {
  /** GraphQL JSON (either JSON type). */
  Json,
  /** An Arrow IPC stream, and nothing JSON is acceptable. */
  Arrow,
  /** An Arrow IPC stream preferably; JSON is acceptable too (for an operation with no Arrow form). */
  ArrowOrJson,
  /** A browser's page (a GET preferring text/html): Apollo Server's landing page. */
  Html,
  /** None of the types this endpoint answers: 406. */
  Nothing,
}

/** How one media range of an Accept header matches a type: its weight, specificity and position. */
interface Match {
  readonly q: number;
  /** 2: type/subtype, 1: type/*, 0: *\/*. */
  readonly specificity: number;
  readonly position: number;
}

const none: Match = { q: 0, specificity: -1, position: Infinity };

/**
 * The format `accept` asks for. `html`: whether text/html competes (a GET, where a browser asks
 * for the Sandbox page); it ranks last among equals, as in Apollo Server's own check. Memoized
 * per header value: clients send a handful; the map is cleared when full, so hostile variety
 * cannot grow it.
 */
export function negotiate(accept: string | undefined, html: boolean): Wants {
  if (accept === undefined || accept === '' || accept === '*/*' || accept === MediaType.Json) return Wants.Json;
  const memo = html ? withHtml : withoutHtml;
  let wants = memo.get(accept);
  if (wants === undefined) {
    wants = decide(parseAccept(accept), html);
    if (memo.size >= 256) memo.clear();
    memo.set(accept, wants);
  }
  return wants;
}
const withHtml = new Map<string, Wants>();
const withoutHtml = new Map<string, Wants>();

function decide(ranges: readonly MediaRange[], html: boolean): Wants {
  const json = better(matchOf(ranges, MediaType.GraphQLResponseJson), matchOf(ranges, MediaType.Json));
  const arrow = matchOf(ranges, MediaType.ArrowStream);
  if (html) {
    const page = matchOf(ranges, MediaType.Html);
    // Ranked after the others on a tie: `*/*` alone is not a browser asking for a page.
    if (page.q > 0 && beats(page, better(json, arrow))) return Wants.Html;
  }
  if (arrow.q > 0 && (json.q === 0 || beats(arrow, json))) return json.q > 0 ? Wants.ArrowOrJson : Wants.Arrow;
  return json.q > 0 ? Wants.Json : Wants.Nothing;
}

/** Whether `a` is strictly preferred to `b`: higher weight, then a more specific range, then listed earlier. */
function beats(a: Match, b: Match): boolean {
  if (a.q !== b.q) return a.q > b.q;
  if (a.specificity !== b.specificity) return a.specificity > b.specificity;
  return a.position < b.position;
}

function better(a: Match, b: Match): Match {
  return beats(b, a) ? b : a;
}

/** The most specific range matching `type` decides its weight (RFC 9110 §12.5.1); among equally specific ones the first. */
function matchOf(ranges: readonly MediaRange[], type: string): Match {
  const slash = type.indexOf('/');
  const main = type.slice(0, slash);
  let found = none;
  for (const range of ranges) {
    const specificity = range.type === type ? 2 : range.type === `${main}/*` ? 1 : range.type === '*/*' ? 0 : -1;
    if (specificity > found.specificity) found = { q: range.q, specificity, position: range.position };
  }
  return found;
}

interface MediaRange {
  /** `type/subtype`, lower case, parameters dropped. */
  readonly type: string;
  readonly q: number;
  readonly position: number;
}

/**
 * The media ranges of an Accept header. A range that does not parse (no `type/subtype`, a
 * weight that is not 0–1 with at most three decimals) is ignored, as by Apollo Server's
 * negotiator; parameters other than `q` do not restrict the match.
 */
export function parseAccept(accept: string): MediaRange[] {
  const ranges: MediaRange[] = [];
  const parts = accept.split(',');
  for (let i = 0; i < parts.length; i++) {
    const [typePart, ...params] = parts[i]!.split(';');
    const type = typePart!.trim().toLowerCase();
    if (!/^[a-z0-9!#$&^_.+*-]+\/[a-z0-9!#$&^_.+*-]+$/.test(type) || (type.startsWith('*/') && type !== '*/*')) continue;
    let q = 1;
    let valid = true;
    for (const param of params) {
      const [name, value] = param.split('=').map((s) => s.trim());
      if (name?.toLowerCase() !== 'q') continue;
      if (value === undefined || !/^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(value)) valid = false;
      else q = Number(value);
    }
    if (valid) ranges.push({ type, q, position: i });
  }
  return ranges;
}
