import { CloseCode as GraphQLWsCloseCode } from 'graphql-ws';
import type { AccessError } from '../../auth/errors.js';

/**
 * Every close code a subscription connection can end with, in one table:
 * graphql-ws's own (its protocol's), extended with this gateway's. No code is
 * used with a meaning other than its owner's: 4429 is graphql-ws's "Too many
 * initialisation requests", so rate limiting has its own code here. The HTTP
 * transports (SSE, multipart) end with an HTTP status instead; `httpStatusOf`
 * maps the ones they share.
 */
export const CloseCode = {
  ...GraphQLWsCloseCode,
  /** The server is shutting down (WebSocket 1001): reconnect to another instance. */
  GoingAway: 1001,
  /** The client stopped reading: its send buffer stayed full for SUBSCRIPTION_STALL_TIMEOUT_MS (send-gate.ts). */
  SubscriberTooSlow: 4413,
  /** The principal's rate limit is spent; the reason says when to retry (README, "Rate limits"). */
  RateLimited: 4430,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

export const closeReasons = {
  [CloseCode.SubscriberTooSlow]: 'Subscriber too slow: send buffer full',
  [CloseCode.GoingAway]: 'Going away',
} as const;

/** The close code of a connection refused at connection_init by authentication or authorization. */
export function closeCodeOf(error: AccessError): CloseCode {
  if (error.status === 401) return CloseCode.Unauthorized;
  if (error.status === 429) return CloseCode.RateLimited;
  return CloseCode.Forbidden;
}

/** A WebSocket close reason is at most 123 bytes: longer ones are cut with an ellipsis. */
export function closeReason(message: string): string {
  let reason = message;
  while (Buffer.byteLength(reason) > 123) reason = reason.slice(0, -2) + '…';
  return reason;
}
