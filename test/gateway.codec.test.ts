import t from 'tap';
import { Packr, Unpackr } from 'msgpackr';
import { decodeFrame, encodeReply } from '../src/gateway/codec.ts';

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'auto' } as unknown as ConstructorParameters<typeof Unpackr>[0]);
const packr = new Packr({ useRecords: false });

t.test('u64 values are MessagePack uints in the smallest format, number or bigint alike', async (t) => {
  const hex = (v: unknown): string => encodeReply({ v }).toString('hex');
  // 81 (map of 1) a1 76 ("v") then the value
  t.equal(hex(0), '81a17600');
  t.equal(hex(0n), '81a17600');
  t.equal(hex(127), '81a1767f');
  t.equal(hex(128n), '81a176cc80');
  t.equal(hex(65535), '81a176cdffff');
  t.equal(hex(2 ** 32 - 1), '81a176ceffffffff');
  t.equal(hex(2 ** 32), '81a176cf0000000100000000', 'a number above 2^32 is a uint64, not a float64');
  t.equal(hex(2n ** 40n), '81a176cf0000010000000000', 'a bigint below 2^63 is a uint64, not an int64');
  t.equal(hex(2n ** 64n - 1n), '81a176cfffffffffffffffff');
  t.throws(() => encodeReply({ v: 2n ** 64n }), RangeError);
});

t.test('replies round-trip through msgpackr', async (t) => {
  const reply = {
    id: 7,
    status: [0, 21, 65],
    timestamp: [0n, 1795747411046708000n, 2n ** 64n - 1n],
    message: 'é'.repeat(40) + 'x'.repeat(300),
    nested: { a: [true, false, null], b: 'short', c: 1.5, d: -3, e: -(2 ** 40), f: new Uint8Array([1, 2, 3]) },
    skipped: undefined,
    long: Array.from({ length: 70_000 }, (_, i) => i),
  };
  const back = unpackr.unpack(encodeReply(reply)) as Record<string, unknown>;
  const { skipped: _skipped, ...expected } = reply;
  t.same(back, { ...expected, nested: { ...reply.nested, f: Buffer.from([1, 2, 3]) } });
  t.notOk('skipped' in back, 'undefined fields are left out');
});

t.test('decodeFrame accepts exactly one map', async (t) => {
  const ok = decodeFrame(packr.pack({ id: 1, op: 'hello', token: 'x' }));
  t.ok(ok.ok);
  const big = decodeFrame(Buffer.from('82a26964cfffffffffffffffffa26f70a178', 'hex'));
  t.ok(big.ok && big.frame.id === 2n ** 64n - 1n, 'a uint64 past 2^53 decodes as a bigint');
  for (const [name, bytes] of [
    ['empty', Buffer.alloc(0)],
    ['truncated', packr.pack({ id: 1, op: 'hello' }).subarray(0, 5)],
    ['trailing bytes', Buffer.concat([packr.pack({ id: 1 }), Buffer.from([0])])],
    ['not a map', packr.pack([1, 2])],
    ['a number', packr.pack(5)],
    ['never used 0xc1', Buffer.from([0xc1])],
    ['a date', packr.pack(new Date())],
  ] as const) {
    const r = decodeFrame(bytes);
    t.notOk(r.ok, name);
  }
});
