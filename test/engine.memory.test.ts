// A shard keeps its state in its worker's heap. Filled to its memory mark it must refuse writes
// with a clear message, before V8 kills the worker (a restart into the same limit would die again
// replaying its log), while queries go on; every acknowledged transfer stays, the books balance,
// and a restart with more memory takes writes again.

import t from 'tap';
import { Engine } from '../src/shard/engine.ts';
import { HEAP_CLEAR_FRACTION, HEAP_FULL_FRACTION, nextFull } from '../src/shard/memory.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import { CreateTransferStatus, type TransferInput } from '../src/ledger/types.ts';
import { account, transfer } from './support/builders.ts';
import { tempDir } from './support/shard-helpers.ts';

t.test('the marks: full past 80% of the limit, clear again under 70%, nothing in between flips', async (t) => {
  const limit = 1000;
  t.equal(HEAP_FULL_FRACTION, 0.8);
  t.equal(HEAP_CLEAR_FRACTION, 0.7);
  t.notOk(nextFull(false, 799, limit));
  t.ok(nextFull(false, 800, limit));
  t.ok(nextFull(true, 750, limit), 'between the marks a full shard stays full');
  t.notOk(nextFull(false, 750, limit), 'and a shard with room keeps it');
  t.notOk(nextFull(true, 699, limit));
  t.throws(() => nextFull(false, 1, 0), RangeError);
});

t.test('a shard filled to its memory mark refuses writes, keeps every acknowledged one, and takes writes again with more memory', async (t) => {
  const { dir, cleanup } = tempDir('keel-memory-');
  t.teardown(cleanup);
  const flips: boolean[] = [];
  const ACCOUNTS = 1000n;
  let engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 100_000, shard_heap_mb: 96, on_memory: (_shard, full) => flips.push(full) });
  const accounts = Array.from({ length: Number(ACCOUNTS) }, (_, i) => account(BigInt(i + 1)));
  const created = await engine.createAccounts(accounts.length, encodeAccountBatch(accounts));
  t.ok('status' in created && created.status.every((s) => s === 0), 'accounts created');

  const debits = new Map<bigint, bigint>();
  const credits = new Map<bigint, bigint>();
  let next_id = 1n;
  let acknowledged = 0;
  let refusal: string | null = null;
  // 96 MiB fills within about 200,000 transfers (a worker starts with about 35 MiB in use);
  // 120 batches of 8,190 would be five times that.
  for (let batch = 0; batch < 120 && refusal === null; batch++) {
    const events: TransferInput[] = [];
    for (let i = 0; i < 8190; i++) {
      const debit = 1n + (next_id % ACCOUNTS);
      const credit = 1n + ((next_id * 7n + 3n) % ACCOUNTS);
      events.push(transfer(next_id++, debit, credit === debit ? 1n + (credit % ACCOUNTS) : credit, 1n + (next_id % 5n), { user_data_64: next_id }));
    }
    const result = await engine.createTransfers(events.length, encodeTransferBatch(events));
    if ('error' in result) {
      refusal = `${result.error}: ${result.message}`;
      break;
    }
    t.ok('status' in result && result.status.every((s) => s === CreateTransferStatus.created), `batch ${batch} created`, { diagnostic: false });
    for (const e of events) {
      debits.set(e.debit_account_id, (debits.get(e.debit_account_id) ?? 0n) + e.amount);
      credits.set(e.credit_account_id, (credits.get(e.credit_account_id) ?? 0n) + e.amount);
    }
    acknowledged += events.length;
  }
  t.match(refusal, /^unavailable: shard 0 is at its memory capacity \(\d+ MiB live of 96 MiB\).*--shard-heap-mb/, 'writes are refused with why and what to do');
  t.ok(acknowledged > 0, `${acknowledged} transfers were acknowledged first`);
  t.equal(flips[0], true, 'the engine heard the shard fill up');

  // Reads go on, and show exactly what was acknowledged.
  const check = async (label: string): Promise<void> => {
    const found = await engine.lookupAccounts(accounts.map((a) => a.id));
    if (!('accounts' in found)) throw new Error(JSON.stringify(found));
    let mismatches = 0;
    let debits_total = 0n;
    let credits_total = 0n;
    for (const a of found.accounts) {
      if (a.debits_posted !== (debits.get(a.id) ?? 0n) || a.credits_posted !== (credits.get(a.id) ?? 0n)) mismatches++;
      debits_total += a.debits_posted;
      credits_total += a.credits_posted;
    }
    t.equal(mismatches, 0, `${label}: every balance is the sum of the acknowledged transfers`);
    t.equal(debits_total, credits_total, `${label}: the books balance`);
  };
  await check('while full');
  await engine.close();

  // More memory: the shard replays everything and takes writes again.
  engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 100_000, shard_heap_mb: 512 });
  t.teardown(() => engine.close());
  await check('after a restart with 512 MiB');
  const again = await engine.createTransfers(1, encodeTransferBatch([transfer(next_id, 1n, 2n, 1n)]));
  t.same('status' in again ? again.status : again, [CreateTransferStatus.created], 'writes are taken again');
});
