// Input validation: untrusted, already-MessagePack-decoded values -> the ledger's typed inputs
// (PROTOCOL.md sections 1, 2 and 4). Pure functions, no I/O; errors are values, never exceptions.
//
// Only the shape is checked here: types, integer ranges, required and unknown fields, request size.
// Everything with a ledger status (unknown flag bits of events, zero or int-max ids, timestamps on
// non-imported events, ...) passes through so that the ledger can answer it per event.
//
// Hot path: one pass per event, `for...in` with a `switch` on the key, values kept in locals and one
// output object built at the end with a fixed shape. Error messages are built only on failure.

import {
  ACCOUNT_FILTER_FLAGS_KNOWN,
  EVENTS_PER_REQUEST_MAX,
  QUERY_FILTER_FLAGS_KNOWN,
  U16_MAX,
  U32_MAX,
  U64_MAX,
  type AccountFilter,
  type AccountInput,
  type QueryFilter,
  type TransferInput,
} from './types.ts';

export type DecodeErrorCode = 'invalid_request' | 'too_many_events';

export interface DecodeFailure {
  ok: false;
  error: DecodeErrorCode;
  /** Path of the offending value, e.g. `transfers[3].amount`, `filter.limit`, `ids[0]`, `accounts`. */
  field: string;
  message: string;
}

export type Decoded<T> = { ok: true; value: T } | DecodeFailure;

/** A decoded map: plain objects as they are, `Map`s copied into one of these. */
type Fields = Record<string, unknown>;

const U32_MAX_N = BigInt(U32_MAX);
const FILTER_LIMIT_MAX = EVENTS_PER_REQUEST_MAX;

const ACCOUNT_FIELDS = 'id, ledger, code, flags, user_data_64, user_data_32, timestamp, reserved';
const TRANSFER_FIELDS =
  'id, debit_account_id, credit_account_id, amount, pending_id, ledger, code, flags, timeout, ' +
  'user_data_64, user_data_32, timestamp';
const ACCOUNT_FILTER_FIELDS =
  'account_id, user_data_64, user_data_32, code, timestamp_min, timestamp_max, limit, flags';
const QUERY_FILTER_FIELDS =
  'user_data_64, user_data_32, ledger, code, timestamp_min, timestamp_max, limit, flags';

// ---------------------------------------------------------------------------------------------------
// Scalars. Each returns a sentinel on failure (undefined for u64, -1 for the narrower widths).

/**
 * The largest number accepted for a u64: 2^53. Past MAX_SAFE_INTEGER (2^53-1) by one because msgpackr's
 * `int64AsType: 'auto'` hands a wire uint64 of exactly 2^53 over as a number (it converts up to and
 * including 2^53), and 2^53 is exact as a double. Larger numbers may have been rounded: rejected.
 */
const U64_NUMBER_MAX = 2 ** 53;

/** A u64 as a bigint, or undefined when `v` is not an integer in 0..2^64-1. */
function u64(v: unknown): bigint | undefined {
  if (typeof v === 'number') {
    if (v === 0) return 0n; // the common default; also -0
    return Number.isInteger(v) && v > 0 && v <= U64_NUMBER_MAX ? BigInt(v) : undefined;
  }
  if (typeof v === 'bigint') return v >= 0n && v <= U64_MAX ? v : undefined;
  return undefined;
}

