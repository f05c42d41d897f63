// Frames <-> values. Decoding: msgpackr with `int64AsType: 'auto'` (u64 past 2^53 arrive as bigint),
// plain objects for maps, no records. Encoding: a small MessagePack writer of its own, because
// msgpackr writes integers above 2^32 held in a `number` as float64 and bigints below 2^63 as int64,
// while PROTOCOL.md section 1 promises a MessagePack uint for every u64. This writer always picks the
// smallest uint format for a non-negative integer, whether it is held as a number or a bigint.

import { Unpackr } from 'msgpackr';

// msgpackr's typings list only 'number' | 'bigint' | 'string' for int64AsType; 'auto' exists at runtime.
const unpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  int64AsType: 'auto',
} as unknown as ConstructorParameters<typeof Unpackr>[0]);

/** A decoded request frame: the top-level map's own fields. */
export type Frame = Record<string, unknown>;

export type FrameDecoded = { ok: true; frame: Frame } | { ok: false; message: string };

/**
 * One frame as one MessagePack map. Anything else (a decode error, bytes left over after the first
 * value, or a value that is not a map) fails: the caller closes the connection with 1007.
 */
export function decodeFrame(bytes: Uint8Array): FrameDecoded {
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, message: `undecodable MessagePack: ${reason.slice(0, 80)}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
    return { ok: false, message: 'a frame must be one MessagePack map' };
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    return { ok: false, message: 'a frame must be one MessagePack map' };
  }
  return { ok: true, frame: value as Frame };
}

// ---------------------------------------------------------------------------------------------------
// Encoding.

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const I64_MIN = -(1n << 63n);

class Writer {
  buf: Buffer;
  view: DataView;
  pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
    this.view = new DataView(next.buffer, next.byteOffset, next.byteLength);
  }

  u8(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  head(tag: number, bytes: 1 | 2 | 4, n: number): void {
    this.ensure(1 + bytes);
    this.buf[this.pos++] = tag;
    if (bytes === 1) this.buf[this.pos] = n;
    else if (bytes === 2) this.view.setUint16(this.pos, n);
    else this.view.setUint32(this.pos, n);
    this.pos += bytes;
  }

  uint(n: number): void {
    if (n < 0x80) this.u8(n);
    else if (n < 0x100) this.head(0xcc, 1, n);
    else if (n < 0x1_0000) this.head(0xcd, 2, n);
    else if (n < 0x1_0000_0000) this.head(0xce, 4, n);
    else this.uint64(BigInt(n));
  }

  uint64(n: bigint): void {
    this.ensure(9);
    this.buf[this.pos++] = 0xcf;
    this.view.setBigUint64(this.pos, n);
    this.pos += 8;
  }

  int(n: number): void {
    if (n >= -0x20) this.u8(0x100 + n);
    else if (n >= -0x80) this.head(0xd0, 1, n + 0x100);
    else if (n >= -0x8000) this.head(0xd1, 2, n + 0x1_0000);
    else if (n >= -0x8000_0000) this.head(0xd2, 4, n + 0x1_0000_0000);
    else this.int64(BigInt(n));
  }

  int64(n: bigint): void {
    this.ensure(9);
    this.buf[this.pos++] = 0xd3;
    this.view.setBigInt64(this.pos, n);
    this.pos += 8;
  }

  float(n: number): void {
    this.ensure(9);
    this.buf[this.pos++] = 0xcb;
    this.view.setFloat64(this.pos, n);
    this.pos += 8;
  }

  str(s: string): void {
    const max = s.length * 3;
    this.ensure(5 + max);
    // Reserve the largest header the string could need, then move it down if it was smaller.
    const start = this.pos;
    const headBytes = max < 0x20 ? 1 : max < 0x100 ? 2 : max < 0x1_0000 ? 3 : 5;
    const len = this.buf.write(s, start + headBytes, 'utf8');
    let actual: number;
    if (len < 0x20) actual = 1;
    else if (len < 0x100) actual = 2;
    else if (len < 0x1_0000) actual = 3;
    else actual = 5;
    if (actual !== headBytes) this.buf.copy(this.buf, start + actual, start + headBytes, start + headBytes + len);
    if (actual === 1) this.buf[start] = 0xa0 | len;
    else if (actual === 2) {
      this.buf[start] = 0xd9;
      this.buf[start + 1] = len;
    } else if (actual === 3) {
      this.buf[start] = 0xda;
      this.view.setUint16(start + 1, len);
    } else {
      this.buf[start] = 0xdb;
      this.view.setUint32(start + 1, len);
    }
    this.pos = start + actual + len;
  }

  bin(b: Uint8Array): void {
    const n = b.byteLength;
    if (n < 0x100) this.head(0xc4, 1, n);
    else if (n < 0x1_0000) this.head(0xc5, 2, n);
    else this.head(0xc6, 4, n);
    this.ensure(n);
    this.buf.set(b, this.pos);
    this.pos += n;
  }

  /** null, undefined (nil), booleans, numbers, bigints, strings, Uint8Array, arrays and plain objects. */
  value(v: unknown): void {
    switch (typeof v) {
      case 'number':
        if (Number.isInteger(v)) {
          if (v >= 0) {
            if (v <= Number.MAX_SAFE_INTEGER) return this.uint(v);
          } else if (v >= Number.MIN_SAFE_INTEGER) return this.int(v);
        }
        return this.float(v);
      case 'bigint':
        if (v >= 0n) {
          if (v > U64_MAX) throw new RangeError(`cannot encode ${v}: above 2^64-1`);
          return v <= 0xffff_ffffn ? this.uint(Number(v)) : this.uint64(v);
        }
        if (v < I64_MIN) throw new RangeError(`cannot encode ${v}: below -2^63`);
        return v >= -0x8000_0000n ? this.int(Number(v)) : this.int64(v);
      case 'string':
        return this.str(v);
      case 'boolean':
        return this.u8(v ? 0xc3 : 0xc2);
      case 'undefined':
        return this.u8(0xc0);
      case 'object':
        if (v === null) return this.u8(0xc0);
        if (v instanceof Uint8Array) return this.bin(v);
        if (Array.isArray(v)) return this.array(v as readonly unknown[]);
        return this.map(v);
      default:
        throw new TypeError(`cannot encode a ${typeof v}`);
    }
  }

  array(a: readonly unknown[]): void {
    const n = a.length;
    if (n < 0x10) this.u8(0x90 | n);
    else if (n < 0x1_0000) this.head(0xdc, 2, n);
    else this.head(0xdd, 4, n);
    for (let i = 0; i < n; i++) this.value(a[i]);
  }

  /** The own enumerable fields of `obj` whose value is not undefined. */
  map(obj: object): void {
    const o = obj as Record<string, unknown>;
    let n = 0;
    for (const key in o) if (o[key] !== undefined) n++;
    if (n < 0x10) this.u8(0x80 | n);
    else if (n < 0x1_0000) this.head(0xde, 2, n);
    else this.head(0xdf, 4, n);
    for (const key in o) {
      const v = o[key];
      if (v === undefined) continue;
      this.str(key);
      this.value(v);
    }
  }
}

/**
 * One reply (a plain object) as a MessagePack map in a buffer of its own, safe to hand to ws.send and
 * forget. Throws RangeError/TypeError on a value outside the encodable set (a bug, never input).
 */
export function encodeReply(reply: object): Buffer {
  const writer = new Writer(256);
  writer.map(reply);
  const { buf, pos } = writer;
  // Do not keep a mostly empty tail alive in the socket's send queue.
  return buf.length - pos > 4096 && buf.length > pos * 1.25 ? Buffer.from(buf.subarray(0, pos)) : buf.subarray(0, pos);
}
