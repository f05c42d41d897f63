// A digest of the whole ledger state over its canonical encoding: two replicas, or a replica and
// its own replay, hold the same state exactly when their hashes match.

import { createHash } from 'node:crypto';
import type { Ledger } from '../ledger/ledger.ts';
import { ACCOUNT_BYTES, BALANCE_BYTES, PENDING_BYTES, TRANSFER_BYTES, viewOf, writeAccount, writeBalance, writePending, writeTransfer } from './codec.ts';

export function stateHash(ledger: Ledger): string {
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(4096 * ACCOUNT_BYTES);
  const view = viewOf(chunk);
  const header = Buffer.alloc(8);

  const accounts = ledger.accountsInOrder();
  header.writeBigUInt64LE(BigInt(accounts.length));
  hash.update(header);
  for (let i = 0; i < accounts.length; i += 4096) {
    const n = Math.min(4096, accounts.length - i);
    for (let k = 0; k < n; k++) writeAccount(view, k * ACCOUNT_BYTES, accounts[i + k]);
    hash.update(chunk.subarray(0, n * ACCOUNT_BYTES));
  }

  const transfers = ledger.transfersInOrder();
  header.writeBigUInt64LE(BigInt(transfers.length));
  hash.update(header);
  for (let i = 0; i < transfers.length; i += 4096) {
    const n = Math.min(4096, transfers.length - i);
    for (let k = 0; k < n; k++) writeTransfer(view, k * TRANSFER_BYTES, transfers[i + k]);
    hash.update(chunk.subarray(0, n * TRANSFER_BYTES));
  }

  const pending = [...ledger.pending.entries()].sort((a, b) => compare(a[0], b[0]));
  const record = Buffer.allocUnsafe(8 + Math.max(PENDING_BYTES, BALANCE_BYTES));
  const record_view = viewOf(record);
  for (const [id, state] of pending) {
    record.writeBigUInt64LE(id, 0);
    writePending(record_view, 8, state);
    hash.update(record.subarray(0, 8 + PENDING_BYTES));
  }
  for (const id of [...ledger.transient].sort(compare)) {
    header.writeBigUInt64LE(id);
    hash.update(header);
  }
  for (const account of accounts) {
    const history = ledger.historyOf(account.id);
    if (history === null) continue;
    for (const balance of history) {
      record.writeBigUInt64LE(account.id, 0);
      writeBalance(record_view, 8, balance);
      hash.update(record.subarray(0, 8 + BALANCE_BYTES));
    }
  }
  header.writeBigUInt64LE(ledger.last_timestamp);
  hash.update(header);
  return hash.digest('hex');
}

function compare(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
