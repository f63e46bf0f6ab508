import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { MIMEType } from 'node:util';
import { HeaderMap, type ApolloServer, type BaseContext, type HTTPGraphQLRequest } from '@apollo/server';
import { AccessError } from '../auth/errors.js';
import { principalKey, type Principal } from '../auth/principal.js';
import { Deadline, deadlineKey } from './deadline.js';
import type { ServerTls } from './config.js';
import { ErrorCode } from './errors.js';
import { log } from './log.js';
import { metricsRegistry, rejectedRequests, requestDuration, type BoundHistogram } from './metrics.js';
import { MediaType, Wants, answerableTypes, negotiate, streamTransportOf, subscriptionTransports, type StreamTransport } from './negotiation.js';

/**
 * The HTTP front of every process that serves GraphQL (the gateway and each
 * subgraph). Apollo Server's own integration API (`executeHTTPGraphQLRequest`)
 * on a bare `node:http` server: no framework on the hot path, and full
 * control over body limits, malformed bodies and the operational endpoints.
 *
 *   POST|GET /graphql   GraphQL: JSON, or an Arrow IPC stream when the Accept header asks for it
 *                       (negotiation.ts; 406 when it accepts none of the types); Sandbox for browsers on GET
 *   POST <door path>    a JSON door beside GraphQL (`doors`: the Feast-compatible /get-online-features)
 *   GET /metrics        Prometheus metrics
 *   GET /healthz        the process is up
 *   GET /readyz         the process can serve (its `ready` check passes)
 *
 * HTTPS when given TLS material (the same routes; WebSocket upgrades on it are
 * wss). CORS headers only for configured origins. CSRF: a request that a
 * browser could send cross-site without a preflight (Apollo Server's rule,
 * `csrfSuspect` below) never reaches the fast path or JSON parsing here; it
 * goes straight to Apollo Server, which refuses it with its own 400.
 */
export interface ReadyStatus {
  readonly ready: boolean;
  readonly checks: Record<string, string>;
}

/** A GraphQL request as it arrives, before Apollo Server sees it. */
export interface IncomingOperation {
  readonly query?: unknown;
  readonly extensions?: unknown;
  readonly variables?: unknown;
  readonly operationName?: unknown;
}

/**
 * Answers a request without Apollo Server when it can: the response body and
 * the operation name for metrics; or hands it to the generic path, with the
 * request context that path should start from (it may carry what the fast
 * path already read, failed reads included); or undefined: not its own.
 * `deadline` is the request's (REQUEST_DEADLINE_MS), when the server has one.
 */
export type FastPath = (operation: IncomingOperation, principal: Principal | undefined, deadline: Deadline | undefined) => Promise<FastPathResult | undefined>;
export type FastPathResult =
  | { readonly kind: 'answered'; readonly body: string; readonly operation: string }
  | { readonly kind: 'generic'; readonly context: object };

/**
 * Answers a request asking for an Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream`):
 * the stream and the operation name for metrics; a refusal (the door's own checks, counted by
 * it); or `unavailable`: the operation has no Arrow form, and why (the front then answers JSON
 * if the client accepts it, else 406). There is no generic path behind it.
 */
export type ArrowPath = (operation: IncomingOperation, principal: Principal | undefined, deadline: Deadline | undefined) => Promise<ArrowPathResult>;
export type ArrowPathResult =
  | { readonly kind: 'answered'; readonly body: Uint8Array; readonly operation: string }
  | ({ readonly kind: 'refused' } & Refusal)
  | { readonly kind: 'unavailable'; readonly reason: string };

/** Refuses a request before execution: `{ code, message, status }`, or undefined to let it through. */
export type Admission = (operation: IncomingOperation, principal?: Principal) => Refusal | undefined;
export interface Refusal {
  readonly code: string;
  readonly message: string;
  readonly status: number;
}

/**
 * Who sends a request, from its headers alone (before its body is read), or
 * an AccessError (401, 403, 429) to refuse it, thrown or as a rejection.
 * `landingPage`: a browser asks for the Sandbox page. Without this hook
 * requests carry no principal. It may answer synchronously (no credentials,
 * an API key): the front then awaits nothing.
 */
export type Authenticate = (req: http.IncomingMessage, landingPage: boolean) => Principal | undefined | Promise<Principal | undefined>;

