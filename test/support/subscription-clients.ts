/**
 * One subscription client interface, implemented by the published client of
 * each transport the gateway serves `featureChanged` over:
 *
 * - `graphql-ws`: `createClient` from 'graphql-ws' over `ws`; credentials as
 *   the connection_init payload (what browsers do: they cannot set headers on
 *   a WebSocket);
 * - `graphql-sse`: `createClient` from 'graphql-sse', distinct connections
 *   mode (one `POST /graphql` with `accept: text/event-stream` per
 *   subscription); credentials as headers;
 * - `apollo-multipart`: Apollo Client 4's `HttpLink`, which sends a
 *   subscription as `POST /graphql` with a `multipart/mixed` accept header and
 *   reads the multipart response; credentials as headers.
 *
 * What each reports is normalized into the same shape: the results received
 * in order, and how the subscription ended (completed by the server, refused
 * with GraphQL errors, or the transport closed: a graphql-ws close code, an
 * HTTP status, a cut stream), so a test can assert the same error code
 * whatever the transport. No client retries: a failure is reported, not
 * hidden behind a reconnect.
 *
 * `openStalledReader` is the one place that does not use a published client:
 * a client that stops reading cannot be made from one (each reads as fast as
 * it can), so it speaks the same request by hand and pauses its TCP socket.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import type { ExecutionResult, GraphQLFormattedError } from 'graphql';
import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient, NetworkError } from 'graphql-sse';
import { ApolloClient, CombinedGraphQLErrors, CombinedProtocolErrors, HttpLink, InMemoryCache, ServerError, gql } from '@apollo/client';
import type { DocumentNode } from 'graphql';
import WebSocket from 'ws';

export type Transport = 'graphql-ws' | 'graphql-sse' | 'apollo-multipart';
export const TRANSPORTS: readonly Transport[] = ['graphql-ws', 'graphql-sse', 'apollo-multipart'];

export interface ClientOptions {
  /** The gateway's GraphQL endpoint, `http://host:port/graphql` (graphql-ws turns it into `ws://`). */
  readonly url: string;
  /** Credentials as HTTP headers (`x-api-key`, `authorization`); graphql-ws sends them as its connection_init payload. */
  readonly headers?: Record<string, string>;
}

/** How a subscription ended. */
export type Ending =
  | { readonly kind: 'complete' }
  /** The server refused the operation (or ended it) with GraphQL errors; `status` is the HTTP status where there was one. */
  | { readonly kind: 'refused'; readonly errors: readonly GraphQLFormattedError[]; readonly status?: number }
  /** The transport ended without `complete`: a graphql-ws close code, an HTTP status without GraphQL errors, or a cut stream. */
  | { readonly kind: 'closed'; readonly closeCode?: number; readonly status?: number; readonly message: string };

/** graphql-ws reports a refused connection only as a close code; these are the codes the gateway documents for them. */
const CLOSE_CODE_ERRORS: Record<number, string> = { 4401: 'UNAUTHENTICATED', 4403: 'FORBIDDEN', 4429: 'RATE_LIMITED' };

/** The error code an ending carries: its first GraphQL error's `extensions.code`, or what a graphql-ws close code stands for. */
export function endingCode(ending: Ending): string | undefined {
  if (ending.kind === 'refused') return ending.errors[0]?.extensions?.code as string | undefined;
  if (ending.kind === 'closed' && ending.closeCode !== undefined) return CLOSE_CODE_ERRORS[ending.closeCode];
  return undefined;
}

/** The message an ending carries: its first GraphQL error's, or the close reason or response body. */
export function endingMessage(ending: Ending): string {
  if (ending.kind === 'refused') return ending.errors[0]?.message ?? '';
  return ending.kind === 'closed' ? ending.message : '';
}

export function describeEnding(ending: Ending | undefined): string {
  if (!ending) return 'still open';
  if (ending.kind === 'complete') return 'completed';
  if (ending.kind === 'refused') return `refused${ending.status ? ` (HTTP ${ending.status})` : ''}: ${JSON.stringify(ending.errors)}`;
  return `closed (${ending.closeCode !== undefined ? `code ${ending.closeCode}` : ending.status !== undefined ? `HTTP ${ending.status}` : 'no code'}): ${ending.message}`;
}

