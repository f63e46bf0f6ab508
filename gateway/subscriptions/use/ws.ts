import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { GRAPHQL_TRANSPORT_WS_PROTOCOL, handleProtocols, makeServer, type Context } from 'graphql-ws';
import { WebSocketServer, type WebSocket } from 'ws';
import { ErrorCode } from '../../../runtime/errors.js';
import { upgradeOriginAllowed, type HttpServer } from '../../../runtime/graphql-http.js';
import { log as rootLog } from '../../../runtime/log.js';
import { rejectedRequests } from '../../../runtime/metrics.js';
import { credentialsFromHeaders, credentialsFromPayload } from '../../../auth/authenticator.js';
import { AccessError } from '../../../auth/errors.js';
import type { Principal } from '../../../auth/principal.js';
import { CloseCode, closeCodeOf, closeReason, closeReasons } from '../close-codes.js';
import type { Session, SubscriptionCore, Transport } from '../core.js';
import { ConnectionStreams } from '../hub.js';
import { SendGate } from '../send-gate.js';

/**
 * graphql-ws (subprotocol graphql-transport-ws) on the gateway's own HTTP
 * server and path: `ws://host:port/graphql`, `wss://` with TLS.
 *
 * The protocol is graphql-ws's `makeServer`; this adapter gives it a socket
 * of our own, as graphql-ws's `use/ws` does, with three differences that are
 * the reason it exists: `send` returns the send gate's promise (the bound on
 * the connection's send buffer and the stall close: send-gate.ts), a message
 * of a server-to-client type is answered with 4400 before graphql-ws sees it
 * (graphql-ws answers it with 4500 and a stack trace on stderr), and the
 * connection's change streams end the moment its closing begins (see
 * `closing` below) rather than when the socket is finally gone.
 */

export interface WsOptions {
  readonly server: HttpServer;
  /** Default `/graphql`. */
  readonly path?: string;
  /** Browser origins allowed to open a subscription socket (CORS_ORIGINS); absent: any. */
  readonly corsOrigins?: '*' | readonly string[] | null | undefined;
}

/** What graphql-ws keeps per connection as `ctx.extra`. */
interface Extra {
  readonly request: http.IncomingMessage;
  readonly socket: WebSocket;
  readonly streams: ConnectionStreams;
  principal?: Principal | undefined;
}

/** ws's keep-alive ping, as graphql-ws's use/ws sends it: a peer that answers none within the interval is cut off. */
const keepAliveMs = 12_000;
const log = rootLog.child({ component: 'subscriptions', transport: 'graphql-ws' });
const serverToClientTypes = new Set(['connection_ack', 'next', 'error']);

