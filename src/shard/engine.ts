// The engine: the set of shard workers of one center, the lock on its data directory, the
// routing of requests to the shards that own their partitions, and the coordination of
// cross-shard groups (src/shard/group.ts, docs/sharding.md).
//
// Accounts map to one of PARTITIONS virtual partitions by a hash of their id, and partitions map
// onto shards. The partition count is fixed for the life of a data directory, so partitions can
// later move between shards and centers without rewriting account ids.

import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ShardHandle, type RecoveryInfo, type ReplicaOutcome, type StartedShard } from './handle.ts';
import { ShardOp, type GroupEntryWire, type LogHeadWire, type ShardResult } from './messages.ts';
import type { Account, AccountFilter, QueryFilter, Transfer } from '../ledger/types.ts';
import { AccountFlags, EVENTS_PER_REQUEST_MAX, QueryFilterFlags, TransferFlags } from '../ledger/types.ts';
import type { MetricsJson } from '../metrics/shard.ts';
import { ACCOUNT_INPUT_BYTES, TRANSFER_BYTES, recordFlags } from '../storage/codec.ts';
import { pushIndexed } from '../ledger/sorted.ts';
import { Sequencer } from './clock.ts';
import { GroupKind, decodeGroupEntry, groupEntryHeader, type GroupKindValue } from './group.ts';
import type { IdFilter } from './idfilter.ts';
import { PARTITIONS, shardOfAccount } from './partition.ts';
import { SHARDS_MAX, routeAccounts, routeTransfers, type Route } from './router.ts';

export { PARTITIONS, partitionOf } from './partition.ts';

export interface EngineOptions {
  data_dir: string;
  /** Shard workers (1..SHARDS_MAX). Fixed for the life of a data directory. */
  shards: number;
  /** Per shard: events queued or in flight before requests are answered `busy`. */
  queue_events_max: number;
  /** The change feed serves transfers of the last this many ms; older cursors expire. 0 or absent: all. */
  feed_retention_ms?: number;
  /** A center of a cluster (src/replication/): absent for a single center. */
  replication?: EngineReplication;
  /** Each shard worker's old-generation heap limit in MiB (`--shard-heap-mb`); absent: V8's default. */
  shard_heap_mb?: number;
  /** A shard whose thread makes no progress this long is failed (`--shard-stall-ms`); 0 or absent: never. */
  shard_stall_ms?: number;
  /**
   * The engine stopped serving (a shard crashed, hung or lost its storage): every request is answered
   * `unavailable` from then on, and only a restart recovers. Called once; not for a close.
   */
  on_failed?: (message: string) => void;
  /** A shard's live heap crossed a mark: writes to it are refused (`full`) or resume. */
  on_memory?: (shard: number, full: boolean, live_bytes: number, limit_bytes: number) => void;
}

/**
 * How a center's engine takes part in replication (docs/replication.md). A leader serves writes
 * and ships every durable entry; its replies wait for `setCommitted`. A follower serves no
 * writes: it appends the leader's entries (`appendReplica`) and applies them once committed.
 */
export interface EngineReplication {
  role: 'leader' | 'follower';
  epoch: number;
  on_entries?: (shard: number, first: number, entries: Uint8Array[]) => void;
  on_replica?: (shard: number, outcome: ReplicaOutcome) => void;
}

export class EngineLockedError extends Error {
  readonly code = 'data_dir_locked';
  constructor(dir: string, pid: number) {
    super(`data directory ${dir} is in use by process ${pid}; stop that engine first (or point --data elsewhere)`);
  }
}

export class ShardCountError extends Error {
  readonly code = 'shard_count_mismatch';
  constructor(dir: string, stored: number, asked: number) {
    super(`data directory ${dir} holds ${stored} shard(s); start it with --shards ${stored} (asked for ${asked}: accounts cannot move between shards yet)`);
  }
}

/** A cross-shard group between dispatch and execution. */
interface GroupRun {
  gid: number;
  participants: number[];
  count: number;
  read_sets: Array<Uint8Array | null>;
  arrived: number;
}

type CreateResultValue = { status: number[]; timestamp: bigint[] };

/** A request waiting to leave as (part of) a cross-shard group. */
interface QueuedGroup {
  kind: GroupKindValue;
  count: number;
  body: Uint8Array;
  participants: number[];
  /** Per event, whether its id may exist anywhere (see Route); null: assume so for all. */
  known: Uint8Array | null;
  resolve: (result: ShardResult) => void;
}

type RecordBytes = typeof TRANSFER_BYTES | typeof ACCOUNT_INPUT_BYTES;

function importedFlag(item: QueuedGroup, record_bytes: RecordBytes): boolean {
  const flag = record_bytes === TRANSFER_BYTES ? TransferFlags.imported : AccountFlags.imported;
  return item.count > 0 && (recordFlags(item.body, 0, record_bytes) & flag) !== 0;
}