/** An unsigned integer in 0..max (max <= U32_MAX) as a number, or -1. */
function uint(v: unknown, max: number): number {
  if (typeof v === 'number') {
    // `+ 0` turns -0 into 0.
    return Number.isInteger(v) && v >= 0 && v <= max ? v + 0 : -1;
  }
  if (typeof v === 'bigint') {
    if (v < 0n || v > U32_MAX_N) return -1;
    const n = Number(v);
    return n <= max ? n : -1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------------
// Failures (cold path).

function fail(field: string, message: string): DecodeFailure {
  return { ok: false, error: 'invalid_request', field, message };
}

const KEY_SHOWN_MAX = 64;
const STRING_SHOWN_MAX = 32;

/** A key as it may appear in a path: bounded, so that a hostile key is not echoed back whole. */
function showKey(key: string): string {
  return key.length > KEY_SHOWN_MAX ? `${key.slice(0, KEY_SHOWN_MAX)}...` : key;
}

/** A short description of an untrusted value for an error message. */
function describe(v: unknown): string {
  switch (typeof v) {
    case 'number':
    case 'bigint':
    case 'boolean':
      return String(v);
    case 'string':
      return v.length > STRING_SHOWN_MAX
        ? `the string ${JSON.stringify(v.slice(0, STRING_SHOWN_MAX))}... (${v.length} characters)`
        : `the string ${JSON.stringify(v)}`;
    case 'undefined':
      return 'nothing';
    case 'object':
      if (v === null) return 'null';
      if (Array.isArray(v)) return `an array of ${v.length}`;
      if (v instanceof Map) return 'a map';
      if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return 'binary data';
      return 'a map';
    default:
      return `a ${typeof v}`;
  }
}

function badU64(path: string, v: unknown): DecodeFailure {
  const hint =
    typeof v === 'number' && Number.isInteger(v) && v > U64_NUMBER_MAX
      ? ' (a float above 2^53, which may have been rounded: send integers above 2^53 as MessagePack uint64, a bigint in JS)'
      : '';
  return fail(path, `${path} must be an unsigned 64-bit integer (0..${U64_MAX}); got ${describe(v)}${hint}`);
}

function badU32(path: string, v: unknown): DecodeFailure {
  return fail(path, `${path} must be an unsigned 32-bit integer (0..${U32_MAX}); got ${describe(v)}`);
}

function badU16(path: string, v: unknown): DecodeFailure {
  return fail(path, `${path} must be an unsigned 16-bit integer (0..${U16_MAX}); got ${describe(v)}`);
}

function missing(path: string, what: string): DecodeFailure {
  return fail(path, `${path} is required (${what})`);
}

function unknownField(owner: string, key: string, known: string): DecodeFailure {
  const shown = showKey(key);
  return fail(`${owner}.${shown}`, `${owner} has unknown field ${JSON.stringify(shown)}; expected only ${known}`);
}

const U64_WHAT = 'an unsigned 64-bit integer';
const U32_WHAT = 'an unsigned 32-bit integer';
const U16_WHAT = 'an unsigned 16-bit integer';

// ---------------------------------------------------------------------------------------------------
// Maps and arrays.

/**
 * The fields of a decoded MessagePack map: a plain object (prototype Object.prototype or null) as it is,
 * a `Map` with string keys copied into a null-prototype object (a `__proto__` key then stays an own,
 * unknown field). Anything else (arrays, binary, class instances, primitives, a `Map` with a non-string
 * key) is undefined; `notAMap` then explains why.
 */
function fieldsOf(v: unknown): Fields | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) return v as Fields;
  if (v instanceof Map) return fieldsOfMap(v);
  return undefined;
}

function fieldsOfMap(m: Map<unknown, unknown>): Fields | undefined {
  const out: Fields = Object.create(null) as Fields;
  for (const [k, val] of m) {
    if (typeof k !== 'string') return undefined;
    out[k] = val;
  }
  return out;
}

function notAMap(path: string, what: string, v: unknown): DecodeFailure {
  if (v instanceof Map) {
    for (const k of v.keys()) {
      if (typeof k !== 'string') {
        return fail(path, `${path} must be a map of ${what} fields with string keys; got the key ${describe(k)}`);
      }
    }
  }
  return fail(path, `${path} must be a map of ${what} fields; got ${describe(v)}`);
}

/** Only for values this module built (never for decoded input, which may well carry `ok: false`). */
function isFailure(v: object): v is DecodeFailure {
  return (v as { ok?: unknown }).ok === false;
}

/** The events array of a create request, checked for shape and size. */
function eventsOf(raw: unknown, name: string, what: string): unknown[] | DecodeFailure {
  if (!Array.isArray(raw)) {
    if (raw === undefined) return fail(name, `${name} is required (an array of at most ${EVENTS_PER_REQUEST_MAX} ${what})`);
    return fail(name, `${name} must be an array of at most ${EVENTS_PER_REQUEST_MAX} ${what}; got ${describe(raw)}`);
  }
  if (raw.length > EVENTS_PER_REQUEST_MAX) {
    return {
      ok: false,
      error: 'too_many_events',
      field: name,
      message: `${name} has ${raw.length} events; at most ${EVENTS_PER_REQUEST_MAX} are allowed per request`,
    };
  }
  return raw;
}

