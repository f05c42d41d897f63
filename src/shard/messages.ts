// Messages between the main thread and a shard worker. One postMessage carries a whole batch of
// requests as msgpack in a transferred ArrayBuffer (never one message per event): NOTES.md
// measured ~0.47 us per element that way against ~3.8 us for a postMessage per object.
//
// Create requests carry their events already validated and encoded in the log's fixed layout,
// so the worker neither re-validates nor re-encodes: the body it appends to its log is the very
// buffer the gateway built.

import { Packr } from 'msgpackr';
import type { Account, AccountBalance, AccountFilter, QueryFilter, Transfer } from '../ledger/types.ts';
import type { MetricsJson } from '../metrics/shard.ts';
import type { IdFilterJson } from './idfilter.ts';
import type { GroupKindValue } from './group.ts';

export const ShardOp = {
  create_accounts: 1,
  create_transfers: 2,
  lookup_accounts: 3,
  lookup_transfers: 4,
  get_account_transfers: 5,
  get_account_balances: 6,
  query_accounts: 7,
  query_transfers: 8,
  feed_read: 9,
  /** A cross-shard group: the shard stops at it and reads (see src/shard/group.ts). */
  group: 10,
  /** Expire what is due, at the sequencer's timestamp. */
  pulse: 11,
} as const;
export type ShardOpValue = (typeof ShardOp)[keyof typeof ShardOp];

/** [request id, op, payload]: the payload's shape depends on the op. */
export type ShardRequest =
  | [number, typeof ShardOp.create_accounts | typeof ShardOp.create_transfers, CreateRequest]
  | [number, typeof ShardOp.lookup_accounts | typeof ShardOp.lookup_transfers, { ids: bigint[] }]
  | [number, typeof ShardOp.get_account_transfers | typeof ShardOp.get_account_balances, { filter: AccountFilter }]
  | [number, typeof ShardOp.query_accounts | typeof ShardOp.query_transfers, { filter: QueryFilter }]
  | [number, typeof ShardOp.feed_read, { from: number; limit: number; ledgers: number[] | null }]
  | [number, typeof ShardOp.group, GroupRequest]
  | [number, typeof ShardOp.pulse, { timestamp: bigint }];

export interface CreateRequest {
  count: number;
  body: Uint8Array;
  /**
   * The events' timestamps from the engine's sequencer: event k gets `first + offsets[k]`, or
   * `first + k` when `offsets` is null (a whole request; a split part's events keep their places
   * in the request's range).
   */
  first: bigint;
  offsets: Uint32Array | null;
}

