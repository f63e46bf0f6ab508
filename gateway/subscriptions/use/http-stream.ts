import type http from 'node:http';
import { OperationTypeNode, getOperationAST, parse, type ExecutionResult, type GraphQLError } from 'graphql';
import { ErrorCode } from '../../../runtime/errors.js';
import type { IncomingOperation } from '../../../runtime/graphql-http.js';
import { log as rootLog } from '../../../runtime/log.js';
import { rejectedRequests } from '../../../runtime/metrics.js';
import type { Principal } from '../../../auth/principal.js';
import type { SubscribeRequest, SubscriptionCore, Transport, TransportName } from '../core.js';
import { ConnectionStreams } from '../hub.js';
import { SendGate } from '../send-gate.js';

/**
 * Subscriptions over one HTTP response each, the part SSE and multipart
 * HTTP share: the request is a subscribe request (a POST body, or GET query
 * parameters), the response a stream of results in the transport's framing
 * (`Framing`: sse.ts, multipart.ts), ended when the subscription completes,
 * the client goes away, or the gateway shuts down. The HTTP front
 * (runtime/graphql-http.ts) has already authenticated the caller (headers,
 * rate limit) and bounded the body; the core checks the rest, as for every
 * transport. Sends go through the send gate with the same bounds and stall
 * close as a WebSocket's (a stalled response is destroyed: its end could not
 * get through either).
 */

/** How a transport frames a response. */
export interface Framing {
  readonly transport: TransportName;
  /** Response headers (content type and the transport's own). */
  readonly headers: Readonly<Record<string, string>>;
  /** Written first, with the headers. */
  readonly opening: string;
  /** One result of the subscription, as its JSON text. */
  next(resultJson: string): string;
  /** The subscription ended (completed, or the gateway is shutting down). */
  readonly complete: string;
  /** Keeps proxies from timing the idle response out; written every `heartbeatMs`. */
  readonly heartbeat: string;
  readonly heartbeatMs: number;
}

/** A request's subscription transport, as its Accept header names it; undefined: not a streaming request. */
export type StreamPicker = (accept: string | undefined) => Framing | undefined;

const log = rootLog.child({ component: 'subscriptions' });

export interface HttpStreamDoor extends Transport {
  /** Serves one subscribe request on its response, resolving true when the response ended; false at once for a request that is no subscription. */
  serve(req: http.IncomingMessage, res: http.ServerResponse, operation: IncomingOperation, principal: Principal | undefined, framing: Framing): Promise<boolean>;
}

