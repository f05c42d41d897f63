// The engine: the set of shard workers of one center, the lock on its data directory, and the
// routing of requests to the shard that owns their partitions.
//
// Accounts map to one of PARTITIONS virtual partitions by a hash of their id, and partitions map
// onto shards. The partition count is fixed for the life of a data directory, so partitions can
// later move between shards and centers without rewriting account ids.

import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ShardHandle, type RecoveryInfo } from './handle.ts';
import { ShardOp, type ShardResult } from './messages.ts';
import type { AccountFilter, QueryFilter } from '../ledger/types.ts';
import type { MetricsJson } from '../metrics/shard.ts';

export const PARTITIONS = 1024;

export interface EngineOptions {
  data_dir: string;
  /** Shard workers. Only 1 until cross-shard commit lands (see docs/sharding.md). */
  shards: number;
  /** Per shard: events queued or in flight before requests are answered `busy`. */
  queue_events_max: number;
}

export class EngineLockedError extends Error {
  readonly code = 'data_dir_locked';
  constructor(dir: string, pid: number) {
    super(`data directory ${dir} is in use by process ${pid}; stop that engine first (or point --data elsewhere)`);
  }
}

export class Engine {
  readonly options: EngineOptions;
  readonly recovery: RecoveryInfo[];
  private readonly handles: ShardHandle[];
  private readonly lock_path: string;
  private readonly committed_listeners = new Set<(shard: number) => void>();

  private constructor(options: EngineOptions, handles: ShardHandle[], recovery: RecoveryInfo[], lock_path: string) {
    this.options = options;
    this.handles = handles;
    this.recovery = recovery;
    this.lock_path = lock_path;
  }

  static async start(options: EngineOptions): Promise<Engine> {
    if (!Number.isInteger(options.shards) || options.shards < 1) throw new RangeError('shards must be a positive integer');
    if (options.shards > 1) {
      throw new RangeError('more than one shard needs cross-shard commit, which is not available yet: run with --shards 1');
    }
    mkdirSync(options.data_dir, { recursive: true });
    const lock_path = acquireLock(options.data_dir);
    const handles: ShardHandle[] = [];
    const recovery: RecoveryInfo[] = [];
    try {
      for (let index = 0; index < options.shards; index++) {
        const started = await ShardHandle.start({
          index,
          dir: join(options.data_dir, `shard-${index}`),
          queue_events_max: options.queue_events_max,
        });
        handles.push(started.handle);
        recovery.push(started.recovery);
      }
    } catch (error) {
      await Promise.all(handles.map((handle) => handle.close()));
      rmSync(lock_path, { force: true });
      throw error;
    }
    return new Engine(options, handles, recovery, lock_path);
  }

  get shard_count(): number {
    return this.handles.length;
  }

  shardOfAccount(account_id: bigint): number {
    return partitionOf(account_id) % this.handles.length;
  }

  createAccounts(count: number, body: Uint8Array): Promise<ShardResult> {
    return this.handles[0].request((id) => [id, ShardOp.create_accounts, { count, body }], count);
  }

  createTransfers(count: number, body: Uint8Array): Promise<ShardResult> {
    const result = this.handles[0].request((id) => [id, ShardOp.create_transfers, { count, body }], count);
    return result.then((value) => {
      if ('status' in value) this.notifyCommitted(0);
      return value;
    });
  }

  /** One page of shard `shard`'s change feed (see Shard.feedRead). */
  feedRead(shard: number, from: number, limit: number, ledgers: number[] | null): Promise<ShardResult> {
    if (!Number.isInteger(shard) || shard < 0 || shard >= this.handles.length) {
      return Promise.resolve({ error: 'internal', message: `no shard ${shard}` });
    }
    return this.handles[shard].request((id) => [id, ShardOp.feed_read, { from, limit, ledgers }], 1);
  }

  /** Calls `listener(shard)` after each durable create_transfers batch; returns an unsubscribe. */
  onCommitted(listener: (shard: number) => void): () => void {
    this.committed_listeners.add(listener);
    return () => this.committed_listeners.delete(listener);
  }

  private notifyCommitted(shard: number): void {
    for (const listener of this.committed_listeners) listener(shard);
  }

  lookupAccounts(ids: bigint[]): Promise<ShardResult> {
    return this.handles[0].request((id) => [id, ShardOp.lookup_accounts, { ids }], 1);
  }

  lookupTransfers(ids: bigint[]): Promise<ShardResult> {
    return this.handles[0].request((id) => [id, ShardOp.lookup_transfers, { ids }], 1);
  }

  getAccountTransfers(filter: AccountFilter): Promise<ShardResult> {
    return this.handles[this.shardOfAccount(filter.account_id)].request((id) => [id, ShardOp.get_account_transfers, { filter }], 1);
  }

  getAccountBalances(filter: AccountFilter): Promise<ShardResult> {
    return this.handles[this.shardOfAccount(filter.account_id)].request((id) => [id, ShardOp.get_account_balances, { filter }], 1);
  }

  queryAccounts(filter: QueryFilter): Promise<ShardResult> {
    return this.handles[0].request((id) => [id, ShardOp.query_accounts, { filter }], 1);
  }

  queryTransfers(filter: QueryFilter): Promise<ShardResult> {
    return this.handles[0].request((id) => [id, ShardOp.query_transfers, { filter }], 1);
  }

  /** Each shard worker's metrics (prom-client JSON), for aggregation by the metrics server. */
  shardMetrics(timeout_ms = 2_000): Promise<MetricsJson[]> {
    return Promise.all(this.handles.map((handle) => handle.metrics(timeout_ms)));
  }

  /** Per shard: events and requests queued or in flight. */
  shardLoads(): Array<{ shard: number; events: number; requests: number }> {
    return this.handles.map((handle) => ({ shard: handle.index, events: handle.load_events, requests: handle.queued_requests }));
  }

  /** Events queued or in flight across all shards. */
  get load_events(): number {
    let total = 0;
    for (const handle of this.handles) total += handle.load_events;
    return total;
  }

  /** Finishes in-flight requests, checkpoints every shard, and releases the data directory. */
  async close(): Promise<void> {
    await Promise.all(this.handles.map((handle) => handle.close()));
    rmSync(this.lock_path, { force: true });
  }
}

/** A 64-bit mix of the id folded to a partition: sequential ids spread evenly. */
export function partitionOf(account_id: bigint): number {
  let lo = Number(account_id & 0xffff_ffffn) | 0;
  let hi = Number((account_id >> 32n) & 0xffff_ffffn) | 0;
  lo = Math.imul(lo ^ (lo >>> 16), 0x85eb_ca6b);
  hi = Math.imul(hi ^ (hi >>> 13), 0xc2b2_ae35);
  let h = lo ^ hi;
  h = Math.imul(h ^ (h >>> 16), 0x7feb_352d);
  h ^= h >>> 15;
  return (h >>> 0) % PARTITIONS;
}

/**
 * One engine per data directory: a lock file holding the owner's pid. A stale lock (its process
 * is gone, e.g. after kill -9) is taken over.
 */
function acquireLock(dir: string): string {
  const path = join(dir, 'keel.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return path;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0 && (pid === process.pid || isAlive(pid))) throw new EngineLockedError(dir, pid);
      rmSync(path, { force: true });
    }
  }
  throw new Error(`could not lock data directory ${dir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed engine that its parent has not reaped yet is a zombie: signal 0 still reaches it.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}