export interface LiveSubscription {
  /** The results received, in order. */
  readonly events: readonly ExecutionResult[];
  /** Set once the subscription ended; later reports of the client are ignored. */
  readonly ending: Ending | undefined;
  /** Waits for at least `n` results; fails naming the ending if it ends first. */
  waitForEvents(n: number): Promise<void>;
  /** Waits for the end and returns its GraphQL errors; fails if results came first or it ended otherwise. */
  refused(): Promise<readonly GraphQLFormattedError[]>;
  /** Waits for the end, whatever it is. */
  ended(): Promise<Ending>;
  unsubscribe(): void;
}

export interface SubscriptionClient {
  readonly transport: Transport;
  subscribe(query: string, variables?: Record<string, unknown>): LiveSubscription;
  /** Ends its subscriptions and connections. */
  close(): Promise<void>;
}

/** Polls `predicate` until it holds; fails naming `what` after a generous timeout (never a timing assertion). */
export async function waitFor(predicate: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** What every client reports into: results until the first ending. */
class Recorder implements LiveSubscription {
  readonly events: ExecutionResult[] = [];
  ending: Ending | undefined;
  stop: () => void = () => undefined;

  constructor(private readonly transport: Transport) {}

  result(result: ExecutionResult): void {
    if (this.ending) return;
    // GraphQL over HTTP: a request error (validation, limits, roles) is a result without data; over SSE and
    // multipart it is how a refused subscription arrives, before the stream's end.
    if (result.data == null && result.errors?.length) this.end({ kind: 'refused', errors: result.errors });
    else this.events.push(result);
  }

  end(ending: Ending): void {
    this.ending ??= ending;
  }

  async waitForEvents(n: number): Promise<void> {
    await waitFor(() => this.events.length >= n || this.ending !== undefined, `${n} event(s) over ${this.transport}`);
    if (this.events.length < n) {
      throw new Error(`over ${this.transport}: the subscription ended after ${this.events.length} of ${n} event(s): ${describeEnding(this.ending)}`);
    }
  }

  async refused(): Promise<readonly GraphQLFormattedError[]> {
    await waitFor(() => this.ending !== undefined || this.events.length > 0, `a refusal over ${this.transport}`);
    if (this.events.length > 0) throw new Error(`over ${this.transport}: expected a refusal, got ${JSON.stringify(this.events)}`);
    if (this.ending!.kind !== 'refused') throw new Error(`over ${this.transport}: expected GraphQL errors, got ${describeEnding(this.ending)}`);
    return this.ending!.errors;
  }

  async ended(): Promise<Ending> {
    await waitFor(() => this.ending !== undefined, `the end of the subscription over ${this.transport}`);
    return this.ending!;
  }

  unsubscribe(): void {
    this.stop();
  }
}

export function subscriptionClient(transport: Transport, options: ClientOptions): SubscriptionClient {
  const client = transport === 'graphql-ws' ? graphqlWsClient(options) : transport === 'graphql-sse' ? graphqlSseClient(options) : apolloMultipartClient(options);
  // Closing a client unsubscribes what it still has open, as an application does: Apollo Client's `stop()` leaves an
  // active subscription's request running, and graphql-sse's `dispose()` waits for its distinct streams to end.
  const open = new Set<LiveSubscription>();
  return {
    transport,
    subscribe(query, variables) {
      const subscription = client.subscribe(query, variables);
      open.add(subscription);
      return subscription;
    },
    close: async () => {
      for (const subscription of open) subscription.unsubscribe();
      open.clear();
      await client.close();
    },
  };
}

function graphqlWsClient({ url, headers }: ClientOptions): SubscriptionClient {
  const client = createWsClient({
    url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0,
    ...(headers ? { connectionParams: headers } : {}),
  });
  return {
    transport: 'graphql-ws',
    subscribe(query, variables) {
      const recorder = new Recorder('graphql-ws');
      recorder.stop = client.subscribe(variables ? { query, variables } : { query }, {
        next: (result) => recorder.result(result as ExecutionResult),
        // An `error` message hands the sink its GraphQL errors; a closed socket its CloseEvent.
        error: (error: unknown) => recorder.end(Array.isArray(error)
          ? { kind: 'refused', errors: error }
          : isCloseEvent(error) ? { kind: 'closed', closeCode: error.code, message: error.reason }
            : { kind: 'closed', message: String(error) }),
        complete: () => recorder.end({ kind: 'complete' }),
      });
      return recorder;
    },
    close: async () => { await client.dispose(); },
  };
}

function isCloseEvent(value: unknown): value is { code: number; reason: string } {
  return typeof value === 'object' && value !== null && typeof (value as { code?: unknown }).code === 'number';
}

function graphqlSseClient({ url, headers }: ClientOptions): SubscriptionClient {
  const client = createSseClient({ url, singleConnection: false, retryAttempts: 0, ...(headers ? { headers } : {}) });
  return {
    transport: 'graphql-sse',
    subscribe(query, variables) {
      const recorder = new Recorder('graphql-sse');
      recorder.stop = client.subscribe(variables ? { query, variables } : { query }, {
        next: (result) => recorder.result(result as ExecutionResult),
        // A non-2xx response is a NetworkError holding the Response, its body unread: GraphQL errors when it is JSON.
        error: (error: unknown) => void sseEnding(error).then((ending) => recorder.end(ending)),
        complete: () => recorder.end({ kind: 'complete' }),
      });
      return recorder;
    },
    close: async () => client.dispose(),
  };
}

async function sseEnding(error: unknown): Promise<Ending> {
  if (error instanceof NetworkError && error.response) {
    const response = error.response as Response;
    return fromHttpBody(response.status, await response.text().catch(() => ''));
  }
  return { kind: 'closed', message: error instanceof Error ? error.message : String(error) };
}

function fromHttpBody(status: number, body: string): Ending {
  try {
    const errors = (JSON.parse(body) as { errors?: GraphQLFormattedError[] }).errors;
    if (Array.isArray(errors) && errors.length > 0) return { kind: 'refused', errors, status };
  } catch {
    // not JSON
  }
  return { kind: 'closed', status, message: body.slice(0, 500) };
}

/**
 * Apollo Client's cache adds `__typename` to every selection set of the documents it sends; these tests compare
 * exact shapes across transports, so this client sends the document as written (results are not cached either:
 * `no-cache`). Nothing of the wire protocol changes.
 */
class DocumentAsWrittenCache extends InMemoryCache {
  override transformDocument(document: DocumentNode): DocumentNode {
    return document;
  }
}

function apolloMultipartClient({ url, headers }: ClientOptions): SubscriptionClient {
  const client = new ApolloClient({ link: new HttpLink({ uri: url, ...(headers ? { headers } : {}) }), cache: new DocumentAsWrittenCache() });
  return {
    transport: 'apollo-multipart',
    subscribe(query, variables) {
      const recorder = new Recorder('apollo-multipart');
      const subscription = client.subscribe({ query: gql(query), ...(variables ? { variables } : {}), fetchPolicy: 'no-cache', errorPolicy: 'all' }).subscribe({
        // Apollo Client 4 reports every failure as a result's `error` and then completes.
        next: (result) => {
          const { data, error } = result as { data?: Record<string, unknown>; error?: unknown };
          if (error === undefined) return recorder.result({ data: data ?? null });
          if (CombinedGraphQLErrors.is(error)) {
            return recorder.result(data === undefined ? { errors: [...error.errors] as never } : { data, errors: [...error.errors] as never });
          }
          // A multipart part `{"payload": null, "errors": [...]}`: the transport ended the subscription with errors.
          if (CombinedProtocolErrors.is(error)) return recorder.end({ kind: 'refused', errors: error.errors as readonly GraphQLFormattedError[] });
          // A non-2xx response: its body as read by the link.
          if (ServerError.is(error)) return recorder.end(fromHttpBody(error.statusCode, error.bodyText));
          recorder.end({ kind: 'closed', message: error instanceof Error ? error.message : String(error) });
        },
        error: (error: unknown) => recorder.end({ kind: 'closed', message: error instanceof Error ? error.message : String(error) }),
        complete: () => recorder.end({ kind: 'complete' }),
      });
      recorder.stop = () => subscription.unsubscribe();
      return recorder;
    },
    close: async () => client.stop(),
  };
}

/** A subscriber that reads its first event, then stops reading: its TCP socket is paused, so back-pressure reaches the server. */
export interface StalledReader {
  /** Subscriptions it holds open: one per HTTP request; two on its graphql-ws connection (see stalledWs). */
  readonly subscriptions: number;
  /** Bytes of the first event as it came over the wire (one message, frame or part). */
  readonly firstEventBytes: number;
  /** Reads again (from where the socket stopped). */
  resume(): void;
  /** Resolves once the server ended the subscription and the client saw it: how, e.g. `close 4413`, `end`, `error ECONNRESET`. */
  readonly ended: Promise<string>;
  /** Cuts the connection. */
  destroy(): void;
}

/**
 * The request each published client sends, by hand, stopping after the first event. For the HTTP transports the
 * headers and body are those graphql-sse's and Apollo Client's own requests carry (see the report in the commit).
 */
export async function openStalledReader(transport: Transport, options: ClientOptions, query: string, variables?: Record<string, unknown>): Promise<StalledReader> {
  return transport === 'graphql-ws' ? stalledWs(options, query, variables) : stalledHttp(transport, options, query, variables);
}

/**
 * Two subscriptions on the connection: graphql-ws sends a subscription's next event only once its previous send
 * completed, so a connection with one subscription never has a send held by the gate (its one pending write waits
 * in the socket), never counts as paused and is not closed for it (graphql-ws's keep-alive cuts it off instead,
 * 24 s after it stopped answering pings). With two, the second subscription's send is held, as with a dashboard
 * that watches several.
 */
async function stalledWs({ url, headers }: ClientOptions, query: string, variables?: Record<string, unknown>): Promise<StalledReader> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  const ended = new Promise<string>((resolve) => ws.once('close', (code) => resolve(`close ${code}`)));
  let firstEventBytes = 0;
  let refused: string | undefined;
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.on('message', (data: Buffer) => {
    const message = JSON.parse(String(data)) as { type: string };
    if (message.type === 'connection_ack') {
      for (const id of ['s1', 's2']) ws.send(JSON.stringify({ id, type: 'subscribe', payload: { query, ...(variables ? { variables } : {}) } }));
    }
    if (message.type === 'next' && firstEventBytes === 0) {
      firstEventBytes = data.length;
      socket.pause();
    }
    if (message.type === 'error') refused ??= String(data);
  });
  const socket = (ws as unknown as { _socket: Socket })._socket;
  ws.send(JSON.stringify({ type: 'connection_init', ...(headers ? { payload: headers } : {}) }));
  await waitFor(() => firstEventBytes > 0 || refused !== undefined || ws.readyState === WebSocket.CLOSED, 'the first event of the stalled reader (graphql-ws)', 30_000);
  if (firstEventBytes === 0) throw new Error(`the stalled reader's subscription failed: ${refused ?? 'socket closed'}`);
  return { subscriptions: 2, firstEventBytes, resume: () => socket.resume(), ended, destroy: () => ws.terminate() };
}

