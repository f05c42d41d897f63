// Scrapes /metrics after a known load and reads it with a real Prometheus text-format parser:
// the counts must match what was sent, across the main thread and the shard worker.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { Engine } from '../src/shard/engine.ts';
import { TokenStore } from '../src/gateway/tokens.ts';
import { startGateway } from '../src/gateway/server.ts';
import { createLogger } from '../src/gateway/log.ts';
import { MainMetrics } from '../src/metrics/gateway.ts';
import { startMetricsServer } from '../src/metrics/server.ts';
import { connect } from '../src/client/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'keel-metrics-'));
const engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 1_000_000 });
const opened = TokenStore.open(dir);
if (!opened.ok) throw new Error(opened.message);
const created = opened.value.create('admin', ['admin']);
if (!created.ok) throw new Error(created.message);
const metrics = new MainMetrics();
const gateway = await startGateway({ engine, tokens: opened.value, port: 0, logger: createLogger('silent'), observer: metrics });
metrics.attach({ connections: () => gateway.connections, inflight: () => gateway.inflight, shardLoads: () => engine.shardLoads(), queue_events_max: engine.options.queue_events_max });
const server = await startMetricsServer({ host: '127.0.0.1', port: 0, main: metrics.registry, workers: () => engine.shardMetrics() });

t.teardown(async () => {
  await server.close();
  await gateway.close();
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

type Families = ReturnType<typeof parsePrometheusTextFormat>;

let last_text = '';

async function scrape(): Promise<Families> {
  const response = await fetch(server.url);
  t.equal(response.status, 200);
  t.match(response.headers.get('content-type') ?? '', /text\/plain/);
  last_text = await response.text();
  return parsePrometheusTextFormat(last_text);
}

/**
 * The parser flattens labelled histograms into one sample (a known limitation of the package), so
 * histogram counts are read from their `_count` series, which Prometheus stores as plain samples.
 */
function histogramCount(name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of last_text.split('\n')) {
    const match = /^([a-z_]+)_count\{([^}]*)\} (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const found = Object.fromEntries(match[2].split(',').map((pair) => pair.split('=')).map(([k, v]) => [k, v.replace(/^"|"$/g, '')]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) total += Number(match[3]);
  }
  return total;
}

function value(families: Families, name: string, labels: Record<string, string>): number {
  const family = families.find((f) => f.name === name);
  if (family === undefined) return 0;
  let total = 0;
  for (const sample of family.metrics) {
    if (Object.entries(labels).every(([k, v]) => sample.labels?.[k] === v)) total += Number(sample.value ?? sample.count ?? 0);
  }
  return total;
}

t.test('counts on /metrics match the traffic sent', async (t) => {
  const keel = await connect({ url: gateway.address.url, token: created.value.token, reconnect: false });
  const accounts = Array.from({ length: 50 }, (_, i) => ({ id: BigInt(i + 1), ledger: 1, code: 1 }));
  await keel.createAccounts(accounts);
  let sent_created = 0;
  let sent_not_found = 0;
  let requests = 0;
  for (let batch = 0; batch < 7; batch++) {
    const transfers = Array.from({ length: 100 }, (_, i) => {
      const n = batch * 100 + i;
      // Every tenth transfer names an account that does not exist.
      const credit = n % 10 === 0 ? 999n : BigInt(2 + (n % 49));
      return { id: BigInt(1000 + n), debit_account_id: 1n, credit_account_id: credit, amount: 1n, ledger: 1, code: 1 };
    });
    const result = await keel.createTransfers(transfers);
    requests++;
    for (const status of result.status) {
      if (status === 0) sent_created++;
      else sent_not_found++;
    }
  }
  await keel.lookupAccounts([1n]);
  await keel.close();

  const families = await scrape();
  t.equal(value(families, 'keel_shard_events_total', { op: 'create_accounts', status: 'created', shard: '0' }), 50);
  t.equal(value(families, 'keel_shard_events_total', { op: 'create_transfers', status: 'created', shard: '0' }), sent_created);
  t.equal(value(families, 'keel_shard_events_total', { op: 'create_transfers', status: 'credit_account_not_found', shard: '0' }), sent_not_found);
  t.equal(sent_not_found, 70);
  t.equal(value(families, 'keel_requests_total', { op: 'create_transfers', outcome: 'ok' }), requests);
  t.equal(value(families, 'keel_requests_total', { op: 'lookup_accounts', outcome: 'ok' }), 1);
  t.equal(histogramCount('keel_request_seconds', { op: 'create_transfers' }), requests, 'latency histogram counts every request');
  t.equal(histogramCount('keel_shard_commit_seconds', { op: 'create_transfers', shard: '0' }), requests, 'one commit observation per batch');
  t.equal(histogramCount('keel_shard_batch_events', { op: 'create_transfers', shard: '0' }), requests);
  t.equal(value(families, 'keel_shard_accounts', { shard: '0' }), 50);
  t.equal(value(families, 'keel_shard_transfers', { shard: '0' }), sent_created);
  t.equal(value(families, 'keel_shard_log_durable_position', { shard: '0' }), 1 + requests, 'one log entry per create request');
  t.ok(families.some((f) => f.name === 'keel_process_nodejs_eventloop_lag_seconds'), 'process metrics from the main thread');
  const types = new Map(families.map((f) => [f.name, f.type]));
  t.equal(types.get('keel_shard_commit_seconds'), 'HISTOGRAM');
  t.equal(types.get('keel_requests_total'), 'COUNTER');
  t.equal(types.get('keel_shard_pending_transfers'), 'GAUGE');
});

t.test('refused connections and errors are counted', async (t) => {
  const bad = await connect({ url: gateway.address.url, token: 'keel_not_a_token', reconnect: false }).catch((error: unknown) => error);
  t.ok(bad instanceof Error, 'a bad token is refused');
  const families = await scrape();
  t.equal(value(families, 'keel_connections_rejected_total', { reason: 'unauthorized' }), 1);
});

t.test('other paths are 404', async (t) => {
  const response = await fetch(server.url.replace('/metrics', '/'));
  t.equal(response.status, 404);
  await response.text();
});
