import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HeaderMap, type ApolloServer, type BaseContext, type HTTPGraphQLRequest } from '@apollo/server';
import { ErrorCode } from './errors.js';
import { log } from './log.js';
import { metricsRegistry, rejectedRequests, requestDuration } from './metrics.js';

/**
 * The HTTP front of every process that serves GraphQL (the gateway and each
 * subgraph). Apollo Server's own integration API (`executeHTTPGraphQLRequest`)
 * on a bare `node:http` server: no framework on the hot path, and full
 * control over body limits, malformed bodies and the operational endpoints.
 *
 *   POST|GET /graphql   GraphQL (Sandbox landing page for browsers on GET)
 *   GET /metrics        Prometheus metrics
 *   GET /healthz        the process is up
 *   GET /readyz         the process can serve (its `ready` check passes)
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
 * path already learned, such as a store failure); or undefined: not its own.
 */
export type FastPath = (operation: IncomingOperation) => Promise<FastPathResult | undefined>;
export type FastPathResult =
  | { readonly kind: 'answered'; readonly body: string; readonly operation: string }
  | { readonly kind: 'generic'; readonly context: object };

/** Refuses a request before execution: `{ code, message, status }`, or undefined to let it through. */
export type Admission = (operation: IncomingOperation) => { code: string; message: string; status: number } | undefined;

export interface GraphQLHttpOptions {
  readonly apollo: ApolloServer<BaseContext>;
  readonly maxBodyBytes: number;
  readonly ready: () => Promise<ReadyStatus>;
  readonly admit?: Admission;
  readonly fastPath?: FastPath;
  readonly path?: string;
}

export interface RunningHttpServer {
  readonly server: http.Server;
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
}
const drains = new WeakMap<http.Server, Drain>();

export function createGraphQLHttpServer(options: GraphQLHttpOptions): http.Server {
  const path = options.path ?? '/graphql';
  const drain: Drain = { phase: 'serving', inFlight: new Set() };
  const server = http.createServer((req, res) => {
    if (drain.phase === 'closing') {
      // Arrived on a connection opened before the listener closed: the client retries elsewhere.
      res.setHeader('connection', 'close');
      if (req.url !== '/healthz') {
        rejectedRequests.inc({ code: ErrorCode.ShuttingDown });
        return sendErrors(res, 503, ErrorCode.ShuttingDown, 'The server is shutting down; retry on another instance');
      }
    }
    drain.inFlight.add(res);
    res.once('close', () => {
      drain.inFlight.delete(res);
      // Once draining, a connection whose last response is out has nothing left to wait for.
      if (drain.phase === 'closing') server.closeIdleConnections();
    });
    handle(req, res).catch((error: Error) => {
      log.error({ err: error.message, stack: error.stack }, 'unhandled error in HTTP handler');
      if (!res.headersSent) sendErrors(res, 500, 'INTERNAL_SERVER_ERROR', 'internal server error');
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 65_000;
  drains.set(server, drain);

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === path) return graphql(req, res, url);
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

  async function graphql(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > options.maxBodyBytes) return refuseBody(req, res, options.maxBodyBytes);

    let body: unknown = undefined;
    let operation: IncomingOperation = {};
    if (req.method === 'POST') {
      const raw = await readBody(req, options.maxBodyBytes);
      if (raw === null) return refuseBody(req, res, options.maxBodyBytes);
      const text = raw.toString('utf8');
      if ((req.headers['content-type'] ?? '').includes('json')) {
        try {
          body = JSON.parse(text);
        } catch (error) {
          rejectedRequests.inc({ code: ErrorCode.BadRequest });
          return sendErrors(res, 400, ErrorCode.BadRequest, `Malformed JSON body: ${(error as Error).message}`);
        }
        if (typeof body === 'object' && body !== null && !Array.isArray(body)) operation = body as IncomingOperation;
      } else body = text;
    } else if (req.method === 'GET') {
      let extensions: unknown;
      try {
        const ext = url.searchParams.get('extensions');
        extensions = ext ? JSON.parse(ext) : undefined;
      } catch {
        extensions = undefined; // Apollo Server answers a malformed `extensions` parameter itself.
      }
      operation = { query: url.searchParams.get('query') ?? undefined, extensions };
    }

    const refusal = options.admit?.(operation);
    if (refusal) {
      rejectedRequests.inc({ code: refusal.code });
      return sendErrors(res, refusal.status, refusal.code, refusal.message);
    }

    let context: object = {};
    if (options.fastPath && req.method === 'POST' && operation === body && acceptsPlainJson(req.headers.accept)) {
      const started = performance.now();
      let fast: FastPathResult | undefined;
      try {
        fast = await options.fastPath(operation);
      } catch (error) {
        // A fast path that fails unexpectedly must not fail the request: the generic path answers.
        log.error({ err: (error as Error).message, stack: (error as Error).stack }, 'fast path failed; answering on the generic path');
      }
      if (fast?.kind === 'generic') context = fast.context;
      if (fast?.kind === 'answered') {
        // The headers Apollo Server sends for the same response (a differential test compares them).
        res.writeHead(200, {
          'cache-control': 'no-store',
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(fast.body),
        });
        res.end(fast.body);
        requestDuration.observe({ operation: fast.operation }, (performance.now() - started) / 1000);
        return;
      }
    }

    // Built only here: the fast path above needs none of it.
    const headers = new HeaderMap();
    for (const [key, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(', ') : value);
    }
    const httpGraphQLRequest: HTTPGraphQLRequest = { method: req.method ?? 'GET', headers, search: url.search, body };
    const response = await options.apollo.executeHTTPGraphQLRequest({ httpGraphQLRequest, context: async () => context });
    for (const [key, value] of response.headers) res.setHeader(key, value);
    res.statusCode = response.status ?? 200;
    if (response.body.kind === 'complete') {
      res.end(response.body.string);
    } else {
      for await (const chunk of response.body.asyncIterator) res.write(chunk);
      res.end();
    }
  }

  return server;
}

export async function listen(server: http.Server, host: string, port: number): Promise<RunningHttpServer> {
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
    url: `http://${host}:${address.port}/graphql`,
    beginDrain: () => {
      if (drain?.phase === 'serving') drain.phase = 'unready';
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (drain) {
          drain.phase = 'closing';
          if (drain.inFlight.size > 0) log.info({ inFlight: drain.inFlight.size }, 'draining: waiting for the requests in flight');
          for (const res of drain.inFlight) {
            // Their connections close after the response instead of idling until keepAliveTimeout.
            if (!res.headersSent) res.setHeader('connection', 'close');
            else res.shouldKeepAlive = false;
          }
        }
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
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
      if (!done) resolve(Buffer.concat(chunks));
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

function sendErrors(res: http.ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, { errors: [{ message, extensions: { code } }] });
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
