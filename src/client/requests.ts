// Channel inputs -> wire maps (PROTOCOL.md section 4), checked locally for shape and integer ranges so
// that one bad call fails alone with `invalid_request` instead of failing a whole batch on the server.
// Optional fields that are zero are left out (the server reads a missing field as zero).

import { AccountFlags, TransferFlags, U16_MAX, U32_MAX, U64_MAX } from '../ledger/types.ts';
import { MsgpackWriter, u64, type WireMap, type WireValue } from './codec.ts';
import { KeelError } from './errors.ts';

/** A u64 as a channel may pass it: a bigint, or a number that is a safe integer. */
export type U64Input = bigint | number;

export interface AccountInput {
  id: U64Input;
  ledger: number;
  code: number;
  flags?: number;
  user_data_64?: U64Input;
  user_data_32?: number;
  /** Only with `AccountFlags.imported`. */
  timestamp?: U64Input;
  /** TigerBeetle's reserved field: must be zero (else `reserved_field`). */
  reserved?: number;
}

export interface TransferInput {
  id: U64Input;
  debit_account_id: U64Input;
  credit_account_id: U64Input;
  amount: U64Input;
  pending_id?: U64Input;
  ledger: number;
  code: number;
  flags?: number;
  /** Seconds; pending transfers only. */
  timeout?: number;
  user_data_64?: U64Input;
  user_data_32?: number;
  /** Only with `TransferFlags.imported`. */
  timestamp?: U64Input;
}

export interface AccountFilterInput {
  account_id: U64Input;
  user_data_64?: U64Input;
  user_data_32?: number;
  code?: number;
  /** Inclusive; 0 or absent: unbounded. */
  timestamp_min?: U64Input;
  /** Inclusive; 0 or absent: unbounded. */
  timestamp_max?: U64Input;
  /** 1..8190. */
  limit: number;
  /** `AccountFilterFlags`: debits, credits, reversed. */
  flags?: number;
}

export interface QueryFilterInput {
  user_data_64?: U64Input;
  user_data_32?: number;
  ledger?: number;
  code?: number;
  timestamp_min?: U64Input;
  timestamp_max?: U64Input;
  /** 1..8190. */
  limit: number;
  /** `QueryFilterFlags`: reversed. */
  flags?: number;
}

/** The events of one create call, checked and encoded, with what batching needs to know about them. */
export interface CreateEvents {
  count: number;
  /** The events as consecutive MessagePack maps: a request's array is these bytes, concatenated. */
  bytes: Uint8Array;
  /** The first event's `imported` flag: the server takes a request's import mode from its first event. */
  imported: boolean;
  /** The last event has `linked` set: its chain is open, so no other call may follow it in a request. */
  open_chain: boolean;
}

class Invalid {
  constructor(readonly field: string, readonly message: string) {}
}

function bad(field: string, expected: string, v: unknown): Invalid {
  return new Invalid(field, `${field} must be ${expected}; got ${show(v)}`);
}

function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 32 ? `${v.slice(0, 32)}...` : v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

const U64_EXPECTED = `an unsigned 64-bit integer (a bigint in 0..${U64_MAX}, or a safe integer number)`;

/** `v` as a u64 (a bigint, or a safe-integer number with -0 made 0), or undefined. */
function u64Of(v: unknown): bigint | number | undefined {
  if (typeof v === 'bigint') return v >= 0n && v <= U64_MAX ? v : undefined;
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v + 0 : undefined;
  return undefined;
}

/** `v` as an integer in 0..max (-0 made 0), or -1. */
function uintOf(v: unknown, max: number): number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max ? v + 0 : -1;
}

function toU64(v: unknown, field: string): bigint {
  const x = u64Of(v);
  if (x === undefined) throw bad(field, U64_EXPECTED, v);
  return BigInt(x);
}

