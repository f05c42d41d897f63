// A shard: one ledger state machine, its log and its checkpoints, driven by one thread.
//
// Lifecycle of a batch: validate and encode the input, apply it to the in-memory ledger, append
// the input to the log, and resolve the caller only once the log entry is fsynced. Batches that
// arrive while a commit is in flight join the next LMDB transaction (group commit). Queries
// answer from memory but wait until everything they could have seen is durable, so no reader
// ever observes an effect that a crash could undo.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ledger, type TimestampRuns } from '../ledger/ledger.ts';
import type {
  Account,
  AccountBalance,
  AccountFilter,
  AccountInput,
  CreateResult,
  QueryFilter,
  Transfer,
  TransferInput,
} from '../ledger/types.ts';
import { EVENTS_PER_REQUEST_MAX } from '../ledger/types.ts';
import { CheckpointStore } from '../storage/checkpoint.ts';
import { decodeAccountBatch, decodeTransferBatch, encodeAccountBatch, encodeTransferBatch } from '../storage/codec.ts';
import { CorruptLogError, LogOp, LogStore, decodeEntry, type LogEntry } from '../storage/log.ts';
import { stateHash } from '../storage/hash.ts';
import { shardOfAccount } from './partition.ts';
import { wallClock, type WallClock } from './clock.ts';
import {
  buildReadSet,
  decodeGroupEntry,
  groupEntryHeader,
  encodeGroupEntry,
  executeGroup,
  firstEventTimestamp,
  readSetHeader,
  type GroupEntry,
  type GroupKindValue,
  type ReadSet,
} from './group.ts';

export type Clock = WallClock;

/** Wall-clock nanoseconds; the ledger itself keeps timestamps strictly increasing. */
export const systemClock: Clock = wallClock;

export interface ShardOptions {
  /** This shard's data directory; holds `log/` and `state/` LMDB environments. */
  dir: string;
  clock?: Clock;
  /** Take a checkpoint after this many log entries... */
  checkpoint_entries?: number;
  /** ...or once this many objects changed, whichever comes first. */
  checkpoint_objects?: number;
  /** Log entries kept below the latest checkpoint (for followers and the change feed). */
  log_retain_entries?: number;
  /** Expire due pending transfers even when no batch arrives. */
  pulse?: boolean;
  /** Told how long each checkpoint took to write (for metrics). */
  on_checkpoint?: (seconds: number) => void;
  /** This shard's place among the engine's shards: which accounts it owns. Default 0 of 1. */
  index?: number;
  shard_count?: number;
  /**
   * Engine mode: timestamps come with each batch from the engine's sequencer, and when a pending
   * transfer is due the shard asks the engine (`local`: a pulse for this shard; `foreign`: one
   * of its accounts is on another shard, so only a cross-shard group can expire it) instead of
   * pulsing on its own clock.
   */
  on_due?: (kind: 'local' | 'foreign') => void;
  /** Called once when the shard stops serving (its storage failed, or an invariant broke). */
  on_failed?: (error: Error) => void;
  /** At most this many due pending transfers in one group's read set (the rest: later pulses). */
  group_due_max?: number;
  /**
   * The change feed serves transfers of the last this many milliseconds (by transfer timestamp);
   * older cursors are expired. 0 (the default): every transfer.
   */
  feed_retention_ms?: number;
  /** Fault injection for tests (LogStoreOptions.write_delay_ms). */
  log_write_delay_ms?: number;
  /** The epoch this shard's new entries carry (replication: the leader's epoch). Default 1. */
  epoch?: number;
  /**
   * Replicated (docs/replication.md): checkpoints cover only committed positions (those every
   * in-sync replica holds), so a divergent uncommitted tail can always be truncated. Commit
   * positions arrive through `setCommitted`.
   */
  replicated?: boolean;
  /** Told each log position once it is durable here (a leader ships from it). */
  on_durable?: (position: number) => void;
  /**
   * A follower's start: the log past the checkpoint is held unapplied until the leader says it
   * is committed (it may be a tail a failover discards), instead of replayed.
   */
  defer_tail?: boolean;
}

export interface FeedPage {
  transfers: Transfer[];
  next: number;
  head: number;
  /** The first ordinal within retention: where a new subscription starts. */
  oldest: number;
  /**
   * The first ordinal still served: a read from before it returns nothing (its cursor expired).
   * It trails `oldest` by half the retention, so a subscriber that starts at `oldest` has that
   * long to catch up before it could expire.
   */
  floor: number;
}

export interface RecoveryReport {
  checkpoint_position: number;
  replayed_entries: number;
  head_position: number;
  duration_ms: number;
}

