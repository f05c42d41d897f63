// bench/transfers end to end on a tiny workload: it starts its own engine, drives it over WebSocket,
// and its balance check finds every transfer where it should be.

import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/shard/engine.ts';
import { TokenStore } from '../src/gateway/tokens.ts';
import { startGateway } from '../src/gateway/server.ts';
import { createLogger } from '../src/gateway/log.ts';

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
  shards: number | null;
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

t.test('bench/transfers attached with --url: --shards says the engine\'s count, else the report says it is unknown', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-bench-url-'));
  const engine = await Engine.start({ data_dir: dir, shards: 2, queue_events_max: 1_000_000 });
  const opened = TokenStore.open(dir);
  if (!opened.ok) throw new Error(opened.message);
  const token = opened.value.create('bench', ['ledger:read', 'ledger:write']);
  if (!token.ok) throw new Error('token');
  const gateway = await startGateway({ engine, tokens: opened.value, port: 0, logger: createLogger('silent') });
  t.teardown(async () => {
    await gateway.close();
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const common = ['--url', gateway.address.url, '--token', token.value.token, '--transfers', '1000', '--batch', '100', '--cross-shard', '0.5', '--json'];

  const blind = await bench([...common, '--accounts', '100', '--account-base', '0']);
  t.equal(blind.code, 0, blind.stderr);
  const blind_report = JSON.parse(blind.stdout.trim()) as BenchReport;
  t.equal(blind_report.shards, null, 'the shard count is reported unknown, not 1');
  t.match(blind_report.notes.join('\n'), /attached without --shards/);
  t.equal(blind_report.balance_mismatches, 0);

  const told = await bench([...common, '--accounts', '100', '--account-base', '1000', '--shards', '2']);
  t.equal(told.code, 0, told.stderr);
  const told_report = JSON.parse(told.stdout.trim()) as BenchReport;
  t.equal(told_report.shards, 2);
  t.ok(told_report.cross_shard_generated > 300, `${told_report.cross_shard_generated} of 1,000 transfers cross shards`);
  t.equal(told_report.transfers_created, 1000);
  t.equal(told_report.balance_mismatches, 0);
});
