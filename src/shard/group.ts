// Cross-shard groups: the events of a request whose accounts or ids span shards.
//
// Protocol (docs/sharding.md): the main thread sends the group to every participant in the same
// event turn, so each shard's queue orders it identically against everything else. Each
// participant, on reaching it, stops and reads what the group needs from its own state (a read
// set); the main thread hands every participant the union and a timestamp range above all of
// them; each participant executes the group on a partial ledger seeded with that union (the same
// pure state machine, so every participant computes the same results), takes over the effects on
// what it holds, and logs the group with the whole union. Any participant's durable entry is then
// enough to redo the group on the others after a crash: a group is applied everywhere or nowhere.

import { Ledger, type PendingState, type SeedInput } from '../ledger/ledger.ts';
import { AccountFlags, TransferFlags, type Account, type CreateResult, type Transfer } from '../ledger/types.ts';
import {
  ACCOUNT_BYTES,
  ACCOUNT_INPUT_BYTES,
  PENDING_BYTES,
  TRANSFER_BYTES,
  decodeAccountBatch,
  decodeTransferBatch,
  readAccount,
  readPending,
  readTransfer,
  recordFlags,
  viewOf,
  writeAccount,
  writePending,
  writeTransfer,
} from '../storage/codec.ts';

export const GroupKind = { accounts: 1, transfers: 2, pulse: 3 } as const;
export type GroupKindValue = (typeof GroupKind)[keyof typeof GroupKind];

/** How far past its clock a participant reads due pending transfers before it knows the group's time. */
export const READ_HORIZON_NS = 2_000_000_000n;

const READ_HEADER_BYTES = 64;
const PENDING_ROW_BYTES = 8 + PENDING_BYTES;

export interface ReadSetHeader {
  last_timestamp: bigint;
  horizon: bigint;
  /** The cap on due pending transfers this read applied (recovery reads again with it). */
  due_max: number;
}

/**
 * What one participant holds that the group may touch: the accounts of its events, the transfers
 * their ids and pending ids name (with pending states), burned ids, and every pending transfer
 * due by `horizon` with its accounts (a group expires what is due before its first event, as any
 * batch does). Deterministic: the same state and input give the same bytes, which recovery checks.
 * `known[i] === 0` says no shard holds or burned event i's id: looking it up would find nothing,
 * so it is skipped (those misses, in a table of millions, were about 8% of a participant's time in
 * a 50%-cross-shard profile).
 */
