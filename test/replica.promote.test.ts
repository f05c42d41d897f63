// In-place promotion of a follower's engine (src/shard/engine.ts `promote`, docs/replication.md):
// a cross-shard group that one of the follower's shards holds in its uncommitted tail while
// another participant lacks it was never acknowledged (the leader commits a shard past a group
// entry only once every participant's entry is held everywhere). The promoted engine cuts it,
// with what follows it on that shard, instead of trying to redo it where the state it read is
// missing; what was committed stays, and the new leader serves.

import t from 'tap';
import { join } from 'node:path';
import { Engine } from '../src/shard/engine.ts';
import { shardOfAccount } from '../src/shard/partition.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import { entryHeader } from '../src/storage/log.ts';
import { account, transfer } from './support/builders.ts';
import { tempDir } from './support/shard-helpers.ts';

t.test('promotion cuts a cross-shard group that only some shards hold, and keeps what was committed', async (t) => {
  const { dir, cleanup } = tempDir('keel-promote-');
  t.teardown(cleanup);
  const shipped: Uint8Array[][] = [[], []];
  let leader: Engine | null = null;
  leader = await Engine.start({
    data_dir: join(dir, 'leader'),
    shards: 2,
    queue_events_max: 100_000,
    replication: {
      role: 'leader',
      epoch: 1,
      on_entries: (shard, _first, entries) => {
        shipped[shard].push(...entries.map((e) => new Uint8Array(e)));
        // A leader alone: everything durable here is committed at once.
        leader?.setCommitted(shard, entryHeader(entries[entries.length - 1]).position);
      },
    },
  });
  const ids = Array.from({ length: 20 }, (_, k) => BigInt(k + 1));
  const [a0, b0] = ids.filter((id) => shardOfAccount(id, 2) === 0);
  const [a1] = ids.filter((id) => shardOfAccount(id, 2) === 1);
  t.ok('status' in (await leader.createAccounts(ids.length, encodeAccountBatch(ids.map((id) => account(id))))));
  t.ok('status' in (await leader.createTransfers(1, encodeTransferBatch([transfer(100n, a0, b0, 5n)]))), 'a transfer within shard 0');
  const before = shipped.map((entries) => entries.length);
  const cross = await leader.createTransfers(1, encodeTransferBatch([transfer(200n, a0, a1, 7n)]));
  t.ok('status' in cross && cross.status[0] === 0, 'a cross-shard transfer: a group on both shards');
  t.ok('status' in (await leader.createTransfers(1, encodeTransferBatch([transfer(300n, b0, a0, 1n)]))), 'and one more within shard 0 after it');
  await leader.close();
  t.same(shipped.map((entries, shard) => entries.length - before[shard]), [2, 1], 'shard 0 logged the group and a batch after it; shard 1 the group');

  // The follower got everything of shard 0, but shard 1's group entry never arrived; the commit
  // positions it heard stop before the group.
  const follower = await Engine.start({ data_dir: join(dir, 'follower'), shards: 2, queue_events_max: 100_000, replication: { role: 'follower', epoch: 1 } });
  t.teardown(() => follower.close());
  follower.appendReplica(0, shipped[0], 1);
  follower.appendReplica(1, shipped[1].slice(0, before[1]), 1);
  follower.setCommitted(0, before[0]);
  follower.setCommitted(1, before[1]);
  const heads = await follower.durableHeads();
  t.same(heads.map((h) => h.position), [shipped[0].length, before[1]], 'appended as shipped');

  const { cut_entries } = await follower.promote(2);
  t.equal(cut_entries, 2, 'the group entry on shard 0 and the batch after it are cut');
  const found = await follower.lookupTransfers([100n, 200n, 300n]);
  t.same('transfers' in found && found.transfers.map((x) => x.id), [100n], 'the committed transfer stays; the group and what followed it are gone');
  const balances = await follower.lookupAccounts([a0, b0, a1]);
  t.same('accounts' in balances && balances.accounts.map((x) => [x.debits_posted, x.credits_posted]), [[5n, 0n], [0n, 5n], [0n, 0n]], 'balances as committed');
  // The new leader takes writes; a leader's replies wait for its commit positions (its followers'
  // acknowledgements: here, set by hand). Transfer 200 never existed, so it is created now.
  const again = follower.createTransfers(1, encodeTransferBatch([transfer(200n, a0, a1, 7n)]));
  for (let waited = 0; waited < 50; waited++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = await follower.durableHeads();
    now.forEach((head, shard) => follower.setCommitted(shard, head.position));
  }
  const created = await again;
  t.same('status' in created && created.status, [0], 'the new leader created it');
});
