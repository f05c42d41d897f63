// create_transfers frames read straight into the engine's batch body: the door's hot path.
//
// The general path (codec.ts decodeFrame, then ops.ts prepare) builds a JavaScript object per
// transfer with a bigint per u64 field, checks it, and writes it into the fixed 72-byte records of
// storage/codec.ts. For a batch of 8190 that is most of the main thread's work and garbage. This
// reader walks the MessagePack bytes once and writes each field into its record, with no object and
// no bigint per event.
//
// It accepts only what it can prove the general path accepts with the same result: a map of exactly
// `id`, `op: "create_transfers"` and `transfers`, 1..8190 events, each a map of known fields, each
// field once, every value a MessagePack uint in range. Anything else (another op, a nil, a negative or
// float value, an unknown or repeated key, a missing required field, truncated or trailing bytes, an
// unusual but valid encoding) returns undefined and the frame takes the general path, which answers
// it exactly as before. So the two paths never disagree on an error; test/gateway.transfers.test.ts
// checks that wherever this reader accepts, its body and id equal the general path's, byte for byte.

import { EVENTS_PER_REQUEST_MAX, U16_MAX } from '../ledger/types.ts';
import { TRANSFER_BYTES } from '../storage/codec.ts';

export interface TransfersFrame {
  /** The request id (0..2^32-1). */
  id: number;
  count: number;
  /** `count` records of TRANSFER_BYTES, as encodeTransferBatch writes them. */
  body: Buffer;
}

/** Field widths. */
const U64 = 0;
const U32 = 1;
const U16 = 2;
type Kind = typeof U64 | typeof U32 | typeof U16;

interface Field {
  key: Uint8Array;
  /** Byte offset of the field in its record (storage/codec.ts writeTransfer). */
  offset: number;
  kind: Kind;
  /** One bit per field, to catch a repeated key and to check the required ones. */
  bit: number;
}

const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

const FIELDS: readonly Field[] = [
  { key: ascii('id'), offset: 0, kind: U64, bit: 1 << 0 },
  { key: ascii('debit_account_id'), offset: 8, kind: U64, bit: 1 << 1 },
  { key: ascii('credit_account_id'), offset: 16, kind: U64, bit: 1 << 2 },
  { key: ascii('amount'), offset: 24, kind: U64, bit: 1 << 3 },
  { key: ascii('pending_id'), offset: 32, kind: U64, bit: 1 << 4 },
  { key: ascii('user_data_64'), offset: 40, kind: U64, bit: 1 << 5 },
  { key: ascii('timestamp'), offset: 48, kind: U64, bit: 1 << 6 },
  { key: ascii('user_data_32'), offset: 56, kind: U32, bit: 1 << 7 },
  { key: ascii('timeout'), offset: 60, kind: U32, bit: 1 << 8 },
  { key: ascii('ledger'), offset: 64, kind: U32, bit: 1 << 9 },
  { key: ascii('code'), offset: 68, kind: U16, bit: 1 << 10 },
  { key: ascii('flags'), offset: 70, kind: U16, bit: 1 << 11 },
];

/** id, debit_account_id, credit_account_id, amount, ledger, code. */
const REQUIRED = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 9) | (1 << 10);

/** The smallest transfer map: a fixmap header, then each required key as a fixstr with a 1-byte value. */
const TRANSFER_MAP_BYTES_MIN = 1 + FIELDS.filter((f) => (f.bit & REQUIRED) !== 0).reduce((n, f) => n + 1 + f.key.length + 1, 0);

/** Fields by key length: at most two share one (amount/ledger, user_data_64/user_data_32). */
const BY_LENGTH: Field[][] = [];
for (const f of FIELDS) (BY_LENGTH[f.key.length] ??= []).push(f);
const KEY_LENGTH_MAX = BY_LENGTH.length - 1;

const KEY_ID = ascii('id');
const KEY_OP = ascii('op');
const KEY_TRANSFERS = ascii('transfers');
const OP = ascii('create_transfers');

function equal(bytes: Uint8Array, at: number, key: Uint8Array): boolean {
  for (let i = 0; i < key.length; i++) if (bytes[at + i] !== key[i]) return false;
  return true;
}

/**
 * A reader over one frame. `pos` advances as values are read; -1 marks "not for this path" (the
 * caller then gives up). Values come back as numbers: u64s are read as two u32 halves, never as one
 * number or a bigint.
 */
class Reader {
  pos = 0;
  /** The halves of the last u64 read. */
  hi = 0;
  lo = 0;

  constructor(
    readonly bytes: Uint8Array,
    readonly view: DataView,
  ) {}

  /** A fixstr's length (keys and the op are short), or -1. */
  fixstr(): number {
    const b = this.bytes[this.pos];
    if (b === undefined || (b & 0xe0) !== 0xa0) return -1;
    const n = b & 0x1f;
    if (this.pos + 1 + n > this.bytes.length) return -1;
    this.pos += 1;
    return n;
  }

