// A follower takes the leader's log entries exactly as the leader stored them (the primitive that
// replication across centers ships, docs/replication.md): its state ends byte-identical to the
// leader's, it survives its own restart, and it refuses, changing nothing, an entry that does not
// follow its log: a resend, a gap, corrupted bytes, an older epoch, or a diverged chain.

import t from 'tap';
import { join } from 'node:path';
import { Shard } from '../src/shard/shard.ts';
import { LogOp, encodeEntry } from '../src/storage/log.ts';
import { AccountFlags, TransferFlags } from '../src/ledger/types.ts';
import { account, pending, post, transfer } from './support/builders.ts';
import { tempDir } from './support/shard-helpers.ts';

/** Appends the leader's entry and applies it at once, as a follower does once it is committed. */
function applyStored(follower: Shard, bytes: Uint8Array): Promise<number> {
  const durable = follower.appendReplica(bytes);
  follower.applyThrough(follower.head_position);
  return durable;
}

t.test('a follower applying the stored entries ends identical to the leader, and refuses what does not follow', async (t) => {
  const { dir, cleanup } = tempDir('keel-replica-');
  t.teardown(cleanup);
  const leader = Shard.open({ dir: join(dir, 'leader'), pulse: false });
  let follower = Shard.open({ dir: join(dir, 'follower'), pulse: false });
  await leader.createAccounts([account(1n), account(2n, { flags: AccountFlags.history }), account(3n, { flags: AccountFlags.debits_must_not_exceed_credits })]);
  await leader.createTransfers([transfer(10n, 1n, 2n, 100n), pending(11n, 2n, 1n, 40n), transfer(12n, 3n, 1n, 5n)]);
  await leader.createTransfers([post(13n, 11n, 30n), transfer(14n, 1n, 2n, 1n, { flags: TransferFlags.linked }), transfer(15n, 3n, 2n, 9n)]);

  const entries = leader.storedEntries(1, 100);
  t.equal(entries.length, leader.head_position, 'every entry is shipped');
  for (const bytes of entries) await applyStored(follower, bytes);
  t.equal(follower.stateHash(), leader.stateHash(), 'the follower is byte-identical to the leader');
  t.same(await follower.getAccountBalances({ account_id: 2n, user_data_64: 0n, user_data_32: 0, code: 0, timestamp_min: 0n, timestamp_max: 0n, limit: 10, flags: 3 }), await leader.getAccountBalances({ account_id: 2n, user_data_64: 0n, user_data_32: 0, code: 0, timestamp_min: 0n, timestamp_max: 0n, limit: 10, flags: 3 }), 'history too');

  const before = follower.stateHash();
  t.throws(() => applyStored(follower, entries[1]), { code: 'out_of_order' }, 'a resend of an applied entry');
  await leader.createTransfers([transfer(16n, 1n, 2n, 2n)]);
  await leader.createTransfers([transfer(17n, 1n, 2n, 3n)]);
  const [next, after_next] = leader.storedEntries(follower.head_position + 1, 2);
  t.throws(() => applyStored(follower, after_next), { code: 'out_of_order' }, 'a gap');
  const corrupt = Buffer.from(next);
  corrupt[corrupt.length - 1] ^= 0xff;
  t.throws(() => applyStored(follower, corrupt), { code: 'log_corrupt' }, 'corrupted bytes');
  const stale = encodeEntry(follower.head_position + 1, 0, LogOp.pulse, 1n, 0, Buffer.alloc(0), 0);
  t.throws(() => applyStored(follower, stale), { code: 'stale_epoch' }, 'an older epoch');
  const diverged = encodeEntry(follower.head_position + 1, 1, LogOp.pulse, 1n, 0, Buffer.alloc(0), 12345);
  t.throws(() => applyStored(follower, diverged), { code: 'not_chained' }, 'an entry of another history');
  t.equal(follower.stateHash(), before, 'none of them changed anything');

  await applyStored(follower, next);
  await applyStored(follower, after_next);
  t.equal(follower.stateHash(), leader.stateHash(), 'and it goes on with the right ones');

  await follower.close();
  follower = Shard.open({ dir: join(dir, 'follower'), pulse: false });
  t.equal(follower.stateHash(), leader.stateHash(), 'the same after the follower restarts from its own log');
  await follower.close();
  await leader.close();
});

t.test('a follower applies only what is committed, also after its restart (defer_tail)', async (t) => {
  const { dir, cleanup } = tempDir('keel-replica-defer-');
  t.teardown(cleanup);
  const leader = Shard.open({ dir: join(dir, 'leader'), pulse: false });
  const options = { dir: join(dir, 'follower'), pulse: false, replicated: true, defer_tail: true };
  let follower = Shard.open(options);
  await leader.createAccounts([account(1n), account(2n)]);
  const committed = leader.stateHash();
  await leader.createTransfers([transfer(10n, 1n, 2n, 100n)]);
  const [first, second] = leader.storedEntries(1, 10);
  const empty = follower.stateHash();
  await follower.appendReplica(first);
  await follower.appendReplica(second);
  t.equal(follower.stateHash(), empty, 'appended and durable, but nothing applied before a commit position');
  follower.setCommitted(1);
  t.equal(follower.stateHash(), committed, 'a commit position applies up to it, no further');
  await follower.close();
  follower = Shard.open(options);
  t.equal(follower.stateHash(), committed, 'after a restart: the committed state (its checkpoint); the tail past it waits for the leader again (a failover may discard it)');
  t.equal(follower.appliedHead().position, 1);
  follower.setCommitted(2);
  t.equal(follower.stateHash(), leader.stateHash(), 'and is applied once the leader says it is committed');
  follower.promote(2);
  t.equal(follower.stateHash(), leader.stateHash(), 'a promotion applies whatever was left');
  await follower.close();
  await leader.close();
});
