// Incremental checkpoints of the ledger's state in their own LMDB environment.
//
// The log makes a batch durable; checkpoints bound recovery time. Each checkpoint writes only the
// objects changed since the previous one, plus the log position it covers, in one LMDB
// transaction: after a crash the state is either the old checkpoint or the new one, never a mix.
// A separate environment keeps checkpoint writes off the log's write lock, so a large checkpoint
// never stalls the commit of client batches.

import { open, type Database, type RootDatabase } from 'lmdb';
import { closeEnvironment } from './close.ts';
import type { Account, Transfer } from '../ledger/types.ts';
import type { HistoryEntry, Ledger, LedgerChanges, LedgerSnapshot, PendingState } from '../ledger/ledger.ts';
import {
  ACCOUNT_BYTES,
  BALANCE_BYTES,
  PENDING_BYTES,
  TRANSFER_BYTES,
  keyU64,
  readAccount,
  readBalance,
  readPending,
  readTransfer,
  viewOf,
  writeAccount,
  writeBalance,
  writePending,
  writeTransfer,
} from './codec.ts';

export interface CheckpointMeta {
  /** The last log position whose effects the checkpoint holds. */
  position: number;
  /** The checksum of that log entry, to prove the log and the checkpoint belong together. */
  checksum: number;
  last_timestamp: bigint;
  /**
   * The greatest transfer timestamp at the checkpoint. Every later transfer (imported ones too)
   * has a greater one, so rows above it belong to a checkpoint that never completed.
   */
  transfer_timestamp_max: bigint;
  /** The last cross-shard group this shard applied (0: none). */
  last_gid: number;
}

const META_BYTES = 40;
/** Metadata written before cross-shard groups existed (no last_gid). */
const META_BYTES_V1 = 32;
/** Immutable rows (transfers, history) are stored in blocks of this many. */
const BLOCK_ROWS = 16_384;
const HISTORY_ROW_BYTES = 8 + BALANCE_BYTES;

/**
 * A checkpoint in progress. Mutable objects (accounts, pending states) are encoded when it is
 * taken, at a batch boundary; immutable ones (transfers, history) are encoded later, in slices,
 * so that a large checkpoint never stalls the shard's event loop for long.
 */
export interface CheckpointJob {
  meta: CheckpointMeta;
  final_puts: Array<[Database<Buffer, Buffer>, Buffer, Buffer]>;
  /** The ledger's append-only sequences and the ordinal ranges this checkpoint adds. */
  transfers: readonly Transfer[];
  transfers_from: number;
  transfers_to: number;
  history: readonly HistoryEntry[];
  history_from: number;
  history_to: number;
}

export class CheckpointStore {
  private readonly env: RootDatabase;
  private readonly meta: Database<Buffer, string>;
  private readonly accounts: Database<Buffer, Buffer>;
  private readonly transfers: Database<Buffer, Buffer>;
  private readonly pending: Database<Buffer, Buffer>;
  private readonly transient: Database<Buffer, Buffer>;
  private readonly history: Database<Buffer, Buffer>;

  private constructor(path: string) {
    this.env = open({ path, separateFlushed: true, maxDbs: 8 });
    this.meta = this.env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' });
    const binary = { encoding: 'binary' as const, keyEncoding: 'binary' as const };
    this.accounts = this.env.openDB<Buffer, Buffer>({ name: 'accounts', ...binary });
    // Transfers keyed by timestamp: appends are sequential, and a scan returns them in order.
    this.transfers = this.env.openDB<Buffer, Buffer>({ name: 'transfers', ...binary });
    this.pending = this.env.openDB<Buffer, Buffer>({ name: 'pending', ...binary });
    this.transient = this.env.openDB<Buffer, Buffer>({ name: 'transient', ...binary });
    this.history = this.env.openDB<Buffer, Buffer>({ name: 'history', ...binary });
  }

  static open(path: string): CheckpointStore {
    return new CheckpointStore(path);
  }

  readMeta(): CheckpointMeta | null {
    const bytes = this.meta.get('checkpoint');
    if (bytes === undefined) return null;
    if (bytes.byteLength !== META_BYTES && bytes.byteLength !== META_BYTES_V1) throw new Error(`corrupt checkpoint metadata: ${bytes.byteLength} bytes`);
    return {
      position: Number(bytes.readBigUInt64LE(0)),
      checksum: bytes.readUInt32LE(8),
      last_timestamp: bytes.readBigUInt64LE(16),
      transfer_timestamp_max: bytes.readBigUInt64LE(24),
      last_gid: bytes.byteLength >= META_BYTES ? Number(bytes.readBigUInt64LE(32)) : 0,
    };
  }

  /** Takes a checkpoint of the ledger's changes; call at a batch boundary. */
  begin(changes: LedgerChanges, ledger: Ledger, meta: CheckpointMeta): CheckpointJob {
    const final_puts: CheckpointJob['final_puts'] = [];
    for (const account of changes.accounts) final_puts.push([this.accounts, keyU64(account.id), encodeAccount(account)]);
    for (const [id, state] of changes.pending) final_puts.push([this.pending, keyU64(id), encodePending(state)]);
    for (const id of changes.transient) final_puts.push([this.transient, keyU64(id), EMPTY]);
    return {
      meta,
      final_puts,
      transfers: ledger.transfersInOrder(),
      transfers_from: changes.transfers_from,
      transfers_to: changes.transfers_to,
      history: ledger.historyInOrder(),
      history_from: changes.history_from,
      history_to: changes.history_to,
    };
  }