/** A request whose last event is linked ends in linked_event_chain_open: nothing may follow it in a merged group. */
function opensChain(item: QueuedGroup, record_bytes: RecordBytes): boolean {
  // `linked` is bit 0 for accounts and transfers alike.
  return item.count === 0 || (recordFlags(item.body, item.count - 1, record_bytes) & TransferFlags.linked) !== 0;
}

const LAYOUT_FILE = 'keel.json';
/** Group ids are logged as u64 but handled as JS numbers. */
const GID_MAX = Number.MAX_SAFE_INTEGER;

export class Engine {
  readonly options: EngineOptions;
  readonly recovery: RecoveryInfo[];
  private handles: ShardHandle[] = [];
  private role: 'single' | 'leader' | 'follower';
  /** Each shard's log head when the engine started (where a replica stands). */
  readonly log_heads: LogHeadWire[] = [];
  private filters: IdFilter[] = [];
  private readonly lock_path: string;
  private readonly sequencer = new Sequencer(0n);
  private readonly pulses_in_flight = new Set<number>();
  private started = false;
  private readonly early_due: Array<[number, 'local' | 'foreign']> = [];
  private readonly committed_listeners = new Set<(shard: number) => void>();
  /**
   * Groups dispatched whose participants have not all read yet: at most one, because new groups
   * wait while one reads (runGroup).
   */
  private readonly groups = new Map<number, GroupRun>();
  private next_gid = 1;
  private failure: string | null = null;
  /** Set when close begins: new writes are refused, those already handed to shards finish. */
  private closing = false;
  private foreign_pulse_queued = false;
  /** Cross-shard groups run and rolled forward, for operators and tests. */
  readonly group_stats = { groups: 0, requests: 0, events: 0, rolled_forward: 0 };
  private readonly group_queue: QueuedGroup[] = [];
  /** `close` waiting for the groups in flight and queued to finish. */
  private groups_idle_waiters: Array<() => void> = [];
  private group_queue_events = 0;
  private group_flush_scheduled = false;

  private constructor(options: EngineOptions, lock_path: string) {
    this.options = options;
    this.role = options.replication?.role ?? 'single';
    this.recovery = [];
    this.lock_path = lock_path;
  }

  static async start(options: EngineOptions): Promise<Engine> {
    if (!Number.isInteger(options.shards) || options.shards < 1 || options.shards > SHARDS_MAX) {
      throw new RangeError(`shards must be an integer from 1 to ${SHARDS_MAX}`);
    }
    mkdirSync(options.data_dir, { recursive: true });
    const lock_path = acquireLock(options.data_dir);
    const engine = new Engine(options, lock_path);
    const last_gids: number[] = [];
    let starts: Promise<StartedShard>[] = [];
    try {
      checkLayout(options.data_dir, options.shards);
      starts = Array.from({ length: options.shards }, (_, index) =>
        ShardHandle.start({
          index,
          dir: join(options.data_dir, `shard-${index}`),
          shard_count: options.shards,
          feed_retention_ms: options.feed_retention_ms ?? 0,
          queue_events_max: options.queue_events_max,
          heap_mb: options.shard_heap_mb,
          stall_ms: options.shard_stall_ms ?? 0,
          on_memory: options.on_memory,
          role: options.replication?.role ?? 'single',
          epoch: options.replication?.epoch ?? 1,
          on_entries: options.replication?.on_entries,
          on_replica: options.replication?.on_replica,
          on_group_read: (shard, gid, read_set) => engine.onGroupRead(shard, gid, read_set),
          on_due: (shard, kind) => engine.onDue(shard, kind),
          on_failed: (shard, message) => engine.onShardFailed(shard, message),
        }).then((value) => {
          engine.handles[index] = value.handle;
          return value;
        }),
      );
      const started = await Promise.all(starts);
      for (const value of started) {
        engine.recovery.push(value.recovery);
        engine.log_heads.push(value.log_head);
        engine.filters.push(value.filter);
        last_gids.push(value.last_gid);
        engine.sequencer.observe(value.last_timestamp);
      }
      // A follower's logs mirror the leader's: groups half logged are completed by the leader's
      // entries, never redone here (its promotion reopens the engine as a leader, which does).
      if (options.replication?.role === 'follower') engine.next_gid = Math.max(0, ...last_gids) + 1;
      else await engine.rollForward(last_gids);
      engine.started = true;
      // A shard that failed while the others still recovered is not reported (on_failed is for a
      // serving engine): the start fails instead.
      if (engine.failure !== null) throw new Error(engine.failure);
      // Pulses asked for while shards recovered run now, after roll-forward and with the sequencer
      // above every shard's timestamps.
      for (const [shard, kind] of engine.early_due) engine.onDue(shard, kind);
      engine.early_due.length = 0;
    } catch (error) {
      // Shards still recovering when another failed would otherwise be left running, their stores
      // open after the lock is gone (a center reopens an engine in the same process).
      await Promise.allSettled(starts);
      await Promise.all(engine.handles.filter((handle) => handle !== undefined).map((handle) => handle.close()));
      rmSync(lock_path, { force: true });
      throw error;
    }
    return engine;
  }

