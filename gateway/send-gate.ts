import type { WebSocket } from 'ws';
import { log as rootLog } from '../runtime/log.js';
import {
  subscriptionConnectionsPaused, subscriptionConnectionsStalledClosed, subscriptionSendBufferSources, subscriptionSendPauses,
} from '../runtime/metrics.js';

/**
 * The send side of one subscription connection: a hard bound on the bytes
 * it holds in its socket's send buffer (`bufferedAmount`: ws's queue plus
 * Node's writable buffer; the kernel's buffers come on top and are not in
 * the process's memory).
 *
 * graphql-ws sends one `next` per subscription at a time and waits for the
 * socket to take it, so a client that stops reading already stalls its own
 * subscriptions; but each of its (up to MAX_SUBSCRIPTIONS_PER_CONNECTION)
 * subscriptions still puts its next message into the buffer, whatever its
 * size. This gate stops handing messages to the socket while
 * `bufferedAmount` is over `maxBufferedBytes`: a held `send` does not
 * complete, so graphql-ws does not pull the next event, which stays in the
 * subscription's bounded queue (superseded or dropped there, with their
 * metrics). Sends resume in order as the buffer drains. A connection that
 * stays paused for `stallTimeoutMs` is closed with
 * `SlowSubscriberCloseCode` and cut off a second later if it does not read
 * the close frame either; from the close on it counts as paused no longer
 * (and its subscriptions end then: gateway/subscriptions.ts).
 */

/** Close code of a connection whose client stopped reading (README, "Subscriptions"). */
export const SlowSubscriberCloseCode = 4413;
export const SlowSubscriberCloseReason = 'Subscriber too slow: send buffer full';

export interface SendLimits {
  /** Pause sending while the socket holds more than this many bytes. */
  readonly maxBufferedBytes: number;
  /** Close a connection that stays paused this long. */
  readonly stallTimeoutMs: number;
}

type SendCallback = (error?: Error) => void;
interface Held {
  readonly data: unknown;
  readonly options: object | undefined;
  readonly callback: SendCallback | undefined;
}

const log = rootLog.child({ component: 'subscriptions' });

/** Installs the gate on a freshly upgraded connection (before graphql-ws sees it). */
export function gateSends(client: WebSocket, limits: SendLimits): void {
  const send = client.send.bind(client) as (data: unknown, options: object | undefined, callback: SendCallback) => void;
  const held: Held[] = [];
  let pausedAt: number | null = null;
  let stallTimer: NodeJS.Timeout | undefined;
  const bufferedAmount = (): number => client.bufferedAmount;
  subscriptionSendBufferSources.add(bufferedAmount);

  const pass = (message: Held): void => {
    // Each completed write shrank the buffer: the moment to let held messages through.
    send(message.data, message.options, (error) => {
      message.callback?.(error);
      if (held.length > 0) flush();
    });
  };

  const flush = (): void => {
    while (held.length > 0 && client.bufferedAmount <= limits.maxBufferedBytes && client.readyState === client.OPEN) pass(held.shift()!);
    if (held.length === 0 && pausedAt !== null) {
      pausedAt = null;
      clearTimeout(stallTimer);
      subscriptionConnectionsPaused.dec();
    }
  };

  /** Sends are over for good (the connection closed, or is closing as too slow): held messages are not delivered. */
  const release = (): void => {
    if (pausedAt !== null) {
      clearTimeout(stallTimer);
      subscriptionConnectionsPaused.dec();
      pausedAt = null;
    }
    // Like graphql-ws's own send to a closed socket: their senders are released, so the subscriptions' loops end
    // instead of waiting forever.
    for (const message of held.splice(0)) message.callback?.();
  };

  const pause = (): void => {
    if (pausedAt !== null) return;
    pausedAt = Date.now();
    subscriptionSendPauses.inc();
    subscriptionConnectionsPaused.inc();
    stallTimer = setTimeout(() => {
      subscriptionConnectionsStalledClosed.inc();
      log.warn(
        { bufferedBytes: client.bufferedAmount, heldMessages: held.length, pausedMs: Date.now() - pausedAt! },
        'closing a subscription connection whose client stopped reading',
      );
      client.close(SlowSubscriberCloseCode, SlowSubscriberCloseReason);
      release();
      // The close frame waits behind the unread data; a client that reads nothing never gets it.
      setTimeout(() => client.terminate(), 1000).unref();
    }, limits.stallTimeoutMs);
    stallTimer.unref();
  };

  client.send = ((data: unknown, optionsOrCallback?: object | SendCallback, maybeCallback?: SendCallback): void => {
    const options = typeof optionsOrCallback === 'function' ? undefined : optionsOrCallback;
    const callback = typeof optionsOrCallback === 'function' ? (optionsOrCallback as SendCallback) : maybeCallback;
    const message: Held = { data, options, callback };
    if (held.length === 0 && (client.bufferedAmount <= limits.maxBufferedBytes || client.readyState !== client.OPEN)) {
      pass(message);
      return;
    }
    held.push(message);
    pause();
  }) as typeof client.send;

  client.once('close', () => {
    subscriptionSendBufferSources.delete(bufferedAmount);
    release();
  });
}