/** The accept header each HTTP client sends for a subscription (graphql-sse 2.6.1, Apollo Client 4.3.8). */
const ACCEPT: Record<Exclude<Transport, 'graphql-ws'>, string> = {
  'graphql-sse': 'text/event-stream',
  'apollo-multipart': 'multipart/mixed;boundary=graphql;subscriptionSpec=1.0,application/graphql-response+json,application/json;q=0.9',
};

async function stalledHttp(transport: Exclude<Transport, 'graphql-ws'>, { url, headers }: ClientOptions, query: string, variables?: Record<string, unknown>): Promise<StalledReader> {
  const body = JSON.stringify({ query, ...(variables ? { variables } : {}) });
  const request = http.request(url, {
    method: 'POST',
    headers: { ...headers, accept: ACCEPT[transport], 'content-type': transport === 'graphql-sse' ? 'application/json; charset=utf-8' : 'application/json' },
  });
  const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
    request.once('response', resolve);
    request.once('error', reject);
    request.end(body);
  });
  let text = '';
  let firstEventBytes = 0;
  let over = false;
  const ended = new Promise<string>((resolve) => {
    response.once('end', () => {
      over = true;
      resolve('end');
    });
    response.once('error', (error) => resolve(`error ${(error as NodeJS.ErrnoException).code ?? error.message}`));
    response.once('close', () => {
      over = true;
      resolve('close');
    });
  });
  // Up to the first whole event: an SSE `next` event, or a multipart part with a payload (not a `{}` heartbeat).
  const firstEvent = transport === 'graphql-sse' ? /event: *next\r?\ndata:[^\n]*\n\n/ : /\r\n\r\n\{"payload":[^]*?\r\n--graphql/;
  response.on('data', (chunk: Buffer) => {
    if (firstEventBytes > 0) return;
    text += chunk.toString();
    const match = firstEvent.exec(text);
    if (match) {
      firstEventBytes = Buffer.byteLength(match[0]);
      // The response too: a flowing response resumes its socket whenever it wants more (IncomingMessage._read).
      response.pause();
      response.socket.pause();
    }
  });
  await waitFor(() => firstEventBytes > 0 || over, `the first event of the stalled reader (${transport})`, 30_000);
  if (firstEventBytes === 0) {
    throw new Error(`the stalled reader's request was answered ${response.statusCode} ${response.headers['content-type'] ?? ''}: ${text.slice(0, 500)}`);
  }
  return {
    subscriptions: 1, firstEventBytes, ended, destroy: () => request.destroy(),
    resume: () => {
      response.socket.resume();
      response.resume();
    },
  };
}
