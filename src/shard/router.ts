// The router: which shards a create request touches, and whether it can run on each shard alone.
//
// An event touches the shards of its accounts, and every shard whose id filter may hold its id or
// its pending id (a resend, a post of a pending transfer, a reused id). A linked chain touches
// the union of its events' shards. A request whose events (chains counted whole) each touch one
// shard splits into per-shard batches: events on different shards share no account and no id, so
// they cannot see each other's effects and each shard may run its part alone. Any other request
// runs whole as one cross-shard group on the union of its shards.
//
// Routing works on the records' bytes (the log layout the gateway already built): no decoding.

import { AccountFlags, TransferFlags } from '../ledger/types.ts';
import { ACCOUNT_INPUT_BYTES, TRANSFER_BYTES } from '../storage/codec.ts';
import type { IdFilter } from './idfilter.ts';
import { partitionOfWords, shardOfPartition } from './partition.ts';

/** At most this many shards: participant sets are 32-bit masks. */
export const SHARDS_MAX = 16;

export type Route =
  /** The engine has one shard. */
  | { kind: 'one' }
  /** Per shard: the indexes (in request order) of its events. */
  | { kind: 'split'; parts: Map<number, number[]> }
  /**
   * `known[i]` is 0 when no shard's filter held event i's id before this request was routed, so
   * no shard holds it or burned it: a participant's read may skip looking it up (null: look up all).
   */
  | { kind: 'group'; participants: number[]; known: Uint8Array | null };

export function routeTransfers(body: Uint8Array, count: number, filters: readonly IdFilter[]): Route {
  const shards = filters.length;
  const aligned = body.byteOffset % 4 === 0 ? body : new Uint8Array(body); // a copy: Buffer#slice is a view
  const words = new Uint32Array(aligned.buffer, aligned.byteOffset, (count * TRANSFER_BYTES) / 4);
  const masks = new Uint32Array(count);
  const known = new Uint8Array(count);
  const all = shards >= 32 ? 0xffff_ffff : (1 << shards) - 1;
  for (let i = 0; i < count; i++) {
    const w = (i * TRANSFER_BYTES) / 4;
    const flags = words[w + 17] >>> 16;
    let mask = 0;
    const debit_lo = words[w + 2];
    const debit_hi = words[w + 3];
    if (debit_lo !== 0 || debit_hi !== 0) mask |= 1 << shardOfPartition(partitionOfWords(debit_lo | 0, debit_hi | 0), shards);
    const credit_lo = words[w + 4];
    const credit_hi = words[w + 5];
    if (credit_lo !== 0 || credit_hi !== 0) mask |= 1 << shardOfPartition(partitionOfWords(credit_lo | 0, credit_hi | 0), shards);
    const account_mask = mask;
    const id_lo = words[w];
    const id_hi = words[w + 1];
    const pending_lo = words[w + 8];
    const pending_hi = words[w + 9];
    const has_pending = pending_lo !== 0 || pending_hi !== 0;
    for (let s = 0; s < shards; s++) {
      if ((mask & (1 << s)) !== 0) continue;
      if (filters[s].mayHave(id_lo, id_hi) || (has_pending && filters[s].mayHave(pending_lo, pending_hi))) mask |= 1 << s;
    }
    // Shards outside the accounts' that matched made the id known; so does one of the accounts'
    // shards already holding it (found by `add` below).
    let id_known = (mask & ~account_mask) !== 0;
    // Imported events are checked against every shard's timestamps.
    if ((flags & TransferFlags.imported) !== 0) mask = all;
    if (mask === 0) mask = 1; // touches nothing anywhere (invalid ids): shard 0 answers
    masks[i] = mask;
    // Reserve the id where it may now be created, before the next event is routed: a later event
    // (or request) with the same id must find it there.
    for (let s = 0; s < shards; s++) if ((mask & (1 << s)) !== 0 && filters[s].add(id_lo, id_hi)) id_known = true;
    known[i] = id_known ? 1 : 0;
  }
  widenChains(masks, (i) => ((words[(i * TRANSFER_BYTES) / 4 + 17] >>> 16) & TransferFlags.linked) !== 0);
  const route = finish(masks, count, known);
  // A group may create (or burn) any of its ids on any participant: they all record it.
  if (route.kind === 'group') {
    const union = route.participants.reduce((m, s) => m | (1 << s), 0);
    for (let i = 0; i < count; i++) {
      const w = (i * TRANSFER_BYTES) / 4;
      for (let s = 0; s < shards; s++) if ((union & (1 << s)) !== 0 && (masks[i] & (1 << s)) === 0) filters[s].add(words[w], words[w + 1]);
    }
  }
  return route;
}

export function routeAccounts(body: Uint8Array, count: number, shards: number): Route {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const masks = new Uint32Array(count);
  const all = shards >= 32 ? 0xffff_ffff : (1 << shards) - 1;
  for (let i = 0; i < count; i++) {
    const at = i * ACCOUNT_INPUT_BYTES;
    const imported = (view.getUint16(at + 34, true) & AccountFlags.imported) !== 0;
    masks[i] = imported ? all : 1 << shardOfPartition(partitionOfWords(view.getUint32(at, true) | 0, view.getUint32(at + 4, true) | 0), shards);
  }
  widenChains(masks, (i) => (view.getUint16(i * ACCOUNT_INPUT_BYTES + 34, true) & AccountFlags.linked) !== 0);
  return finish(masks, count, null);
}

/**
 * A linked chain touches the union of its events' shards: each of its events gets that union.
 * A chain left open at the end fails whole, so it is widened too.
 */
function widenChains(masks: Uint32Array, linked: (i: number) => boolean): void {
  let start = -1;
  let union = 0;
  for (let i = 0; i < masks.length; i++) {
    if (start < 0) {
      if (!linked(i)) continue;
      start = i;
      union = 0;
    }
    union |= masks[i];
    if (!linked(i) || i === masks.length - 1) {
      for (let k = start; k <= i; k++) masks[k] = union;
      start = -1;
    }
  }
}

function finish(masks: Uint32Array, count: number, known: Uint8Array | null): Route {
  let union = 0;
  let single = true;
  for (let i = 0; i < count; i++) {
    union |= masks[i];
    if ((masks[i] & (masks[i] - 1)) !== 0) single = false;
  }
  if (!single) return { kind: 'group', participants: bits(union), known };
  const parts = new Map<number, number[]>();
  for (let i = 0; i < count; i++) {
    const shard = 31 - Math.clz32(masks[i]);
    let list = parts.get(shard);
    if (list === undefined) parts.set(shard, (list = []));
    list.push(i);
  }
  if (count === 0) parts.set(0, []);
  return { kind: 'split', parts };
}

function bits(mask: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < 32; s++) if ((mask & (1 << s)) !== 0) out.push(s);
  return out;
}
