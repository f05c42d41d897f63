// The replication protocol between centers (docs/replication.md): msgpack messages in binary
// WebSocket frames on each center's replication port. A follower connects to the leader it read
// in etcd, says where its logs stand, and is told where they agree; the leader then streams each
// shard's entries exactly as stored, and the follower acknowledges what is durable.

import { Packr } from 'msgpackr';
import type { LogHeadWire, ShardResult } from '../shard/messages.ts';

export const REPLICATION_PATH = '/replicate';
/** One frame at most (a shipment of entries is bounded by the leader's window). */
export const REPLICATION_FRAME_BYTES_MAX = 128 << 20;
/** One frame from a follower at most: a hello, an ack, or one forwarded request (8190 events). */
export const FOLLOWER_FRAME_BYTES_MAX = 4 << 20;
/** Bytes of a checkpoint copy per `snapshot_part`. */
export const SNAPSHOT_PART_BYTES = 8 << 20;
/** Forwarded writes in flight per follower; past it the follower's door answers `busy`. */
export const FORWARD_INFLIGHT_MAX = 1024;

export type FollowerMessage =
  /** First message: who is asking, with the cluster secret, and where its shards' logs stand. */
  | { t: 'hello'; cluster: string; secret: string; center: string; epoch: number; heads: LogHeadWire[] }
  /** Shard `shard` holds everything up to `position` durably. */
  | { t: 'ack'; shard: number; position: number }
  /**
   * A write that reached this follower's door (already authorized there), for the leader to run:
   * events in the log layout, as the door encoded them.
   */
  | { t: 'forward'; id: number; op: 'create_accounts' | 'create_transfers'; count: number; body: Uint8Array }
  /** This follower's shard must be rebuilt: send its last checkpoint (the leader's log was pruned below it). */
  | { t: 'snapshot'; shard: number };

export type LeaderMessage =
  /**
   * Per shard, the last position where the follower's log agrees with the leader's. A follower
   * whose head is past it must truncate to it and say hello again; otherwise entries follow.
   */
  | { t: 'welcome'; epoch: number; agree: number[]; commit: number[] }
  | { t: 'refuse'; code: 'not_leader' | 'stale_epoch' | 'unauthorized' | 'shard_count_mismatch' | 'bad_request'; message: string }
  /** Entries of shard `shard` from position `first`, as stored; and the commit positions. */
  | { t: 'entries'; shard: number; first: number; entries: Uint8Array[] }
  | { t: 'commit'; commit: number[] }
  /** A piece of a shard's checkpoint copy (its LMDB data file), in order. */
  | { t: 'snapshot_part'; shard: number; offset: number; bytes: Uint8Array }
  /** The copy is whole (`total` bytes); `entry` is the log entry it summarises, as stored. */
  | { t: 'snapshot_done'; shard: number; total: number; entry: Uint8Array }
  | { t: 'snapshot_failed'; shard: number; message: string }
  /** The leader's answer to a forwarded write (as it would answer at its own door). */
  | { t: 'forwarded'; id: number; result: ShardResult };

// Timestamps in forwarded results are u64: kept as bigint both ways.
const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'bigint' });

export function encodeMessage(message: FollowerMessage | LeaderMessage): Buffer {
  return packr.pack(message);
}

export function decodeMessage<T extends FollowerMessage | LeaderMessage>(data: Uint8Array): T | null {
  try {
    const value = packr.unpack(data) as { t?: unknown } | null;
    return value !== null && typeof value === 'object' && typeof value.t === 'string' ? (value as T) : null;
  } catch {
    return null;
  }
}
