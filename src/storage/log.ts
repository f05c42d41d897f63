// The shard's write-ahead log on LMDB: one entry per applied batch, keyed by position.
//
// An entry is the batch's input (operation, engine time, events), not its effects: the state
// machine is deterministic, so replaying inputs rebuilds state exactly. Every entry carries its
// position, epoch and checksums of header and body, and the checksum of its
// predecessor (CRC-32), so a lost, reordered or corrupted entry is detected on read. This is the log that
// replication will ship between centers.

import { open, type Database, type RootDatabase } from 'lmdb';
import { crc32 } from 'node:zlib';
import { closeEnvironment } from './close.ts';

export const LogOp = { create_accounts: 1, create_transfers: 2, pulse: 3 } as const;
export type LogOpValue = (typeof LogOp)[keyof typeof LogOp];

const MAGIC = 0x4b45454c; // "KEEL"
const FORMAT_VERSION = 1;
export const ENTRY_HEADER_BYTES = 56;
/** Upper bound on one entry's body: 8190 events of 72 bytes, with room to spare. */
export const ENTRY_BODY_BYTES_MAX = 1 << 20;

export interface LogEntry {
  position: number;
  epoch: number;
  op: LogOpValue;
  now_ns: bigint;
  count: number;
  body: Uint8Array;
  /** The checksum of this entry's header, which covers its body's checksum and its predecessor's. */
  checksum: number;
  prev_checksum: number;
}

export interface LogHead {
  position: number;
  checksum: number;
}

export class CorruptLogError extends Error {
  readonly code = 'log_corrupt';
  constructor(
    readonly position: number,
    reason: string,
  ) {
    super(`log entry ${position} is corrupt: ${reason}`);
  }
}

export interface LogStoreOptions {
  /** Directory of the LMDB environment that holds only the log (its own write lock). */
  path: string;
}

export class LogStore {
  private readonly env: RootDatabase;
  private readonly entries: Database<Buffer, number>;
  private head_: LogHead;
  private durable_position_: number;
  private failure: Error | null = null;
  private last_append: Promise<unknown> = Promise.resolve();

  private constructor(env: RootDatabase, entries: Database<Buffer, number>) {
    this.env = env;
    this.entries = entries;
    this.head_ = { position: 0, checksum: 0 };
    for (const { value } of this.entries.getRange({ reverse: true, limit: 1 })) {
      const entry = decodeEntry(value, undefined);
      this.head_ = { position: entry.position, checksum: entry.checksum };
    }
    this.durable_position_ = this.head_.position;
  }

  static open(options: LogStoreOptions): LogStore {
    const env = open({ path: options.path, separateFlushed: true, maxDbs: 4 });
    const entries = env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' });
    return new LogStore(env, entries);
  }

  /** The last appended entry (not necessarily durable yet). */
  get head(): LogHead {
    return this.head_;
  }

  /** Every entry at or below this position is fsynced. */
  get durable_position(): number {
    return this.durable_position_;
  }

  /** The oldest retained entry's position, or 0 when the log is empty. */
  firstPosition(): number {
    for (const key of this.entries.getKeys({ limit: 1 })) return key;
    return 0;
  }

  /**
   * Appends the next entry. The returned promise resolves once the entry is fsynced: only then may
   * anything that depends on it be acknowledged. Entries in one event turn share one commit.
   */
  append(epoch: number, op: LogOpValue, now_ns: bigint, count: number, body: Uint8Array): Promise<number> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const position = this.head_.position + 1;
    const bytes = encodeEntry(position, epoch, op, now_ns, count, body, this.head_.checksum);
    this.head_ = { position, checksum: bytes.readUInt32LE(48) };
    const written = this.entries.put(position, bytes) as Promise<boolean> & { flushed?: Promise<void> };
    const flushed = written.flushed ?? written;
    // An entry counts as durable only if every entry before it is: should an earlier write fail,
    // a later one that succeeded must not be acknowledged over the gap.
    const previous = this.last_append;
    const durable = Promise.all([previous, written, flushed]).then(
      () => {
        if (position > this.durable_position_) this.durable_position_ = position;
        return position;
      },
      (error: unknown) => {
        // The in-memory state is now ahead of the disk: nothing may be acknowledged any more.
        if (this.failure === null) this.failure = error instanceof Error ? error : new Error(String(error));
        throw this.failure;
      },
    );
    this.last_append = durable;
    return durable;
  }

  /** Verified entries from `from` (inclusive) to the head, in order. */
  *read(from: number, expected_prev_checksum?: number): Generator<LogEntry> {
    let prev = expected_prev_checksum;
    let expected_position = from;
    for (const { key, value } of this.entries.getRange({ start: from })) {
      if (key !== expected_position) {
        throw new CorruptLogError(expected_position, `missing; the next stored entry is ${key}`);
      }
      const entry = decodeEntry(value, prev);
      if (entry.position !== key) throw new CorruptLogError(key, `stored under position ${key} but says ${entry.position}`);
      prev = entry.checksum;
      expected_position++;
      yield entry;
    }
  }

  /** Drops entries below `position` (checkpointed and past retention). */
  async prune(position: number): Promise<void> {
    const keys = [...this.entries.getKeys({ end: position })];
    if (keys.length === 0) return;
    await this.entries.transaction(() => {
      for (const key of keys) this.entries.removeSync(key);
    });
  }

  close(): Promise<void> {
    return closeEnvironment(this.env);
  }
}

