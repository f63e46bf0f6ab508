import { log as rootLog } from '../../runtime/log.js';
import {
  subscriptionConnectionsPaused, subscriptionConnectionsStalledClosed, subscriptionSendBufferSources, subscriptionSendPauses,
} from '../../runtime/metrics.js';

/**
 * The send side of one subscription connection, whatever its transport: a
 * hard bound on the bytes it holds in its connection's send buffer (a
 * WebSocket's `bufferedAmount`, a response's `writableLength`; the kernel's
 * buffers come on top and are not in the process's memory).
 *
 * Each subscription's loop awaits `send` before it pulls its next event. The
 * gate passes messages to the sink while it holds at most `maxBufferedBytes`;
 * a message that takes it over the bound is written, but its send resolves
 * only once the write completed, and later ones (of the connection's other
 * subscriptions, up to MAX_SUBSCRIPTIONS_PER_CONNECTION on a WebSocket) are
 * held and their sends do not resolve: their subscriptions do not pull the
 * next event, which stays in the subscription's bounded queue (superseded or
 * dropped there, with their metrics: hub.ts). Sends resume in order as the
 * buffer drains. A connection that stays paused for `stallTimeoutMs` is
 * closed as too slow (close code 4413, or the response ended) and cut off a
 * second later if the client does not read the close either; from then on it
 * counts as paused no longer, and every held or later send resolves at once
 * without sending, so the loops end instead of waiting forever.
 */

export interface SendLimits {
  /** Pause sending while the connection holds more than this many bytes. */
  readonly maxBufferedBytes: number;
  /** Close a connection that stays paused this long. */
  readonly stallTimeoutMs: number;
}

/** What a transport's connection offers the gate. */
export interface Sink {
  /** Bytes handed to the connection and not yet taken by the network. */
  bufferedBytes(): number;
  /** Still open for writing. */
  isOpen(): boolean;
  /** Writes one message; `done` once the connection took it. */
  write(data: string | Uint8Array, done: (error?: Error | null) => void): void;
  /** Closes the connection as too slow (a close frame, or the end of the response). */
  closeTooSlow(): void;
  /** Cuts the connection off: the client did not even read the close. */
  destroy(): void;
}

interface Held {
  readonly data: string | Uint8Array;
  readonly resolve: () => void;
}

const log = rootLog.child({ component: 'subscriptions' });

export class SendGate {
  private readonly held: Held[] = [];
  private pausedAt: number | null = null;
  private stallTimer: NodeJS.Timeout | undefined;
  private released = false;
  private readonly bufferedBytes = (): number => this.sink.bufferedBytes();

  constructor(
    private readonly sink: Sink,
    private readonly limits: SendLimits,
  ) {
    subscriptionSendBufferSources.add(this.bufferedBytes);
  }

  /** Resolves once the connection took the message (or will never: it closed, and the message is dropped). */
  send(data: string | Uint8Array): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.released || !this.sink.isOpen()) return resolve();
      const message: Held = { data, resolve };
      if (this.held.length === 0 && this.sink.bufferedBytes() <= this.limits.maxBufferedBytes) return this.pass(message);
      this.held.push(message);
      this.pause();
    });
  }

  /** Sends are over for good (the connection closed): held messages are not delivered, their senders released. */
  release(): void {
    if (this.released) return;
    this.released = true;
    subscriptionSendBufferSources.delete(this.bufferedBytes);
    this.unpause();
    for (const message of this.held.splice(0)) message.resolve();
  }

  /**
   * Hands one message to the sink. Its sender may go on at once when the buffer is still within the
   * bound; when this message took it over, the sender waits for the write to complete and the
   * connection counts as paused (the stall clock runs). So a connection with a single subscription
   * (every SSE or multipart response) pauses and stalls like one with many, and the bound is
   * `maxBufferedBytes` plus one message.
   */
  private pass(message: Held): void {
    let resolved = false;
    const settle = (): void => {
      if (resolved) return;
      resolved = true;
      message.resolve();
    };
    // Each completed write shrank the buffer: the moment to let held messages through.
    this.sink.write(message.data, () => {
      settle();
      this.flush();
    });
    if (this.sink.bufferedBytes() <= this.limits.maxBufferedBytes) settle();
    else this.pause();
  }

  private flush(): void {
    while (this.held.length > 0 && !this.released && this.sink.isOpen() && this.sink.bufferedBytes() <= this.limits.maxBufferedBytes) this.pass(this.held.shift()!);
    if (this.held.length === 0 && this.sink.bufferedBytes() <= this.limits.maxBufferedBytes) this.unpause();
  }

  private unpause(): void {
    if (this.pausedAt === null) return;
    this.pausedAt = null;
    clearTimeout(this.stallTimer);
    subscriptionConnectionsPaused.dec();
  }

  private pause(): void {
    if (this.pausedAt !== null) return;
    this.pausedAt = Date.now();
    subscriptionSendPauses.inc();
    subscriptionConnectionsPaused.inc();
    this.stallTimer = setTimeout(() => {
      subscriptionConnectionsStalledClosed.inc();
      log.warn(
        { bufferedBytes: this.sink.bufferedBytes(), heldMessages: this.held.length, pausedMs: Date.now() - this.pausedAt! },
        'closing a subscription connection whose client stopped reading',
      );
      this.sink.closeTooSlow();
      this.release();
      // The close waits behind the unread data; a client that reads nothing never gets it.
      setTimeout(() => this.sink.destroy(), 1000).unref();
    }, this.limits.stallTimeoutMs);
    this.stallTimer.unref();
  }
}
