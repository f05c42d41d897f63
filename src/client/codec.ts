// MessagePack framing for the client (PROTOCOL.md sections 1 and 2): one map per binary frame.
//
// u64 encoding. msgpackr writes a bigint below 2^63 as a *signed* int64 (0xd3) and a number above
// 2^32 as a float64 (0xcb); only bigints of 2^63 and above come out as uint64 (0xcf). The protocol
// asks for MessagePack uints, so every u64 goes through `u64()`: values below 2^32 stay numbers (which
// msgpackr writes as positive fixint / uint8 / uint16 / uint32), larger ones are wrapped in `WireU64`,
// which a private msgpackr extension writes as a plain uint64 (0xcf + 8 bytes, no extension header).
// test/client.test.ts checks the raw bytes. Should a msgpackr upgrade break that hook, the self-check
// below falls back to the encoding PROTOCOL.md section 1 describes for JS clients (a safe integer as a
// number, anything larger as a bigint), which a msgpackr server decodes to the same values.
//
// Decoding uses `int64AsType: 'auto'`: uints up to 2^53 arrive as numbers, larger ones as bigints;
// `replies.ts` turns every u64 field into a bigint.

import { Packr, addExtension } from 'msgpackr';

/** A u64 of 2^32 or more, written on the wire as a MessagePack uint64 (0xcf). */
export class WireU64 {
  constructor(readonly value: bigint) {}
}

/** A value the encoder accepts: what `requests.ts` builds. */
export type WireValue = number | string | boolean | WireU64 | bigint | WireValue[] | WireMap;
export interface WireMap {
  [key: string]: WireValue | undefined;
}

/** Never seen on the wire: the type code is only what msgpackr needs to register a class hook. */
const HOOK_TYPE = 0x4b;

interface WriteTarget {
  target: Uint8Array;
  targetView: DataView;
  position: number;
}

addExtension({
  Class: WireU64,
  type: HOOK_TYPE,
  // msgpackr hands `pack` an allocator; writing through it and returning nothing emits the bytes as
  // they are, without an extension header (this is how msgpackr writes its own byte arrays).
  pack: ((value: WireU64, allocate: (size: number) => WriteTarget): undefined => {
    const { targetView, position } = allocate(9);
    targetView.setUint8(position, 0xcf);
    targetView.setBigUint64(position + 1, value.value);
    return undefined;
  }) as unknown as (value: unknown) => Uint8Array,
  // Registering the class also registers the type for decoding, process-wide. Behave exactly as an
  // unregistered type does, so that no other decoder in the process changes behaviour.
  unpack: (): never => {
    throw new Error(`Unknown extension type ${HOOK_TYPE}`);
  },
});

const OPTIONS = {
  useRecords: false,
  // Missing from msgpackr's typings; decodes a uint64 up to 2^53 as a number, above as a bigint.
  int64AsType: 'auto',
  largeBigIntToFloat: false,
} as unknown as ConstructorParameters<typeof Packr>[0];

const packr = new Packr(OPTIONS);

const U32_LIMIT = 0x1_0000_0000n;

function hookWorks(): boolean {
  try {
    const bytes = packr.pack(new WireU64(0x1_0000_0000n));
    return Buffer.from(bytes).toString('hex') === 'cf0000000100000000';
  } catch {
    return false;
  }
}

const HOOK_OK = hookWorks();

/** A u64 (already range-checked) as the encoder should see it. */
export function u64(v: bigint): number | WireU64 | bigint {
  if (v < U32_LIMIT) return Number(v);
  if (HOOK_OK) return new WireU64(v);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** True when u64s of 2^32 and more go out as MessagePack uint64 (the normal case). */
export const CANONICAL_U64 = HOOK_OK;

export function encodeFrame(message: WireMap): Buffer {
  return packr.pack(message);
}

const TWO_32 = 0x1_0000_0000;

/**
 * MessagePack written by hand where the shape is known (create events and their frame): short keys
 * as fixstr, every integer as a uint in its smallest format. Grows by doubling when `ensure` asks.
 */
export class MsgpackWriter {
  buf: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(buf: Uint8Array) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
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

  raw(bytes: Uint8Array): void {
    this.buf.set(bytes, this.pos);
    this.pos += bytes.byteLength;
  }

  /** An ASCII string of at most 31 characters. */
  fixstr(s: string): void {
    if (s.length > 31) throw new RangeError(`${s} is too long for a fixstr`);
    this.buf[this.pos++] = 0xa0 | s.length;
    for (let i = 0; i < s.length; i++) this.buf[this.pos++] = s.charCodeAt(i);
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

  /** A checked u64: below 2^32 as `uint32` writes it, else a uint64 (0xcf). */
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

  /** An array header for `n` elements (fixarray, array16 or array32). */
  arrayHeader(n: number): void {
    if (n < 0x10) this.buf[this.pos++] = 0x90 | n;
    else if (n < 0x1_0000) {
      this.buf[this.pos] = 0xdc;
      this.view.setUint16(this.pos + 1, n);
      this.pos += 3;
    } else {
      this.buf[this.pos] = 0xdd;
      this.view.setUint32(this.pos + 1, n);
      this.pos += 5;
    }
  }
}

/**
 * `{id, op, [param]: events}` where the events are already MessagePack maps (requests.ts): what
 * `encodeFrame` writes for that map, without decoding and re-encoding the events.
 */
export function encodeCreateFrame(id: number, op: string, param: string, count: number, chunks: readonly Uint8Array[]): Buffer {
  let events_bytes = 0;
  for (const c of chunks) events_bytes += c.byteLength;
  // Pooled for small frames; the head (map, three keys, the op, the id and the array header) fits in 64 bytes.
  const out = Buffer.allocUnsafe(64 + events_bytes);
  const w = new MsgpackWriter(out);
  out[w.pos++] = 0x83;
  w.fixstr('id');
  w.uint32(id);
  w.fixstr('op');
  w.fixstr(op);
  w.fixstr(param);
  w.arrayHeader(count);
  for (const c of chunks) w.raw(c);
  return out.subarray(0, w.pos);
}

/** Throws on undecodable bytes; the caller treats that as a protocol error. */
export function decodeFrame(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}