export function buildReadSet(
  ledger: Ledger,
  kind: GroupKindValue,
  count: number,
  body: Uint8Array,
  horizon: bigint,
  due_max: number,
  known: Uint8Array | null = null,
): ReadSet {
  const accounts = new Map<bigint, Account>();
  const transfers = new Map<bigint, Transfer>();
  const pending = new Map<bigint, PendingState>();
  const transient = new Set<bigint>();
  const taken = new Set<bigint>();
  const view = viewOf(body);

  // One lookup in the shard's own maps first: most ids are of another shard's accounts, or new.
  // (Setting an id already in `accounts` keeps its first place, so the order stays deterministic.)
  const account = (id: bigint): void => {
    const found = ledger.accounts.get(id);
    if (found !== undefined) accounts.set(id, found);
  };
  const transfer = (id: bigint, with_accounts: boolean): void => {
    const found = ledger.transfers.get(id);
    if (found === undefined) return;
    if (!transfers.has(id)) {
      transfers.set(id, found);
      const state = ledger.pending.get(id);
      if (state !== undefined) pending.set(id, state);
      // An existing post or void is compared against its pending transfer (exists checks).
      if (found.pending_id !== 0n) transfer(found.pending_id, false);
    }
    if (with_accounts) {
      account(found.debit_account_id);
      account(found.credit_account_id);
    }
  };
  const imported = (timestamp: bigint): void => {
    if (timestamp !== 0n && ledger.hasObjectTimestamp(timestamp)) taken.add(timestamp);
  };

  if (kind === GroupKind.transfers) {
    for (let i = 0; i < count; i++) {
      const at = i * TRANSFER_BYTES;
      const id = view.getBigUint64(at, true);
      account(view.getBigUint64(at + 8, true));
      account(view.getBigUint64(at + 16, true));
      if (known === null || known[i] !== 0) {
        transfer(id, false);
        if (ledger.transient.has(id)) transient.add(id);
      }
      const pending_id = view.getBigUint64(at + 32, true);
      if (pending_id !== 0n) transfer(pending_id, true);
      if ((recordFlags(body, i, TRANSFER_BYTES) & TransferFlags.imported) !== 0) imported(view.getBigUint64(at + 48, true));
    }
  } else if (kind === GroupKind.accounts) {
    for (let i = 0; i < count; i++) {
      const at = i * ACCOUNT_INPUT_BYTES;
      account(view.getBigUint64(at, true));
      if ((recordFlags(body, i, ACCOUNT_INPUT_BYTES) & AccountFlags.imported) !== 0) imported(view.getBigUint64(at + 16, true));
    }
  }
  // Earliest deadlines first, at most due_max of them: a long outage can leave more due than one
  // entry should carry, and later pulses take the rest.
  for (const id of ledger.duePending(horizon, due_max)) transfer(id, true);

  const size =
    READ_HEADER_BYTES +
    accounts.size * ACCOUNT_BYTES +
    transfers.size * TRANSFER_BYTES +
    pending.size * PENDING_ROW_BYTES +
    (transient.size + taken.size) * 8;
  const out = new Uint8Array(size);
  const w = viewOf(out);
  w.setBigUint64(0, ledger.last_timestamp, true);
  w.setBigUint64(8, ledger.account_timestamp_max, true);
  w.setBigUint64(16, ledger.transfer_timestamp_max, true);
  w.setBigUint64(24, horizon, true);
  w.setUint32(32, accounts.size, true);
  w.setUint32(36, transfers.size, true);
  w.setUint32(40, pending.size, true);
  w.setUint32(44, transient.size, true);
  w.setUint32(48, taken.size, true);
  w.setUint32(52, due_max, true);
  let offset = READ_HEADER_BYTES;
  for (const a of accounts.values()) {
    writeAccount(w, offset, a);
    offset += ACCOUNT_BYTES;
  }
  for (const t of transfers.values()) {
    writeTransfer(w, offset, t);
    offset += TRANSFER_BYTES;
  }
  for (const [id, state] of pending) {
    w.setBigUint64(offset, id, true);
    writePending(w, offset + 8, state);
    offset += PENDING_ROW_BYTES;
  }
  for (const id of transient) {
    w.setBigUint64(offset, id, true);
    offset += 8;
  }
  for (const timestamp of taken) {
    w.setBigUint64(offset, timestamp, true);
    offset += 8;
  }
  return {
    bytes: out,
    own: {
      accounts: [...accounts.values()],
      transfers: [...transfers.values()],
      pending: [...pending],
      transient: [...transient],
      taken: [...taken],
      last_timestamp: ledger.last_timestamp,
      account_timestamp_max: ledger.account_timestamp_max,
      transfer_timestamp_max: ledger.transfer_timestamp_max,
    },
  };
}

/**
 * A participant's read set: the bytes it sends (and logs), and the same objects as it holds them,
 * which it seeds its own execution with (copied) instead of decoding its own bytes again. Valid
 * only while the shard stays stopped at the group.
 */
export interface ReadSet {
  bytes: Uint8Array;
  own: SeedInput;
}

export function readSetHeader(bytes: Uint8Array): ReadSetHeader {
  if (bytes.byteLength < READ_HEADER_BYTES) throw new Error(`read set of ${bytes.byteLength} bytes is truncated`);
  const view = viewOf(bytes);
  return { last_timestamp: view.getBigUint64(0, true), horizon: view.getBigUint64(24, true), due_max: view.getUint32(52, true) };
}

