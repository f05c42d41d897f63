// Active centers (docs/replication.md): followers that die and come back. Under load, a killed
// follower leaves the in-sync set (writes go on with the other two), restarts, catches up from
// the leader and rejoins; a follower whose data directory was wiped rebuilds from the leader's
// log and rejoins. Every center ends with the same log and state; nothing acknowledged is lost.

import t from 'tap';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster } from './support/cluster.ts';
import { connect, transferStatusName } from '../src/client/index.ts';
import { Bank, compareLogs, verify } from './support/bank.ts';
import { TOKENS_FILE } from '../src/gateway/tokens.ts';
import type { ClusterStatus } from '../src/cli/cluster.ts';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
function runKeel(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import=tsx', MAIN, ...argv], (error, stdout, stderr) => resolve({ code: error === null ? 0 : Number(error.code ?? 1), stdout, stderr }));
  });
}

const SHARDS = 2;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test('a killed follower and a wiped follower catch up from the leader and rejoin the in-sync set', async (t) => {
  const cluster = await startCluster({ shards: SHARDS });
  t.teardown(() => cluster.stop());
  const leader = await cluster.waitLeader();
  const [first, second] = cluster.centers.map((c) => c.name).filter((n) => n !== leader);
  const bank = new Bank(cluster, 3);
  await bank.open();
  let stop = false;
  const load = bank.run({ lanes: 3, batch: 10, stop: () => stop });
  await sleep(1_000);

  await cluster.kill(first);
  const shrunk = await cluster.waitIsr(2, 30_000, [first]);
  t.notOk(shrunk.isr.includes(first), `the killed follower ${first} left the in-sync set`);
  const acked_while_down = bank.count_by('acked');
  await sleep(1_500);
  t.ok(bank.count_by('acked') > acked_while_down, 'writes go on with two centers in sync');
  cluster.start(first);
  const back = await cluster.waitIsr(3);
  t.ok(back.isr.includes(first), `${first} caught up and rejoined`);
  t.equal(back.leader, leader, 'leadership did not move');

  await cluster.kill(second);
  await cluster.waitIsr(2, 30_000, [second]);
  // Wiped: everything but the tokens file (an operator restoring a machine from nothing).
  for (const entry of readdirSync(cluster.center(second).data)) if (entry !== TOKENS_FILE) rmSync(join(cluster.center(second).data, entry), { recursive: true, force: true });
  await sleep(1_000);
  cluster.start(second);
  const rebuilt = await cluster.waitIsr(3);
  t.ok(rebuilt.isr.includes(second), `the wiped ${second} rebuilt from the leader and rejoined`);
  t.match(cluster.center(leader).history, new RegExp(`"follower":"${second}","agree":\\[0,0\\]`), 'from an empty log');
  await sleep(500);
  stop = true;
  await load;
  await bank.close();

  // Any door: a follower's gateway hands writes to the leader.
  for (const follower of [first, second]) {
    const door = await connect({ url: await cluster.center(follower).url, token: cluster.token, reconnect: false, heartbeat_ms: 0 });
    const id = follower === first ? 7_000_001n : 7_000_002n;
    const result = await door.createTransfers([{ id, debit_account_id: 1n, credit_account_id: 2n, amount: 3n, ledger: 1, code: 1 }]);
    t.same(result.status, [0], `a transfer sent to follower ${follower} is created by the leader`);
    const again = await door.createTransfers([{ id, debit_account_id: 1n, credit_account_id: 2n, amount: 3n, ledger: 1, code: 1 }]);
    t.same(again.status.map(transferStatusName), ['exists'], 'and resending it is answered exists, not applied twice');
    bank.records.set(id, { amount: 3n, debit: 1n, credit: 2n, outcome: 'acked' });
    await door.close();
  }

  // The operator's view: `keel cluster status --json` (etcd plus each center's /metrics).
  const report = await runKeel(['cluster', 'status', '--json', '--etcd', `http://${cluster.etcd.endpoint}`, '--cluster', cluster.name]);
  t.equal(report.code, 0, `keel cluster status exits 0 when healthy (${report.stderr})`);
  const status = JSON.parse(report.stdout) as ClusterStatus;
  t.equal(status.health, 'ok');
  t.same(status.groups.map((g) => [g.leader, g.leader_live, g.isr]), [[leader, true, ['a', 'b', 'c']]], 'the shard map: one group, its leader and in-sync set');
  t.same(status.centers.map((c) => [c.center, c.alive, c.in_sync, c.role]), cluster.centers.map((c) => [c.name, true, true, c.name === leader ? 'leader' : 'follower']), 'every center alive, in sync, in its role');
  t.ok(status.centers.every((c) => c.commit !== null && c.commit.length === SHARDS), 'commit positions per shard from every center');
  t.ok(status.centers.filter((c) => c.center !== leader).every((c) => c.lag_seconds !== null), 'the leader reports each follower\'s lag');

  const verified = await verify(cluster, bank, cluster.centers.map((c) => c.name));
  t.same(verified.problems, [], 'every acknowledged transfer on every center, balances conserved and equal');
  t.comment(`${verified.acked} acknowledged, ${verified.unknown_applied + verified.unknown_not_applied} unknown`);
  await Promise.all(cluster.centers.map((c) => cluster.kill(c.name)));
  t.same(await compareLogs(cluster, SHARDS), [], 'the same log head and state on every center');
});
