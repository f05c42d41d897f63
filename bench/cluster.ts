// Active centers on one machine: three `keel start` processes and a throwaway etcd on loopback
// (the tests' harness, test/support/cluster.ts), so every center shares the same cores and disk.
//
//   npm run bench:cluster -- [--centers 3] [--shards 1] [--accounts 10000] [--batches 60]
//                            [--batch 8190] [--inflight 2] [--failovers 10] [--json]
//
// Throughput: `--batches` batches of `--batch` transfers sent to the leader, `--inflight` at a
// time; every reply is a commit (held by every in-sync center). The leader's follower lag is
// scraped from its /metrics meanwhile. Failover: under a light load, the leader is killed -9
// `--failovers` times (restarted after each, until all are in sync again); each failover time is
// the gap from the last acknowledged write before the kill to the first after. Needs etcd
// (Debian's etcd-server). Exit 1 if any transfer fails or a balance is off.

import { parseArgs } from 'node:util';
import { connect, type KeelClient } from '../src/client/index.ts';
import { parseSamples } from '../src/cli/status.ts';
import { startCluster, type TestCluster } from '../test/support/cluster.ts';
import { Bank } from '../test/support/bank.ts';

const { values } = parseArgs({
  options: {
    centers: { type: 'string', default: '3' },
    shards: { type: 'string', default: '1' },
    accounts: { type: 'string', default: '10000' },
    batches: { type: 'string', default: '60' },
    batch: { type: 'string', default: '8190' },
    inflight: { type: 'string', default: '2' },
    failovers: { type: 'string', default: '10' },
    json: { type: 'boolean', default: false },
  },
});
const centers = Number(values.centers);
const shards = Number(values.shards);
const accounts = Number(values.accounts);
const batches = Number(values.batches);
const batch_size = Number(values.batch);
const inflight = Number(values.inflight);
const failovers = Number(values.failovers);
if (!(centers >= 2 && centers <= 5)) throw new Error('--centers must be 2..5');
if (!(batch_size >= 1 && batch_size <= 8190 && accounts >= 2 && batches >= 0 && inflight >= 1 && failovers >= 0)) throw new Error('bad options');
const say = (line: string): void => {
  if (!values.json) process.stderr.write(`${line}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function leaderClient(cluster: TestCluster): Promise<{ name: string; keel: KeelClient }> {
  const name = await cluster.waitLeader();
  const keel = await connect({ url: await cluster.center(name).url, token: cluster.token, reconnect: false, heartbeat_ms: 0, timeout_ms: 60_000 });
  return { name, keel };
}

async function metricsUrl(cluster: TestCluster, name: string): Promise<string | null> {
  const match = /"msg":"metrics listening".*?"url":"([^"]+)"|metrics\s+(http:\/\/\S+)/.exec(cluster.center(name).stdout);
  return match === null ? null : (match[1] ?? match[2]);
}

async function throughput(cluster: TestCluster): Promise<Record<string, number>> {
  const { name, keel } = await leaderClient(cluster);
  for (let first = 1; first <= accounts; first += 8190) {
    const ids = Array.from({ length: Math.min(8190, accounts - first + 1) }, (_, k) => BigInt(first + k));
    for (;;) {
      try {
        const r = await keel.createAccounts(ids.map((id) => ({ id, ledger: 1, code: 1 })));
        if (r.status.some((s) => s !== 0)) throw new Error(`accounts: ${r.status.find((s) => s !== 0)}`);
        break;
      } catch (error) {
        if ((error as { code?: string }).code !== 'unavailable') throw error;
        await sleep(200);
      }
    }
  }
  const url = await metricsUrl(cluster, name);
  let lag_seconds_max = 0;
  let lag_entries_max = 0;
  let scraping = true;
  const scrape = (async () => {
    while (scraping && url !== null) {
      try {
        for (const { name: metric, value } of parseSamples(await (await fetch(url)).text())) {
          if (metric === 'keel_cluster_replica_lag_seconds') lag_seconds_max = Math.max(lag_seconds_max, value);
          if (metric === 'keel_cluster_replica_lag_entries') lag_entries_max = Math.max(lag_entries_max, value);
        }
      } catch {
        // the next scrape
      }
      await sleep(250);
    }
  })();
  let next_id = 1n << 40n;
  const make = (): Array<{ id: bigint; debit_account_id: bigint; credit_account_id: bigint; amount: bigint; ledger: number; code: number }> =>
    Array.from({ length: batch_size }, () => {
      const debit = BigInt(1 + Math.floor(Math.random() * accounts));
      let credit = BigInt(1 + Math.floor(Math.random() * accounts));
      if (credit === debit) credit = (debit % BigInt(accounts)) + 1n;
      return { id: next_id++, debit_account_id: debit, credit_account_id: credit, amount: 1n, ledger: 1, code: 1 };
    });
  const prepared = Array.from({ length: batches }, make);
  const latencies: number[] = [];
  let sent = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (sent < prepared.length) {
        const batch = prepared[sent++];
        const t0 = performance.now();
        const r = await keel.createTransfers(batch);
        latencies.push(performance.now() - t0);
        if (r.status.some((s) => s !== 0)) throw new Error(`a transfer failed: status ${r.status.find((s) => s !== 0)}`);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  scraping = false;
  await scrape;
  // Balances: every transfer moved 1 unit; the leader's totals must match what was sent.
  let debits = 0n;
  for (let first = 1; first <= accounts; first += 8190) {
    const ids = Array.from({ length: Math.min(8190, accounts - first + 1) }, (_, k) => BigInt(first + k));
    for (const a of await keel.lookupAccounts(ids)) debits += a.debits_posted;
  }
  await keel.close();
  if (debits !== BigInt(batches * batch_size)) throw new Error(`balances: ${debits} debited, ${batches * batch_size} sent`);
  latencies.sort((a, b) => a - b);
  const p = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    transfers: batches * batch_size,
    transfers_per_s: Math.round((batches * batch_size) / seconds),
    batch_ms_p50: Math.round(p(0.5)),
    batch_ms_p99: Math.round(p(0.99)),
    replica_lag_seconds_max: Number(lag_seconds_max.toFixed(3)),
    replica_lag_entries_max: lag_entries_max,
  };
}

async function failoverTimes(cluster: TestCluster): Promise<Record<string, number>> {
  const bank = new Bank(cluster, 7);
  await bank.open();
  let stop = false;
  const load = bank.run({ lanes: 2, batch: 10, stop: () => stop });
  const gaps: number[] = [];
  for (let k = 0; k < failovers; k++) {
    await cluster.waitIsr(centers, 60_000);
    await sleep(1_000);
    const leader = await cluster.waitLeader();
    const killed_at = Date.now();
    await cluster.kill(leader);
    const deadline = Date.now() + 30_000;
    while (!bank.acked_at.some((at) => at > killed_at) && Date.now() < deadline) await sleep(20);
    const after = bank.acked_at.find((at) => at > killed_at);
    const before = bank.acked_at.filter((at) => at <= killed_at).pop() ?? killed_at;
    if (after === undefined) throw new Error(`writes did not resume within 30 s of killing ${leader}`);
    gaps.push(after - before);
    say(`  failover ${k + 1}/${failovers}: killed ${leader}, writes resumed after ${after - before} ms`);
    cluster.start(leader);
  }
  stop = true;
  await load;
  await bank.close();
  gaps.sort((a, b) => a - b);
  return { failovers: gaps.length, failover_ms_p50: gaps[Math.floor(gaps.length / 2)] ?? 0, failover_ms_max: gaps[gaps.length - 1] ?? 0 };
}

const names = ['a', 'b', 'c', 'd', 'e'].slice(0, centers);
say(`starting etcd and ${centers} centers (${shards} shard(s) each) on this machine...`);
const cluster = await startCluster({ names, shards, min_insync: Math.min(2, centers) });
try {
  await cluster.waitLeader();
  await cluster.waitIsr(centers, 60_000);
  const result: Record<string, number | string> = { centers, shards, batch: batch_size, inflight };
  if (batches > 0) {
    say(`throughput: ${batches} batches of ${batch_size} to the leader, ${inflight} in flight...`);
    Object.assign(result, await throughput(cluster));
    say(`  ${result.transfers_per_s} transfers/s committed on ${centers} centers; batch p50 ${result.batch_ms_p50} ms, p99 ${result.batch_ms_p99} ms; follower lag max ${result.replica_lag_seconds_max} s (${result.replica_lag_entries_max} entries)`);
  }
  if (failovers > 0) {
    say(`failover: killing the leader ${failovers} times under load...`);
    Object.assign(result, await failoverTimes(cluster));
    say(`  failover time p50 ${result.failover_ms_p50} ms, max ${result.failover_ms_max} ms`);
  }
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await cluster.stop();
}
