// Decoded replies -> typed results (PROTOCOL.md sections 3 and 4), with every u64 as a bigint.
// A reply that does not have the promised shape is a `protocol_error`; a missing numeric field of a
// record reads as zero, as on the request side.

import type { Account, AccountBalance, CreateResult, Transfer } from '../ledger/types.ts';
import { KeelError } from './errors.ts';

export type Fields = Record<string, unknown>;

export interface Limits {
  /** Events (or ids) per request: the batching limit. */
  events_per_request: number;
  /** Requests this connection may have in flight; the client never exceeds it. */
  inflight_per_connection: number;
  /** The largest frame the server accepts, in bytes. */
  frame_bytes: number;
}

export interface HelloReply {
  center: string;
  version: number;
  limits: Limits;
}

class Malformed {
  constructor(readonly message: string) {}
}

function malformed(path: string, expected: string, v: unknown): Malformed {
  return new Malformed(`malformed reply: ${path} must be ${expected}; got ${typeof v}`);
}

export function isFields(v: unknown): v is Fields {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function u64(v: unknown, path: string): bigint {
  if (v === undefined) return 0n;
  if (typeof v === 'bigint' && v >= 0n) return v;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return BigInt(v);
  throw malformed(path, 'an unsigned integer', v);
}

function uint(v: unknown, path: string): number {
  if (v === undefined) return 0;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw malformed(path, 'an unsigned integer', v);
}

function positive(v: unknown, path: string): number {
  const n = uint(v, path);
  if (n < 1) throw malformed(path, 'a positive integer', v);
  return n;
}

function array(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) throw malformed(path, 'an array', v);
  return v;
}

function record(v: unknown, path: string): Fields {
  if (!isFields(v)) throw malformed(path, 'a map', v);
  return v;
}

function checked<T>(f: () => T): T | KeelError {
  try {
    return f();
  } catch (e) {
    if (e instanceof Malformed) return new KeelError('protocol_error', e.message);
    throw e;
  }
}

export function parseHello(reply: Fields): HelloReply | KeelError {
  return checked(() => {
    const limits = record(reply.limits, 'limits');
    const center = reply.center;
    if (typeof center !== 'string' && typeof center !== 'number') throw malformed('center', 'a string', center);
    return {
      center: String(center),
      version: uint(reply.version, 'version'),
      limits: Object.freeze({
        events_per_request: positive(limits.events_per_request, 'limits.events_per_request'),
        inflight_per_connection: positive(limits.inflight_per_connection, 'limits.inflight_per_connection'),
        frame_bytes: positive(limits.frame_bytes, 'limits.frame_bytes'),
      }),
    };
  });
}

/** `{status, timestamp}` of a create reply, checked to hold exactly `count` entries each. */
export function parseCreate(reply: Fields, count: number): CreateResult | KeelError {
  return checked(() => {
    const status = array(reply.status, 'status');
    const timestamp = array(reply.timestamp, 'timestamp');
    if (status.length !== count || timestamp.length !== count) {
      throw new Malformed(
        `malformed reply: ${count} events sent, ${status.length} statuses and ${timestamp.length} timestamps received`,
      );
    }
    return {
      status: status.map((s, i) => uint(s, `status[${i}]`)),
      timestamp: timestamp.map((s, i) => u64(s, `timestamp[${i}]`)),
    };
  });
}

function account(v: unknown, path: string): Account {
  const o = record(v, path);
  return {
    id: u64(o.id, `${path}.id`),
    debits_pending: u64(o.debits_pending, `${path}.debits_pending`),
    debits_posted: u64(o.debits_posted, `${path}.debits_posted`),
    credits_pending: u64(o.credits_pending, `${path}.credits_pending`),
    credits_posted: u64(o.credits_posted, `${path}.credits_posted`),
    user_data_64: u64(o.user_data_64, `${path}.user_data_64`),
    user_data_32: uint(o.user_data_32, `${path}.user_data_32`),
    ledger: uint(o.ledger, `${path}.ledger`),
    code: uint(o.code, `${path}.code`),
    flags: uint(o.flags, `${path}.flags`),
    timestamp: u64(o.timestamp, `${path}.timestamp`),
  };
}

function transfer(v: unknown, path: string): Transfer {
  const o = record(v, path);
  return {
    id: u64(o.id, `${path}.id`),
    debit_account_id: u64(o.debit_account_id, `${path}.debit_account_id`),
    credit_account_id: u64(o.credit_account_id, `${path}.credit_account_id`),
    amount: u64(o.amount, `${path}.amount`),
    pending_id: u64(o.pending_id, `${path}.pending_id`),
    user_data_64: u64(o.user_data_64, `${path}.user_data_64`),
    user_data_32: uint(o.user_data_32, `${path}.user_data_32`),
    timeout: uint(o.timeout, `${path}.timeout`),
    ledger: uint(o.ledger, `${path}.ledger`),
    code: uint(o.code, `${path}.code`),
    flags: uint(o.flags, `${path}.flags`),
    timestamp: u64(o.timestamp, `${path}.timestamp`),
  };
}

function balance(v: unknown, path: string): AccountBalance {
  const o = record(v, path);
  return {
    debits_pending: u64(o.debits_pending, `${path}.debits_pending`),
    debits_posted: u64(o.debits_posted, `${path}.debits_posted`),
    credits_pending: u64(o.credits_pending, `${path}.credits_pending`),
    credits_posted: u64(o.credits_posted, `${path}.credits_posted`),
    timestamp: u64(o.timestamp, `${path}.timestamp`),
  };
}

export function parseAccounts(reply: Fields): Account[] | KeelError {
  return checked(() => array(reply.accounts, 'accounts').map((a, i) => account(a, `accounts[${i}]`)));
}

export function parseTransfers(reply: Fields): Transfer[] | KeelError {
  return checked(() => array(reply.transfers, 'transfers').map((t, i) => transfer(t, `transfers[${i}]`)));
}

export function parseBalances(reply: Fields): AccountBalance[] | KeelError {
  return checked(() => array(reply.balances, 'balances').map((b, i) => balance(b, `balances[${i}]`)));
}