export function useHttpStreams(core: SubscriptionCore): HttpStreamDoor {
  const { config } = core;
  /** Each open response and how to end it. */
  const open = new Map<http.ServerResponse, () => void>();
  let sending = 0;

  async function serve(req: http.IncomingMessage, res: http.ServerResponse, operation: IncomingOperation, principal: Principal | undefined, framing: Framing): Promise<boolean> {
    const request = subscribeRequest(req, operation);
    if (request === undefined) return false;
    if (typeof request === 'string') {
      rejectedRequests.inc({ code: ErrorCode.BadRequest });
      refuse(res, framing, [{ message: request, extensions: { code: ErrorCode.BadRequest } }]);
      return true;
    }
    // A query asking for a stream is the front's to answer (JSON where acceptable, else a 406 naming the transports).
    if (!isSubscription(request)) return false;
    await stream(res, request, principal, framing);
    return true;
  }

  async function stream(res: http.ServerResponse, request: SubscribeRequest, principal: Principal | undefined, framing: Framing): Promise<void> {
    if (core.isClosing) {
      rejectedRequests.inc({ code: ErrorCode.ShuttingDown });
      return refuse(res, framing, [{ message: 'The server is shutting down; subscribe on another instance', extensions: { code: ErrorCode.ShuttingDown } }]);
    }
    const streams = new ConnectionStreams();
    const prepared = await core.prepare({ transport: framing.transport, principal, streams }, request, 1);
    if (Array.isArray(prepared)) return refuse(res, framing, (prepared as GraphQLError[]).map((e) => e.toJSON()));
    const results = await core.execute(prepared);
    if (!(Symbol.asyncIterator in results)) {
      // A subscription that failed between prepare and execute (its stream was opened by prepare): its errors.
      return refuse(res, framing, (results.errors ?? []).map((e) => e.toJSON()));
    }

    sending++;
    let ended = false;
    const gate = new SendGate(
      {
        bufferedBytes: () => res.writableLength,
        isOpen: () => !ended && !res.destroyed && res.writable,
        write: (data, done) => void res.write(data, done),
        closeTooSlow: () => end(false),
        destroy: () => res.destroy(),
      },
      { maxBufferedBytes: config.subscriptionSendBufferBytes, stallTimeoutMs: config.subscriptionStallTimeoutMs },
    );
    /** Ends the subscription; `complete`: with the transport's end (else the response is cut off: a stalled client). */
    const end = (complete: boolean): void => {
      if (ended) return;
      ended = true;
      streams.end();
      gate.release();
      void results.return?.();
      if (complete && !res.destroyed) res.end(framing.complete);
      else res.destroy();
    };
    open.set(res, () => end(true));
    res.on('close', () => end(false));
    res.writeHead(200, { 'cache-control': 'no-store', ...framing.headers });
    res.write(framing.opening);
    const heartbeat = setInterval(() => void gate.send(framing.heartbeat), framing.heartbeatMs);
    heartbeat.unref();
    try {
      for await (const result of results as AsyncIterable<ExecutionResult>) {
        if (ended) break;
        await gate.send(framing.next(JSON.stringify(result)));
      }
      end(true);
    } catch (error) {
      log.error({ err: (error as Error).message, transport: framing.transport }, 'subscription stream failed');
      if (!ended) await gate.send(framing.next(JSON.stringify({ errors: [{ message: 'The subscription failed', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] })));
      end(true);
    } finally {
      clearInterval(heartbeat);
      open.delete(res);
      sending--;
    }
  }

  /** Refused before its first event: one result with the errors, then the end (200, as graphql-sse's own handler answers them). */
  function refuse(res: http.ServerResponse, framing: Framing, errors: readonly object[]): void {
    const body = framing.opening + framing.next(JSON.stringify({ errors })) + framing.complete;
    res.writeHead(200, { 'cache-control': 'no-store', ...framing.headers, 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  }

  return {
    name: 'http-stream',
    serve,
    connections: () => open.size,
    sending: () => sending,
    close: async () => {
      for (const end of [...open.values()]) end();
      while (sending > 0) await new Promise((r) => setTimeout(r, 10));
    },
  };
}

/** Whether the request's operation is a subscription (a document that does not parse is not: the front reports it). */
function isSubscription(request: SubscribeRequest): boolean {
  try {
    const document = parse(request.query as string, { maxTokens: 20_000 });
    return getOperationAST(document, typeof request.operationName === 'string' ? request.operationName : undefined)?.operation === OperationTypeNode.SUBSCRIPTION;
  } catch {
    return false;
  }
}

/**
 * The subscribe request of a POST body (already parsed JSON) or of GET query parameters; undefined
 * when there is no query text (e.g. a persisted query by hash: the front's to answer); a string
 * says what is wrong.
 */
function subscribeRequest(req: http.IncomingMessage, operation: IncomingOperation): SubscribeRequest | string | undefined {
  if (req.method !== 'GET') return typeof operation.query === 'string' ? operation : undefined;
  const params = new URL(req.url ?? '/', 'http://localhost').searchParams;
  const query = params.get('query');
  if (query === null) return undefined;
  const parsed: Record<string, unknown> = { query, operationName: params.get('operationName') ?? undefined };
  for (const key of ['variables', 'extensions'] as const) {
    const text = params.get(key);
    if (text === null) continue;
    try {
      parsed[key] = JSON.parse(text);
    } catch (error) {
      return `The \`${key}\` query parameter is not JSON: ${(error as Error).message}`;
    }
  }
  return parsed;
}