/**
 * The union of the participants' read sets, as a partial ledger's seed. With `own`, the part at
 * index `own.index` is taken from those live objects (copied) rather than decoded.
 */
export function uniteReadSets(parts: readonly Uint8Array[], own?: { index: number; seed: SeedInput }): SeedInput {
  const seed: SeedInput = {
    accounts: [],
    transfers: [],
    pending: [],
    transient: [],
    taken: [],
    last_timestamp: 0n,
    account_timestamp_max: 0n,
    transfer_timestamp_max: 0n,
  };
  const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);
  if (own !== undefined) {
    // The participant's own objects go in as they are, not copied: the partial ledger mutates its
    // accounts in place (so the real ledger sees the effects on them at once; a linked chain's
    // rollback undoes them in place too), and replaces rather than mutates transfers and pending
    // states. Anything that throws during execution stops the shard, as on the plain path.
    const o = own.seed;
    seed.last_timestamp = o.last_timestamp;
    seed.account_timestamp_max = o.account_timestamp_max;
    seed.transfer_timestamp_max = o.transfer_timestamp_max;
    for (const a of o.accounts) seed.accounts.push(a);
    for (const t of o.transfers) seed.transfers.push(t);
    for (const entry of o.pending) seed.pending.push(entry);
    seed.transient.push(...o.transient);
    seed.taken.push(...o.taken);
  }
  for (let p = 0; p < parts.length; p++) {
    if (own !== undefined && p === own.index) continue;
    const bytes = parts[p];
    const view = viewOf(bytes);
    seed.last_timestamp = max(seed.last_timestamp, view.getBigUint64(0, true));
    seed.account_timestamp_max = max(seed.account_timestamp_max, view.getBigUint64(8, true));
    seed.transfer_timestamp_max = max(seed.transfer_timestamp_max, view.getBigUint64(16, true));
    const n_accounts = view.getUint32(32, true);
    const n_transfers = view.getUint32(36, true);
    const n_pending = view.getUint32(40, true);
    const n_transient = view.getUint32(44, true);
    const n_taken = view.getUint32(48, true);
    const expected =
      READ_HEADER_BYTES + n_accounts * ACCOUNT_BYTES + n_transfers * TRANSFER_BYTES + n_pending * PENDING_ROW_BYTES + (n_transient + n_taken) * 8;
    if (expected !== bytes.byteLength) throw new Error(`read set of ${bytes.byteLength} bytes, its header says ${expected}`);
    let offset = READ_HEADER_BYTES;
    for (let i = 0; i < n_accounts; i++, offset += ACCOUNT_BYTES) seed.accounts.push(readAccount(view, offset));
    for (let i = 0; i < n_transfers; i++, offset += TRANSFER_BYTES) seed.transfers.push(readTransfer(view, offset));
    for (let i = 0; i < n_pending; i++, offset += PENDING_ROW_BYTES) {
      seed.pending.push([view.getBigUint64(offset, true), readPending(view, offset + 8)]);
    }
    for (let i = 0; i < n_transient; i++, offset += 8) seed.transient.push(view.getBigUint64(offset, true));
    for (let i = 0; i < n_taken; i++, offset += 8) seed.taken.push(view.getBigUint64(offset, true));
  }
  return seed;
}

/**
 * Runs a group on a partial ledger seeded with the united read sets, at the batch timestamp
 * `timestamp` (the last of its events). Pure: every participant gets the same results.
 */
