/**
 * Error codes the project answers with. Every code here is documented in
 * README.md ("Error codes"); clients may branch on them.
 */
export const ErrorCode = {
  BadRequest: 'BAD_REQUEST',
  BodyTooLarge: 'BODY_TOO_LARGE',
  BatchTooLarge: 'BATCH_TOO_LARGE',
  QueryTooDeep: 'QUERY_TOO_DEEP',
  PersistedQueryInvalid: 'PERSISTED_QUERY_INVALID',
  OperationResolutionFailure: 'OPERATION_RESOLUTION_FAILURE',
  OperationNotSupported: 'OPERATION_NOT_SUPPORTED',
  NotInSafelist: 'PERSISTED_QUERY_NOT_IN_SAFELIST',
  StoreUnavailable: 'STORE_UNAVAILABLE',
  StoreCorruptValue: 'STORE_CORRUPT_VALUE',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** A problem with configuration, naming the variable at fault. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
  }
}
