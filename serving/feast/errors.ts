import { ErrorCode } from '../../runtime/errors.js';

/**
 * Error answers of the Feast-compatible endpoint, in the forms Feast's own
 * feature server sends (feast 0.67 feature_server.py, FastAPI) and its
 * client reads back (feast/rest_error_handler.py → FeastError.from_error_detail):
 *
 * - typed: a JSON *string* holding `{"module", "class", "message"}`, what the
 *   server's handler writes for a FeastError (`exc.to_error_detail()`); the
 *   client re-raises it as that class, e.g. `feast.errors.FeatureViewNotFoundException`;
 * - validation (422): FastAPI's `{"detail": [{"type", "loc", "msg", "input"}]}`;
 *   the client raises `RuntimeError("Failed to get online features: 422 …")`;
 * - plain: FastAPI's HTTPException form `{"detail": "<message>"}` (Feast's 401s
 *   look so), plus this gateway's `code`; the client raises RuntimeError with it.
 *
 * Every one carries the gateway's error code for the rejected-requests metric.
 * No HTTP here: a status and a body, for whichever door writes them.
 */
export interface FeastAnswer {
  readonly status: number;
  readonly body: string;
}

export class FeastError extends Error implements FeastAnswer {
  override name = 'FeastError';
  constructor(
    readonly status: number,
    /** The gateway's code (README, "Endpoints and error codes"), for `feature_gateway_rejected_requests_total{code}`. */
    readonly code: ErrorCode,
    readonly body: string,
    message: string,
  ) {
    super(message);
  }
}

/** The FeastError classes this endpoint raises on the client (all in `feast.errors` of feast 0.67). */
export type FeastErrorClass =
  | 'FeatureViewNotFoundException'
  | 'FeatureViewVersionNotFound'
  | 'FeatureServiceNotFoundException'
  | 'FeatureNameCollisionError'
  | 'FeastPermissionError';

/** A FeastError the client turns back into `feast.errors.<cls>` with this message. */
export function typedError(status: number, code: ErrorCode, cls: FeastErrorClass, message: string): FeastError {
  // Python's json.dumps spacing, as to_error_detail() writes it; then the whole as one JSON string.
  const detail = `{"module": "feast.errors", "class": ${JSON.stringify(cls)}, "message": ${JSON.stringify(message)}}`;
  return new FeastError(status, code, JSON.stringify(detail), message);
}

/** One problem of a request body, as pydantic reports it (`loc` starts with "body"). */
export interface ValidationIssue {
  readonly type: string;
  readonly loc: readonly (string | number)[];
  readonly msg: string;
  readonly input: unknown;
  readonly ctx?: Record<string, unknown>;
}

/** 422 with FastAPI's validation body, every issue listed. */
export function validationError(issues: readonly ValidationIssue[]): FeastError {
  const body = JSON.stringify({ detail: issues.map((i) => ({ type: i.type, loc: i.loc, msg: i.msg, input: i.input, ...(i.ctx ? { ctx: i.ctx } : {}) })) });
  return new FeastError(422, ErrorCode.BadRequest, body, issues.map((i) => `${i.loc.join('.')}: ${i.msg}`).join('; '));
}

/** A semantic problem of a well-formed body (mismatched lengths, unknown join key, …): 422, one `value_error`. */
export function valueError(loc: readonly (string | number)[], msg: string, input: unknown): FeastError {
  return validationError([{ type: 'value_error', loc, msg, input }]);
}

/** FastAPI's HTTPException form with the gateway's code: `{"detail": "…", "code": "…"}`. */
export function plainError(status: number, code: ErrorCode, message: string): FeastError {
  return new FeastError(status, code, JSON.stringify({ detail: message, code }), message);
}