export class ShardClosedError extends Error {
  readonly code = 'unavailable';
  constructor(reason: string) {
    super(`shard is not serving: ${reason}`);
  }
}

export class Shard {
  readonly ledger = new Ledger();
  readonly recovery: RecoveryReport;
  private readonly log: LogStore;
  private readonly checkpoints: CheckpointStore;
  private readonly clock: Clock;
  private epoch: number;
  private readonly replicated: boolean;
  private readonly defer_tail: boolean;
  /** Replicated: the highest position known committed (checkpoints never pass it). */
  private committed_position = 0;
  /** A checkpoint is due but would pass the commit position: taken once commit catches up. */
  checkpoint_wanted = false;
  /** A follower's entries appended (durable or about to be) but not applied until committed. */
  private readonly unapplied: LogEntry[] = [];
  /** A replicated leader's [position, transfers after it] not yet committed (the feed waits). */
  private readonly feed_pending: Array<[number, number]> = [];
  private readonly checkpoint_entries: number;
  private readonly checkpoint_objects: number;
  private readonly log_retain_entries: number;
  private pulse_enabled: boolean;
  readonly index: number;
  readonly shard_count: number;
  private readonly on_due: ((kind: 'local' | 'foreign') => void) | undefined;
  private readonly on_failed: ((error: Error) => void) | undefined;
  private readonly group_due_max: number;
  private readonly feed_retention_ms: number;
  /** The last cross-shard group applied here (groups apply in id order). */
  last_gid = 0;
  /** Stopped at a group's barrier: nothing may change state until the group executes. */
  private paused = false;
  /** What this shard read at the current group's barrier (its own objects, for its execution). */
  private barrier_read: { own: ReadSet['own']; size: number } | null = null;
  private due_signalled = { local: false, foreign: false };
  /** Accounts this shard owns, by id. */
  readonly owns: (account_id: bigint) => boolean;

  private last_append: Promise<number> = Promise.resolve(0);
  private checkpoint_position = 0;
  private checkpoint_in_flight: Promise<void> | null = null;
  private entries_since_checkpoint = 0;
  private objects_since_checkpoint = 0;
  private pulse_timer: NodeJS.Timeout | null = null;
  private pulse_at = 0n;
  private failure: Error | null = null;
  private closed = false;
  private readonly on_checkpoint: ((seconds: number) => void) | undefined;
  /** Transfers (in commit order) whose log entries are durable: the change feed serves no further. */
  private durable_transfers = 0;
  /** Wall-clock time of the last durable commit, for operators (never used by the ledger). */
  last_commit_unix_ms = 0;

  private constructor(options: ShardOptions, log: LogStore, checkpoints: CheckpointStore) {
    this.log = log;
    this.checkpoints = checkpoints;
    this.clock = options.clock ?? systemClock;
    this.epoch = options.epoch ?? 1;
    this.defer_tail = options.defer_tail ?? false;
    this.replicated = options.replicated ?? false;
    if (!Number.isSafeInteger(this.epoch) || this.epoch < 1) throw new RangeError('epoch must be a positive integer');
    this.checkpoint_entries = options.checkpoint_entries ?? 4096;
    this.checkpoint_objects = options.checkpoint_objects ?? 2_000_000;
    this.log_retain_entries = options.log_retain_entries ?? 100_000;
    this.pulse_enabled = options.pulse ?? true;
    this.on_checkpoint = options.on_checkpoint;
    this.index = options.index ?? 0;
    this.shard_count = options.shard_count ?? 1;
    if (!Number.isInteger(this.index) || this.index < 0 || this.index >= this.shard_count) throw new RangeError('shard index out of range');
    this.on_due = options.on_due;
    this.on_failed = options.on_failed;
    this.group_due_max = options.group_due_max ?? GROUP_DUE_MAX;
    this.feed_retention_ms = options.feed_retention_ms ?? 0;
    if (!Number.isSafeInteger(this.feed_retention_ms) || this.feed_retention_ms < 0) throw new RangeError('feed_retention_ms must be a non-negative integer');
    const index = this.index;
    const shard_count = this.shard_count;
    this.owns = shard_count === 1 ? () => true : (account_id) => shardOfAccount(account_id, shard_count) === index;
    this.recovery = this.recover();
    this.committed_position = this.checkpoint_position;
    this.durable_transfers = this.ledger.transfersInOrder().length;
    this.schedulePulse();
  }

