// Cluster metrics of an active center (docs/replication.md): its role and epoch, the in-sync set,
// commit positions, each follower's lag as the leader sees it, and failovers. Collected on scrape
// from the center's own view; a single center registers none of them.

import { Counter, Gauge, type Registry } from 'prom-client';

export interface ClusterSnapshot {
  leading: boolean;
  epoch: number;
  isr_size: number;
  min_isr: number;
  /** Per shard. */
  commit: readonly number[];
  /** Leader only: per follower center, entries behind (summed over shards) and seconds behind. */
  lag: Record<string, { entries: number | null; seconds: number }>;
  takeovers: number;
  truncations: number;
  rebuilds: number;
}

export function registerClusterMetrics(registry: Registry, snapshot: () => ClusterSnapshot): void {
  const registers = [registry];
  new Gauge({
    name: 'keel_cluster_leader',
    help: '1 while this center leads its partition group (serves writes), 0 while it follows or changes role.',
    registers,
    collect(this: Gauge) {
      this.set(snapshot().leading ? 1 : 0);
    },
  });
  new Gauge({
    name: 'keel_cluster_epoch',
    help: 'The newest leadership epoch this center knows.',
    registers,
    collect(this: Gauge) {
      this.set(snapshot().epoch);
    },
  });
  new Gauge({
    name: 'keel_cluster_insync_centers',
    help: 'Centers in the in-sync set (the leader included), as this center knows it.',
    registers,
    collect(this: Gauge) {
      this.set(snapshot().isr_size);
    },
  });
  new Gauge({
    name: 'keel_cluster_min_insync_centers',
    help: 'Below this many in-sync centers, writes are refused (unavailable).',
    registers,
    collect(this: Gauge) {
      this.set(snapshot().min_isr);
    },
  });
  new Gauge({
    name: 'keel_cluster_commit_position',
    help: 'Per shard, the log position every in-sync center holds (as known here).',
    labelNames: ['shard'],
    registers,
    collect(this: Gauge<'shard'>) {
      snapshot().commit.forEach((position, shard) => this.set({ shard: String(shard) }, position));
    },
  });
  new Gauge({
    name: 'keel_cluster_replica_lag_entries',
    help: 'On the leader: log entries a follower has not acknowledged yet, summed over shards.',
    labelNames: ['follower'],
    registers,
    collect(this: Gauge<'follower'>) {
      this.reset();
      for (const [follower, lag] of Object.entries(snapshot().lag)) if (lag.entries !== null) this.set({ follower }, lag.entries);
    },
  });
  new Gauge({
    name: 'keel_cluster_replica_lag_seconds',
    help: 'On the leader: the age of the oldest entry a follower has not acknowledged (or how long it has been away).',
    labelNames: ['follower'],
    registers,
    collect(this: Gauge<'follower'>) {
      this.reset();
      for (const [follower, lag] of Object.entries(snapshot().lag)) this.set({ follower }, lag.seconds);
    },
  });
  new Counter({
    name: 'keel_cluster_takeovers_total',
    help: 'Times this center took over leadership (failovers to it, and first elections).',
    registers,
    collect(this: Counter) {
      this.reset();
      this.inc(snapshot().takeovers);
    },
  });
  new Counter({
    name: 'keel_cluster_rebuilds_total',
    help: 'Shards this center rebuilt from the leader\'s checkpoint (its log was too far behind).',
    registers,
    collect(this: Counter) {
      this.reset();
      this.inc(snapshot().rebuilds);
    },
  });
  new Counter({
    name: 'keel_cluster_truncations_total',
    help: 'Times this center cut a divergent, never-committed log tail to follow a new leader.',
    registers,
    collect(this: Counter) {
      this.reset();
      this.inc(snapshot().truncations);
    },
  });
}
