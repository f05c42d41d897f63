// The ledger ops of PROTOCOL.md section 4 at the door: a request's params are checked (unknown params,
// then decode.ts for the values) and turned into one engine call. Errors are values naming the field.

import {
  decodeAccountFilter,
  decodeAccounts,
  decodeIds,
  decodeQueryFilter,
  decodeTransfers,
  type DecodeErrorCode,
} from '../ledger/decode.ts';
import type { AccountFilter, QueryFilter } from '../ledger/types.ts';
import type { ShardResult } from '../shard/messages.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../storage/codec.ts';
import type { Frame } from './codec.ts';
import type { LedgerOp } from './protocol.ts';

/** What the gateway needs of the engine (src/shard/engine.ts `Engine` has this shape). */
export interface LedgerEngine {
  createAccounts(count: number, body: Uint8Array): Promise<ShardResult>;
  createTransfers(count: number, body: Uint8Array): Promise<ShardResult>;
  lookupAccounts(ids: bigint[]): Promise<ShardResult>;
  lookupTransfers(ids: bigint[]): Promise<ShardResult>;
  getAccountTransfers(filter: AccountFilter): Promise<ShardResult>;
  getAccountBalances(filter: AccountFilter): Promise<ShardResult>;
  queryAccounts(filter: QueryFilter): Promise<ShardResult>;
  queryTransfers(filter: QueryFilter): Promise<ShardResult>;
}

export interface RequestFailure {
  ok: false;
  error: DecodeErrorCode;
  field: string;
  message: string;
}

/**
 * A checked request: either a call to make, or a result known without the engine (an empty batch
 * or id list, which needs no log entry).
 */
export type Prepared =
  | { ok: true; call: EngineCall }
  | { ok: true; result: ShardResult }
  | RequestFailure;

/** One engine call, as data (no closure per request on the hot path): see `callEngine`. */
export type EngineCall =
  | { op: 'create_accounts' | 'create_transfers'; count: number; body: Uint8Array }
  | { op: 'lookup_accounts' | 'lookup_transfers'; ids: bigint[] }
  | { op: 'get_account_transfers' | 'get_account_balances'; filter: AccountFilter }
  | { op: 'query_accounts' | 'query_transfers'; filter: QueryFilter };

export function callEngine(engine: LedgerEngine, call: EngineCall): Promise<ShardResult> {
  switch (call.op) {
    case 'create_accounts':
      return engine.createAccounts(call.count, call.body);
    case 'create_transfers':
      return engine.createTransfers(call.count, call.body);
    case 'lookup_accounts':
      return engine.lookupAccounts(call.ids);
    case 'lookup_transfers':
      return engine.lookupTransfers(call.ids);
    case 'get_account_transfers':
      return engine.getAccountTransfers(call.filter);
    case 'get_account_balances':
      return engine.getAccountBalances(call.filter);
    case 'query_accounts':
      return engine.queryAccounts(call.filter);
    case 'query_transfers':
      return engine.queryTransfers(call.filter);
  }
}

/** The one param each op takes, besides `id` and `op`. */
const PARAM: Record<LedgerOp, string> = {
  create_accounts: 'accounts',
  create_transfers: 'transfers',
  lookup_accounts: 'ids',
  lookup_transfers: 'ids',
  get_account_transfers: 'filter',
  get_account_balances: 'filter',
  query_accounts: 'filter',
  query_transfers: 'filter',
};

const FIELD_SHOWN_MAX = 64;

function unknownParam(op: LedgerOp, key: string): RequestFailure {
  const shown = key.length > FIELD_SHOWN_MAX ? `${key.slice(0, FIELD_SHOWN_MAX)}...` : key;
  return {
    ok: false,
    error: 'invalid_request',
    field: shown,
    message: `${op} has unknown field ${JSON.stringify(shown)}; expected only id, op and ${PARAM[op]}`,
  };
}

/** Checks a ledger request's params and builds its engine call. */
export function prepare(op: LedgerOp, frame: Frame): Prepared {
  const param = PARAM[op];
  for (const key in frame) {
    if (key !== 'id' && key !== 'op' && key !== param && frame[key] !== undefined) return unknownParam(op, key);
  }
  const raw = frame[param];
  switch (op) {
    case 'create_accounts': {
      const d = decodeAccounts(raw);
      if (!d.ok) return d;
      const events = d.value;
      if (events.length === 0) return { ok: true, result: { status: [], timestamp: [] } };
      return { ok: true, call: { op, count: events.length, body: encodeAccountBatch(events) } };
    }
    case 'create_transfers': {
      const d = decodeTransfers(raw);
      if (!d.ok) return d;
      const events = d.value;
      if (events.length === 0) return { ok: true, result: { status: [], timestamp: [] } };
      return { ok: true, call: { op, count: events.length, body: encodeTransferBatch(events) } };
    }
    case 'lookup_accounts': {
      const d = decodeIds(raw, 'ids');
      if (!d.ok) return d;
      const ids = d.value;
      if (ids.length === 0) return { ok: true, result: { accounts: [] } };
      return { ok: true, call: { op, ids } };
    }
    case 'lookup_transfers': {
      const d = decodeIds(raw, 'ids');
      if (!d.ok) return d;
      const ids = d.value;
      if (ids.length === 0) return { ok: true, result: { transfers: [] } };
      return { ok: true, call: { op, ids } };
    }
    case 'get_account_transfers': {
      const d = decodeAccountFilter(raw);
      if (!d.ok) return d;
      const filter = d.value;
      return { ok: true, call: { op, filter } };
    }
    case 'get_account_balances': {
      const d = decodeAccountFilter(raw);
      if (!d.ok) return d;
      const filter = d.value;
      return { ok: true, call: { op, filter } };
    }
    case 'query_accounts': {
      const d = decodeQueryFilter(raw);
      if (!d.ok) return d;
      const filter = d.value;
      return { ok: true, call: { op, filter } };
    }
    case 'query_transfers': {
      const d = decodeQueryFilter(raw);
      if (!d.ok) return d;
      const filter = d.value;
      return { ok: true, call: { op, filter } };
    }
  }
}
