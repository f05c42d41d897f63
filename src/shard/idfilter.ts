// Per shard, a filter of the transfer ids it may hold (created, or burned by a transient
// failure). The router consults them so that an id is unique across the engine without a
// directory of every id: a transfer whose id may already live on another shard than its accounts'
// takes the cross-shard path, where that shard is asked. There are no false negatives, because
// the router adds every id it routes before the shard can have created it.
//
// False positives must be rare per *request*, not per id: one in a batch of 8190 events sends the
// whole batch down the cross-shard path. A Bloom filter at a sane size (1% per id) would do that to
// nearly every large batch, so this is a table of 32-bit fingerprints with linear probing, loaded
// to at most 60%: a lookup of an absent id probes ~3.6 slots and matches a fingerprint by chance
// with probability ~1e-9. It grows by layers (each twice the last), at ~6.7 bytes per id.

import { slotOf } from '../ledger/idmap.ts';

const LOAD_MAX = 0.6;
const FIRST_SLOTS = 1 << 20;

interface Layer {
  slots: Uint32Array;
  mask: number;
  capacity: number;
  count: number;
}

export interface IdFilterJson {
  layers: Array<{ slots: Uint32Array; count: number }>;
}

export class IdFilter {
  private readonly layers: Layer[] = [];

  static from(json: IdFilterJson): IdFilter {
    const filter = new IdFilter();
    for (const layer of json.layers) {
      const size = layer.slots.length;
      if (size === 0 || (size & (size - 1)) !== 0) throw new RangeError('filter layer size must be a power of two');
      filter.layers.push({ slots: layer.slots, mask: size - 1, capacity: Math.floor(size * LOAD_MAX), count: layer.count });
    }
    return filter;
  }

  toJSON(): IdFilterJson {
    return { layers: this.layers.map((layer) => ({ slots: layer.slots, count: layer.count })) };
  }

  /**
   * Adds an id given as its two 32-bit halves (little-endian u64: lo, hi). Returns whether the
   * filter may already have held it (the router's lookup before adding, at no extra cost).
   */
  add(lo: number, hi: number): boolean {
    if (this.mayHave(lo, hi)) return true;
    let layer = this.layers[this.layers.length - 1];
    if (layer === undefined || layer.count >= layer.capacity) {
      const size = layer === undefined ? FIRST_SLOTS : layer.slots.length * 2;
      layer = { slots: new Uint32Array(size), mask: size - 1, capacity: Math.floor(size * LOAD_MAX), count: 0 };
      this.layers.push(layer);
    }
    const fingerprint = fingerprintOf(lo, hi);
    let i = slotOf(lo, hi) & layer.mask;
    while (layer.slots[i] !== 0) i = (i + 1) & layer.mask;
    layer.slots[i] = fingerprint;
    layer.count++;
    return false;
  }

  addId(id: bigint): void {
    this.add(Number(id & 0xffff_ffffn), Number((id >> 32n) & 0xffff_ffffn));
  }

  /** False means the id is certainly not there. */
  mayHave(lo: number, hi: number): boolean {
    if (this.layers.length === 0) return false;
    const fingerprint = fingerprintOf(lo, hi);
    const start = slotOf(lo, hi);
    for (const layer of this.layers) {
      const slots = layer.slots;
      for (let i = start & layer.mask; ; i = (i + 1) & layer.mask) {
        const value = slots[i];
        if (value === 0) break;
        if (value === fingerprint) return true;
      }
    }
    return false;
  }

  mayHaveId(id: bigint): boolean {
    return this.mayHave(Number(id & 0xffff_ffffn), Number((id >> 32n) & 0xffff_ffffn));
  }

  get count(): number {
    let total = 0;
    for (const layer of this.layers) total += layer.count;
    return total;
  }

  get bytes(): number {
    let total = 0;
    for (const layer of this.layers) total += layer.slots.byteLength;
    return total;
  }
}

/** Independent of slotOf, and never 0 (0 marks an empty slot). */
function fingerprintOf(lo: number, hi: number): number {
  let h = Math.imul(hi ^ 0x2545_f491, 0x27d4_eb2d) ^ Math.imul(lo ^ 0x6a09_e667, 0x1656_67b1);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b_3c6d);
  h = Math.imul(h ^ (h >>> 12), 0x297a_2d39);
  h = (h ^ (h >>> 15)) >>> 0;
  return h === 0 ? 1 : h;
}
