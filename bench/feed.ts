// Change-feed benchmark: feed throughput and end-to-end lag (commit to push) under a transfer load.
//
//   npm run bench:feed -- --accounts 1000 --transfers 500000 --batch 8190 [--subscribers 1] [--shards 1] [--json]
//
// Starts an engine and its gateway in this process on a temporary data directory, subscribes
// `subscribers` feed consumers from 'latest' (client library iterator, own connections), drives the
// transfer load through the client library, and waits until every consumer has received every
// created transfer. Lag is the consumer's clock at receipt minus the transfer's engine timestamp
// (both read from this machine's clock), so it covers apply, fsync, the feed's pull and the socket.
// Checks at the end that each consumer got exactly the created transfers, once each, in commit
// order per shard (a transfer is served by its debit account's shard; shards have no order
// between them).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'hdr-histogram-js';
import { Engine } from '../src/shard/engine.ts';
import { TokenStore } from '../src/gateway/tokens.ts';
import { startGateway } from '../src/gateway/server.ts';
import { createLogger } from '../src/gateway/log.ts';
import { connect, subscribe } from '../src/client/index.ts';
import { shardOfAccount } from '../src/shard/partition.ts';

const { values } = parseArgs({
  options: {
    accounts: { type: 'string', default: '1000' },
    transfers: { type: 'string', default: '500000' },
    batch: { type: 'string', default: '8190' },
    subscribers: { type: 'string', default: '1' },
    shards: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
  },
});
const accounts = Number(values.accounts);
const transfers_total = Number(values.transfers);
const batch_size = Number(values.batch);
const subscribers = Number(values.subscribers);
const shards = Number(values.shards);
if (!(Number.isInteger(shards) && shards >= 1 && shards <= 16)) throw new Error('--shards must be 1..16');
if (!(batch_size >= 1 && batch_size <= 8190)) throw new Error('--batch must be 1..8190');
if (!(subscribers >= 1 && subscribers <= 16)) throw new Error('--subscribers must be 1..16');

const dir = mkdtempSync(join(tmpdir(), 'keel-bench-feed-'));
const engine = await Engine.start({ data_dir: dir, shards, queue_events_max: 16 * 8190 });
const opened = TokenStore.open(dir);
if (!opened.ok) throw new Error(opened.message);
const created_token = opened.value.create('bench', ['admin']);
if (!created_token.ok) throw new Error(created_token.message);
const token = created_token.value.token;
const gateway = await startGateway({ engine, tokens: opened.value, port: 0, logger: createLogger('silent') });
const url = gateway.address.url;

const keel = await connect({ url, token, reconnect: false });
for (let start = 1; start <= accounts; start += 8190) {
  const count = Math.min(8190, accounts - start + 1);
  await keel.createAccounts(Array.from({ length: count }, (_, i) => ({ id: BigInt(start + i), ledger: 1, code: 1 })));
}

const lag = build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
const received: bigint[][] = Array.from({ length: subscribers }, () => []);
const feeds = Array.from({ length: subscribers }, () => subscribe({ url, token, from: 'latest' }));
await new Promise((resolve) => setTimeout(resolve, 200)); // let the subscriptions start

const created_ids: bigint[] = [];
const created_debits: Array<[bigint, bigint]> = [];
let consumers_done = 0;
const consumers = feeds.map(async (feed, k) => {
  for await (const batch of feed) {
    const now_us = Math.round((performance.timeOrigin + performance.now()) * 1000);
    for (const transfer of batch.transfers) {
      received[k].push(transfer.id);
      if (k === 0) lag.recordValue(Math.max(1, now_us - Number(transfer.timestamp / 1000n)));
    }
    if (received[k].length >= transfers_total) break;
  }
  consumers_done++;
});

let seed = 7;
const random = (): number => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x1_0000_0000;
};
const started = performance.now();
let next_id = 1n;
for (let sent = 0; sent < transfers_total; ) {
  const count = Math.min(batch_size, transfers_total - sent);
  const batch = Array.from({ length: count }, () => {
    const debit = 1 + Math.floor(random() * accounts);
    const credit = (debit % accounts) + 1;
    return { id: next_id++, debit_account_id: BigInt(debit), credit_account_id: BigInt(credit), amount: 1n, ledger: 1, code: 1 };
  });
  const result = await keel.createTransfers(batch);
  batch.forEach((transfer, i) => {
    if (result.status[i] !== 0) return;
    created_ids.push(transfer.id);
    created_debits.push([transfer.id, transfer.debit_account_id]);
  });
  sent += count;
  if (!values.json) process.stderr.write(`\r${sent.toLocaleString()} / ${transfers_total.toLocaleString()} transfers sent, ${consumers_done}/${subscribers} consumers done`);
}
const load_s = (performance.now() - started) / 1000;
await Promise.all(consumers);
const feed_s = (performance.now() - started) / 1000;
if (!values.json) process.stderr.write('\n');

// Per shard: the created transfers of that shard, in the order they were created (= commit order).
const shard_of = new Map<bigint, number>(created_debits.map(([id, debit]) => [id, shardOfAccount(debit, shards)]));
const perShard = (ids: readonly bigint[]): bigint[][] => {
  const out: bigint[][] = Array.from({ length: shards }, () => []);
  for (const id of ids) out[shard_of.get(id) ?? 0].push(id);
  return out;
};
const expected = perShard(created_ids);
let mismatches = 0;
for (const ids of received) {
  const got = perShard(ids);
  if (ids.length !== created_ids.length || got.some((list, s) => list.length !== expected[s].length || list.some((id, i) => id !== expected[s][i]))) mismatches++;
}
for (const feed of feeds) feed.close();
await keel.close();
await gateway.close();
await engine.close();
rmSync(dir, { recursive: true, force: true });

const report = {
  transfers: created_ids.length,
  batch: batch_size,
  subscribers,
  shards,
  load_transfers_per_s: Math.round(created_ids.length / load_s),
  feed_transfers_per_s_per_subscriber: Math.round(created_ids.length / feed_s),
  lag_ms_p50: lag.getValueAtPercentile(50) / 1000,
  lag_ms_p99: lag.getValueAtPercentile(99) / 1000,
  lag_ms_max: lag.maxValue / 1000,
  consumers_with_mismatch: mismatches,
};
if (values.json) console.log(JSON.stringify(report));
else {
  console.log(`Keel change feed, ${subscribers} subscriber(s), ${shards} shard(s), in-process gateway`);
  console.log(`  load              ${report.load_transfers_per_s.toLocaleString()} transfers/s created (${report.transfers.toLocaleString()} in batches of ${batch_size})`);
  console.log(`  feed              ${report.feed_transfers_per_s_per_subscriber.toLocaleString()} transfers/s delivered to each subscriber`);
  console.log(`  lag commit->push  p50 ${report.lag_ms_p50} ms  p99 ${report.lag_ms_p99} ms  max ${report.lag_ms_max} ms`);
  console.log(`  exactly once      ${mismatches === 0 ? 'ok: every subscriber got every created transfer once, in commit order per shard' : `${mismatches} subscriber(s) MISMATCH`}`);
}
if (mismatches > 0) process.exit(1);
