// Metrics a shard worker keeps about itself. Each worker has its own registry (prom-client's
// default registry is per thread anyway); the main thread asks for them as JSON on scrape and
// aggregates them (NOTES.md: the cluster aggregator does not see worker threads).
//
// Hot-path cost: one histogram observation and a few counter increments per batch, never per
// event; statuses are tallied in a reused array and added once per batch.

import { Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { CREATE_ACCOUNT_STATUS_NAMES, CREATE_TRANSFER_STATUS_NAMES } from '../ledger/types.ts';

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

export interface ShardGaugeSource {
  /** The worker's old generation in use after its last full or major collection (0 until recovered). */
  heap_live_bytes: number;
  heap_limit_bytes: number;
  /** Writes to the shard are refused for memory. */
  memory_full: boolean;
  head_position: number;
  durable_position: number;
  checkpointed_position: number;
  accounts: number;
  transfers: number;
  pending_live: number;
  expired_total: number;
  /** Seconds until the earliest pending deadline; negative when overdue; null when none. */
  next_expiry_s: number | null;
  last_commit_unix_s: number;
}

export class ShardMetrics {
  readonly registry = new Registry();
  private readonly commit_seconds: Histogram<'op'>;
  private readonly batch_events: Histogram<'op'>;
  private readonly events_total: Counter<'op' | 'status'>;
  private readonly checkpoint_seconds: Histogram;
  private readonly group_wait_seconds: Histogram;
  private readonly groups_total: Counter;
  private readonly account_tally = new Uint32Array(CREATE_ACCOUNT_STATUS_NAMES.length);
  private readonly transfer_tally = new Uint32Array(CREATE_TRANSFER_STATUS_NAMES.length);

  constructor(shard: number, source: () => ShardGaugeSource) {
    this.registry.setDefaultLabels({ shard: String(shard) });
    const registers = [this.registry];
    this.commit_seconds = new Histogram({
      name: 'keel_shard_commit_seconds',
      help: 'Time from a batch reaching the shard to its log entry being fsynced.',
      labelNames: ['op'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.batch_events = new Histogram({
      name: 'keel_shard_batch_events',
      help: 'Events per applied batch.',
      labelNames: ['op'],
      buckets: [1, 8, 64, 256, 1024, 4096, 8190],
      registers,
    });
    this.events_total = new Counter({
      name: 'keel_shard_events_total',
      help: 'Create events applied, by operation and result status.',
      labelNames: ['op', 'status'],
      registers,
    });
    this.checkpoint_seconds = new Histogram({
      name: 'keel_shard_checkpoint_seconds',
      help: 'Time to write a checkpoint (off the commit path).',
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30],
      registers,
    });
    this.group_wait_seconds = new Histogram({
      name: 'keel_shard_group_wait_seconds',
      help: 'Time a shard stood at a cross-shard group barrier, from posting its read set to receiving every participant\'s.',
      buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.groups_total = new Counter({
      name: 'keel_shard_groups_total',
      help: 'Cross-shard groups this shard took part in (each may carry several requests).',
      registers,
    });
    const gauge = (name: string, help: string, read: (s: ShardGaugeSource) => number | null): void => {
      new Gauge({
        name,
        help,
        registers,
        collect(this: Gauge) {
          const value = read(source());
          if (value === null) this.reset();
          else this.set(value);
        },
      });
    };
    gauge('keel_shard_log_head_position', 'Position of the last log entry appended.', (s) => s.head_position);
    gauge('keel_shard_log_durable_position', 'Position up to which the log is fsynced.', (s) => s.durable_position);
    gauge('keel_shard_checkpoint_position', 'Log position covered by the last durable checkpoint.', (s) => s.checkpointed_position);
    gauge('keel_shard_accounts', 'Accounts held by the shard.', (s) => s.accounts);
    gauge('keel_shard_heap_live_bytes', 'The shard worker\'s old generation in use right after its last major garbage collection (its state); writes are refused past a mark (keel_shard_memory_full).', (s) => s.heap_live_bytes);
    gauge('keel_shard_memory_full', '1 while writes to the shard are refused because its live heap passed its mark (src/shard/memory.ts).', (s) => (s.memory_full ? 1 : 0));
    gauge('keel_shard_heap_limit_bytes', 'The shard worker\'s old-generation limit (--shard-heap-mb or its default).', (s) => s.heap_limit_bytes);
    gauge('keel_shard_transfers', 'Transfers held by the shard.', (s) => s.transfers);
    gauge('keel_shard_pending_transfers', 'Pending transfers not yet posted, voided or expired.', (s) => s.pending_live);
    gauge('keel_shard_expired_transfers', 'Pending transfers expired since the shard started.', (s) => s.expired_total);
    gauge('keel_shard_next_expiry_seconds', 'Seconds until the earliest pending deadline (negative: expiry backlog).', (s) => s.next_expiry_s);
    gauge('keel_shard_last_commit_timestamp_seconds', 'Unix time of the last durable commit.', (s) => s.last_commit_unix_s);
  }

  /** One applied create batch: its op, per-event statuses, and time to durability. */
  observeBatch(op: 'create_accounts' | 'create_transfers', status: readonly number[], seconds: number): void {
    this.commit_seconds.observe({ op }, seconds);
    this.batch_events.observe({ op }, status.length);
    const accounts = op === 'create_accounts';
    const tally = accounts ? this.account_tally : this.transfer_tally;
    for (let i = 0; i < status.length; i++) tally[status[i]]++;
    const names: readonly string[] = accounts ? CREATE_ACCOUNT_STATUS_NAMES : CREATE_TRANSFER_STATUS_NAMES;
    for (let code = 0; code < tally.length; code++) {
      if (tally[code] === 0) continue;
      this.events_total.inc({ op, status: names[code] }, tally[code]);
      tally[code] = 0;
    }
  }

  /** One cross-shard group executed here, after standing `wait_seconds` at its barrier. */
  observeGroup(wait_seconds: number): void {
    this.groups_total.inc();
    this.group_wait_seconds.observe(wait_seconds);
  }

  observeCheckpoint(seconds: number): void {
    this.checkpoint_seconds.observe(seconds);
  }

  json(): Promise<MetricsJson> {
    return this.registry.getMetricsAsJSON() as Promise<MetricsJson>;
  }
}
