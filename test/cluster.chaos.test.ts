// Active centers (docs/replication.md), a randomized fault run in the style of Jepsen's "bank":
// clients record every transfer as acknowledged, failed or unknown while the run kill -9s and
// restarts centers, freezes them (SIGSTOP past their lease, then SIGCONT) and cuts replication
// links between them (both directions, through the test's relays). Afterwards, faults healed:
// every acknowledged transfer is on every center, no failed one anywhere, unknown ones resolved
// once or never, balances conserved and equal, every shard's log the same on every center, and
// one leader per epoch. The seed is printed; KEEL_CHAOS_SEED replays the same fault schedule
// (timings still depend on the machine), KEEL_CHAOS_MS sets the length (default 45 s).

import t from 'tap';
import { startCluster } from './support/cluster.ts';
import { Bank, compareLogs, leadersByEpoch, rng, verify } from './support/bank.ts';

const SHARDS = 2;
const SEED = Number(process.env.KEEL_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const DURATION_MS = Number(process.env.KEEL_CHAOS_MS ?? 45_000);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test(`randomized faults (seed ${SEED})`, async (t) => {
  t.comment(`seed ${SEED}: KEEL_CHAOS_SEED=${SEED} replays this schedule`);
  const random = rng(SEED);
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const between = (low: number, high: number): number => low + Math.floor(random() * (high - low));
  const cluster = await startCluster({ shards: SHARDS });
  t.teardown(async () => {
    // On failure, what each center did (its replication events), for the replay.
    if (!t.passing()) for (const c of cluster.centers) t.comment(`${c.name}:\n${c.history.split('\n').slice(-60).join('\n')}`);
    await cluster.stop();
  });
  await cluster.waitLeader();
  const bank = new Bank(cluster, SEED);
  await bank.open();
  let stop = false;
  // Half the lanes write through the leader's door, half through any center's (followers forward).
  const load = Promise.all([bank.run({ lanes: 2, batch: 8, stop: () => stop }), bank.run({ lanes: 2, batch: 8, stop: () => stop, door: 'any' })]);
  const names = cluster.centers.map((c) => c.name);
  const faults: string[] = [];
  const unexpected: string[] = [];
  const started = Date.now();
  while (Date.now() - started < DURATION_MS) {
    await sleep(between(1_000, 2_500));
    for (const c of cluster.centers) {
      if (c.child !== null && c.child.exitCode !== null && c.child.signalCode === null) unexpected.push(`${c.name} exited by itself (${c.child.exitCode}): ${c.stderr.slice(-1500)}`);
    }
    const kind = pick(['kill', 'pause', 'cut'] as const);
    const state = await cluster.state().catch(() => null);
    // Faults land on the leader half of the time: that is where they hurt.
    const victim = state !== null && state.leader !== '' && random() < 0.5 ? state.leader : pick(names);
    const hold_ms = between(500, 3_500);
    faults.push(`${Date.now() - started}ms ${kind} ${victim} ${hold_ms}ms`);
    if (kind === 'kill') {
      await cluster.kill(victim);
      await sleep(hold_ms);
      cluster.start(victim);
    } else if (kind === 'pause') {
      cluster.center(victim).child!.kill('SIGSTOP');
      await sleep(hold_ms);
      cluster.center(victim).child!.kill('SIGCONT');
    } else {
      const other = pick(names.filter((n) => n !== victim));
      cluster.links.get(`${victim}>${other}`)!.setCut(true);
      cluster.links.get(`${other}>${victim}`)!.setCut(true);
      await sleep(hold_ms);
      cluster.links.get(`${victim}>${other}`)!.setCut(false);
      cluster.links.get(`${other}>${victim}`)!.setCut(false);
    }
  }
  t.comment(`faults: ${faults.join('; ')}`);
  const healed = await cluster.waitIsr(3, 60_000).then(
    () => true,
    (error: Error) => (t.fail(`${error.message}\n${cluster.centers.map((c) => `${c.name}: ${c.stderr.slice(-2500)}`).join('\n')}`), false),
  );
  await sleep(500);
  stop = true;
  await load;
  await bank.close();
  t.same(unexpected, [], 'no center stopped on its own');
  t.ok(healed, 'every center is back in sync once the faults heal');
  t.ok(bank.count_by('acked') > 0, `transfers were acknowledged through the faults (errors: ${JSON.stringify(Object.fromEntries(bank.errors))})`);
  const verified = await verify(cluster, bank, names);
  t.same(verified.problems.slice(0, 20), [], 'every acknowledged transfer on every center, none failed present, unknown once or never, balances conserved and equal');
  t.comment(`${verified.acked} acknowledged, ${verified.failed} failed, unknown: ${verified.unknown_applied} applied and ${verified.unknown_not_applied} not`);
  await Promise.all(cluster.centers.map((c) => cluster.kill(c.name)));
  t.same(await compareLogs(cluster, SHARDS), [], 'every shard: the same log head and state hash on every center');
  for (const [epoch, leaders] of leadersByEpoch(cluster, cluster.centers.map((c) => c.history))) t.equal(leaders.size, 1, `epoch ${epoch}: one leader (${[...leaders].join(', ')})`);
});
