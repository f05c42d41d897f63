// The change feed through failovers (docs/change-feed.md, docs/replication.md): a consumer reads the
// feed from a follower while transfers are written through the leader; the leader is killed -9
// (a follower takes over), then the center the consumer reads from is killed, and the client's
// feed iterator, given every center's address, resumes with its cursor on another center. Cursors mean the same on every center (the
// same log, the same commit order), so it ends with every committed transfer exactly once, in commit
// order per shard, and never one that the cluster does not hold.

import t from 'tap';
import { orderedRuns } from './support/order.ts';
import { connect, subscribe, type FeedBatch } from '../src/client/index.ts';
import { startCluster } from './support/cluster.ts';
import { Bank, verify } from './support/bank.ts';

const SHARDS = 2;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test('a feed consumer resumes on another center across failovers, exactly once and in order', async (t) => {
  const cluster = await startCluster({ shards: SHARDS });
  t.teardown(() => cluster.stop());
  const leader = await cluster.waitLeader();
  const bank = new Bank(cluster, 5);
  await bank.open();
  let stop = false;
  const load = bank.run({ lanes: 2, batch: 10, stop: () => stop });

  const seen: bigint[] = [];
  // The client's own resume: the feed iterator with every center's address; after a lost
  // connection it resubscribes at the next one with the last cursor it received.
  const reading_from = cluster.centers.find((c) => c.name !== leader)!.name;
  const others = cluster.centers.filter((c) => c.name !== reading_from);
  const feed = subscribe({
    url: await cluster.center(reading_from).url,
    alternates: await Promise.all(others.map((c) => c.url)),
    token: cluster.token,
    reconnect: { initial_delay_ms: 50, max_delay_ms: 400 },
  });
  const consumer = (async () => {
    for await (const batch of feed as AsyncIterable<FeedBatch>) for (const transfer of batch.transfers) seen.push(transfer.id);
  })();

  await sleep(1_500);
  await cluster.kill(leader);
  await cluster.waitLeader({ not: leader });
  await sleep(1_500);
  cluster.start(leader);
  await cluster.waitIsr(3);
  const victim = reading_from;
  await cluster.kill(victim);
  await sleep(1_500);
  cluster.start(victim);
  await cluster.waitIsr(3);
  stop = true;
  await load;

  // First every center converges and holds every acknowledged transfer (verify waits for that);
  // then everything committed, in each shard's commit order (timestamp order), from the leader.
  const verified = await verify(cluster, bank, cluster.centers.map((c) => c.name));
  t.same(verified.problems, [], 'every acknowledged transfer on every center, balances conserved');
  const keel = await connect({ url: await cluster.center(await cluster.waitLeader()).url, token: cluster.token, reconnect: false, heartbeat_ms: 0 });
  const truth: bigint[] = [];
  for (let after = 0n; ; ) {
    const page = await keel.queryTransfers({ limit: 8190, timestamp_min: after + 1n });
    if (page.length === 0) break;
    truth.push(...page.map((x) => x.id));
    after = page.at(-1)!.timestamp;
  }
  await keel.close();
  for (let waited = 0; seen.length < truth.length && waited < 20_000; waited += 50) await sleep(50);
  feed.close();
  await consumer;

  t.ok(truth.length > 500, `${truth.length} transfers committed across a failover and two kills`);
  t.equal(new Set(seen).size, seen.length, 'no transfer delivered twice');
  const byId = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);
  t.same([...seen].sort(byId), [...truth].sort(byId), 'exactly the committed transfers');
  const runs = orderedRuns(seen, truth);
  t.ok(runs <= SHARDS, `in commit order per shard (${runs} ordered run(s) over ${SHARDS} shards)`);
  await bank.close();
});