  /** A uint of any MessagePack width into hi/lo; false for anything else (or truncation). */
  uint(): boolean {
    const { bytes, view } = this;
    const p = this.pos;
    const b = bytes[p];
    if (b === undefined) return false;
    if (b < 0x80) {
      this.hi = 0;
      this.lo = b;
      this.pos = p + 1;
      return true;
    }
    let n: number;
    switch (b) {
      case 0xcc:
        n = 1;
        break;
      case 0xcd:
        n = 2;
        break;
      case 0xce:
        n = 4;
        break;
      case 0xcf:
        n = 8;
        break;
      default:
        return false;
    }
    if (p + 1 + n > bytes.length) return false;
    if (n === 8) {
      this.hi = view.getUint32(p + 1);
      this.lo = view.getUint32(p + 5);
    } else {
      this.hi = 0;
      this.lo = n === 1 ? bytes[p + 1] : n === 2 ? view.getUint16(p + 1) : view.getUint32(p + 1);
    }
    this.pos = p + 1 + n;
    return true;
  }

  /** A fixmap, map16, fixarray, array16 or array32 header's count, or -1. */
  length(fix: number, x16: number, x32: number): number {
    const { bytes, view } = this;
    const p = this.pos;
    const b = bytes[p];
    if (b === undefined) return -1;
    if ((b & 0xf0) === fix) {
      this.pos = p + 1;
      return b & 0x0f;
    }
    if (b === x16 && p + 3 <= bytes.length) {
      this.pos = p + 3;
      return view.getUint16(p + 1);
    }
    if (b === x32 && x32 !== 0 && p + 5 <= bytes.length) {
      this.pos = p + 5;
      return view.getUint32(p + 1);
    }
    return -1;
  }
}

/** Reads one transfer map into its record at `at`; false if the frame is not for this path. */
function readTransfer(r: Reader, out: DataView, at: number): boolean {
  const fields = r.length(0x80, 0xde, 0);
  if (fields < 0 || fields > FIELDS.length) return false;
  let seen = 0;
  for (let k = 0; k < fields; k++) {
    const n = r.fixstr();
    if (n < 0 || n > KEY_LENGTH_MAX) return false;
    const candidates = BY_LENGTH[n];
    if (candidates === undefined) return false;
    let field: Field | undefined;
    for (let c = 0; c < candidates.length; c++) {
      if (equal(r.bytes, r.pos, candidates[c].key)) {
        field = candidates[c];
        break;
      }
    }
    if (field === undefined || (seen & field.bit) !== 0) return false;
    seen |= field.bit;
    r.pos += n;
    if (!r.uint()) return false;
    const offset = at + field.offset;
    switch (field.kind) {
      case U64:
        out.setUint32(offset, r.lo, true);
        out.setUint32(offset + 4, r.hi, true);
        break;
      case U32:
        if (r.hi !== 0) return false;
        out.setUint32(offset, r.lo, true);
        break;
      case U16:
        if (r.hi !== 0 || r.lo > U16_MAX) return false;
        out.setUint16(offset, r.lo, true);
        break;
    }
  }
  return (seen & REQUIRED) === REQUIRED;
}

/**
 * The create_transfers request in `bytes`, read without building its events, or undefined when the
 * frame is anything else or anything unusual: the caller then decodes it the general way.
 */
export function readTransfersFrame(bytes: Uint8Array): TransfersFrame | undefined {
  // A create_transfers frame is at least ~30 bytes; the check also spares every small frame the setup.
  if (bytes.length < 32) return undefined;
  const r = new Reader(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  if (r.length(0x80, 0xde, 0xdf) !== 3) return undefined;
  let id = -1;
  let op = false;
  let count = 0;
  let body: Buffer | undefined;
  for (let k = 0; k < 3; k++) {
    const n = r.fixstr();
    if (n === KEY_ID.length && equal(bytes, r.pos, KEY_ID) && id < 0) {
      r.pos += n;
      // requestId() in session.ts accepts exactly 0..2^32-1.
      if (!r.uint() || r.hi !== 0) return undefined;
      id = r.lo;
    } else if (n === KEY_OP.length && equal(bytes, r.pos, KEY_OP) && !op) {
      r.pos += n;
      if (r.fixstr() !== OP.length || !equal(bytes, r.pos, OP)) return undefined;
      r.pos += OP.length;
      op = true;
    } else if (n === KEY_TRANSFERS.length && equal(bytes, r.pos, KEY_TRANSFERS) && body === undefined) {
      r.pos += n;
      count = r.length(0x90, 0xdc, 0xdd);
      // An empty batch and an oversized one have answers of their own on the general path. So has
      // a frame too short for its count: checked before the body is allocated for it.
      if (count < 1 || count > EVENTS_PER_REQUEST_MAX || bytes.length - r.pos < count * TRANSFER_MAP_BYTES_MIN) return undefined;
      // Zeroed: a field left out is zero, as on the general path. allocUnsafe takes small bodies
      // from Node's buffer pool (Buffer.alloc would allocate each one).
      body = Buffer.allocUnsafe(count * TRANSFER_BYTES).fill(0);
      const out = new DataView(body.buffer, body.byteOffset, body.byteLength);
      for (let i = 0; i < count; i++) if (!readTransfer(r, out, i * TRANSFER_BYTES)) return undefined;
    } else return undefined;
  }
  if (r.pos !== bytes.length || id < 0 || !op || body === undefined) return undefined;
  return { id, count, body };
}
