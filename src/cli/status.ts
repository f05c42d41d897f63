// `keel status`: the engine's shards and their health, read from a running engine's /metrics
// (the same numbers Prometheus sees), for an operator at a terminal or a script (--json).

import type { StatusArgs } from './args.ts';
import { table, type Io } from './io.ts';

export interface ShardStatus {
  shard: number;
  log_head_position: number;
  log_durable_position: number;
  checkpoint_position: number;
  accounts: number;
  transfers: number;
  pending_transfers: number;
  groups_total: number;
  queue_events: number;
  queue_events_limit: number;
  /** Seconds since the shard's last durable commit; null before the first. */
  last_commit_age_s: number | null;
}

export interface EngineStatus {
  metrics_url: string;
  connections: number;
  inflight_requests: number;
  shards: ShardStatus[];
}

type Sample = { name: string; labels: Record<string, string>; value: number };

/** Prometheus text format, plain samples only (what this command reads: gauges and counters). */
export function parseSamples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)/.exec(line);
    if (match === null) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    out.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return out;
}

export function summarize(text: string, metrics_url: string, now_s: number): EngineStatus {
  const samples = parseSamples(text);
  const shards = new Map<number, ShardStatus>();
  const shardOf = (labels: Record<string, string>): ShardStatus | null => {
    if (labels.shard === undefined) return null;
    const index = Number(labels.shard);
    let status = shards.get(index);
    if (status === undefined) {
      status = {
        shard: index,
        log_head_position: 0,
        log_durable_position: 0,
        checkpoint_position: 0,
        accounts: 0,
        transfers: 0,
        pending_transfers: 0,
        groups_total: 0,
        queue_events: 0,
        queue_events_limit: 0,
        last_commit_age_s: null,
      };
      shards.set(index, status);
    }
    return status;
  };
  let connections = 0;
  let inflight = 0;
  for (const { name, labels, value } of samples) {
    if (name === 'keel_connections') connections = value;
    if (name === 'keel_inflight_requests') inflight = value;
    const s = shardOf(labels);
    if (s === null) continue;
    switch (name) {
      case 'keel_shard_log_head_position': s.log_head_position = value; break;
      case 'keel_shard_log_durable_position': s.log_durable_position = value; break;
      case 'keel_shard_checkpoint_position': s.checkpoint_position = value; break;
      case 'keel_shard_accounts': s.accounts = value; break;
      case 'keel_shard_transfers': s.transfers = value; break;
      case 'keel_shard_pending_transfers': s.pending_transfers = value; break;
      case 'keel_shard_groups_total': s.groups_total = value; break;
      case 'keel_shard_queue_events': s.queue_events = value; break;
      case 'keel_shard_queue_events_limit': s.queue_events_limit = value; break;
      case 'keel_shard_last_commit_timestamp_seconds': s.last_commit_age_s = value > 0 ? Math.max(0, now_s - value) : null; break;
    }
  }
  return { metrics_url, connections, inflight_requests: inflight, shards: [...shards.values()].sort((a, b) => a.shard - b.shard) };
}

/** The metrics page at `url`; rejects if it cannot be read within `timeout_ms`. */
export async function fetchMetricsText(url: string, timeout_ms: number): Promise<string> {
  const response = await fetch(url, { signal: AbortSignal.timeout(timeout_ms) });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.text();
}

/** Returns the exit code: 0 the engine answered, 1 it could not be reached. */
export async function runStatus(args: StatusArgs, io: Io): Promise<number> {
  let text: string;
  try {
    text = await fetchMetricsText(args.metrics_url, 3_000);
  } catch (error) {
    io.err(
      `keel: cannot read ${args.metrics_url}: ${error instanceof Error ? error.message : String(error)}; is the engine running, with its metrics on that address (keel start --metrics-port)?`,
    );
    return 1;
  }
  const status = summarize(text, args.metrics_url, Date.now() / 1000);
  if (args.json) {
    io.out(JSON.stringify(status));
    return 0;
  }
  io.out(`keel status (${status.metrics_url})`);
  io.out(`  ${status.shards.length} shard(s), ${status.connections} connection(s), ${status.inflight_requests} request(s) in flight`);
  const rows = [['shard', 'log head', 'durable', 'checkpoint', 'accounts', 'transfers', 'pending', 'groups', 'queue', 'last commit']];
  for (const s of status.shards) {
    rows.push([
      String(s.shard),
      String(s.log_head_position),
      s.log_durable_position === s.log_head_position ? 'yes' : `${s.log_durable_position} (behind)`,
      String(s.checkpoint_position),
      String(s.accounts),
      String(s.transfers),
      String(s.pending_transfers),
      String(s.groups_total),
      `${s.queue_events}/${s.queue_events_limit}`,
      s.last_commit_age_s === null ? 'never' : `${s.last_commit_age_s.toFixed(1)} s ago`,
    ]);
  }
  for (const line of table(rows)) io.out(`  ${line}`);
  return 0;
}
