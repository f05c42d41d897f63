// Per shard, a Bloom filter of the transfer ids it may hold (created, or burned by a transient
// failure). The router consults them so that an id is unique across the engine without a
// directory of every id: a transfer whose id may already live on another shard than its accounts'
// takes the cross-shard path, where that shard is asked. False positives cost a detour through
// the cross-shard path; there are no false negatives, because the router adds every id it routes
// before the shard can have created it.
//
// The filter grows by layers (each twice the capacity of the last) at about 10 bits per id and a
// 1% false-positive rate per layer, so memory follows the number of ids: ~1.2 MiB per million.

const BITS_PER_ID = 10;
const HASHES = 7;
const FIRST_CAPACITY = 1 << 16;

interface Layer {
  bits: Uint32Array;
  /** Bits in the layer: a power of two. */
  size_bits: number;
  capacity: number;
  count: number;
}

export interface IdFilterJson {
  layers: Array<{ bits: Uint32Array; capacity: number; count: number }>;
}

export class IdFilter {
  private readonly layers: Layer[] = [];

  static from(json: IdFilterJson): IdFilter {
    const filter = new IdFilter();
    for (const layer of json.layers) {
      const size_bits = layer.bits.length * 32;
      if (size_bits === 0 || (size_bits & (size_bits - 1)) !== 0) throw new RangeError('filter layer size must be a power of two');
      filter.layers.push({ bits: layer.bits, size_bits, capacity: layer.capacity, count: layer.count });
    }
    return filter;
  }

  toJSON(): IdFilterJson {
    return { layers: this.layers.map((layer) => ({ bits: layer.bits, capacity: layer.capacity, count: layer.count })) };
  }

  /** Adds an id given as its two 32-bit halves (little-endian u64: lo, hi). */
  add(lo: number, hi: number): void {
    let layer = this.layers[this.layers.length - 1];
    if (layer === undefined || layer.count >= layer.capacity) {
      const capacity = layer === undefined ? FIRST_CAPACITY : layer.capacity * 2;
      const size_bits = nextPowerOfTwo(capacity * BITS_PER_ID);
      layer = { bits: new Uint32Array(size_bits / 32), size_bits, capacity, count: 0 };
      this.layers.push(layer);
    }
    const h1 = hash1(lo, hi);
    const h2 = hash2(lo, hi) | 1;
    const mask = layer.size_bits - 1;
    for (let i = 0; i < HASHES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & mask;
      layer.bits[bit >>> 5] |= 1 << (bit & 31);
    }
    layer.count++;
  }

  addId(id: bigint): void {
    this.add(Number(id & 0xffff_ffffn), Number((id >> 32n) & 0xffff_ffffn));
  }

  /** False means the id is certainly not there. */
  mayHave(lo: number, hi: number): boolean {
    if (this.layers.length === 0) return false;
    const h1 = hash1(lo, hi);
    const h2 = hash2(lo, hi) | 1;
    for (const layer of this.layers) {
      const mask = layer.size_bits - 1;
      let all = true;
      for (let i = 0; i < HASHES; i++) {
        const bit = (h1 + Math.imul(i, h2)) & mask;
        if ((layer.bits[bit >>> 5] & (1 << (bit & 31))) === 0) {
          all = false;
          break;
        }
      }
      if (all) return true;
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
    for (const layer of this.layers) total += layer.bits.byteLength;
    return total;
  }
}

function hash1(lo: number, hi: number): number {
  let h = Math.imul(lo ^ 0x9e37_79b9, 0x85eb_ca6b) ^ Math.imul(hi ^ 0x7f4a_7c15, 0xc2b2_ae35);
  h = Math.imul(h ^ (h >>> 16), 0x7feb_352d);
  h = Math.imul(h ^ (h >>> 15), 0x846c_a68b);
  return (h ^ (h >>> 16)) >>> 0;
}

function hash2(lo: number, hi: number): number {
  let h = Math.imul(hi ^ 0x2545_f491, 0x27d4_eb2d) ^ Math.imul(lo ^ 0x6a09_e667, 0x1656_67b1);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b_3c6d);
  h = Math.imul(h ^ (h >>> 12), 0x297a_2d39);
  return (h ^ (h >>> 15)) >>> 0;
}

function nextPowerOfTwo(n: number): number {
  let p = 32;
  while (p < n) p *= 2;
  return p;
}
