// The door's create_transfers reader (src/gateway/transfers.ts) against the general path
// (decodeFrame + prepare): wherever the reader accepts a frame, the general path must accept it too,
// with the same request id and the same batch body, byte for byte. Frames come from the client
// library and from a writer here that picks every MessagePack encoding a sender may choose, with
// mutations (unknown and repeated keys, nil, negative, float, out-of-range, truncated, trailing bytes).

import t, { type Test } from 'tap';
import { decodeFrame } from '../src/gateway/codec.ts';
import { prepare } from '../src/gateway/ops.ts';
import { readTransfersFrame } from '../src/gateway/transfers.ts';
import { encodeCreateFrame, encodeFrame } from '../src/client/codec.ts';
import { transferEvents, type TransferInput } from '../src/client/requests.ts';
import { U32_MAX } from '../src/ledger/types.ts';
import { rng } from './support/order.ts';

/** What the session's general path makes of a frame: the request id and body, or why not. */
function general(bytes: Uint8Array): { id: number; count: number; body: Uint8Array } | string {
  const decoded = decodeFrame(bytes);
  if (!decoded.ok) return `undecodable: ${decoded.message}`;
  const { frame } = decoded;
  const id = frame.id;
  const ok_id =
    (typeof id === 'number' && Number.isInteger(id) && id >= 0 && id <= U32_MAX) || (typeof id === 'bigint' && id >= 0n && id <= BigInt(U32_MAX));
  if (!ok_id) return 'bad id';
  if (frame.op !== 'create_transfers') return 'other op';
  const prepared = prepare('create_transfers', frame);
  if (!prepared.ok) return `${prepared.error}: ${prepared.message}`;
  if (!('call' in prepared) || prepared.call.op !== 'create_transfers') return 'no call';
  return { id: Number(id), count: prepared.call.count, body: prepared.call.body };
}