/**
 * A door beside GraphQL at a path of its own, answering JSON POSTs (the
 * Feast-compatible `/get-online-features`). The front does for it what it
 * does for GraphQL before any body is parsed — CORS, authentication (the
 * same `authenticate`, rate limit included), MAX_BODY_BYTES, the request's
 * deadline — and, since a door's clients have their own error form, asks
 * the door to word the front's refusals. Only `application/json` bodies
 * reach it, which is also its CSRF protection: a browser cannot send that
 * cross-site without a preflight.
 */
export interface JsonDoor {
  readonly path: string;
  /**
   * The answer to a body (UTF-8 text, not yet parsed: the door words malformed JSON itself), in
   * the format the client's Accept prefers (negotiation.ts: JSON unless it asks for Arrow).
   */
  answer(body: string, principal: Principal | undefined, deadline: Deadline | undefined, format: DoorFormat): Promise<DoorAnswer> | DoorAnswer;
  /** A refusal of the front (credentials, rate, body size, method, media type, shutdown) in the door's error form. */
  refusal(status: number, code: ErrorCode, message: string): DoorAnswer;
}

/** `arrow`: the client prefers an Arrow IPC stream (JSON may be acceptable too, see negotiation.ts). */
export type DoorFormat = 'json' | 'arrow';

/** The types a door answers, as its 406 names them. */
export const doorTypes = [MediaType.Json, MediaType.ArrowStream] as const;

export interface DoorAnswer {
  readonly status: number;
  /** JSON text, or an Arrow stream's bytes (with `contentType`). */
  readonly body: string | Uint8Array;
  /** Default application/json. */
  readonly contentType?: string;
  /** Answered: the `operation` label its duration is observed under (a bounded set). */
  readonly operation?: string;
  /** Refused: the code it counts under in `feature_gateway_rejected_requests_total`. */
  readonly code?: string;
}

export interface GraphQLHttpOptions {
  readonly apollo: ApolloServer<BaseContext>;
  readonly maxBodyBytes: number;
  readonly ready: () => Promise<ReadyStatus>;
  readonly authenticate?: Authenticate;
  readonly admit?: Admission;
  readonly fastPath?: FastPath;
  /** Without it an Arrow request is answered JSON where the client accepts JSON, else 406. */
  readonly arrowPath?: ArrowPath;
  readonly path?: string;
  /** REQUEST_DEADLINE_MS: counted from the request's arrival, carried in the request context under `deadlineKey`. */
  readonly requestDeadlineMs?: number;
  /** Serve HTTPS with this certificate and key (and require client certificates signed by `ca`). */
  readonly tls?: ServerTls | null;
  /** Origins that get CORS headers: '*', a list, or none (null/undefined: no CORS headers). */
  readonly corsOrigins?: '*' | readonly string[] | null;
  /** DEBUG_ERRORS: the stack of an unexpected error goes into the 500 reply (never otherwise). */
  readonly debugErrors?: boolean;
  /** Doors beside GraphQL, each at its own path. */
  readonly doors?: readonly JsonDoor[];
  /** Subscriptions over HTTP responses (SSE, multipart), for requests whose Accept asks for one; absent: such requests get a 406 saying so. */
  readonly streams?: StreamDoor;
}

/**
 * Serves a subscription on the response, in the transport the request's Accept asked for
 * (gateway/subscriptions/use/http-stream.ts). False, without answering: the request is no
 * subscription, and the front answers it as any other (JSON where the Accept allows it, else 406).
 */
export interface StreamDoor {
  serve(req: http.IncomingMessage, res: http.ServerResponse, operation: IncomingOperation, principal: Principal | undefined, transport: StreamTransport): Promise<boolean>;
}

/** Plain or TLS: both emit 'request' and 'upgrade' alike. */
export type HttpServer = http.Server | https.Server;

export interface RunningHttpServer {
  readonly server: HttpServer;
  readonly url: string;
  /** First step of a shutdown: /readyz answers 503 from now on; requests are still served. */
  beginDrain(): void;
  /**
   * Stops listening (new connections are refused), answers requests that
   * still arrive on open connections 503 SHUTTING_DOWN, lets the requests in
   * flight finish, closing their connections after the response, and
   * resolves once every connection is gone.
   */
  close(): Promise<void>;
}