// ---------------------------------------------------------------------------------------------------
// Accounts.

function decodeAccount(o: Fields, i: number): AccountInput | DecodeFailure {
  let id: bigint | undefined;
  let ledger = -1;
  let code = -1;
  let flags = 0;
  let user_data_64 = 0n;
  let user_data_32 = 0;
  let timestamp = 0n;
  let reserved = 0;
  for (const key in o) {
    const v = o[key];
    if (v === undefined) continue; // absent, as in JSON; a required field is then reported missing
    switch (key) {
      case 'id':
        id = u64(v);
        if (id === undefined) return badU64(`accounts[${i}].id`, v);
        break;
      case 'reserved':
        // TigerBeetle's reserved u32: accepted so that its nonzero value gets `reserved_field`.
        reserved = uint(v, U32_MAX);
        if (reserved < 0) return badU32(`accounts[${i}].reserved`, v);
        break;
      case 'ledger':
        ledger = uint(v, U32_MAX);
        if (ledger < 0) return badU32(`accounts[${i}].ledger`, v);
        break;
      case 'code':
        code = uint(v, U16_MAX);
        if (code < 0) return badU16(`accounts[${i}].code`, v);
        break;
      case 'flags':
        flags = uint(v, U16_MAX);
        if (flags < 0) return badU16(`accounts[${i}].flags`, v);
        break;
      case 'user_data_64': {
        const x = u64(v);
        if (x === undefined) return badU64(`accounts[${i}].user_data_64`, v);
        user_data_64 = x;
        break;
      }
      case 'user_data_32':
        user_data_32 = uint(v, U32_MAX);
        if (user_data_32 < 0) return badU32(`accounts[${i}].user_data_32`, v);
        break;
      case 'timestamp': {
        const x = u64(v);
        if (x === undefined) return badU64(`accounts[${i}].timestamp`, v);
        timestamp = x;
        break;
      }
      default:
        return unknownField(`accounts[${i}]`, key, ACCOUNT_FIELDS);
    }
  }
  if (id === undefined) return missing(`accounts[${i}].id`, U64_WHAT);
  if (ledger < 0) return missing(`accounts[${i}].ledger`, U32_WHAT);
  if (code < 0) return missing(`accounts[${i}].code`, U16_WHAT);
  return { id, user_data_64, user_data_32, ledger, code, flags, timestamp, reserved };
}

/** The `accounts` param of `create_accounts`. */
export function decodeAccounts(raw: unknown): Decoded<AccountInput[]> {
  const events = eventsOf(raw, 'accounts', 'accounts');
  if (!Array.isArray(events)) return events;
  const out: AccountInput[] = [];
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const o = fieldsOf(e);
    if (o === undefined) return notAMap(`accounts[${i}]`, 'account', e);
    const a = decodeAccount(o, i);
    if (isFailure(a)) return a;
    out.push(a);
  }
  return { ok: true, value: out };
}

// ---------------------------------------------------------------------------------------------------
// Transfers.

