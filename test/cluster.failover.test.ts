// Active centers (docs/replication.md), three `keel start` processes and a real etcd on loopback:
// kill -9 of the leader under continuous load. Writes resume on an in-sync follower (the measured
// gap is printed; bench/RESULTS.md has the figures), no acknowledged transfer is lost, and the
// killed center comes back as a follower, truncates what it never committed, catches up and
// rejoins the in-sync set, ending with the same log and state as the others.

import t from 'tap';
import { startCluster } from './support/cluster.ts';
import { Bank, compareLogs, leadersByEpoch, verify } from './support/bank.ts';

const SHARDS = 2;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test('kill -9 of the leader under load: writes resume on a follower, nothing acknowledged is lost, the old leader rejoins', async (t) => {
  const cluster = await startCluster({ shards: SHARDS });
  t.teardown(() => cluster.stop());
  const first = await cluster.waitLeader();
  const bank = new Bank(cluster, 1);
  await bank.open();
  let stop = false;
  const load = bank.run({ lanes: 4, batch: 10, stop: () => stop });
  await sleep(2_000);
  t.ok(bank.count_by('acked') > 0, `transfers acknowledged before the kill (${bank.count_by('acked')})`);

  const killed_at = Date.now();
  await cluster.kill(first);
  const second = await cluster.waitLeader({ not: first });
  t.not(second, first, `${second} took over from ${first}`);
  const state = await cluster.state();
  t.ok(state.isr.includes(second), 'the new leader was in sync');
  const leading = new RegExp(`"epoch":${state.epoch},"isr":\\[[^\\]]*\\],"in_place":`);
  for (let waited = 0; !leading.test(cluster.center(second).history) && waited < 20_000; waited += 50) await sleep(50);
  t.match(cluster.center(second).history, new RegExp(`"epoch":${state.epoch},"isr":\\[[^\\]]*\\],"in_place":true`), 'it was promoted in place (no engine restart)');
  // Machines are noisy (bench/ measures failover time): here, writes must resume at all.
  const deadline = Date.now() + 30_000;
  while (!bank.acked_at.some((at) => at > killed_at) && Date.now() < deadline) await sleep(50);
  const resumed = bank.acked_at.find((at) => at > killed_at);
  t.ok(resumed !== undefined, 'writes resumed after the kill');
  await sleep(1_000);
  t.comment(`failover: last acknowledgement before the kill to the first after: ${(resumed ?? 0) - (bank.acked_at.filter((at) => at <= killed_at).pop() ?? killed_at)} ms`);

  cluster.start(first);
  await cluster.center(first).url;
  await sleep(1_000);
  stop = true;
  await load;
  await bank.close();
  const rejoined = await cluster.waitIsr(3);
  t.same(rejoined.isr, ['a', 'b', 'c'], 'the restarted center caught up and is back in the in-sync set');

  const verified = await verify(cluster, bank, ['a', 'b', 'c']);
  t.same(verified.problems, [], 'every center holds every acknowledged transfer, no failed one, balances conserved and equal');
  t.ok(verified.acked > 0, `${verified.acked} acknowledged, ${verified.unknown_applied} unknown applied, ${verified.unknown_not_applied} unknown not applied, ${verified.failed} failed`);

  await Promise.all(cluster.centers.map((c) => cluster.kill(c.name)));
  t.same(await compareLogs(cluster, SHARDS), [], 'every shard has the same log head and state hash on every center');
  for (const [epoch, leaders] of leadersByEpoch(cluster, cluster.centers.map((c) => c.history))) {
    t.equal(leaders.size, 1, `epoch ${epoch} had one leader (${[...leaders].join(', ')})`);
  }
});