  /**
   * Recovery across shards: a group that some participants logged before a crash and others did
   * not is redone on the others from a logged entry (it carries everything every participant
   * read), so that it ends applied everywhere. A group no participant logged never happened and
   * was never acknowledged.
   */
  private async rollForward(last_gids: number[]): Promise<void> {
    let max_gid = Math.max(0, ...last_gids);
    if (this.handles.length > 1) {
      const after = Math.min(...last_gids);
      const logged = await Promise.all(this.handles.map((handle) => handle.groupEntriesAfter(after)));
      const by_gid = new Map<number, GroupEntryWire>();
      for (const entries of logged) for (const entry of entries) if (!by_gid.has(entry[0])) by_gid.set(entry[0], entry);
      const ordered = [...by_gid.values()].sort((a, b) => a[0] - b[0]);
      for (const [gid, timestamp, body] of ordered) {
        max_gid = Math.max(max_gid, gid);
        this.sequencer.observe(timestamp);
        // The filters were built before this: ids a group brings to a shard must be findable there.
        const entry = decodeGroupEntry(body);
        if (entry.kind !== GroupKind.transfers) continue;
        for (let i = 0; i < entry.count; i++) {
          const id = new DataView(entry.body.buffer, entry.body.byteOffset + i * TRANSFER_BYTES, 8).getBigUint64(0, true);
          for (const shard of entry.participants) this.filters[shard].addId(id);
        }
      }
      await Promise.all(
        this.handles.map((handle, shard) => {
          const missing = ordered.filter(([gid, , body]) => gid > last_gids[shard] && groupEntryHeader(body).participants.includes(shard));
          if (missing.length === 0) return Promise.resolve();
          this.group_stats.rolled_forward += missing.length;
          return handle.rollForward(missing);
        }),
      );
    }
    this.next_gid = max_gid + 1;
  }

  get shard_count(): number {
    return this.handles.length;
  }

  shardOfAccount(account_id: bigint): number {
    return shardOfAccount(account_id, this.handles.length);
  }

  // ---------------------------------------------------------------------------------------------
  // Commands

  /** A follower's engine serves no writes. */
  get follower(): boolean {
    return this.role === 'follower';
  }

  /**
   * A follower's engine becomes the leader's of epoch `epoch` in place, without a restart: every
   * shard applies what it had appended and leads; routing filters, the sequencer and group ids
   * start from the shards as they stand, and groups some shards logged and others not are rolled
   * forward (as at a start). Writes are accepted once it resolves.
   */
  async promote(epoch: number): Promise<{ cut_entries: number }> {
    if (this.role !== 'follower') throw new Error('only a follower is promoted');
    this.started = false;
    const cut_entries = await this.cutPartialGroups();
    const promoted = await Promise.all(this.handles.map((handle) => handle.promote(epoch)));
    this.filters = promoted.map((p) => p.filter);
    promoted.forEach((p, shard) => {
      this.sequencer.observe(p.last_timestamp);
      this.log_heads[shard] = p.log_head;
    });
    this.role = 'leader';
    await this.rollForward(promoted.map((p) => p.last_gid));
    this.started = true;
    if (this.failure !== null) throw new Error(this.failure);
    for (const [shard, kind] of this.early_due) this.onDue(shard, kind);
    this.early_due.length = 0;
    return { cut_entries };
  }

  /**
   * Before a follower leads: a cross-shard group in the uncommitted tail of some of its shards
   * but missing from another participant was never acknowledged (a leader commits a shard past a
   * group entry only once every participant's entry is held by every in-sync center), and the
   * entries after it on those shards were not either. It cannot be redone here (the shard that
   * lacks it also lacks what came before it), so it is cut away, with everything after it, and
   * so is any group that loses one of its entries that way.
   */
  private async cutPartialGroups(): Promise<number> {
    if (this.handles.length === 1) return 0;
    const tails = await Promise.all(this.handles.map((handle) => handle.groupPositions(0)));
    const position = tails.map((tail) => new Map(tail.groups.map(([gid, at]) => [gid, at])));
    const participants = new Map<number, number[]>();
    for (const tail of tails) for (const [gid, , shards] of tail.groups) participants.set(gid, shards);
    const cut = tails.map(() => Number.POSITIVE_INFINITY);
    for (let changed = true; changed; ) {
      changed = false;
      for (const [gid, shards] of participants) {
        const whole = shards.every((s) => gid <= tails[s].last_gid || (position[s].get(gid) ?? Number.POSITIVE_INFINITY) < cut[s]);
        if (whole) continue;
        for (const s of shards) {
          const at = position[s].get(gid);
          if (at !== undefined && at < cut[s]) {
            cut[s] = at;
            changed = true;
          }
        }
      }
    }
    let removed = 0;
    for (let shard = 0; shard < cut.length; shard++) if (Number.isFinite(cut[shard])) removed += await this.handles[shard].cutTail(cut[shard]);
    return removed;
  }

