// In-process ledger benchmark (issue: the ledger core): one shard, no network, durable commits.
//
//   npm run bench:ledger -- --accounts 10000 --transfers 1000000 --batch 8190 --inflight 4 [--path encoded|objects] [--json]
//
// Creates the accounts, then submits transfer batches keeping `inflight` batches outstanding
// (the shard applies one while LMDB fsyncs the previous), and verifies at the end that every
// account's balance equals the sum of what was sent.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Shard } from '../src/shard/shard.ts';
import type { AccountInput, TransferInput } from '../src/ledger/types.ts';
import { encodeTransferBatch } from '../src/storage/codec.ts';
import { LogOp } from '../src/storage/log.ts';

const { values } = parseArgs({
  options: {
    accounts: { type: 'string', default: '10000' },
    transfers: { type: 'string', default: '1000000' },
    batch: { type: 'string', default: '8190' },
    inflight: { type: 'string', default: '4' },
    dir: { type: 'string' },
    seed: { type: 'string', default: '42' },
    json: { type: 'boolean', default: false },
    // encoded: batches arrive in the log layout, as the gateway hands them to a shard worker
    // (decoded once, appended as is). objects: the in-process API with caller-owned objects.
    path: { type: 'string', default: 'encoded' },
  },
});
if (values.path !== 'encoded' && values.path !== 'objects') throw new Error('--path must be encoded or objects');

const accounts_count = Number(values.accounts);
const transfers_count = Number(values.transfers);
const batch_size = Number(values.batch);
const inflight_max = Number(values.inflight);
if (!(batch_size >= 1 && batch_size <= 8190)) throw new Error('--batch must be 1..8190');

const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'keel-bench-'));
const shard = Shard.open({ dir });

let seed = Number(values.seed) >>> 0;
function random(): number {
  // xorshift32: deterministic workloads make runs comparable.
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x1_0000_0000;
}

let peak_rss = process.memoryUsage().rss;
const rss_timer = setInterval(() => {
  peak_rss = Math.max(peak_rss, process.memoryUsage().rss);
}, 100);

for (let start = 1; start <= accounts_count; start += 8190) {
  const batch: AccountInput[] = [];
  for (let id = start; id < Math.min(start + 8190, accounts_count + 1); id++) {
    batch.push({ id: BigInt(id), user_data_64: 0n, user_data_32: 0, ledger: 1, code: 1, flags: 0, timestamp: 0n });
  }
  const result = await shard.createAccounts(batch);
  if (result.status.some((s) => s !== 0)) throw new Error('account creation failed');
}

const expected_debits = new Array<bigint>(accounts_count + 1).fill(0n);
const expected_credits = new Array<bigint>(accounts_count + 1).fill(0n);
const latencies_ms: number[] = [];
let next_id = 1_000_000_000n;
let failed = 0;
const inflight = new Set<Promise<void>>();

// The workload is generated before the clock starts: it is the client's work, not the engine's.
const batches: TransferInput[][] = [];
for (let generated = 0; generated < transfers_count; ) {
  const count = Math.min(batch_size, transfers_count - generated);
  const batch: TransferInput[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const debit = 1 + Math.floor(random() * accounts_count);
    let credit = 1 + Math.floor(random() * (accounts_count - 1));
    if (credit >= debit) credit++;
    const amount = BigInt(1 + Math.floor(random() * 1000));
    expected_debits[debit] += amount;
    expected_credits[credit] += amount;
    batch[i] = {
      id: next_id++,
      debit_account_id: BigInt(debit),
      credit_account_id: BigInt(credit),
      amount,
      pending_id: 0n,
      user_data_64: 0n,
      user_data_32: 0,
      timeout: 0,
      ledger: 1,
      code: 1,
      flags: 0,
      timestamp: 0n,
    };
  }
  generated += count;
  batches.push(batch);
}
// The gateway's share of the work (validation and encoding) happens before the clock starts too.
const encoded = values.path === 'encoded' ? batches.map((batch) => encodeTransferBatch(batch)) : [];

const started = performance.now();
let last_report = started;
let submitted = 0;
for (let b = 0; b < batches.length; b++) {
  const batch = batches[b];
  submitted += batch.length;
  const t0 = performance.now();
  const applied =
    values.path === 'encoded' ? shard.createEncoded(LogOp.create_transfers, batch.length, encoded[b]) : shard.createTransfers(batch);
  const done: Promise<void> = applied.then((result) => {
    latencies_ms.push(performance.now() - t0);
    for (const status of result.status) if (status !== 0) failed++;
    inflight.delete(done);
  });
  inflight.add(done);
  if (inflight.size >= inflight_max) await Promise.race(inflight);
  const now = performance.now();
  if (!values.json && now - last_report > 1000) {
    last_report = now;
    process.stderr.write(`\r${submitted.toLocaleString()} / ${transfers_count.toLocaleString()} transfers`);
  }
}
await Promise.all(inflight);
const elapsed_s = (performance.now() - started) / 1000;
if (!values.json) process.stderr.write('\n');

// Verify: every account's posted balances equal what this run sent.
const ids = Array.from({ length: accounts_count }, (_, i) => BigInt(i + 1));
let mismatches = 0;
for (const account of await shard.lookupAccounts(ids)) {
  const id = Number(account.id);
  if (account.debits_posted !== expected_debits[id] || account.credits_posted !== expected_credits[id]) mismatches++;
}
clearInterval(rss_timer);
peak_rss = Math.max(peak_rss, process.memoryUsage().rss);
await shard.close();
if (values.dir === undefined) rmSync(dir, { recursive: true, force: true });

latencies_ms.sort((a, b) => a - b);
const pct = (p: number): number => latencies_ms[Math.min(latencies_ms.length - 1, Math.floor((p / 100) * latencies_ms.length))];
const report = {
  accounts: accounts_count,
  transfers: transfers_count,
  batch: batch_size,
  inflight: inflight_max,
  path: values.path,
  transfers_per_s: Math.round(transfers_count / elapsed_s),
  elapsed_s: Number(elapsed_s.toFixed(2)),
  batch_latency_ms_p50: Number(pct(50).toFixed(2)),
  batch_latency_ms_p99: Number(pct(99).toFixed(2)),
  batch_latency_ms_max: Number(latencies_ms[latencies_ms.length - 1].toFixed(2)),
  peak_rss_mb: Math.round(peak_rss / 1024 / 1024),
  failed_transfers: failed,
  balance_mismatches: mismatches,
};
if (values.json) console.log(JSON.stringify(report));
else {
  console.log(`transfers/s           ${report.transfers_per_s.toLocaleString()}`);
  console.log(`elapsed               ${report.elapsed_s} s`);
  console.log(`batch latency p50/p99 ${report.batch_latency_ms_p50} / ${report.batch_latency_ms_p99} ms (max ${report.batch_latency_ms_max})`);
  console.log(`peak RSS              ${report.peak_rss_mb} MiB`);
  console.log(`failed transfers      ${failed}`);
  console.log(`balance check         ${mismatches === 0 ? 'ok' : `${mismatches} accounts MISMATCH`}`);
}
if (failed > 0 || mismatches > 0) process.exit(1);
