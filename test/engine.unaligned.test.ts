// Event bodies that sit at an odd offset of their buffer (as msgpack hands over a forwarded write's
// bytes) split across shards exactly like aligned ones: the engine copies them before viewing them
// as u32 words (Buffer#slice would be a view at the same, unaligned, offset).

import t from 'tap';
import { Engine } from '../src/shard/engine.ts';
import { shardOfAccount } from '../src/shard/partition.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import { account, transfer } from './support/builders.ts';
import { tempDir } from './support/shard-helpers.ts';

function unaligned(bytes: Uint8Array): Buffer {
  const holder = Buffer.alloc(bytes.byteLength + 1);
  holder.set(bytes, 1);
  return holder.subarray(1);
}

t.test('a split request whose bytes are not u32-aligned', async (t) => {
  const { dir, cleanup } = tempDir('keel-unaligned-');
  t.teardown(cleanup);
  const engine = await Engine.start({ data_dir: dir, shards: 2, queue_events_max: 100_000 });
  t.teardown(() => engine.close());
  // Accounts on both shards, and transfers that each stay on one shard: the request is split.
  const ids = Array.from({ length: 40 }, (_, k) => BigInt(k + 1));
  const on = (shard: number): bigint[] => ids.filter((id) => shardOfAccount(id, 2) === shard);
  const [a0, b0] = on(0);
  const [a1, b1] = on(1);
  const accounts = encodeAccountBatch(ids.map((id) => account(id)));
  const created = await engine.createAccounts(ids.length, unaligned(accounts));
  t.ok('status' in created && created.status.every((s) => s === 0), 'accounts created on both shards');
  const transfers = encodeTransferBatch([transfer(1000n, a0, b0, 5n), transfer(1001n, a1, b1, 7n)]);
  const result = await engine.createTransfers(2, unaligned(transfers));
  t.ok('status' in result && result.status.every((s) => s === 0), `created on both shards (${JSON.stringify('status' in result ? result.status : result)})`);
  const balances = await engine.lookupAccounts([a0, b0, a1, b1]);
  t.ok('accounts' in balances);
  if ('accounts' in balances) t.same(balances.accounts.map((a) => [a.debits_posted, a.credits_posted]), [[5n, 0n], [0n, 5n], [7n, 0n], [0n, 7n]]);
});