  /** [gid, position, participants] of shard `shard`'s group entries from position `from`. */
  async groupPositions(shard: number, from: number): Promise<Array<[number, number, number[]]>> {
    return (await this.handles[shard].groupPositions(from)).groups;
  }

  createAccounts(count: number, body: Uint8Array): Promise<ShardResult> {
    if (this.failure !== null) return Promise.resolve({ error: 'unavailable', message: this.failure });
    if (this.closing) return Promise.resolve(CLOSING);
    if (this.follower) return Promise.resolve(NOT_LEADER);
    const route: Route = this.handles.length === 1 ? ONE_SHARD : routeAccounts(body, count, this.handles.length);
    return this.runRoute(route, GroupKind.accounts, count, body, ACCOUNT_INPUT_BYTES);
  }

  createTransfers(count: number, body: Uint8Array): Promise<ShardResult> {
    if (this.failure !== null) return Promise.resolve({ error: 'unavailable', message: this.failure });
    if (this.closing) return Promise.resolve(CLOSING);
    if (this.follower) return Promise.resolve(NOT_LEADER);
    const route: Route = this.handles.length === 1 ? ONE_SHARD : routeTransfers(body, count, this.filters);
    return this.runRoute(route, GroupKind.transfers, count, body, TRANSFER_BYTES);
  }

  private runRoute(route: Route, kind: GroupKindValue, count: number, body: Uint8Array, record_bytes: number): Promise<ShardResult> {
    const op = kind === GroupKind.accounts ? ShardOp.create_accounts : ShardOp.create_transfers;
    const full = this.memoryRefusal(route);
    if (full !== null) return Promise.resolve(full);
    if (route.kind === 'group') return this.runGroup(kind, count, body, route.participants, route.known);
    const parts = route.kind === 'one' ? null : [...route.parts];
    if (parts === null || parts.length === 1) {
      const shard = parts === null ? 0 : parts[0][0];
      const handle = this.handles[shard];
      if (!handle.hasRoom(count)) return Promise.resolve(busy(shard));
      const first = this.sequencer.reserve(count) - BigInt(Math.max(count, 1)) + 1n;
      return handle.request((id) => [id, op, { count, body, first, offsets: null }], count, true).then((value) => {
        if ('status' in value && kind === GroupKind.transfers) this.notifyCommitted(shard);
        return value;
      });
    }
    // Every part must be queued, or none: a request is answered whole.
    for (const [shard, indexes] of parts) if (!this.handles[shard].hasRoom(indexes.length)) return Promise.resolve(busy(shard));
    // One range for the whole request, in request order: each part takes its events' timestamps.
    const first = this.sequencer.reserve(count) - BigInt(count) + 1n;
    // A copy (not Buffer#slice, which is a view at the same offset) when the bytes are not u32-aligned.
    const aligned = body.byteOffset % 4 === 0 ? body : new Uint8Array(body);
    const words = new Uint32Array(aligned.buffer, aligned.byteOffset, (count * record_bytes) / 4);
    const record_words = record_bytes / 4;
    const pending = parts.map(([shard, indexes]) => {
      const part = new Uint32Array(indexes.length * record_words);
      const offsets = new Uint32Array(indexes.length);
      for (let k = 0; k < indexes.length; k++) {
        const from = indexes[k] * record_words;
        const to = k * record_words;
        for (let w = 0; w < record_words; w++) part[to + w] = words[from + w];
        offsets[k] = indexes[k];
      }
      const part_body = new Uint8Array(part.buffer);
      return this.handles[shard].request((id) => [id, op, { count: indexes.length, body: part_body, first, offsets }], indexes.length, true);
    });
    return Promise.all(pending).then((results) => {
      const status: number[] = new Array(count);
      const timestamp: bigint[] = new Array(count);
      for (let p = 0; p < parts.length; p++) {
        const result = results[p];
        if (!('status' in result)) return result;
        const [shard, indexes] = parts[p];
        indexes.forEach((index, k) => {
          status[index] = result.status[k];
          timestamp[index] = result.timestamp[k];
        });
        if (kind === GroupKind.transfers) this.notifyCommitted(shard);
      }
      return { status, timestamp };
    });
  }

  private onDue(shard: number, kind: 'local' | 'foreign'): void {
    // Starting or being promoted: pulses wait for roll-forward and the sequencer.
    if (!this.started) {
      this.early_due.push([shard, kind]);
      return;
    }
    if (this.follower) return; // the leader's pulses arrive in its log
    if (kind === 'local') this.runPulse(shard);
    else this.runForeignPulse();
  }