/** Where a server is in its shutdown, and the responses it still owes. */
interface Drain {
  phase: 'serving' | 'unready' | 'closing';
  readonly inFlight: Set<http.ServerResponse>;
  /** Every open connection: Node's closeIdleConnections leaves one that never sent a request (an HTTP client's spare). */
  readonly sockets: Set<Socket>;
}
const drains = new WeakMap<HttpServer, Drain>();

export function createGraphQLHttpServer(options: GraphQLHttpOptions): HttpServer {
  const path = options.path ?? '/graphql';
  const cors = options.corsOrigins ?? null;
  const doors = new Map((options.doors ?? []).map((door) => [door.path, door]));
  const drain: Drain = { phase: 'serving', inFlight: new Set(), sockets: new Set() };
  // One listener for every response (not a closure per request): `this` is the response.
  function onResponseClose(this: http.ServerResponse): void {
    drain.inFlight.delete(this);
    // Once draining, a connection whose last response is out has nothing left to wait for.
    if (drain.phase === 'closing') server.closeIdleConnections();
  }
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (drain.phase === 'closing') {
      // Arrived on a connection opened before the listener closed: the client retries elsewhere.
      res.setHeader('connection', 'close');
      if (req.url !== '/healthz') {
        rejectedRequests.inc({ code: ErrorCode.ShuttingDown });
        const message = 'The server is shutting down; retry on another instance';
        const door = doors.get(req.url ?? '');
        if (door) return sendDoor(res, door.refusal(503, ErrorCode.ShuttingDown, message));
        return sendErrors(res, 503, ErrorCode.ShuttingDown, message);
      }
    }
    drain.inFlight.add(res);
    // 'close' is emitted once per response; `on` spares the wrapper `once` would allocate.
    res.on('close', onResponseClose);
    // No async wrapper around the route: a promise layer (and its microtasks) fewer per request.
    let pending: Promise<void> | void;
    try {
      pending = route(req, res);
    } catch (error) {
      return failed(res, error as Error);
    }
    if (pending) pending.catch((error: Error) => failed(res, error));
  };
  /** Any unexpected error of a request: logged, and a 500 unless the response is already under way. */
  const failed = (res: http.ServerResponse, error: Error): void => {
    log.error({ err: error.message, stack: error.stack }, 'unhandled error in HTTP handler');
    if (res.headersSent) return void res.destroy();
    // The stack names files and lines of this deployment: only with DEBUG_ERRORS.
    const extensions = options.debugErrors ? { stacktrace: String(error.stack ?? error).split('\n') } : {};
    sendErrors(res, 500, 'INTERNAL_SERVER_ERROR', 'internal server error', extensions);
  };
  const tls = options.tls;
  const server: HttpServer = tls
    ? https.createServer({ cert: tls.cert, key: tls.key, ...(tls.ca ? { ca: tls.ca, requestCert: true, rejectUnauthorized: true } : {}) }, onRequest)
    : http.createServer(onRequest);
  server.keepAliveTimeout = 65_000;
  server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    drain.sockets.add(socket);
    socket.once('close', () => drain.sockets.delete(socket));
  });
  // An upgraded connection (a subscription WebSocket) is its transport's to close, after its drain.
  server.on('upgrade', (_req: http.IncomingMessage, socket: Socket) => {
    drain.sockets.delete(socket);
    // No transport took upgrades (no change feed): what Node does when nobody listens.
    if (server.listenerCount('upgrade') === 1) socket.destroy();
  });
  drains.set(server, drain);

  function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> | void {
    // The GraphQL path or a door's without a query string (every POST) needs no URL object.
    const door = doors.size === 0 ? undefined : doors.get(req.url ?? '');
    const url = req.url === path || door ? undefined : new URL(req.url ?? '/', 'http://localhost');
    if (cors) {
      const allowed = corsAllows(cors, req.headers.origin);
      // Caches must not hand one origin's answer (with its allow-origin) to another.
      res.setHeader('vary', 'Origin');
      if (allowed) res.setHeader('access-control-allow-origin', cors === '*' ? '*' : req.headers.origin!);
      if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) return preflight(req, res, allowed);
    }
    if (door) return doorRequest(door, req, res);
    if (url === undefined || url.pathname === path) return graphql(req, res, url);
    const byPath = doors.get(url.pathname);
    if (byPath) return doorRequest(byPath, req, res);
    return operational(req, res, url);
  }

  /** A door's request: the front's checks in GraphQL's order (credentials before a byte of the body), then the door. */
  async function doorRequest(door: JsonDoor, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const deadline = options.requestDeadlineMs === undefined ? undefined : Deadline.after(options.requestDeadlineMs);
    const started = performance.now();
    const refuse = (status: number, code: ErrorCode, message: string): void => {
      rejectedRequests.inc({ code });
      // The body is not read: close after the answer rather than drain an unknown amount.
      if (req.headers['content-length'] !== '0' && req.method !== 'GET') res.setHeader('connection', 'close');
      sendDoor(res, door.refusal(status, code, message));
      req.resume();
    };
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      return refuse(405, ErrorCode.BadRequest, `${door.path} answers POST only`);
    }
    const wants = negotiate(req.headers.accept, false);
    if (wants === Wants.Nothing) {
      return refuse(406, ErrorCode.BadRequest, `The Accept header (${JSON.stringify(req.headers.accept)}) allows none of the types ${door.path} answers: ${doorTypes.join(', ')}`);
    }
    let principal: Principal | undefined;
    if (options.authenticate) {
      try {
        const who = options.authenticate(req, false);
        principal = who instanceof Promise ? await who : who;
      } catch (error) {
        if (!(error instanceof AccessError)) throw error;
        if (error.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(error.retryAfterSeconds));
        if (error.status === 401) res.setHeader('www-authenticate', 'Bearer, ApiKey header="x-api-key"');
        return refuse(error.status, error.code, error.message);
      }
    }
    if (mediaTypeOf(req.headers['content-type']) !== 'application/json') {
      return refuse(415, ErrorCode.BadRequest, `${door.path} takes a JSON body: send content-type: application/json`);
    }
    const tooLarge = `Request body exceeds ${options.maxBodyBytes} bytes (MAX_BODY_BYTES)`;
    if (Number(req.headers['content-length'] ?? 0) > options.maxBodyBytes) return refuse(413, ErrorCode.BodyTooLarge, tooLarge);
    const raw = await readBody(req, options.maxBodyBytes);
    if (raw === null) return refuse(413, ErrorCode.BodyTooLarge, tooLarge);
    const answer = await door.answer(raw.toString('utf8'), principal, deadline, wants === Wants.Json ? 'json' : 'arrow');
    if (answer.code !== undefined) rejectedRequests.inc({ code: answer.code });
    sendDoor(res, answer);
    if (answer.operation !== undefined) durationOf(answer.operation).observe((performance.now() - started) / 1000);
  }

  /** The routes beside GraphQL. */
  async function operational(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' });
    switch (url.pathname) {
      case '/healthz':
        return sendJson(res, 200, { status: 'ok' });
      case '/readyz': {
        if (drain.phase !== 'serving') return sendJson(res, 503, { ready: false, checks: { shutdown: 'draining' } });
        const status = await options.ready().catch((error: Error) => ({ ready: false, checks: { ready: error.message } }));
        return sendJson(res, status.ready ? 200 : 503, status);
      }
      case '/metrics': {
        const body = await metricsRegistry.metrics();
        res.writeHead(200, { 'content-type': metricsRegistry.contentType });
        res.end(body);
        return;
      }
      default:
        return sendJson(res, 404, { error: `no route ${url.pathname}` });
    }
  }

  async function graphql(req: http.IncomingMessage, res: http.ServerResponse, parsed: URL | undefined): Promise<void> {
    if (req.method === 'PUT') {
      // graphql-sse's single-connection mode reserves its stream with a PUT: say what is served instead.
      rejectedRequests.inc({ code: ErrorCode.BadRequest });
      res.setHeader('allow', 'GET, POST');
      req.resume();
      return sendErrors(res, 405, ErrorCode.BadRequest,
        'PUT reserves a stream in graphql-sse\'s single-connection mode, which this server does not serve; use its distinct-connections mode ' +
        `(createClient({ singleConnection: false })), or any of the subscription transports served: ${subscriptionTransports}`);
    }
    const deadline = options.requestDeadlineMs === undefined ? undefined : Deadline.after(options.requestDeadlineMs);
    // Parsed only where a GET or the generic path needs it; `req.url === path` means no query string.
    let url = parsed;
    const urlOf = (): URL => (url ??= new URL(req.url ?? '/', 'http://localhost'));
    let principal: Principal | undefined;
    if (options.authenticate) {
      const landingPage = req.method === 'GET' && !urlOf().searchParams.has('query') && (req.headers.accept ?? '').includes('text/html');
      try {
        const who = options.authenticate(req, landingPage);
        principal = who instanceof Promise ? await who : who;
      } catch (error) {
        if (!(error instanceof AccessError)) throw error;
        return refuseAccess(req, res, error);
      }
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > options.maxBodyBytes) return refuseBody(req, res, options.maxBodyBytes);

    let body: unknown = undefined;
    let operation: IncomingOperation = {};
    if (req.method === 'POST') {
      const raw = await readBody(req, options.maxBodyBytes);
      if (raw === null) return refuseBody(req, res, options.maxBodyBytes);
      const text = raw.toString('utf8');
      const mediaType = mediaTypeOf(req.headers['content-type']);
      // Apollo Server alone answers these, with the response it gives everywhere (its CSRF refusal).
      if (csrfSuspect(req.headers, mediaType)) return generic(req, res, urlOf(), text, requestContext(deadline, principal));
      // JSON only as application/json, like express.json(): the media type, not a substring of the header.
      if (mediaType === 'application/json') {
        try {
          body = JSON.parse(text);
        } catch (error) {
          rejectedRequests.inc({ code: ErrorCode.BadRequest });
          return sendErrors(res, 400, ErrorCode.BadRequest, `Malformed JSON body: ${(error as Error).message}`);
        }
        if (typeof body === 'object' && body !== null && !Array.isArray(body)) operation = body as IncomingOperation;
      } else body = text;
    } else if (req.method === 'GET') {
      // A subscription over SSE by GET is exempt: it has no side effect for CSRF prevention to guard, and a
      // browser's EventSource cannot send the preflight header Apollo Server asks of a GET.
      const csrfExempt = streamTransportOf(req.headers.accept) === 'sse';
      if (!csrfExempt && csrfSuspect(req.headers, mediaTypeOf(req.headers['content-type']))) return generic(req, res, urlOf(), undefined, requestContext(deadline, principal));
      let extensions: unknown;
      const params = urlOf().searchParams;
      try {
        const ext = params.get('extensions');
        extensions = ext ? JSON.parse(ext) : undefined;
      } catch {
        extensions = undefined; // Apollo Server answers a malformed `extensions` parameter itself.
      }
      operation = { query: params.get('query') ?? undefined, extensions };
    }

    // A subscription over SSE or multipart: the stream door checks it as every subscription transport does.
    const streamed = req.method === 'POST' || req.method === 'GET' ? streamTransportOf(req.headers.accept) : undefined;
    if (streamed !== undefined) {
      if (options.streams) {
        if (await options.streams.serve(req, res, operation, principal, streamed)) return;
        // Not a subscription: a GET is subject to CSRF prevention again (it was exempt only as one).
        if (req.method === 'GET' && csrfSuspect(req.headers, mediaTypeOf(req.headers['content-type']))) return generic(req, res, urlOf(), undefined, requestContext(deadline, principal));
      } else {
        rejectedRequests.inc({ code: ErrorCode.BadRequest });
        return sendErrors(res, 406, ErrorCode.BadRequest,
          `This server serves no subscriptions (it tails no change feed), so it answers no ${streamed === 'sse' ? MediaType.EventStream : MediaType.Multipart} requests; queries are answered as ${answerableTypes.join(', ')}`);
      }
    }

    const refusal = options.admit?.(operation, principal);
    if (refusal) {
      rejectedRequests.inc({ code: refusal.code });
      return sendErrors(res, refusal.status, refusal.code, refusal.message);
    }

    // GraphQL over HTTP: JSON unless the client prefers Arrow; a 406 before any execution when it accepts nothing we answer.
    const wants = req.method === 'POST' || req.method === 'GET' ? negotiate(req.headers.accept, req.method === 'GET') : Wants.Json;
    if (wants === Wants.Nothing) return refuseAccept(res, req.headers.accept!);
    if (wants === Wants.Arrow || wants === Wants.ArrowOrJson) {
      const request = req.method === 'GET' ? getOperation(res, operation, urlOf().searchParams) : operation === body ? operation : {};
      if (request === undefined) return;
      if (await arrow(res, request, principal, deadline, wants === Wants.ArrowOrJson)) return;
    }

    let primed: object | undefined;
    if (options.fastPath && req.method === 'POST' && operation === body && acceptsPlainJson(req.headers.accept)) {
      const started = performance.now();
      let fast: FastPathResult | undefined;
      try {
        fast = await options.fastPath(operation, principal, deadline);
      } catch (error) {
        // A fast path that fails unexpectedly must not fail the request: the generic path answers.
        log.error({ err: (error as Error).message, stack: (error as Error).stack }, 'fast path failed; answering on the generic path');
      }
      if (fast?.kind === 'generic') primed = fast.context;
      if (fast?.kind === 'answered') {
        // The headers Apollo Server sends for the same response (a differential test compares them).
        res.writeHead(200, {
          'cache-control': 'no-store',
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(fast.body),
        });
        res.end(fast.body);
        durationOf(fast.operation).observe((performance.now() - started) / 1000);
        return;
      }
    }

    const context = requestContext(deadline, principal);
    return generic(req, res, urlOf(), body, primed ? { ...primed, ...context } : context);
  }

  /**
   * The Arrow door: true when it answered (the stream, a refusal, or 406); false when the
   * operation has no Arrow form and the client accepts JSON, which then answers.
   */
  async function arrow(res: http.ServerResponse, operation: IncomingOperation, principal: Principal | undefined, deadline: Deadline | undefined, jsonAcceptable: boolean): Promise<boolean> {
    const started = performance.now();
    const answer: ArrowPathResult = options.arrowPath
      ? await options.arrowPath(operation, principal, deadline)
      : { kind: 'unavailable', reason: 'this server answers no Arrow streams' };
    if (answer.kind === 'answered') {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': MediaType.ArrowStream, 'content-length': answer.body.byteLength });
      res.end(answer.body);
      durationOf(answer.operation).observe((performance.now() - started) / 1000);
      return true;
    }
    if (answer.kind === 'refused') {
      sendErrors(res, answer.status, answer.code, answer.message);
      return true;
    }
    if (jsonAcceptable) return false;
    rejectedRequests.inc({ code: ErrorCode.BadRequest });
    sendErrors(res, 406, ErrorCode.BadRequest,
      `This operation has no Arrow form (${MediaType.ArrowStream}): ${answer.reason}. It is answered as ${MediaType.GraphQLResponseJson} or ${MediaType.Json}`);
    return true;
  }

  /** Apollo Server's answer to the request. */
  async function generic(req: http.IncomingMessage, res: http.ServerResponse, url: URL, body: unknown, context: object): Promise<void> {
    // Built only here: the fast path needs none of it.
    const headers = new HeaderMap();
    for (const [key, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(', ') : value);
    }
    const httpGraphQLRequest: HTTPGraphQLRequest = { method: req.method ?? 'GET', headers, search: url.search, body };
    const response = await options.apollo.executeHTTPGraphQLRequest({ httpGraphQLRequest, context: async () => context });
    for (const [key, value] of response.headers) res.setHeader(key, key === 'vary' && cors ? `${value}, Origin` : value);
    res.statusCode = response.status ?? 200;
    if (response.body.kind === 'complete') {
      res.end(response.body.string);
    } else {
      for await (const chunk of response.body.asyncIterator) res.write(chunk);
      res.end();
    }
  }

  /** A CORS preflight: 204 with what may be sent, or 403 for an origin not in CORS_ORIGINS. */
  function preflight(req: http.IncomingMessage, res: http.ServerResponse, allowed: boolean): void {
    if (!allowed) {
      rejectedRequests.inc({ code: ErrorCode.CorsOriginDenied });
      return sendErrors(res, 403, ErrorCode.CorsOriginDenied, `Origin ${JSON.stringify(req.headers.origin ?? null)} is not allowed (CORS_ORIGINS)`);
    }
    res.writeHead(204, {
      'access-control-allow-methods': 'GET, POST, OPTIONS',
      'access-control-allow-headers': corsRequestHeaders,
      'access-control-max-age': '600',
      'content-length': '0',
    });
    res.end();
  }

  return server;
}

