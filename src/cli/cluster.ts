// `keel cluster status`: the cluster's shard map and health, from etcd (who leads which partition
// group in which epoch, the in-sync set, which centers are alive) and from each live center's
// /metrics (its role, commit positions, and, on the leader, each follower's lag).

import { inspectCluster, type ClusterView } from '../replication/coordinator.ts';
import { PARTITIONS } from '../shard/partition.ts';
import type { ClusterStatusArgs } from './args.ts';
import { table, type Io } from './io.ts';
import { fetchMetricsText, parseSamples } from './status.ts';

export interface CenterHealth {
  center: string;
  alive: boolean;
  in_sync: boolean;
  gateway: string | null;
  metrics: string | null;
  /** From its metrics: null when they could not be read. */
  role: 'leader' | 'follower' | null;
  epoch: number | null;
  commit: number[] | null;
  /** As the leader sees this follower: entries and seconds behind. */
  lag_entries: number | null;
  lag_seconds: number | null;
}

export interface ClusterStatus {
  cluster: string;
  health: 'ok' | 'degraded' | 'unavailable';
  reasons: string[];
  groups: Array<{ group: number; partitions: string; epoch: number; leader: string; leader_live: boolean; isr: string[]; min_isr: number }>;
  centers: CenterHealth[];
}

async function readMetrics(url: string): Promise<ReturnType<typeof parseSamples> | null> {
  return fetchMetricsText(url, 2_000).then(parseSamples, () => null);
}

export async function clusterStatus(view: ClusterView): Promise<ClusterStatus> {
  const reasons: string[] = [];
  const state = view.state;
  if (state === null) {
    return { cluster: view.cluster, health: 'unavailable', reasons: ['no center of this cluster has started (nothing in etcd)'], groups: [], centers: [] };
  }
  const names = [...new Set([...state.isr, ...Object.keys(view.centers), ...(state.leader === '' ? [] : [state.leader])])].sort();
  const centers: CenterHealth[] = names.map((center) => ({
    center,
    alive: center in view.centers,
    in_sync: state.isr.includes(center),
    gateway: view.centers[center]?.gateway ?? null,
    metrics: view.centers[center]?.metrics ?? null,
    role: null,
    epoch: null,
    commit: null,
    lag_entries: null,
    lag_seconds: null,
  }));
  const samples = await Promise.all(centers.map((c) => (c.metrics === null ? Promise.resolve(null) : readMetrics(c.metrics))));
  centers.forEach((c, k) => {
    const s = samples[k];
    if (s === null) return;
    const commit: number[] = [];
    for (const { name, labels, value } of s) {
      if (name === 'keel_cluster_leader') c.role = value === 1 ? 'leader' : 'follower';
      if (name === 'keel_cluster_epoch') c.epoch = value;
      if (name === 'keel_cluster_commit_position') commit[Number(labels.shard)] = value;
    }
    c.commit = commit;
  });
  const leader_samples = samples[centers.findIndex((c) => c.center === view.live_leader)] ?? null;
  for (const { name, labels, value } of leader_samples ?? []) {
    const follower = centers.find((c) => c.center === labels.follower);
    if (follower === undefined) continue;
    if (name === 'keel_cluster_replica_lag_entries') follower.lag_entries = value;
    if (name === 'keel_cluster_replica_lag_seconds') follower.lag_seconds = value;
  }
  if (view.live_leader === null) reasons.push(state.leader === '' ? 'no leader elected yet' : `no live leader: ${state.leader}'s lease expired; an in-sync center should take over within seconds`);
  if (state.isr.length < state.min_isr) reasons.push(`only ${state.isr.length} center(s) in sync, fewer than ${state.min_isr}: writes are refused`);
  for (const c of centers) {
    if (!c.alive) reasons.push(`center ${c.center} is not running (no live announcement in etcd)`);
    else if (!c.in_sync) reasons.push(`center ${c.center} is catching up (not in sync)`);
  }
  const health = view.live_leader === null || state.isr.length < state.min_isr ? 'unavailable' : reasons.length > 0 ? 'degraded' : 'ok';
  return {
    cluster: view.cluster,
    health,
    reasons,
    groups: [{ group: 0, partitions: `0-${PARTITIONS - 1} (every shard)`, epoch: state.epoch, leader: state.leader, leader_live: view.live_leader === state.leader && state.leader !== '', isr: state.isr, min_isr: state.min_isr }],
    centers,
  };
}

/** Exit code: 0 healthy, 3 degraded or unavailable (the report says why), 1 etcd could not be read. */
export async function runClusterStatus(args: ClusterStatusArgs, io: Io): Promise<number> {
  let view: ClusterView;
  try {
    view = await inspectCluster(args.etcd, args.cluster);
  } catch (error) {
    io.err(`keel: cannot read cluster ${JSON.stringify(args.cluster)} from etcd ${args.etcd.join(',')}: ${(error as Error).message}; is etcd running there (--etcd)?`);
    return 1;
  }
  const status = await clusterStatus(view);
  if (args.json) {
    io.out(JSON.stringify(status));
    return status.health === 'ok' ? 0 : 3;
  }
  io.out(`keel cluster ${JSON.stringify(status.cluster)}: ${status.health}`);
  for (const reason of status.reasons) io.out(`  ! ${reason}`);
  for (const g of status.groups) {
    io.out(`  partition group ${g.group}, partitions ${g.partitions}: epoch ${g.epoch}, leader ${g.leader || 'none'} (${g.leader_live ? 'lease live' : 'no live lease'}), in sync ${g.isr.join(', ')} (min ${g.min_isr})`);
  }
  const rows = [['center', 'alive', 'in sync', 'role', 'commit per shard', 'behind leader', 'gateway']];
  for (const c of status.centers) {
    rows.push([
      c.center,
      c.alive ? 'yes' : 'no',
      c.in_sync ? 'yes' : 'no',
      c.role ?? '-',
      c.commit === null ? '-' : c.commit.join(', '),
      c.lag_entries === null && c.lag_seconds === null ? '-' : `${c.lag_entries ?? '?'} entries, ${(c.lag_seconds ?? 0).toFixed(1)} s`,
      c.gateway ?? '-',
    ]);
  }
  for (const line of table(rows)) io.out(`  ${line}`);
  return status.health === 'ok' ? 0 : 3;
}
