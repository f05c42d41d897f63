// Channel inputs -> wire maps (PROTOCOL.md section 4), checked locally for shape and integer ranges so
// that one bad call fails alone with `invalid_request` instead of failing a whole batch on the server.
// Optional fields that are zero are left out (the server reads a missing field as zero).

import { AccountFlags, TransferFlags, U16_MAX, U32_MAX, U64_MAX } from '../ledger/types.ts';
import { u64, type WireMap, type WireValue } from './codec.ts';
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

function toU64(v: unknown, field: string): bigint {
  if (typeof v === 'bigint') {
    if (v >= 0n && v <= U64_MAX) return v;
  } else if (typeof v === 'number') {
    if (Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  }
  throw bad(field, U64_EXPECTED, v);
}

function toUint(v: unknown, max: number, field: string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max) return v + 0;
  throw bad(field, `an integer in 0..${max}`, v);
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

const TWO_32 = 0x1_0000_0000;

/** A growable buffer of MessagePack, for events only (maps of short keys and uints). */
class EventWriter {
  buf: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(size: number) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** A uint below 2^32 in its smallest format. */
  uint32(n: number): void {
    const { buf, view } = this;
    const p = this.pos;
    if (n < 0x80) {
      buf[p] = n;
      this.pos = p + 1;
    } else if (n < 0x100) {
      buf[p] = 0xcc;
      buf[p + 1] = n;
      this.pos = p + 2;
    } else if (n < 0x1_0000) {
      buf[p] = 0xcd;
      view.setUint16(p + 1, n);
      this.pos = p + 3;
    } else {
      buf[p] = 0xce;
      view.setUint32(p + 1, n);
      this.pos = p + 5;
    }
  }

  /** A checked u64: below 2^32 as uint32 would write it, else a uint64 (0xcf). */
  u64(v: bigint | number): void {
    if (typeof v === 'number') {
      if (v < TWO_32) return this.uint32(v);
      this.buf[this.pos] = 0xcf;
      this.view.setUint32(this.pos + 1, Math.floor(v / TWO_32));
      this.view.setUint32(this.pos + 5, v % TWO_32);
    } else {
      if (v < 0x1_0000_0000n) return this.uint32(Number(v));
      this.buf[this.pos] = 0xcf;
      this.view.setBigUint64(this.pos + 1, v);
    }
    this.pos += 9;
  }
}

/** Where every call's events are written (then copied out): one buffer, grown to the largest call. */
const scratch = new EventWriter(64 * 1024);
let scratch_busy = false;

/** Checked values of the event being written, per field (reused: no array per event). */
const scratch_values: Array<bigint | number> = [];

function writeEvent(w: EventWriter, values: Array<bigint | number>, input: unknown, path: string, fields: readonly EventField[]): number {
  if (!isObject(input)) throw bad(path, 'an object', input);
  let present = 0;
  let flags = 0;
  for (let f = 0; f < fields.length; f++) {
    const { name, kind, required, max } = fields[f];
    const v = input[name];
    values[f] = 0;
    if (v === undefined) {
      if (required) throw new Invalid(`${path}.${name}`, `${path}.${name} is required`);
      continue;
    }
    if (kind === 'u64') {
      if (typeof v === 'bigint') {
        if (v < 0n || v > U64_MAX) throw bad(`${path}.${name}`, U64_EXPECTED, v);
      } else if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${path}.${name}`, U64_EXPECTED, v);
      // `+ 0` turns -0 into 0.
      const x = typeof v === 'number' ? v + 0 : v;
      if (!required && (x === 0 || x === 0n)) continue;
      values[f] = x;
    } else {
      const x = toUint(v, max, `${path}.${name}`);
      if (x === 0 && !required) continue;
      values[f] = x;
      if (name === 'flags') flags = x;
    }
    present |= 1 << f;
  }
  let n = 0;
  for (let m = present; m !== 0; m &= m - 1) n++;
  w.ensure(1 + fields.length * (32 + 9));
  w.buf[w.pos++] = 0x80 | n;
  for (let f = 0; f < fields.length; f++) {
    if ((present & (1 << f)) === 0) continue;
    const key = fields[f].key;
    w.buf.set(key, w.pos);
    w.pos += key.length;
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
    const w = nested ? new EventWriter(4096) : scratch;
    const values = nested ? [] : scratch_values;
    w.pos = 0;
    scratch_busy = true;
    let first_flags = 0;
    let last_flags = 0;
    try {
      for (let i = 0; i < count; i++) {
        const flags = writeEvent(w, values, input[i], `${name}[${i}]`, fields);
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
    for (let i = 0; i < ids.length; i++) out[i] = u64(toU64(ids[i], `ids[${i}]`));
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
