// Active centers (docs/replication.md): a leader frozen (SIGSTOP) past its etcd lease while it holds
// appended but uncommitted entries. A successor takes over; when the frozen leader resumes it
// acknowledges nothing, steps down, and its uncommitted entries are truncated away: they exist on
// no center, and every center ends with the same log and state.

import t from 'tap';
import { connect, KeelError } from '../src/client/index.ts';
import { startCluster } from './support/cluster.ts';
import { Bank, compareLogs, leadersByEpoch, verify } from './support/bank.ts';

const SHARDS = 2;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test('a zombie leader acknowledges nothing after a successor exists, and its uncommitted entries are discarded', async (t) => {
  const cluster = await startCluster({ shards: SHARDS });
  t.teardown(() => cluster.stop());
  const zombie = await cluster.waitLeader();
  const bank = new Bank(cluster, 2);
  await bank.open();
  let stop = false;
  let load = bank.run({ lanes: 2, batch: 10, stop: () => stop });
  await sleep(1_000);
  stop = true;
  await load;
  const state = await cluster.state();

  // Followers can no longer reach the leader: what it appends now cannot commit.
  const others = cluster.centers.map((c) => c.name).filter((n) => n !== zombie);
  for (const other of others) cluster.links.get(`${other}>${zombie}`)!.setCut(true);
  const direct = await connect({ url: await cluster.center(zombie).url, token: cluster.token, reconnect: false, heartbeat_ms: 0, timeout_ms: 30_000 });
  const zombie_ids = Array.from({ length: 20 }, (_, k) => 9_000_000n + BigInt(k));
  const outcomes = zombie_ids.map((id, k) =>
    direct
      .createTransfers([{ id, debit_account_id: 1n, credit_account_id: 2n + BigInt(k % 6), amount: 1n, ledger: 1, code: 1 }], { timeout_ms: 30_000 })
      .then((result) => `acknowledged (status ${result.status[0]})`, (error: unknown) => (error instanceof KeelError ? `error ${error.code}` : String(error))),
  );
  await sleep(300); // appended and durable on the leader, well before it would drop its followers (1.5 s)
  cluster.center(zombie).child!.kill('SIGSTOP');
  const frozen_at = Date.now();

  const successor = await cluster.waitLeader({ not: zombie, min_epoch: state.epoch + 1 });
  t.comment(`${successor} took over ${Date.now() - frozen_at} ms after ${zombie} froze`);
  for (const other of others) cluster.links.get(`${other}>${zombie}`)!.setCut(false);
  stop = false;
  load = bank.run({ lanes: 2, batch: 10, stop: () => stop });
  await sleep(1_000);

  cluster.center(zombie).child!.kill('SIGCONT');
  const answered = await Promise.all(outcomes);
  t.same(answered.filter((a) => a.startsWith('acknowledged')), [], `the zombie acknowledged none of its writes (${[...new Set(answered)].join(', ')})`);
  await sleep(1_000);
  stop = true;
  await load;
  await direct.close();
  await bank.close();

  await cluster.waitIsr(3);
  t.match(cluster.center(zombie).history, /truncated a divergent log tail/, 'the zombie truncated the entries it had appended');
  t.match(cluster.center(zombie).history, /stepping down/, 'and stepped down');
  const verified = await verify(cluster, bank, cluster.centers.map((c) => c.name));
  t.same(verified.problems, [], 'every acknowledged transfer everywhere, balances conserved and equal');
  if (verified.problems.length > 0) for (const c of cluster.centers) t.comment(`${c.name}:\n${c.history.split('\n').filter((l) => !l.includes('"session"')).slice(-60).join('\n')}`);
  for (const c of cluster.centers) {
    const keel = await connect({ url: await c.url, token: cluster.token, reconnect: false, heartbeat_ms: 0 });
    t.same(await keel.lookupTransfers(zombie_ids), [], `none of the zombie's entries exists on ${c.name}`);
    await keel.close();
  }
  await Promise.all(cluster.centers.map((c) => cluster.kill(c.name)));
  t.same(await compareLogs(cluster, SHARDS), [], 'the same log head and state on every center');
  for (const [epoch, leaders] of leadersByEpoch(cluster, cluster.centers.map((c) => c.history))) t.equal(leaders.size, 1, `epoch ${epoch}: one leader`);
});
