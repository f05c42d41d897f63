// Fixed-size little-endian records for the log and checkpoints. A fixed layout is deterministic
// (the same state always encodes to the same bytes, which the state hash relies on), needs no
// schema negotiation, and decodes without allocating anything but the object itself.

import type { Account, AccountBalance, AccountInput, Transfer } from '../ledger/types.ts';
import type { PendingState, PendingStatusValue } from '../ledger/ledger.ts';

export const TRANSFER_BYTES = 72;
export const ACCOUNT_INPUT_BYTES = 40;
export const ACCOUNT_BYTES = 72;
export const BALANCE_BYTES = 40;
export const PENDING_BYTES = 16;

/**
 * The u16 flags of record `index` of an encoded batch: transfers (72-byte records, flags at 70)
 * or account inputs (40-byte records, flags at 34). Read from the bytes, without a DataView.
 */
export function recordFlags(body: Uint8Array, index: number, record_bytes: typeof TRANSFER_BYTES | typeof ACCOUNT_INPUT_BYTES): number {
  const at = index * record_bytes + (record_bytes === TRANSFER_BYTES ? 70 : 34);
  return body[at] | (body[at + 1] << 8);
}

export function writeTransfer(view: DataView, offset: number, t: Transfer): void {
  view.setBigUint64(offset + 0, t.id, true);
  view.setBigUint64(offset + 8, t.debit_account_id, true);
  view.setBigUint64(offset + 16, t.credit_account_id, true);
  view.setBigUint64(offset + 24, t.amount, true);
  view.setBigUint64(offset + 32, t.pending_id, true);
  view.setBigUint64(offset + 40, t.user_data_64, true);
  view.setBigUint64(offset + 48, t.timestamp, true);
  view.setUint32(offset + 56, t.user_data_32, true);
  view.setUint32(offset + 60, t.timeout, true);
  view.setUint32(offset + 64, t.ledger, true);
  view.setUint16(offset + 68, t.code, true);
  view.setUint16(offset + 70, t.flags, true);
}

/**
 * A u64 field that is often zero. Every bigint read from bytes is a heap object (16 bytes for a
 * zero), and a transfer keeps its fields for life: zero comes back as the shared literal.
 */
function oftenZeroU64(view: DataView, offset: number): bigint {
  return (view.getUint32(offset, true) | view.getUint32(offset + 4, true)) === 0 ? 0n : view.getBigUint64(offset, true);
}

export function readTransfer(view: DataView, offset: number): Transfer {
  return {
    id: view.getBigUint64(offset + 0, true),
    debit_account_id: view.getBigUint64(offset + 8, true),
    credit_account_id: view.getBigUint64(offset + 16, true),
    amount: view.getBigUint64(offset + 24, true),
    pending_id: oftenZeroU64(view, offset + 32),
    user_data_64: oftenZeroU64(view, offset + 40),
    timestamp: oftenZeroU64(view, offset + 48),
    user_data_32: view.getUint32(offset + 56, true),
    timeout: view.getUint32(offset + 60, true),
    ledger: view.getUint32(offset + 64, true),
    code: view.getUint16(offset + 68, true),
    flags: view.getUint16(offset + 70, true),
  };
}

export function writeAccountInput(view: DataView, offset: number, a: AccountInput): void {
  view.setBigUint64(offset + 0, a.id, true);
  view.setBigUint64(offset + 8, a.user_data_64, true);
  view.setBigUint64(offset + 16, a.timestamp, true);
  view.setUint32(offset + 24, a.user_data_32, true);
  view.setUint32(offset + 28, a.ledger, true);
  view.setUint16(offset + 32, a.code, true);
  view.setUint16(offset + 34, a.flags, true);
  view.setUint32(offset + 36, a.reserved ?? 0, true);
}

export function readAccountInput(view: DataView, offset: number): AccountInput {
  return {
    id: view.getBigUint64(offset + 0, true),
    user_data_64: view.getBigUint64(offset + 8, true),
    timestamp: view.getBigUint64(offset + 16, true),
    user_data_32: view.getUint32(offset + 24, true),
    ledger: view.getUint32(offset + 28, true),
    code: view.getUint16(offset + 32, true),
    flags: view.getUint16(offset + 34, true),
    reserved: view.getUint32(offset + 36, true),
  };
}

export function writeAccount(view: DataView, offset: number, a: Account): void {
  view.setBigUint64(offset + 0, a.id, true);
  view.setBigUint64(offset + 8, a.debits_pending, true);
  view.setBigUint64(offset + 16, a.debits_posted, true);
  view.setBigUint64(offset + 24, a.credits_pending, true);
  view.setBigUint64(offset + 32, a.credits_posted, true);
  view.setBigUint64(offset + 40, a.user_data_64, true);
  view.setBigUint64(offset + 48, a.timestamp, true);
  view.setUint32(offset + 56, a.user_data_32, true);
  view.setUint32(offset + 60, a.ledger, true);
  view.setUint16(offset + 64, a.code, true);
  view.setUint16(offset + 66, a.flags, true);
  view.setUint32(offset + 68, 0, true);
}

export function readAccount(view: DataView, offset: number): Account {
  return {
    id: view.getBigUint64(offset + 0, true),
    debits_pending: view.getBigUint64(offset + 8, true),
    debits_posted: view.getBigUint64(offset + 16, true),
    credits_pending: view.getBigUint64(offset + 24, true),
    credits_posted: view.getBigUint64(offset + 32, true),
    user_data_64: view.getBigUint64(offset + 40, true),
    timestamp: view.getBigUint64(offset + 48, true),
    user_data_32: view.getUint32(offset + 56, true),
    ledger: view.getUint32(offset + 60, true),
    code: view.getUint16(offset + 64, true),
    flags: view.getUint16(offset + 66, true),
  };
}

