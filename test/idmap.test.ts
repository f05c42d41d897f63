// IdMap, the ledger's table of accounts and transfers by id, against a plain Map: random inserts,
// replacements, lookups and deletions (which shift later entries back into the hole) must agree
// at every step, across growth, with ids that share their low or high 32 bits.

import t from 'tap';
import { IdMap, IdSet } from '../src/ledger/idmap.ts';
import { rng } from './support/order.ts';

type Item = { readonly id: bigint; readonly n: number };

const U64_MAX = 0xffff_ffff_ffff_ffffn;

function idFrom(random: () => number, shape: number): bigint {
  const word = (): bigint => BigInt(Math.floor(random() * 0x1_0000_0000));
  switch (shape % 4) {
    case 0:
      return 1n + BigInt(Math.floor(random() * 200)); // a small range: many repeats and deletions
    case 1:
      return (word() << 32n) | 7n; // one low word, many high words
    case 2:
      return (9n << 32n) | (word() | 1n); // one high word, many low words
    default:
      return ((word() << 32n) | word()) || 1n;
  }
}

t.test('agrees with Map under random inserts, replacements, lookups and deletions', async (t) => {
  for (const seed of [1, 2, 3, 42, 1234]) {
    const random = rng(seed);
    const map = new IdMap<Item>(4);
    const truth = new Map<bigint, Item>();
    const seen: bigint[] = [];
    let mismatches = 0;
    for (let step = 0; step < 20_000; step++) {
      const op = random();
      const id = seen.length > 0 && random() < 0.5 ? seen[Math.floor(random() * seen.length)] : idFrom(random, step);
      if (op < 0.45) {
        const item = { id, n: step };
        map.set(id, item);
        truth.set(id, item);
        seen.push(id);
      } else if (op < 0.7) {
        if (map.delete(id) !== truth.delete(id)) mismatches++;
      } else {
        if (map.get(id) !== truth.get(id) || map.has(id) !== truth.has(id)) mismatches++;
      }
      if (map.size !== truth.size) mismatches++;
    }
    t.equal(mismatches, 0, `seed ${seed}: every answer as Map's`);
    for (const [id, item] of truth) if (map.get(id) !== item) mismatches++;
    t.equal(mismatches, 0, `seed ${seed}: every id still found`);
    t.same([...map.keys()].sort((a, b) => (a < b ? -1 : 1)), [...truth.keys()].sort((a, b) => (a < b ? -1 : 1)), `seed ${seed}: the same keys`);
    t.equal([...map.values()].length, truth.size);
    t.same(new Map(map.entries()), truth, `seed ${seed}: the same entries`);
  }
});

t.test('holds ids at both ends of the u64 range, and refuses what it cannot hold', async (t) => {
  const map = new IdMap<Item>();
  for (const id of [1n, U64_MAX, U64_MAX - 1n, 1n << 32n, (1n << 32n) - 1n]) map.set(id, { id, n: 0 });
  t.equal(map.size, 5);
  t.equal(map.get(U64_MAX)?.id, U64_MAX);
  t.equal(map.get((1n << 32n) - 1n)?.id, (1n << 32n) - 1n);
  t.equal(map.get(0n), undefined, 'id 0 is never found (it marks empty slots)');
  t.throws(() => map.set(0n, { id: 0n, n: 0 }), RangeError);
  t.throws(() => map.set(U64_MAX + 1n, { id: U64_MAX + 1n, n: 0 }), RangeError, 'past u64');
  t.equal(map.size, 5, 'a refused set changes nothing');
  t.throws(() => new IdMap<Item>(2 ** 29 + 1), /holds at most 536870912 ids/, 'a table past 2^29 ids is refused, not corrupted');
  map.set(5n, { id: 5n, n: 5 });
  t.equal(map.get(-1n), undefined, 'an id below the range does not wrap onto 2^64-1');
  t.equal(map.get(2n ** 64n + 5n), undefined, 'nor one above it onto 5');
  t.notOk(map.has(2n ** 64n + 5n));
  t.notOk(map.delete(2n ** 64n + 5n));
  t.equal(map.get(5n)?.n, 5);
  t.notOk(map.insert(5n, { id: 5n, n: 6 }), 'insert refuses a present id');
  t.equal(map.get(5n)?.n, 5, 'and leaves its value');
  t.ok(map.insert(6n, { id: 6n, n: 6 }));
  t.equal(map.size, 7);
});

t.test('an iteration that sees an insert or a delete stops with an error instead of skipping entries', async (t) => {
  const map = new IdMap<Item>(2);
  for (let i = 1n; i <= 20n; i++) map.set(i, { id: i, n: Number(i) });
  t.throws(() => {
    for (const [id] of map) map.set(id + 1000n, { id: id + 1000n, n: 0 });
  }, /changed \(insert or delete\) while being iterated/);
  t.throws(() => {
    for (const id of map.keys()) map.delete(id);
  }, /while being iterated/);
  let replaced = 0;
  for (const [id, item] of map) {
    map.set(id, { ...item, n: -1 });
    replaced++;
  }
  t.equal(replaced, map.size, 'replacing values while iterating is fine');
});

t.test('grows from a tiny table to a million ids over several value pages, and deletes across them', async (t) => {
  const map = new IdMap<Item>(1);
  const n = 1_200_000; // 2^22 slots at half load: four pages of values
  const id = (i: number): bigint => BigInt(i) * 0x1_0000_0001n;
  for (let i = 1; i <= n; i++) map.set(id(i), { id: id(i), n: i });
  let missing = 0;
  for (let i = 1; i <= n; i++) if (map.get(id(i))?.n !== i) missing++;
  t.equal(missing, 0, 'every id found after growth');
  for (let i = 3; i <= n; i += 3) map.delete(id(i));
  let wrong = 0;
  for (let i = 1; i <= n; i++) if ((map.get(id(i))?.n === i) !== (i % 3 !== 0)) wrong++;
  t.equal(wrong, 0, 'a third deleted, the rest still found');
  t.equal(map.size, n - Math.floor(n / 3));
  t.equal([...map.values()].length, map.size);
  t.equal(map.get(id(n + 1)), undefined);
});

t.test('IdSet: add is idempotent, has answers, iteration yields each id once', async (t) => {
  const set = new IdSet(1);
  for (const id of [5n, 7n, 5n, U64_MAX, 1n << 40n]) set.add(id);
  t.equal(set.size, 4);
  t.ok(set.has(7n) && set.has(U64_MAX) && set.has(1n << 40n));
  t.notOk(set.has(6n));
  t.same([...set].sort((a, b) => (a < b ? -1 : 1)), [5n, 7n, 1n << 40n, U64_MAX]);
  t.throws(() => set.add(0n), RangeError, 'id 0 is refused');
});