  /** Opens a shard's storage and recovers its state: the last checkpoint plus the log tail. */
  static open(options: ShardOptions): Shard {
    mkdirSync(options.dir, { recursive: true });
    const log = LogStore.open({ path: join(options.dir, 'log'), write_delay_ms: options.log_write_delay_ms, on_durable: options.on_durable });
    const checkpoints = CheckpointStore.open(join(options.dir, 'state'));
    return new Shard(options, log, checkpoints);
  }

  private recover(): RecoveryReport {
    const started = performance.now();
    const meta = this.checkpoints.readMeta();
    const snapshot = this.checkpoints.load();
    this.ledger.restore(snapshot);
    let from = 1;
    if (meta !== null && meta.position > 0) {
      this.checkpoint_position = meta.position;
      this.last_gid = meta.last_gid;
      if (this.log.head.position < meta.position) {
        throw new CorruptLogError(meta.position, `the checkpoint covers position ${meta.position} but the log ends at ${this.log.head.position}`);
      }
      // The entry the checkpoint summarises is always retained: it proves that checkpoint and log
      // belong together, and it anchors the checksum chain of the tail.
      from = meta.position;
    }
    const first = this.log.firstPosition();
    if (first > from) throw new CorruptLogError(from, `missing; the log starts at ${first}`);
    let replayed = 0;
    for (const entry of this.log.read(from)) {
      if (entry.position === this.checkpoint_position && this.checkpoint_position > 0) {
        if (entry.checksum !== meta!.checksum) {
          throw new CorruptLogError(entry.position, 'does not match the checkpoint taken at this position (checksum differs)');
        }
        continue;
      }
      if (this.defer_tail) {
        // Kept for applyThrough: its body is copied out of the read buffer.
        this.unapplied.push({ ...entry, body: Buffer.from(entry.body) });
        continue;
      }
      this.replay(entry);
      replayed++;
    }
    return {
      checkpoint_position: this.checkpoint_position,
      replayed_entries: replayed,
      head_position: this.log.head.position,
      duration_ms: performance.now() - started,
    };
  }

  private replay(entry: LogEntry): void {
    switch (entry.op) {
      case LogOp.create_accounts:
        this.ledger.createAccounts(decodeAccountBatch(entry.body, entry.count), entry.now_ns, entry.runs ?? undefined);
        break;
      case LogOp.create_transfers:
        this.ledger.createTransfers(decodeTransferBatch(entry.body, entry.count), entry.now_ns, { adopt: true, runs: entry.runs ?? undefined });
        break;
      case LogOp.pulse:
        this.ledger.pulse(entry.now_ns);
        break;
      case LogOp.group:
        this.redoGroup(decodeGroupEntry(entry.body), entry.now_ns, entry.position);
        break;
    }
    this.entries_since_checkpoint++;
  }

  // ---------------------------------------------------------------------------------------------
  // Commands

  createAccounts(events: readonly AccountInput[]): Promise<CreateResult> {
    this.assertServing();
    assertBatch(events.length);
    const body = encodeAccountBatch(events);
    const now = this.clock();
    return this.applyAndCommit(LogOp.create_accounts, now, events.length, body, events.length, () =>
      this.ledger.createAccounts(events, now),
    );
  }

  createTransfers(events: readonly TransferInput[]): Promise<CreateResult> {
    this.assertServing();
    assertBatch(events.length);
    const body = encodeTransferBatch(events);
    const now = this.clock();
    return this.applyAndCommit(LogOp.create_transfers, now, events.length, body, 2 * events.length, () =>
      this.ledger.createTransfers(events, now),
    );
  }

  /**
   * Applies a batch and appends it. Anything that throws once the ledger may have changed (an
   * invariant assertion, a log append refused at once) leaves memory ahead of the log: the shard
   * then stops serving, and a restart recovers from the log.
   */
  private applyAndCommit(
    op: typeof LogOp.create_accounts | typeof LogOp.create_transfers,
    now: bigint,
    count: number,
    body: Buffer,
    objects: number,
    apply: () => CreateResult,
    runs?: TimestampRuns,
  ): Promise<CreateResult> {
    try {
      const result = apply();
      return this.commit(op, now, count, body, objects, result, 0, runs);
    } catch (error) {
      this.fail(error);
      throw error;
    }
  }

