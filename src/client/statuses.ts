// Status codes and flags by name (PROTOCOL.md section 4), and the reverse: the name of a code.

import {
  CREATE_ACCOUNT_STATUS_NAMES,
  CREATE_TRANSFER_STATUS_NAMES,
  type CreateAccountStatusName,
  type CreateTransferStatusName,
} from '../ledger/types.ts';

export {
  AccountFilterFlags,
  AccountFlags,
  CREATE_ACCOUNT_STATUS_NAMES,
  CREATE_TRANSFER_STATUS_NAMES,
  CreateAccountStatus,
  CreateTransferStatus,
  QueryFilterFlags,
  TRANSIENT_TRANSFER_STATUSES,
  TransferFlags,
  U64_MAX,
  type CreateAccountStatusName,
  type CreateTransferStatusName,
} from '../ledger/types.ts';

/**
 * The name of a create_accounts status, e.g. 17 -> 'exists'; undefined for a code this client does not
 * know (banking statuses, from 100, are specified separately).
 */
export function accountStatusName(code: number): CreateAccountStatusName | undefined {
  return Number.isInteger(code) && code >= 0 ? CREATE_ACCOUNT_STATUS_NAMES[code] : undefined;
}

/** The name of a create_transfers status, e.g. 65 -> 'exceeds_credits'; undefined when unknown. */
export function transferStatusName(code: number): CreateTransferStatusName | undefined {
  return Number.isInteger(code) && code >= 0 ? CREATE_TRANSFER_STATUS_NAMES[code] : undefined;
}
