import type { Framing } from './http-stream.js';

/**
 * Server-sent events in the graphql-sse protocol's distinct-connections mode
 * (the `graphql-sse` package's client with `singleConnection: false`, or any
 * EventSource-style reader): one response per subscription, each result an
 * event `next` whose data is the result's JSON, the end an event `complete`.
 * graphql-sse's own handler is not used: it pulls results as fast as they
 * come into an unbounded queue of its own, which would defeat the bounded
 * per-subscription queue and the send gate (decision 0034). Single-connection
 * mode (a PUT reserving a stream, then operations POSTed to it) is not
 * served: it needs a token shared across requests, which brings CSRF rules
 * of its own, for no gain a client of this gateway needs.
 */
export const sseFraming: Framing = {
  transport: 'sse',
  headers: { 'content-type': 'text/event-stream; charset=utf-8', 'x-accel-buffering': 'no' },
  opening: ':\n\n',
  next: (resultJson) => `event: next\ndata: ${resultJson}\n\n`,
  complete: 'event: complete\ndata:\n\n',
  heartbeat: ':\n\n',
  heartbeatMs: 12_000,
};