  /**
   * Writes a checkpoint; resolves once it is fsynced. Immutable rows go first, in slices (each
   * its own transaction: rows above the recorded transfer timestamp are ignored until a
   * checkpoint covers them); then accounts, pending states and the metadata in one transaction,
   * so the checkpoint switches atomically.
   */
  async write(job: CheckpointJob): Promise<void> {
    // Rows go in blocks of BLOCK_ROWS by ordinal: one LMDB put per block instead of per object.
    // Block b always holds ordinals [b * BLOCK_ROWS, ...), so a partly filled block is simply
    // rewritten whole by the next checkpoint, and no ordinal ever lives in two blocks.
    for (let b = Math.floor(job.transfers_from / BLOCK_ROWS); b * BLOCK_ROWS < job.transfers_to; b++) {
      const start = b * BLOCK_ROWS;
      const end = Math.min(start + BLOCK_ROWS, job.transfers_to);
      const block = Buffer.allocUnsafe((end - start) * TRANSFER_BYTES);
      const view = viewOf(block);
      for (let k = start; k < end; k++) writeTransfer(view, (k - start) * TRANSFER_BYTES, job.transfers[k]);
      void this.transfers.put(keyU64(BigInt(b)), block);
      await yieldTurn();
    }
    for (let b = Math.floor(job.history_from / BLOCK_ROWS); b * BLOCK_ROWS < job.history_to; b++) {
      const start = b * BLOCK_ROWS;
      const end = Math.min(start + BLOCK_ROWS, job.history_to);
      const block = Buffer.allocUnsafe((end - start) * HISTORY_ROW_BYTES);
      const view = viewOf(block);
      for (let k = start; k < end; k++) {
        const [account_id, balance] = job.history[k];
        view.setBigUint64((k - start) * HISTORY_ROW_BYTES, account_id, true);
        writeBalance(view, (k - start) * HISTORY_ROW_BYTES + 8, balance);
      }
      void this.history.put(keyU64(BigInt(b)), block);
      await yieldTurn();
    }
    const meta = Buffer.alloc(META_BYTES);
    meta.writeBigUInt64LE(BigInt(job.meta.position), 0);
    meta.writeUInt32LE(job.meta.checksum, 8);
    meta.writeBigUInt64LE(job.meta.last_timestamp, 16);
    meta.writeBigUInt64LE(job.meta.transfer_timestamp_max, 24);
    meta.writeBigUInt64LE(BigInt(job.meta.last_gid), 32);
    // Asynchronous puts issued in one event turn form one LMDB transaction, executed on lmdb's
    // write thread: the switch is atomic and the main thread only queues the writes.
    for (const [db, key, value] of job.final_puts) void db.put(key, value);
    const committed = this.meta.put('checkpoint', meta) as Promise<boolean> & { flushed?: Promise<void> };
    await committed;
    await (committed.flushed ?? this.env.flushed);
  }

  /** Loads the whole checkpoint, in timestamp order, ready for `Ledger.restore`. */
  load(): LedgerSnapshot {
    const meta = this.readMeta();
    const accounts: Account[] = [];
    for (const { value } of this.accounts.getRange({})) accounts.push(readAccount(viewOf(value), 0));
    accounts.sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0));
    const transfer_max = meta?.transfer_timestamp_max ?? 0n;
    const transfers: Transfer[] = [];
    for (const { value } of this.transfers.getRange({})) {
      const view = viewOf(value);
      for (let offset = 0; offset < value.byteLength; offset += TRANSFER_BYTES) {
        const transfer = readTransfer(view, offset);
        if (transfer.timestamp <= transfer_max) transfers.push(transfer);
      }
    }
    const history: HistoryEntry[] = [];
    for (const { value } of this.history.getRange({})) {
      const view = viewOf(value);
      for (let offset = 0; offset < value.byteLength; offset += HISTORY_ROW_BYTES) {
        const balance = readBalance(view, offset + 8);
        if (balance.timestamp <= transfer_max) history.push([view.getBigUint64(offset, true), balance]);
      }
    }
    const pending: Array<[bigint, PendingState]> = [];
    for (const { key, value } of this.pending.getRange({})) pending.push([key.readBigUInt64BE(0), readPending(viewOf(value), 0)]);
    const transient: bigint[] = [];
    for (const key of this.transient.getKeys({})) transient.push(key.readBigUInt64BE(0));
    return { accounts, transfers, history, pending, transient, last_timestamp: meta?.last_timestamp ?? 0n };
  }

  /**
   * Copies the environment, as of its last committed checkpoint, into the empty directory `path`
   * (LMDB's consistent copy under a read transaction): what a rebuilding replica starts from.
   */
  backup(path: string): Promise<void> {
    return this.env.backup(path, false);
  }

  close(): Promise<void> {
    return closeEnvironment(this.env);
  }
}

const EMPTY = Buffer.alloc(0);

function yieldTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function encodeAccount(account: Account): Buffer {
  const bytes = Buffer.allocUnsafe(ACCOUNT_BYTES);
  writeAccount(viewOf(bytes), 0, account);
  return bytes;
}

function encodePending(state: PendingState): Buffer {
  const bytes = Buffer.allocUnsafe(PENDING_BYTES);
  writePending(viewOf(bytes), 0, state);
  return bytes;
}

