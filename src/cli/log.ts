// `keel log check|repair`: finds and repairs what stops a shard's log from replaying.
//
// A log entry's write can fail (a full disk) after later entries were handed to LMDB: the shard
// then stops, and nothing after the failed entry was acknowledged (each acknowledgement waits for
// every earlier entry). The log is left with a gap, and a restart refuses it (`log_corrupt`).
// `repair` drops the entries from the gap on: they were never acknowledged, and a cross-shard
// group among them is redone from another shard's entry at start if another shard logged it.
// A corrupt entry (bad checksum or chain) may have been acknowledged: `repair` refuses it unless
// --force, because dropping it loses acknowledged transfers (restore that shard from a replica or
// a backup instead).

import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LogStore } from '../storage/log.ts';
import { CheckpointStore } from '../storage/checkpoint.ts';
import { acquireLock, EngineLockedError } from '../shard/engine.ts';
import type { LogArgs } from './args.ts';
import type { Io } from './io.ts';

interface ShardReport {
  shard: number;
  first: number;
  head: number;
  checkpoint: number;
  problem: { position: number; kind: 'gap' | 'corrupt'; reason: string; entries_after: number } | null;
  /** What repair did (or would do): entries dropped from `position` on. */
  dropped: number;
  action: 'none' | 'dropped' | 'refused';
  /** Why repair refused, when it did. */
  refusal?: 'checkpoint' | 'corrupt' | 'groups';
  /** Cross-shard groups in the range a --force repair would drop. */
  groups?: number[];
}

/** Returns the exit code: 0 healthy (or repaired), 1 a problem remains, 2 the engine runs. */
export async function runLog(args: LogArgs, io: Io): Promise<number> {
  const dir = resolve(args.data);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    io.err(`keel: no data directory at ${dir}; check --data (or KEEL_DATA)`);
    return 1;
  }
  let lock: string;
  try {
    lock = acquireLock(dir);
  } catch (error) {
    if (error instanceof EngineLockedError) {
      io.err(`keel: ${error.message}`);
      return 2;
    }
    throw error;
  }
  try {
    const shards = readdirSync(dir)
      .map((name) => /^shard-(\d+)$/.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    const reports: ShardReport[] = [];
    for (const shard of shards) reports.push(await inspect(join(dir, `shard-${shard}`), shard, args));
    if (args.json) {
      io.out(JSON.stringify({ data: dir, action: args.action, shards: reports }));
    } else {
      for (const r of reports) io.out(describe(r, args));
      if (reports.length === 0) io.out(`no shard logs under ${dir}`);
    }
    return reports.some((r) => r.problem !== null && r.action !== 'dropped') ? 1 : 0;
  } finally {
    rmSync(lock, { force: true });
  }
}

async function inspect(shard_dir: string, shard: number, args: LogArgs): Promise<ShardReport> {
  const log = LogStore.open({ path: join(shard_dir, 'log') });
  const checkpoints = CheckpointStore.open(join(shard_dir, 'state'));
  try {
    const checkpoint = checkpoints.readMeta()?.position ?? 0;
    // Recovery reads from the checkpoint's entry on (from 1 without a checkpoint): older entries
    // are kept for followers and readers only, so damage there does not stop a start.
    const from = checkpoint > 0 ? checkpoint : 1;
    const report: ShardReport = { shard, first: log.firstPosition(), head: log.head.position, checkpoint, problem: log.check(from), dropped: 0, action: 'none' };
    const problem = report.problem;
    if (problem === null || args.action !== 'repair') return report;
    if (problem.position <= checkpoint) {
      // The checkpoint holds the effects of this entry: it was durable once. Nothing to drop safely.
      report.action = 'refused';
      report.refusal = 'checkpoint';
      return report;
    }
    if (problem.kind === 'corrupt') {
      if (!args.force) {
        report.action = 'refused';
        report.refusal = 'corrupt';
        return report;
      }
      // A corrupt entry may have been acknowledged, and so may a group after it that other shards
      // logged: dropping this shard's side of it cannot be made consistent.
      const groups = log.groupsFrom(problem.position);
      if (groups.length > 0) {
        report.action = 'refused';
        report.refusal = 'groups';
        report.groups = groups;
        return report;
      }
    }
    report.dropped = await log.truncateFrom(problem.position);
    report.action = 'dropped';
    return report;
  } finally {
    await log.close();
    await checkpoints.close();
  }
}

function describe(r: ShardReport, args: LogArgs): string {
  const where = `shard ${r.shard}: log ${r.first}..${r.head}, checkpoint at ${r.checkpoint}`;
  const p = r.problem;
  if (p === null) return `${where}: ok`;
  const found = `${where}: ${p.kind} at ${p.position} (${p.reason}), ${p.entries_after} stored entr${p.entries_after === 1 ? 'y' : 'ies'} after it`;
  switch (r.action) {
    case 'dropped':
      return p.kind === 'gap'
        ? `${found}\n  dropped ${r.dropped} entr${r.dropped === 1 ? 'y' : 'ies'} from ${p.position} on (after a failed write none of them was acknowledged); the engine can start`
        : `${found}\n  dropped ${r.dropped} entr${r.dropped === 1 ? 'y' : 'ies'} from ${p.position} on (--force: acknowledged transfers among them are lost)`;
    case 'refused':
      if (r.refusal === 'checkpoint') return `${found}\n  not repaired: the checkpoint covers position ${p.position}; restore this shard from a replica or a backup`;
      if (r.refusal === 'groups') {
        return `${found}\n  not repaired: the entries from ${p.position} on hold cross-shard groups (${(r.groups ?? []).join(', ')}) that other shards may have logged; dropping this shard's side cannot be made consistent: restore this shard from a replica or a backup`;
      }
      return `${found}\n  not repaired: a corrupt entry may have been acknowledged; restore this shard from a replica or a backup, or drop it and everything after with --force (acknowledged transfers are lost)`;
    case 'none':
      return args.action === 'check'
        ? `${found}\n  ${p.kind === 'gap' ? 'after a failed write, entries past the gap were never acknowledged: `keel log repair` drops them (if the disk lost data instead, restore from a replica)' : 'a corrupt entry may have been acknowledged: restore from a replica, or see `keel log repair --force`'}`
        : found;
  }
}