/**
 * The context the generic path starts from: the deadline and the principal. Made only when the
 * generic path runs; the fast path takes both as arguments.
 */
function requestContext(deadline: Deadline | undefined, principal: Principal | undefined): object {
  const context: Record<symbol, unknown> = {};
  if (deadline) context[deadlineKey] = deadline;
  if (principal !== undefined) context[principalKey] = principal;
  return context;
}

/**
 * `requestDuration` bound to one operation name, once per name rather than per request. The
 * names are the compiled plans' (manifest operations) and the doors' (e.g. `feast:<service>`,
 * `feast:(features)`), a set bounded by the manifest and the registry.
 */
function durationOf(operation: string): BoundHistogram {
  let bound = durations.get(operation);
  if (!bound) {
    bound = requestDuration.bind({ operation });
    durations.set(operation, bound);
  }
  return bound;
}
const durations = new Map<string, BoundHistogram>();

/** Request headers a browser may send cross-origin (the auth headers are the lead's auth/ module's). */
const corsRequestHeaders = 'content-type, authorization, x-api-key, apollo-require-preflight, x-apollo-operation-name';

function corsAllows(cors: '*' | readonly string[], origin: string | undefined): boolean {
  if (origin === undefined) return false;
  return cors === '*' || cors.includes(origin);
}