export function useWebSocket(core: SubscriptionCore, options: WsOptions): Transport {
  const { server } = options;
  const path = options.path ?? '/graphql';
  const { config } = core;
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxBodyBytes, handleProtocols });
  const contexts = new Set<Context<Record<string, unknown>, Extra>>();

  const protocol = makeServer<Record<string, unknown>, Extra>({
    schema: () => core.schema(),
    onConnect: async (ctx) => {
      contexts.add(ctx);
      const { request, socket } = ctx.extra;
      try {
        // Browsers cannot set headers on a WebSocket: credentials come in the connection_init payload, else the upgrade's headers.
        const credentials = credentialsFromPayload(ctx.connectionParams) ?? credentialsFromHeaders(request.headers);
        ctx.extra.principal = await core.authenticate(credentials, request.socket.remoteAddress);
        return true;
      } catch (error) {
        if (!(error instanceof AccessError)) throw error;
        rejectedRequests.inc({ code: error.code });
        // 4401/4403/4430 with the reason, where graphql-ws alone would say only "Forbidden".
        socket.close(closeCodeOf(error), closeReason(error.message));
        return false;
      }
    },
    onClose: (ctx) => void contexts.delete(ctx),
    onSubscribe: async (ctx, _id, payload) => {
      const session: Session = { transport: 'graphql-ws', principal: ctx.extra.principal, streams: ctx.extra.streams };
      // graphql-ws registers the subscription before this hook: the count includes this one.
      return core.prepare(session, payload, Object.keys(ctx.subscriptions).length);
    },
    subscribe: (args) => core.execute(args),
    onError: (_ctx, id, _payload, errors) => {
      log.debug({ id, errors: errors.map((e) => e.message) }, 'subscription refused or failed');
    },
  });

  const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const { pathname } = new URL(req.url ?? '/', 'http://localhost');
    if (pathname !== path || core.isClosing) {
      socket.end(`HTTP/1.1 ${core.isClosing ? '503 Service Unavailable' : '404 Not Found'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    if (options.corsOrigins !== undefined && !upgradeOriginAllowed(options.corsOrigins, req)) {
      rejectedRequests.inc({ code: ErrorCode.CorsOriginDenied });
      const body = JSON.stringify({ errors: [{ message: `Origin ${JSON.stringify(req.headers.origin)} may not open subscriptions (CORS_ORIGINS)`, extensions: { code: ErrorCode.CorsOriginDenied } }] });
      socket.end(`HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (client) => open(client, req));
  };
  server.on('upgrade', onUpgrade);

  function open(client: WebSocket, request: http.IncomingMessage): void {
    if (client.protocol !== GRAPHQL_TRANSPORT_WS_PROTOCOL) {
      // graphql-ws would close with a bare "Subprotocol not acceptable" (e.g. for subscriptions-transport-ws's `graphql-ws`): name what is served.
      client.close(CloseCode.SubprotocolNotAcceptable, 'Subprotocol not acceptable: speak graphql-transport-ws (graphql-ws), or use SSE or multipart HTTP');
      return;
    }
    const streams = new ConnectionStreams();
    const gate = new SendGate(
      {
        bufferedBytes: () => client.bufferedAmount,
        isOpen: () => client.readyState === client.OPEN,
        write: (data, done) => client.send(data, done),
        closeTooSlow: () => closing(CloseCode.SubscriberTooSlow, closeReasons[CloseCode.SubscriberTooSlow]),
        destroy: () => terminate(),
      },
      { maxBufferedBytes: config.subscriptionSendBufferBytes, stallTimeoutMs: config.subscriptionStallTimeoutMs },
    );
    /**
     * The connection's streams end when its closing begins. graphql-ws ends a connection's
     * subscriptions when told it closed (the socket's `close` event), which comes after the close
     * handshake: up to ws's 30 s for a client that answers no close frame, a second and more (the
     * cut-off, on a busy event loop) for one closed as too slow. Until then its subscriptions would
     * stay in the hub, take every change of their ids, resolve payloads nobody is sent and count
     * in `subscriptions_active`.
     */
    const closing = (code: number, reason: string): void => {
      streams.end();
      gate.release();
      client.close(code, reason);
    };
    const terminate = (): void => {
      streams.end();
      gate.release();
      client.terminate();
    };

    let pongWait: NodeJS.Timeout | null = null;
    const ping = setInterval(() => {
      if (client.readyState !== client.OPEN) return;
      pongWait = setTimeout(terminate, keepAliveMs);
      client.once('pong', () => {
        if (pongWait) clearTimeout(pongWait);
        pongWait = null;
      });
      client.ping();
    }, keepAliveMs);
    ping.unref();

    const closed = protocol.opened(
      {
        protocol: client.protocol,
        send: (data) => gate.send(data),
        close: (code, reason) => closing(code ?? 1000, reason ?? ''),
        onMessage: (handle) =>
          client.on('message', (data) => {
            const text = String(data);
            if (isServerToClientMessage(text)) return closing(CloseCode.BadRequest, 'Invalid message received');
            handle(text).catch((error: Error) => {
              log.error({ err: error.message, stack: error.stack }, 'graphql-ws message handling failed');
              closing(CloseCode.InternalServerError, config.debugErrors ? closeReason(error.message) : 'Internal server error');
            });
          }),
      },
      { request, socket: client, streams },
    );
    client.once('error', (error) => {
      log.warn({ err: error.message }, 'WebSocket error; closing the connection');
      closing(CloseCode.InternalServerError, 'Internal server error');
    });
    client.once('close', (code, reason) => {
      clearInterval(ping);
      if (pongWait) clearTimeout(pongWait);
      streams.end();
      gate.release();
      void closed(code, String(reason));
    });
  }

  return {
    name: 'graphql-ws',
    connections: () => wss.clients.size,
    sending: () => [...contexts].reduce((n, ctx) => n + Object.keys(ctx.subscriptions).length, 0),
    close: async () => {
      server.off('upgrade', onUpgrade);
      // Clients get 1001 "Going away"; one that does not answer the close handshake
      // (e.g. it stopped reading) is cut off after a second rather than ws's 30 s.
      for (const client of wss.clients) client.close(CloseCode.GoingAway, closeReasons[CloseCode.GoingAway]);
      const cutOff = setTimeout(() => {
        for (const client of wss.clients) client.terminate();
      }, 1000);
      try {
        await new Promise<void>((resolve, reject) => wss.close((error) => (error ? reject(error) : resolve())));
        // wss.close does not wait for the clients: wait for their sockets to close (or the cut-off).
        while (wss.clients.size > 0) await new Promise((r) => setTimeout(r, 10));
      } finally {
        clearTimeout(cutOff);
      }
    },
  };
}

/** Whether a client sent a message of a type only the server sends (the protocol says 4400 for those). */
function isServerToClientMessage(text: string): boolean {
  if (!text.includes('"type"')) return false;
  try {
    const message = JSON.parse(text) as { type?: unknown } | null;
    return typeof message === 'object' && message !== null && typeof message.type === 'string' && serverToClientTypes.has(message.type);
  } catch {
    return false; // graphql-ws closes with 4400 itself
  }
}