  /**
   * Applies a batch that arrives already encoded in the log layout (from the gateway, through
   * the worker): the body is decoded once and appended as it is. `runs`: the timestamps the
   * engine's sequencer assigned (without them, the shard's clock decides).
   */
  createEncoded(
    op: typeof LogOp.create_accounts | typeof LogOp.create_transfers,
    count: number,
    body: Uint8Array,
    runs?: TimestampRuns,
  ): Promise<CreateResult> {
    this.assertServing();
    assertBatch(count);
    assert(!this.paused, 'no batch runs while a group holds the shard');
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const now = runs === undefined ? this.clock() : runs[runs.length - 1][0];
    if (op === LogOp.create_accounts) {
      const events = decodeAccountBatch(bytes, count);
      return this.applyAndCommit(op, now, count, bytes, count, () => this.ledger.createAccounts(events, now, runs), runs);
    }
    // Freshly decoded events belong to nobody else: the ledger may keep them as its records.
    const events = decodeTransferBatch(bytes, count);
    return this.applyAndCommit(op, now, count, bytes, 2 * count, () => this.ledger.createTransfers(events, now, { adopt: true, runs }), runs);
  }

  /** Engine mode: expires what is due at `timestamp` (the sequencer's), logged as a pulse. */
  pulseAt(timestamp: bigint): Promise<void> {
    this.assertServing();
    assert(!this.paused, 'no pulse while a group holds the shard');
    this.ledger.pulse(timestamp);
    const durable = this.log.append(this.epoch, LogOp.pulse, timestamp, 0, Buffer.alloc(0));
    this.last_append = durable;
    durable.catch((error: unknown) => this.fail(error));
    this.afterAppend(0);
    return durable.then(() => undefined);
  }

  private commit<T>(
    op: typeof LogOp.create_accounts | typeof LogOp.create_transfers | typeof LogOp.group,
    now: bigint,
    count: number,
    body: Uint8Array,
    objects: number,
    result: T,
    group_id = 0,
    runs?: TimestampRuns,
  ): Promise<T> {
    const durable = this.log.append(this.epoch, op, now, count, body, group_id, runs ?? null);
    this.last_append = durable;
    durable.catch((error: unknown) => this.fail(error));
    this.afterAppend(objects);
    const transfers_after = this.ledger.transfersInOrder().length;
    return durable.then((position) => {
      if (this.failure !== null) throw new ShardClosedError(`storage failed: ${this.failure.message}`);
      this.last_commit_unix_ms = Date.now();
      // Replicated: the feed serves a transfer only once its entry is committed (setCommitted).
      if (this.replicated) this.feed_pending.push([position, transfers_after]);
      else if (transfers_after > this.durable_transfers) this.durable_transfers = transfers_after;
      return result;
    });
  }

  private afterAppend(objects: number): void {
    this.entries_since_checkpoint++;
    this.afterEntry(objects);
  }

  /** After an entry is applied and appended (counted already): checkpoint when due, look for expiry. */
  private afterEntry(objects: number): void {
    // Whatever was due may have expired with this entry: look again.
    this.due_signalled.local = false;
    this.due_signalled.foreign = false;
    this.objects_since_checkpoint += objects;
    if (
      this.checkpoint_in_flight === null &&
      (this.entries_since_checkpoint >= this.checkpoint_entries || this.objects_since_checkpoint >= this.checkpoint_objects)
    ) {
      if (!this.replicated || this.appliedHead().position <= this.committed_position) void this.checkpoint();
      else this.checkpoint_wanted = true;
    }
    this.schedulePulse();
  }

  // ---------------------------------------------------------------------------------------------
  // Replicas (docs/replication.md): a follower takes the leader's entries as they were stored.

  /**
   * A follower's append: the leader's entry exactly as it was stored, verified to follow this log
   * (position, epoch, checksum chain). Resolves once it is durable here. It is applied only once
   * committed (`applyThrough`), so this shard's state never shows what a failover could discard.
   */
  appendReplica(bytes: Uint8Array): Promise<number> {
    this.assertServing();
    assert(!this.paused, 'no entry is appended while a group holds the shard');
    const entry = decodeEntry(bytes, undefined);
    const group_id = entry.op === LogOp.group ? groupEntryHeader(entry.body).gid : 0;
    const durable = this.log.appendStored(bytes, entry, group_id);
    this.last_append = durable;
    durable.catch((error: unknown) => this.fail(error));
    this.unapplied.push(entry);
    return durable;
  }

  /** A follower applies its appended entries up to `position`, as replay does. */
  applyThrough(position: number): void {
    this.assertServing();
    while (this.unapplied.length > 0 && this.unapplied[0].position <= position) {
      const entry = this.unapplied.shift()!;
      try {
        this.replay(entry);
      } catch (error) {
        // Memory may be half way through the entry: stop; a restart replays it from the log.
        this.fail(error);
        throw error;
      }
      this.afterEntry(2 * entry.count);
      const transfers_after = this.ledger.transfersInOrder().length;
      // A promoted leader applies its uncommitted tail: the feed waits for its commit.
      if (this.replicated && entry.position > this.committed_position) this.feed_pending.push([entry.position, transfers_after]);
      else if (transfers_after > this.durable_transfers) this.durable_transfers = transfers_after;
      this.last_commit_unix_ms = Date.now();
    }
  }

