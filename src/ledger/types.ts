// The ledger's data model: the objects of PROTOCOL.md section 4, with every u64 as a bigint so that
// no amount, id or timestamp ever passes through a float. u32/u16 fields stay plain numbers.

export const U64_MAX = 0xffff_ffff_ffff_ffffn;
export const U32_MAX = 0xffff_ffff;
export const U16_MAX = 0xffff;
/** Events per request, as in TigerBeetle (one 1 MiB message of 128-byte events). */
export const EVENTS_PER_REQUEST_MAX = 8190;
export const NS_PER_S = 1_000_000_000n;

export interface Account {
  id: bigint;
  debits_pending: bigint;
  debits_posted: bigint;
  credits_pending: bigint;
  credits_posted: bigint;
  user_data_64: bigint;
  user_data_32: number;
  ledger: number;
  code: number;
  flags: number;
  timestamp: bigint;
}

/** An account as a channel creates it: the balances are the ledger's to keep. */
export interface AccountInput {
  id: bigint;
  user_data_64: bigint;
  user_data_32: number;
  ledger: number;
  code: number;
  flags: number;
  /** Zero unless `imported`. */
  timestamp: bigint;
  /** Must be zero (`reserved_field`); kept so TigerBeetle-shaped accounts pass through unchanged. */
  reserved?: number;
}

export interface Transfer {
  id: bigint;
  debit_account_id: bigint;
  credit_account_id: bigint;
  amount: bigint;
  pending_id: bigint;
  user_data_64: bigint;
  user_data_32: number;
  /** Seconds; pending transfers only. */
  timeout: number;
  ledger: number;
  code: number;
  flags: number;
  timestamp: bigint;
}

export type TransferInput = Transfer;

export interface AccountBalance {
  debits_pending: bigint;
  debits_posted: bigint;
  credits_pending: bigint;
  credits_posted: bigint;
  timestamp: bigint;
}

export interface AccountFilter {
  account_id: bigint;
  user_data_64: bigint;
  user_data_32: number;
  code: number;
  /** Inclusive; 0 means unbounded. */
  timestamp_min: bigint;
  /** Inclusive; 0 means unbounded. */
  timestamp_max: bigint;
  limit: number;
  flags: number;
}

export interface QueryFilter {
  user_data_64: bigint;
  user_data_32: number;
  ledger: number;
  code: number;
  timestamp_min: bigint;
  timestamp_max: bigint;
  limit: number;
  flags: number;
}

export const AccountFlags = {
  linked: 1 << 0,
  debits_must_not_exceed_credits: 1 << 1,
  credits_must_not_exceed_debits: 1 << 2,
  history: 1 << 3,
  imported: 1 << 4,
  closed: 1 << 5,
} as const;
export const ACCOUNT_FLAGS_KNOWN = 0b11_1111;

export const TransferFlags = {
  linked: 1 << 0,
  pending: 1 << 1,
  post_pending_transfer: 1 << 2,
  void_pending_transfer: 1 << 3,
  balancing_debit: 1 << 4,
  balancing_credit: 1 << 5,
  closing_debit: 1 << 6,
  closing_credit: 1 << 7,
  imported: 1 << 8,
} as const;
export const TRANSFER_FLAGS_KNOWN = 0b1_1111_1111;

export const AccountFilterFlags = { debits: 1 << 0, credits: 1 << 1, reversed: 1 << 2 } as const;
export const ACCOUNT_FILTER_FLAGS_KNOWN = 0b111;
export const QueryFilterFlags = { reversed: 1 << 0 } as const;
export const QUERY_FILTER_FLAGS_KNOWN = 0b1;

/** PROTOCOL.md section 4: account statuses numbered from 0 in this order, which is also precedence. */
export const CREATE_ACCOUNT_STATUS_NAMES = [
  'created',
  'linked_event_failed',
  'linked_event_chain_open',
  'imported_event_expected',
  'imported_event_not_expected',
  'timestamp_must_be_zero',
  'imported_event_timestamp_out_of_range',
  'imported_event_timestamp_must_not_advance',
  'reserved_field',
  'reserved_flag',
  'id_must_not_be_zero',
  'id_must_not_be_int_max',
  'exists_with_different_flags',
  'exists_with_different_user_data_64',
  'exists_with_different_user_data_32',
  'exists_with_different_ledger',
  'exists_with_different_code',
  'exists',
  'flags_are_mutually_exclusive',
  'ledger_must_not_be_zero',
  'code_must_not_be_zero',
  'imported_event_timestamp_must_not_regress',
] as const;

