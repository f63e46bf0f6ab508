import { ErrorCode } from '../runtime/errors.js';

/**
 * A request refused by authentication, authorization or a per-principal
 * limit: the code and HTTP status clients see, and a message that says what
 * to do. Never carries a credential.
 */
export class AccessError extends Error {
  override name = 'AccessError';
  constructor(
    readonly code: ErrorCode,
    readonly status: number,
    message: string,
    /** Seconds to wait before retrying (rate limits). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

export const unauthenticated = (message: string): AccessError => new AccessError(ErrorCode.Unauthenticated, 401, message);
export const forbidden = (message: string): AccessError => new AccessError(ErrorCode.Forbidden, 403, message);