  /**
   * Replicated: everything up to `position` is held by every in-sync replica. A follower applies
   * up to it; a checkpoint that waited for it is taken now.
   */
  setCommitted(position: number): void {
    if (position <= this.committed_position) return;
    this.committed_position = position;
    if (this.unapplied.length > 0) this.applyThrough(position);
    while (this.feed_pending.length > 0 && this.feed_pending[0][0] <= position) {
      const [, transfers_after] = this.feed_pending.shift()!;
      if (transfers_after > this.durable_transfers) this.durable_transfers = transfers_after;
    }
    if (this.checkpoint_wanted && this.checkpoint_in_flight === null && this.appliedHead().position <= position) {
      this.checkpoint_wanted = false;
      void this.checkpoint();
    }
  }

  /** The last entry applied to memory (a follower's log may run ahead of it). */
  appliedHead(): { position: number; checksum: number } {
    const first = this.unapplied[0];
    return first === undefined ? this.log.head : { position: first.position - 1, checksum: first.prev_checksum };
  }

  /** The log's head with its epoch: where a replica stands (docs/replication.md). */
  logHead(): { position: number; epoch: number; checksum: number } {
    return { ...this.log.head, epoch: this.log.epoch };
  }

  /**
   * A follower becomes the leader of epoch `epoch` in place: what it appended but had not applied
   * is applied now (its log is the leader's log; those entries commit in the new epoch as the
   * followers acknowledge them), and it pulses expiries itself from now on.
   */
  promote(epoch: number): void {
    this.assertServing();
    assert(Number.isSafeInteger(epoch) && epoch >= this.epoch && epoch >= this.log.epoch, 'a new leader\'s epoch is the newest');
    this.epoch = epoch;
    if (this.unapplied.length > 0) this.applyThrough(this.unapplied[this.unapplied.length - 1].position);
    this.pulse_enabled = true;
    this.schedulePulse();
  }

  /**
   * Copies this shard's last checkpoint into the empty directory `dir` (a replica rebuilds from it
   * plus the log after it). Checkpoints of a replicated shard cover only committed positions.
   */
  snapshot(dir: string): Promise<void> {
    this.assertServing();
    return this.checkpoints.backup(dir);
  }

  /**
   * Replication: [group id, position, participants] of this shard's cross-shard group entries at
   * or after `from` (read from the log's group index).
   */
  groupPositions(from: number): Array<[number, number, number[]]> {
    return this.log.groupPositionsFrom(from).map(([gid, position]) => {
      const entry = this.log.entryAt(position);
      if (entry === null) throw new CorruptLogError(position, `group ${gid} is indexed here but the entry is missing`);
      return [gid, position, groupEntryHeader(entry.body).participants];
    });
  }

  /** Replication: the highest position known committed here. */
  get committed(): number {
    return this.committed_position;
  }

  /**
   * A follower about to lead cuts its log from `from` on: entries it appended but never applied
   * (never committed), which it must not lead with (a cross-shard group that some of its shards
   * lack). Returns how many entries went.
   */
  async cutTail(from: number): Promise<number> {
    this.assertServing();
    assert(from > this.committed_position && from > this.appliedHead().position, 'only an unapplied, uncommitted tail is cut');
    await this.last_append.catch(() => undefined);
    const removed = await this.log.truncateFrom(from);
    while (this.unapplied.length > 0 && this.unapplied[this.unapplied.length - 1].position >= from) this.unapplied.pop();
    return removed;
  }

  /** The last position of this log agreeing with a replica that last appended in `epoch`. */
  lastPositionOfEpoch(epoch: number): number {
    return this.log.lastPositionOfEpoch(epoch);
  }

  /** The checksum of the entry at `position` (0 for position 0), or null when not stored here. */
  checksumAt(position: number): number | null {
    const first = this.log.firstPosition();
    if (position === 0) return first <= 1 ? 0 : null;
    const header = this.log.headerAt(position);
    if (header !== null) return header.checksum;
    // Just below the first entry kept: that entry names its predecessor's checksum.
    return position === first - 1 ? (this.log.headerAt(position + 1)?.prev_checksum ?? null) : null;
  }

  /** This shard's stored log entries from `from` (at most `limit`), as a leader ships them. */
  storedEntries(from: number, limit: number): Uint8Array[] {
    return this.log.readStored(from, limit);
  }

  // ---------------------------------------------------------------------------------------------
  // Cross-shard groups (src/shard/group.ts has the protocol).