/**
 * Whether a WebSocket upgrade may proceed, judged by its Origin. Browsers send
 * no CORS preflight for WebSockets, so this is where CORS_ORIGINS applies to
 * them: no Origin (not a browser), the gateway's own origin (Sandbox), or a
 * listed one. Anything else is a page of another site opening a subscription.
 */
export function upgradeOriginAllowed(cors: '*' | readonly string[] | null, req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  if (cors && corsAllows(cors, origin)) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

/**
 * The media type's essence (`type/subtype`, lower case), or undefined if absent or unparseable.
 * Memoized: parsing costs several µs, clients send a handful of distinct values, and the map is
 * cleared when full, so hostile variety cannot grow it.
 */
function mediaTypeOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  if (mediaTypes.has(contentType)) return mediaTypes.get(contentType);
  let essence: string | undefined;
  try {
    essence = new MIMEType(contentType).essence;
  } catch {
    essence = undefined;
  }
  if (mediaTypes.size >= 256) mediaTypes.clear();
  mediaTypes.set(contentType, essence);
  return essence;
}
const mediaTypes = new Map<string, string | undefined>();

/** The content types a browser sends cross-site without a CORS preflight. */
const simpleContentTypes = ['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain'];
const csrfPreventionHeaders = ['x-apollo-operation-name', 'apollo-require-preflight'];

