/**
 * Error codes the project answers with. Every code here is documented in
 * README.md ("Error codes"); clients may branch on them.
 */
export const ErrorCode = {
  BadRequest: 'BAD_REQUEST',
  BodyTooLarge: 'BODY_TOO_LARGE',
  BatchTooLarge: 'BATCH_TOO_LARGE',
  /** A variable's value does not fit its declared type (Apollo Server's code for the same). */
  BadUserInput: 'BAD_USER_INPUT',
  QueryTooDeep: 'QUERY_TOO_DEEP',
  PersistedQueryInvalid: 'PERSISTED_QUERY_INVALID',
  OperationResolutionFailure: 'OPERATION_RESOLUTION_FAILURE',
  OperationNotSupported: 'OPERATION_NOT_SUPPORTED',
  NotInSafelist: 'PERSISTED_QUERY_NOT_IN_SAFELIST',
  StoreUnavailable: 'STORE_UNAVAILABLE',
  StoreCorruptValue: 'STORE_CORRUPT_VALUE',
  /** No valid credentials (or none, where anonymous callers are refused). */
  Unauthenticated: 'UNAUTHENTICATED',
  /** The caller lacks the role an operation or a view needs (README, "Roles"). */
  Forbidden: 'FORBIDDEN',
  RateLimited: 'RATE_LIMITED',
  QueryTooCostly: 'QUERY_TOO_COSTLY',
  /** A subscribe request past MAX_SUBSCRIPTIONS_PER_CONNECTION on one connection. */
  TooManySubscriptions: 'TOO_MANY_SUBSCRIPTIONS',
  /** Apollo Server's codes, used alike where the gateway parses and validates itself (subscriptions). */
  ParseFailed: 'GRAPHQL_PARSE_FAILED',
  ValidationFailed: 'GRAPHQL_VALIDATION_FAILED',
  /** A push row breaks a rule GraphQL's types cannot express; the extensions name the row and field. */
  PushInvalid: 'PUSH_INVALID',
  /** A push was written to the store but its change events could not be produced; retrying is safe. */
  PushNotPublished: 'PUSH_NOT_PUBLISHED',
  DeadlineExceeded: 'DEADLINE_EXCEEDED',
  CorsOriginDenied: 'CORS_ORIGIN_DENIED',
  ShuttingDown: 'SHUTTING_DOWN',
  /** The Feast-compatible endpoint: a feature view, version, feature or feature service the registry does not have (404). */
  NotFound: 'NOT_FOUND',
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