export function executeGroup(
  kind: GroupKindValue,
  count: number,
  body: Uint8Array,
  timestamp: bigint,
  read_sets: readonly Uint8Array[],
  own?: { index: number; seed: SeedInput },
): { scratch: Ledger; result: CreateResult } {
  const seed = uniteReadSets(read_sets, own);
  const scratch = new Ledger({
    accounts: seed.accounts.length + (kind === GroupKind.accounts ? count : 0),
    transfers: seed.transfers.length + (kind === GroupKind.transfers ? count : 0),
  });
  scratch.seed(seed);
  let result: CreateResult;
  if (kind === GroupKind.transfers) {
    result = scratch.createTransfers(decodeTransferBatch(body, count), timestamp, { adopt: true });
  } else if (kind === GroupKind.accounts) {
    result = scratch.createAccounts(decodeAccountBatch(body, count), timestamp);
  } else {
    scratch.pulse(timestamp);
    result = { status: [], timestamp: [] };
  }
  return { scratch, result };
}

/** The first event's timestamp of a group whose last is `timestamp`: what is due by then expires. */
export function firstEventTimestamp(timestamp: bigint, count: number): bigint {
  return timestamp - BigInt(Math.max(count, 1)) + 1n;
}

// A group's log entry: [u64 gid][u8 kind][u8 participants][u16 0][u32 count][u32 body bytes]
// [u32 0][participants, padded to 8][body][per participant: u32 bytes, read set].
export interface GroupEntry {
  gid: number;
  kind: GroupKindValue;
  participants: number[];
  count: number;
  body: Uint8Array;
  read_sets: Uint8Array[];
}

export function encodeGroupEntry(entry: GroupEntry): Uint8Array {
  const head = 24 + pad8(entry.participants.length);
  let size = head + entry.body.byteLength;
  for (const part of entry.read_sets) size += 4 + part.byteLength;
  const out = new Uint8Array(size);
  const view = viewOf(out);
  view.setBigUint64(0, BigInt(entry.gid), true);
  view.setUint8(8, entry.kind);
  view.setUint8(9, entry.participants.length);
  view.setUint32(12, entry.count, true);
  view.setUint32(16, entry.body.byteLength, true);
  entry.participants.forEach((shard, i) => view.setUint8(24 + i, shard));
  out.set(entry.body, head);
  let offset = head + entry.body.byteLength;
  for (const part of entry.read_sets) {
    view.setUint32(offset, part.byteLength, true);
    out.set(part, offset + 4);
    offset += 4 + part.byteLength;
  }
  return out;
}

/** A group entry's id, kind and participants, read from its head alone (replication tracks these). */
export function groupEntryHeader(bytes: Uint8Array): { gid: number; kind: GroupKindValue; participants: number[] } {
  if (bytes.byteLength < 24) throw new Error(`group entry of ${bytes.byteLength} bytes is truncated`);
  const view = viewOf(bytes);
  const kind = view.getUint8(8);
  if (kind !== GroupKind.accounts && kind !== GroupKind.transfers && kind !== GroupKind.pulse) throw new Error(`unknown group kind ${kind}`);
  const n = view.getUint8(9);
  if (bytes.byteLength < 24 + n) throw new Error(`group entry of ${bytes.byteLength} bytes cannot name ${n} participants`);
  const participants: number[] = [];
  for (let i = 0; i < n; i++) participants.push(view.getUint8(24 + i));
  return { gid: Number(view.getBigUint64(0, true)), kind, participants };
}

export function decodeGroupEntry(bytes: Uint8Array): GroupEntry {
  const { gid, kind, participants } = groupEntryHeader(bytes);
  const view = viewOf(bytes);
  const head = 24 + pad8(participants.length);
  const body_bytes = view.getUint32(16, true);
  const body = bytes.subarray(head, head + body_bytes);
  const read_sets: Uint8Array[] = [];
  let offset = head + body_bytes;
  for (let i = 0; i < participants.length; i++) {
    const length = view.getUint32(offset, true);
    read_sets.push(bytes.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  if (offset !== bytes.byteLength) throw new Error(`group entry of ${bytes.byteLength} bytes ends at ${offset}`);
  return { gid, kind, participants, count: view.getUint32(12, true), body, read_sets };
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}
