// bench/transfers end to end on a tiny workload: it starts its own engine, drives it over WebSocket,
// and its balance check finds every transfer where it should be.

import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function bench(args: string[], script = 'bench/transfers.ts'): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import=tsx', join(ROOT, script), ...args], { cwd: ROOT });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

interface BenchReport {
  transfers_requested: number;
  transfers_sent: number;
  transfers_created: number;
  transfers_failed: number;
  balance_mismatches: number;
  accounts_checked: number;
  shards: number;
  cross_shard_generated: number;
  notes: string[];
  latency_ms: { p50: number; p99: number; max: number };
  server_peak_rss_mb: number | null;
  request_errors: Record<string, number>;
}

t.test('bench/transfers: 200 accounts, 5,000 transfers, its own engine, --json', async (t) => {
  const { code, stdout, stderr } = await bench([
    '--accounts', '200',
    '--transfers', '5000',
    '--batch', '100',
    '--connections', '2',
    '--inflight', '4',
    '--cross-shard', '0.5',
    '--json',
  ]);
  t.equal(code, 0, `exit code 0\n${stderr}`);
  const report = JSON.parse(stdout.trim()) as BenchReport;
  t.equal(report.transfers_requested, 5000);
  t.equal(report.transfers_sent, 5000);
  t.equal(report.transfers_created, 5000, 'every transfer created');
  t.equal(report.transfers_failed, 0);
  t.same(report.request_errors, {});
  t.equal(report.accounts_checked, 200);
  t.equal(report.balance_mismatches, 0, 'balances match what was sent');
  t.equal(report.shards, 1);
  t.equal(report.cross_shard_generated, 0, 'with one shard no transfer is cross-shard');
  t.match(report.notes.join('\n'), /1 shard: every transfer is single-shard/);
  t.ok(report.latency_ms.max >= report.latency_ms.p50 && report.latency_ms.p50 > 0, 'latency percentiles are reported');
  t.ok(report.server_peak_rss_mb !== null && report.server_peak_rss_mb > 0, 'the engine peak RSS is reported');
});

t.test('bench/transfers: two-phase transfers in the open loop balance too', async (t) => {
  const { code, stdout, stderr } = await bench([
    '--accounts', '200',
    '--transfers', '2000',
    '--batch', '10',
    '--connections', '2',
    '--inflight', '2',
    '--two-phase', '0.5',
    '--distribution', 'zipf:1.1',
    '--rate', '20000',
    '--json',
  ]);
  t.equal(code, 0, `exit code 0\n${stderr}`);
  const report = JSON.parse(stdout.trim()) as BenchReport;
  t.equal(report.transfers_created, 2000, 'pending transfers, posts and voids add up to the count');
  t.equal(report.balance_mismatches, 0);
});

t.test('bench/engine: 2 shards in process, half the transfers cross-shard, --json', async (t) => {
  const { code, stdout, stderr } = await bench(['--shards', '2', '--cross-shard', '0.5', '--accounts', '200', '--batches', '3', '--batch', '100', '--json'], 'bench/engine.ts');
  t.equal(code, 0, stderr);
  const report = JSON.parse(stdout.trim()) as { transfers: number; failed: number; cross_shard_groups: number; cross_shard_share: number };
  t.equal(report.transfers, 300);
  t.equal(report.failed, 0, 'every transfer created');
  t.ok(report.cross_shard_groups >= 1 && report.cross_shard_share > 0.3, 'cross-shard transfers ran as groups');
});
