// Errors of the client: one class, `KeelError`, whose `code` is either a PROTOCOL.md section 2 error
// string (the server's answer, or the same check done locally) or one of the client's own codes.

/** PROTOCOL.md section 2: the `error` of a failed request. */
export const SERVER_ERROR_CODES = [
  'unauthorized',
  'forbidden',
  'invalid_request',
  'unknown_op',
  'too_many_events',
  'too_many_inflight',
  'busy',
  'timeout',
  'unavailable',
  'cursor_expired',
  'internal',
] as const;
export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];

/** Codes that only the client produces. */
export const CLIENT_ERROR_CODES = [
  /** `connect()` could not open the WebSocket or complete `hello`. */
  'connection_failed',
  /** The connection was lost and the client gave up (reconnect disabled or exhausted, or a fatal close). */
  'connection_closed',
  /** `close()` was called. */
  'client_closed',
  /** The client's bounded local queue is full: the server's in-flight cap is reached and no room is left. */
  'too_many_inflight_local',
  /** One call's events encode to more than the server's `limits.frame_bytes`. */
  'frame_too_large',
  /** The server sent something that breaks the protocol (undecodable frame, malformed reply, close 1003/1007/1009). */
  'protocol_error',
] as const;
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

export type KeelErrorCode = ServerErrorCode | ClientErrorCode;

const SERVER_CODES: ReadonlySet<string> = new Set(SERVER_ERROR_CODES);

/** Codes after which the request certainly changed nothing. */
const NOT_APPLIED: ReadonlySet<KeelErrorCode> = new Set<KeelErrorCode>([
  'connection_failed',
  'too_many_inflight_local',
  'frame_too_large',
  'unauthorized',
  'forbidden',
  'invalid_request',
  'unknown_op',
  'too_many_events',
  'too_many_inflight',
  'busy',
  'cursor_expired',
]);

export interface KeelErrorOptions {
  /** For `invalid_request`: the path of the offending value, e.g. `transfers[2].amount` (locally, or as the server named it). */
  field?: string;
  /** For `cursor_expired`: the oldest cursor the change feed still serves. */
  oldest?: string;
  /**
   * Whether the request may have been applied. Defaults from the code: true for `timeout`,
   * `unavailable`, `internal`, `protocol_error`, `connection_closed` and `client_closed`, false
   * otherwise. The client passes false for calls that were never sent.
   */
  outcome_unknown?: boolean;
}

export class KeelError extends Error {
  override readonly name = 'KeelError';
  readonly code: KeelErrorCode;
  readonly field: string | undefined;
  /** For `cursor_expired`: the oldest cursor the change feed still serves (resume there to go on). */
  readonly oldest: string | undefined;
  /**
   * True when the operation may or may not have been applied (the request reached, or may have reached,
   * the server). Resending the same events with the same ids is then safe: already applied events
   * answer `exists`.
   */
  readonly outcome_unknown: boolean;

  constructor(code: KeelErrorCode, message: string, options: KeelErrorOptions = {}) {
    super(message);
    this.code = code;
    this.field = options.field;
    this.oldest = options.oldest;
    this.outcome_unknown = options.outcome_unknown ?? !NOT_APPLIED.has(code);
  }
}

export function isKeelError(e: unknown): e is KeelError {
  return e instanceof KeelError;
}

/**
 * A server's `{error, message, field?}` as a KeelError; an error string this client does not know
 * becomes `internal`, with the string kept in the message.
 */
export function serverError(error: unknown, message: unknown, field?: unknown, oldest?: unknown): KeelError {
  const text = typeof message === 'string' ? message : '';
  const options: KeelErrorOptions = typeof field === 'string' ? { field } : {};
  if (typeof oldest === 'string') options.oldest = oldest;
  if (typeof error === 'string' && SERVER_CODES.has(error)) {
    return new KeelError(error as ServerErrorCode, text || error, options);
  }
  return new KeelError('internal', `server error ${JSON.stringify(String(error))}${text ? `: ${text}` : ''}`, options);
}