export function encodeEntry(
  position: number,
  epoch: number,
  op: LogOpValue,
  now_ns: bigint,
  count: number,
  body: Uint8Array,
  prev_checksum: number,
): Buffer {
  if (body.byteLength > ENTRY_BODY_BYTES_MAX) throw new Error(`log entry body of ${body.byteLength} bytes is over the limit`);
  const bytes = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + body.byteLength);
  bytes.writeUInt32LE(MAGIC, 0);
  bytes.writeUInt16LE(FORMAT_VERSION, 4);
  bytes.writeUInt8(op, 6);
  bytes.writeUInt8(0, 7);
  bytes.writeBigUInt64LE(BigInt(position), 8);
  bytes.writeBigUInt64LE(BigInt(epoch), 16);
  bytes.writeBigUInt64LE(now_ns, 24);
  bytes.writeUInt32LE(count, 32);
  bytes.writeUInt32LE(body.byteLength, 36);
  bytes.writeUInt32LE(prev_checksum, 40);
  bytes.set(body, ENTRY_HEADER_BYTES);
  bytes.writeUInt32LE(crc32(bytes.subarray(ENTRY_HEADER_BYTES)), 44);
  bytes.writeUInt32LE(crc32(bytes.subarray(0, 48)), 48);
  bytes.writeUInt32LE(0, 52);
  return bytes;
}

export function decodeEntry(bytes: Uint8Array, expected_prev_checksum: number | undefined): LogEntry {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const position_hint = buf.byteLength >= 16 ? Number(buf.readBigUInt64LE(8)) : -1;
  if (buf.byteLength < ENTRY_HEADER_BYTES) throw new CorruptLogError(position_hint, `only ${buf.byteLength} bytes`);
  if (buf.readUInt32LE(0) !== MAGIC) throw new CorruptLogError(position_hint, 'bad magic number');
  if (buf.readUInt32LE(48) !== crc32(buf.subarray(0, 48))) throw new CorruptLogError(position_hint, 'header checksum mismatch');
  const version = buf.readUInt16LE(4);
  if (version !== FORMAT_VERSION) throw new CorruptLogError(position_hint, `unknown format version ${version}`);
  const body_bytes = buf.readUInt32LE(36);
  if (buf.byteLength !== ENTRY_HEADER_BYTES + body_bytes) {
    throw new CorruptLogError(position_hint, `length ${buf.byteLength} does not match header (${ENTRY_HEADER_BYTES + body_bytes})`);
  }
  const body = buf.subarray(ENTRY_HEADER_BYTES);
  if (buf.readUInt32LE(44) !== crc32(body)) throw new CorruptLogError(position_hint, 'body checksum mismatch');
  const prev_checksum = buf.readUInt32LE(40);
  if (expected_prev_checksum !== undefined && prev_checksum !== expected_prev_checksum) {
    throw new CorruptLogError(position_hint, 'does not follow its predecessor (chain checksum mismatch)');
  }
  const op = buf.readUInt8(6);
  if (op !== LogOp.create_accounts && op !== LogOp.create_transfers && op !== LogOp.pulse) {
    throw new CorruptLogError(position_hint, `unknown operation ${op}`);
  }
  return {
    position: position_hint,
    epoch: Number(buf.readBigUInt64LE(16)),
    op,
    now_ns: buf.readBigUInt64LE(24),
    count: buf.readUInt32LE(32),
    body,
    checksum: buf.readUInt32LE(48),
    prev_checksum,
  };
}