/**
 * Apollo Server's CSRF rule (preventCsrf), exactly: a request is safe when it
 * carries a non-empty apollo-require-preflight or x-apollo-operation-name
 * header, or a content type that is not one of the simple ones — including
 * one that does not parse (a browser cannot send that cross-site without a
 * preflight either). Diverging from Apollo here would let a request skip the
 * checks that run before Apollo Server (nesting, persisted-query shape).
 */
function csrfSuspect(headers: http.IncomingHttpHeaders, mediaType: string | undefined): boolean {
  for (let i = 0; i < csrfPreventionHeaders.length; i++) {
    const v = headers[csrfPreventionHeaders[i]!];
    if (v !== undefined && v.length > 0) return false;
  }
  if (headers['content-type'] === undefined) return true;
  return mediaType !== undefined && simpleContentTypes.includes(mediaType);
}

export async function listen(server: HttpServer, host: string, port: number): Promise<RunningHttpServer> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const drain = drains.get(server);
  return {
    server,
    url: `${server instanceof https.Server ? 'https' : 'http'}://${host}:${address.port}/graphql`,
    beginDrain: () => {
      if (drain?.phase === 'serving') drain.phase = 'unready';
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (drain) {
          drain.phase = 'closing';
          if (drain.inFlight.size > 0) log.info({ inFlight: drain.inFlight.size }, 'draining: waiting for the requests in flight');
          for (const res of drain.inFlight) {
            // Their connections close after the response instead of idling until keepAliveTimeout. A response whose
            // headers are out (a subscription stream) kept its keep-alive decision with them: its socket is ended
            // once the response is (by then the response no longer holds it, hence taken now).
            if (!res.headersSent) res.setHeader('connection', 'close');
            else {
              const socket = res.socket;
              res.once('finish', () => socket?.destroySoon());
            }
          }
        }
        server.close(() => resolve());
        server.closeIdleConnections();
        if (drain) {
          // A connection with nothing in flight, also one that never sent a request, would hold the close for keepAliveTimeout.
          const busy = new Set([...drain.inFlight].map((res) => res.socket));
          for (const socket of drain.sockets) if (!busy.has(socket)) socket.destroy();
        }
      }),
  };
}

