// A map from u64 ids to values, for the ledger's tables that grow with its objects (accounts,
// transfers, pending states, account indexes, user-data indexes; burned ids as an IdSet).
//
// Why not Map<bigint, V>: a lookup in V8's ordered hash map walks a bucket chain and compares each
// candidate's BigInt key through a pointer, a few cache misses each in a table of millions; a
// profile of a shard under single-transfer load had 28% of its samples in that walk. V8 Maps also stop at about
// 16.7 million entries ("Map maximum size exceeded"), fewer transfers than one shard of a bank
// holds. Here the keys sit in one typed array as (lo, hi) pairs with linear probing, so a lookup
// usually costs one cache miss; a miss (a new id) stops at the first empty slot. At most half the
// slots are used. Values live in pages of 2^20 slots: one V8 array stops below 2^27 elements.
//
// Id 0 marks an empty slot: the ledger never stores an object with id 0 (id_must_not_be_zero).

const LOAD_MAX = 0.5;
/** Slot indexes stay below 2^30 so that `slot << 1` is a valid int32 index into the keys. */
const SLOTS_MAX = 2 ** 30;
const PAGE_BITS = 20;
const PAGE_MASK = (1 << PAGE_BITS) - 1;
const U64_MAX = 0xffff_ffff_ffff_ffffn;
const CAPACITY_MIN = 16;

/** Scratch for splitting a BigInt into its 32-bit halves without allocating. */
const split = new DataView(new ArrayBuffer(8));

export class IdMap<V> {
  private words: Uint32Array;
  private pages: Array<Array<V | undefined>>;
  private mask: number;
  private count = 0;
  /** Bumped by every insert and delete: an iterator that sees it change stops with an error. */
  private version = 0;

  constructor(capacity = 1024) {
    let slots = CAPACITY_MIN;
    while (slots * LOAD_MAX < capacity) slots *= 2;
    if (slots > SLOTS_MAX) throw new RangeError(`an id table holds at most ${SLOTS_MAX * LOAD_MAX} ids`);
    this.words = new Uint32Array(slots * 2);
    this.pages = newPages<V>(slots);
    this.mask = slots - 1;
  }

  get size(): number {
    return this.count;
  }

  get(id: bigint): V | undefined {
    const slot = this.find(id);
    return slot >= 0 ? this.pages[slot >>> PAGE_BITS][slot & PAGE_MASK] : undefined;
  }

  has(id: bigint): boolean {
    return this.find(id) >= 0;
  }

  /** Inserts or replaces the value under `id`. */
  set(id: bigint, value: V): this {
    this.put(id, value, true);
    return this;
  }

  /** Inserts the value under `id` if the id is absent; returns false (changing nothing) if present. */
  insert(id: bigint, value: V): boolean {
    return this.put(id, value, false);
  }

  private put(id: bigint, value: V, replace: boolean): boolean {
    if (value === undefined) throw new RangeError('undefined marks empty slots: it cannot be stored');
    if (id <= 0n || id > U64_MAX) throw new RangeError(`id ${id} cannot be stored: ids are 1..2^64-1 (0 marks empty slots)`);
    let slot = this.find(id);
    if (slot >= 0) {
      if (!replace) return false;
      this.pages[slot >>> PAGE_BITS][slot & PAGE_MASK] = value;
      return true;
    }
    if ((this.count + 1) > (this.mask + 1) * LOAD_MAX) {
      this.grow();
      slot = this.find(id);
    }
    slot = ~slot;
    // `find` left the id's halves in `split`.
    this.words[slot << 1] = split.getUint32(0, true);
    this.words[(slot << 1) + 1] = split.getUint32(4, true);
    this.pages[slot >>> PAGE_BITS][slot & PAGE_MASK] = value;
    this.count++;
    this.version++;
    return true;
  }

  delete(id: bigint): boolean {
    let hole = this.find(id);
    if (hole < 0) return false;
    const keys = this.words;
    const mask = this.mask;
    // Backward-shift deletion: move later entries of the probe run into the hole when their home
    // slot allows, so that no lookup meets an empty slot before its entry (no tombstones).
    let next = (hole + 1) & mask;
    for (;;) {
      const lo = keys[next << 1];
      const hi = keys[(next << 1) + 1];
      if (lo === 0 && hi === 0) break;
      const home = slotOf(lo, hi) & mask;
      // The entry at `next` may move to `hole` if `hole` lies cyclically within [home, next).
      if (((next - home) & mask) >= ((next - hole) & mask)) {
        keys[hole << 1] = lo;
        keys[(hole << 1) + 1] = hi;
        this.pages[hole >>> PAGE_BITS][hole & PAGE_MASK] = this.pages[next >>> PAGE_BITS][next & PAGE_MASK];
        hole = next;
      }
      next = (next + 1) & mask;
    }
    keys[hole << 1] = 0;
    keys[(hole << 1) + 1] = 0;
    this.pages[hole >>> PAGE_BITS][hole & PAGE_MASK] = undefined;
    this.count--;
    this.version++;
    return true;
  }