export function writeBalance(view: DataView, offset: number, b: AccountBalance): void {
  view.setBigUint64(offset + 0, b.debits_pending, true);
  view.setBigUint64(offset + 8, b.debits_posted, true);
  view.setBigUint64(offset + 16, b.credits_pending, true);
  view.setBigUint64(offset + 24, b.credits_posted, true);
  view.setBigUint64(offset + 32, b.timestamp, true);
}

export function readBalance(view: DataView, offset: number): AccountBalance {
  return {
    debits_pending: view.getBigUint64(offset + 0, true),
    debits_posted: view.getBigUint64(offset + 8, true),
    credits_pending: view.getBigUint64(offset + 16, true),
    credits_posted: view.getBigUint64(offset + 24, true),
    timestamp: view.getBigUint64(offset + 32, true),
  };
}

export function writePending(view: DataView, offset: number, state: PendingState): void {
  view.setBigUint64(offset + 0, state.expires_at, true);
  view.setUint32(offset + 8, state.status, true);
  view.setUint32(offset + 12, 0, true);
}

export function readPending(view: DataView, offset: number): PendingState {
  const status = view.getUint32(offset + 8, true);
  if (status < 1 || status > 4) throw new Error(`corrupt pending state: status ${status}`);
  return { expires_at: view.getBigUint64(offset + 0, true), status: status as PendingStatusValue };
}

/** A u64 as 8 big-endian bytes: LMDB orders binary keys bytewise, so this sorts numerically. */
export function keyU64(value: bigint): Buffer {
  const key = Buffer.allocUnsafe(8);
  key.writeBigUInt64BE(value, 0);
  return key;
}


export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// Batch bodies of log entries. Encoding validates ranges, because DataView setters silently wrap
// out-of-range values, and a log entry that differs from what was applied would replay wrong.

export function encodeTransferBatch(events: readonly Transfer[]): Buffer {
  const bytes = Buffer.allocUnsafe(events.length * TRANSFER_BYTES);
  const view = viewOf(bytes);
  for (let i = 0; i < events.length; i++) {
    assertTransferInput(events[i], i);
    writeTransfer(view, i * TRANSFER_BYTES, events[i]);
  }
  return bytes;
}

export function decodeTransferBatch(body: Uint8Array, count: number): Transfer[] {
  if (body.byteLength !== count * TRANSFER_BYTES) throw new Error(`transfer batch of ${body.byteLength} bytes for ${count} events`);
  const view = viewOf(body);
  const out: Transfer[] = new Array(count);
  for (let i = 0; i < count; i++) out[i] = readTransfer(view, i * TRANSFER_BYTES);
  return out;
}

export function encodeAccountBatch(events: readonly AccountInput[]): Buffer {
  const bytes = Buffer.allocUnsafe(events.length * ACCOUNT_INPUT_BYTES);
  const view = viewOf(bytes);
  for (let i = 0; i < events.length; i++) {
    assertAccountInput(events[i], i);
    writeAccountInput(view, i * ACCOUNT_INPUT_BYTES, events[i]);
  }
  return bytes;
}

export function decodeAccountBatch(body: Uint8Array, count: number): AccountInput[] {
  if (body.byteLength !== count * ACCOUNT_INPUT_BYTES) throw new Error(`account batch of ${body.byteLength} bytes for ${count} events`);
  const view = viewOf(body);
  const out: AccountInput[] = new Array(count);
  for (let i = 0; i < count; i++) out[i] = readAccountInput(view, i * ACCOUNT_INPUT_BYTES);
  return out;
}

const U64_LIMIT = 0xffff_ffff_ffff_ffffn;

function u64(value: unknown, name: string, index: number): void {
  if (typeof value !== 'bigint' || value < 0n || value > U64_LIMIT) {
    throw new TypeError(`event ${index}: ${name} must be a bigint in 0..2^64-1 (decode input at the door)`);
  }
}

function uint(value: unknown, max: number, name: string, index: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new TypeError(`event ${index}: ${name} must be an integer in 0..${max} (decode input at the door)`);
  }
}

function assertTransferInput(t: Transfer, i: number): void {
  u64(t.id, 'id', i);
  u64(t.debit_account_id, 'debit_account_id', i);
  u64(t.credit_account_id, 'credit_account_id', i);
  u64(t.amount, 'amount', i);
  u64(t.pending_id, 'pending_id', i);
  u64(t.user_data_64, 'user_data_64', i);
  u64(t.timestamp, 'timestamp', i);
  uint(t.user_data_32, 0xffff_ffff, 'user_data_32', i);
  uint(t.timeout, 0xffff_ffff, 'timeout', i);
  uint(t.ledger, 0xffff_ffff, 'ledger', i);
  uint(t.code, 0xffff, 'code', i);
  uint(t.flags, 0xffff, 'flags', i);
}

function assertAccountInput(a: AccountInput, i: number): void {
  u64(a.id, 'id', i);
  u64(a.user_data_64, 'user_data_64', i);
  u64(a.timestamp, 'timestamp', i);
  uint(a.user_data_32, 0xffff_ffff, 'user_data_32', i);
  uint(a.ledger, 0xffff_ffff, 'ledger', i);
  uint(a.code, 0xffff, 'code', i);
  uint(a.flags, 0xffff, 'flags', i);
  if (a.reserved !== undefined) uint(a.reserved, 0xffff_ffff, 'reserved', i);
}