/**
 * A GET's operation with its `variables` and `operationName` parameters (the JSON door leaves
 * them to Apollo Server), or undefined once a malformed `variables` has been answered 400.
 */
function getOperation(res: http.ServerResponse, operation: IncomingOperation, params: URLSearchParams): IncomingOperation | undefined {
  let variables: unknown;
  const text = params.get('variables');
  try {
    variables = text ? JSON.parse(text) : undefined;
  } catch (error) {
    rejectedRequests.inc({ code: ErrorCode.BadRequest });
    sendErrors(res, 400, ErrorCode.BadRequest, `The variables parameter is not JSON: ${(error as Error).message}`);
    return undefined;
  }
  return { ...operation, variables, operationName: params.get('operationName') ?? undefined };
}

/** 406: the Accept header allows none of the types a GraphQL request is answered in, which the message names. */
function refuseAccept(res: http.ServerResponse, accept: string): void {
  rejectedRequests.inc({ code: ErrorCode.BadRequest });
  const shown = accept.length > 200 ? `${accept.slice(0, 200)}…` : accept;
  sendErrors(res, 406, ErrorCode.BadRequest,
    `The Accept header (${JSON.stringify(shown)}) allows none of the types this endpoint answers: ${answerableTypes.join(', ')}; ` +
    `subscriptions are served over ${subscriptionTransports}`);
}