  /** The sequencer times every change: a shard with a due pending transfer gets a pulse from here. */
  private runPulse(shard: number): void {
    if (this.failure !== null || this.pulses_in_flight.has(shard)) return;
    const handle = this.handles[shard];
    this.pulses_in_flight.add(shard);
    const timestamp = this.sequencer.reserve(1);
    void handle.request((id) => [id, ShardOp.pulse, { timestamp }], 1, true).finally(() => this.pulses_in_flight.delete(shard));
  }

  /**
   * Runs a cross-shard group: queued on every participant in this same event turn (so every
   * shard orders it the same way against everything else), read at each participant's barrier,
   * executed by each over the union, acknowledged once every participant's entry is durable.
   *
   * Group commit for groups: while one group's participants are reading, new groups wait here
   * and then leave as one merged group (as a shard merges small batches): one barrier for many
   * requests. The wait is bounded by `queue_events_max` events, past which requests are `busy`.
   */
  private runGroup(kind: GroupKindValue, count: number, body: Uint8Array, participants: number[], known: Uint8Array | null): Promise<ShardResult> {
    if (this.group_queue_events + count > this.options.queue_events_max && this.group_queue.length > 0) {
      return Promise.resolve({ error: 'busy', message: `${this.group_queue_events} cross-shard events are waiting; retry later` });
    }
    return new Promise((resolve) => {
      this.group_queue.push({ kind, count, body, participants, known, resolve });
      this.group_queue_events += count;
      this.scheduleGroupFlush();
    });
  }

  /**
   * Writes to a shard at its memory capacity are refused whole, before anything is queued: `busy`
   * (certainly not applied; PROTOCOL.md section 2), with the reason and what to do.
   */
  private memoryRefusal(route: Route): ShardResult | null {
    if (route.kind === 'one') {
      const full = this.handles[0].memory_full;
      return full === null ? null : { error: 'busy', message: full };
    }
    for (const shard of route.kind === 'split' ? route.parts.keys() : route.participants) {
      const full = this.handles[shard].memory_full;
      if (full !== null) return { error: 'busy', message: full };
    }
    return null;
  }

