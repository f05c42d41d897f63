// Incremental checkpoints of the ledger's state in their own LMDB environment.
//
// The log makes a batch durable; checkpoints bound recovery time. Each checkpoint writes only the
// objects changed since the previous one, plus the log position it covers, in one LMDB
// transaction: after a crash the state is either the old checkpoint or the new one, never a mix.
// A separate environment keeps checkpoint writes off the log's write lock, so a large checkpoint
// never stalls the commit of client batches.

import { open, type Database, type RootDatabase } from 'lmdb';
import type { Account, AccountBalance, Transfer } from '../ledger/types.ts';
import type { LedgerChanges, LedgerSnapshot, PendingState } from '../ledger/ledger.ts';
import {
  ACCOUNT_BYTES,
  BALANCE_BYTES,
  PENDING_BYTES,
  TRANSFER_BYTES,
  keyU64,
  keyU64Pair,
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
}

/** A checkpoint's writes, encoded at a batch boundary so that later batches cannot change them. */
export interface EncodedCheckpoint {
  meta: CheckpointMeta;
  puts: Array<[Database<Buffer, Buffer>, Buffer, Buffer]>;
  objects: number;
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
    if (bytes.byteLength !== 24) throw new Error(`corrupt checkpoint metadata: ${bytes.byteLength} bytes`);
    return {
      position: Number(bytes.readBigUInt64LE(0)),
      checksum: bytes.readUInt32LE(8),
      last_timestamp: bytes.readBigUInt64LE(16),
    };
  }

  /** Encodes a ledger's changes now; `write` commits them later. */
  encode(changes: LedgerChanges, meta: CheckpointMeta): EncodedCheckpoint {
    const puts: EncodedCheckpoint['puts'] = [];
    for (const account of changes.accounts) puts.push([this.accounts, keyU64(account.id), encodeAccount(account)]);
    for (const transfer of changes.transfers) puts.push([this.transfers, keyU64(transfer.timestamp), encodeTransfer(transfer)]);
    for (const [id, state] of changes.pending) puts.push([this.pending, keyU64(id), encodePending(state)]);
    for (const id of changes.transient) puts.push([this.transient, keyU64(id), Buffer.alloc(0)]);
    for (const [account_id, balance] of changes.history) {
      puts.push([this.history, keyU64Pair(account_id, balance.timestamp), encodeBalance(balance)]);
    }
    return { meta, puts, objects: puts.length };
  }

  /** Commits an encoded checkpoint in one transaction; resolves once it is fsynced. */
  async write(checkpoint: EncodedCheckpoint): Promise<void> {
    const meta = Buffer.alloc(24);
    meta.writeBigUInt64LE(BigInt(checkpoint.meta.position), 0);
    meta.writeUInt32LE(checkpoint.meta.checksum, 8);
    meta.writeBigUInt64LE(checkpoint.meta.last_timestamp, 16);
    // Asynchronous puts issued in one event turn form one LMDB transaction, executed on lmdb's
    // write thread: the checkpoint is atomic and the main thread only queues the writes.
    for (const [db, key, value] of checkpoint.puts) void db.put(key, value);
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
    const transfers: Transfer[] = [];
    for (const { value } of this.transfers.getRange({})) transfers.push(readTransfer(viewOf(value), 0));
    const history: Array<[bigint, AccountBalance[]]> = [];
    let current: [bigint, AccountBalance[]] | null = null;
    for (const { key, value } of this.history.getRange({})) {
      const account_id = key.readBigUInt64BE(0);
      if (current === null || current[0] !== account_id) {
        current = [account_id, []];
        history.push(current);
      }
      current[1].push(readBalance(viewOf(value), 0));
    }
    const pending: Array<[bigint, PendingState]> = [];
    for (const { key, value } of this.pending.getRange({})) pending.push([key.readBigUInt64BE(0), readPending(viewOf(value), 0)]);
    const transient: bigint[] = [];
    for (const key of this.transient.getKeys({})) transient.push(key.readBigUInt64BE(0));
    return { accounts, transfers, history, pending, transient, last_timestamp: meta?.last_timestamp ?? 0n };
  }

  async close(): Promise<void> {
    await this.env.flushed;
    await this.env.close();
  }
}

function encodeAccount(account: Account): Buffer {
  const bytes = Buffer.allocUnsafe(ACCOUNT_BYTES);
  writeAccount(viewOf(bytes), 0, account);
  return bytes;
}

function encodeTransfer(transfer: Transfer): Buffer {
  const bytes = Buffer.allocUnsafe(TRANSFER_BYTES);
  writeTransfer(viewOf(bytes), 0, transfer);
  return bytes;
}

function encodePending(state: PendingState): Buffer {
  const bytes = Buffer.allocUnsafe(PENDING_BYTES);
  writePending(viewOf(bytes), 0, state);
  return bytes;
}

function encodeBalance(balance: AccountBalance): Buffer {
  const bytes = Buffer.allocUnsafe(BALANCE_BYTES);
  writeBalance(viewOf(bytes), 0, balance);
  return bytes;
}
