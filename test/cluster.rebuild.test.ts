// Active centers (docs/replication.md, catch-up): a follower that was away while the leader pruned
// its log past the follower's head cannot catch up from entries. It fetches the leader's last
// checkpoint (a consistent LMDB copy of committed state) shard by shard, starts its log at the
// entry that checkpoint summarises, takes the rest of the log as usual, and rejoins the in-sync
// set with the same log head and state as the others, and replicates what follows. Checkpoints
// every 16 entries and 8 entries kept behind them make the leader prune quickly.

import t from 'tap';
import { startCluster } from './support/cluster.ts';
import { Bank, compareLogs, verify } from './support/bank.ts';

const SHARDS = 2;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test('a follower behind a pruned log rebuilds from the leader\'s checkpoint and rejoins', async (t) => {
  const cluster = await startCluster({ shards: SHARDS, env: { KEEL_CHECKPOINT_ENTRIES: '16', KEEL_LOG_RETAIN_ENTRIES: '8' } });
  t.teardown(() => cluster.stop());
  const leader = await cluster.waitLeader();
  const away = cluster.centers.map((c) => c.name).find((n) => n !== leader)!;
  const bank = new Bank(cluster, 9);
  await bank.open();
  let stop = false;
  const load = bank.run({ lanes: 2, batch: 10, stop: () => stop });
  await sleep(500);
  await cluster.kill(away);
  await cluster.waitIsr(2, 30_000, [away]);
  await sleep(3_000); // many entries: many checkpoints, and the log pruned behind them
  // The rebuild itself runs without new writes: with only 8 entries kept behind each checkpoint,
  // writes during it would prune past the copy before the follower could continue from it (with
  // the default 100,000 that window is minutes of full load).
  stop = true;
  await load;
  cluster.start(away);
  const back = await cluster.waitIsr(3, 60_000);
  t.ok(back.isr.includes(away), `${away} rejoined the in-sync set`);
  t.match(cluster.center(away).history, /rebuilding from the leader's checkpoint/, 'it had to rebuild: the leader no longer held its log');
  t.match(cluster.center(away).history, /rebuilt a shard from the leader's checkpoint/, 'and swapped the checkpoint copy in');
  t.match(cluster.center(leader).history, /sent a checkpoint copy/, 'the leader sent it');
  stop = false;
  const more = bank.run({ lanes: 2, batch: 10, stop: () => stop });
  await sleep(1_000);
  stop = true;
  await more;
  await bank.close();
  const verified = await verify(cluster, bank, cluster.centers.map((c) => c.name));
  t.same(verified.problems, [], 'every acknowledged transfer on every center, balances conserved and equal');
  t.comment(`${verified.acked} acknowledged`);
  await Promise.all(cluster.centers.map((c) => cluster.kill(c.name)));
  t.same(await compareLogs(cluster, SHARDS), [], 'the same log head and state on every center');
});
