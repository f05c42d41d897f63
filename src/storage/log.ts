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
import type { TimestampRuns } from '../ledger/ledger.ts';

/**
 * `group`: a cross-shard group this shard took part in. Its body holds the events and what every
 * participant read, so any one participant's entry lets the others redo the group (recovery).
 */
export const LogOp = { create_accounts: 1, create_transfers: 2, pulse: 3, group: 4 } as const;
export type LogOpValue = (typeof LogOp)[keyof typeof LogOp];

const MAGIC = 0x4b45454c; // "KEEL"
const FORMAT_VERSION = 1;
export const ENTRY_HEADER_BYTES = 56;
/** Header byte 7: the body ends with timestamp runs (16 bytes each: u64 last, u32 count, u32 0). */
const FLAG_RUNS = 1;
const RUN_BYTES = 16;
const RECORD_BYTES: Record<number, number> = { 1: 40, 2: 72, 3: 0 };
/**
 * Upper bound on one entry's body. A plain batch is at most 8190 events of 72 bytes; a group
 * entry also carries its participants' read sets (accounts, transfers, due pending transfers).
 */
export const ENTRY_BODY_BYTES_MAX = 64 << 20;

export interface LogEntry {
  position: number;
  epoch: number;
  op: LogOpValue;
  now_ns: bigint;
  count: number;
  /** The events' records (runs excluded). */
  body: Uint8Array;
  /** Timestamps assigned by the engine's sequencer, or null: derived from now_ns. */
  runs: TimestampRuns | null;
  /** The checksum of this entry's header, which covers its body's checksum and its predecessor's. */
  checksum: number;
  prev_checksum: number;
}

export interface LogHead {
  position: number;
  checksum: number;
}

/** A replicated entry that cannot follow this log: out of order, from an older epoch, or not chained. */
export class ReplicaEntryError extends Error {
  constructor(
    readonly code: 'out_of_order' | 'stale_epoch' | 'not_chained',
    message: string,
  ) {
    super(message);
  }
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
  /**
   * Fault injection for tests: hold every write this long before handing it to LMDB, as a slow
   * disk would (entries stay in order). 0 in production.
   */
  write_delay_ms?: number;
  /** Told each position once it is durable (with everything before it), in order. */
  on_durable?: (position: number) => void;
}

/** What a replica compares of an entry without decoding its body. */
export interface EntryHeader {
  position: number;
  epoch: number;
  checksum: number;
  prev_checksum: number;
}

/** A stored entry's op, from its head alone (no checksum check: for entries already verified). */
export function entryOp(bytes: Uint8Array): number {
  return bytes[6];
}

/** The header fields of a stored entry (its header checksum verified). */
export function entryHeader(bytes: Uint8Array): EntryHeader {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.byteLength < ENTRY_HEADER_BYTES || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(48) !== crc32(buf.subarray(0, 48))) {
    throw new CorruptLogError(buf.byteLength >= 16 ? Number(buf.readBigUInt64LE(8)) : -1, 'not a log entry (bad header)');
  }
  return { position: Number(buf.readBigUInt64LE(8)), epoch: Number(buf.readBigUInt64LE(16)), checksum: buf.readUInt32LE(48), prev_checksum: buf.readUInt32LE(40) };
}

export class LogStore {
  private readonly env: RootDatabase;
  private readonly entries: Database<Buffer, number>;
  /** Group id → log position of this shard's entry for that cross-shard group. */
  private readonly groups: Database<number, number>;
  private head_: LogHead;
  /** The epoch of the last entry: a replicated entry of an older epoch is refused. */
  private head_epoch = 0;
  private durable_position_: number;
  private failure: Error | null = null;
  private last_append: Promise<unknown> = Promise.resolve();
  private write_delay_ms = 0;
  private on_durable: ((position: number) => void) | undefined;

  private constructor(env: RootDatabase, entries: Database<Buffer, number>, groups: Database<number, number>) {
    this.env = env;
    this.entries = entries;
    this.groups = groups;
    this.head_ = { position: 0, checksum: 0 };
    for (const { key, value } of this.entries.getRange({ reverse: true, limit: 1 })) {
      try {
        const entry = decodeEntry(value, undefined);
        this.head_ = { position: entry.position, checksum: entry.checksum };
        this.head_epoch = entry.epoch;
      } catch (error) {
        // A torn last write: recovery reads the entry again and refuses it with the reason;
        // `keel log check|repair` must still be able to open the log to find and drop it.
        this.head_ = { position: key, checksum: 0 };
        this.failure = error instanceof Error ? error : new Error(String(error));
      }
    }
    this.durable_position_ = this.head_.position;
  }