/** PROTOCOL.md section 4: transfer statuses numbered from 0 in this order, which is also precedence. */
export const CREATE_TRANSFER_STATUS_NAMES = [
  'created',
  'linked_event_failed',
  'linked_event_chain_open',
  'imported_event_expected',
  'imported_event_not_expected',
  'timestamp_must_be_zero',
  'imported_event_timestamp_out_of_range',
  'imported_event_timestamp_must_not_advance',
  'reserved_flag',
  'id_must_not_be_zero',
  'id_must_not_be_int_max',
  'exists_with_different_flags',
  'exists_with_different_pending_id',
  'exists_with_different_timeout',
  'exists_with_different_debit_account_id',
  'exists_with_different_credit_account_id',
  'exists_with_different_amount',
  'exists_with_different_user_data_64',
  'exists_with_different_user_data_32',
  'exists_with_different_ledger',
  'exists_with_different_code',
  'exists',
  'id_already_failed',
  'flags_are_mutually_exclusive',
  'debit_account_id_must_not_be_zero',
  'debit_account_id_must_not_be_int_max',
  'credit_account_id_must_not_be_zero',
  'credit_account_id_must_not_be_int_max',
  'accounts_must_be_different',
  'pending_id_must_be_zero',
  'pending_id_must_not_be_zero',
  'pending_id_must_not_be_int_max',
  'pending_id_must_be_different',
  'timeout_reserved_for_pending_transfer',
  'closing_transfer_must_be_pending',
  'ledger_must_not_be_zero',
  'code_must_not_be_zero',
  'debit_account_not_found',
  'credit_account_not_found',
  'accounts_must_have_the_same_ledger',
  'transfer_must_have_the_same_ledger_as_accounts',
  'pending_transfer_not_found',
  'pending_transfer_not_pending',
  'pending_transfer_has_different_debit_account_id',
  'pending_transfer_has_different_credit_account_id',
  'pending_transfer_has_different_ledger',
  'pending_transfer_has_different_code',
  'exceeds_pending_transfer_amount',
  'pending_transfer_has_different_amount',
  'pending_transfer_already_posted',
  'pending_transfer_already_voided',
  'pending_transfer_expired',
  'imported_event_timestamp_must_not_regress',
  'imported_event_timestamp_must_postdate_debit_account',
  'imported_event_timestamp_must_postdate_credit_account',
  'imported_event_timeout_must_be_zero',
  'debit_account_already_closed',
  'credit_account_already_closed',
  'overflows_debits_pending',
  'overflows_credits_pending',
  'overflows_debits_posted',
  'overflows_credits_posted',
  'overflows_debits',
  'overflows_credits',
  'overflows_timeout',
  'exceeds_credits',
  'exceeds_debits',
] as const;

export type CreateAccountStatusName = (typeof CREATE_ACCOUNT_STATUS_NAMES)[number];
export type CreateTransferStatusName = (typeof CREATE_TRANSFER_STATUS_NAMES)[number];

function enumOf<N extends string>(names: readonly N[]): { readonly [K in N]: number } {
  const out: Record<string, number> = {};
  names.forEach((name, index) => {
    out[name] = index;
  });
  return Object.freeze(out) as { readonly [K in N]: number };
}

export const CreateAccountStatus = enumOf(CREATE_ACCOUNT_STATUS_NAMES);
export const CreateTransferStatus = enumOf(CREATE_TRANSFER_STATUS_NAMES);

/** Statuses that depend on state which may change: the id may not be retried with a new meaning. */
export const TRANSIENT_TRANSFER_STATUSES: ReadonlySet<number> = new Set([
  CreateTransferStatus.debit_account_not_found,
  CreateTransferStatus.credit_account_not_found,
  CreateTransferStatus.pending_transfer_not_found,
  CreateTransferStatus.exceeds_credits,
  CreateTransferStatus.exceeds_debits,
  CreateTransferStatus.debit_account_already_closed,
  CreateTransferStatus.credit_account_already_closed,
]);

/** One status and one timestamp per event, in request order (PROTOCOL.md section 4). */
export interface CreateResult {
  status: number[];
  timestamp: bigint[];
}