  /** Wakes `close` once no cross-shard group is in flight or queued. */
  private notifyGroupsIdle(): void {
    if (this.groups.size === 0 && this.group_queue.length === 0 && this.groups_idle_waiters.length > 0) {
      const waiters = this.groups_idle_waiters;
      this.groups_idle_waiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  private scheduleGroupFlush(): void {
    this.notifyGroupsIdle();
    if (this.group_flush_scheduled || this.groups.size > 0 || this.group_queue.length === 0) return;
    this.group_flush_scheduled = true;
    queueMicrotask(() => {
      this.group_flush_scheduled = false;
      if (this.groups.size > 0) return;
      const merged = this.takeMergeable();
      if (merged.length > 0) this.dispatchGroup(merged);
    });
  }

  /** The longest run at the head of the queue that can execute as one batch. */
  private takeMergeable(): QueuedGroup[] {
    const first = this.group_queue[0];
    if (first === undefined) return [];
    const run: QueuedGroup[] = [first];
    let events = first.count;
    if (first.kind !== GroupKind.pulse) {
      const record_bytes = first.kind === GroupKind.accounts ? ACCOUNT_INPUT_BYTES : TRANSFER_BYTES;
      const imported = importedFlag(first, record_bytes);
      let open = opensChain(first, record_bytes);
      for (let k = 1; k < this.group_queue.length && !open; k++) {
        const next = this.group_queue[k];
        if (next.kind !== first.kind || next.count === 0 || events + next.count > EVENTS_PER_REQUEST_MAX) break;
        if (importedFlag(next, record_bytes) !== imported) break;
        run.push(next);
        events += next.count;
        open = opensChain(next, record_bytes);
      }
    }
    this.group_queue.splice(0, run.length);
    this.group_queue_events -= events;
    return run;
  }

  private dispatchGroup(run: QueuedGroup[]): void {
    const kind = run[0].kind;
    let count = 0;
    const union = new Set<number>();
    for (const item of run) {
      count += item.count;
      for (const shard of item.participants) union.add(shard);
    }
    const participants = [...union].sort((a, b) => a - b);
    const answer = (result: ShardResult): void => {
      if (!('status' in result)) {
        for (const item of run) item.resolve(result);
        return;
      }
      let at = 0;
      for (const item of run) {
        item.resolve({ status: result.status.slice(at, at + item.count), timestamp: result.timestamp.slice(at, at + item.count) });
        at += item.count;
      }
    };
    for (const shard of participants) {
      const full = this.handles[shard].memory_full;
      // Groups that waited in the queue while a participant filled up are refused too.
      if (full !== null && kind !== GroupKind.pulse) {
        answer({ error: 'busy', message: full });
        this.scheduleGroupFlush();
        return;
      }
      if (!this.handles[shard].hasRoom(count)) {
        answer(busy(shard));
        this.scheduleGroupFlush();
        return;
      }
    }
    if (this.failure !== null) {
      answer({ error: 'unavailable', message: this.failure });
      return;
    }
    if (this.next_gid >= GID_MAX) {
      answer({ error: 'internal', message: 'cross-shard group ids are exhausted' });
      return;
    }
    let body: Uint8Array;
    let known: Uint8Array | null;
    if (run.length === 1) {
      body = run[0].body;
      known = run[0].known;
    } else {
      body = new Uint8Array(run.reduce((n, item) => n + item.body.byteLength, 0));
      let offset = 0;
      for (const item of run) {
        body.set(item.body, offset);
        offset += item.body.byteLength;
      }
      known = mergeKnown(run, count);
    }
    const gid = this.next_gid++;
    const timestamp = this.sequencer.reserve(count);
    this.groups.set(gid, { gid, participants, count, read_sets: participants.map(() => null), arrived: 0 });
    this.group_stats.groups++;
    this.group_stats.events += count;
    this.group_stats.requests += run.length;
    const results = participants.map((shard) =>
      this.handles[shard].request((id) => [id, ShardOp.group, { gid, kind, participants, count, body, timestamp, known }], Math.max(count, 1), true).then((value) => {
        // A participant that answers with an error before the group executes (it could not read)
        // leaves the others at the barrier: the engine stops, which releases them.
        if ('error' in value && this.groups.has(gid)) this.onShardFailed(shard, `cross-shard group ${gid}: ${value.message}`);
        return value;
      }),
    );
    void Promise.all(results).then((values) => {
      if (this.groups.delete(gid)) {
        // Answered without every participant reading (a shard failed): stop holding the queue.
        this.scheduleGroupFlush();
      }
      for (const value of values) {
        if (!('status' in value)) {
          answer(value);
          return;
        }
      }
      const first = values[0] as CreateResultValue;
      for (const value of values) {
        if (!sameResult(first, value as CreateResultValue)) {
          // The state machine is deterministic: participants that disagree mean a bug, and the
          // engine must stop before it acknowledges anything built on it.
          this.onShardFailed(-1, `cross-shard group ${gid}: participants computed different results`);
          answer({ error: 'internal', message: `cross-shard group ${gid} diverged; the engine stopped` });
          return;
        }
      }
      if (kind === GroupKind.transfers) for (const shard of participants) this.notifyCommitted(shard);
      answer(first);
    });
  }

  private onGroupRead(shard: number, gid: number, read_set: Uint8Array): void {
    const run = this.groups.get(gid);
    // After a failure every group still reading was abandoned (its participants told to leave).
    if (run === undefined || this.failure !== null) return;
    const at = run.participants.indexOf(shard);
    if (at < 0 || run.read_sets[at] !== null) return;
    run.read_sets[at] = read_set;
    run.arrived++;
    if (run.arrived < run.participants.length) return;
    const read_sets = run.read_sets as Uint8Array[];
    for (const participant of run.participants) this.handles[participant].groupExec(gid, read_sets);
    this.groups.delete(gid);
    this.scheduleGroupFlush();
  }

  /** A shard holds a due cross-shard pending transfer: an empty group on every shard expires it. */
  private runForeignPulse(): void {
    // One pulse group at a time: signals that arrive while it waits or runs are covered by it
    // (each participant reads everything due by its timestamp), and a shard signals again after
    // it applied, if anything is still due.
    if (this.foreign_pulse_queued || this.failure !== null) return;
    this.foreign_pulse_queued = true;
    const all = Array.from({ length: this.options.shards }, (_, shard) => shard);
    void this.runGroup(GroupKind.pulse, 0, new Uint8Array(0), all, null).then((result) => {
      this.foreign_pulse_queued = false;
      if ('error' in result && result.error === 'busy') setTimeout(() => this.runForeignPulse(), 50).unref();
    });
  }

  private onShardFailed(shard: number, message: string): void {
    if (this.failure !== null) return;
    // A shard that stopped may hold half of a cross-shard group: nothing more is acknowledged
    // anywhere until a restart recovers every shard together.
    this.failure = shard >= 0 ? `shard ${shard} stopped (${message}); restart the engine to recover` : message;
    if (!this.closing && this.started) this.options.on_failed?.(this.failure);
    const waiting = this.group_queue.splice(0);
    this.group_queue_events = 0;
    for (const item of waiting) item.resolve({ error: 'unavailable', message: this.failure });
    this.notifyGroupsIdle();
    // Groups still waiting for reads will never execute: their participants leave the barrier
    // (or skip the group) unapplied, and answer `unavailable`; a dead shard's handle answers too.
    for (const run of this.groups.values()) for (const participant of run.participants) this.handles[participant]?.groupAbort(run.gid);
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

  // ---------------------------------------------------------------------------------------------
  // Queries. Every sub-request of one query is queued on its shards in the same event turn, as
  // groups are, so a query sees each group on all of its shards or on none.

  lookupAccounts(ids: bigint[]): Promise<ShardResult> {
    if (this.handles.length === 1) return this.handles[0].request((id) => [id, ShardOp.lookup_accounts, { ids }], 1);
    const by_shard = new Map<number, bigint[]>();
    for (const id of ids) pushIndexed(by_shard, this.shardOfAccount(id), id);
    return this.gather(by_shard, (shard_ids) => (id) => [id, ShardOp.lookup_accounts, { ids: shard_ids }]).then((results) => {
      const found = new Map<bigint, Account>();
      for (const result of results) {
        if (!('accounts' in result)) return result;
        for (const account of result.accounts) found.set(account.id, account);
      }
      return { accounts: inOrder(ids, found) };
    });
  }

  lookupTransfers(ids: bigint[]): Promise<ShardResult> {
    if (this.handles.length === 1) return this.handles[0].request((id) => [id, ShardOp.lookup_transfers, { ids }], 1);
    const by_shard = new Map<number, bigint[]>();
    // A follower's filters are those of its start: the leader's entries bring ids they lack.
    const filtered = !this.follower;
    for (const id of ids) {
      for (let shard = 0; shard < this.filters.length; shard++) if (!filtered || this.filters[shard].mayHaveId(id)) pushIndexed(by_shard, shard, id);
    }
    return this.gather(by_shard, (shard_ids) => (id) => [id, ShardOp.lookup_transfers, { ids: shard_ids }]).then((results) => {
      const found = new Map<bigint, Transfer>();
      for (const result of results) {
        if (!('transfers' in result)) return result;
        for (const transfer of result.transfers) found.set(transfer.id, transfer);
      }
      return { transfers: inOrder(ids, found) };
    });
  }

  getAccountTransfers(filter: AccountFilter): Promise<ShardResult> {
    return this.handles[this.shardOfAccount(filter.account_id)].request((id) => [id, ShardOp.get_account_transfers, { filter }], 1);
  }

  getAccountBalances(filter: AccountFilter): Promise<ShardResult> {
    return this.handles[this.shardOfAccount(filter.account_id)].request((id) => [id, ShardOp.get_account_balances, { filter }], 1);
  }

  queryAccounts(filter: QueryFilter): Promise<ShardResult> {
    if (this.handles.length === 1) return this.handles[0].request((id) => [id, ShardOp.query_accounts, { filter }], 1);
    return this.gather(this.everyShard(), () => (id) => [id, ShardOp.query_accounts, { filter }]).then((results) => {
      const lists: Account[][] = [];
      for (const result of results) {
        if (!('accounts' in result)) return result;
        lists.push(result.accounts);
      }
      return { accounts: mergeByTimestamp(lists, filter) };
    });
  }

  queryTransfers(filter: QueryFilter): Promise<ShardResult> {
    if (this.handles.length === 1) return this.handles[0].request((id) => [id, ShardOp.query_transfers, { filter }], 1);
    return this.gather(this.everyShard(), () => (id) => [id, ShardOp.query_transfers, { filter }]).then((results) => {
      const lists: Transfer[][] = [];
      for (const result of results) {
        if (!('transfers' in result)) return result;
        lists.push(result.transfers);
      }
      // A cross-shard transfer is kept by both of its shards: the merge keeps one.
      return { transfers: mergeByTimestamp(lists, filter) };
    });
  }

  private everyShard(): Map<number, null> {
    return new Map(this.handles.map((_, shard) => [shard, null]));
  }

  /** Sends one sub-request per shard in this event turn and waits for all of them. */
  private gather<T>(
    by_shard: Map<number, T>,
    make: (part: T) => (id: number) => import('./messages.ts').ShardRequest,
  ): Promise<ShardResult[]> {
    if (this.failure !== null) return Promise.resolve([{ error: 'unavailable', message: this.failure }]);
    const pending: Promise<ShardResult>[] = [];
    for (const [shard, part] of by_shard) pending.push(this.handles[shard].request(make(part), 1));
    return Promise.all(pending);
  }

  // ---------------------------------------------------------------------------------------------
  // Replication (src/replication/ drives these).

  /** Whether the engine stopped serving (a shard failed), and why. */
  get failed(): string | null {
    return this.failure;
  }

  /** Everything up to `position` of shard `shard`'s log is held by every in-sync replica. */
  setCommitted(shard: number, position: number): void {
    this.handles[shard].setCommitted(position);
    // A follower's feed subscribers learn of new transfers from the commit position (the leader's
    // learn from the replies of its own writes).
    if (this.role === 'follower') this.notifyCommitted(shard);
  }

  /** A shard's commit position as this engine knows it. */
  committed(shard: number): number {
    return this.handles[shard].committed;
  }

  /** A follower: appends the leader's entries to shard `shard` (acknowledged via on_replica). */
  appendReplica(shard: number, entries: Uint8Array[], tag: number): void {
    this.handles[shard].appendReplica(entries, tag);
  }

  /** Copies shard `shard`'s last checkpoint into the empty directory `dir`. */
  snapshot(shard: number, dir: string): Promise<void> {
    return this.handles[shard].snapshot(dir);
  }

  /** Every shard's log head once what it appended is durable: where a follower stands. */
  durableHeads(): Promise<LogHeadWire[]> {
    return Promise.all(this.handles.map((handle) => handle.durableHead()));
  }

  /** Shard `shard`'s stored entries from `from`, at most `limit`. */
  storedEntries(shard: number, from: number, limit: number): Promise<Uint8Array[]> {
    return this.handles[shard].storedEntries(from, limit);
  }

  /** Where a replica whose shard `shard` log head is `head` agrees with this one. */
  agree(shard: number, head: LogHeadWire): Promise<{ agree: number; head: number }> {
    return this.handles[shard].agree(head);
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
    this.closing = true;
    // Cross-shard groups in flight need their participants' reads and executions to finish: the
    // shards close only once none is left (a group whose participant fails is failed by then).
    if (this.groups.size > 0 || this.group_queue.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.groups_idle_waiters.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, GROUPS_DRAIN_MS_MAX))),
      ]);
      clearTimeout(timer);
    }
    await Promise.all(this.handles.map((handle) => handle.close()));
    rmSync(this.lock_path, { force: true });
  }
}