  /**
   * The group's barrier: from here until `groupApply`, nothing changes this shard's state. Returns
   * what the group needs from this shard, reading due pending transfers up to `horizon` (default:
   * a little past the clock; the group's timestamps are not known yet).
   */
  groupRead(kind: GroupKindValue, count: number, body: Uint8Array, horizon: bigint, known: Uint8Array | null = null): Uint8Array {
    this.assertServing();
    assert(!this.paused, 'one group at a time');
    assert(horizon > this.ledger.last_timestamp, 'a group comes after everything before it');
    assert(known === null || known.length === count, 'one known flag per event');
    const read = buildReadSet(this.ledger, kind, count, body, horizon, this.group_due_max, known);
    this.paused = true;
    this.barrier_read = { own: read.own, size: read.bytes.byteLength };
    return read.bytes;
  }

  /**
   * Resolves once everything this shard applied is durable. A participant hands its read set over
   * only then: otherwise another participant could log the group (which carries this read) while
   * the entries the read depended on are still lost in a crash here, and the group could never be
   * redone on this shard.
   */
  whenDurable(): Promise<void> {
    return this.last_append.then(
      () => {
        if (this.failure !== null) throw new ShardClosedError(`storage failed: ${this.failure.message}`);
      },
      () => {
        throw new ShardClosedError(`storage failed: ${this.failure?.message ?? 'log append failed'}`);
      },
    );
  }

  /**
   * Executes a group at batch timestamp `timestamp` over every participant's read set, takes
   * over its effects on this shard, logs it, and resolves once the entry is durable.
   */
  groupApply(entry: GroupEntry, timestamp: bigint): Promise<CreateResult> {
    this.assertServing();
    const read = this.barrier_read;
    this.paused = false;
    this.barrier_read = null;
    try {
      assert(read !== null, 'a group applies only at its barrier, after this shard read');
      assert(entry.gid > this.last_gid, 'groups apply in id order');
      const mine = entry.participants.indexOf(this.index);
      // (This shard's own bytes were handed over to the main thread; the entry carries their copy.)
      assert(mine >= 0 && entry.read_sets[mine].byteLength === read.size, 'the group carries what this shard read');
      const result = this.applyGroupEffects(entry, timestamp, { index: mine, seed: read.own });
      return this.commit(LogOp.group, timestamp, entry.count, encodeGroupEntry(entry), 2 * entry.count, result, entry.gid);
    } catch (error) {
      this.fail(error);
      throw error;
    }
  }

  /** Leaves a barrier without applying (the group was abandoned before any participant applied it). */
  groupRelease(): void {
    this.paused = false;
    this.barrier_read = null;
    this.schedulePulse();
  }

  /**
   * Recovery: redoes a group this shard took part in but did not log before a crash, from
   * another participant's entry (timestamp = that entry's now_ns), and logs it here.
   */
  groupRollForward(body: Uint8Array, timestamp: bigint): Promise<CreateResult> {
    this.assertServing();
    assert(!this.paused, 'roll forward outside a barrier');
    const entry = decodeGroupEntry(body);
    assert(entry.gid > this.last_gid, 'roll forward only groups this shard lacks');
    try {
      const result = this.redoGroup(entry, timestamp, this.log.head.position + 1);
      return this.commit(LogOp.group, timestamp, entry.count, body, 2 * entry.count, result, entry.gid);
    } catch (error) {
      this.fail(error);
      throw error;
    }
  }

  /** This shard's group entries after `gid`: [gid, timestamp, body]. */
  groupEntriesAfter(gid: number): Array<[number, bigint, Uint8Array]> {
    return this.log.groupEntriesAfter(gid).map(({ group_id, entry }) => [group_id, entry.now_ns, entry.body]);
  }

  private redoGroup(entry: GroupEntry, timestamp: bigint, position: number): CreateResult {
    const mine = entry.participants.indexOf(this.index);
    if (mine < 0) throw new CorruptLogError(position, `group ${entry.gid} does not name shard ${this.index} among its participants`);
    // This shard's state must be exactly what it read when the group first ran.
    const logged = entry.read_sets[mine];
    const again = buildReadSet(this.ledger, entry.kind, entry.count, entry.body, readSetHeader(logged).horizon, readSetHeader(logged).due_max).bytes;
    if (Buffer.compare(Buffer.from(again.buffer, again.byteOffset, again.byteLength), Buffer.from(logged.buffer, logged.byteOffset, logged.byteLength)) !== 0) {
      throw new CorruptLogError(position, `group ${entry.gid}: this shard's state differs from what it read when the group ran`);
    }
    return this.applyGroupEffects(entry, timestamp);
  }

