// The engine in process, without the gateway and client: shard workers, routing and cross-shard
// groups alone, durable. Shows what sharding buys when the door and the load generator are not
// sharing the cores, and is the driver to profile (`node --cpu-prof --import=tsx bench/engine.ts`).
//
//   npm run bench:engine -- --shards 2 --cross-shard 0.5 [--accounts 10000] [--batches 60]
//                           [--batch 8190] [--inflight 2] [--json]
//
// Transfers are pre-encoded before the clock starts; `--cross-shard F` makes a share F of them
// debit and credit accounts of different shards. Exit 1 if any transfer fails.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../src/shard/engine.ts';
import { shardOfAccount } from '../src/shard/partition.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';

const { values } = parseArgs({
  options: {
    shards: { type: 'string', default: '2' },
    'cross-shard': { type: 'string', default: '0' },
    accounts: { type: 'string', default: '10000' },
    batches: { type: 'string', default: '60' },
    batch: { type: 'string', default: '8190' },
    inflight: { type: 'string', default: '2' },
    json: { type: 'boolean', default: false },
  },
});
const shards = Number(values.shards);
const cross = Number(values['cross-shard']);
const accounts = Number(values.accounts);
const batches = Number(values.batches);
const batch_size = Number(values.batch);
const inflight = Number(values.inflight);
if (!(Number.isInteger(shards) && shards >= 1 && shards <= 16)) throw new Error('--shards must be 1..16');
if (!(cross >= 0 && cross <= 1)) throw new Error('--cross-shard must be 0..1');
if (shards === 1 && cross > 0) throw new Error('--cross-shard needs --shards 2 or more');
if (!(batch_size >= 1 && batch_size <= 8190)) throw new Error('--batch must be 1..8190');
if (!(accounts >= 2 && batches >= 1 && inflight >= 1)) throw new Error('--accounts >= 2, --batches >= 1, --inflight >= 1');

const dir = mkdtempSync(join(tmpdir(), 'keel-bench-engine-'));
const engine = await Engine.start({ data_dir: dir, shards, queue_events_max: 16 * 8190 });
for (let start = 1; start <= accounts; start += 8190) {
  const count = Math.min(8190, accounts - start + 1);
  const created = await engine.createAccounts(count, encodeAccountBatch(Array.from({ length: count }, (_, i) => ({ id: BigInt(start + i), user_data_64: 0n, user_data_32: 0, ledger: 1, code: 1, flags: 0, timestamp: 0n }))));
  if (!('status' in created) || created.status.some((s) => s !== 0)) throw new Error('accounts were not created');
}

let seed = 42;
const random = (): number => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x1_0000_0000;
};
const shard_of = (id: number): number => shardOfAccount(BigInt(id), shards);
let next_id = 1_000_000n;
let crossing = 0;
const bodies: Uint8Array[] = [];
for (let k = 0; k < batches; k++) {
  const transfers = Array.from({ length: batch_size }, () => {
    const debit = 1 + Math.floor(random() * accounts);
    const want_cross = shards > 1 && random() < cross;
    let credit = debit;
    while (credit === debit || (shards > 1 && (shard_of(credit) !== shard_of(debit)) !== want_cross)) credit = 1 + Math.floor(random() * accounts);
    if (want_cross) crossing++;
    return { id: next_id++, debit_account_id: BigInt(debit), credit_account_id: BigInt(credit), amount: 1n, pending_id: 0n, user_data_64: 0n, user_data_32: 0, timeout: 0, ledger: 1, code: 1, flags: 0, timestamp: 0n };
  });
  bodies.push(encodeTransferBatch(transfers));
}

let failed = 0;
const started = performance.now();
const running: Promise<void>[] = [];
for (const body of bodies) {
  running.push(
    engine.createTransfers(batch_size, body).then((result) => {
      if (!('status' in result)) failed += batch_size;
      else for (const status of result.status) if (status !== 0) failed++;
    }),
  );
  if (running.length >= inflight) await running.shift();
}
await Promise.all(running);
const seconds = (performance.now() - started) / 1000;
const groups = engine.group_stats.groups;
await engine.close();
rmSync(dir, { recursive: true, force: true });

const report = {
  shards,
  cross_shard_share: batches * batch_size === 0 ? 0 : crossing / (batches * batch_size),
  transfers: batches * batch_size,
  transfers_per_s: Math.round((batches * batch_size) / seconds),
  cross_shard_groups: groups,
  failed,
};
if (values.json) console.log(JSON.stringify(report));
else {
  console.log(`Keel engine in process, ${shards} shard(s), ${Math.round(report.cross_shard_share * 100)}% cross-shard`);
  console.log(`  ${report.transfers_per_s.toLocaleString()} transfers/s (${report.transfers.toLocaleString()} in batches of ${batch_size}, ${inflight} in flight), ${groups} cross-shard groups`);
  console.log(`  failed transfers: ${failed}`);
}
if (failed > 0) process.exit(1);