function decodeTransfer(o: Fields, i: number): TransferInput | DecodeFailure {
  let id: bigint | undefined;
  let debit_account_id: bigint | undefined;
  let credit_account_id: bigint | undefined;
  let amount: bigint | undefined;
  let pending_id = 0n;
  let user_data_64 = 0n;
  let user_data_32 = 0;
  let timeout = 0;
  let ledger = -1;
  let code = -1;
  let flags = 0;
  let timestamp = 0n;
  for (const key in o) {
    const v = o[key];
    if (v === undefined) continue;
    switch (key) {
      case 'id':
        id = u64(v);
        if (id === undefined) return badU64(`transfers[${i}].id`, v);
        break;
      case 'debit_account_id':
        debit_account_id = u64(v);
        if (debit_account_id === undefined) return badU64(`transfers[${i}].debit_account_id`, v);
        break;
      case 'credit_account_id':
        credit_account_id = u64(v);
        if (credit_account_id === undefined) return badU64(`transfers[${i}].credit_account_id`, v);
        break;
      case 'amount':
        amount = u64(v);
        if (amount === undefined) return badU64(`transfers[${i}].amount`, v);
        break;
      case 'pending_id': {
        const x = u64(v);
        if (x === undefined) return badU64(`transfers[${i}].pending_id`, v);
        pending_id = x;
        break;
      }
      case 'ledger':
        ledger = uint(v, U32_MAX);
        if (ledger < 0) return badU32(`transfers[${i}].ledger`, v);
        break;
      case 'code':
        code = uint(v, U16_MAX);
        if (code < 0) return badU16(`transfers[${i}].code`, v);
        break;
      case 'flags':
        flags = uint(v, U16_MAX);
        if (flags < 0) return badU16(`transfers[${i}].flags`, v);
        break;
      case 'timeout':
        timeout = uint(v, U32_MAX);
        if (timeout < 0) return badU32(`transfers[${i}].timeout`, v);
        break;
      case 'user_data_64': {
        const x = u64(v);
        if (x === undefined) return badU64(`transfers[${i}].user_data_64`, v);
        user_data_64 = x;
        break;
      }
      case 'user_data_32':
        user_data_32 = uint(v, U32_MAX);
        if (user_data_32 < 0) return badU32(`transfers[${i}].user_data_32`, v);
        break;
      case 'timestamp': {
        const x = u64(v);
        if (x === undefined) return badU64(`transfers[${i}].timestamp`, v);
        timestamp = x;
        break;
      }
      default:
        return unknownField(`transfers[${i}]`, key, TRANSFER_FIELDS);
    }
  }
  if (id === undefined) return missing(`transfers[${i}].id`, U64_WHAT);
  if (debit_account_id === undefined) return missing(`transfers[${i}].debit_account_id`, U64_WHAT);
  if (credit_account_id === undefined) return missing(`transfers[${i}].credit_account_id`, U64_WHAT);
  if (amount === undefined) return missing(`transfers[${i}].amount`, U64_WHAT);
  if (ledger < 0) return missing(`transfers[${i}].ledger`, U32_WHAT);
  if (code < 0) return missing(`transfers[${i}].code`, U16_WHAT);
  return {
    id,
    debit_account_id,
    credit_account_id,
    amount,
    pending_id,
    user_data_64,
    user_data_32,
    timeout,
    ledger,
    code,
    flags,
    timestamp,
  };
}

/** The `transfers` param of `create_transfers`. */
export function decodeTransfers(raw: unknown): Decoded<TransferInput[]> {
  const events = eventsOf(raw, 'transfers', 'transfers');
  if (!Array.isArray(events)) return events;
  const out: TransferInput[] = [];
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const o = fieldsOf(e);
    if (o === undefined) return notAMap(`transfers[${i}]`, 'transfer', e);
    const t = decodeTransfer(o, i);
    if (isFailure(t)) return t;
    out.push(t);
  }
  return { ok: true, value: out };
}

// ---------------------------------------------------------------------------------------------------
// Lookups.

/** The `ids` param of `lookup_accounts` / `lookup_transfers`; `field` names it in errors (e.g. 'ids'). */
export function decodeIds(raw: unknown, field: string): Decoded<bigint[]> {
  const ids = eventsOf(raw, field, 'ids');
  if (!Array.isArray(ids)) return ids;
  const out: bigint[] = [];
  for (let i = 0; i < ids.length; i++) {
    const v: unknown = ids[i];
    const id = u64(v);
    if (id === undefined) return badU64(`${field}[${i}]`, v);
    out.push(id);
  }
  return { ok: true, value: out };
}

// ---------------------------------------------------------------------------------------------------
// Filters.

function filterFailure(raw: unknown): DecodeFailure {
  if (raw === undefined) return fail('filter', 'filter is required (a map of filter fields)');
  return notAMap('filter', 'filter', raw);
}

function badLimit(v: unknown): DecodeFailure {
  return fail('filter.limit', `filter.limit must be an integer in 1..${FILTER_LIMIT_MAX}; got ${describe(v)}`);
}

