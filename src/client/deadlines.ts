// Per-call timeouts without a timer per call. Calls are kept in slots of `slot_ms` by deadline, and
// one timer, armed for the earliest slot that still holds a call, expires them. A setTimeout and
// clearTimeout per call cost about a tenth of the client's CPU under single-transfer load; a Set
// insert and delete cost little. A call never times out early: its slot ends at or after its
// deadline. It may time out up to `slot_ms` late. The gateway uses the same for its request deadline.

/** The slot keeping an item, so that answering the item removes it in O(1). */
export interface Slot {
  readonly key: number;
  readonly items: Set<Expiring>;
  readonly owner: { dropSlot(key: number): void };
}

export interface Expiring {
  deadline: Slot | undefined;
}

/** setTimeout takes at most 2^31-1 ms (beyond, it fires after 1 ms). */
const TIMER_MS_MAX = 2 ** 31 - 1;

export class Deadlines<T extends Expiring> {
  /** Slot index (end of the slot in units of slot_ms) -> its items. Empty slots are dropped. */
  private readonly slots = new Map<number, Slot>();
  /**
   * Slot indices, ascending; may still hold indices of slots dropped since (skipped when reached),
   * at most one per `slot_ms` of the longest timeout. Deadlines mostly grow: new ones append.
   */
  private readonly order: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timer_slot = Number.POSITIVE_INFINITY;

  constructor(
    private readonly slot_ms: number,
    private readonly expire: (item: T) => void,
  ) {
    if (!(slot_ms > 0)) throw new RangeError(`slot_ms must be positive; got ${slot_ms}`);
  }

  /** Expires `item` `ms` from now unless `remove` is called first. */
  add(item: T, ms: number): void {
    const key = Math.ceil((performance.now() + ms) / this.slot_ms);
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = { key, items: new Set<Expiring>(), owner: this };
      this.slots.set(key, slot);
      // Binary search: a short timeout among long ones lands before many slots.
      let lo = 0;
      let hi = this.order.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.order[mid] < key) lo = mid + 1;
        else hi = mid;
      }
      if (this.order[lo] !== key) this.order.splice(lo, 0, key);
    }
    slot.items.add(item);
    item.deadline = slot;
    if (key < this.timer_slot) this.arm(key);
  }

  /** Forgets `item` (answered): it will not expire. Harmless if it is not kept. */
  static remove(item: Expiring): void {
    const slot = item.deadline;
    if (slot === undefined) return;
    item.deadline = undefined;
    slot.items.delete(item);
    if (slot.items.size === 0) slot.owner.dropSlot(slot.key);
  }

  /** An emptied slot leaves the map; its index stays in `order` until the timer passes it. */
  dropSlot(key: number): void {
    this.slots.delete(key);
  }

  /** Stops the timer; items still kept never expire. */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timer_slot = Number.POSITIVE_INFINITY;
    for (const slot of this.slots.values()) for (const item of slot.items) item.deadline = undefined;
    this.slots.clear();
    this.order.length = 0;
  }

  private arm(key: number): void {
    clearTimeout(this.timer);
    this.timer_slot = key;
    const wait_ms = Math.min(TIMER_MS_MAX, Math.max(1, Math.ceil(key * this.slot_ms - performance.now())));
    this.timer = setTimeout(this.fire, wait_ms);
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.timer_slot = Number.POSITIVE_INFINITY;
    const now = performance.now() / this.slot_ms;
    while (this.order.length > 0 && this.order[0] <= now) {
      const key = this.order.shift() as number;
      const slot = this.slots.get(key);
      if (slot === undefined) continue; // emptied by answers
      this.slots.delete(key);
      for (const item of slot.items) {
        item.deadline = undefined;
        this.expire(item as T);
      }
    }
    // Slots emptied since need no wake-up: arm for the first one that still holds an item.
    while (this.order.length > 0 && !this.slots.has(this.order[0])) this.order.shift();
    if (this.order.length > 0) this.arm(this.order[0]);
  };
}
