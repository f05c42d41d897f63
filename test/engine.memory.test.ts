// A shard keeps its state in its worker's heap. Filled to its memory mark it must refuse writes
// with a clear message, before V8 kills the worker (a restart into the same limit would die again
// replaying its log), while queries go on; every acknowledged transfer stays, the books balance,
// and a restart with more memory takes writes again.

import t from 'tap';
import { Engine } from '../src/shard/engine.ts';
import { HEAP_CLEAR_GAP_FRACTION, HEAP_FULL_FRACTION, STATE_BYTES_PER_EVENT, fullMark, nextFull } from '../src/shard/memory.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import { CreateTransferStatus, type TransferInput } from '../src/ledger/types.ts';
import { account, transfer } from './support/builders.ts';
import { tempDir } from './support/shard-helpers.ts';

const MiB = 2 ** 20;

t.test('the marks: room for the queue, at most 80% of the limit, and a gap before writes resume', async (t) => {
  t.equal(HEAP_FULL_FRACTION, 0.8);
  t.equal(fullMark(4096 * MiB, 131_040), 4096 * MiB * 0.8, 'a large heap: 80%');
  t.equal(fullMark(256 * MiB, 131_040), 256 * MiB - 131_040 * STATE_BYTES_PER_EVENT - 16 * MiB, 'a small one: what the queue may still add is kept free');
  const limit = 1000 * MiB;
  const mark = fullMark(limit, 0);
  t.notOk(nextFull(false, mark - 1, mark, limit));
  t.ok(nextFull(false, mark, mark, limit));
  t.ok(nextFull(true, mark - 1, mark, limit), 'just under the mark a full shard stays full');
  t.notOk(nextFull(true, mark - limit * HEAP_CLEAR_GAP_FRACTION - 1, mark, limit), 'it clears a tenth of the limit lower');
  t.throws(() => fullMark(0, 1), RangeError);
});

t.test('a shard filled to its memory mark refuses writes (busy), keeps every acknowledged one, refuses from its first request after a restart, and takes writes again with more memory', async (t) => {
  const { dir, cleanup } = tempDir('keel-memory-');
  t.teardown(cleanup);
  const flips: boolean[] = [];
  const ACCOUNTS = 1000n;
  const QUEUE = 20_000;
  const engines: Engine[] = [];
  t.teardown(async () => {
    for (const e of engines) await e.close().catch(() => undefined);
  });
  const start = async (heap_mb: number): Promise<Engine> => {
    const engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: QUEUE, shard_heap_mb: heap_mb, on_memory: (_shard, full) => flips.push(full) });
    engines.push(engine);
    return engine;
  };
  let engine = await start(160);
  const accounts = Array.from({ length: Number(ACCOUNTS) }, (_, i) => account(BigInt(i + 1)));
  const created = await engine.createAccounts(accounts.length, encodeAccountBatch(accounts));
  t.ok('status' in created && created.status.every((s) => s === 0), 'accounts created');

  const debits = new Map<bigint, bigint>();
  const credits = new Map<bigint, bigint>();
  let next_id = 1n;
  let acknowledged = 0;
  let refusal: string | null = null;
  const batch = (): TransferInput[] => {
    const events: TransferInput[] = [];
    for (let i = 0; i < 8190; i++) {
      const debit = 1n + (next_id % ACCOUNTS);
      const credit = 1n + ((next_id * 7n + 3n) % ACCOUNTS);
      events.push(transfer(next_id++, debit, credit === debit ? 1n + (credit % ACCOUNTS) : credit, 1n + (next_id % 5n), { user_data_64: next_id }));
    }
    return events;
  };
  // Two batches in flight at a time (under the queue bound), so that requests arrive while the
  // shard is busy; 160 MiB fills within about 250,000 transfers, and 100 rounds would be 1.6 million.
  for (let round = 0; round < 100 && refusal === null; round++) {
    const sent = [batch(), batch()];
    const results = await Promise.all(sent.map((events) => engine.createTransfers(events.length, encodeTransferBatch(events))));
    for (let k = 0; k < sent.length; k++) {
      const result = results[k];
      if ('error' in result) {
        refusal = `${result.error}: ${result.message}`;
        continue;
      }
      if (!('status' in result) || !result.status.every((s) => s === CreateTransferStatus.created)) throw new Error(`round ${round}: ${JSON.stringify(result)}`);
      for (const e of sent[k]) {
        debits.set(e.debit_account_id, (debits.get(e.debit_account_id) ?? 0n) + e.amount);
        credits.set(e.credit_account_id, (credits.get(e.credit_account_id) ?? 0n) + e.amount);
      }
      acknowledged += sent[k].length;
    }
  }
  t.match(refusal, /^busy: shard 0 is at its memory capacity \(\d+ MiB live of 160 MiB\).*--shard-heap-mb/, 'writes are refused with why and what to do');
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

  // The same limit: the shard measures itself after replay, so its very first write is refused.
  engine = await start(160);
  const first = await engine.createTransfers(1, encodeTransferBatch([transfer(next_id, 1n, 2n, 1n)]));
  t.match('error' in first ? `${first.error}: ${first.message}` : 'applied', /^busy: shard 0 is at its memory capacity/, 'refused from the first request after a restart at the same limit');
  await check('after a restart at the same limit');
  await engine.close();

  // More memory: the shard replays everything and takes writes again.
  engine = await start(512);
  await check('after a restart with 512 MiB');
  const again = await engine.createTransfers(1, encodeTransferBatch([transfer(next_id, 1n, 2n, 1n)]));
  t.same('status' in again ? again.status : again, [CreateTransferStatus.created], 'writes are taken again');
});
