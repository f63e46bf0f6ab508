import type { Framing } from './http-stream.js';

/**
 * Multipart HTTP subscriptions as Apollo Client's HttpLink and Apollo Router
 * speak them (`accept: multipart/mixed;subscriptionSpec="1.0"`): one response
 * per subscription, `multipart/mixed` with the boundary `graphql`, each part
 * a JSON object — `{"payload": <result>}` for a result, `{}` as a heartbeat —
 * and the closing boundary at the end. A part reaches the client when the
 * boundary after it does, so each part is written with the boundary that
 * closes it.
 */
const partHead = '\r\ncontent-type: application/json; charset=utf-8\r\n\r\n';
const boundary = '\r\n--graphql';

export const multipartFraming: Framing = {
  transport: 'multipart',
  headers: { 'content-type': 'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"' },
  opening: boundary,
  next: (resultJson) => `${partHead}{"payload":${resultJson}}${boundary}`,
  complete: '--\r\n',
  heartbeat: `${partHead}{}${boundary}`,
  heartbeatMs: 5_000,
};
