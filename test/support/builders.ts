// Builders for ledger events and filters, with the defaults every test would otherwise repeat:
// ledger 1, code 1, no flags, zero user data, zero timestamp (engine-assigned).
//
//   account(1n)                                   an account on ledger 1
//   account(2n, { flags: AccountFlags.history })  any field overridden
//   transfer(10n, 1n, 2n, 100n)                   a posted transfer 1 -> 2 of 100
//   pending(11n, 1n, 2n, 100n, { timeout: 5 })     a two-phase transfer (pending flag added)
//   post(12n, 11n)                                posts the whole of pending 11 (amount 2^64-1)
//   post(12n, 11n, 30n)                           posts 30 of it, voids the rest
//   voidPending(13n, 11n)                         voids it
//   accountFilter(1n), queryFilter({ ledger: 1 }) filters that match everything by default
//
// post() and voidPending() leave every field they can inherit (accounts, ledger, code, user data)
// at zero, as TigerBeetle clients usually send them.

import {
  type AccountFilter,
  type AccountInput,
  type QueryFilter,
  type TransferInput,
  AccountFilterFlags,
  EVENTS_PER_REQUEST_MAX,
  TransferFlags,
  U64_MAX,
} from '../../src/ledger/types.ts';

export function account(id: bigint, fields: Partial<AccountInput> = {}): AccountInput {
  return {
    id,
    user_data_64: 0n,
    user_data_32: 0,
    ledger: 1,
    code: 1,
    flags: 0,
    timestamp: 0n,
    ...fields,
  };
}

export function transfer(
  id: bigint,
  debit_account_id: bigint,
  credit_account_id: bigint,
  amount: bigint,
  fields: Partial<TransferInput> = {},
): TransferInput {
  return {
    id,
    debit_account_id,
    credit_account_id,
    amount,
    pending_id: 0n,
    user_data_64: 0n,
    user_data_32: 0,
    timeout: 0,
    ledger: 1,
    code: 1,
    flags: 0,
    timestamp: 0n,
    ...fields,
  };
}

/** A pending (two-phase) transfer: `fields.flags` are added to `pending`. */
export function pending(
  id: bigint,
  debit_account_id: bigint,
  credit_account_id: bigint,
  amount: bigint,
  fields: Partial<TransferInput> = {},
): TransferInput {
  return transfer(id, debit_account_id, credit_account_id, amount, {
    ...fields,
    flags: TransferFlags.pending | (fields.flags ?? 0),
  });
}

/** Posts `pending_id`; amount 2^64-1 (the default) posts the whole pending amount. */
export function post(id: bigint, pending_id: bigint, amount: bigint = U64_MAX, fields: Partial<TransferInput> = {}): TransferInput {
  return transfer(id, 0n, 0n, amount, {
    ledger: 0,
    code: 0,
    ...fields,
    pending_id,
    flags: TransferFlags.post_pending_transfer | (fields.flags ?? 0),
  });
}

/** Voids `pending_id`; amount 0 (the default) means the pending amount. */
export function voidPending(id: bigint, pending_id: bigint, amount = 0n, fields: Partial<TransferInput> = {}): TransferInput {
  return transfer(id, 0n, 0n, amount, {
    ledger: 0,
    code: 0,
    ...fields,
    pending_id,
    flags: TransferFlags.void_pending_transfer | (fields.flags ?? 0),
  });
}

/** Both sides, oldest first, as many as a request allows. */
export function accountFilter(account_id: bigint, fields: Partial<AccountFilter> = {}): AccountFilter {
  return {
    account_id,
    user_data_64: 0n,
    user_data_32: 0,
    code: 0,
    timestamp_min: 0n,
    timestamp_max: 0n,
    limit: EVENTS_PER_REQUEST_MAX,
    flags: AccountFilterFlags.debits | AccountFilterFlags.credits,
    ...fields,
  };
}

/** Everything, oldest first, as many as a request allows. */
export function queryFilter(fields: Partial<QueryFilter> = {}): QueryFilter {
  return {
    user_data_64: 0n,
    user_data_32: 0,
    ledger: 0,
    code: 0,
    timestamp_min: 0n,
    timestamp_max: 0n,
    limit: EVENTS_PER_REQUEST_MAX,
    flags: 0,
    ...fields,
  };
}