const ONE_SHARD: Route = { kind: 'one' };

/** How long `close` waits for cross-shard groups in flight before closing the shards anyway. */
const GROUPS_DRAIN_MS_MAX = 10_000;

const CLOSING: ShardResult = { error: 'unavailable', message: 'the engine is shutting down; retry once it is back (or at another center)' };
const NOT_LEADER: ShardResult = { error: 'unavailable', message: 'this center follows; send writes to the leader center' };

function busy(shard: number): ShardResult {
  return { error: 'busy', message: `shard ${shard} has too many events queued; retry later` };
}

function sameResult(a: CreateResultValue, b: CreateResultValue): boolean {
  if (a.status.length !== b.status.length) return false;
  for (let i = 0; i < a.status.length; i++) if (a.status[i] !== b.status[i] || a.timestamp[i] !== b.timestamp[i]) return false;
  return true;
}

/** The merged group's `known` flags, in event order: an item without them counts as all known. */
function mergeKnown(run: readonly QueuedGroup[], count: number): Uint8Array | null {
  if (run.every((item) => item.known === null)) return null;
  const known = new Uint8Array(count);
  let at = 0;
  for (const item of run) {
    if (item.known === null) known.fill(1, at, at + item.count);
    else known.set(item.known, at);
    at += item.count;
  }
  return known;
}