  private applyGroupEffects(entry: GroupEntry, timestamp: bigint, own?: { index: number; seed: import('../ledger/ledger.ts').SeedInput }): CreateResult {
    assert(entry.gid > this.last_gid, 'groups apply in id order');
    for (const part of entry.read_sets) {
      assert(firstEventTimestamp(timestamp, entry.count) <= readSetHeader(part).horizon, 'every participant read what is due by the group');
    }
    const { scratch, result } = executeGroup(entry.kind, entry.count, entry.body, timestamp, entry.read_sets, own);
    this.ledger.adoptFrom(scratch, this.owns);
    this.last_gid = entry.gid;
    return result;
  }

  // ---------------------------------------------------------------------------------------------
  // Queries: answered from memory, released once every entry they could observe is durable.

  async lookupAccounts(ids: readonly bigint[]): Promise<Account[]> {
    return this.afterDurable(this.ledger.lookupAccounts(ids));
  }

  async lookupTransfers(ids: readonly bigint[]): Promise<Transfer[]> {
    return this.afterDurable(this.ledger.lookupTransfers(ids));
  }

  async getAccountTransfers(filter: AccountFilter): Promise<Transfer[]> {
    return this.afterDurable(this.ledger.getAccountTransfers(filter));
  }

  async getAccountBalances(filter: AccountFilter): Promise<AccountBalance[]> {
    return this.afterDurable(this.ledger.getAccountBalances(filter));
  }

  async queryAccounts(filter: QueryFilter): Promise<Account[]> {
    return this.afterDurable(this.ledger.queryAccounts(filter));
  }

  async queryTransfers(filter: QueryFilter): Promise<Transfer[]> {
    return this.afterDurable(this.ledger.queryTransfers(filter));
  }

  private async afterDurable<T>(value: T): Promise<T> {
    this.assertServing();
    await this.last_append;
    return value;
  }

  /**
   * The change feed: committed transfers in commit order from ordinal `from`, at most `limit` of
   * them (of the given ledgers, if any), never past what is durable. `next` is where to continue;
   * `head` is the number of committed transfers. Scans at most `scan_max` transfers per call so a
   * narrow ledger filter cannot stall the shard.
   */
  feedRead(from: number, limit: number, ledgers: readonly number[] | null, scan_max = 65_536): FeedPage {
    this.assertServing();
    const all = this.ledger.transfersInOrder();
    const head = this.durable_transfers;
    const oldest = this.feedFirstAfter(all, head, this.feed_retention_ms);
    const floor = this.feedFirstAfter(all, head, this.feed_retention_ms + Math.floor(this.feed_retention_ms / 2));
    const out: Transfer[] = [];
    if (from < floor) return { transfers: out, next: from, head, oldest, floor };
    let next = Math.max(0, Math.min(from, head));
    const stop = Math.min(head, next + scan_max);
    while (next < stop && out.length < limit) {
      const transfer = all[next++];
      // A cross-shard transfer is kept by both of its shards; it is served by its debit account's.
      if (this.shard_count > 1 && !this.owns(transfer.debit_account_id)) continue;
      if (ledgers === null || ledgers.includes(transfer.ledger)) out.push({ ...transfer });
    }
    return { transfers: out, next, head, oldest, floor };
  }