/**
 * Whether Apollo Server would answer `application/json` to this Accept
 * header: absent, any, or application/json listed first without a weight.
 * Other preferences take the generic path, which negotiates fully.
 */
function acceptsPlainJson(accept: string | undefined): boolean {
  if (!accept || accept === '*/*') return true;
  const first = accept.split(',')[0]!.trim();
  return first === 'application/json' || first === 'application/json; charset=utf-8';
}

/** The body, or null as soon as it passes `limit` bytes (the rest is not buffered). */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        resolve(null);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      // One chunk (a small body, the usual case) is the body as it is, not a copy.
      if (!done) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    });
    req.on('error', (error) => {
      if (!done) reject(error);
    });
  });
}

function refuseBody(req: http.IncomingMessage, res: http.ServerResponse, limit: number): void {
  rejectedRequests.inc({ code: ErrorCode.BodyTooLarge });
  // Answer at once and close the connection after the reply; whatever of the body is
  // still arriving is discarded as it comes, never buffered.
  res.setHeader('connection', 'close');
  sendErrors(res, 413, ErrorCode.BodyTooLarge, `Request body exceeds ${limit} bytes (MAX_BODY_BYTES)`);
  req.resume();
}

function refuseAccess(req: http.IncomingMessage, res: http.ServerResponse, error: AccessError): void {
  rejectedRequests.inc({ code: error.code });
  if (error.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(error.retryAfterSeconds));
  if (error.status === 401) res.setHeader('www-authenticate', 'Bearer, ApiKey header="x-api-key"');
  // The body is not read: close the connection after the answer rather than drain an unknown amount.
  if (req.headers['content-length'] !== '0' && req.method !== 'GET') res.setHeader('connection', 'close');
  sendErrors(res, error.status, error.code, error.message);
  req.resume();
}

function sendErrors(res: http.ServerResponse, status: number, code: string, message: string, extensions: Record<string, unknown> = {}): void {
  sendJson(res, status, { errors: [{ message, extensions: { code, ...extensions } }] });
}

function sendDoor(res: http.ServerResponse, answer: DoorAnswer): void {
  const length = typeof answer.body === 'string' ? Buffer.byteLength(answer.body) : answer.body.byteLength;
  res.writeHead(answer.status, { 'content-type': answer.contentType ?? 'application/json', 'content-length': length });
  res.end(answer.body);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