function toUint(v: unknown, max: number, field: string): number {
  const x = uintOf(v, max);
  if (x < 0) throw bad(field, `an integer in 0..${max}`, v);
  return x;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Builds one wire map from a record of field -> kind; required fields missing throw `Invalid`. */
type Kind = 'u64' | 'u32' | 'u16';
interface FieldSpec {
  kind: Kind;
  required?: boolean;
}

function convert(input: unknown, path: string, spec: Readonly<Record<string, FieldSpec>>): WireMap {
  if (!isObject(input)) throw bad(path, 'an object', input);
  const out: WireMap = {};
  for (const name in spec) {
    const { kind, required } = spec[name];
    const v = input[name];
    const field = `${path}.${name}`;
    if (v === undefined) {
      if (required) throw new Invalid(field, `${field} is required`);
      continue;
    }
    let wire: WireValue;
    if (kind === 'u64') {
      const x = toU64(v, field);
      if (x === 0n && !required) continue;
      wire = u64(x);
    } else {
      const x = toUint(v, kind === 'u32' ? U32_MAX : U16_MAX, field);
      if (x === 0 && !required) continue;
      wire = x;
    }
    out[name] = wire;
  }
  return out;
}

const ACCOUNT: Readonly<Record<string, FieldSpec>> = {
  id: { kind: 'u64', required: true },
  ledger: { kind: 'u32', required: true },
  code: { kind: 'u16', required: true },
  flags: { kind: 'u16' },
  user_data_64: { kind: 'u64' },
  user_data_32: { kind: 'u32' },
  timestamp: { kind: 'u64' },
  reserved: { kind: 'u32' },
};

const TRANSFER: Readonly<Record<string, FieldSpec>> = {
  id: { kind: 'u64', required: true },
  debit_account_id: { kind: 'u64', required: true },
  credit_account_id: { kind: 'u64', required: true },
  amount: { kind: 'u64', required: true },
  pending_id: { kind: 'u64' },
  ledger: { kind: 'u32', required: true },
  code: { kind: 'u16', required: true },
  flags: { kind: 'u16' },
  timeout: { kind: 'u32' },
  user_data_64: { kind: 'u64' },
  user_data_32: { kind: 'u32' },
  timestamp: { kind: 'u64' },
};

const ACCOUNT_FILTER: Readonly<Record<string, FieldSpec>> = {
  account_id: { kind: 'u64', required: true },
  user_data_64: { kind: 'u64' },
  user_data_32: { kind: 'u32' },
  code: { kind: 'u16' },
  timestamp_min: { kind: 'u64' },
  timestamp_max: { kind: 'u64' },
  limit: { kind: 'u32', required: true },
  flags: { kind: 'u32' },
};

const QUERY_FILTER: Readonly<Record<string, FieldSpec>> = {
  user_data_64: { kind: 'u64' },
  user_data_32: { kind: 'u32' },
  ledger: { kind: 'u32' },
  code: { kind: 'u16' },
  timestamp_min: { kind: 'u64' },
  timestamp_max: { kind: 'u64' },
  limit: { kind: 'u32', required: true },
  flags: { kind: 'u32' },
};

/** Runs a conversion, turning a local validation failure into `invalid_request`. */
function checked<T>(f: () => T): T | KeelError {
  try {
    return f();
  } catch (e) {
    if (e instanceof Invalid) return new KeelError('invalid_request', e.message, { field: e.field, outcome_unknown: false });
    throw e;
  }
}

// Create calls are the hot path (up to 8190 events per call): each event is checked and written as a
// MessagePack map in one pass, with no intermediate object and no wrapper per u64. The maps hold what
// `convert` would (fields in spec order, zero optional fields left out, every integer in its smallest
// uint format); test/client.test.ts compares the two.

/** Per field of a spec: its key as a fixstr, ready to copy. */
interface EventField {
  name: string;
  key: Uint8Array;
  kind: Kind;
  required: boolean;
  max: number;
}

function eventFields(spec: Readonly<Record<string, FieldSpec>>): EventField[] {
  return Object.entries(spec).map(([name, { kind, required }]) => {
    if (name.length > 31) throw new Error(`key ${name} is too long for a fixstr`);
    const key = new Uint8Array(1 + name.length);
    key[0] = 0xa0 | name.length;
    for (let i = 0; i < name.length; i++) key[1 + i] = name.charCodeAt(i);
    return { name, key, kind, required: required === true, max: kind === 'u32' ? U32_MAX : U16_MAX };
  });
}

/** Where every call's events are written (then copied out): one buffer, grown to the largest call. */
const scratch = new MsgpackWriter(new Uint8Array(64 * 1024));
let scratch_busy = false;

/** Checked values of the event being written, per field (reused: no array per event). */
const scratch_values: Array<bigint | number> = [];

/**
 * Checks one event and writes it as a map; returns its flags. The path in an error message
 * (`transfers[3].amount`) is built only on failure.
 */
function writeEvent(w: MsgpackWriter, values: Array<bigint | number>, input: unknown, name: string, index: number, fields: readonly EventField[]): number {
  if (!isObject(input)) throw bad(`${name}[${index}]`, 'an object', input);
  let present = 0;
  let flags = 0;
  for (let f = 0; f < fields.length; f++) {
    const field = fields[f];
    const v = input[field.name];
    values[f] = 0;
    if (v === undefined) {
      if (field.required) throw new Invalid(`${name}[${index}].${field.name}`, `${name}[${index}].${field.name} is required`);
      continue;
    }
    let x: bigint | number;
    if (field.kind === 'u64') {
      const u = u64Of(v);
      if (u === undefined) throw bad(`${name}[${index}].${field.name}`, U64_EXPECTED, v);
      x = u;
    } else {
      x = uintOf(v, field.max);
      if (x < 0) throw bad(`${name}[${index}].${field.name}`, `an integer in 0..${field.max}`, v);
      if (field.name === 'flags') flags = x;
    }
    if (!field.required && (x === 0 || x === 0n)) continue;
    values[f] = x;
    present |= 1 << f;
  }
  let n = 0;
  for (let m = present; m !== 0; m &= m - 1) n++;
  w.ensure(1 + fields.length * (32 + 9));
  w.buf[w.pos++] = 0x80 | n;
  for (let f = 0; f < fields.length; f++) {
    if ((present & (1 << f)) === 0) continue;
    w.raw(fields[f].key);
    w.u64(values[f]);
  }
  return flags;
}

function createEvents(
  input: unknown,
  name: 'accounts' | 'transfers',
  fields: readonly EventField[],
  linked: number,
  imported: number,
): CreateEvents | KeelError {
  return checked(() => {
    if (!Array.isArray(input)) throw bad(name, 'an array', input);
    const count = input.length;
    // A getter on an input that calls the client again must not write into the same scratch
    // buffer or values.
    const nested = scratch_busy;
    const w = nested ? new MsgpackWriter(new Uint8Array(4096)) : scratch;
    const values = nested ? [] : scratch_values;
    w.pos = 0;
    scratch_busy = true;
    let first_flags = 0;
    let last_flags = 0;
    try {
      for (let i = 0; i < count; i++) {
        const flags = writeEvent(w, values, input[i], name, i, fields);
        if (i === 0) first_flags = flags;
        last_flags = flags;
      }
    } finally {
      if (!nested) scratch_busy = false;
    }
    // A copy of the exact size: small ones come from Node's buffer pool, not an allocation each.
    const bytes = Buffer.allocUnsafe(w.pos);
    bytes.set(w.buf.subarray(0, w.pos));
    return { count, bytes, imported: (first_flags & imported) !== 0, open_chain: (last_flags & linked) !== 0 };
  });
}

const ACCOUNT_FIELDS = eventFields(ACCOUNT);
const TRANSFER_FIELDS = eventFields(TRANSFER);

export function accountEvents(accounts: readonly AccountInput[]): CreateEvents | KeelError {
  return createEvents(accounts, 'accounts', ACCOUNT_FIELDS, AccountFlags.linked, AccountFlags.imported);
}

export function transferEvents(transfers: readonly TransferInput[]): CreateEvents | KeelError {
  return createEvents(transfers, 'transfers', TRANSFER_FIELDS, TransferFlags.linked, TransferFlags.imported);
}

/** `{ids}` of lookup_accounts / lookup_transfers. */
export function idsParams(ids: readonly U64Input[]): WireMap | KeelError {
  return checked(() => {
    if (!Array.isArray(ids)) throw bad('ids', 'an array', ids);
    const out: WireValue[] = new Array<WireValue>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const x = u64Of(ids[i]);
      if (x === undefined) throw bad(`ids[${i}]`, U64_EXPECTED, ids[i]);
      out[i] = u64(BigInt(x));
    }
    return { ids: out };
  });
}

/** `{filter}` of get_account_transfers / get_account_balances. */
export function accountFilterParams(filter: AccountFilterInput): WireMap | KeelError {
  return checked(() => ({ filter: convert(filter, 'filter', ACCOUNT_FILTER) }));
}

/** `{filter}` of query_accounts / query_transfers. */
export function queryFilterParams(filter: QueryFilterInput): WireMap | KeelError {
  return checked(() => ({ filter: convert(filter, 'filter', QUERY_FILTER) }));
}