/** Checks one frame; returns whether the reader took it. */
function agree(t: Test, bytes: Uint8Array, label: string): boolean {
  const fast = readTransfersFrame(bytes);
  if (fast === undefined) return false;
  const slow = general(bytes);
  if (typeof slow === 'string') {
    t.fail(`${label}: the reader accepted a frame the general path refuses (${slow})`);
    return true;
  }
  if (fast.id !== slow.id || fast.count !== slow.count || Buffer.compare(fast.body, Buffer.from(slow.body)) !== 0) {
    t.fail(`${label}: the reader and the general path differ`, { fast: { id: fast.id, count: fast.count }, slow: { id: slow.id, count: slow.count } });
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------
// A MessagePack writer that lets the test choose each encoding.

class Writer {
  readonly parts: number[] = [];

  byte(...b: number[]): void {
    this.parts.push(...b);
  }

  be(v: bigint, bytes: number): void {
    for (let i = bytes - 1; i >= 0; i--) this.parts.push(Number((v >> BigInt(i * 8)) & 0xffn));
  }

  /** A uint in the smallest format, or a wider one (`widen`), as senders may. */
  uint(v: bigint, widen: number): void {
    const formats: [number, number, bigint][] = [
      [-1, 0, 0x80n],
      [0xcc, 1, 0x100n],
      [0xcd, 2, 0x1_0000n],
      [0xce, 4, 0x1_0000_0000n],
      [0xcf, 8, 1n << 64n],
    ];
    let k = formats.findIndex(([, , limit]) => v < limit);
    k = Math.min(formats.length - 1, k + widen);
    const [tag, bytes] = formats[k];
    if (tag < 0) this.byte(Number(v));
    else {
      this.byte(tag);
      this.be(v, bytes);
    }
  }

  str(s: string, str8: boolean): void {
    const b = Buffer.from(s, 'utf8');
    if (str8 || b.length >= 32) this.byte(0xd9, b.length);
    else this.byte(0xa0 | b.length);
    this.byte(...b);
  }

  map(n: number, wide: boolean | 32): void {
    if (wide === 32) this.byte(0xdf, 0, 0, n >> 8, n & 0xff);
    else if (wide || n >= 16) this.byte(0xde, n >> 8, n & 0xff);
    else this.byte(0x80 | n);
  }

  array(n: number, wide: 0 | 1 | 2): void {
    if (wide === 2) this.byte(0xdd, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    else if (wide === 1 || n >= 16) this.byte(0xdc, n >> 8, n & 0xff);
    else this.byte(0x90 | n);
  }

  bytes(): Buffer {
    return Buffer.from(this.parts);
  }
}

const U64_FIELDS = ['id', 'debit_account_id', 'credit_account_id', 'amount', 'pending_id', 'user_data_64', 'timestamp'];
const WIDTH: Record<string, bigint> = { ledger: 0xffff_ffffn, user_data_32: 0xffff_ffffn, timeout: 0xffff_ffffn, code: 0xffffn, flags: 0xffffn };
const REQUIRED = ['id', 'debit_account_id', 'credit_account_id', 'amount', 'ledger', 'code'];
const OPTIONAL = ['pending_id', 'user_data_64', 'timestamp', 'user_data_32', 'timeout', 'flags'];

type Value = bigint | { raw: number[] };

function randomValue(random: () => number, field: string): bigint {
  const max = WIDTH[field] ?? (1n << 64n) - 1n;
  const pick = random();
  if (pick < 0.2) return 0n;
  if (pick < 0.3) return max;
  if (pick < 0.7) return BigInt(Math.floor(random() * 300));
  // Any width up to max, so that every format appears.
  const bits = 1 + Math.floor(random() * (max === 0xffffn ? 16 : max === 0xffff_ffffn ? 32 : 64));
  let v = 0n;
  for (let i = 0; i < bits; i++) v = (v << 1n) | (random() < 0.5 ? 1n : 0n);
  return v > max ? max : v;
}

/** A random transfer frame, sometimes mutated into something the reader must leave alone. */
function randomFrame(random: () => number, mutate: boolean): Buffer {
  const w = new Writer();
  const count = random() < 0.02 ? 8190 : 1 + Math.floor(random() * 20);
  const widen = (): number => (random() < 0.7 ? 0 : Math.floor(random() * 4));
  // Valid but unusual encodings the reader leaves to the general path (str8 keys, map16), in some frames.
  const unusual = random() < 0.2 ? 0.05 : 0;
  const mutation = mutate ? Math.floor(random() * 14) : -1;
  const victim = Math.floor(random() * count);
  const top: [string, () => void][] = [
    ['id', () => w.uint(mutation === 0 ? 1n << 32n : BigInt(Math.floor(random() * 2 ** 32)), widen())],
    ['op', () => w.str(mutation === 1 ? 'create_accounts' : 'create_transfers', mutation === 2)],
    [
      'transfers',
      () => {
        w.array(mutation === 3 ? 0 : mutation === 4 ? 8191 : count, random() < 0.8 ? 0 : random() < 0.5 ? 1 : 2);
        const n = mutation === 3 ? 0 : mutation === 4 ? 8191 : count;
        for (let i = 0; i < n; i++) {
          const fields: [string, Value][] = [];
          for (const f of REQUIRED) fields.push([f, randomValue(random, f)]);
          for (const f of OPTIONAL) if (random() < 0.4) fields.push([f, randomValue(random, f)]);
          if (i === victim) {
            if (mutation === 5) fields.splice(Math.floor(random() * REQUIRED.length), 1); // a required field missing
            if (mutation === 6) fields.push(['memo', 1n]); // an unknown field
            if (mutation === 7) fields.push([fields[0][0], 1n]); // a repeated field
            if (mutation === 8) fields[Math.floor(random() * fields.length)][1] = { raw: [0xc0] }; // nil
            if (mutation === 9) fields[Math.floor(random() * fields.length)][1] = { raw: [0xff] }; // -1
            if (mutation === 10) fields[Math.floor(random() * fields.length)][1] = { raw: [0xcb, 0x40, 0x14, 0, 0, 0, 0, 0, 0] }; // 5.0
            if (mutation === 11) {
              const narrow = fields.filter(([f]) => WIDTH[f] !== undefined);
              const pick = narrow[Math.floor(random() * narrow.length)];
              pick[1] = WIDTH[pick[0]] + 1n; // one past the field's range
            }
          }
          for (let s = fields.length - 1; s > 0; s--) {
            const j = Math.floor(random() * (s + 1));
            [fields[s], fields[j]] = [fields[j], fields[s]];
          }
          w.map(fields.length, random() < unusual);
          for (const [name, value] of fields) {
            w.str(name, random() < unusual);
            if (typeof value === 'bigint') w.uint(value, widen());
            else w.byte(...value.raw);
          }
        }
      },
    ],
  ];
  for (let s = top.length - 1; s > 0; s--) {
    const j = Math.floor(random() * (s + 1));
    [top[s], top[j]] = [top[j], top[s]];
  }
  w.map(mutation === 12 ? 4 : 3, random() < unusual ? (random() < 0.5 ? 32 : true) : false);
  for (const [key, write] of top) {
    w.str(key, false);
    write();
  }
  if (mutation === 12) {
    w.str('deadline', false);
    w.uint(5n, 0);
  }
  let bytes = w.bytes();
  if (mutation === 13) bytes = random() < 0.5 ? bytes.subarray(0, Math.floor(random() * bytes.length)) : Buffer.concat([bytes, Buffer.from([0])]);
  return bytes;
}

t.test('frames the client library sends take the reader, with the general path\'s body', async (t) => {
  const random = rng(0x7a11);
  for (let round = 0; round < 200; round++) {
    const n = round % 10 === 0 ? 8190 : 1 + Math.floor(random() * 50);
    const transfers: TransferInput[] = [];
    for (let i = 0; i < n; i++) {
      const big = (): bigint => randomValue(random, 'id');
      transfers.push({
        id: big(),
        debit_account_id: big(),
        credit_account_id: random() < 0.5 ? Number(randomValue(random, 'ledger')) : big(),
        amount: big(),
        ledger: Number(randomValue(random, 'ledger')),
        code: Number(randomValue(random, 'code')),
        flags: random() < 0.5 ? Number(randomValue(random, 'flags')) : undefined,
        pending_id: random() < 0.3 ? big() : undefined,
        user_data_64: random() < 0.3 ? big() : undefined,
        user_data_32: random() < 0.3 ? Number(randomValue(random, 'user_data_32')) : undefined,
        timeout: random() < 0.3 ? Number(randomValue(random, 'timeout')) : undefined,
        timestamp: random() < 0.1 ? big() : undefined,
      });
    }
    const events = transferEvents(transfers);
    if (!('bytes' in events)) throw new Error(`the test built an invalid call: ${events.message}`);
    const id = Math.floor(random() * 2 ** 32);
    const bytes = encodeCreateFrame(id, 'create_transfers', 'transfers', events.count, [events.bytes]);
    if (!agree(t, bytes, `client frame ${round}`)) t.fail(`client frame ${round} (${n} transfers) did not take the reader`);
  }
});

t.test('any encoding a sender may choose: the reader agrees with the general path or leaves the frame to it', async (t) => {
  const random = rng(0x5eed);
  let taken = 0;
  let left = 0;
  let mutated_taken = 0;
  for (let round = 0; round < 800; round++) {
    const mutate = random() < 0.6;
    const bytes = randomFrame(random, mutate);
    const took = agree(t, bytes, `round ${round}`);
    if (took) taken++;
    else left++;
    if (took && mutate) mutated_taken++;
  }
  // Both outcomes happened (so neither assertion above is vacuous), and no mutation got through.
  t.ok(taken > 200, `the reader took ${taken} frames`);
  t.ok(left > 200, `the reader left ${left} frames to the general path`);
  t.equal(mutated_taken, 0, 'every mutated frame was left to the general path');
});

t.test('frames that are not create_transfers are left alone', async (t) => {
  const cases: [string, unknown][] = [
    ['hello', { id: 1, op: 'hello', token: 'keel_x'.padEnd(40, 'x') }],
    ['lookup', { id: 2, op: 'lookup_transfers', ids: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] }],
    ['create_accounts', { id: 3, op: 'create_accounts', accounts: [{ id: 1, ledger: 1, code: 1 }, { id: 2, ledger: 1, code: 1 }] }],
    ['empty batch', { id: 4, op: 'create_transfers', transfers: [] }],
  ];
  for (const [label, frame] of cases) t.equal(readTransfersFrame(encodeFrame(frame as never)), undefined, label);
  t.equal(readTransfersFrame(Buffer.alloc(0)), undefined, 'no bytes');
  // 8190 events announced in a few dozen bytes: left to the general path before any body is allocated.
  const head = Buffer.from([0x83, 0xa2, 0x69, 0x64, 0x01, 0xa2, 0x6f, 0x70, 0xb0, ...Buffer.from('create_transfers'), 0xa9, ...Buffer.from('transfers'), 0xdc, 0x1f, 0xfe]);
  t.equal(readTransfersFrame(Buffer.concat([head, Buffer.alloc(40, 0x80)])), undefined, 'a count the bytes cannot hold');
  t.equal(readTransfersFrame(Buffer.alloc(64, 0x80)), undefined, 'an empty map and trailing bytes');
});