  /**
   * The first ordinal of a transfer younger than `age_ms` (by transfer timestamp; 0 when
   * retention is off). Transfers are in timestamp order, so a binary search.
   */
  private feedFirstAfter(all: readonly Transfer[], head: number, age_ms: number): number {
    if (this.feed_retention_ms === 0) return 0;
    const cutoff = this.clock() - BigInt(age_ms) * 1_000_000n;
    let lo = 0;
    let hi = head;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (all[mid].timestamp < cutoff) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  // ---------------------------------------------------------------------------------------------
  // Expiry without traffic: a logged pulse, so that replay expires exactly the same transfers.

  private schedulePulse(): void {
    if (!this.pulse_enabled || this.closed || this.failure !== null) return;
    const local = this.due_signalled.local ? 0n : this.ledger.nextExpiry();
    const foreign = this.on_due === undefined || this.due_signalled.foreign ? 0n : this.ledger.nextForeignExpiry();
    const next = local === 0n ? foreign : foreign === 0n || local < foreign ? local : foreign;
    if (next === 0n) return;
    if (this.pulse_timer !== null && this.pulse_at <= next) return;
    if (this.pulse_timer !== null) clearTimeout(this.pulse_timer);
    const delay_ms = Number((next - this.clock()) / 1_000_000n) + 1;
    this.pulse_at = next;
    this.pulse_timer = setTimeout(() => this.firePulse(), Math.max(0, Math.min(delay_ms, 2_147_483_647)));
    this.pulse_timer.unref();
  }

  private firePulse(): void {
    this.pulse_timer = null;
    if (this.closed || this.failure !== null) return;
    // A group holds the shard: it expires what is due itself, and the next append reschedules.
    if (this.paused) return;
    const now = this.clock();
    const local = this.ledger.nextExpiry();
    const local_due = local !== 0n && local <= now;
    if (this.on_due !== undefined) {
      // Engine mode: the sequencer times every change, so the engine sends the pulse (or group).
      const foreign = this.ledger.nextForeignExpiry();
      if (local_due && !this.due_signalled.local) {
        this.due_signalled.local = true;
        this.on_due('local');
      }
      if (foreign !== 0n && foreign <= now && !this.due_signalled.foreign) {
        this.due_signalled.foreign = true;
        this.on_due('foreign');
      }
      this.schedulePulse();
      return;
    }
    if (local_due) {
      this.ledger.pulse(now);
      const durable = this.log.append(this.epoch, LogOp.pulse, now, 0, Buffer.alloc(0));
      this.last_append = durable;
      durable.catch((error: unknown) => this.fail(error));
      this.afterAppend(0);
    } else {
      this.schedulePulse();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Checkpoints

  /** Writes what changed since the last checkpoint; resolves when it is durable. */
  checkpoint(): Promise<void> {
    if (this.checkpoint_in_flight !== null) return this.checkpoint_in_flight;
    const head = this.appliedHead();
    const changes = this.ledger.takeChanges();
    const job = this.checkpoints.begin(changes, this.ledger, {
      position: head.position,
      checksum: head.checksum,
      last_timestamp: this.ledger.last_timestamp,
      transfer_timestamp_max: this.ledger.transfer_timestamp_max,
      last_gid: this.last_gid,
    });
    this.entries_since_checkpoint = 0;
    this.objects_since_checkpoint = 0;
    const pending_append = this.last_append;
    const run = async (): Promise<void> => {
      // A checkpoint must never get ahead of the durable log it summarises.
      await pending_append;
      const started = performance.now();
      await this.checkpoints.write(job);
      this.on_checkpoint?.((performance.now() - started) / 1000);
      this.checkpoint_position = head.position;
      const prune_below = head.position - this.log_retain_entries;
      if (prune_below > 1) await this.log.prune(prune_below);
    };
    this.checkpoint_in_flight = run()
      .catch((error: unknown) => this.fail(error))
      .finally(() => {
        this.checkpoint_in_flight = null;
      });
    return this.checkpoint_in_flight;
  }

  // ---------------------------------------------------------------------------------------------
  // Health and shutdown

  get head_position(): number {
    return this.log.head.position;
  }

  get durable_position(): number {
    return this.log.durable_position;
  }

  get checkpointed_position(): number {
    return this.checkpoint_position;
  }

  stateHash(): string {
    return stateHash(this.ledger);
  }

  /** Waits for in-flight commits, writes a final checkpoint, and closes storage. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pulse_timer !== null) clearTimeout(this.pulse_timer);
    await this.last_append.catch(() => undefined);
    if (this.failure === null) {
      if (this.checkpoint_in_flight !== null) await this.checkpoint_in_flight;
      // Replicated: an uncommitted tail may yet be truncated; the next start replays it instead.
      if (!this.replicated || this.appliedHead().position <= this.committed_position) await this.checkpoint();
    }
    await this.log.close();
    await this.checkpoints.close();
  }

  private assertServing(): void {
    if (this.failure !== null) throw new ShardClosedError(`storage failed: ${this.failure.message}`);
    if (this.closed) throw new ShardClosedError('closed');
  }

  /**
   * Storage failed under an applied batch: memory is ahead of disk, so the shard stops serving
   * and must be restarted to recover from the log.
   */
  private fail(error: unknown): void {
    if (this.failure !== null) return;
    this.failure = error instanceof Error ? error : new Error(String(error));
    // A cross-shard group may hang on this shard: the engine must know at once.
    this.on_failed?.(this.failure);
  }
}

/** Due pending transfers one group reads at most; a pulse group per this many. */
const GROUP_DUE_MAX = 8_190;

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`shard invariant violated: ${message}`);
}

function assertBatch(count: number): void {
  if (count > EVENTS_PER_REQUEST_MAX) throw new RangeError(`${count} events in one batch; the limit is ${EVENTS_PER_REQUEST_MAX}`);
}