  /** Values in slot order. Inserting or deleting while iterating throws (entries move). */
  *values(): IterableIterator<V> {
    for (const [, value] of this.entries()) yield value;
  }

  /**
   * Ids and values in slot order (not insertion order: sort where order matters). Inserting or
   * deleting while iterating throws: growth and backward-shift deletion move entries, so an
   * iteration across them would skip or repeat some (replacing a value is fine).
   */
  *entries(): IterableIterator<[bigint, V]> {
    const version = this.version;
    for (let slot = 0; slot <= this.mask; slot++) {
      const value = this.pages[slot >>> PAGE_BITS][slot & PAGE_MASK];
      if (value === undefined) continue;
      yield [(BigInt(this.words[(slot << 1) + 1]) << 32n) | BigInt(this.words[slot << 1]), value];
      if (this.version !== version) throw new Error('an IdMap changed (insert or delete) while being iterated');
    }
  }

  [Symbol.iterator](): IterableIterator<[bigint, V]> {
    return this.entries();
  }

  *keys(): IterableIterator<bigint> {
    for (const [id] of this.entries()) yield id;
  }

  /**
   * The slot holding `id`, or the bitwise complement of the empty slot where it would go. An id
   * outside 1..2^64-1 is never held (setBigUint64 would wrap it onto another id).
   */
  private find(id: bigint): number {
    if (id <= 0n || id > U64_MAX) return -1;
    split.setBigUint64(0, id, true);
    const lo = split.getUint32(0, true);
    const hi = split.getUint32(4, true);
    const keys = this.words;
    const mask = this.mask;
    for (let slot = slotOf(lo, hi) & mask; ; slot = (slot + 1) & mask) {
      const key_lo = keys[slot << 1];
      const key_hi = keys[(slot << 1) + 1];
      if (key_lo === lo && key_hi === hi) return slot;
      if (key_lo === 0 && key_hi === 0) return ~slot;
    }
  }

  private grow(): void {
    const old_keys = this.words;
    const old_pages = this.pages;
    const old_slots = this.mask + 1;
    const slots = old_slots * 2;
    if (slots > SLOTS_MAX) throw new RangeError(`an id table holds at most ${SLOTS_MAX * LOAD_MAX} ids; spread the load over more shards`);
    const keys = new Uint32Array(slots * 2);
    const pages = newPages<V>(slots);
    const mask = slots - 1;
    for (let i = 0; i < old_slots; i++) {
      const value = old_pages[i >>> PAGE_BITS][i & PAGE_MASK];
      if (value === undefined) continue;
      const lo = old_keys[i << 1];
      const hi = old_keys[(i << 1) + 1];
      let slot = slotOf(lo, hi) & mask;
      while (keys[slot << 1] !== 0 || keys[(slot << 1) + 1] !== 0) slot = (slot + 1) & mask;
      keys[slot << 1] = lo;
      keys[(slot << 1) + 1] = hi;
      pages[slot >>> PAGE_BITS][slot & PAGE_MASK] = value;
    }
    this.words = keys;
    this.pages = pages;
    this.mask = mask;
  }
}

function newPages<V>(slots: number): Array<Array<V | undefined>> {
  const pages: Array<Array<V | undefined>> = [];
  for (let at = 0; at < slots; at += PAGE_MASK + 1) pages.push(new Array<V | undefined>(Math.min(slots - at, PAGE_MASK + 1)).fill(undefined));
  return pages;
}

/** A 32-bit mix of a u64 id given as its halves: the home slot of an id in a table (also the shard router's id filters). */
export function slotOf(lo: number, hi: number): number {
  let h = Math.imul(lo ^ 0x9e37_79b9, 0x85eb_ca6b) ^ Math.imul(hi ^ 0x7f4a_7c15, 0xc2b2_ae35);
  h = Math.imul(h ^ (h >>> 16), 0x7feb_352d);
  h = Math.imul(h ^ (h >>> 15), 0x846c_a68b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A set of u64 ids on an IdMap (burned transfer ids can number as many as transfers). */
export class IdSet {
  private readonly map: IdMap<true>;

  constructor(capacity = 1024) {
    this.map = new IdMap<true>(capacity);
  }

  get size(): number {
    return this.map.size;
  }

  has(id: bigint): boolean {
    return this.map.has(id);
  }

  add(id: bigint): this {
    this.map.insert(id, true);
    return this;
  }

  [Symbol.iterator](): IterableIterator<bigint> {
    return this.map.keys();
  }
}
