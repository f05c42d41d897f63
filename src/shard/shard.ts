// A shard: one ledger state machine, its log and its checkpoints, driven by one thread.
//
// Lifecycle of a batch: validate and encode the input, apply it to the in-memory ledger, append
// the input to the log, and resolve the caller only once the log entry is fsynced. Batches that
// arrive while a commit is in flight join the next LMDB transaction (group commit). Queries
// answer from memory but wait until everything they could have seen is durable, so no reader
// ever observes an effect that a crash could undo.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ledger } from '../ledger/ledger.ts';
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
import { CorruptLogError, LogOp, LogStore, type LogEntry } from '../storage/log.ts';
import { stateHash } from '../storage/hash.ts';

export type Clock = () => bigint;

/** Wall-clock nanoseconds; the ledger itself keeps timestamps strictly increasing. */
export const systemClock: Clock = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n;

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
}

export interface FeedPage {
  transfers: Transfer[];
  next: number;
  head: number;
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
  private readonly epoch = 1;
  private readonly checkpoint_entries: number;
  private readonly checkpoint_objects: number;
  private readonly log_retain_entries: number;
  private readonly pulse_enabled: boolean;

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
    this.checkpoint_entries = options.checkpoint_entries ?? 4096;
    this.checkpoint_objects = options.checkpoint_objects ?? 2_000_000;
    this.log_retain_entries = options.log_retain_entries ?? 100_000;
    this.pulse_enabled = options.pulse ?? true;
    this.on_checkpoint = options.on_checkpoint;
    this.recovery = this.recover();
    this.durable_transfers = this.ledger.transfersInOrder().length;
    this.schedulePulse();
  }

  /** Opens a shard's storage and recovers its state: the last checkpoint plus the log tail. */
  static open(options: ShardOptions): Shard {
    mkdirSync(options.dir, { recursive: true });
    const log = LogStore.open({ path: join(options.dir, 'log') });
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
        this.ledger.createAccounts(decodeAccountBatch(entry.body, entry.count), entry.now_ns);
        break;
      case LogOp.create_transfers:
        this.ledger.createTransfers(decodeTransferBatch(entry.body, entry.count), entry.now_ns, { adopt: true });
        break;
      case LogOp.pulse:
        this.ledger.pulse(entry.now_ns);
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
  ): Promise<CreateResult> {
    try {
      const result = apply();
      return this.commit(op, now, count, body, objects, result);
    } catch (error) {
      this.fail(error);
      throw error;
    }
  }

  /**
   * Applies a batch that arrives already encoded in the log layout (from the gateway, through
   * the worker): the body is decoded once and appended as it is.
   */
  createEncoded(op: typeof LogOp.create_accounts | typeof LogOp.create_transfers, count: number, body: Uint8Array): Promise<CreateResult> {
    this.assertServing();
    assertBatch(count);
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const now = this.clock();
    if (op === LogOp.create_accounts) {
      const events = decodeAccountBatch(bytes, count);
      return this.applyAndCommit(op, now, count, bytes, count, () => this.ledger.createAccounts(events, now));
    }
    // Freshly decoded events belong to nobody else: the ledger may keep them as its records.
    const events = decodeTransferBatch(bytes, count);
    return this.applyAndCommit(op, now, count, bytes, 2 * count, () => this.ledger.createTransfers(events, now, { adopt: true }));
  }

  private commit<T>(op: typeof LogOp.create_accounts | typeof LogOp.create_transfers, now: bigint, count: number, body: Buffer, objects: number, result: T): Promise<T> {
    const durable = this.log.append(this.epoch, op, now, count, body);
    this.last_append = durable;
    durable.catch((error: unknown) => this.fail(error));
    this.afterAppend(objects);
    const transfers_after = this.ledger.transfersInOrder().length;
    return durable.then(() => {
      if (this.failure !== null) throw new ShardClosedError(`storage failed: ${this.failure.message}`);
      this.last_commit_unix_ms = Date.now();
      if (transfers_after > this.durable_transfers) this.durable_transfers = transfers_after;
      return result;
    });
  }

  private afterAppend(objects: number): void {
    this.entries_since_checkpoint++;
    this.objects_since_checkpoint += objects;
    if (
      this.checkpoint_in_flight === null &&
      (this.entries_since_checkpoint >= this.checkpoint_entries || this.objects_since_checkpoint >= this.checkpoint_objects)
    ) {
      void this.checkpoint();
    }
    this.schedulePulse();
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
    const out: Transfer[] = [];
    let next = Math.max(0, Math.min(from, head));
    const stop = Math.min(head, next + scan_max);
    while (next < stop && out.length < limit) {
      const transfer = all[next++];
      if (ledgers === null || ledgers.includes(transfer.ledger)) out.push({ ...transfer });
    }
    return { transfers: out, next, head };
  }

  // ---------------------------------------------------------------------------------------------
  // Expiry without traffic: a logged pulse, so that replay expires exactly the same transfers.

  private schedulePulse(): void {
    if (!this.pulse_enabled || this.closed || this.failure !== null) return;
    const next = this.ledger.nextExpiry();
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
    const now = this.clock();
    const next = this.ledger.nextExpiry();
    if (next !== 0n && next <= now) {
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
    const head = this.log.head;
    const changes = this.ledger.takeChanges();
    const job = this.checkpoints.begin(changes, this.ledger, {
      position: head.position,
      checksum: head.checksum,
      last_timestamp: this.ledger.last_timestamp,
      transfer_timestamp_max: this.ledger.transfer_timestamp_max,
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
      await this.checkpoint();
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
  }
}

function assertBatch(count: number): void {
  if (count > EVENTS_PER_REQUEST_MAX) throw new RangeError(`${count} events in one batch; the limit is ${EVENTS_PER_REQUEST_MAX}`);
}
