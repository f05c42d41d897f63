// `keel status` against a running 2-shard engine's /metrics: one row per shard with its log,
// checkpoint, objects and groups, and a JSON form for scripts; a clear error when nothing answers.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/shard/engine.ts';
import { MainMetrics } from '../src/metrics/gateway.ts';
import { startMetricsServer } from '../src/metrics/server.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import { shardOfAccount } from '../src/shard/partition.ts';
import { runStatus, type EngineStatus } from '../src/cli/status.ts';
import { account, transfer } from './support/builders.ts';

function capture(): { io: { out: (l: string) => void; err: (l: string) => void }; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l) => out.push(l), err: (l) => err.push(l) }, out, err };
}

t.test('keel status shows every shard of a running engine', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-status-'));
  const engine = await Engine.start({ data_dir: dir, shards: 2, queue_events_max: 100_000 });
  const metrics = new MainMetrics();
  metrics.attach({ connections: () => 0, inflight: () => 0, shardLoads: () => engine.shardLoads(), queue_events_max: engine.options.queue_events_max });
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0, main: metrics.registry, workers: () => engine.shardMetrics() });
  t.teardown(async () => {
    await server.close();
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const ids = [1n, 2n, 3n, 4n, 5n, 6n];
  await engine.createAccounts(ids.length, encodeAccountBatch(ids.map((id) => account(id))));
  const a0 = ids.find((id) => shardOfAccount(id, 2) === 0)!;
  const a1 = ids.find((id) => shardOfAccount(id, 2) === 1)!;
  const result = await engine.createTransfers(1, encodeTransferBatch([transfer(10n, a0, a1, 5n)]));
  t.ok('status' in result && result.status[0] === 0, 'a cross-shard transfer');

  const json = capture();
  t.equal(await runStatus({ metrics_url: server.url, json: true }, json.io), 0);
  const status = JSON.parse(json.out[0]) as EngineStatus;
  t.equal(status.shards.length, 2, 'both shards');
  t.equal(status.shards.reduce((n, s) => n + s.accounts, 0), 6, 'accounts across shards');
  for (const s of status.shards) {
    t.equal(s.transfers, 1, `shard ${s.shard} holds the cross-shard transfer`);
    t.equal(s.groups_total, 1, `shard ${s.shard} took part in one group`);
    t.equal(s.log_durable_position, s.log_head_position, `shard ${s.shard} is durable to its head`);
    t.ok(s.last_commit_age_s !== null && s.last_commit_age_s < 60, `shard ${s.shard} committed recently`);
  }

  const human = capture();
  t.equal(await runStatus({ metrics_url: server.url, json: false }, human.io), 0);
  t.match(human.out.join('\n'), /2 shard\(s\)/);
  t.match(human.out.join('\n'), /shard\s+log head\s+durable/);
  t.equal(human.out.filter((l) => /^\s+[01]\s+\d+\s+yes/.test(l)).length, 2, 'a row per shard');
});

t.test('keel status says what is wrong when nothing answers', async (t) => {
  const down = capture();
  t.equal(await runStatus({ metrics_url: 'http://127.0.0.1:1/metrics', json: false }, down.io), 1);
  t.match(down.err.join('\n'), /cannot read http:\/\/127\.0\.0\.1:1\/metrics: .*is the engine running/);
});