/** msgpack carries a Uint32Array as its bytes: view them as u32 again (copied if unaligned). */
function asU32(value: Uint32Array | Uint8Array): Uint32Array {
  if (value instanceof Uint32Array) return value;
  if (value.byteLength % 4 !== 0) throw new RangeError('timestamp offsets are not whole u32s');
  const bytes = value.byteOffset % 4 === 0 ? value : new Uint8Array(value); // a copy: Buffer#slice is a view
  return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** The timestamp runs ([last, count] in event order) of a create request. */
export function runsOf(request: CreateRequest): Array<[bigint, number]> {
  const n = Math.max(request.count, 1);
  if (request.offsets === null) return [[request.first + BigInt(n - 1), n]];
  const offsets = asU32(request.offsets);
  if (offsets.length !== request.count) throw new RangeError(`${offsets.length} timestamp offsets for ${request.count} events`);
  const runs: Array<[bigint, number]> = [];
  let start = 0;
  for (let k = 1; k <= request.count; k++) {
    if (k === request.count || offsets[k] !== offsets[k - 1] + 1) {
      runs.push([request.first + BigInt(offsets[k - 1]), k - start]);
      start = k;
    }
  }
  return runs;
}

export interface GroupRequest {
  gid: number;
  kind: GroupKindValue;
  participants: number[];
  count: number;
  body: Uint8Array;
  /** The group's batch timestamp (its last event's), from the sequencer. */
  timestamp: bigint;
  /**
   * Per event, 0 when no shard can hold its id (the router's filters said so), so the read skips
   * looking it up; null: look up every id. Only a hint for the read: a redo looks up all.
   */
  known: Uint8Array | null;
}

/** A group entry as recovery passes it between shards: [gid, batch timestamp, entry body]. */
export type GroupEntryWire = [number, bigint, Uint8Array];

export type ShardResult =
  | { status: number[]; timestamp: bigint[] }
  | { accounts: Account[] }
  | { transfers: Transfer[] }
  | { balances: AccountBalance[] }
  | { feed: { transfers: Transfer[]; next: number; head: number; oldest: number; floor: number } }
  | { error: 'unavailable' | 'internal' | 'busy'; message: string };

/** [request id, result]. */
export type ShardReply = [number, ShardResult];

export type ToWorker =
  | { type: 'requests'; buffer: ArrayBuffer }
  | { type: 'metrics'; request: number }
  | { type: 'close' }
  /** Every participant has read: execute the group over these read sets. */
  | { type: 'group_exec'; gid: number; read_sets: Uint8Array[] }
  /** A participant failed before every read arrived: leave (or skip) the group, unapplied. */
  | { type: 'group_abort'; gid: number }
  | { type: 'group_entries'; request: number; after: number }
  | { type: 'roll_forward'; request: number; entries: GroupEntryWire[] }
  /** Replicated: everything up to `position` is held by every in-sync replica. */
  | { type: 'commit'; position: number }
  /** A follower: append the leader's entries (as stored); answered `replica_acked` once durable. */
  | { type: 'replica_append'; entries: Uint8Array[]; tag: number }
  /** The log head once everything appended is durable (where a follower says it stands). */
  | { type: 'durable_head'; request: number }
  /** Stored entries from `from` (a leader ships them to a replica that is behind). */
  | { type: 'stored'; request: number; from: number; limit: number }
  /** Copy the last checkpoint into the empty directory `dir` (a replica rebuilds from it). */
  | { type: 'snapshot'; request: number; dir: string }
  /** Cross-shard group entries at or after `from` (0: the shard's own commit position + 1). */
  | { type: 'group_positions'; request: number; from: number }
  /** A follower about to lead drops its unapplied log from `from` on (Shard.cutTail). */
  | { type: 'cut_tail'; request: number; from: number }
  /** A follower's shard becomes the leader's in place (Shard.promote). */
  | { type: 'promote'; request: number; epoch: number }
  /** Where a replica whose head is (position, epoch, checksum) agrees with this log (-1: this log no longer reaches back there). */
  | { type: 'agree'; request: number; position: number; epoch: number; checksum: number };

export type FromWorker =
  | {
      type: 'ready';
      recovery: { checkpoint_position: number; replayed_entries: number; head_position: number; duration_ms: number };
      last_gid: number;
      /** The greatest timestamp the shard has used: the sequencer starts above every shard's. */
      last_timestamp: bigint;
      /** Every transfer id this shard holds (and burned ids): the router's filter for it. */
      filter: IdFilterJson;
      log_head: LogHeadWire;
      /** The shard's memory right after recovery (src/shard/memory.ts). */
      memory: { full: boolean; live_bytes: number; limit_bytes: number };
    }
  | { type: 'group_read'; gid: number; read_set: Uint8Array }
  | { type: 'due'; kind: 'local' | 'foreign' }
  /** The shard's live heap crossed a mark (src/shard/memory.ts): writes to it stop or resume. */
  | { type: 'memory'; full: boolean; live_bytes: number; limit_bytes: number }
  | { type: 'group_entries'; request: number; entries: GroupEntryWire[]; error?: string }
  | { type: 'rolled'; request: number; error?: string }
  /** `position`: the log's durable position when they were sent; each reply depends on nothing past it. */
  | { type: 'replies'; buffer: ArrayBuffer; position: number }
  /** A leader's newly durable entries, from position `first`, as stored. */
  | { type: 'entries'; first: number; entries: Uint8Array[] }
  /** `tag`: the connection the entries came on (acks of another connection mean nothing to this one). */
  | { type: 'replica_acked'; position: number; tag: number }
  | { type: 'replica_refused'; code: string; message: string; tag: number }
  | { type: 'durable_head'; request: number; head: LogHeadWire; error?: string }
  | { type: 'snapshot'; request: number; error?: string }
  | { type: 'group_positions'; request: number; groups: Array<[number, number, number[]]>; last_gid: number; error?: string }
  | { type: 'cut_tail'; request: number; removed: number; error?: string }
  | { type: 'stored'; request: number; entries: Uint8Array[]; error?: string }
  | { type: 'agree'; request: number; agree: number; head: number; error?: string }
  | { type: 'promoted'; request: number; last_gid: number; last_timestamp: bigint; filter: IdFilterJson; log_head: LogHeadWire; error?: string }
  | { type: 'failed'; message: string }
  | { type: 'metrics'; request: number; json: MetricsJson; error?: string }
  | { type: 'closed' };

/** A log's head as replicas compare it. */
export interface LogHeadWire {
  position: number;
  epoch: number;
  checksum: number;
}

/** `single`: no replication. `leader`/`follower`: a center of a cluster (docs/replication.md). */
export type ShardRole = 'single' | 'leader' | 'follower';

export interface ShardWorkerData {
  role: ShardRole;
  /** The epoch new entries carry (a leader's; 1 for a single center). */
  epoch: number;
  index: number;
  dir: string;
  shard_count: number;
  /** The change feed serves transfers this recent (0: all). */
  feed_retention_ms: number;
  /** The engine's queue bound for this shard: the memory mark leaves room for that much. */
  queue_events_max: number;
  /** One Int32 the worker's event loop increments every HEARTBEAT_MS (the engine's watchdog reads it). */
  heartbeat: SharedArrayBuffer;
}

/** How often a shard worker's event loop proves it turns (see ShardHandle's watchdog). */
export const HEARTBEAT_MS = 100;

// u64 values cross as bigint; msgpackr turns small ones back into numbers under 'auto', so
// both ends use 'bigint' here to keep every u64 a bigint inside the engine.
export const packr = new Packr({ useRecords: false, int64AsType: 'bigint', moreTypes: false });

/** Packs into a fresh ArrayBuffer that can be transferred (msgpackr reuses its own buffer). */
/** Log entries per shipment, worker to main thread and leader to follower (a full batch entry is about 590 KiB). */
export const SHIP_ENTRIES_MAX = 64;

export function packTransferable(value: unknown): ArrayBuffer {
  const packed = packr.pack(value);
  const buffer = new ArrayBuffer(packed.byteLength);
  new Uint8Array(buffer).set(packed);
  return buffer;
}

export function unpack<T>(buffer: ArrayBuffer): T {
  return packr.unpack(new Uint8Array(buffer)) as T;
}