  static open(options: LogStoreOptions): LogStore {
    const env = open({ path: options.path, separateFlushed: true, maxDbs: 4 });
    const entries = env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' });
    const groups = env.openDB<number, number>({ name: 'groups' });
    const log = new LogStore(env, entries, groups);
    log.write_delay_ms = options.write_delay_ms ?? 0;
    log.on_durable = options.on_durable;
    return log;
  }

  /** The last appended entry (not necessarily durable yet). */
  get head(): LogHead {
    return this.head_;
  }

  /** The epoch of the last appended entry (0 when the log is empty). */
  get epoch(): number {
    return this.head_epoch;
  }

  /** The header of the stored entry at `position`, or null when there is none. */
  headerAt(position: number): EntryHeader | null {
    const bytes = this.entries.get(position);
    return bytes === undefined ? null : entryHeader(bytes);
  }

  /**
   * The last position whose entry is of epoch `epoch` or older, or firstPosition() - 1 when
   * none is: where a replica that last appended in `epoch` agrees with this log at most (epochs
   * never decrease along a log, so a binary search finds it).
   */
  lastPositionOfEpoch(epoch: number): number {
    let low = this.firstPosition();
    if (low === 0) return 0;
    let high = this.head_.position;
    if (this.head_epoch <= epoch) return high;
    // Invariant: the answer lies in [low - 1, high - 1].
    while (low < high) {
      const middle = Math.floor((low + high) / 2);
      const header = this.headerAt(middle);
      if (header !== null && header.epoch <= epoch) low = middle + 1;
      else high = middle;
    }
    return low - 1;
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
  append(
    epoch: number,
    op: LogOpValue,
    now_ns: bigint,
    count: number,
    body: Uint8Array,
    group_id = 0,
    runs: TimestampRuns | null = null,
  ): Promise<number> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if ((op === LogOp.group) !== group_id > 0) throw new RangeError('a group entry, and only one, carries a group id');
    if (epoch < this.head_epoch) throw new RangeError(`epoch ${epoch} is older than the log's ${this.head_epoch}`);
    const position = this.head_.position + 1;
    const bytes = encodeEntry(position, epoch, op, now_ns, count, body, this.head_.checksum, runs);
    return this.write(position, epoch, bytes, group_id);
  }

  /**
   * A replica's append: the leader's entry exactly as the leader stored it, verified to follow
   * this log (next position, same or newer epoch, checksum chain). Resolves once it is durable.
   */
  appendStored(bytes: Uint8Array, entry: LogEntry, group_id = 0): Promise<number> {
    if (this.failure !== null) return Promise.reject(this.failure);
    // `entry` is what decodeEntry (checksums verified) made of these very bytes: its body is a view of them.
    // (Its body is the records alone: timestamp runs, when present, follow them in the bytes.)
    if (entry.body.buffer !== bytes.buffer || entry.body.byteOffset !== bytes.byteOffset + ENTRY_HEADER_BYTES || entry.body.byteLength > bytes.byteLength - ENTRY_HEADER_BYTES) {
      throw new RangeError('appendStored takes the entry decoded from its bytes');
    }
    if (entry.position !== this.head_.position + 1) {
      throw new ReplicaEntryError('out_of_order', `entry ${entry.position} does not follow this log's head ${this.head_.position}`);
    }
    if (entry.epoch < this.head_epoch) {
      throw new ReplicaEntryError('stale_epoch', `entry ${entry.position} is of epoch ${entry.epoch}, older than this log's ${this.head_epoch}`);
    }
    if (entry.prev_checksum !== this.head_.checksum) {
      throw new ReplicaEntryError('not_chained', `entry ${entry.position} does not chain to this log's entry ${this.head_.position} (diverged)`);
    }
    if ((entry.op === LogOp.group) !== group_id > 0) throw new RangeError('a group entry, and only one, carries a group id');
    // A copy: lmdb-js reads the value's memory when its write thread commits, so it must be ours
    // alone (the caller's buffer could be transferred to another thread meanwhile).
    return this.write(entry.position, entry.epoch, Buffer.from(bytes), group_id);
  }

  /**
   * A rebuilt replica's first entry: the one its shipped checkpoint summarises, stored as the
   * leader stored it at its own position (an empty log only). Later entries chain to it.
   */
  async seed(bytes: Uint8Array, group_id = 0): Promise<number> {
    if (this.head_.position !== 0 || this.firstPosition() !== 0) throw new Error('only an empty log can be seeded');
    const entry = decodeEntry(bytes, undefined);
    if ((entry.op === LogOp.group) !== group_id > 0) throw new RangeError('a group entry, and only one, carries a group id');
    return this.write(entry.position, entry.epoch, Buffer.from(bytes), group_id);
  }