function inOrder<T>(ids: readonly bigint[], found: Map<bigint, T>): T[] {
  const out: T[] = [];
  for (const id of ids) {
    const value = found.get(id);
    if (value !== undefined) out.push(value);
  }
  return out;
}

/** Merges per-shard results (each in the filter's order) into one page, one copy per id. */
function mergeByTimestamp<T extends { id: bigint; timestamp: bigint }>(lists: T[][], filter: QueryFilter): T[] {
  const reversed = (filter.flags & QueryFilterFlags.reversed) !== 0;
  const all = lists.flat();
  all.sort((a, b) => (a.timestamp === b.timestamp ? 0 : (a.timestamp < b.timestamp) !== reversed ? -1 : 1));
  const out: T[] = [];
  for (const item of all) {
    if (out.length > 0 && out[out.length - 1].id === item.id && out[out.length - 1].timestamp === item.timestamp) continue;
    out.push(item);
    if (out.length >= filter.limit) break;
  }
  return out;
}

/**
 * The shard count is part of a data directory's layout: accounts live on the shard their
 * partition maps to, so a restart with another count would look for them in the wrong place.
 */
function checkLayout(dir: string, shards: number): void {
  const path = join(dir, LAYOUT_FILE);
  if (existsSync(path)) {
    const layout = JSON.parse(readFileSync(path, 'utf8')) as { partitions?: number; shards?: number };
    if (layout.partitions !== PARTITIONS) throw new Error(`${path} says ${layout.partitions} partitions; this engine uses ${PARTITIONS}`);
    if (layout.shards !== shards) throw new ShardCountError(dir, layout.shards ?? 0, shards);
    return;
  }
  // A directory from before the layout file had exactly one shard.
  if (existsSync(join(dir, 'shard-0')) && shards !== 1) throw new ShardCountError(dir, 1, shards);
  writeFileSync(path, `${JSON.stringify({ format: 1, partitions: PARTITIONS, shards }, null, 2)}\n`);
}

/** The shard count a data directory was created with, or null for a new directory. */
export function storedShardCount(dir: string): number | null {
  const path = join(dir, LAYOUT_FILE);
  if (existsSync(path)) return (JSON.parse(readFileSync(path, 'utf8')) as { shards?: number }).shards ?? null;
  return existsSync(join(dir, 'shard-0')) ? 1 : null;
}

/**
 * One engine per data directory: a lock file holding the owner's pid. A stale lock (its process
 * is gone, e.g. after kill -9) is taken over.
 */
export function acquireLock(dir: string): string {
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
