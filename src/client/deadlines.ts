// Per-call timeouts without a timer per call. Calls are kept in slots of `slot_ms` by deadline, and
// one timer, armed for the earliest slot, expires them. A setTimeout and clearTimeout per call cost
// about a tenth of the client's CPU under single-transfer load; a Set insert and delete cost little.
// A call never times out early: its slot ends at or after its deadline. It may time out up to
// `slot_ms` late.

/** What a deadline needs of a call: where it is kept, so that answering it removes it in O(1). */
export interface Expiring {
  deadline: Set<Expiring> | undefined;
}

const TIMER_MS_MAX = 2 ** 31 - 1;

export class Deadlines<T extends Expiring> {
  /** Slot index (end of the slot in units of slot_ms) -> calls due in it. */
  private readonly slots = new Map<number, Set<T>>();
  /** Slot indices, ascending. Deadlines mostly grow, so a new slot is almost always appended. */
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
    const slot = Math.ceil((performance.now() + ms) / this.slot_ms);
    let set = this.slots.get(slot);
    if (set === undefined) {
      set = new Set<T>();
      this.slots.set(slot, set);
      // Binary search: a short timeout among long ones lands before many slots.
      let lo = 0;
      let hi = this.order.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.order[mid] < slot) lo = mid + 1;
        else hi = mid;
      }
      this.order.splice(lo, 0, slot);
    }
    set.add(item);
    item.deadline = set as Set<Expiring>;
    if (slot < this.timer_slot) this.arm(slot);
  }

  static remove(item: Expiring): void {
    item.deadline?.delete(item);
    item.deadline = undefined;
  }

  /** Stops the timer; items still kept never expire. */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timer_slot = Number.POSITIVE_INFINITY;
    for (const set of this.slots.values()) for (const item of set) item.deadline = undefined;
    this.slots.clear();
    this.order.length = 0;
  }

  private arm(slot: number): void {
    clearTimeout(this.timer);
    this.timer_slot = slot;
    // setTimeout takes at most 2^31-1 ms (beyond, it fires after 1 ms): a farther slot re-arms.
    const wait_ms = Math.min(TIMER_MS_MAX, Math.max(1, Math.ceil(slot * this.slot_ms - performance.now())));
    this.timer = setTimeout(this.fire, wait_ms);
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.timer_slot = Number.POSITIVE_INFINITY;
    const now = performance.now() / this.slot_ms;
    while (this.order.length > 0 && this.order[0] <= now) {
      const slot = this.order.shift() as number;
      const set = this.slots.get(slot);
      this.slots.delete(slot);
      if (set === undefined) continue;
      for (const item of set) {
        item.deadline = undefined;
        this.expire(item);
      }
    }
    if (this.order.length > 0) this.arm(this.order[0]);
  };
}
