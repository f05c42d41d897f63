// The fixed vocabulary of the wire protocol (PROTOCOL.md sections 1-3): version, error codes,
// close codes, scopes and the ops this gateway serves. No logic beyond tiny predicates.

import { EVENTS_PER_REQUEST_MAX } from '../ledger/types.ts';

export const PROTOCOL_VERSION = 1;
export { EVENTS_PER_REQUEST_MAX };

/** `error` of a failed request (PROTOCOL.md section 2). */
export type ErrorCode =
  | 'unauthorized'
  | 'forbidden'
  | 'invalid_request'
  | 'unknown_op'
  | 'too_many_events'
  | 'too_many_inflight'
  | 'busy'
  | 'timeout'
  | 'unavailable'
  | 'cursor_expired'
  | 'internal';

/**
 * WebSocket close codes the gateway uses. 1003/1007/1009/4401 are fixed by PROTOCOL.md; the others
 * are this gateway's choices (docs/operations-gateway.md).
 */
export const CloseCode = {
  /** Server shutting down (after in-flight requests were answered). */
  going_away: 1001,
  /** A text frame. */
  unsupported_data: 1003,
  /** A frame that is not exactly one MessagePack map. */
  invalid_payload: 1007,
  /** No hello in time, or a client that does not read its replies (send buffer stalled/overflowed). */
  policy_violation: 1008,
  /** A frame over `frame_bytes` (closed by ws itself through maxPayload). */
  message_too_big: 1009,
  /** Bad hello, any other op first, or the token was revoked while connected. */
  unauthorized: 4401,
} as const;

export const SCOPES = ['ledger:read', 'ledger:write', 'banking:read', 'banking:write', 'subscribe', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export function isScope(value: string): value is Scope {
  return (SCOPES as readonly string[]).includes(value);
}

/** `admin` implies every scope. */
export function hasScope(scopes: readonly Scope[], needed: Scope): boolean {
  return scopes.includes(needed) || scopes.includes('admin');
}

/** Ledger ops of PROTOCOL.md section 4 with the scope each needs. */
export const LEDGER_OPS = {
  create_accounts: 'ledger:write',
  create_transfers: 'ledger:write',
  lookup_accounts: 'ledger:read',
  lookup_transfers: 'ledger:read',
  get_account_transfers: 'ledger:read',
  get_account_balances: 'ledger:read',
  query_accounts: 'ledger:read',
  query_transfers: 'ledger:read',
} as const satisfies Record<string, Scope>;
export type LedgerOp = keyof typeof LEDGER_OPS;

export function isLedgerOp(op: string): op is LedgerOp {
  return Object.hasOwn(LEDGER_OPS, op);
}