function badFilterFlags(flags: number, known: number, names: string): DecodeFailure {
  const unknown = (flags & ~known) >>> 0;
  return fail(
    'filter.flags',
    `filter.flags has unknown bits 0x${unknown.toString(16)}; known flags are ${names}`,
  );
}

/** Fields both filters share; decoded into `out`, or a failure naming the field. */
interface FilterCommon {
  user_data_64: bigint;
  user_data_32: number;
  code: number;
  timestamp_min: bigint;
  timestamp_max: bigint;
  limit: number;
  flags: number;
}

/**
 * Decodes one shared filter field into `out`. Returns null when done, a failure, or `false` when
 * `key` is not a shared field (the caller then handles its own fields or reports it unknown).
 */
function filterCommonField(out: FilterCommon, key: string, v: unknown, flags_known: number, flag_names: string): DecodeFailure | null | false {
  switch (key) {
    case 'user_data_64': {
      const x = u64(v);
      if (x === undefined) return badU64('filter.user_data_64', v);
      out.user_data_64 = x;
      return null;
    }
    case 'user_data_32':
      out.user_data_32 = uint(v, U32_MAX);
      return out.user_data_32 < 0 ? badU32('filter.user_data_32', v) : null;
    case 'code':
      out.code = uint(v, U16_MAX);
      return out.code < 0 ? badU16('filter.code', v) : null;
    case 'timestamp_min':
    case 'timestamp_max': {
      const x = u64(v);
      if (x === undefined) return badU64(`filter.${key}`, v);
      out[key] = x;
      return null;
    }
    case 'limit':
      out.limit = uint(v, FILTER_LIMIT_MAX);
      return out.limit < 1 ? badLimit(v) : null;
    case 'flags':
      out.flags = uint(v, U32_MAX);
      if (out.flags < 0) return badU32('filter.flags', v);
      if ((out.flags & ~flags_known) !== 0) return badFilterFlags(out.flags, flags_known, flag_names);
      return null;
    default:
      return false;
  }
}

function filterCommon(): FilterCommon {
  return { user_data_64: 0n, user_data_32: 0, code: 0, timestamp_min: 0n, timestamp_max: 0n, limit: -1, flags: 0 };
}

/** The `filter` param of `get_account_transfers` / `get_account_balances`. */
export function decodeAccountFilter(raw: unknown): Decoded<AccountFilter> {
  const o = fieldsOf(raw);
  if (o === undefined) return filterFailure(raw);
  const common = filterCommon();
  let account_id: bigint | undefined;
  for (const key in o) {
    const v = o[key];
    if (v === undefined) continue;
    const done = filterCommonField(common, key, v, ACCOUNT_FILTER_FLAGS_KNOWN, 'debits (1), credits (2), reversed (4)');
    if (done !== false) {
      if (done !== null) return done;
      continue;
    }
    if (key !== 'account_id') return unknownField('filter', key, ACCOUNT_FILTER_FIELDS);
    account_id = u64(v);
    if (account_id === undefined) return badU64('filter.account_id', v);
  }
  if (account_id === undefined) return missing('filter.account_id', U64_WHAT);
  if (common.limit < 0) return missing('filter.limit', `an integer in 1..${FILTER_LIMIT_MAX}`);
  return { ok: true, value: { account_id, ...common } };
}

/** The `filter` param of `query_accounts` / `query_transfers`. */
export function decodeQueryFilter(raw: unknown): Decoded<QueryFilter> {
  const o = fieldsOf(raw);
  if (o === undefined) return filterFailure(raw);
  const common = filterCommon();
  let ledger = 0;
  for (const key in o) {
    const v = o[key];
    if (v === undefined) continue;
    const done = filterCommonField(common, key, v, QUERY_FILTER_FLAGS_KNOWN, 'reversed (1)');
    if (done !== false) {
      if (done !== null) return done;
      continue;
    }
    if (key !== 'ledger') return unknownField('filter', key, QUERY_FILTER_FIELDS);
    ledger = uint(v, U32_MAX);
    if (ledger < 0) return badU32('filter.ledger', v);
  }
  if (common.limit < 0) return missing('filter.limit', `an integer in 1..${FILTER_LIMIT_MAX}`);
  return { ok: true, value: { ...common, ledger } };
}