  /** Stored entries from `from`, at most `limit`, exactly as stored (what a leader ships). */
  readStored(from: number, limit: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    // Each in its own ArrayBuffer (never Node's shared pool), so it can be transferred whole.
    for (const { value } of this.entries.getRange({ start: from, limit })) out.push(new Uint8Array(value));
    return out;
  }

  private write(position: number, epoch: number, bytes: Buffer, group_id: number): Promise<number> {
    this.head_ = { position, checksum: bytes.readUInt32LE(48) };
    this.head_epoch = epoch;
    // Both puts are issued in one event turn, so lmdb-js commits them in one transaction: the
    // index never lacks a durable group entry.
    const put = (): Promise<unknown> => {
      if (group_id > 0) void this.groups.put(group_id, position);
      const written = this.entries.put(position, bytes) as Promise<boolean> & { flushed?: Promise<void> };
      return Promise.all([written, written.flushed ?? written]);
    };
    const flushed = this.write_delay_ms > 0 ? new Promise((resolve) => setTimeout(resolve, this.write_delay_ms)).then(put) : put();
    // An entry counts as durable only if every entry before it is: should an earlier write fail,
    // a later one that succeeded must not be acknowledged over the gap.
    const previous = this.last_append;
    const durable = Promise.all([previous, flushed]).then(
      () => {
        if (position > this.durable_position_) this.durable_position_ = position;
        this.on_durable?.(position);
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

  /**
   * The first problem of the log from `from` (where recovery starts reading), or null: a `gap`
   * (an entry missing before later ones, or the log not reaching back to `from`:
   * its write failed, so nothing after it was ever acknowledged) or a `corrupt` entry (its bytes
   * or chain are wrong: it may have been acknowledged).
   */
  check(from: number): { position: number; kind: 'gap' | 'corrupt'; reason: string; /** stored entries after the problem (a corrupt entry itself not counted) */ entries_after: number } | null {
    let expected = from;
    let prev: number | undefined;
    let problem: { position: number; kind: 'gap' | 'corrupt'; reason: string } | null = null;
    let after = 0;
    for (const { key, value } of this.entries.getRange({ start: from })) {
      if (problem !== null) {
        after++;
        continue;
      }
      if (key !== expected) {
        problem = { position: expected, kind: 'gap', reason: `entry ${expected} is missing; the next stored entry is ${key}` };
        after = 1;
        continue;
      }
      try {
        const entry = decodeEntry(value, prev);
        if (entry.position !== key) throw new CorruptLogError(key, `stored under position ${key} but says ${entry.position}`);
        prev = entry.checksum;
      } catch (error) {
        problem = { position: key, kind: 'corrupt', reason: error instanceof Error ? error.message : String(error) };
        after = 0;
        continue;
      }
      expected = key + 1;
    }
    return problem === null ? null : { ...problem, entries_after: after };
  }

  /** [group id, position] of the cross-shard group entries at or after `position`, by position. */
  groupPositionsFrom(position: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (const { key, value } of this.groups.getRange({})) if (value >= position) out.push([key, value]);
    return out.sort((a, b) => a[1] - b[1]);
  }

  /** The stored entry at `position`, verified on its own, or null. */
  entryAt(position: number): LogEntry | null {
    const bytes = this.entries.get(position);
    return bytes === undefined ? null : decodeEntry(bytes, undefined);
  }

  /** Ids of the cross-shard groups whose entries are at or after `position`. */
  groupsFrom(position: number): number[] {
    const out: number[] = [];
    for (const { key, value } of this.groups.getRange({})) if (value >= position) out.push(key);
    return out;
  }

  /** Removes every entry from `position` on (and their group index); returns how many. */
  async truncateFrom(position: number): Promise<number> {
    const keys = [...this.entries.getKeys({ start: position })];
    const groups: number[] = [];
    for (const { key, value } of this.groups.getRange({})) if (value >= position) groups.push(key);
    await this.entries.transaction(() => {
      for (const key of keys) this.entries.removeSync(key);
      for (const key of groups) this.groups.removeSync(key);
    });
    this.head_ = { position: 0, checksum: 0 };
    this.head_epoch = 0;
    for (const { value } of this.entries.getRange({ reverse: true, limit: 1 })) {
      const entry = decodeEntry(value, undefined);
      this.head_ = { position: entry.position, checksum: entry.checksum };
      this.head_epoch = entry.epoch;
    }
    this.durable_position_ = Math.min(this.durable_position_, this.head_.position);
    return keys.length;
  }

  /** This shard's entries for groups after `group_id`, in group order (verified one by one). */
  groupEntriesAfter(group_id: number): Array<{ group_id: number; entry: LogEntry }> {
    const out: Array<{ group_id: number; entry: LogEntry }> = [];
    for (const { key, value: position } of this.groups.getRange({ start: group_id + 1 })) {
      const bytes = this.entries.get(position);
      if (bytes === undefined) throw new CorruptLogError(position, `group ${key} points at it, but it is not in the log`);
      const entry = decodeEntry(bytes, undefined);
      if (entry.op !== LogOp.group) throw new CorruptLogError(position, `group ${key} points at it, but it is no group entry`);
      out.push({ group_id: key, entry });
    }
    return out;
  }

  /** Drops entries below `position` (checkpointed and past retention). */
  async prune(position: number): Promise<void> {
    const keys = [...this.entries.getKeys({ end: position })];
    if (keys.length === 0) return;
    const groups: number[] = [];
    for (const { key, value } of this.groups.getRange({})) {
      if (value < position) groups.push(key);
      else break;
    }
    await this.entries.transaction(() => {
      for (const key of keys) this.entries.removeSync(key);
      for (const key of groups) this.groups.removeSync(key);
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
  runs: TimestampRuns | null = null,
): Buffer {
  if (runs !== null && (op === LogOp.group || body.byteLength !== count * RECORD_BYTES[op])) {
    throw new RangeError('timestamp runs go with a plain batch of whole records');
  }
  const runs_bytes = runs === null ? 0 : runs.length * RUN_BYTES;
  const body_bytes = body.byteLength + runs_bytes;
  if (body_bytes > ENTRY_BODY_BYTES_MAX) throw new Error(`log entry body of ${body_bytes} bytes is over the limit`);
  const bytes = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + body_bytes);
  bytes.writeUInt32LE(MAGIC, 0);
  bytes.writeUInt16LE(FORMAT_VERSION, 4);
  bytes.writeUInt8(op, 6); // entryOp reads it here
  bytes.writeUInt8(runs === null ? 0 : FLAG_RUNS, 7);
  bytes.writeBigUInt64LE(BigInt(position), 8);
  bytes.writeBigUInt64LE(BigInt(epoch), 16);
  bytes.writeBigUInt64LE(now_ns, 24);
  bytes.writeUInt32LE(count, 32);
  bytes.writeUInt32LE(body_bytes, 36);
  bytes.writeUInt32LE(prev_checksum, 40);
  bytes.set(body, ENTRY_HEADER_BYTES);
  if (runs !== null) {
    let at = ENTRY_HEADER_BYTES + body.byteLength;
    for (const [top, n] of runs) {
      bytes.writeBigUInt64LE(top, at);
      bytes.writeUInt32LE(n, at + 8);
      bytes.writeUInt32LE(0, at + 12);
      at += RUN_BYTES;
    }
  }
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
  if (op !== LogOp.create_accounts && op !== LogOp.create_transfers && op !== LogOp.pulse && op !== LogOp.group) {
    throw new CorruptLogError(position_hint, `unknown operation ${op}`);
  }
  const count = buf.readUInt32LE(32);
  const flags = buf.readUInt8(7);
  let records = body;
  let runs: Array<[bigint, number]> | null = null;
  if ((flags & FLAG_RUNS) !== 0) {
    const record_bytes = count * (RECORD_BYTES[op] ?? 0);
    const runs_bytes = body.byteLength - record_bytes;
    if (op === LogOp.group || runs_bytes <= 0 || runs_bytes % RUN_BYTES !== 0) {
      throw new CorruptLogError(position_hint, `timestamp runs of ${runs_bytes} bytes do not fit the entry`);
    }
    records = body.subarray(0, record_bytes);
    runs = [];
    for (let at = record_bytes; at < body.byteLength; at += RUN_BYTES) runs.push([body.readBigUInt64LE(at), body.readUInt32LE(at + 8)]);
  } else if (flags !== 0) {
    throw new CorruptLogError(position_hint, `unknown flags ${flags}`);
  }
  return {
    position: position_hint,
    epoch: Number(buf.readBigUInt64LE(16)),
    op,
    now_ns: buf.readBigUInt64LE(24),
    count,
    body: records,
    runs,
    checksum: buf.readUInt32LE(48),
    prev_checksum,
  };
}
